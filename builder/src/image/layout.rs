//! OCI image layouts (`oci:DIR[:TAG]`): `index.json`, whose descriptors carry the tag in
//! `org.opencontainers.image.ref.name`, and content in `blobs/sha256/<hex>`.
//!
//! Blobs are verified (hashed to their end) when read and then handed to the writer as file
//! ranges, read again with pread. The same store serves the OCI layout inside a
//! docker-archive written by docker 25 or later ([`super::archive`]), where the ranges lie
//! inside the tar.

use std::io::Read;
use std::path::Path;

use airlock_payload::{BlobSource, Sha256Digest};
use serde::Deserialize;

use super::blob::{verify_bytes, verify_hashed, BlobKind, BlobStore, CapturedImage, FileRange};
use super::collect::{collect, finish, Top};
use super::error::{io_kind, ErrorKind};
use super::manifest::Descriptor;
use crate::progress::ImageBar;
use crate::reference::ImageRef;
use crate::spec::Platform;

/// The annotation that holds a descriptor's tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `index.json` of a layout.
#[derive(Debug, Deserialize)]
pub struct LayoutIndex {
    /// The images of the layout.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl LayoutIndex {
    /// Parses `index.json`.
    pub fn parse(bytes: &[u8], location: &str) -> Result<LayoutIndex, ErrorKind> {
        serde_json::from_slice(bytes).map_err(|source| ErrorKind::Io {
            context: format!("parse {location}/index.json"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, source),
        })
    }

    /// The descriptor tagged `tag`, else the one with digest `pin`, else the only one when
    /// neither is given.
    pub fn select(
        &self,
        tag: Option<&str>,
        pin: Option<Sha256Digest>,
        location: &str,
    ) -> Result<&Descriptor, ErrorKind> {
        if let Some(tag) = tag {
            return self
                .manifests
                .iter()
                .find(|d| d.annotation(REF_NAME) == Some(tag))
                .ok_or_else(|| ErrorKind::TagNotFound {
                    tag: tag.to_owned(),
                    location: location.to_owned(),
                    available: self.tags(),
                });
        }
        if let Some(pin) = pin {
            return self
                .manifests
                .iter()
                .find(|d| d.digest == pin.to_string())
                .ok_or_else(|| ErrorKind::DigestNotFound {
                    digest: pin,
                    location: location.to_owned(),
                });
        }
        match self.manifests.as_slice() {
            [only] => Ok(only),
            _ => Err(ErrorKind::NoTag {
                location: location.to_owned(),
                available: self.tags(),
            }),
        }
    }

    /// The tags it has, sorted.
    pub fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .manifests
            .iter()
            .filter_map(|d| d.annotation(REF_NAME).map(str::to_owned))
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }
}

/// Blobs found by digest as file ranges: `blobs/sha256/<hex>` in a folder or inside a tar.
pub struct RangeStore<F> {
    /// Where blobs live, for messages.
    pub location: String,
    /// Finds a blob's range.
    pub find: F,
}

impl<F> BlobStore for RangeStore<F>
where
    F: Fn(Sha256Digest) -> Option<Result<FileRange, std::io::Error>> + Sync,
{
    fn read(
        &self,
        _kind: BlobKind,
        digest: Sha256Digest,
        size: Option<u64>,
    ) -> Result<Vec<u8>, ErrorKind> {
        let range = self.range(digest)?;
        let mut bytes = Vec::with_capacity(range.len.min(1 << 24) as usize);
        range
            .reader()
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(io_kind(format!("read blob {digest} in {}", self.location)))?;
        verify_bytes(&bytes, digest, size)?;
        Ok(bytes)
    }

    fn open(&self, digest: Sha256Digest, size: u64) -> Result<Box<dyn BlobSource>, ErrorKind> {
        let range = self.range(digest)?;
        let (actual, len) = range
            .hash()
            .map_err(io_kind(format!("read blob {digest} in {}", self.location)))?;
        verify_hashed(actual, len, digest, Some(size))?;
        Ok(Box::new(range))
    }
}

impl<F> RangeStore<F>
where
    F: Fn(Sha256Digest) -> Option<Result<FileRange, std::io::Error>>,
{
    fn range(&self, digest: Sha256Digest) -> Result<FileRange, ErrorKind> {
        match (self.find)(digest) {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => Err(ErrorKind::Io {
                context: format!("open blob {digest} in {}", self.location),
                source: e,
            }),
            _ => Err(ErrorKind::BlobMissing {
                digest,
                location: self.location.clone(),
            }),
        }
    }
}

/// Captures the image tagged `tag` (or pinned by `served`'s digest) from the layout `dir`.
pub fn capture(
    dir: &Path,
    tag: Option<&str>,
    served: &ImageRef,
    platform: &Platform,
    bar: &ImageBar,
) -> Result<CapturedImage, ErrorKind> {
    let location = dir.display().to_string();
    let index_path = dir.join("index.json");
    let index_bytes = std::fs::read(&index_path).map_err(io_kind(format!(
        "read {} (is {location} an OCI layout?)",
        index_path.display()
    )))?;
    let index = LayoutIndex::parse(&index_bytes, &location)?;
    let desc = index.select(tag, served.digest(), &location)?;
    let blobs = dir.join("blobs").join("sha256");
    let store = RangeStore {
        location: location.clone(),
        find: move |d: Sha256Digest| {
            let path = blobs.join(d.hex());
            Some(std::fs::metadata(&path).and_then(|md| FileRange::new(path, 0, md.len())))
        },
    };
    capture_from(&store, desc, served, platform, bar)
}

/// Captures the image `desc` names from `store`.
pub fn capture_from(
    store: &dyn BlobStore,
    desc: &Descriptor,
    served: &ImageRef,
    platform: &Platform,
    bar: &ImageBar,
) -> Result<CapturedImage, ErrorKind> {
    let top = Top {
        digest: desc.sha256()?,
        size: Some(desc.size),
        media_type: Some(desc.media_type.clone()),
        bytes: None,
    };
    let digest = top.digest;
    let collected = collect(store, top, platform, bar)?;
    finish(served, digest, collected)
}
