//! Entries of the installer's file tree: a path ([`EntryPath`]), permission bits and what the
//! path is ([`EntryKind`]), with the per-entry rules of SPEC.md enforced while deserializing.
//!
//! A leaf module: the index ([`crate::Index`]) checks the rules that span entries (sorted,
//! parents are folders, blobs exist) and the install section checks the paths it names.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

/// Longest entry path accepted.
pub const MAX_PATH_LEN: usize = 4096;

/// A relative, normalised entry path; see SPEC.md for the rules.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntryPath(String);

/// Why a string is not an [`EntryPath`].
#[derive(Debug, thiserror::Error)]
#[error("invalid entry path {path:?}: {reason}")]
pub struct PathError {
    path: String,
    reason: &'static str,
}

impl EntryPath {
    /// The path as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent path, `None` for a top-level entry.
    pub fn parent(&self) -> Option<&str> {
        self.0.rfind('/').map(|i| &self.0[..i])
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl TryFrom<String> for EntryPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        let reason = if s.is_empty() {
            Some("empty")
        } else if s.len() > MAX_PATH_LEN {
            Some("longer than 4096 bytes")
        } else if s.starts_with('/') {
            Some("absolute")
        } else if s.contains('\0') {
            Some("contains NUL")
        } else if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            Some("has an empty, `.` or `..` component")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(PathError {
                path: s.chars().take(200).collect(),
                reason,
            }),
            None => Ok(EntryPath(s)),
        }
    }
}

impl From<EntryPath> for String {
    fn from(p: EntryPath) -> String {
        p.0
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A folder.
    Dir,
    /// A regular file.
    File {
        /// Content length.
        size: u64,
        /// Content digest.
        digest: Sha256Digest,
    },
    /// A symbolic link, target stored verbatim.
    Symlink {
        /// Link text.
        target: String,
    },
    /// A hard link to an earlier file entry.
    Hardlink {
        /// The file entry it links to.
        target: EntryPath,
    },
}

/// One path of the installer's file tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawEntry", into = "RawEntry")]
pub struct Entry {
    /// Where it goes, relative to the target.
    pub path: EntryPath,
    /// Permission bits.
    pub mode: u32,
    /// What it is.
    pub kind: EntryKind,
}

impl Entry {
    /// The entry's type as `list` prints it.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            EntryKind::Dir => "dir",
            EntryKind::File { .. } => "file",
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::Hardlink { .. } => "hardlink",
        }
    }
}

/// Why an index entry record is not a valid [`Entry`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The mode has bits beyond `0o7777`.
    #[error("entry {path:?} has mode {mode:o} beyond permission bits")]
    ModeTooWide {
        /// The entry.
        path: EntryPath,
        /// The mode it has.
        mode: u32,
    },
    /// A field that the entry's type does not have.
    #[error("entry {path:?} of type {kind} has a `{field}`")]
    ExtraField {
        /// The entry.
        path: EntryPath,
        /// Its type.
        kind: &'static str,
        /// The field or fields it should not have.
        field: &'static str,
    },
    /// A file entry without size or digest.
    #[error("file entry {path:?} lacks size or digest")]
    FileWithoutContent {
        /// The entry.
        path: EntryPath,
    },
    /// An empty file whose digest is not the digest of nothing.
    #[error("empty file entry {path:?} has a non-empty digest")]
    EmptyFileDigest {
        /// The entry.
        path: EntryPath,
    },
    /// A link without a target.
    #[error("{kind} entry {path:?} lacks a target")]
    LinkWithoutTarget {
        /// The entry.
        path: EntryPath,
        /// `symlink` or `hardlink`.
        kind: &'static str,
    },
    /// A symlink target that is empty, too long or holds NUL.
    #[error("symlink {path:?} has an invalid target")]
    SymlinkTarget {
        /// The entry.
        path: EntryPath,
    },
    /// A hard link target that is not an entry path.
    #[error(transparent)]
    HardlinkTarget(#[from] PathError),
    /// A type SPEC.md does not define.
    #[error("entry {path:?} has unknown type {kind:?}")]
    UnknownType {
        /// The entry.
        path: EntryPath,
        /// The type given (at most 40 characters of it).
        kind: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    path: EntryPath,
    #[serde(rename = "type")]
    kind: String,
    mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<Sha256Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

impl TryFrom<RawEntry> for Entry {
    type Error = EntryError;
    fn try_from(r: RawEntry) -> Result<Self, EntryError> {
        if r.mode > 0o7777 {
            return Err(EntryError::ModeTooWide {
                path: r.path,
                mode: r.mode,
            });
        }
        let extra = |path: EntryPath, kind: &'static str, field: &'static str| {
            EntryError::ExtraField { path, kind, field }
        };
        let kind = match r.kind.as_str() {
            "dir" => {
                if r.size.is_some() || r.digest.is_some() || r.target.is_some() {
                    return Err(extra(r.path, "dir", "size, digest or target"));
                }
                EntryKind::Dir
            }
            "file" => {
                if r.target.is_some() {
                    return Err(extra(r.path, "file", "target"));
                }
                let (Some(size), Some(digest)) = (r.size, r.digest) else {
                    return Err(EntryError::FileWithoutContent { path: r.path });
                };
                if size == 0 && digest != Sha256Digest::empty() {
                    return Err(EntryError::EmptyFileDigest { path: r.path });
                }
                EntryKind::File { size, digest }
            }
            kind @ ("symlink" | "hardlink") => {
                let kind = if kind == "symlink" {
                    "symlink"
                } else {
                    "hardlink"
                };
                if r.size.is_some() || r.digest.is_some() {
                    return Err(extra(r.path, kind, "size or digest"));
                }
                let Some(target) = r.target else {
                    return Err(EntryError::LinkWithoutTarget { path: r.path, kind });
                };
                if kind == "symlink" {
                    if target.is_empty() || target.contains('\0') || target.len() > MAX_PATH_LEN {
                        return Err(EntryError::SymlinkTarget { path: r.path });
                    }
                    EntryKind::Symlink { target }
                } else {
                    let target = EntryPath::try_from(target)?;
                    EntryKind::Hardlink { target }
                }
            }
            other => {
                return Err(EntryError::UnknownType {
                    kind: other.chars().take(40).collect(),
                    path: r.path,
                });
            }
        };
        Ok(Entry {
            path: r.path,
            mode: r.mode,
            kind,
        })
    }
}

impl From<Entry> for RawEntry {
    fn from(e: Entry) -> RawEntry {
        let kind = e.type_name().to_owned();
        let (size, digest, target) = match e.kind {
            EntryKind::Dir => (None, None, None),
            EntryKind::File { size, digest } => (Some(size), Some(digest), None),
            EntryKind::Symlink { target } => (None, None, Some(target)),
            EntryKind::Hardlink { target } => (None, None, Some(target.0)),
        };
        RawEntry {
            path: e.path,
            kind,
            mode: e.mode,
            size,
            digest,
            target,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_odd_paths_are_rejected() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "./a",
            "a/",
            "a\0b",
        ] {
            assert!(
                EntryPath::try_from(bad.to_owned()).is_err(),
                "{bad:?} accepted"
            );
        }
        for good in ["a", "a b/c", "-rf", "naïve/файл", "a/.hidden", "..a"] {
            assert!(
                EntryPath::try_from(good.to_owned()).is_ok(),
                "{good:?} rejected"
            );
        }
    }

    #[test]
    fn entry_records_that_break_a_per_entry_rule_are_rejected_with_the_rule() {
        for (json, expected) in [
            (
                r#"{"path":"a","type":"dir","mode":65535}"#,
                "entry \"a\" has mode 177777 beyond permission bits",
            ),
            (
                r#"{"path":"a","type":"dir","mode":493,"target":"b"}"#,
                "entry \"a\" of type dir has a `size, digest or target`",
            ),
            (
                r#"{"path":"a","type":"file","mode":420}"#,
                "file entry \"a\" lacks size or digest",
            ),
            (
                r#"{"path":"a","type":"symlink","mode":511}"#,
                "symlink entry \"a\" lacks a target",
            ),
            (
                r#"{"path":"a","type":"hardlink","mode":420,"target":"/etc/passwd"}"#,
                "invalid entry path \"/etc/passwd\": absolute",
            ),
            (
                r#"{"path":"a","type":"fifo","mode":420}"#,
                "entry \"a\" has unknown type \"fifo\"",
            ),
        ] {
            let err = serde_json::from_str::<Entry>(json).unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }
}
