//! The capture folder: content-addressed blobs under `DIR/blobs/sha256/<hex>` (the layout of
//! an OCI image layout's blob store), downloads in progress under `DIR/tmp/`, and the lock
//! file ([`super::lock`]).
//!
//! A blob only ever appears under its digest after its bytes were checked against it: it is
//! written to a temporary file, hashed, flushed, and renamed into place. A crash leaves at
//! worst a file in `DIR/tmp/`, which the next start clears.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use airlock_payload::Sha256Digest;

use super::error::ProxyError;

/// A capture folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
}

fn storage(context: impl Into<String>) -> impl FnOnce(io::Error) -> ProxyError {
    let context = context.into();
    move |source| ProxyError::Storage { context, source }
}

impl Store {
    /// Opens (creating) the capture folder `dir` and clears downloads a previous run left.
    pub fn open(dir: &Path) -> io::Result<Store> {
        let blobs = dir.join("blobs").join("sha256");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&blobs)?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Store {
            dir: dir.to_owned(),
            blobs,
            tmp,
        })
    }

    /// The capture folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where blob `digest` is (or would be) stored.
    pub fn path(&self, digest: Sha256Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// True when blob `digest` is stored.
    pub fn contains(&self, digest: Sha256Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Reads a stored blob (manifests); `None` when it is not stored.
    pub fn read(&self, digest: Sha256Digest) -> Result<Option<Vec<u8>>, ProxyError> {
        match std::fs::read(self.path(digest)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage(format!("read blob {digest}"))(e)),
        }
    }

    /// A new temporary file in `DIR/tmp/`, deleted when dropped unless persisted.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, ProxyError> {
        tempfile::Builder::new()
            .prefix("download-")
            .tempfile_in(&self.tmp)
            .map_err(storage(format!(
                "create a download file in {}",
                self.tmp.display()
            )))
    }

    /// Moves a finished download into place as blob `digest` (the caller checked it).
    pub fn persist(
        &self,
        tmp: tempfile::NamedTempFile,
        digest: Sha256Digest,
    ) -> Result<(), ProxyError> {
        tmp.as_file()
            .sync_all()
            .map_err(storage(format!("flush blob {digest}")))?;
        tmp.persist(self.path(digest))
            .map_err(|e| e.error)
            .map_err(storage(format!("store blob {digest}")))?;
        Ok(())
    }

    /// Stores `bytes` as blob `digest` if they hash to it (manifests).
    pub fn put(&self, digest: Sha256Digest, bytes: &[u8]) -> Result<(), ProxyError> {
        let actual = Sha256Digest::of(bytes);
        if actual != digest {
            return Err(ProxyError::DigestMismatch {
                upstream: "(store)".to_owned(),
                digest: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        if self.contains(digest) {
            return Ok(());
        }
        let mut tmp = self.temp_file()?;
        tmp.write_all(bytes)
            .map_err(storage(format!("write blob {digest}")))?;
        self.persist(tmp, digest)
    }

    /// Opens a stored blob and returns it with its length.
    pub fn open_blob(&self, digest: Sha256Digest) -> Result<Option<(File, u64)>, ProxyError> {
        match File::open(self.path(digest)) {
            Ok(f) => {
                let len = f
                    .metadata()
                    .map_err(storage(format!("inspect blob {digest}")))?
                    .len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage(format!("open blob {digest}"))(e)),
        }
    }

    /// Number of stored blobs.
    pub fn count(&self) -> usize {
        std::fs::read_dir(&self.blobs).map_or(0, |d| d.count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_content_that_matches_its_digest_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = Sha256Digest::of(b"good");
        store.put(good, b"good").unwrap();
        assert_eq!(store.read(good).unwrap().unwrap(), b"good");
        let err = store.put(good, b"evil").unwrap_err();
        assert!(matches!(err, ProxyError::DigestMismatch { .. }), "{err}");
        let other = Sha256Digest::of(b"other");
        assert!(store.put(other, b"not other").is_err());
        assert!(!store.contains(other));
        assert_eq!(store.count(), 1);
        // Nothing is left in tmp/.
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn opening_clears_leftover_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tmp = store.temp_file().unwrap();
        let (_, path) = tmp.keep().unwrap();
        assert!(path.exists());
        Store::open(dir.path()).unwrap();
        assert!(!path.exists());
    }
}
