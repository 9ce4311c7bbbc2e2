//! Gathers the `files` of a spec into one sorted, normalised list of entries.
//!
//! [`gather`] turns each [`FileSpec`] into [`SourceEntry`] values: a file source becomes one entry
//! at its `dest`; a folder source brings its whole tree under `dest`. The result is what the
//! payload writer stores, so it is deterministic: sorted by path in byte order, one entry per
//! path, every parent folder present before its children, hard links recorded once.
//!
//! Rules:
//!
//! - Walking a folder never follows symlinks: a link is kept as a link, its target text
//!   verbatim. The `src` named in the spec is followed if it is a symlink, so
//!   `src: bin/containerd` may point at a versioned binary.
//! - `mode` overrides the permission bits of a file source. It is rejected on a folder source:
//!   applying it to every file, or only to the folder, would each surprise someone.
//! - Missing parents are added as folders with mode `0755`; the root itself is not an entry.
//! - Regular files with more than one link that share a device and inode (and end up with the
//!   same mode) become one [`SourceKind::File`], the first in sorted order, and
//!   [`SourceKind::Hardlink`]s to it.
//! - The same path from two specs is accepted when both are folders (the first one's mode is
//!   kept), both are the same source file (an explicit `mode` wins over the source's), or both
//!   are symlinks with the same target; anything else is a conflict that names both sources.
//! - Only regular files, folders and symlinks are supported, and names must be valid UTF-8.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::spec::FileSpec;

/// A specialised `Result` for gathering files.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while gathering files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A source file, folder or link could not be read.
    #[error("failed to read {}", .path.display())]
    Read {
        /// The path that could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A name inside a source folder is not valid UTF-8.
    #[error("failed to gather {}: the name is not valid UTF-8", .path.display())]
    NameNotUtf8 {
        /// The offending path (shown lossily).
        path: PathBuf,
    },
    /// A symlink's target is not valid UTF-8.
    #[error("failed to gather {}: the symlink target is not valid UTF-8", .path.display())]
    TargetNotUtf8 {
        /// The symlink.
        path: PathBuf,
    },
    /// A fifo, socket or device.
    #[error("unsupported file type: {kind} at {}", .path.display())]
    UnsupportedType {
        /// `fifo`, `socket`, `character device`, `block device` or `unknown`.
        kind: &'static str,
        /// Where it was found.
        path: PathBuf,
    },
    /// `mode` was given for a folder source.
    #[error("failed to apply mode to {}: mode is only allowed on a file source, not a folder", .src.display())]
    ModeOnFolder {
        /// The folder source.
        src: PathBuf,
    },
    /// A file source with `dest: /`.
    #[error("failed to place {}: a file source needs a dest below /", .src.display())]
    FileAtRoot {
        /// The file source.
        src: PathBuf,
    },
    /// Two specs put different things at the same path.
    #[error("conflicting sources for /{path}: {} and {}", .first.display(), .second.display())]
    Conflict {
        /// The path inside the target root.
        path: String,
        /// The source that claimed it first.
        first: PathBuf,
        /// The source that claimed it again.
        second: PathBuf,
    },
    /// Two specs give the same source file different explicit modes at the same path.
    #[error("conflicting modes for /{path}: {first:04o} and {second:04o}")]
    ConflictingModes {
        /// The path inside the target root.
        path: String,
        /// The mode given first.
        first: u32,
        /// The mode given again.
        second: u32,
    },
    /// An entry's parent path is taken by something that is not a folder.
    #[error("failed to place /{path}: its parent /{parent} is a {kind} from {}", .src.display())]
    ParentNotDir {
        /// The entry that needs the parent.
        path: String,
        /// The parent path.
        parent: String,
        /// What the parent is: `file` or `symlink`.
        kind: &'static str,
        /// Where the parent came from.
        src: PathBuf,
    },
}

/// One path of the target tree and where its content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// Relative to the target root, '/'-separated, without a leading '/'; never empty.
    pub path: String,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// What the entry is.
    pub kind: SourceKind,
}

/// What a [`SourceEntry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A folder.
    Dir,
    /// A regular file.
    File {
        /// Where to read the content.
        src: PathBuf,
        /// The size when it was gathered.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, verbatim.
        target: String,
    },
    /// A hard link to an earlier [`SourceKind::File`] entry of the same list.
    Hardlink {
        /// The path of that entry.
        target: String,
    },
}

/// An entry while the tree is being gathered.
struct Pending {
    mode: u32,
    /// Whether `mode` came from the spec rather than the source.
    mode_explicit: bool,
    kind: PendingKind,
    /// The source path it came from, for messages.
    origin: PathBuf,
}

enum PendingKind {
    Dir,
    File {
        src: PathBuf,
        size: u64,
        dev: u64,
        ino: u64,
        nlink: u64,
    },
    Symlink {
        target: String,
    },
}

impl PendingKind {
    fn name(&self) -> &'static str {
        match self {
            PendingKind::Dir => "folder",
            PendingKind::File { .. } => "file",
            PendingKind::Symlink { .. } => "symlink",
        }
    }
}

/// Gathers `files` into a sorted, de-duplicated list of entries (see the module docs for the
/// rules).
pub fn gather(files: &[FileSpec]) -> Result<Vec<SourceEntry>> {
    let mut tree = BTreeMap::new();
    for spec in files {
        gather_spec(spec, &mut tree)?;
    }
    add_parents(&mut tree)?;
    Ok(finish(tree))
}

fn gather_spec(spec: &FileSpec, tree: &mut BTreeMap<String, Pending>) -> Result<()> {
    let dest = spec.dest.as_str();
    // The named source is followed if it is a symlink; links inside a folder are not.
    let meta = fs::metadata(&spec.src).map_err(|source| Error::Read {
        path: spec.src.clone(),
        source,
    })?;
    if meta.is_dir() {
        if spec.mode.is_some() {
            return Err(Error::ModeOnFolder {
                src: spec.src.clone(),
            });
        }
        if !dest.is_empty() {
            let dir = pending(&spec.src, &meta, PendingKind::Dir);
            insert(tree, dest.to_owned(), dir)?;
        }
        walk(&spec.src, dest, tree)
    } else if meta.is_file() {
        if dest.is_empty() {
            return Err(Error::FileAtRoot {
                src: spec.src.clone(),
            });
        }
        let mut file = pending(&spec.src, &meta, file_kind(&spec.src, &meta));
        if let Some(mode) = spec.mode {
            file.mode = mode.bits();
            file.mode_explicit = true;
        }
        insert(tree, dest.to_owned(), file)
    } else {
        Err(unsupported(&spec.src, &meta))
    }
}

/// Adds everything below the folder `root` under `prefix`, without following symlinks.
fn walk(root: &Path, prefix: &str, tree: &mut BTreeMap<String, Pending>) -> Result<()> {
    let mut folders = vec![(root.to_owned(), prefix.to_owned())];
    while let Some((dir, prefix)) = folders.pop() {
        let read_error = |source| Error::Read {
            path: dir.clone(),
            source,
        };
        let mut children = fs::read_dir(&dir)
            .map_err(read_error)?
            .collect::<io::Result<Vec<_>>>()
            .map_err(read_error)?;
        // Sorted so that the first error found is the same on every run.
        children.sort_by_key(|child| child.file_name());
        for child in children {
            let src = child.path();
            let name = child.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| Error::NameNotUtf8 { path: src.clone() })?;
            let path = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            let meta = fs::symlink_metadata(&src).map_err(|source| Error::Read {
                path: src.clone(),
                source,
            })?;
            let file_type = meta.file_type();
            let kind = if file_type.is_dir() {
                folders.push((src.clone(), path.clone()));
                PendingKind::Dir
            } else if file_type.is_file() {
                file_kind(&src, &meta)
            } else if file_type.is_symlink() {
                let target = fs::read_link(&src).map_err(|source| Error::Read {
                    path: src.clone(),
                    source,
                })?;
                let target = target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| Error::TargetNotUtf8 { path: src.clone() })?;
                PendingKind::Symlink { target }
            } else {
                return Err(unsupported(&src, &meta));
            };
            insert(tree, path, pending(&src, &meta, kind))?;
        }
    }
    Ok(())
}

fn pending(src: &Path, meta: &Metadata, kind: PendingKind) -> Pending {
    Pending {
        mode: meta.mode() & 0o7777,
        mode_explicit: false,
        kind,
        origin: src.to_owned(),
    }
}

fn file_kind(src: &Path, meta: &Metadata) -> PendingKind {
    PendingKind::File {
        src: src.to_owned(),
        size: meta.len(),
        dev: meta.dev(),
        ino: meta.ino(),
        nlink: meta.nlink(),
    }
}

fn unsupported(path: &Path, meta: &Metadata) -> Error {
    let file_type = meta.file_type();
    let kind = if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "unknown"
    };
    Error::UnsupportedType {
        kind,
        path: path.to_owned(),
    }
}

/// Adds `new` at `path`, merging with what is there already or reporting a conflict.
fn insert(tree: &mut BTreeMap<String, Pending>, path: String, new: Pending) -> Result<()> {
    let Some(old) = tree.get_mut(&path) else {
        tree.insert(path, new);
        return Ok(());
    };
    match (&old.kind, &new.kind) {
        (PendingKind::Dir, PendingKind::Dir) => Ok(()),
        (PendingKind::Symlink { target: a }, PendingKind::Symlink { target: b }) if a == b => {
            Ok(())
        }
        (
            PendingKind::File { dev, ino, .. },
            PendingKind::File {
                dev: new_dev,
                ino: new_ino,
                ..
            },
        ) if (dev, ino) == (new_dev, new_ino) => {
            if new.mode_explicit {
                if old.mode_explicit && old.mode != new.mode {
                    return Err(Error::ConflictingModes {
                        path,
                        first: old.mode,
                        second: new.mode,
                    });
                }
                old.mode = new.mode;
                old.mode_explicit = true;
            }
            Ok(())
        }
        _ => Err(Error::Conflict {
            path,
            first: old.origin.clone(),
            second: new.origin,
        }),
    }
}

/// Makes sure every entry's parents are folders, adding the missing ones with mode 0755.
fn add_parents(tree: &mut BTreeMap<String, Pending>) -> Result<()> {
    let paths: Vec<String> = tree.keys().cloned().collect();
    for path in paths {
        let mut ends: Vec<usize> = path.match_indices('/').map(|(at, _)| at).collect();
        // Deepest first: once a parent is known to be a folder, its own parents were checked
        // when it was visited itself (or are being added now).
        ends.reverse();
        for end in ends {
            let parent = &path[..end];
            match tree.get(parent) {
                Some(Pending {
                    kind: PendingKind::Dir,
                    ..
                }) => {}
                Some(other) => {
                    return Err(Error::ParentNotDir {
                        path: path.clone(),
                        parent: parent.to_owned(),
                        kind: other.kind.name(),
                        src: other.origin.clone(),
                    })
                }
                None => {
                    let origin = tree[&path].origin.clone();
                    tree.insert(
                        parent.to_owned(),
                        Pending {
                            mode: 0o755,
                            mode_explicit: false,
                            kind: PendingKind::Dir,
                            origin,
                        },
                    );
                }
            }
        }
    }
    Ok(())
}

/// Turns the gathered tree into entries, recording hard links.
fn finish(tree: BTreeMap<String, Pending>) -> Vec<SourceEntry> {
    let mut first_links: HashMap<(u64, u64), (String, u32)> = HashMap::new();
    tree.into_iter()
        .map(|(path, pending)| {
            let kind = match pending.kind {
                PendingKind::Dir => SourceKind::Dir,
                PendingKind::Symlink { target } => SourceKind::Symlink { target },
                PendingKind::File {
                    src,
                    size,
                    dev,
                    ino,
                    nlink,
                } => match first_links.get(&(dev, ino)) {
                    Some((target, mode)) if nlink > 1 && *mode == pending.mode => {
                        SourceKind::Hardlink {
                            target: target.clone(),
                        }
                    }
                    Some(_) => SourceKind::File { src, size },
                    None => {
                        if nlink > 1 {
                            first_links.insert((dev, ino), (path.clone(), pending.mode));
                        }
                        SourceKind::File { src, size }
                    }
                },
            };
            SourceEntry {
                path,
                mode: pending.mode,
                kind,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DestPath, Mode};
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn file_spec(src: &Path, dest: &str, mode: Option<u32>) -> FileSpec {
        FileSpec {
            src: src.to_owned(),
            dest: dest.parse::<DestPath>().unwrap(),
            mode: mode.map(|bits| Mode::try_from(bits).unwrap()),
        }
    }

    fn write(path: &Path, content: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn paths(entries: &[SourceEntry]) -> Vec<&str> {
        entries.iter().map(|entry| entry.path.as_str()).collect()
    }

    fn find<'a>(entries: &'a [SourceEntry], path: &str) -> &'a SourceEntry {
        entries
            .iter()
            .find(|entry| entry.path == path)
            .unwrap_or_else(|| panic!("no entry {path} in {:?}", paths(entries)))
    }

    #[test]
    fn folder_tree_is_gathered_sorted_under_dest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        write(&root.join("etc/app/config.toml"), b"x = 1\n", 0o644);
        write(&root.join("etc/empty"), b"", 0o600);
        fs::create_dir_all(root.join("var/lib/empty-dir")).unwrap();
        write(&root.join("a-b"), b"dash", 0o644);
        let entries = gather(&[file_spec(&root, "/", None)]).unwrap();
        assert_eq!(
            paths(&entries),
            [
                "a-b",
                "etc",
                "etc/app",
                "etc/app/config.toml",
                "etc/empty",
                "var",
                "var/lib",
                "var/lib/empty-dir"
            ]
        );
        let empty = find(&entries, "etc/empty");
        assert_eq!(empty.mode, 0o600);
        assert_eq!(
            empty.kind,
            SourceKind::File {
                src: root.join("etc/empty"),
                size: 0
            }
        );
        assert_eq!(
            find(&entries, "etc/app/config.toml").kind,
            SourceKind::File {
                src: root.join("etc/app/config.toml"),
                size: 6
            }
        );
        assert_eq!(find(&entries, "var/lib/empty-dir").kind, SourceKind::Dir);
    }

    #[test]
    fn output_is_in_byte_order_of_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        for name in ["b", "a.d/x", "a/x", "a-b", "Z", "é"] {
            write(&root.join(name), b"", 0o644);
        }
        let entries = gather(&[file_spec(&root, "/opt", None)]).unwrap();
        let got = paths(&entries);
        let mut sorted = got.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(got, sorted);
        assert_eq!(got[0], "opt");
        assert!(got.contains(&"opt/é"));
    }

    #[test]
    fn folder_dest_gets_the_folders_mode_and_parents_are_synthesized() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app");
        write(&src.join("run.sh"), b"#!/bin/sh\n", 0o755);
        fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
        let entries = gather(&[file_spec(&src, "/opt/vendor/app", None)]).unwrap();
        assert_eq!(
            paths(&entries),
            [
                "opt",
                "opt/vendor",
                "opt/vendor/app",
                "opt/vendor/app/run.sh"
            ]
        );
        assert_eq!(find(&entries, "opt").mode, 0o755);
        assert_eq!(find(&entries, "opt/vendor/app").mode, 0o750);
        assert_eq!(find(&entries, "opt/vendor/app/run.sh").mode, 0o755);
    }

    #[test]
    fn file_source_goes_to_exactly_dest_with_parents() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("bin/containerd");
        write(&src, b"elf", 0o700);
        let entries = gather(&[file_spec(&src, "/usr/local/bin/containerd", None)]).unwrap();
        assert_eq!(
            paths(&entries),
            [
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/containerd"
            ]
        );
        assert!(entries[..3]
            .iter()
            .all(|entry| entry.kind == SourceKind::Dir && entry.mode == 0o755));
        assert_eq!(entries[3].mode, 0o700);
    }

    #[test]
    fn mode_overrides_a_file_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tool");
        write(&src, b"elf", 0o644);
        let entries = gather(&[file_spec(&src, "/bin/tool", Some(0o4755))]).unwrap();
        assert_eq!(find(&entries, "bin/tool").mode, 0o4755);
    }

    #[test]
    fn mode_on_a_folder_source_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let err = gather(&[file_spec(dir.path(), "/", Some(0o755))]).unwrap_err();
        assert!(matches!(err, Error::ModeOnFolder { .. }), "{err}");
        assert!(
            err.to_string().contains("only allowed on a file source"),
            "{err}"
        );
    }

    #[test]
    fn file_source_at_the_root_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("f");
        write(&src, b"", 0o644);
        let err = gather(&[file_spec(&src, "/", None)]).unwrap_err();
        assert!(matches!(err, Error::FileAtRoot { .. }), "{err}");
    }

    #[test]
    fn symlinks_inside_a_folder_are_kept_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        write(&root.join("usr/lib/libx.so.1"), b"lib", 0o644);
        symlink("libx.so.1", root.join("usr/lib/libx.so")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("/nowhere/at all", root.join("dangling")).unwrap();
        let entries = gather(&[file_spec(&root, "/", None)]).unwrap();
        let kind = |path| find(&entries, path).kind.clone();
        assert_eq!(
            kind("lib"),
            SourceKind::Symlink {
                target: "usr/lib".into()
            }
        );
        assert_eq!(
            kind("usr/lib/libx.so"),
            SourceKind::Symlink {
                target: "libx.so.1".into()
            }
        );
        assert_eq!(
            kind("dangling"),
            SourceKind::Symlink {
                target: "/nowhere/at all".into()
            }
        );
        // The link to a folder is not followed.
        assert!(!entries.iter().any(|entry| entry.path.starts_with("lib/")));
    }

    #[test]
    fn a_named_symlink_source_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("containerd-1.7"), b"elf!", 0o755);
        let link = dir.path().join("containerd");
        symlink("containerd-1.7", &link).unwrap();
        let entries = gather(&[file_spec(&link, "/bin/containerd", None)]).unwrap();
        assert_eq!(
            find(&entries, "bin/containerd").kind,
            SourceKind::File { src: link, size: 4 }
        );
    }

    #[test]
    fn hardlinks_are_detected_and_point_at_the_first_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        write(&root.join("bin/z-original"), b"busybox", 0o755);
        fs::hard_link(root.join("bin/z-original"), root.join("bin/a-link")).unwrap();
        fs::hard_link(root.join("bin/z-original"), root.join("sbin-link")).unwrap();
        write(&root.join("bin/other"), b"busybox", 0o755);
        let entries = gather(&[file_spec(&root, "/", None)]).unwrap();
        assert!(matches!(
            find(&entries, "bin/a-link").kind,
            SourceKind::File { size: 7, .. }
        ));
        let link = |path| find(&entries, path).kind.clone();
        assert_eq!(
            link("bin/z-original"),
            SourceKind::Hardlink {
                target: "bin/a-link".into()
            }
        );
        assert_eq!(
            link("sbin-link"),
            SourceKind::Hardlink {
                target: "bin/a-link".into()
            }
        );
        assert!(matches!(link("bin/other"), SourceKind::File { .. }));
    }

    #[test]
    fn hardlinks_with_different_modes_stay_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        write(&a, b"x", 0o644);
        let b = dir.path().join("b");
        fs::hard_link(&a, &b).unwrap();
        let entries =
            gather(&[file_spec(&a, "/a", None), file_spec(&b, "/b", Some(0o755))]).unwrap();
        assert!(matches!(find(&entries, "b").kind, SourceKind::File { .. }));
        assert_eq!(find(&entries, "b").mode, 0o755);
    }

    #[test]
    fn fifo_in_a_source_tree_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir_all(&root).unwrap();
        let fifo = root.join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = gather(&[file_spec(&root, "/", None)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("unsupported file type: fifo at {}", fifo.display())
        );
    }

    #[test]
    fn socket_source_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let err = gather(&[file_spec(&socket, "/sock", None)]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unsupported file type: socket at "),
            "{err}"
        );
    }

    #[test]
    fn different_sources_for_one_path_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one");
        let two = dir.path().join("two");
        write(&one, b"1", 0o644);
        write(&two, b"2", 0o644);
        let err = gather(&[
            file_spec(&one, "/etc/x", None),
            file_spec(&two, "/etc/x", None),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("conflicting sources for /etc/x: "),
            "{text}"
        );
        assert!(text.contains(&one.display().to_string()), "{text}");
        assert!(text.contains(&two.display().to_string()), "{text}");
    }

    #[test]
    fn folder_and_file_at_one_path_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir_all(root.join("etc")).unwrap();
        let file = dir.path().join("etc-file");
        write(&file, b"", 0o644);
        let err =
            gather(&[file_spec(&root, "/", None), file_spec(&file, "/etc", None)]).unwrap_err();
        assert!(
            matches!(err, Error::Conflict { ref path, .. } if path == "etc"),
            "{err}"
        );
    }

    #[test]
    fn overlapping_folders_merge_and_the_same_file_may_be_named_twice() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        write(&a.join("etc/one"), b"1", 0o644);
        write(&b.join("etc/two"), b"2", 0o644);
        fs::set_permissions(a.join("etc"), fs::Permissions::from_mode(0o700)).unwrap();
        let entries = gather(&[
            file_spec(&a, "/", None),
            file_spec(&b, "/", None),
            file_spec(&a.join("etc/one"), "/etc/one", Some(0o600)),
        ])
        .unwrap();
        assert_eq!(paths(&entries), ["etc", "etc/one", "etc/two"]);
        assert_eq!(
            find(&entries, "etc").mode,
            0o700,
            "the first folder's mode is kept"
        );
        assert_eq!(
            find(&entries, "etc/one").mode,
            0o600,
            "an explicit mode wins"
        );
    }

    #[test]
    fn parent_that_is_a_file_or_symlink_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        let file = dir.path().join("libfoo.so");
        write(&file, b"", 0o644);
        let err = gather(&[
            file_spec(&root, "/", None),
            file_spec(&file, "/lib/libfoo.so", None),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "failed to place /lib/libfoo.so: its parent /lib is a symlink from {}",
                root.join("lib").display()
            )
        );
    }

    #[test]
    fn odd_names_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        let names = [
            "with space",
            "-leading-dash",
            "ünïcödé",
            "new\nline",
            "tab\there",
        ];
        for name in names {
            write(&root.join(name), name.as_bytes(), 0o644);
        }
        let entries = gather(&[file_spec(&root, "/", None)]).unwrap();
        for name in names {
            assert_eq!(
                find(&entries, name).kind,
                SourceKind::File {
                    src: root.join(name),
                    size: name.len() as u64
                }
            );
        }
    }

    #[test]
    fn non_utf8_name_is_rejected_with_the_path() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir_all(&root).unwrap();
        let bad = root.join(std::ffi::OsStr::from_bytes(b"bad\xff"));
        fs::write(&bad, b"").unwrap();
        let err = gather(&[file_spec(&root, "/", None)]).unwrap_err();
        assert!(
            matches!(err, Error::NameNotUtf8 { ref path } if *path == bad),
            "{err}"
        );
        assert!(err.to_string().contains("bad\u{fffd}"), "{err}");
    }

    #[test]
    fn missing_source_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let err = gather(&[file_spec(&gone, "/x", None)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("failed to read {}", gone.display())
        );
    }
}
