//! The install lock, `<root>/var/lib/airlock/install.lock`: an exclusive `flock` held for
//! the whole install or uninstall, with the holder's pid written inside so a second run can
//! say who holds it. The kernel drops the lock when the holder dies, so a killed install
//! never blocks the next one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::fsutil::{create_dirs, resolve};
use super::host::open_lock_file;
use super::record::PathRecord;
use super::{Error, Result, STATE_DIR};

/// The lock file, inside the root.
pub const LOCK_FILE: &str = "/var/lib/airlock/install.lock";

/// A held install lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct InstallLock {
    _lock: Flock<File>,
    path: PathBuf,
    created: Vec<PathRecord>,
}

impl InstallLock {
    /// Takes the lock without waiting. Fails with [`Error::Locked`], naming the holder's
    /// pid, when another install or uninstall holds it.
    pub fn acquire(root: &Path) -> Result<InstallLock> {
        let created = create_dirs(root, STATE_DIR)?;
        let path = resolve(root, LOCK_FILE);
        let file = open_lock_file(&path).map_err(Error::fs("open the install lock", &path))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Error::Locked {
                    path,
                    pid: text.trim().parse().ok(),
                });
            }
            Err((_, errno)) => {
                return Err(Error::fs("lock", path)(std::io::Error::from(errno)));
            }
        };
        let pid = format!("{}\n", std::process::id());
        lock.set_len(0)
            .and_then(|()| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| lock.write_all(pid.as_bytes()))
            .map_err(Error::fs("write the holder's pid into", &path))?;
        Ok(InstallLock {
            _lock: lock,
            path,
            created,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Folders created to hold the lock file, for the install record.
    pub fn created(&self) -> &[PathRecord] {
        &self.created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_install_fails_at_once_and_names_the_holder() {
        let root = tempfile::tempdir().unwrap();
        let first = InstallLock::acquire(root.path()).unwrap();
        let paths: Vec<&str> = first.created().iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/var", "/var/lib", "/var/lib/airlock"]);

        let err = InstallLock::acquire(root.path()).unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(err, Error::Locked { pid: Some(p), .. } if p == pid),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("another install is running (pid {pid})")),
            "{err}"
        );

        drop(first);
        let again = InstallLock::acquire(root.path()).unwrap();
        assert!(again.created().is_empty());
    }
}
