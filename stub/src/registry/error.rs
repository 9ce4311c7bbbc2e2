//! Every way a registry request can fail. Mistakes any of our servers refuses alike (bad
//! paths, names, tags, digests, writes, oversized heads) are [`RequestError`]s from
//! `airlock-oci`; this enum adds what only a registry of captured images can fail at, and
//! its [`OciError`] impl is the one place that gives each its code, status and detail.

use airlock_oci::{OciError, RequestError};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

/// A request the registry answers with an error.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A request no server of ours accepts (path, method, name, tag, digest, head size).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// No captured image lives in this repository.
    #[error("repository {name:?} is not known in namespace {ns}")]
    NameUnknown {
        /// Upstream registry host.
        ns: String,
        /// Repository as asked for.
        name: String,
    },
    /// The tag or digest does not name a manifest of this repository.
    #[error("manifest {reference:?} is not known in {ns}/{name}")]
    ManifestUnknown {
        /// Upstream registry host.
        ns: String,
        /// Repository.
        name: String,
        /// Tag or digest.
        reference: String,
    },
    /// The digest does not name a blob of this repository.
    #[error("blob {digest} is not known in {ns}/{name}")]
    BlobUnknown {
        /// Upstream registry host.
        ns: String,
        /// Repository.
        name: String,
        /// The digest asked for.
        digest: String,
    },
    /// A `Range` that starts at or beyond the end of the blob.
    #[error("range {range:?} is outside the blob's {size} bytes")]
    RangeNotSatisfiable {
        /// The header as sent.
        range: String,
        /// Blob length.
        size: u64,
    },
    /// The installer's bytes for this content are damaged.
    #[error("the installer's copy of {what} is damaged")]
    Damaged {
        /// The manifest or blob digest.
        what: String,
        /// What the payload reader found.
        #[source]
        source: airlock_payload::Error,
    },
}

impl OciError for RegistryError {
    fn code(&self) -> &'static str {
        match self {
            RegistryError::Request(e) => e.code(),
            RegistryError::NameUnknown { .. } => "NAME_UNKNOWN",
            RegistryError::ManifestUnknown { .. } => "MANIFEST_UNKNOWN",
            RegistryError::BlobUnknown { .. } => "BLOB_UNKNOWN",
            RegistryError::RangeNotSatisfiable { .. } => "RANGE_INVALID",
            RegistryError::Damaged { .. } => "UNKNOWN",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            RegistryError::Request(e) => e.status(),
            RegistryError::NameUnknown { .. }
            | RegistryError::ManifestUnknown { .. }
            | RegistryError::BlobUnknown { .. } => StatusCode::NOT_FOUND,
            RegistryError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            RegistryError::Damaged { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            RegistryError::Request(e) => e.detail(),
            RegistryError::NameUnknown { ns, name } => json!({ "namespace": ns, "name": name }),
            RegistryError::ManifestUnknown {
                ns,
                name,
                reference,
            } => json!({ "namespace": ns, "name": name, "reference": reference }),
            RegistryError::BlobUnknown { ns, name, digest } => {
                json!({ "namespace": ns, "name": name, "digest": digest })
            }
            RegistryError::RangeNotSatisfiable { size, .. } => json!({ "size": size }),
            RegistryError::Damaged { source, .. } => json!({ "cause": source.to_string() }),
        }
    }

    fn headers(&self, h: &mut HeaderMap) {
        match self {
            RegistryError::Request(e) => e.headers(h),
            RegistryError::RangeNotSatisfiable { size, .. } => {
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
            }
            _ => {}
        }
    }
}

impl RegistryError {
    /// The response: status, `{"errors":[{code, message, detail}]}` (no body for HEAD),
    /// and the headers some errors need (`Allow`, `Content-Range`).
    pub fn into_response(self, head: bool) -> http::Response<airlock_oci::Body> {
        airlock_oci::error_response(&self, head)
    }
}
