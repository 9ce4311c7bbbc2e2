//! Image references, normalised the way containerd and docker do.
//!
//! [`ImageRef`] parses `busybox`, `quay.io/coreos/etcd:v3.5.0`, `registry.local:5000/a/b:1` or
//! `alpine@sha256:...` into a registry host, a repository, an optional tag and an optional
//! digest: a name without a registry is on `docker.io`, a one-component Docker Hub name gets
//! `library/`, and a reference with neither tag nor digest gets `:latest`. Only `sha256`
//! digests are accepted (the payload format stores nothing else).

use std::fmt;
use std::str::FromStr;

use airlock_payload::{is_valid_registry, Sha256Digest};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Not a reference at all.
    #[error("invalid image reference `{text}`: {reason}")]
    Invalid {
        /// The text given.
        text: String,
        /// What the parser said.
        reason: String,
    },
    /// A digest of another algorithm than sha256.
    #[error("invalid image reference `{0}`: only sha256 digests are supported")]
    UnsupportedDigest(String),
}

/// A normalised image reference: `registry/repository[:tag][@sha256:...]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Sha256Digest>,
}

impl ImageRef {
    /// The registry host as containerd sends it in `?ns=` (`docker.io`, `registry.local:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `latest` when the text had neither tag nor digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, when the reference pins one.
    pub fn digest(&self) -> Option<Sha256Digest> {
        self.digest
    }

    /// The same image under another registry, repository and tag (the name an installer
    /// serves a `from` source under keeps `self`'s digest pin only if `self` had one).
    pub fn with_tag(&self, tag: Option<String>) -> ImageRef {
        ImageRef {
            tag,
            ..self.clone()
        }
    }

    /// The reference in oci-client's type, for pulls.
    pub fn to_oci(&self) -> oci_spec::distribution::Reference {
        use oci_spec::distribution::Reference;
        let (r, p) = (self.registry.clone(), self.repository.clone());
        match (&self.tag, self.digest) {
            (Some(t), Some(d)) => Reference::with_tag_and_digest(r, p, t.clone(), d.to_string()),
            (None, Some(d)) => Reference::with_digest(r, p, d.to_string()),
            (Some(t), None) => Reference::with_tag(r, p, t.clone()),
            (None, None) => Reference::with_tag(r, p, "latest".to_owned()),
        }
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<ImageRef, ReferenceError> {
        let invalid = |reason: String| ReferenceError::Invalid {
            text: text.to_owned(),
            reason,
        };
        let parsed = oci_spec::distribution::Reference::from_str(text)
            .map_err(|e| invalid(e.to_string()))?;
        let digest = match parsed.digest() {
            None => None,
            Some(d) if d.starts_with("sha256:") => Some(
                d.parse::<Sha256Digest>()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            Some(_) => return Err(ReferenceError::UnsupportedDigest(text.to_owned())),
        };
        // The grammar allows upper-case host names; registries are matched as written by
        // containerd, which lower-cases nothing either, but a host must still be a host.
        if !is_valid_registry(parsed.registry()) {
            return Err(invalid(format!(
                "`{}` is not a registry host",
                parsed.registry()
            )));
        }
        Ok(ImageRef {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository().to_owned(),
            tag: parsed.tag().map(str::to_owned),
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Deserializes through [`FromStr`], inside the visitor so that serde_yaml_ng attaches the
/// scalar's location to the error (spec files, capture lock files).
impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RefVisitor;

        impl Visitor<'_> for RefVisitor {
            type Value = ImageRef;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an image reference such as docker.io/library/busybox:1.36")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ImageRef, E> {
                value.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(RefVisitor)
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(text: &str) -> String {
        text.parse::<ImageRef>().unwrap().to_string()
    }

    #[test]
    fn short_names_are_on_docker_hub_under_library_with_latest() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("team/app"), "docker.io/team/app:latest");
        assert_eq!(
            norm("index.docker.io/library/alpine:3"),
            "docker.io/library/alpine:3"
        );
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        let r: ImageRef = "busybox".parse().unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
    }

    #[test]
    fn hosts_with_ports_dots_or_localhost_are_registries() {
        let r: ImageRef = "registry.local:5000/a/b:1".parse().unwrap();
        assert_eq!(r.registry(), "registry.local:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("127.0.0.1:5001/a/b:1"), "127.0.0.1:5001/a/b:1");
        assert_eq!(
            norm("quay.io/coreos/etcd:v3.5.0"),
            "quay.io/coreos/etcd:v3.5.0"
        );
        // A first component without '.' or ':' is a Docker Hub namespace, not a host.
        assert_eq!(norm("example/app:1"), "docker.io/example/app:1");
    }

    #[test]
    fn digests_pin_the_image_and_need_no_tag() {
        let r: ImageRef = format!("alpine@sha256:{HEX}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), format!("sha256:{HEX}"));
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/alpine@sha256:{HEX}")
        );
        let both: ImageRef = format!("alpine:3@sha256:{HEX}").parse().unwrap();
        assert_eq!(both.tag(), Some("3"));
        assert!(both.digest().is_some());
    }

    #[test]
    fn bad_references_are_rejected() {
        for bad in [
            "",
            "Busybox",
            "a//b",
            "busybox:",
            "busybox@sha256:abc",
            "busybox:-x",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?}");
        }
        let sha512 = format!("alpine@sha512:{HEX}{HEX}");
        assert!(matches!(
            sha512.parse::<ImageRef>(),
            Err(ReferenceError::UnsupportedDigest(_))
        ));
    }
}
