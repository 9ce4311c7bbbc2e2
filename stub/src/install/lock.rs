//! The install lock, `<root>/var/lib/airlock/install.lock`: an exclusive `flock` held for
//! the whole install or uninstall, with the holder's pid written inside so a second run can
//! say who holds it. The kernel drops the lock when the holder dies, so a killed install
//! never blocks the next one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::fsutil::{create_dirs, logical_parent, resolve, PathKind, PathRecord};
use super::host::open_lock_file;
use super::{Error, Result, STATE_DIR};

/// The intent file written in the nearest existing parent before the state folders are
/// created (removed once the lock file lists them).
const INTENT_FILE: &str = ".airlock-creating";

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
        // Write-ahead for the folders themselves: before the first mkdir, the folders about to
        // be created are listed in an intent file in the nearest existing parent, and the
        // intent of a run killed in between is picked up here, so no kill point leaves a
        // folder of ours unrecorded.
        let ancestors = ["/var", "/var/lib", STATE_DIR];
        let mut intended: Vec<String> = Vec::new();
        let mut stale: Vec<PathBuf> = Vec::new();
        for dir in ["/"].iter().chain(&ancestors[..2]) {
            let file = resolve(root, dir).join(INTENT_FILE);
            if let Ok(text) = std::fs::read_to_string(&file) {
                intended.extend(
                    text.lines()
                        .filter(|l| ancestors.contains(l))
                        .map(str::to_owned),
                );
                stale.push(file);
            }
        }
        let missing: Vec<&str> = ancestors
            .iter()
            .copied()
            .filter(|d| std::fs::symlink_metadata(resolve(root, d)).is_err())
            .collect();
        let mut intent_file = None;
        if let Some(first) = missing.first() {
            let parent = logical_parent(first).unwrap_or("/");
            let file = resolve(root, parent).join(INTENT_FILE);
            std::fs::write(&file, missing.join("\n") + "\n")
                .map_err(Error::fs("write the folder intent", &file))?;
            intent_file = Some(file);
        }
        let mut created = create_dirs(root, STATE_DIR)?;
        for dir in intended {
            if !created.iter().any(|c| c.path == dir) {
                created.push(PathRecord {
                    path: dir,
                    kind: PathKind::Dir,
                    existed_before: false,
                });
            }
        }
        let path = resolve(root, LOCK_FILE);
        let file = open_lock_file(&path).map_err(Error::fs("open the install lock", &path))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Error::Locked {
                    path,
                    pid: text.lines().next().and_then(|l| l.trim().parse().ok()),
                });
            }
            Err((_, errno)) => {
                return Err(Error::fs("lock", path)(std::io::Error::from(errno)));
            }
        };
        // The folders created for the lock are written into the lock file at once, and kept
        // there (a union) until uninstall removes the file: a run killed before its first
        // record save still tells the next run which folders were its own.
        let mut previous = String::new();
        let _ = lock.read_to_string(&mut previous);
        for line in previous.lines().skip(1) {
            // Only the state folder and its parents are ever written here.
            if let Some(dir) = line
                .strip_prefix("created ")
                .filter(|d| d.starts_with('/') && STATE_DIR.starts_with(d))
            {
                if !created.iter().any(|c| c.path == dir) {
                    created.push(PathRecord {
                        path: dir.to_owned(),
                        kind: PathKind::Dir,
                        existed_before: false,
                    });
                }
            }
        }
        created.sort_by_key(|c| c.path.len());
        let mut pid = format!("{}\n", std::process::id());
        for c in &created {
            pid.push_str(&format!("created {}\n", c.path));
        }
        lock.set_len(0)
            .and_then(|()| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| lock.write_all(pid.as_bytes()))
            .map_err(Error::fs("write the holder's pid into", &path))?;
        // The lock file holds the folders now: the intent files have done their job.
        for f in intent_file.iter().chain(&stale) {
            let _ = std::fs::remove_file(f);
        }
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
        // The folders the first holder created are remembered in the lock file, so a run
        // killed before its record was saved still has them undone.
        let again = InstallLock::acquire(root.path()).unwrap();
        let again_paths: Vec<&str> = again.created().iter().map(|r| r.path.as_str()).collect();
        assert_eq!(again_paths, ["/var", "/var/lib", "/var/lib/airlock"]);
    }

    #[test]
    fn folders_a_killed_run_made_before_its_lock_file_are_still_ours() {
        // A run killed between its mkdirs and its lock-file write left only its intent.
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join(INTENT_FILE),
            "/var\n/var/lib\n/var/lib/airlock\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/airlock")).unwrap();
        let lock = InstallLock::acquire(root.path()).unwrap();
        let mut paths: Vec<&str> = lock.created().iter().map(|r| r.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["/var", "/var/lib", "/var/lib/airlock"]);
        assert!(lock.created().iter().all(|r| !r.existed_before));
        assert!(
            !root.path().join(INTENT_FILE).exists(),
            "the intent is consumed"
        );
    }
}
