//! Container images in the index: which manifests and blobs make up each captured image,
//! under which upstream name (registry host, repository, tag) the cluster will ask for it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

/// A manifest (or image index) blob and the media type it is served with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRef {
    /// Digest of the manifest bytes.
    pub digest: Sha256Digest,
    /// Its `Content-Type` (`application/vnd.oci.image.manifest.v1+json`, ...).
    pub media_type: String,
    /// `os/arch[/variant]` for a platform manifest; `None` for an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// One captured image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawImage", into = "RawImage")]
pub struct Image {
    /// Upstream registry host as containerd sends it in `?ns=` (`docker.io`,
    /// `registry.local:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// Tag, if the image was named by one.
    pub tag: Option<String>,
    /// Digest of the top-level manifest or index (what the tag resolves to).
    pub digest: Sha256Digest,
    /// Every manifest blob of the image, the top-level one first.
    pub manifests: Vec<ManifestRef>,
    /// Config and layer blobs of every platform kept.
    pub blobs: Vec<Sha256Digest>,
}

impl Image {
    /// `registry/repository:tag` (or `@digest` when untagged).
    pub fn reference(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}/{}:{t}", self.registry, self.repository),
            None => format!("{}/{}@{}", self.registry, self.repository, self.digest),
        }
    }

    /// The manifest record for `digest`, if it belongs to this image.
    pub fn manifest(&self, digest: &Sha256Digest) -> Option<&ManifestRef> {
        self.manifests.iter().find(|m| m.digest == *digest)
    }
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reference())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    registry: String,
    repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    digest: Sha256Digest,
    manifests: Vec<ManifestRef>,
    blobs: Vec<Sha256Digest>,
}

impl From<Image> for RawImage {
    fn from(i: Image) -> RawImage {
        RawImage {
            registry: i.registry,
            repository: i.repository,
            tag: i.tag,
            digest: i.digest,
            manifests: i.manifests,
            blobs: i.blobs,
        }
    }
}

impl TryFrom<RawImage> for Image {
    type Error = ImageError;
    fn try_from(r: RawImage) -> Result<Self, ImageError> {
        Image::new(
            r.registry,
            r.repository,
            r.tag,
            r.digest,
            r.manifests,
            r.blobs,
        )
    }
}

/// Why an image record is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The registry is not `host[:port]`.
    #[error("image registry {0:?} is not a valid host[:port]")]
    Registry(String),
    /// The repository is not an OCI name.
    #[error("image repository {0:?} is not a valid OCI name")]
    Repository(String),
    /// The tag is not an OCI tag.
    #[error("image tag {0:?} is not a valid OCI tag")]
    Tag(String),
    /// The first manifest is not the image's digest.
    #[error("image {registry}/{repository}: its first manifest is not its digest")]
    FirstManifest {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
    },
    /// A manifest's media type is empty or longer than 255 bytes.
    #[error("image {registry}/{repository}: a manifest has an invalid media type")]
    MediaType {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
    },
}

/// True for a registry host as it appears in a reference: `host[:port]`.
pub fn is_valid_registry(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    !host.is_empty()
        && s.len() <= 255
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// True for an OCI repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/...)*`, at most
/// 255 characters.
pub fn is_valid_repository(s: &str) -> bool {
    fn component(c: &str) -> bool {
        let b = c.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()
        {
            return false;
        }
        if b.iter().any(|&x| {
            !(x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'.' | b'_' | b'-'))
        }) {
            return false;
        }
        // Separators: one `.`, one or two `_`, or any number of `-`, between alphanumerics.
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_alphanumeric() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let sep = &c[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
            if !ok {
                return false;
            }
        }
        true
    }
    !s.is_empty() && s.len() <= 255 && s.split('/').all(component)
}

/// True for an OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-'))
}

impl Image {
    /// Builds an image record, checking names and that the top-level manifest comes first.
    pub fn new(
        registry: String,
        repository: String,
        tag: Option<String>,
        digest: Sha256Digest,
        manifests: Vec<ManifestRef>,
        blobs: Vec<Sha256Digest>,
    ) -> Result<Self, ImageError> {
        if !is_valid_registry(&registry) {
            return Err(ImageError::Registry(registry));
        }
        if !is_valid_repository(&repository) {
            return Err(ImageError::Repository(repository));
        }
        if let Some(t) = &tag {
            if !is_valid_tag(t) {
                return Err(ImageError::Tag(t.clone()));
            }
        }
        if manifests.first().map(|m| m.digest) != Some(digest) {
            return Err(ImageError::FirstManifest {
                registry,
                repository,
            });
        }
        if manifests
            .iter()
            .any(|m| m.media_type.is_empty() || m.media_type.len() > 255)
        {
            return Err(ImageError::MediaType {
                registry,
                repository,
            });
        }
        Ok(Image {
            registry,
            repository,
            tag,
            digest,
            manifests,
            blobs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_distribution_grammar() {
        for ok in [
            "docker.io",
            "registry.local:5000",
            "127.0.0.1:5000",
            "example.hub",
            "localhost",
        ] {
            assert!(is_valid_registry(ok), "{ok}");
        }
        for bad in ["", "a/b", "host:", "host:abc", "-a.com", "a..b", "h:123456"] {
            assert!(!is_valid_registry(bad), "{bad}");
        }
        for ok in ["library/busybox", "a", "team/app-x", "a__b/c.d", "x--y"] {
            assert!(is_valid_repository(ok), "{ok}");
        }
        for bad in [
            "",
            "Library/x",
            "a//b",
            "../etc",
            "a/..",
            "-a",
            "a_",
            "a___b",
            "a/%2e%2e",
        ] {
            assert!(!is_valid_repository(bad), "{bad}");
        }
        for ok in ["1.36", "latest", "_x", "v1.0-rc.1"] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", &"x".repeat(129)] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
    }
}
