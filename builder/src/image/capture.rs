//! A capture folder as an image source (`airlock capture` wrote it; the lock file is
//! [`crate::capture::lock`]): `images: - from: capture:DIR` and
//! `airlock build --from-capture DIR`. No network: every blob comes from `DIR`, checked
//! against its digest as it is read.
//!
//! Without a `ref`, `from: capture:DIR` (like `--from-capture DIR`) takes every reference in
//! the lock file, each served under its own name. With a `ref`, it takes that one reference
//! (by tag, or by digest for `name@sha256:...`) and fails if the capture does not have it.
//!
//! Platforms: the spec's platform is picked from an index, as for every other source. The
//! capture holds what the clients fetched, which is their own platform: a spec for another
//! platform than the capturing cluster's fails with the missing manifest named. A manifest
//! whose blobs were not all fetched (a client that already had a layer does not fetch it)
//! fails the same way: capture with clients that start with an empty content store.

use std::path::Path;

use airlock_payload::Sha256Digest;

use super::blob::{CapturedImage, FileRange};
use super::error::{CaptureError, ErrorKind};
use super::layout::{capture_from, RangeStore};
use super::manifest::Descriptor;
use crate::capture::lock::{Lock, LockEntry};
use crate::progress::ImageBar;
use crate::reference::ImageRef;
use crate::spec::Platform;

/// The lock entry that `served` names: same repository, and the same tag (or, for a
/// reference by digest only, the same digest).
fn find<'a>(lock: &'a Lock, served: &ImageRef) -> Option<&'a LockEntry> {
    lock.entries().iter().find(|e| {
        let r = &e.reference;
        r.registry() == served.registry()
            && r.repository() == served.repository()
            && match (served.tag(), served.digest()) {
                (Some(t), _) => r.tag() == Some(t),
                (None, Some(d)) => e.digest == d,
                (None, None) => false,
            }
    })
}

/// Captures `served` from the capture folder `dir`.
pub fn capture(
    dir: &Path,
    served: &ImageRef,
    platform: &Platform,
    bar: &ImageBar,
) -> Result<CapturedImage, ErrorKind> {
    let err = |e: CaptureError| ErrorKind::Capture(Box::new(e));
    let lock = Lock::load(dir).map_err(|e| err(e.into()))?;
    let entry = find(&lock, served).ok_or_else(|| {
        err(CaptureError::NotCaptured {
            reference: served.to_string(),
            dir: dir.to_owned(),
            available: lock
                .entries()
                .iter()
                .map(|e| e.reference.to_string())
                .collect(),
        })
    })?;
    let blobs = dir.join("blobs").join("sha256");
    let top = blobs.join(entry.digest.hex());
    let size = std::fs::metadata(&top)
        .map_err(|_| {
            err(CaptureError::Incomplete {
                dir: dir.to_owned(),
                digest: entry.digest,
            })
        })?
        .len();
    let desc = Descriptor {
        media_type: entry.media_type.clone(),
        digest: entry.digest.to_string(),
        size,
        platform: None,
        annotations: None,
    };
    let store = RangeStore {
        location: format!("capture {}", dir.display()),
        find: move |d: Sha256Digest| {
            let path = blobs.join(d.hex());
            Some(std::fs::metadata(&path).and_then(|md| FileRange::new(path, 0, md.len())))
        },
    };
    capture_from(&store, &desc, served, platform, bar).map_err(|e| match e {
        ErrorKind::BlobMissing { digest, .. } => err(CaptureError::Incomplete {
            dir: dir.to_owned(),
            digest,
        }),
        e => e,
    })
}
