//! The OCI error envelope, `{"errors":[{"code","message","detail"}]}`, and the one trait
//! ([`OciError`]) through which each server's error type says its code, HTTP status,
//! detail and extra headers, so that [`error_response`] writes every answer alike.
//!
//! [`RequestError`] holds the mistakes any of our servers refuses in the same way (a path
//! outside the API, a write, a bad name, tag or digest, an oversized request head); a
//! server's own error enum wraps it and adds what only it can fail at.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::Body;
use crate::media;

/// Longest piece of client input repeated in an error message.
const ECHO_MAX: usize = 128;

/// An error a server answers with: an OCI (or Docker distribution) error code, an HTTP
/// status, a `detail` value and any headers the answer needs. The message is `Display`.
pub trait OciError: std::error::Error {
    /// The error code (`MANIFEST_UNKNOWN`, `NAME_INVALID`, ...).
    fn code(&self) -> &'static str;

    /// The HTTP status.
    fn status(&self) -> StatusCode;

    /// The `detail` member of the error body (`null` unless overridden).
    fn detail(&self) -> Value {
        Value::Null
    }

    /// Adds the headers this error needs (`Allow`, `Content-Range`, ...) to the answer.
    fn headers(&self, _headers: &mut HeaderMap) {}
}

/// The answer for `err`: its status and headers, and the OCI error body (none for HEAD).
pub fn error_response(err: &(impl OciError + ?Sized), head: bool) -> Response<Body> {
    let body = json!({ "errors": [{
        "code": err.code(),
        "message": err.to_string(),
        "detail": err.detail(),
    }]});
    let mut resp = json_response(err.status(), &body, head);
    err.headers(resp.headers_mut());
    resp
}

/// A JSON answer with `Content-Type` and `Content-Length` (no body for HEAD).
pub fn json_response(status: StatusCode, value: &Value, head: bool) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("a JSON value serializes");
    let len = bytes.len();
    let mut resp = Response::new(Body::full_unless_head(bytes, head));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media::JSON));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// `s` cut to a length fit for an error message (client input can be 60 kB long).
pub fn echo(s: &str) -> String {
    if s.len() <= ECHO_MAX {
        return s.to_owned();
    }
    let mut end = ECHO_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A request every server of ours refuses the same way. Values are client input cut by
/// [`echo`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A path outside the distribution API (or an endpoint this server does not offer).
    #[error("no such endpoint {0:?}")]
    NotFound(String),
    /// Anything but GET and HEAD: our servers are read-only.
    #[error("method {0} is not supported: only GET and HEAD are served")]
    Unsupported(String),
    /// The repository name or namespace breaks the OCI name grammar, or its escapes do not
    /// decode to text.
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    /// A manifest reference that is neither a digest nor a valid tag.
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    /// Not `sha256:` and 64 lowercase hex characters.
    #[error("invalid digest {0:?} (only sha256 digests are supported)")]
    DigestInvalid(String),
    /// `n` is not a number.
    #[error("invalid page size {0:?}")]
    PaginationInvalid(String),
    /// A request head (request line and headers) over the server's limit. hyper's read
    /// buffer limit alone lets a head through that arrives in one piece of up to about twice
    /// the limit (found by `bench/load.sh`'s malformed stream), so the server checks it.
    #[error("request head of {size} bytes is over the limit of {limit} bytes")]
    HeadTooLarge {
        /// About how large the head is.
        size: usize,
        /// [`crate::ServeOptions::max_buf_size`].
        limit: usize,
    },
}

impl OciError for RequestError {
    fn code(&self) -> &'static str {
        match self {
            RequestError::NotFound(_) => "NOT_FOUND",
            RequestError::Unsupported(_) | RequestError::HeadTooLarge { .. } => "UNSUPPORTED",
            RequestError::NameInvalid(_) => "NAME_INVALID",
            RequestError::TagInvalid(_) => "TAG_INVALID",
            RequestError::DigestInvalid(_) => "DIGEST_INVALID",
            RequestError::PaginationInvalid(_) => "PAGINATION_NUMBER_INVALID",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::NameInvalid(_)
            | RequestError::TagInvalid(_)
            | RequestError::DigestInvalid(_)
            | RequestError::PaginationInvalid(_) => StatusCode::BAD_REQUEST,
            RequestError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    fn detail(&self) -> Value {
        match self {
            RequestError::HeadTooLarge { size, limit } => json!({ "size": size, "limit": limit }),
            _ => Value::Null,
        }
    }

    fn headers(&self, h: &mut HeaderMap) {
        match self {
            RequestError::Unsupported(_) => {
                h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            RequestError::HeadTooLarge { .. } => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(resp: Response<Body>) -> Value {
        serde_json::from_slice(&resp.into_body().read_all().await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn an_error_answer_is_the_oci_envelope_with_status_and_headers() {
        let err = RequestError::Unsupported("PUT".into());
        let resp = error_response(&err, false);
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET, HEAD");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let len: usize = resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let v = body_json(resp).await;
        assert_eq!(serde_json::to_vec(&v).unwrap().len(), len);
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("PUT"));
        assert!(v["errors"][0]["detail"].is_null());
    }

    #[tokio::test]
    async fn an_oversized_head_gets_431_and_a_closed_connection() {
        let err = RequestError::HeadTooLarge {
            size: 100_000,
            limit: 65_536,
        };
        let resp = error_response(&err, false);
        assert_eq!(resp.status(), 431);
        assert_eq!(resp.headers()["connection"], "close");
        let v = body_json(resp).await;
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED");
        assert_eq!(v["errors"][0]["detail"]["limit"], 65_536);
    }

    #[tokio::test]
    async fn a_head_answer_has_the_length_but_no_body() {
        let resp = error_response(&RequestError::NotFound("/x".into()), true);
        assert_eq!(resp.status(), 404);
        assert_ne!(resp.headers()["content-length"], "0");
        assert!(resp.into_body().read_all().await.unwrap().is_empty());
    }

    #[test]
    fn echo_cuts_long_input_on_a_char_boundary() {
        assert_eq!(echo("short"), "short");
        let long = "é".repeat(100);
        let cut = echo(&long);
        assert!(cut.ends_with("...") && cut.len() <= ECHO_MAX + 3, "{cut}");
    }
}
