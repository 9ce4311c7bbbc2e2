//! Filesystem steps shared by the install building blocks: folders created one level at a
//! time (so the record knows which ones are ours) and files written atomically, compared
//! first so that converging re-runs rewrite nothing.
//!
//! This is the bottom of the install modules: it imports nothing of theirs but the error
//! type, and the [`PathRecord`]s it returns are what every step hands to the install record.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// A file or folder an install touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRecord {
    /// The path as seen inside the root (`/etc/containerd/certs.d/docker.io/hosts.toml`).
    pub path: String,
    /// File or folder.
    pub kind: PathKind,
    /// True when something was at `path` before the install touched it: uninstall keeps it.
    pub existed_before: bool,
}

/// What a [`PathRecord`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// A regular file (or symlink) the install wrote.
    File,
    /// A folder the install created.
    Dir,
    /// A folder the install created whose whole content belongs to it (containerd's root
    /// and state): uninstall removes it with everything in it, unless something is mounted
    /// inside.
    Tree,
}

/// The real location of `logical` (an absolute path such as `/etc/x`) under `root`.
pub fn resolve(root: &Path, logical: &str) -> PathBuf {
    root.join(logical.trim_start_matches('/'))
}

/// Checks that `logical` is absolute and has no `.`/`..` components.
pub fn check_logical(logical: &str) -> Result<()> {
    let p = Path::new(logical);
    let ok = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !logical.contains("/./")
        && !logical.ends_with("/.");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidPath(logical.to_owned()))
    }
}

/// The parent of a logical path (`/etc/x` → `/etc`), `None` for `/`.
pub fn logical_parent(logical: &str) -> Option<&str> {
    let trimmed = logical.trim_end_matches('/');
    let cut = trimmed.rfind('/')?;
    Some(if cut == 0 { "/" } else { &trimmed[..cut] })
}

/// Creates `logical_dir` and its missing ancestors under `root` (mode 0755), returning one
/// record per folder created, outermost first. Folders that exist are left alone; a
/// non-folder in the way is an error.
pub fn create_dirs(root: &Path, logical_dir: &str) -> Result<Vec<PathRecord>> {
    check_logical(logical_dir)?;
    let mut missing = Vec::new();
    let mut cur = Some(logical_dir.trim_end_matches('/'));
    while let Some(l) = cur {
        if l.is_empty() || l == "/" {
            break;
        }
        let real = resolve(root, l);
        match fs::symlink_metadata(&real) {
            Ok(m) if m.is_dir() => break,
            // A symlink to a folder (e.g. /var/run -> /run) is used as the folder it names.
            Ok(m) if m.file_type().is_symlink() && real.is_dir() => break,
            Ok(_) => {
                return Err(Error::Fs {
                    step: "create folder",
                    path: real,
                    source: io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "something that is not a folder is in the way",
                    ),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(l.to_owned()),
            Err(e) => return Err(Error::fs("inspect", real)(e)),
        }
        cur = logical_parent(l);
    }
    let mut builder = DirBuilder::new();
    builder.mode(0o755);
    let mut created = Vec::new();
    for l in missing.into_iter().rev() {
        let real = resolve(root, &l);
        match builder.create(&real) {
            Ok(()) => created.push(PathRecord {
                path: l,
                kind: PathKind::Dir,
                existed_before: false,
            }),
            // Someone else made it between our look and our mkdir: not ours.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && real.is_dir() => {}
            Err(e) => return Err(Error::fs("create folder", real)(e)),
        }
    }
    Ok(created)
}

/// What [`write_atomic`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Folders created for the file (outermost first), then the file itself.
    pub records: Vec<PathRecord>,
    /// False when the file already had this content and mode: nothing was written.
    pub changed: bool,
}

/// Writes `bytes` to `logical` under `root` with `mode`: a temp file in the same folder,
/// synced, then renamed over the destination. A destination that already holds exactly
/// these bytes keeps its inode and mtime (only a differing mode is fixed).
pub fn write_atomic(root: &Path, logical: &str, bytes: &[u8], mode: u32) -> Result<Written> {
    check_logical(logical)?;
    let parent = logical_parent(logical).ok_or_else(|| Error::InvalidPath(logical.to_owned()))?;
    let mut records = create_dirs(root, parent)?;
    let real = resolve(root, logical);
    let existing = fs::symlink_metadata(&real);
    let existed_before = existing.is_ok();
    if let Ok(m) = &existing {
        if m.is_file() && m.len() == bytes.len() as u64 {
            let current = fs::read(&real).map_err(Error::fs("read", &real))?;
            if current == bytes {
                if m.permissions().mode() & 0o7777 != mode {
                    fs::set_permissions(&real, Permissions::from_mode(mode))
                        .map_err(Error::fs("set the mode of", &real))?;
                }
                records.push(file_record(logical, existed_before));
                return Ok(Written {
                    records,
                    changed: false,
                });
            }
        } else if m.is_dir() {
            return Err(Error::Fs {
                step: "write",
                path: real,
                source: io::Error::new(io::ErrorKind::IsADirectory, "a folder is in the way"),
            });
        }
    }
    let dir = resolve(root, parent);
    let mut tmp = tempfile::Builder::new()
        .prefix(".airlock-tmp-")
        .tempfile_in(&dir)
        .map_err(Error::fs("create a temp file in", &dir))?;
    tmp.write_all(bytes)
        .map_err(Error::fs("write", tmp.path().to_owned()))?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(Error::fs("set the mode of", tmp.path().to_owned()))?;
    tmp.as_file()
        .sync_all()
        .map_err(Error::fs("sync", tmp.path().to_owned()))?;
    tmp.persist(&real)
        .map_err(|e| Error::fs("rename into place", &real)(e.error))?;
    sync_dir(&dir);
    records.push(file_record(logical, existed_before));
    Ok(Written {
        records,
        changed: true,
    })
}

/// Makes a rename durable; failures only cost durability, so they are logged.
pub fn sync_dir(dir: &Path) {
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!("failed to sync folder {}: {e}", dir.display());
    }
}

fn file_record(logical: &str, existed_before: bool) -> PathRecord {
    PathRecord {
        path: logical.to_owned(),
        kind: PathKind::File,
        existed_before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_paths_with_dot_dot_are_rejected() {
        assert!(check_logical("/etc/x").is_ok());
        assert!(check_logical("/etc/../x").is_err());
        assert!(check_logical("etc/x").is_err());
        assert!(check_logical("/etc/./x").is_err());
    }

    #[test]
    fn create_dirs_records_only_the_folders_it_made() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        let made = create_dirs(root.path(), "/etc/a/b").unwrap();
        let paths: Vec<&str> = made.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/etc/a", "/etc/a/b"]);
        assert!(root.path().join("etc/a/b").is_dir());
        assert!(create_dirs(root.path(), "/etc/a/b").unwrap().is_empty());
    }

    #[test]
    fn write_atomic_leaves_identical_content_alone_and_replaces_different_content() {
        let root = tempfile::tempdir().unwrap();
        let first = write_atomic(root.path(), "/a/f", b"one", 0o644).unwrap();
        assert!(first.changed);
        assert!(!first.records.last().unwrap().existed_before);
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = ino(&root.path().join("a/f"));
        let again = write_atomic(root.path(), "/a/f", b"one", 0o644).unwrap();
        assert!(!again.changed);
        assert_eq!(ino(&root.path().join("a/f")), before);
        let other = write_atomic(root.path(), "/a/f", b"two", 0o600).unwrap();
        assert!(other.changed);
        assert_eq!(fs::read(root.path().join("a/f")).unwrap(), b"two");
        let mode = fs::metadata(root.path().join("a/f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
