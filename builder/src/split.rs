//! Splitting an installer into parts that fit a filesystem's file-size limit (FAT32 holds
//! at most 4 GiB − 1 byte per file), and joining the parts again: `airlock build --split`,
//! `airlock split` and `airlock join`.
//!
//! A split installer is the unsplit file cut at multiples of one part size: `edge.run` (the
//! program and the start of the payload), then `edge.run.002`, `edge.run.003`, ... (names
//! from [`airlock_payload::part_path`]). `cat edge.run edge.run.0*` is byte-identical to the
//! unsplit file, so no part carries bytes of its own; the stub checks the parts against the
//! installer's header, trailer, index and frame digests instead (payload-format/SPEC.md,
//! "Split installers"). Every part is written to a temporary name and renamed into place,
//! and the first part is cut down only after every other part is in place, so at every
//! moment the folder holds either the whole installer or a complete set of parts.

use std::fs::{self, File, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use airlock_payload::{
    align_part_size, find_parts, has_parts, part_count, part_path, PartError, FAT32_PART_SIZE,
    HEADER_LEN, MAX_PARTS,
};

/// What can go wrong while splitting or joining.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The size given to `--split` / `--size` is not understood or too small.
    #[error("invalid split size {0:?}: give `fat32` or a size of at least 4096 bytes such as 512M or 2G (rounded down to a multiple of 4096)")]
    BadSize(String),
    /// The parts would be too small to hold the program and the payload header.
    #[error("split size {size} is too small: the first part must hold the program and the payload header ({need} bytes), so give at least {need}")]
    TooSmall {
        /// The part size asked for (after rounding).
        size: u64,
        /// What the first part must hold.
        need: u64,
    },
    /// The file is not a readable installer (or the parts do not form one).
    #[error("{} is not a complete installer", .path.display())]
    NotAnInstaller {
        /// The file.
        path: PathBuf,
        /// The cause (exit code 3 when the bytes are damaged).
        #[source]
        source: airlock_payload::Error,
    },
    /// The parts are incomplete or do not fit together.
    #[error(transparent)]
    Parts(#[from] PartError),
    /// A file operation failed.
    #[error("failed to {context}")]
    Io {
        /// The step.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// True when the error means the installer (or a part of it) is damaged or incomplete
    /// (exit code 3).
    pub fn is_corrupt(&self) -> bool {
        match self {
            Error::NotAnInstaller { source, .. } => source.is_corrupt(),
            Error::Parts(e) => e.is_corrupt(),
            _ => false,
        }
    }
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A part size: `fat32` or a number of bytes, rounded down to a multiple of 4096 so that
/// each part can be mapped at its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSize(u64);

impl SplitSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// A part size of `bytes` rounded down to a multiple of 4096.
    pub fn from_bytes(bytes: u64) -> Result<Self> {
        align_part_size(bytes)
            .map(SplitSize)
            .ok_or_else(|| Error::BadSize(bytes.to_string()))
    }
}

impl FromStr for SplitSize {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        if text.trim().eq_ignore_ascii_case("fat32") {
            return Ok(SplitSize(FAT32_PART_SIZE));
        }
        let bytes = crate::cache::parse_size(text).map_err(|_| Error::BadSize(text.to_owned()))?;
        align_part_size(bytes)
            .map(SplitSize)
            .ok_or_else(|| Error::BadSize(text.to_owned()))
    }
}

/// Where the stub and payload header of the installer at `path` end: what the first part
/// must hold. Checks the installer's trailer and header on the way.
fn program_end(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    // SAFETY: a read-only private map of a file we only read, dropped before we write any
    // file; a truncation by another process would fault (SIGBUS), never corrupt memory.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(format!("map {}", path.display())))?;
    let not_installer = |source| Error::NotAnInstaller {
        path: path.to_owned(),
        source,
    };
    let installer = airlock_payload::Installer::open(&map, airlock_payload::declared_elf_end(&map))
        .map_err(not_installer)?;
    Ok(installer.trailer().payload_offset + HEADER_LEN)
}

/// Splits the installer at `path` into parts of `size`: `path` keeps the first part and
/// `path.002`, `path.003`, ... hold the rest. Parts left over from an earlier split with more
/// parts are removed. Returns every part, the first one first (only `path` when the file
/// fits one part).
pub fn split_file(path: &Path, size: SplitSize) -> Result<Vec<PathBuf>> {
    let size = size.bytes();
    let need = program_end(path)?;
    if size < need {
        return Err(Error::TooSmall { size, need });
    }
    let len = fs::metadata(path)
        .map_err(io_err(format!("inspect {}", path.display())))?
        .len();
    let count = part_count(len, size);
    if count > MAX_PARTS as u64 {
        return Err(PartError::TooMany(count).into());
    }
    let count = count as usize;
    let dir = parent_dir(path);
    let mut source = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    let mut parts = vec![path.to_owned()];
    for number in 2..=count {
        let start = (number as u64 - 1) * size;
        let part_len = size.min(len - start);
        let dest = part_path(path, number);
        source
            .seek(SeekFrom::Start(start))
            .map_err(io_err(format!("read {}", path.display())))?;
        write_atomic(&dir, &dest, 0o644, |out| {
            let copied = io::copy(&mut (&mut source).take(part_len), out)?;
            if copied != part_len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "copied {copied} of {part_len} bytes: the file changed while splitting"
                    ),
                ));
            }
            Ok(())
        })?;
        parts.push(dest);
    }
    remove_parts_after(path, count)?;
    if count > 1 {
        // Every other part is in place: only now is the first one cut down.
        let file = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(format!("open {} for writing", path.display())))?;
        file.set_len(size)
            .and_then(|()| file.sync_all())
            .map_err(io_err(format!("cut {} to its first part", path.display())))?;
    }
    sync_dir(&dir);
    Ok(parts)
}

/// Joins the split installer whose first part is `first` into one file `out` (mode 0755),
/// checked as an installer before it is renamed into place. When `out` is `first`, the
/// other parts are removed afterwards. Returns the length written.
pub fn join_parts(first: &Path, out: &Path) -> Result<u64> {
    let parts = if has_parts(first) {
        find_parts(first)?
    } else {
        let len = fs::metadata(first)
            .map_err(io_err(format!("inspect {}", first.display())))?
            .len();
        vec![airlock_payload::Part {
            path: first.to_owned(),
            len,
        }]
    };
    let dir = parent_dir(out);
    let mut total = 0;
    let tmp = write_atomic_keep(&dir, 0o755, |dest| {
        for part in &parts {
            let mut f = File::open(&part.path)?;
            let copied = io::copy(&mut f, dest)?;
            if copied != part.len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "copied {copied} of {} bytes of {}: it changed while joining",
                        part.len,
                        part.path.display()
                    ),
                ));
            }
            total += copied;
        }
        Ok(())
    })?;
    program_end(tmp.path()).map_err(|e| match e {
        Error::NotAnInstaller { source, .. } => Error::NotAnInstaller {
            path: first.to_owned(),
            source,
        },
        e => e,
    })?;
    tmp.persist(out).map_err(|e| Error::Io {
        context: format!("move the joined installer to {}", out.display()),
        source: e.error,
    })?;
    if same_file_name(out, first) {
        remove_parts_after(first, 1)?;
    }
    sync_dir(&dir);
    Ok(total)
}

/// Removes `first.NNN` for every number after `count` that exists (left over from an
/// earlier split into more parts).
pub fn remove_parts_after(first: &Path, count: usize) -> Result<()> {
    for number in (count + 1).max(2)..=MAX_PARTS {
        let stale = part_path(first, number);
        match fs::remove_file(&stale) {
            Ok(()) => tracing::debug!(path = %stale.display(), "removed a stale part"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("remove {}", stale.display()))(e)),
        }
    }
    Ok(())
}

fn same_file_name(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Writes a temporary file in `dir` with `fill`, syncs it and gives it `mode`; the caller
/// renames it into place.
fn write_atomic_keep(
    dir: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".airlock-split-")
        .tempfile_in(dir)
        .map_err(io_err(format!(
            "create a temporary file in {}",
            dir.display()
        )))?;
    let context = format!("write {}", tmp.path().display());
    fill(tmp.as_file_mut())
        .and_then(|()| tmp.as_file_mut().flush())
        .and_then(|()| tmp.as_file().set_permissions(Permissions::from_mode(mode)))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err(context))?;
    Ok(tmp)
}

fn write_atomic(
    dir: &Path,
    dest: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    let tmp = write_atomic_keep(dir, mode, fill)?;
    tmp.persist(dest).map_err(|e| Error::Io {
        context: format!("move a part to {}", dest.display()),
        source: e.error,
    })?;
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!("failed to sync {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat32_and_sizes_parse_to_page_multiples() {
        assert_eq!(
            "fat32".parse::<SplitSize>().unwrap().bytes(),
            (4 << 30) - 4096
        );
        assert_eq!(
            "FAT32".parse::<SplitSize>().unwrap().bytes(),
            (4 << 30) - 4096
        );
        assert_eq!("1M".parse::<SplitSize>().unwrap().bytes(), 1 << 20);
        assert_eq!(SplitSize::from_bytes(10_000).unwrap().bytes(), 8192);
        assert!("100".parse::<SplitSize>().is_err());
        assert!("lots".parse::<SplitSize>().is_err());
    }

    #[test]
    fn a_file_that_is_not_an_installer_is_not_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.run");
        fs::write(&path, vec![1u8; 100_000]).unwrap();
        let err = split_file(&path, SplitSize::from_bytes(8192).unwrap()).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
        assert!(!part_path(&path, 2).exists());
        assert_eq!(fs::metadata(&path).unwrap().len(), 100_000);
    }
}
