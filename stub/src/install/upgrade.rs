//! Installing version N+1 over N: what N laid out and N+1 no longer has is removed, unless
//! the user changed it since (it is kept, and named), and versions are ordered so that a
//! downgrade is asked for explicitly.
//!
//! What N placed is known without trusting the disk: N's persistent copy (still in place
//! when N+1 installs) holds N's index, with the size and digest of every file; the record
//! says which paths were ours (`existed_before` false). A file whose content still equals
//! N's entry is ours unchanged and goes; anything else stays.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::Path;

use airlock_payload::{EntryKind, Index, Sha256Digest};

use super::fsutil::resolve;
use super::record::Record;
use super::{Error, Result};

/// What [`prune_stale`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Logical paths removed (files, links, then folders left empty).
    pub removed: Vec<String>,
    /// Logical paths N placed that N+1 lacks, kept because they changed since N installed
    /// them (or are no longer what N placed: a folder where a file was).
    pub kept: Vec<String>,
}

/// Removes under `root` the entries of `old` that `new` does not have and that the record
/// names as ours, when they are still what `old` placed; drops the removed ones from the
/// record. Folders go only when they are empty afterwards.
pub fn prune_stale(root: &Path, old: &Index, new: &Index, record: &mut Record) -> Result<Pruned> {
    let wanted: BTreeSet<&str> = new.entries().iter().map(|e| e.path.as_str()).collect();
    let ours = |logical: &str| {
        record
            .paths
            .iter()
            .any(|p| p.path == logical && !p.existed_before)
    };
    let digest_of = |path: &str| {
        old.entries()
            .iter()
            .find(|e| e.path.as_str() == path)
            .and_then(|e| match &e.kind {
                EntryKind::File { size, digest } => Some((*size, *digest)),
                _ => None,
            })
    };
    let mut out = Pruned::default();
    let mut dirs = Vec::new();
    for entry in old.entries() {
        let path = entry.path.as_str();
        let logical = format!("/{path}");
        if wanted.contains(path) || !ours(&logical) {
            continue;
        }
        let on_disk = resolve(root, &logical);
        let Ok(meta) = fs::symlink_metadata(&on_disk) else {
            // Gone already (removed by hand): nothing to do but forget it.
            out.removed.push(logical);
            continue;
        };
        let unchanged = match &entry.kind {
            EntryKind::Dir => {
                dirs.push(logical);
                continue;
            }
            EntryKind::File { size, digest } => {
                meta.is_file() && same_content(&on_disk, *size, *digest)?
            }
            EntryKind::Hardlink { target } => {
                meta.is_file()
                    && digest_of(target.as_str())
                        .map(|(size, digest)| same_content(&on_disk, size, digest))
                        .transpose()?
                        .unwrap_or(false)
            }
            EntryKind::Symlink { target } => {
                meta.file_type().is_symlink()
                    && fs::read_link(&on_disk).is_ok_and(|t| t.as_os_str() == target.as_str())
            }
        };
        if !unchanged {
            out.kept.push(logical);
            continue;
        }
        fs::remove_file(&on_disk).map_err(|source| Error::Fs {
            step: "remove a file the new version no longer has,",
            path: on_disk.clone(),
            source,
        })?;
        out.removed.push(logical);
    }
    // Deepest first, so a folder emptied by its children goes too.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    for logical in dirs {
        // Not empty: it holds files of the user's (or kept ones); it stays, still ours.
        if fs::remove_dir(resolve(root, &logical)).is_ok() {
            out.removed.push(logical);
        }
    }
    let removed: BTreeSet<&str> = out.removed.iter().map(String::as_str).collect();
    record.paths.retain(|p| !removed.contains(p.path.as_str()));
    out.removed.sort();
    Ok(out)
}

/// True when the file at `path` has `size` bytes with `digest`.
fn same_content(path: &Path, size: u64, digest: Sha256Digest) -> Result<bool> {
    let read_error = |source: io::Error| Error::Fs {
        step: "read, to compare with what the installed version placed,",
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    if file.metadata().map_err(read_error)?.len() != size {
        return Ok(false);
    }
    let (found, _) = Sha256Digest::of_reader(file).map_err(read_error)?;
    Ok(found == digest)
}

/// Orders two versions the way people read them: runs of digits compare as numbers, other
/// runs as text (`1.9` < `1.10` < `1.10.1`; `1.30.4-1` < `1.30.4-2`). Equal numbers with
/// different leading zeros compare by their text, so the order is total.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (runs(a), runs(b));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let both_numbers =
                    p.as_bytes()[0].is_ascii_digit() && q.as_bytes()[0].is_ascii_digit();
                let order = if both_numbers {
                    let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                    p.len().cmp(&q.len()).then_with(|| p.cmp(q))
                } else {
                    p.cmp(q)
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// The runs of digits and of other characters in `s`.
fn runs(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let digit = first.is_ascii_digit();
        let end = rest
            .find(|c: char| c.is_ascii_digit() != digit)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some(run)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numbers_as_numbers() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.9", "1.10", Less),
            ("1.10", "1.10.1", Less),
            ("1.30.4-1", "1.30.4-2", Less),
            ("2.0", "1.99", Greater),
            ("1.0", "1.0", Equal),
            ("v1.2", "v1.11", Less),
            ("1.0-rc1", "1.0-rc2", Less),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
