//! `copy --to DIR`: puts the installer on removable media so that it is known to be good
//! there before the stick is pulled.
//!
//! Steps: pick the part size (the one asked for; else, on FAT32, the source's own parts if
//! they fit, or parts of 4 GiB − 4096 bytes; else the source's parts as they are), refuse up
//! front when the medium lacks the space, write each part under a temporary name, `fsync` it
//! and drop its pages from the page cache (`posix_fadvise(DONTNEED)`), rename it into place,
//! then map the copy from the medium and verify the program part, the index and every frame
//! against their digests. Only then "safe to eject" is printed. A part already on the medium
//! with the right length and the same SHA-256 as the source's bytes is kept (a re-run after
//! an interruption writes only what is missing); a half-written part never carries its final
//! name.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use airlock_payload::{
    align_part_size, part_count, part_path, Installer, Sha256Digest, FAT32_MAX_FILE,
    FAT32_PART_SIZE, HEADER_LEN,
};
use indicatif::ProgressBar;

use crate::selfexe::InstallerFile;
use crate::sys::SpaceProbe;

/// What can go wrong while copying to a medium.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target is not a folder.
    #[error("failed to copy to {}: not a folder", .0.display())]
    NotAFolder(PathBuf),
    /// The target holds the source itself.
    #[error("failed to copy to {}: that is where the installer already is", .0.display())]
    SameFile(PathBuf),
    /// The medium is too small; refused before anything was written.
    #[error("not enough space in {}: the copy needs {need} bytes more ({}), {available} bytes ({}) are available", .dir.display(), airlock_payload::human_bytes(*.need), airlock_payload::human_bytes(*.available))]
    NoSpace {
        /// The target folder.
        dir: PathBuf,
        /// Bytes still to write.
        need: u64,
        /// Bytes available.
        available: u64,
    },
    /// The part size asked for does not work for this installer or filesystem.
    #[error("invalid part size {size}: {reason}")]
    PartSize {
        /// The size asked for.
        size: u64,
        /// Why it does not work.
        reason: String,
    },
    /// `--split` could not be parsed.
    #[error(
        "invalid --split {0:?}: give `fat32` or a size such as 512M or 2G (at least 4096 bytes)"
    )]
    BadSplit(String),
    /// The copy on the medium does not verify: the medium (or the source) is bad.
    #[error("the copy in {} does not verify: the medium returned other bytes than were written (a failing stick?), or the source is damaged; run `verify` on the source", .dir.display())]
    ReadBack {
        /// The target folder.
        dir: PathBuf,
        /// What the verification found.
        #[source]
        source: Box<crate::Error>,
    },
    /// `copy` was called on bytes without the file they came from (a library caller).
    #[error("failed to copy: the installer file itself is needed, not only its bytes")]
    NoFile,
    /// A file step failed.
    #[error("failed to {step} {}", .path.display())]
    Fs {
        /// The step.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl CopyError {
    /// True when the source installer is damaged (exit code 3). A copy that does not read
    /// back is a medium problem first: exit 1.
    pub fn is_corrupt(&self) -> bool {
        false
    }
}

type Result<T, E = CopyError> = std::result::Result<T, E>;

fn fs_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CopyError {
    let path = path.to_owned();
    move |source| CopyError::Fs { step, path, source }
}

/// Parses a `--split` value: `fat32` or a size (K/M/G/T, powers of 1024), rounded down to
/// a multiple of 4096.
pub fn parse_split(text: &str) -> Result<u64> {
    let bad = || CopyError::BadSplit(text.to_owned());
    let t = text.trim().to_ascii_lowercase();
    if t == "fat32" {
        return Ok(FAT32_PART_SIZE);
    }
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let num: u64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    num.checked_mul(1 << shift)
        .and_then(align_part_size)
        .ok_or_else(bad)
}

/// The environment variable that lowers the part size `copy` uses on FAT (tests fill a
/// small FAT image with a small installer; the real limit needs 4 GiB files).
pub const FAT_PART_SIZE_ENV: &str = "AIRLOCK_FAT32_PART_SIZE";

/// The part size for FAT: [`FAT32_PART_SIZE`], or [`FAT_PART_SIZE_ENV`] when set (never
/// more than FAT holds).
fn fat_part_size() -> Result<u64> {
    match std::env::var(FAT_PART_SIZE_ENV) {
        Ok(v) => Ok(parse_split(&v)?.min(FAT32_PART_SIZE)),
        Err(_) => Ok(FAT32_PART_SIZE),
    }
}

/// What `copy --to` is asked to do.
pub struct CopyOptions<'a> {
    /// The folder to copy into.
    pub to: &'a Path,
    /// Parts of this size (`--split`), else chosen from the filesystem.
    pub split: Option<u64>,
    /// Free space of the target.
    pub space: &'a dyn SpaceProbe,
    /// Counts bytes written and verified.
    pub bar: &'a ProgressBar,
}

/// What `copy --to` did.
#[derive(Debug)]
pub struct CopyReport {
    /// Every part on the medium, the first first.
    pub parts: Vec<PathBuf>,
    /// Parts written in this run.
    pub written: usize,
    /// Parts already on the medium and kept.
    pub kept: usize,
    /// Whether the target filesystem is FAT (file size limit 4 GiB − 1).
    pub fat: bool,
    /// Bytes of the installer.
    pub len: u64,
}

/// Copies `file` into `opts.to`, verifies the copy from the medium, and reports.
pub fn copy(file: &InstallerFile, opts: &CopyOptions<'_>) -> crate::Result<CopyReport> {
    let bytes = file.bytes();
    let installer = Installer::open(bytes, file.elf_end())?;
    let to = opts.to;
    if !to.is_dir() {
        return Err(CopyError::NotAFolder(to.to_owned()).into());
    }
    let name: OsString = file
        .path()
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_else(|| "installer.run".into());
    let first = to.join(&name);
    if let (Ok(a), Ok(b)) = (first.canonicalize(), file.path().canonicalize()) {
        if a == b {
            return Err(CopyError::SameFile(to.to_owned()).into());
        }
    }
    let fat = is_fat(to);
    let len = bytes.len() as u64;
    let source_size = file.parts()[0].len;
    let source_split = file.parts().len() > 1;
    let size = match opts.split {
        Some(s) => s,
        None if fat && source_split && source_size <= FAT32_MAX_FILE => source_size,
        None if fat && len > fat_part_size()? => fat_part_size()?,
        None if source_split => source_size,
        None => len,
    };
    let count = part_count(len, size) as usize;
    if count > 1 {
        let need = installer.trailer().payload_offset + HEADER_LEN;
        if size < need {
            return Err(CopyError::PartSize {
                size,
                reason: format!(
                    "the first part must hold the program and the payload header ({need} bytes)"
                ),
            }
            .into());
        }
    }
    if fat && size.min(len) > FAT32_MAX_FILE {
        return Err(CopyError::PartSize {
            size,
            reason: format!(
                "{} is on FAT, which holds files of at most {FAT32_MAX_FILE} bytes",
                to.display()
            ),
        }
        .into());
    }
    if count > airlock_payload::MAX_PARTS {
        return Err(airlock_payload::PartError::TooMany(count as u64).into());
    }
    let ranges: Vec<(PathBuf, std::ops::Range<usize>)> = (1..=count)
        .map(|n| {
            let start = (n as u64 - 1) * size;
            let end = (start + size).min(len);
            (part_path(&first, n), start as usize..end as usize)
        })
        .collect();

    // Space: parts already there with the right length are counted as kept (checked below).
    let need: u64 = ranges
        .iter()
        .filter(|(p, r)| fs::metadata(p).map(|m| m.len()).ok() != Some(r.len() as u64))
        .map(|(_, r)| r.len() as u64)
        .sum();
    let available = opts
        .space
        .free_space(to)
        .map_err(fs_err("query the free space of", to))?
        .bytes;
    // Some FUSE filesystems (fusefat) report no size at all: nothing to check against.
    let sized = nix::sys::statvfs::statvfs(to).map_or(true, |st| st.blocks() != 0);
    if !sized {
        tracing::warn!(
            "{} does not report its size: free space not checked",
            to.display()
        );
    }
    if sized && need > available {
        return Err(CopyError::NoSpace {
            dir: to.to_owned(),
            need,
            available,
        }
        .into());
    }

    let bar = opts.bar;
    bar.set_length(len * 2);
    bar.set_message("copy");
    let (mut written, mut kept) = (0, 0);
    for (path, range) in &ranges {
        let src = &bytes[range.clone()];
        if already_there(path, src).map_err(fs_err("read back", path))? {
            kept += 1;
            bar.inc(src.len() as u64);
            file.release(src);
            continue;
        }
        write_part(path, path == &first, src, bar, &|done| file.release(done))?;
        written += 1;
    }
    remove_parts_after(&first, count)?;
    if let Err(e) = File::open(to).and_then(|d| d.sync_all()) {
        tracing::debug!("failed to sync {}: {e}", to.display());
    }

    // Read back from the medium: map the copy (its pages were dropped after writing) and
    // check every digest it carries.
    bar.set_message("read back");
    let read_back = |source: crate::Error| CopyError::ReadBack {
        dir: to.to_owned(),
        source: Box::new(source),
    };
    let copy = InstallerFile::open(&first).map_err(read_back)?;
    let copied = Installer::open(copy.bytes(), copy.elf_end()).map_err(|e| read_back(e.into()))?;
    let verify_bar = ProgressBar::hidden();
    crate::verify::verify(
        &copied,
        false,
        &verify_bar,
        &|chunk| {
            bar.inc(chunk.len() as u64);
            copy.release(chunk);
        },
        &mut io::sink(),
    )
    .map_err(read_back)?;
    if copy.bytes().len() as u64 != len {
        return Err(read_back(crate::Error::Damaged {
            items: vec![format!(
                "the copy is {} bytes, the source {len}",
                copy.bytes().len()
            )],
        })
        .into());
    }
    bar.finish_and_clear();
    Ok(CopyReport {
        parts: ranges.into_iter().map(|(p, _)| p).collect(),
        written,
        kept,
        fat,
        len,
    })
}

/// True when `path` holds exactly `src` (same length, same SHA-256 read from the medium).
fn already_there(path: &Path, src: &[u8]) -> io::Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() != src.len() as u64 {
        return Ok(false);
    }
    drop_pages(&file);
    let (digest, n) = Sha256Digest::of_reader(&file)?;
    Ok(n == src.len() as u64 && digest == Sha256Digest::of(src))
}

/// Writes `src` to a temporary name beside `path`, syncs it, drops its cached pages and
/// renames it to `path`.
fn write_part(
    path: &Path,
    executable: bool,
    src: &[u8],
    bar: &ProgressBar,
    release: &dyn Fn(&[u8]),
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".airlock-copy-")
        .tempfile_in(dir)
        .map_err(fs_err("create a temporary file in", dir))?;
    let tmp_path = tmp.path().to_owned();
    const CHUNK: usize = 8 << 20;
    for chunk in src.chunks(CHUNK) {
        tmp.as_file_mut()
            .write_all(chunk)
            .map_err(fs_err("write", &tmp_path))?;
        bar.inc(chunk.len() as u64);
        release(chunk);
    }
    tmp.as_file()
        .sync_all()
        .map_err(fs_err("sync", &tmp_path))?;
    drop_pages(tmp.as_file());
    tmp.persist(path)
        .map_err(|e| fs_err("rename into place", path)(e.error))?;
    if executable {
        // The first part runs: executable on filesystems with modes (FAT ignores this).
        let _ = fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    Ok(())
}

/// Removes parts after `count` left on the medium by an earlier copy with more parts.
fn remove_parts_after(first: &Path, count: usize) -> Result<()> {
    for n in (count + 1).max(2)..=airlock_payload::MAX_PARTS {
        let stale = part_path(first, n);
        match fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fs_err("remove", &stale)(e)),
        }
    }
    Ok(())
}

/// Drops `file`'s pages from the page cache, so the next read comes from the medium.
fn drop_pages(file: &File) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    if let Err(e) = posix_fadvise(file.as_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED) {
        tracing::debug!("failed to drop cached pages: {e}");
    }
}

/// True when `dir` is on a FAT filesystem: `statfs` says `MSDOS_SUPER_MAGIC`, or (FUSE
/// reports its own magic) the mount holding it is `vfat`, `msdos` or `fuse.fusefat` in
/// `/proc/self/mountinfo`.
pub fn is_fat(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, FUSE_SUPER_MAGIC, MSDOS_SUPER_MAGIC};
    let Ok(st) = statfs(dir) else {
        return false;
    };
    let kind = st.filesystem_type();
    if kind == MSDOS_SUPER_MAGIC {
        return true;
    }
    if kind != FUSE_SUPER_MAGIC {
        return false;
    }
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    mount_fstype(&info, &dir).is_some_and(|t| matches!(t, "vfat" | "msdos" | "fuse.fusefat"))
}

/// The filesystem type of the mount in `mountinfo` that holds `dir` (the longest mount
/// point that is a prefix of it).
fn mount_fstype<'a>(mountinfo: &'a str, dir: &Path) -> Option<&'a str> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let point = fields.nth(4)?;
            let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
            let point = point.replace("\\040", " ");
            dir.starts_with(&point).then_some((point.len(), fstype))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sizes_parse_to_page_multiples() {
        assert_eq!(parse_split("fat32").unwrap(), FAT32_PART_SIZE);
        assert_eq!(parse_split("16M").unwrap(), 16 << 20);
        assert_eq!(parse_split("10000").unwrap(), 8192);
        assert!(parse_split("100").is_err());
        assert!(parse_split("x").is_err());
    }

    #[test]
    fn the_deepest_mount_names_the_filesystem_type() {
        let info = "22 1 8:1 / / rw - ext4 /dev/vda rw\n\
                    40 22 0:50 / /media/usb rw,nosuid - fuse.fusefat /tmp/fat.img rw\n";
        assert_eq!(
            mount_fstype(info, Path::new("/media/usb/x")),
            Some("fuse.fusefat")
        );
        assert_eq!(mount_fstype(info, Path::new("/home")), Some("ext4"));
    }

    #[test]
    fn a_local_folder_is_not_fat() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_fat(dir.path()));
    }
}
