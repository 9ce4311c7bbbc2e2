//! Capturing container images at build time.
//!
//! Each `images:` entry of the spec names the image the installer will serve (its `ref`) and
//! where to get it (`from`): an OCI layout ([`layout`]), a `docker save` archive
//! ([`archive`]), a registry ([`registry`]) or a capture folder ([`capture`]).
//! Every source is a [`BlobStore`]; [`collect`] walks the top-level manifest or index through
//! it, keeps the index verbatim, picks the spec's platform, and returns every manifest, config and layer blob, each one verified
//! against its digest as it is read. [`capture_all`] runs the entries in parallel, with one
//! progress bar per image.

//!
//! The parts, each importing only those listed before it: [`media`] (media types),
//! [`error`], [`manifest`] (descriptors), [`blob`] (stores, blobs, digest checks),
//! [`collect`] (walking an image), the sources [`layout`], [`archive`], [`registry`] and
//! [`capture`], [`parallel`] (every entry, several at once), and [`signatures`] (the cosign
//! tags and OCI referrers of an image, `signatures: true`).

pub mod archive;
pub mod blob;
pub mod capture;
pub mod collect;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod media;
pub mod parallel;
pub mod registry;
pub mod signatures;

pub use blob::{
    verify_bytes, verify_hashed, BlobKind, BlobStore, CapturedImage, FileRange, ImageBlob,
};
pub use collect::{collect, finish, select_platform, Collected, Top};
pub use error::{ArchiveError, CaptureError, Error, ErrorKind, RegistryError};
pub use manifest::{DescPlatform, Descriptor};
pub use media::{
    is_index, layer_is_compressed, DOCKER_LIST, DOCKER_MANIFEST, MANIFEST_TYPES, OCI_CONFIG,
    OCI_INDEX, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST,
};
pub use parallel::{capture_all, capture_one, CaptureOptions};
pub use registry::{Mirror, RegistryOptions};

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
