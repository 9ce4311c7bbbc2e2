//! Which entries an `extract` lays out: all, or the named ones with their subtrees and
//! parents.

use std::collections::BTreeSet;

use airlock_payload::{EntryKind, Index, Sha256Digest};

use crate::{Error, Result};

/// One entry to lay out, its path relative to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// A folder.
    Dir { path: &'a str, mode: u32 },
    /// A regular file. A hardlink whose target is not selected becomes a file of its own.
    File {
        path: &'a str,
        mode: u32,
        size: u64,
        digest: Sha256Digest,
    },
    /// A symbolic link, written verbatim.
    Symlink { path: &'a str, target: &'a str },
    /// A hard link to a selected file.
    Hardlink { path: &'a str, target: &'a str },
}

impl<'a> Item<'a> {
    pub(crate) fn path(&self) -> &'a str {
        match self {
            Item::Dir { path, .. }
            | Item::File { path, .. }
            | Item::Symlink { path, .. }
            | Item::Hardlink { path, .. } => path,
        }
    }
}

/// `name` as an entry path: leading `/` and `./`, and trailing `/`, removed. Empty means
/// the whole tree.
fn normalize(name: &str) -> &str {
    let mut s = name;
    loop {
        let before = s.len();
        s = s.trim_start_matches('/');
        if let Some(rest) = s.strip_prefix("./") {
            s = rest;
        }
        if s == "." {
            s = "";
        }
        if s.len() == before {
            break;
        }
    }
    s.trim_end_matches('/')
}

/// The items for `names` (all entries when `names` is empty or names the root), in path
/// order, so parents come before children. A named folder brings its subtree; the parents
/// of every selected entry are selected too. Names not in the index fail together in one
/// [`Error::NotInPayload`].
pub(crate) fn select<'a>(index: &'a Index, names: &[String]) -> Result<Vec<Item<'a>>> {
    let entries = index.entries();
    let mut chosen: BTreeSet<usize> = BTreeSet::new();
    let mut missing = Vec::new();
    let mut all = names.is_empty();
    for name in names {
        let path = normalize(name);
        if path.is_empty() {
            all = true;
            continue;
        }
        let Ok(pos) = entries.binary_search_by(|e| e.path.as_str().cmp(path)) else {
            missing.push(name.clone());
            continue;
        };
        chosen.insert(pos);
        if matches!(entries[pos].kind, EntryKind::Dir) {
            // Paths starting with "path/" are contiguous in byte order.
            let prefix = format!("{path}/");
            let first = entries.partition_point(|e| e.path.as_str() < prefix.as_str());
            chosen.extend(
                (first..entries.len())
                    .take_while(|&i| entries[i].path.as_str().starts_with(&prefix)),
            );
        }
    }
    if !missing.is_empty() {
        return Err(Error::NotInPayload { paths: missing });
    }
    if all {
        chosen = (0..entries.len()).collect();
    }
    let mut parents = BTreeSet::new();
    for &i in &chosen {
        let mut path = entries[i].path.as_str();
        while let Some(cut) = path.rfind('/') {
            path = &path[..cut];
            if let Ok(pos) = entries.binary_search_by(|e| e.path.as_str().cmp(path)) {
                if !parents.insert(pos) {
                    break;
                }
            }
        }
    }
    chosen.extend(parents);
    let selected = |path: &str| {
        entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .is_ok_and(|i| chosen.contains(&i))
    };
    let items = chosen
        .iter()
        .map(|&i| {
            let e = &entries[i];
            let path = e.path.as_str();
            match &e.kind {
                EntryKind::Dir => Item::Dir { path, mode: e.mode },
                EntryKind::File { size, digest } => Item::File {
                    path,
                    mode: e.mode,
                    size: *size,
                    digest: *digest,
                },
                EntryKind::Symlink { target } => Item::Symlink { path, target },
                EntryKind::Hardlink { target } if selected(target.as_str()) => Item::Hardlink {
                    path,
                    target: target.as_str(),
                },
                EntryKind::Hardlink { target } => {
                    match index.entry(target.as_str()).map(|t| &t.kind) {
                        Some(EntryKind::File { size, digest }) => Item::File {
                            path,
                            mode: e.mode,
                            size: *size,
                            digest: *digest,
                        },
                        // The index guarantees a hardlink names an earlier file.
                        _ => unreachable!("hardlink {path} does not name a file"),
                    }
                }
            }
        })
        .collect();
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{installer_from_tree, make_removable, sample_tree};
    use airlock_payload::Installer;

    fn paths_for(names: &[&str]) -> Result<Vec<String>> {
        let tree = sample_tree();
        let bytes = installer_from_tree(tree.path());
        make_removable(tree.path());
        let payload = Installer::open(&bytes, None).unwrap().load_index().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let items = select(payload.index(), &names)?;
        Ok(items.iter().map(|i| i.path().to_owned()).collect())
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize("/usr/bin/"), "usr/bin");
        assert_eq!(normalize("./usr"), "usr");
        assert_eq!(normalize("/./a"), "a");
        assert_eq!(normalize("."), "");
        assert_eq!(normalize("/"), "");
    }

    #[test]
    fn no_names_select_everything() {
        assert_eq!(paths_for(&[]).unwrap().len(), 17);
        assert_eq!(paths_for(&["/"]).unwrap().len(), 17);
    }

    #[test]
    fn a_named_file_brings_its_parents_only() {
        assert_eq!(
            paths_for(&["deep/a/b/c/leaf.txt"]).unwrap(),
            [
                "deep",
                "deep/a",
                "deep/a/b",
                "deep/a/b/c",
                "deep/a/b/c/leaf.txt"
            ]
        );
    }

    #[test]
    fn a_named_folder_brings_its_subtree() {
        assert_eq!(
            paths_for(&["etc/"]).unwrap(),
            ["etc", "etc/conf", "etc/copy", "etc/empty"]
        );
    }

    #[test]
    fn unknown_names_are_all_reported() {
        let err = paths_for(&["etc", "nope", "/bin/nothing"]).unwrap_err();
        assert_eq!(err.to_string(), "not in the installer: nope, /bin/nothing");
    }

    #[test]
    fn a_hardlink_without_its_target_becomes_a_file() {
        let tree = sample_tree();
        let bytes = installer_from_tree(tree.path());
        let payload = Installer::open(&bytes, None).unwrap().load_index().unwrap();
        let items = select(payload.index(), &["bin/twin".to_owned()]).unwrap();
        assert!(
            matches!(
                items[1],
                Item::File {
                    path: "bin/twin",
                    size: 10_000,
                    ..
                }
            ),
            "{items:?}"
        );
        let items = select(payload.index(), &["bin".to_owned()]).unwrap();
        assert!(
            items.contains(&Item::Hardlink {
                path: "bin/twin",
                target: "bin/tool"
            }),
            "{items:?}"
        );
    }
}
