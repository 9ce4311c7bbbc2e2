//! Every way a proxied request can fail. Mistakes any of our servers refuses alike (bad
//! paths, names, tags, digests, writes, oversized heads) are [`RequestError`]s from
//! `airlock-oci`; this enum adds the upstream's and the capture folder's failures, and its
//! [`OciError`] impl is the one place that gives each its code, status and detail.

use std::io;

use airlock_oci::{OciError, RequestError};
use http::{HeaderMap, Response, StatusCode};
use serde_json::json;

use airlock_oci::Body;

/// A request the proxy answers with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A request no server of ours accepts (path, method, name, tag, digest, head size).
    /// Tag lists and the catalog are not proxied: `NOT_FOUND`.
    #[error(transparent)]
    Request(#[from] RequestError),
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

impl OciError for ProxyError {
    fn code(&self) -> &'static str {
        match self {
            ProxyError::UpstreamNotFound { code, .. } => code,
            ProxyError::UpstreamUnreachable { .. } => "UNAVAILABLE",
            ProxyError::UpstreamDenied { .. } => "DENIED",
            ProxyError::UpstreamFailed { .. } | ProxyError::Storage { .. } => "UNKNOWN",
            ProxyError::DigestMismatch { .. } => "DIGEST_INVALID",
            ProxyError::SizeMismatch { .. } => "SIZE_INVALID",
            ProxyError::Request(e) => e.code(),
        }
    }

    /// 4xx for the client's mistakes and upstream answers passed on, 502 for an upstream
    /// that failed, 500 for the proxy's own storage.
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamNotFound { .. } => StatusCode::NOT_FOUND,
            ProxyError::UpstreamDenied { .. } => StatusCode::FORBIDDEN,
            ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::DigestMismatch { .. }
            | ProxyError::SizeMismatch { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Storage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Request(e) => e.status(),
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            ProxyError::UpstreamNotFound { upstream, .. }
            | ProxyError::UpstreamUnreachable { upstream, .. }
            | ProxyError::UpstreamDenied { upstream, .. }
            | ProxyError::UpstreamFailed { upstream, .. }
            | ProxyError::DigestMismatch { upstream, .. }
            | ProxyError::SizeMismatch { upstream, .. } => json!({ "upstream": upstream }),
            ProxyError::Storage { .. } => serde_json::Value::Null,
            ProxyError::Request(e) => e.detail(),
        }
    }

    fn headers(&self, h: &mut HeaderMap) {
        if let ProxyError::Request(e) = self {
            e.headers(h);
        }
    }
}

impl ProxyError {
    /// The response: status, headers and OCI error body (no body for HEAD).
    pub fn to_response(&self, head: bool) -> Response<Body> {
        airlock_oci::error_response(self, head)
    }
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
