//! Finding and mapping the installer file: the running program itself.
//!
//! An installer is the stub program with the payload appended, so the stub reads its own
//! executable: `/proc/self/exe`, or `argv[0]` when `/proc` is not mounted (an empty chroot).
//! The environment variable `AIRLOCK_INSTALLER=/path/file.run` makes the stub operate on
//! another file instead (a debugging aid, also used by tests).
//!
//! A split installer (`edge.run`, `edge.run.002`, ...; payload-format/SPEC.md "Split
//! installers") is mapped as one contiguous range: one `PROT_NONE` reservation of the whole
//! length, each part mapped over it at its offset (every part but the last is a multiple of
//! the page size). The commands see one `&[u8]` either way. Before anything runs, the parts'
//! lengths are checked against each other and against the installer's header, the trailer
//! and index against the last part, and frames inside every part against their digests, so
//! a missing, cut, extra, swapped or foreign part is named (exit code 3).

use std::env;
use std::ffi::OsString;
use std::fs::File;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use airlock_payload::{Part, PartError};
use memmap2::{Advice, Mmap, UncheckedAdvice};
use nix::sys::mman::{self, MapFlags, MmapAdvise, ProtFlags};

use crate::{Error, Result};

/// The environment variable naming another installer file to operate on.
pub const INSTALLER_ENV: &str = "AIRLOCK_INSTALLER";

/// The installer file, mapped read-only.
#[derive(Debug)]
pub struct InstallerFile {
    path: PathBuf,
    map: FileMap,
    elf_end: Option<u64>,
    /// The files the installer is made of: one, or the parts of a split installer.
    parts: Vec<Part>,
}

/// The mapped bytes: one file, or the parts of a split installer side by side.
#[derive(Debug)]
enum FileMap {
    Whole(Mmap),
    Parts(PartsMap),
}

/// A read-only range holding every part of a split installer at its offset.
#[derive(Debug)]
struct PartsMap {
    base: NonNull<std::ffi::c_void>,
    len: usize,
}

// SAFETY: the range is mapped read-only and never written or remapped after construction;
// sharing read-only memory between threads is sound.
unsafe impl Send for PartsMap {}
// SAFETY: as for Send: no interior mutability, the bytes never change.
unsafe impl Sync for PartsMap {}

impl Drop for PartsMap {
    fn drop(&mut self) {
        // SAFETY: `base..base+len` is the reservation this value made and owns; no slice
        // of it outlives `self` (bytes() borrows self).
        if let Err(e) = unsafe { mman::munmap(self.base, self.len) } {
            tracing::debug!("failed to unmap the installer parts: {e}");
        }
    }
}

impl PartsMap {
    /// Maps `parts` (lengths already checked: all but the last a multiple of the page size)
    /// one after another in one reservation.
    fn map(parts: &[Part]) -> std::io::Result<PartsMap> {
        let total: u64 = parts.iter().map(|p| p.len).sum();
        let len = usize::try_from(total)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| std::io::Error::other("the parts are empty or too large to map"))?;
        // SAFETY: a fresh anonymous reservation at an address the kernel picks: it aliases
        // nothing. PROT_NONE until the parts are mapped over it.
        let base = unsafe {
            mman::mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_NONE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }?;
        let map = PartsMap {
            base,
            len: len.get(),
        };
        let mut offset = 0usize;
        for part in parts {
            let file = File::open(&part.path)?;
            let Some(part_len) = NonZeroUsize::new(part.len as usize) else {
                continue;
            };
            let addr = NonZeroUsize::new(base.as_ptr() as usize + offset)
                .expect("inside a non-null reservation");
            // SAFETY: MAP_FIXED replaces pages only inside our own reservation
            // (`offset + part.len <= len`, offsets page-aligned because every earlier part
            // is a multiple of the page size); nothing else lives there. The map is
            // read-only and private; a part truncated later by another process would
            // SIGBUS on access, as for a single-file map, never break memory safety.
            unsafe {
                mman::mmap(
                    Some(addr),
                    part_len,
                    ProtFlags::PROT_READ,
                    MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED,
                    &file,
                    0,
                )
            }?;
            offset += part.len as usize;
        }
        Ok(map)
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: every byte of the reservation is covered by a PROT_READ file map (the
        // parts' lengths sum to `len`), mapped for the life of `self` and never written.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr() as *const u8, self.len) }
    }
}

impl FileMap {
    fn bytes(&self) -> &[u8] {
        match self {
            FileMap::Whole(m) => m,
            FileMap::Parts(p) => p.bytes(),
        }
    }
}

impl InstallerFile {
    /// Opens the running program (or the file named by [`INSTALLER_ENV`]).
    pub fn open_self() -> Result<Self> {
        if let Some(path) = env::var_os(INSTALLER_ENV) {
            let hint = format!(" (named by {INSTALLER_ENV})");
            return Self::open_path(PathBuf::from(path), hint);
        }
        let proc_exe = Path::new("/proc/self/exe");
        match File::open(proc_exe) {
            // The link's text is the real path, which is nicer in messages and `info`.
            Ok(file) => Self::from_file(
                std::fs::read_link(proc_exe).unwrap_or_else(|_| proc_exe.to_owned()),
                file,
            ),
            Err(proc_err) => {
                tracing::debug!("cannot open /proc/self/exe ({proc_err}); falling back to argv[0]");
                let argv0 = env::args_os().next().unwrap_or_default();
                let path = resolve_argv0(&argv0, env::var_os("PATH"));
                let hint = format!(
                    " (found through argv[0] because /proc/self/exe is unavailable: {proc_err}; is /proc mounted?)"
                );
                Self::open_path(path, hint)
            }
        }
    }

    /// Opens and maps the installer at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        Self::open_path(path.into(), String::new())
    }

    fn open_path(path: PathBuf, hint: String) -> Result<Self> {
        match File::open(&path) {
            Ok(file) => Self::from_file(path, file),
            Err(source) => Err(Error::Open { path, hint, source }),
        }
    }

    fn from_file(path: PathBuf, file: File) -> Result<Self> {
        // SAFETY: a read-only, private map of the installer file. For the running program
        // the kernel refuses writes to its own executable (ETXTBSY), so the bytes cannot
        // change under us. A truncation by another process (or of a file named by
        // AIRLOCK_INSTALLER) would make later reads of the lost pages raise SIGBUS and end
        // the program; no memory-safety violation can follow, because the map is never
        // written and we never hand out references that outlive it.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Map {
            path: path.clone(),
            source,
        })?;
        // Only used to explain a missing trailer (truncation, `strip`, UPX).
        let elf_end = airlock_payload::declared_elf_end(&map);
        tracing::debug!(path = %path.display(), len = map.len(), ?elf_end, "mapped installer");
        if airlock_payload::has_parts(&path) {
            // A whole installer beside stale parts is still whole (`airlock split` cuts the
            // first part only after writing the others).
            if airlock_payload::Installer::open(&map, elf_end).is_err() {
                drop(map);
                return Self::open_parts(path);
            }
            tracing::debug!("the file is a whole installer: parts beside it are ignored");
        }
        let parts = vec![Part {
            len: map.len() as u64,
            path: path.clone(),
        }];
        Ok(InstallerFile {
            path,
            map: FileMap::Whole(map),
            elf_end,
            parts,
        })
    }

    /// Finds, checks and maps the parts of the split installer whose first part is `first`.
    fn open_parts(first: PathBuf) -> Result<Self> {
        let parts = match airlock_payload::find_parts(&first) {
            Ok(parts) => parts,
            Err(e) => return Err(explain_extra_parts(&first).unwrap_or(e).into()),
        };
        let map = PartsMap::map(&parts).map_err(|source| Error::Map {
            path: first.clone(),
            source,
        })?;
        let bytes = map.bytes();
        let elf_end = airlock_payload::declared_elf_end(bytes);
        if let Some(file_len) = elf_end
            .map(airlock_payload::align_payload)
            .and_then(|at| bytes.get(at as usize..))
            .and_then(airlock_payload::Header::from_bytes)
            .map(|h| h.file_len)
        {
            airlock_payload::check_total(&parts, file_len)?;
        }
        check_parts(bytes, elf_end, &parts)?;
        tracing::debug!(
            parts = parts.len(),
            len = bytes.len(),
            "mapped a split installer"
        );
        Ok(InstallerFile {
            path: first,
            map: FileMap::Parts(map),
            elf_end,
            parts,
        })
    }

    /// The files the installer is made of, in order: the file itself, or every part.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// Drops the pages of `part` (a sub-slice of [`InstallerFile::bytes`]) from this
    /// process's resident memory once a command is done with them; they stay in the page
    /// cache, so a later read is cheap. Keeps peak RSS flat while a multi-GB installer is
    /// verified or extracted. Parts outside the map are ignored; failures only cost memory.
    pub fn release(&self, part: &[u8]) {
        // Only whole pages inside `part`: a neighbour's bytes may still be in use.
        let Some((first, len)) = self.pages_of(part, true) else {
            return;
        };
        // SAFETY: the map is read-only and private and was never written, so MADV_DONTNEED
        // only removes page-table entries: the next access faults the same file bytes back
        // in from the page cache. No reference sees memory change or vanish.
        let advised = match &self.map {
            FileMap::Whole(m) => unsafe {
                m.unchecked_advise_range(UncheckedAdvice::DontNeed, first, len)
            },
            FileMap::Parts(p) => p.advise(first, len, MmapAdvise::MADV_DONTNEED),
        };
        if let Err(e) = advised {
            tracing::debug!("failed to release mapped pages: {e}");
        }
    }

    /// Makes the pages of `part` (a sub-slice of [`InstallerFile::bytes`]) resident in one
    /// `madvise(MADV_POPULATE_READ)`, before a server sends them: the registry's connection
    /// threads then copy or encrypt bytes that are mapped already instead of taking a page
    /// fault per fault-around window (a tenth of the TLS proxy's CPU was page faults).
    /// Parts outside the map are ignored; a kernel without it (before 5.14) only costs speed.
    pub fn populate(&self, part: &[u8]) {
        let Some((first, len)) = self.pages_of(part, false) else {
            return;
        };
        let advised = match &self.map {
            FileMap::Whole(m) => m.advise_range(Advice::PopulateRead, first, len),
            FileMap::Parts(p) => p.advise(first, len, MmapAdvise::MADV_POPULATE_READ),
        };
        if let Err(e) = advised {
            tracing::debug!("failed to populate mapped pages: {e}");
        }
    }

    /// The page-aligned range of the map (offset, length) that `part` covers: every page
    /// it touches (`whole_only` false), or only the pages entirely inside it. `None` when
    /// `part` is outside the map or covers no such page.
    fn pages_of(&self, part: &[u8], whole_only: bool) -> Option<(usize, usize)> {
        const PAGE: usize = 4096;
        let map = self.map.bytes();
        let base = map.as_ptr() as usize;
        let start = part.as_ptr() as usize;
        if start < base || start + part.len() > base + map.len() {
            return None;
        }
        let (start, end) = (start - base, start - base + part.len());
        let (first, end) = if whole_only {
            (start.div_ceil(PAGE) * PAGE, end / PAGE * PAGE)
        } else {
            (start / PAGE * PAGE, end.div_ceil(PAGE) * PAGE)
        };
        (end > first).then(|| (first, end.min(map.len()) - first))
    }

    /// Where the stub's ELF image ends, if the file starts with a parsable ELF.
    pub fn elf_end(&self) -> Option<u64> {
        self.elf_end
    }
}

impl PartsMap {
    /// `madvise` on `len` bytes at `offset` (page-aligned, inside the range).
    fn advise(&self, offset: usize, len: usize, advice: MmapAdvise) -> std::io::Result<()> {
        let addr = NonNull::new((self.base.as_ptr() as usize + offset) as *mut std::ffi::c_void)
            .expect("inside a non-null range");
        // SAFETY: the pages are inside our read-only private file maps, never written:
        // MADV_DONTNEED only drops page-table entries (the next access reads the same file
        // bytes back) and MADV_POPULATE_READ only faults them in.
        unsafe { mman::madvise(addr, len, advice) }.map_err(std::io::Error::from)
    }
}

/// When the folder holds more parts than the installer's header asks for (a part left over
/// from another split after the real last one, which then looks like a cut middle part),
/// the error naming the first extra part. Reads the header from the first part alone.
fn explain_extra_parts(first: &Path) -> Option<airlock_payload::PartError> {
    let file = File::open(first).ok()?;
    // SAFETY: a read-only, private map of the first part, read only inside this function
    // (see `from_file` for why a concurrent truncation cannot break memory safety).
    let map = unsafe { Mmap::map(&file) }.ok()?;
    let elf_end = airlock_payload::declared_elf_end(&map)?;
    let at = airlock_payload::align_payload(elf_end) as usize;
    let header = airlock_payload::Header::from_bytes(map.get(at..)?)?;
    let count = airlock_payload::part_count(header.file_len, map.len() as u64) as usize;
    let extra = airlock_payload::part_path(first, count + 1);
    extra.exists().then(|| airlock_payload::PartError::Extra {
        path: extra,
        last: airlock_payload::part_path(first, count),
    })
}

/// Checks a mapped split installer before any command runs: the trailer and index (in the
/// last part) open, and in every part the first and the last frame that lie wholly inside it
/// match their digests. A frame that fails names its part; when the first part's frames fail
/// too, or every sampled part fails, the index itself does not fit, and the last part is
/// named. Reads two frames per part, so it costs little even from a slow stick.
fn check_parts(bytes: &[u8], elf_end: Option<u64>, parts: &[Part]) -> Result<()> {
    let last = parts.last().expect("at least one part");
    let installer = match airlock_payload::Installer::open(bytes, elf_end) {
        Ok(i) => i,
        Err(e) => {
            // The parts before the last one may be a whole installer: the last is extra.
            let before = bytes.len() - last.len as usize;
            if parts.len() > 1
                && airlock_payload::Installer::open(&bytes[..before], elf_end).is_ok()
            {
                return Err(PartError::Extra {
                    path: last.path.clone(),
                    last: parts[parts.len() - 2].path.clone(),
                }
                .into());
            }
            return Err(PartError::Mismatch {
                path: last.path.clone(),
                detail: format!("the installer's end in it is unreadable ({e})"),
            }
            .into());
        }
    };
    let payload = installer.load_index().map_err(|e| PartError::Mismatch {
        path: last.path.clone(),
        detail: format!("the index in it is unreadable ({e})"),
    })?;
    let base = bytes.as_ptr() as usize;
    let frames: Vec<(u64, u64)> = (0..payload.index().frames().len())
        .map(|i| {
            let f = payload.frame_stored(i);
            let start = (f.as_ptr() as usize - base) as u64;
            (start, start + f.len() as u64)
        })
        .collect();
    let mut sampled = 0;
    let mut failed: Vec<(usize, String)> = Vec::new();
    let mut start = 0u64;
    for (n, part) in parts.iter().enumerate() {
        let end = start + part.len;
        // Frames lie back to back in order: those wholly inside are one run.
        let a = frames.partition_point(|f| f.0 < start);
        let b = frames.partition_point(|f| f.1 <= end);
        let sample: Vec<usize> = match b.checked_sub(a) {
            Some(0) | None => vec![],
            Some(1) => vec![a],
            Some(_) => vec![a, b - 1],
        };
        if !sample.is_empty() {
            sampled += 1;
        }
        if let Some(&bad) = sample.iter().find(|&&i| payload.check_frame(i).is_err()) {
            failed.push((
                n,
                format!(
                    "frame {bad} (bytes {}..{} of the installer) does not match its digest",
                    frames[bad].0, frames[bad].1
                ),
            ));
        }
        start = end;
    }
    match failed.first() {
        None => Ok(()),
        Some((0, _)) => Err(PartError::Mismatch {
            path: last.path.clone(),
            detail: format!(
                "the index in it does not match the frames of {}",
                parts[0].path.display()
            ),
        }
        .into()),
        Some(_) if failed.len() == sampled && sampled > 1 => Err(PartError::Mismatch {
            path: last.path.clone(),
            detail: "the index in it matches the frames of no other part".to_owned(),
        }
        .into()),
        Some((n, detail)) => Err(PartError::Mismatch {
            path: parts[*n].path.clone(),
            detail: detail.clone(),
        }
        .into()),
    }
}

/// `argv[0]` as a path: as given when it holds a `/`, else searched in `PATH` (a shell
/// found it there); unchanged when nothing matches, so the error names what was tried.
fn resolve_argv0(argv0: &OsString, path_var: Option<OsString>) -> PathBuf {
    let given = PathBuf::from(argv0);
    if argv0.as_encoded_bytes().contains(&b'/') {
        return given;
    }
    path_var
        .iter()
        .flat_map(env::split_paths)
        .map(|dir| dir.join(&given))
        .find(|candidate| candidate.is_file())
        .unwrap_or(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_file_finds_the_end_of_its_elf_image() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.run");
        let mut bytes = exe.clone();
        bytes.extend_from_slice(&[0xAB; 10_000]);
        std::fs::write(&path, &bytes).unwrap();
        let file = InstallerFile::open(&path).unwrap();
        assert_eq!(file.elf_end(), Some(exe.len() as u64));
        assert_eq!(file.bytes().len(), bytes.len());
        assert_eq!(file.path(), path);
    }

    #[test]
    fn populate_covers_every_touched_page_and_release_only_whole_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.run");
        std::fs::write(&path, vec![7u8; 3 * 4096 + 100]).unwrap();
        let file = InstallerFile::open(&path).unwrap();
        let bytes = file.bytes();
        // 10..8200 touches pages 0..=2 and holds page 1 only whole.
        assert_eq!(file.pages_of(&bytes[10..8200], false), Some((0, 3 * 4096)));
        assert_eq!(file.pages_of(&bytes[10..8200], true), Some((4096, 4096)));
        // Inside one page: nothing whole to release.
        assert_eq!(file.pages_of(&bytes[10..20], true), None);
        // The tail page is cut at the end of the map.
        assert_eq!(
            file.pages_of(&bytes[3 * 4096..], false),
            Some((3 * 4096, 100))
        );
        // Bytes that are not part of the map are left alone.
        let other = vec![0u8; 8192];
        assert_eq!(file.pages_of(&other, false), None);
        file.populate(&bytes[10..8200]);
        file.release(&bytes[10..8200]);
        assert!(bytes.iter().all(|&b| b == 7), "the bytes survive both");
    }

    #[test]
    fn argv0_without_a_slash_is_found_in_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("demo.run"), b"x").unwrap();
        let found = resolve_argv0(&"demo.run".into(), Some(dir.path().as_os_str().to_owned()));
        assert_eq!(found, dir.path().join("demo.run"));
        assert_eq!(
            resolve_argv0(&"./demo.run".into(), None),
            PathBuf::from("./demo.run")
        );
    }

    #[test]
    fn missing_installer_file_is_an_open_error_naming_it() {
        let err = InstallerFile::open("/no/such/file.run").unwrap_err();
        assert!(matches!(err, Error::Open { .. }));
        assert!(err.to_string().contains("/no/such/file.run"), "{err}");
    }
}
