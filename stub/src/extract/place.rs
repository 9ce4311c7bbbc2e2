//! The last step of `extract`: moving the staged tree into the target, and removing
//! staging folders.
//!
//! Every conflict is found before anything moves: a staged folder never replaces (or
//! follows) a symlink, and nothing replaces a folder except a folder (by merging).

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::sys;
use crate::{Error, Result};

/// One step of the move, in execution order.
#[derive(Debug, PartialEq, Eq)]
enum Op {
    /// `rename(from, to)`; `dir_mode` is set for a folder (it may need owner-write while it
    /// moves to a new parent).
    Rename {
        from: PathBuf,
        to: PathBuf,
        dir_mode: Option<u32>,
    },
    /// Before merging into the existing folder `to`, make sure we may add entries to it.
    EnterDir { to: PathBuf },
    /// After merging: give the existing folder `to` its mode and mtime.
    FinishDir { to: PathBuf, mode: u32 },
}

/// Moves every entry of the folder `staged` into the folder `target`: a missing
/// destination is renamed into place, folders are merged, files and symlinks replace
/// files and symlinks atomically. Fails before moving anything if a folder would replace a
/// symlink or a non-folder, or a non-folder would replace a folder.
pub(crate) fn move_into_place(staged: &Path, target: &Path, mtime: SystemTime) -> Result<()> {
    let root = sys::is_root();
    let mut ops = Vec::new();
    plan(staged, target, root, &mut ops)?;
    for op in ops {
        tracing::trace!(?op, "move into place");
        match op {
            Op::Rename { from, to, dir_mode } => match dir_mode {
                // A non-root owner needs write permission on a folder to move it to a new
                // parent (its ".." changes).
                Some(mode) if !root && mode & 0o200 == 0 => {
                    set_mode(&from, mode | 0o200)?;
                    fs::rename(&from, &to).map_err(Error::fs("move into place", &to))?;
                    set_mode(&to, mode)?;
                }
                _ => fs::rename(&from, &to).map_err(Error::fs("move into place", &to))?,
            },
            Op::EnterDir { to } => {
                let mode = fs::symlink_metadata(&to)
                    .map_err(Error::fs("inspect", &to))?
                    .permissions()
                    .mode();
                if !root && mode & 0o300 != 0o300 {
                    set_mode(&to, mode | 0o300)?;
                }
            }
            Op::FinishDir { to, mode } => {
                let dir = sys::open_dir_nofollow(&to).map_err(Error::fs("open folder", &to))?;
                dir.set_modified(mtime)
                    .map_err(Error::fs("set the modification time of", &to))?;
                dir.set_permissions(Permissions::from_mode(mode))
                    .map_err(Error::fs("set the mode of", &to))?;
            }
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(Error::fs("set the mode of", path))
}

fn plan(staged: &Path, target: &Path, root: bool, ops: &mut Vec<Op>) -> Result<()> {
    let mut children: Vec<_> = fs::read_dir(staged)
        .map_err(Error::fs("read staged folder", staged))?
        .map(|c| c.map(|c| c.file_name()))
        .collect::<io::Result<_>>()
        .map_err(Error::fs("read staged folder", staged))?;
    children.sort();
    for name in children {
        let from = staged.join(&name);
        let to = target.join(&name);
        let staged_meta = fs::symlink_metadata(&from).map_err(Error::fs("inspect", &from))?;
        let dest_meta = match fs::symlink_metadata(&to) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::fs("inspect", &to)(e)),
        };
        let staged_mode = staged_meta.permissions().mode() & 0o7777;
        match (staged_meta.is_dir(), dest_meta) {
            (true, None) => ops.push(Op::Rename {
                from,
                to,
                dir_mode: Some(staged_mode),
            }),
            (true, Some(d)) if d.is_dir() => {
                if !root {
                    // The staged folder is ours and is removed afterwards: let its entries out.
                    set_mode(&from, 0o700)?;
                }
                ops.push(Op::EnterDir { to: to.clone() });
                plan(&from, &to, root, ops)?;
                ops.push(Op::FinishDir {
                    to,
                    mode: staged_mode,
                });
            }
            (true, Some(d)) if d.file_type().is_symlink() => {
                return Err(Error::SymlinkInTheWay(to))
            }
            (true, Some(_)) => return Err(Error::NotAFolder(to)),
            (false, Some(d)) if d.is_dir() => {
                let kind = if staged_meta.file_type().is_symlink() {
                    "symlink"
                } else {
                    "file"
                };
                return Err(Error::FolderInTheWay { path: to, kind });
            }
            (false, _) => ops.push(Op::Rename {
                from,
                to,
                dir_mode: None,
            }),
        }
    }
    Ok(())
}

/// Removes the tree at `path`, first making its folders owner-accessible if permission
/// bits stand in the way (a staged folder may already carry its final mode, e.g. 0555).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            open_up(path);
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

fn open_up(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = fs::set_permissions(path, Permissions::from_mode(0o700));
        for child in fs::read_dir(path).into_iter().flatten().flatten() {
            open_up(&child.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staged");
        let target = dir.path().join("target");
        fs::create_dir_all(staged.join("a/b")).unwrap();
        fs::write(staged.join("a/b/file"), b"new").unwrap();
        fs::create_dir(&target).unwrap();
        (dir, staged, target)
    }

    #[test]
    fn missing_destinations_are_renamed_and_existing_folders_merged() {
        let (_dir, staged, target) = setup();
        fs::create_dir_all(target.join("a/other")).unwrap();
        fs::write(target.join("a/keep"), b"old").unwrap();
        fs::set_permissions(staged.join("a"), Permissions::from_mode(0o751)).unwrap();
        move_into_place(&staged, &target, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(fs::read(target.join("a/b/file")).unwrap(), b"new");
        assert_eq!(fs::read(target.join("a/keep")).unwrap(), b"old");
        assert!(target.join("a/other").is_dir());
        let meta = fs::metadata(target.join("a")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o751);
        assert_eq!(meta.modified().unwrap(), SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn a_symlink_is_never_replaced_by_a_folder_and_nothing_moves() {
        let (dir, staged, target) = setup();
        fs::write(staged.join("first"), b"x").unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        symlink(&elsewhere, target.join("a")).unwrap();
        let err = move_into_place(&staged, &target, SystemTime::UNIX_EPOCH).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to replace symlink {} with a folder",
                target.join("a").display()
            )
        );
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert!(
            !target.join("first").exists(),
            "a file moved before the conflict was found"
        );
    }

    #[test]
    fn a_folder_is_never_replaced_by_a_file() {
        let (_dir, staged, target) = setup();
        fs::create_dir_all(target.join("a/b/file")).unwrap();
        let err = move_into_place(&staged, &target, SystemTime::UNIX_EPOCH).unwrap_err();
        assert!(
            matches!(err, Error::FolderInTheWay { kind: "file", .. }),
            "{err}"
        );
    }

    #[test]
    fn files_and_symlinks_replace_files_and_symlinks() {
        let (_dir, staged, target) = setup();
        symlink("b/file", staged.join("link")).unwrap();
        fs::create_dir_all(target.join("a/b")).unwrap();
        symlink("/etc/passwd", target.join("a/b/file")).unwrap();
        fs::write(target.join("link"), b"old file").unwrap();
        move_into_place(&staged, &target, SystemTime::UNIX_EPOCH).unwrap();
        assert!(fs::symlink_metadata(target.join("a/b/file"))
            .unwrap()
            .is_file());
        assert_eq!(
            fs::read_link(target.join("link")).unwrap(),
            Path::new("b/file")
        );
    }

    #[test]
    fn remove_tree_removes_read_only_folders() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        fs::create_dir_all(t.join("ro/inner")).unwrap();
        fs::write(t.join("ro/inner/f"), b"x").unwrap();
        fs::set_permissions(t.join("ro/inner"), Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(t.join("ro"), Permissions::from_mode(0o500)).unwrap();
        remove_tree(&t).unwrap();
        assert!(!t.exists());
    }
}
