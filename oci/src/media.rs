//! Media types of OCI and Docker (schema 2) manifests, configs and layers: one set of
//! constants for every crate that reads, writes or serves images.

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd-compressed OCI layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Uncompressed Docker layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// gzip-compressed Docker layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// What blobs that are not manifests are served as.
pub const OCTET_STREAM: &str = "application/octet-stream";
/// What error bodies and other JSON answers are served as.
pub const JSON: &str = "application/json";

/// The manifest media types a pull accepts (and airlock can build from).
pub const MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// True for the media types of an index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_told_from_manifests() {
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_LIST));
        assert!(!is_index(OCI_MANIFEST) && !is_index(DOCKER_MANIFEST) && !is_index(""));
        assert!(MANIFEST_TYPES.iter().all(|t| t.ends_with("+json")));
    }
}
