//! The persistent installer copy, `<root>/var/lib/airlock/<name>-<version>.run`: the
//! registry service runs from it, so it keeps serving after the USB stick is pulled or the
//! download deleted. The copy is never modified once in place (the registry maps it).

use std::fs::{self, File, Permissions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::fsutil::{create_dirs, logical_parent, resolve, sync_dir, PathKind, PathRecord};
use super::{validate_name, validate_version, Error, Result, STATE_DIR};

/// How many bytes at the end of the file are compared to decide that a copy is current (the
/// payload trailer, with the index digest, lives there).
pub const TRAILER_COMPARE: u64 = 256;

/// Where the persistent copy of `name` `version` lives, inside the root.
pub fn installer_copy_path(name: &str, version: &str) -> String {
    format!("{STATE_DIR}/{name}-{version}.run")
}

/// What [`persist_installer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// The copy, as seen inside the root.
    pub logical: String,
    /// The copy's real path (what a service executes).
    pub path: PathBuf,
    /// False when a current copy was already in place.
    pub copied: bool,
    /// Folders created and the copy itself, for the install record.
    pub records: Vec<PathRecord>,
}

/// Copies the installer `src` to [`installer_copy_path`] under `root` (mode 0755): into a
/// temp file in the same folder with `io::copy` (which uses `copy_file_range` between files
/// on Linux), synced, then renamed. A destination with the same length and the same last
/// [`TRAILER_COMPARE`] bytes is taken as current and left alone.
pub fn persist_installer(src: &Path, root: &Path, name: &str, version: &str) -> Result<Persisted> {
    validate_name(name)?;
    validate_version(version)?;
    let logical = installer_copy_path(name, version);
    let mut records = create_dirs(root, STATE_DIR)?;
    let dest = resolve(root, &logical);
    // A split installer (`edge.run`, `edge.run.002`, ...) becomes one whole file here.
    let parts = installer_parts(src)?;
    let len: u64 = parts.iter().map(|p| p.len).sum();
    let last = &parts[parts.len() - 1];
    let mut last_file =
        File::open(&last.path).map_err(Error::fs("open the installer", &last.path))?;
    let existed_before = fs::symlink_metadata(&dest).is_ok();
    let current = if parts.len() == 1 {
        is_same_installer(&mut last_file, len, &dest)
    } else {
        // The compared tail lies in the last part when it is long enough; else compare all.
        is_same_parts(&parts, len, &dest)
    }
    .map_err(Error::fs("compare the installer with", &dest))?;
    if !current {
        let dir = resolve(root, logical_parent(&logical).unwrap_or(STATE_DIR));
        let mut tmp = tempfile::Builder::new()
            .prefix(".airlock-tmp-")
            .tempfile_in(&dir)
            .map_err(Error::fs("create a temp file in", &dir))?;
        let mut copied = 0;
        for part in &parts {
            let mut source =
                File::open(&part.path).map_err(Error::fs("open the installer", &part.path))?;
            source
                .seek(SeekFrom::Start(0))
                .map_err(Error::fs("read the installer", &part.path))?;
            copied += io::copy(&mut source, tmp.as_file_mut())
                .map_err(Error::fs("copy the installer to", tmp.path().to_owned()))?;
        }
        if copied != len {
            return Err(Error::Fs {
                step: "copy the installer",
                path: src.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("copied {copied} of {len} bytes: the file changed while copying"),
                ),
            });
        }
        tmp.as_file()
            .set_permissions(Permissions::from_mode(0o755))
            .map_err(Error::fs("set the mode of", tmp.path().to_owned()))?;
        tmp.as_file()
            .sync_all()
            .map_err(Error::fs("sync", tmp.path().to_owned()))?;
        tmp.persist(&dest)
            .map_err(|e| Error::fs("rename into place", &dest)(e.error))?;
        sync_dir(&dir);
    }
    records.push(PathRecord {
        path: logical.clone(),
        kind: PathKind::File,
        existed_before,
    });
    Ok(Persisted {
        logical,
        path: dest,
        copied: !current,
        records,
    })
}

/// The files `src` is made of: itself, or every part of a split installer, as the stub
/// decides when it maps them (a whole file beside stale parts is one file).
fn installer_parts(src: &Path) -> Result<Vec<airlock_payload::Part>> {
    if !airlock_payload::has_parts(src) {
        let len = fs::metadata(src)
            .map_err(Error::fs("inspect the installer", src))?
            .len();
        return Ok(vec![airlock_payload::Part {
            path: src.to_owned(),
            len,
        }]);
    }
    let file = crate::selfexe::InstallerFile::open(src)
        .map_err(|e| Error::fs("open the installer", src)(io::Error::other(e.to_string())))?;
    Ok(file.parts().to_vec())
}

/// [`is_same_installer`] for a split source: `dest` has `len` bytes and the same last
/// [`TRAILER_COMPARE`] bytes as the parts joined.
fn is_same_parts(parts: &[airlock_payload::Part], len: u64, dest: &Path) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.len() != len {
        return Ok(false);
    }
    let tail = len.min(TRAILER_COMPARE);
    let mut want = Vec::with_capacity(tail as usize);
    let mut start = 0;
    for p in parts {
        let end = start + p.len;
        if end > len - tail {
            let from = (len - tail).saturating_sub(start);
            let mut f = File::open(&p.path)?;
            f.seek(SeekFrom::Start(from))?;
            f.read_to_end(&mut want)?;
        }
        start = end;
    }
    let mut have = vec![0; tail as usize];
    let mut d = File::open(dest)?;
    d.seek(SeekFrom::Start(len - tail))?;
    d.read_exact(&mut have)?;
    Ok(want == have)
}

/// True when `dest` is a regular file of `len` bytes ending in the same bytes as `src`.
fn is_same_installer(src: &mut File, len: u64, dest: &Path) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.len() != len {
        return Ok(false);
    }
    let tail = len.min(TRAILER_COMPARE);
    let read_tail = |f: &mut File| -> io::Result<Vec<u8>> {
        let mut buf = vec![0; tail as usize];
        f.seek(SeekFrom::Start(len - tail))?;
        f.read_exact(&mut buf)?;
        Ok(buf)
    };
    Ok(read_tail(src)? == read_tail(&mut File::open(dest)?)?)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::testutil::noise;

    #[test]
    fn the_installer_is_copied_with_mode_0755_and_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("edge.run");
        let bytes = noise(7, 300_000);
        fs::write(&src, &bytes).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();

        let p = persist_installer(&src, &root, "edge", "1.30.4-1").unwrap();
        assert!(p.copied);
        assert_eq!(p.path, root.join("var/lib/airlock/edge-1.30.4-1.run"));
        assert_eq!(fs::read(&p.path).unwrap(), bytes);
        assert_eq!(fs::metadata(&p.path).unwrap().mode() & 0o7777, 0o755);
        let names: Vec<&str> = p.records.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "/var",
                "/var/lib",
                "/var/lib/airlock",
                "/var/lib/airlock/edge-1.30.4-1.run"
            ]
        );
        // No temp file is left next to it.
        assert_eq!(
            fs::read_dir(root.join("var/lib/airlock")).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_current_copy_is_left_alone_and_a_different_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("edge.run");
        let mut bytes = noise(8, 100_000);
        fs::write(&src, &bytes).unwrap();
        let root = dir.path();

        let first = persist_installer(&src, root, "edge", "1").unwrap();
        let ino = fs::metadata(&first.path).unwrap().ino();
        let second = persist_installer(&src, root, "edge", "1").unwrap();
        assert!(!second.copied);
        assert_eq!(
            fs::metadata(&second.path).unwrap().ino(),
            ino,
            "the copy was rewritten"
        );
        assert!(second.records.last().unwrap().existed_before);

        // Same length, another trailer: a different installer.
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        fs::write(&src, &bytes).unwrap();
        let third = persist_installer(&src, root, "edge", "1").unwrap();
        assert!(third.copied);
        assert_eq!(fs::read(&third.path).unwrap(), bytes);
    }

    #[test]
    fn a_version_with_a_slash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("edge.run");
        fs::write(&src, b"x").unwrap();
        let err = persist_installer(&src, dir.path(), "edge", "../1").unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidName {
                    what: "version",
                    ..
                }
            ),
            "{err}"
        );
    }
}
