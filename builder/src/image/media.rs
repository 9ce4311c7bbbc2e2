//! Media types of images (one set for every crate, from `airlock-oci`), and what a media type
//! says about a blob.

pub use airlock_oci::media::{
    is_index, DOCKER_LIST, DOCKER_MANIFEST, MANIFEST_TYPES, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP,
    OCI_LAYER_TAR, OCI_MANIFEST,
};

/// Whether a layer of this media type arrives compressed (stored verbatim in raw frames).
/// Uncompressed tar layers are zstd-compressed in the payload and decoded when served.
pub fn layer_is_compressed(media_type: &str) -> bool {
    !media_type.ends_with(".tar")
}
