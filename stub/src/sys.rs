//! The seam to the operating system: free-space queries behind [`SpaceProbe`] (so tests can
//! fake a full disk) and the few `open` flags std does not name. nix and libc are used only
//! here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::libc;

/// Free space on a filesystem, as an unprivileged user may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    /// Bytes available to unprivileged users (`f_bavail * f_frsize`).
    pub bytes: u64,
    /// Inodes available, or `None` when the filesystem has no fixed inode count (btrfs,
    /// some network filesystems report 0 total inodes).
    pub inodes: Option<u64>,
}

/// Answers "how much room is left on the filesystem holding this folder".
pub trait SpaceProbe: Sync {
    /// Free space of the filesystem that holds `dir`.
    fn free_space(&self, dir: &Path) -> io::Result<FreeSpace>;
}

/// The real probe: `statvfs(2)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Statvfs;

impl SpaceProbe for Statvfs {
    // The statvfs field types differ between platforms; on x86_64 Linux they are u64.
    #[allow(clippy::useless_conversion)]
    fn free_space(&self, dir: &Path) -> io::Result<FreeSpace> {
        let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
        let bytes = u64::from(st.blocks_available()).saturating_mul(st.fragment_size());
        let inodes = (st.files() != 0).then(|| u64::from(st.files_available()));
        Ok(FreeSpace { bytes, inodes })
    }
}

/// A probe that reports fixed numbers, for tests that need a full (or huge) disk.
#[derive(Debug, Clone, Copy)]
pub struct FixedSpace(pub FreeSpace);

impl SpaceProbe for FixedSpace {
    fn free_space(&self, _dir: &Path) -> io::Result<FreeSpace> {
        Ok(self.0)
    }
}

/// Creates a new file (owner read-write only), failing if anything exists at `path`, a
/// symlink included.
pub fn create_new_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens an existing regular file for writing without following a symlink at `path`.
pub fn open_write_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens a folder read-only (for `futimens`/`fchmod`) without following a symlink at `path`;
/// fails unless `path` is a folder.
pub fn open_dir_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// True when the process runs as root (permission bits do not restrict it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// An exclusive advisory lock (`flock`) on a folder, held while the value lives and
/// released by the kernel when the process dies, so a crashed run never holds it.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

/// Locks folder `path` without waiting: `Ok(None)` when another process holds the lock.
pub fn try_lock_dir(path: &Path) -> io::Result<Option<DirLock>> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    match nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(DirLock(lock))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(io::Error::from(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_reports_some_free_space_for_a_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let free = Statvfs.free_space(dir.path()).unwrap();
        assert!(free.bytes > 0, "a writable temp dir reported 0 free bytes");
    }

    #[test]
    fn open_write_nofollow_refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), b"x").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        assert!(open_write_nofollow(&dir.path().join("real")).is_ok());
        let err = open_write_nofollow(&dir.path().join("link")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }
}
