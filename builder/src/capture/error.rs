//! Every way a proxied request can fail, and the one place that turns each into an OCI error
//! code, an HTTP status and a `{"errors":[{code, message, detail}]}` body.

use std::io;

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use super::body::Body;

/// Longest piece of client input repeated in an error message.
const ECHO_MAX: usize = 128;

/// A request the proxy answers with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The repository name or namespace breaks the reference grammar.
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    /// A manifest reference that is neither a digest nor a valid tag.
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    /// Not `sha256:` and 64 lowercase hex characters.
    #[error("invalid digest {0:?} (only sha256 digests are captured)")]
    DigestInvalid(String),
    /// Anything but GET and HEAD: the proxy only pulls.
    #[error("method {0} is not supported: the capture proxy only pulls")]
    Unsupported(String),
    /// A path outside the pull API (tag lists and the catalog are not proxied).
    #[error("no such endpoint {0:?} on the capture proxy")]
    NotFound(String),
    /// The upstream has no such manifest, blob or repository.
    #[error("{what} not found on upstream {upstream}")]
    UpstreamNotFound {
        /// `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN` or `NAME_UNKNOWN`.
        code: &'static str,
        /// What was asked for.
        what: String,
        /// The upstream host (and where it is fetched from).
        upstream: String,
    },
    /// No connection to the upstream (refused, no route, DNS, timeout).
    #[error("upstream {upstream} is unreachable: {cause}")]
    UpstreamUnreachable {
        /// The upstream host.
        upstream: String,
        /// The client's error chain.
        cause: String,
    },
    /// The upstream refused the proxy's credentials (or anonymous access).
    #[error("upstream {upstream} refused access to {what} (the proxy's credentials come from {auth_file})")]
    UpstreamDenied {
        /// The upstream host.
        upstream: String,
        /// What was asked for.
        what: String,
        /// Where the proxy looked for credentials.
        auth_file: String,
    },
    /// Any other upstream failure (5xx, a broken connection mid-way, a protocol error).
    #[error("failed to fetch {what} from upstream {upstream}: {cause}")]
    UpstreamFailed {
        /// The upstream host.
        upstream: String,
        /// What was asked for.
        what: String,
        /// The client's error chain.
        cause: String,
    },
    /// The upstream sent content that does not hash to the digest it was asked for.
    #[error("upstream {upstream} sent {digest} with content that hashes to {actual}: not stored")]
    DigestMismatch {
        /// The upstream host.
        upstream: String,
        /// The digest asked for.
        digest: String,
        /// What the content hashes to.
        actual: String,
    },
    /// The upstream's body was shorter or longer than its `Content-Length`.
    #[error("upstream {upstream} sent {got} bytes of {digest}, announced {expected}: not stored")]
    SizeMismatch {
        /// The upstream host.
        upstream: String,
        /// The blob.
        digest: String,
        /// `Content-Length`.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The capture folder could not be written.
    #[error("failed to {context}: {source}")]
    Storage {
        /// The step.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl ProxyError {
    /// The OCI (or Docker distribution) error code.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NameInvalid(_) => "NAME_INVALID",
            ProxyError::TagInvalid(_) => "TAG_INVALID",
            ProxyError::DigestInvalid(_) | ProxyError::DigestMismatch { .. } => "DIGEST_INVALID",
            ProxyError::SizeMismatch { .. } => "SIZE_INVALID",
            ProxyError::Unsupported(_) => "UNSUPPORTED",
            ProxyError::NotFound(_) => "NOT_FOUND",
            ProxyError::UpstreamNotFound { code, .. } => code,
            ProxyError::UpstreamUnreachable { .. } => "UNAVAILABLE",
            ProxyError::UpstreamDenied { .. } => "DENIED",
            ProxyError::UpstreamFailed { .. } | ProxyError::Storage { .. } => "UNKNOWN",
        }
    }

    /// The HTTP status: 4xx for the client's mistakes and upstream answers passed on, 502
    /// for an upstream that failed, 500 for the proxy's own storage.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NameInvalid(_)
            | ProxyError::TagInvalid(_)
            | ProxyError::DigestInvalid(_) => StatusCode::BAD_REQUEST,
            ProxyError::NotFound(_) | ProxyError::UpstreamNotFound { .. } => StatusCode::NOT_FOUND,
            ProxyError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UpstreamDenied { .. } => StatusCode::FORBIDDEN,
            ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::DigestMismatch { .. }
            | ProxyError::SizeMismatch { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Storage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response: status and OCI error body (no body for HEAD).
    pub fn to_response(&self, head: bool) -> Response<Body> {
        let detail = match self {
            ProxyError::UpstreamNotFound { upstream, .. }
            | ProxyError::UpstreamUnreachable { upstream, .. }
            | ProxyError::UpstreamDenied { upstream, .. }
            | ProxyError::UpstreamFailed { upstream, .. }
            | ProxyError::DigestMismatch { upstream, .. }
            | ProxyError::SizeMismatch { upstream, .. } => json!({ "upstream": upstream }),
            _ => serde_json::Value::Null,
        };
        let body = json!({ "errors": [{
            "code": self.code(),
            "message": self.to_string(),
            "detail": detail,
        }]});
        let mut resp = json_response(self.status(), &body, head);
        if let ProxyError::Unsupported(_) = self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

/// A JSON answer with `Content-Type` and `Content-Length` (no body for HEAD).
pub(super) fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
    head: bool,
) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("a JSON value serializes");
    let len = bytes.len();
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::full(bytes)
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// `s` cut to a length fit for an error message (client input can be 60 kB long).
pub(super) fn echo(s: &str) -> String {
    if s.len() <= ECHO_MAX {
        return s.to_owned();
    }
    let mut end = ECHO_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// An error and its sources on one line (for messages that travel to clients).
pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
