//! Finding and mapping the installer file: the running program itself.
//!
//! An installer is the stub program with the payload appended, so the stub reads its own
//! executable: `/proc/self/exe`, or `argv[0]` when `/proc` is not mounted (an empty chroot).
//! The environment variable `AIRLOCK_INSTALLER=/path/file.run` makes the stub operate on
//! another file instead (a debugging aid, also used by tests).

use std::env;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap, UncheckedAdvice};

use crate::{Error, Result};

/// The environment variable naming another installer file to operate on.
pub const INSTALLER_ENV: &str = "AIRLOCK_INSTALLER";

/// The installer file, mapped read-only.
#[derive(Debug)]
pub struct InstallerFile {
    path: PathBuf,
    map: Mmap,
    elf_end: Option<u64>,
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
        Ok(InstallerFile { path, map, elf_end })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
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
        let advised = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, first, len)
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
        if let Err(e) = self.map.advise_range(Advice::PopulateRead, first, len) {
            tracing::debug!("failed to populate mapped pages: {e}");
        }
    }

    /// The page-aligned range of the map (offset, length) that `part` covers: every page
    /// it touches (`whole_only` false), or only the pages entirely inside it. `None` when
    /// `part` is outside the map or covers no such page.
    fn pages_of(&self, part: &[u8], whole_only: bool) -> Option<(usize, usize)> {
        const PAGE: usize = 4096;
        let base = self.map.as_ptr() as usize;
        let start = part.as_ptr() as usize;
        if start < base || start + part.len() > base + self.map.len() {
            return None;
        }
        let (start, end) = (start - base, start - base + part.len());
        let (first, end) = if whole_only {
            (start.div_ceil(PAGE) * PAGE, end / PAGE * PAGE)
        } else {
            (start / PAGE * PAGE, end.div_ceil(PAGE) * PAGE)
        };
        (end > first).then(|| (first, end.min(self.map.len()) - first))
    }

    /// Where the stub's ELF image ends, if the file starts with a parsable ELF.
    pub fn elf_end(&self) -> Option<u64> {
        self.elf_end
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
