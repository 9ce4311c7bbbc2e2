//! Every way a registry request can fail, and the one place that turns each into an OCI
//! error code, an HTTP status and a JSON body.

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use super::body::Body;
use super::json_response;

/// Longest piece of client input repeated in an error message.
const ECHO_MAX: usize = 128;

/// A request the registry answers with an error.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The repository name breaks the OCI name grammar (or does not decode to text).
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
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
    /// Not `sha256:` and 64 lowercase hex characters.
    #[error("invalid digest {0:?} (only sha256 digests exist here)")]
    DigestInvalid(String),
    /// A manifest reference that is neither a digest nor a valid tag.
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    /// `n` is not a number.
    #[error("invalid page size {0:?}")]
    PaginationInvalid(String),
    /// Anything but GET and HEAD: this registry is read-only.
    #[error("method {0} is not supported: this registry is read-only")]
    Unsupported(String),
    /// A path outside the distribution API.
    #[error("no such endpoint {0:?}")]
    NotFound(String),
    /// A `Range` that starts at or beyond the end of the blob.
    #[error("range {range:?} is outside the blob's {size} bytes")]
    RangeNotSatisfiable {
        /// The header as sent.
        range: String,
        /// Blob length.
        size: u64,
    },
    /// A request head (request line and headers) over the server's limit. hyper's read
    /// buffer limit alone lets a head through that arrives in one piece of up to about twice
    /// the limit (found by `bench/load.sh`'s malformed stream), so the server checks it.
    #[error("request head of {size} bytes is over the limit of {limit} bytes")]
    HeadTooLarge {
        /// About how large the head is.
        size: usize,
        /// [`super::ServeOptions::max_buf_size`].
        limit: usize,
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

impl RegistryError {
    /// The OCI (or Docker distribution) error code.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::NameInvalid(_) => "NAME_INVALID",
            RegistryError::NameUnknown { .. } => "NAME_UNKNOWN",
            RegistryError::ManifestUnknown { .. } => "MANIFEST_UNKNOWN",
            RegistryError::BlobUnknown { .. } => "BLOB_UNKNOWN",
            RegistryError::DigestInvalid(_) => "DIGEST_INVALID",
            RegistryError::TagInvalid(_) => "TAG_INVALID",
            RegistryError::PaginationInvalid(_) => "PAGINATION_NUMBER_INVALID",
            RegistryError::Unsupported(_) => "UNSUPPORTED",
            RegistryError::NotFound(_) => "NOT_FOUND",
            RegistryError::RangeNotSatisfiable { .. } => "RANGE_INVALID",
            RegistryError::HeadTooLarge { .. } => "UNSUPPORTED",
            RegistryError::Damaged { .. } => "UNKNOWN",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            RegistryError::NameInvalid(_)
            | RegistryError::DigestInvalid(_)
            | RegistryError::TagInvalid(_)
            | RegistryError::PaginationInvalid(_) => StatusCode::BAD_REQUEST,
            RegistryError::NameUnknown { .. }
            | RegistryError::ManifestUnknown { .. }
            | RegistryError::BlobUnknown { .. }
            | RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            RegistryError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            RegistryError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RegistryError::Damaged { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `detail` member of the error body.
    fn detail(&self) -> serde_json::Value {
        match self {
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
            RegistryError::HeadTooLarge { size, limit } => json!({ "size": size, "limit": limit }),
            RegistryError::Damaged { source, .. } => json!({ "cause": source.to_string() }),
            _ => serde_json::Value::Null,
        }
    }

    /// The response: status, `{"errors":[{code, message, detail}]}` (no body for HEAD),
    /// and the headers some errors need (`Allow`, `Content-Range`).
    pub fn into_response(self, head: bool) -> Response<Body> {
        let body = json!({ "errors": [{
            "code": self.code(),
            "message": self.to_string(),
            "detail": self.detail(),
        }]});
        let mut resp = json_response(self.status(), &body, head);
        let h = resp.headers_mut();
        match &self {
            RegistryError::Unsupported(_) => {
                h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            RegistryError::HeadTooLarge { .. } => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            RegistryError::RangeNotSatisfiable { size, .. } => {
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
            }
            _ => {}
        }
        resp
    }
}

/// `s` cut to a length fit for an error message (client input can be 60 kB long).
pub(crate) fn echo(s: &str) -> String {
    if s.len() <= ECHO_MAX {
        return s.to_owned();
    }
    let mut end = ECHO_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
