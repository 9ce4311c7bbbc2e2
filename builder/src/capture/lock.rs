//! The capture's lock file, `DIR/airlock-capture.lock.json`: every image reference a client
//! resolved through the proxy, with the digest and media type of the manifest or index it
//! resolved to.
//!
//! ```json
//! {
//!   "version": 1,
//!   "images": [
//!     { "reference": "docker.io/library/app:1", "digest": "sha256:...",
//!       "mediaType": "application/vnd.oci.image.index.v1+json" }
//!   ]
//! }
//! ```
//!
//! Entries are sorted by reference, so the file is the same for the same pulls. The proxy
//! adds an entry only after the manifest it names was fetched, checked against its digest and
//! stored under `DIR/blobs/sha256/`; the file is replaced atomically (a temporary file beside
//! it, flushed, then renamed), so a reader never sees half of it.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use airlock_payload::Sha256Digest;
use serde::{Deserialize, Serialize};

use crate::reference::ImageRef;

/// The lock file's name inside a capture folder.
pub const LOCK_FILE: &str = "airlock-capture.lock.json";
/// The format version this builder reads and writes.
pub const LOCK_VERSION: u32 = 1;

/// A lock file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The folder has no lock file.
    #[error("{} is not a capture: it has no {LOCK_FILE} (write one with `airlock capture --out DIR`)", .0.display())]
    Missing(PathBuf),
    /// The file could not be read or written.
    #[error("failed to {context} {}", .path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a lock file of a known version.
    #[error("failed to parse {}", .path.display())]
    Parse {
        /// The lock file.
        path: PathBuf,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// Written by a newer airlock.
    #[error("{} has version {found}; this airlock reads version {LOCK_VERSION}", .path.display())]
    Version {
        /// The lock file.
        path: PathBuf,
        /// The version it has.
        found: u32,
    },
}

/// One reference a client resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockEntry {
    /// `host/repository:tag`, or `host/repository@sha256:...` for a pull by digest.
    pub reference: ImageRef,
    /// The manifest or index the reference resolved to.
    pub digest: Sha256Digest,
    /// Its media type.
    pub media_type: String,
}

/// The lock file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    version: u32,
    images: Vec<LockEntry>,
}

impl Default for Lock {
    fn default() -> Self {
        Lock {
            version: LOCK_VERSION,
            images: Vec::new(),
        }
    }
}

impl Lock {
    /// The lock file of capture folder `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(LOCK_FILE)
    }

    /// Reads `dir`'s lock file; a folder without one is [`LockError::Missing`].
    pub fn load(dir: &Path) -> Result<Lock, LockError> {
        let path = Lock::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LockError::Missing(dir.to_owned()))
            }
            Err(source) => {
                return Err(LockError::Io {
                    context: "read",
                    path,
                    source,
                })
            }
        };
        // The version first, so a newer file is reported as such rather than as a bad field.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let parse = |source| LockError::Parse {
            path: path.clone(),
            source,
        };
        let v: Versioned = serde_json::from_slice(&bytes).map_err(parse)?;
        if v.version != LOCK_VERSION {
            return Err(LockError::Version {
                path,
                found: v.version,
            });
        }
        let mut lock: Lock = serde_json::from_slice(&bytes).map_err(parse)?;
        lock.images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(lock)
    }

    /// Reads `dir`'s lock file, or starts an empty one when there is none.
    pub fn load_or_default(dir: &Path) -> Result<Lock, LockError> {
        match Lock::load(dir) {
            Err(LockError::Missing(_)) => Ok(Lock::default()),
            other => other,
        }
    }

    /// Every entry, sorted by reference.
    pub fn entries(&self) -> &[LockEntry] {
        &self.images
    }

    /// The entry for exactly `reference`.
    pub fn get(&self, reference: &ImageRef) -> Option<&LockEntry> {
        self.images.iter().find(|e| &e.reference == reference)
    }

    /// Adds or updates the entry for `entry.reference` (tags move); true when the lock changed.
    pub fn record(&mut self, entry: LockEntry) -> bool {
        match self
            .images
            .binary_search_by(|e| e.reference.cmp(&entry.reference))
        {
            Ok(i) if self.images[i] == entry => false,
            Ok(i) => {
                self.images[i] = entry;
                true
            }
            Err(i) => {
                self.images.insert(i, entry);
                true
            }
        }
    }

    /// Writes the lock into `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), LockError> {
        let path = Lock::path(dir);
        let io = |context| {
            let path = path.clone();
            move |source| LockError::Io {
                context,
                path,
                source,
            }
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".lock-")
            .tempfile_in(dir)
            .map_err(io("create a temporary file beside"))?;
        let mut text = serde_json::to_vec_pretty(self).expect("a lock serializes");
        text.push(b'\n');
        tmp.write_all(&text).map_err(io("write"))?;
        tmp.as_file().sync_all().map_err(io("flush"))?;
        tmp.persist(&path)
            .map_err(|e| e.error)
            .map_err(io("replace"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reference: &str, byte: u8) -> LockEntry {
        LockEntry {
            reference: reference.parse().unwrap(),
            digest: Sha256Digest([byte; 32]),
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        }
    }

    #[test]
    fn a_lock_round_trips_sorted_and_tags_move() {
        let dir = tempfile::tempdir().unwrap();
        let mut lock = Lock::default();
        assert!(lock.record(entry("example.hub/team/app:1", 1)));
        assert!(lock.record(entry("busybox:1", 2)));
        assert!(!lock.record(entry("busybox:1", 2)));
        assert!(lock.record(entry("busybox:1", 3)));
        lock.save(dir.path()).unwrap();
        let back = Lock::load(dir.path()).unwrap();
        assert_eq!(back, lock);
        let refs: Vec<String> = back
            .entries()
            .iter()
            .map(|e| e.reference.to_string())
            .collect();
        assert_eq!(
            refs,
            ["docker.io/library/busybox:1", "example.hub/team/app:1"]
        );
        assert_eq!(
            back.get(&"busybox:1".parse().unwrap()).unwrap().digest,
            Sha256Digest([3; 32])
        );
        // Only the lock file is left: the temporary file was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn bad_lock_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Lock::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a capture"), "{err}");
        assert_eq!(Lock::load_or_default(dir.path()).unwrap(), Lock::default());

        std::fs::write(Lock::path(dir.path()), r#"{"version": 2, "images": []}"#).unwrap();
        let err = Lock::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("has version 2"), "{err}");

        std::fs::write(
            Lock::path(dir.path()),
            r#"{"version": 1, "images": [{"reference": "Bad", "digest": "sha256:00", "mediaType": ""}]}"#,
        )
        .unwrap();
        let err = Lock::load(dir.path()).unwrap_err();
        assert!(matches!(err, LockError::Parse { .. }), "{err}");
    }
}
