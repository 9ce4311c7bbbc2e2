//! An HTTP client for one target registry: hyper-util's pooled client over rustls, auth
//! (Basic, or Bearer tokens from the challenge's realm) and retries with backoff.
//!
//! [`Client::send`] makes one logical request: it answers a `401` by getting a token (or
//! switching to Basic) and sending again, retries connection errors and `5xx`/`408`/`413`/
//! `429` answers with exponential backoff when asked to, and never retries refused
//! credentials or certificates. Credentials are never logged: only methods and URLs are.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_oci::Body;
use airlock_payload::{Blob, Payload};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

use super::auth::{Challenge, Credentials};
use super::tls::Refusal;
use super::PushError;
use crate::registry::body::blob_body;
use crate::registry::Pages;

/// How long one request may take before it counts as a connection error (a stalled
/// registry is retried rather than waited on for ever).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Error bodies are cut to this many bytes in messages.
const BODY_IN_ERRORS: usize = 300;

/// `http(s)://host[:port]` and the path prefix of a target registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// The path prefix without slashes at either end (may be empty).
    pub prefix: String,
}

impl Endpoint {
    /// Parses `https://host[:port][/prefix]`. A bare `host[/prefix]` means https.
    pub fn parse(url: &str) -> Result<Endpoint, PushError> {
        let bad = |why| PushError::BadUrl {
            url: url.to_owned(),
            why,
        };
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) if s == "https" || s == "http" => (s, r),
            Some(_) => return Err(bad("the scheme must be https or http")),
            None => ("https", url),
        };
        if rest.contains(['?', '#', '@']) {
            return Err(bad("no query, fragment or user info allowed"));
        }
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.parse::<http::uri::Authority>().is_err() {
            return Err(bad("no valid host"));
        }
        let prefix = prefix.trim_matches('/').to_owned();
        if prefix.contains("//") {
            return Err(bad("the path has an empty component"));
        }
        if !prefix.is_empty() && !airlock_payload::is_valid_repository(&prefix) {
            return Err(bad(
                "the path is not a valid repository prefix (lowercase, [a-z0-9._-] components)",
            ));
        }
        Ok(Endpoint {
            scheme: scheme.to_owned(),
            authority: authority.to_owned(),
            prefix,
        })
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.authority)
    }

    /// `location` (absolute, or a path as distribution sends) as an absolute URL.
    pub fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else if location.starts_with('/') {
            self.url(location)
        } else {
            self.url(&format!("/{location}"))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// What a request sends.
#[derive(Clone)]
pub enum Content {
    /// Nothing.
    Empty,
    /// Bytes in memory (manifests).
    Bytes(Bytes),
    /// `len` bytes of a blob from `offset`, streamed from the installer (checked frames).
    Blob {
        /// The installer's payload.
        payload: Arc<Payload<'static>>,
        /// The blob.
        blob: Blob,
        /// Start inside the blob.
        offset: u64,
        /// Length.
        len: u64,
    },
}

impl Content {
    fn body(&self) -> Body {
        match self {
            Content::Empty => Body::empty(),
            Content::Bytes(b) => Body::full(b.clone()),
            Content::Blob {
                payload,
                blob,
                offset,
                len,
            } => blob_body(payload.clone(), Pages::KEEP, blob.clone(), *offset, *len),
        }
    }

    fn len(&self) -> u64 {
        match self {
            Content::Empty => 0,
            Content::Bytes(b) => b.len() as u64,
            Content::Blob { len, .. } => *len,
        }
    }
}

/// One request: method, absolute URL, headers, body and the token scopes it needs.
#[derive(Clone)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Content,
    /// `repository:<name>:<actions>` scopes a Bearer token for this request needs.
    pub scopes: Vec<String>,
}

impl Call {
    /// A request without body or headers.
    pub fn new(method: Method, url: String, scopes: Vec<String>) -> Call {
        Call {
            method,
            url,
            headers: Vec::new(),
            body: Content::Empty,
            scopes,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Call {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((name, v));
        }
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Content) -> Call {
        self.body = body;
        self
    }

    /// `METHOD URL`, for messages.
    pub fn step(&self) -> String {
        format!("{} {}", self.method, self.url)
    }
}

/// A registry's answer, with its (small) body read.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// A header as a string.
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// [`PushError::Status`] for this answer to `call`.
    pub fn error(&self, call: &Call) -> PushError {
        let text = String::from_utf8_lossy(&self.body);
        let mut body: String = text.trim().chars().take(BODY_IN_ERRORS).collect();
        if text.trim().chars().count() > BODY_IN_ERRORS {
            body.push_str("...");
        }
        PushError::Status {
            step: call.step(),
            status: self.status.as_u16(),
            body,
        }
    }
}

/// The client of one target registry; shared by every task of a push.
pub struct Client {
    http: HttpClient<HttpsConnector<HttpConnector>, Body>,
    /// The target.
    pub endpoint: Endpoint,
    creds: Option<Credentials>,
    /// The registry asked for Basic: send it with every request.
    basic: AtomicBool,
    /// Bearer tokens by the scopes they were asked for.
    tokens: Mutex<HashMap<String, String>>,
    refusal: Refusal,
    /// Retries after the first attempt, for retried requests.
    pub retries: u32,
    /// The first backoff (doubled per retry, at most 8 s).
    pub backoff: Duration,
    /// Requests sent (every attempt), for reports and tests.
    pub requests: AtomicU64,
}

impl Client {
    /// A client of `endpoint` with `tls`, `creds` and `retries`; `refusal` is the slot the
    /// TLS verifier writes to.
    pub fn new(
        endpoint: Endpoint,
        tls: rustls::ClientConfig,
        refusal: Refusal,
        creds: Option<Credentials>,
        retries: u32,
    ) -> Client {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Client {
            http,
            endpoint,
            creds,
            basic: AtomicBool::new(false),
            tokens: Mutex::new(HashMap::new()),
            refusal,
            retries,
            backoff: Duration::from_millis(250),
            requests: AtomicU64::new(0),
        }
    }

    fn host(&self) -> String {
        self.endpoint.authority.clone()
    }

    fn user(&self) -> String {
        self.creds
            .as_ref()
            .map(|c| c.user.clone())
            .unwrap_or_default()
    }

    /// Sends `call`, following auth challenges; with `retry`, connection errors and
    /// retryable statuses are tried again with backoff. Any other status is returned.
    pub async fn send(&self, call: &Call, retry: bool) -> Result<Answer, PushError> {
        let attempts = if retry { self.retries + 1 } else { 1 };
        let mut authed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.once(call).await {
                Err(source) => {
                    if let Some(why) = self.refusal.lock().expect("not poisoned").take() {
                        return Err(PushError::TlsRefused {
                            host: self.host(),
                            why,
                        });
                    }
                    if attempt >= attempts {
                        return Err(PushError::Connect {
                            step: call.step(),
                            attempts: attempt,
                            source,
                        });
                    }
                    tracing::debug!("{}: {source}; retrying", call.step());
                }
                Ok(answer) if answer.status == StatusCode::UNAUTHORIZED => {
                    if authed {
                        return Err(self.refused(&call.url, 401));
                    }
                    self.authenticate(&answer, call).await?;
                    authed = true;
                    attempt -= 1; // the challenge is not a failed attempt
                    continue;
                }
                Ok(answer) if answer.status == StatusCode::FORBIDDEN => {
                    return Err(self.refused(&call.url, 403));
                }
                Ok(answer) if retryable(answer.status) && attempt < attempts => {
                    tracing::debug!("{}: {}; retrying", call.step(), answer.status);
                }
                Ok(answer) => return Ok(answer),
            }
            tokio::time::sleep(self.backoff_for(attempt)).await;
        }
    }

    /// The pause after failed attempt number `attempt` (1-based).
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        (self.backoff * 2u32.saturating_pow(attempt.saturating_sub(1))).min(Duration::from_secs(8))
    }

    fn refused(&self, url: &str, status: u16) -> PushError {
        match &self.creds {
            None => PushError::NeedsCredentials { host: self.host() },
            Some(_) => PushError::Unauthorized {
                host: self.host(),
                user: self.user(),
                url: strip_query(url),
                status,
            },
        }
    }

    /// One attempt, with whatever auth is known.
    async fn once(&self, call: &Call) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(&call.url)
            .header(
                header::USER_AGENT,
                concat!("airlock/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in &call.headers {
            req = req.header(k, v);
        }
        if call.method == Method::PUT || call.method == Method::PATCH || call.method == Method::POST
        {
            req = req.header(header::CONTENT_LENGTH, call.body.len());
        }
        if let Some(auth) = self.auth_header(&call.scopes) {
            let mut v = HeaderValue::from_str(&auth)?;
            v.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, v);
        }
        let req = req.body(call.body.body())?;
        tracing::debug!("{} {}", call.method, strip_query(&call.url));
        self.requests.fetch_add(1, Ordering::Relaxed);
        let fut = async {
            let resp = self.http.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer in {} s", REQUEST_TIMEOUT.as_secs()).into()),
        }
    }

    fn auth_header(&self, scopes: &[String]) -> Option<String> {
        if let Some(t) = self
            .tokens
            .lock()
            .expect("not poisoned")
            .get(&scopes.join(" "))
        {
            return Some(format!("Bearer {t}"));
        }
        if self.basic.load(Ordering::Relaxed) {
            return self.creds.as_ref().map(Credentials::basic_header);
        }
        None
    }

    /// Answers a 401: Basic (credentials from now on) or a Bearer token for the scopes.
    async fn authenticate(&self, answer: &Answer, call: &Call) -> Result<(), PushError> {
        let challenge = answer
            .headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            .min_by_key(|c| matches!(c, Challenge::Basic)); // Bearer first
        match challenge {
            Some(Challenge::Basic) => {
                // A second 401 for the same call is a refusal (see `send`); parallel calls
                // sent before the first challenge was answered just try again.
                if self.creds.is_none() {
                    return Err(self.refused(&call.url, 401));
                }
                self.basic.store(true, Ordering::Relaxed);
                Ok(())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut scopes: BTreeSet<String> = call.scopes.iter().cloned().collect();
                scopes.extend(
                    scope
                        .iter()
                        .flat_map(|s| s.split(' '))
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
                let token = self.token(&realm, service.as_deref(), &scopes).await?;
                self.tokens
                    .lock()
                    .expect("not poisoned")
                    .insert(call.scopes.join(" "), token);
                Ok(())
            }
            None => Err(PushError::Protocol {
                step: call.step(),
                why: "401 without a Basic or Bearer WWW-Authenticate challenge".into(),
            }),
        }
    }

    /// GETs a token from `realm` (Basic with the credentials, if any).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &BTreeSet<String>,
    ) -> Result<String, PushError> {
        let token_err = |why: String| PushError::Token {
            realm: realm.to_owned(),
            why,
        };
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        if let Some(s) = service {
            url.push_str(&format!("{sep}service={}", enc(s)));
            sep = '&';
        }
        for s in scopes {
            url.push_str(&format!("{sep}scope={}", enc(s)));
            sep = '&';
        }
        let mut req = Request::builder().method(Method::GET).uri(&url).header(
            header::USER_AGENT,
            concat!("airlock/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(c) = &self.creds {
            let mut v = HeaderValue::from_str(&c.basic_header())
                .map_err(|_| token_err("the credentials are not valid in a header".into()))?;
            v.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, v);
        }
        let req = req
            .body(Body::empty())
            .map_err(|e| token_err(e.to_string()))?;
        tracing::debug!("GET {realm} (token)");
        self.requests.fetch_add(1, Ordering::Relaxed);
        let fut = async {
            let resp = self.http.request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        };
        let (status, body) = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                if let Some(why) = self.refusal.lock().expect("not poisoned").take() {
                    return Err(PushError::TlsRefused {
                        host: realm.to_owned(),
                        why,
                    });
                }
                return Err(token_err(e.to_string()));
            }
            Err(_) => return Err(token_err("no answer".into())),
        };
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(match &self.creds {
                None => PushError::NeedsCredentials { host: self.host() },
                Some(_) => PushError::Unauthorized {
                    host: self.host(),
                    user: self.user(),
                    url: strip_query(realm),
                    status: status.as_u16(),
                },
            });
        }
        if !status.is_success() {
            return Err(token_err(format!("the token endpoint answered {status}")));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body)
            .map_err(|e| token_err(format!("the answer is not a token: {e}")))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_err("the answer holds no token".into()))
    }
}

/// Statuses worth another attempt: the registry is busy, full for now, or broken for now.
pub fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::PAYLOAD_TOO_LARGE
}

/// `url` without its query (upload locations carry state, token URLs scopes).
fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry that wants a Bearer token from its realm `/token`, which wants Basic
    /// `u:p`; every request is counted.
    async fn token_registry() -> (String, Arc<AtomicU64>, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        let good_basic = Credentials {
            user: "u".into(),
            password: "p".into(),
        }
        .basic_header();
        let handler = move |req: Request<hyper::body::Incoming>| {
            counter.fetch_add(1, Ordering::Relaxed);
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let good_basic = good_basic.clone();
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            async move {
                let mut resp = http::Response::new(Body::empty());
                if path == "/token" {
                    if auth == good_basic && query.contains("scope=repository%3Ar%3Apull%2Cpush") {
                        *resp.body_mut() = Body::full(r#"{"token":"t1"}"#);
                    } else {
                        *resp.status_mut() = StatusCode::UNAUTHORIZED;
                    }
                } else if auth != "Bearer t1" {
                    *resp.status_mut() = StatusCode::UNAUTHORIZED;
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_str(&format!(
                            r#"Bearer realm="http://{addr}/token",service="test",scope="repository:r:pull,push""#
                        ))
                        .unwrap(),
                    );
                }
                resp
            }
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(airlock_oci::serve(
            listener,
            handler,
            airlock_oci::ServeOptions::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        (format!("http://{addr}"), seen, stop)
    }

    fn client_of(url: &str, password: &str) -> Client {
        let tls = super::super::tls::client_config(None, true, Refusal::default()).unwrap();
        let mut c = Client::new(
            Endpoint::parse(url).unwrap(),
            tls,
            Refusal::default(),
            Some(Credentials {
                user: "u".into(),
                password: password.into(),
            }),
            3,
        );
        c.backoff = Duration::from_millis(1);
        c
    }

    #[tokio::test]
    async fn a_bearer_challenge_is_answered_with_a_token_from_its_realm() {
        let (url, seen, _stop) = token_registry().await;
        let client = client_of(&url, "p");
        let call = Call::new(
            Method::HEAD,
            format!("{url}/v2/r/blobs/sha256:00"),
            vec!["repository:r:pull,push".into()],
        );
        let a = client.send(&call, true).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        // The token is reused: one more request, no new challenge.
        client.send(&call, true).await.unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_401_from_the_token_endpoint_is_one_error_without_retries() {
        let (url, seen, _stop) = token_registry().await;
        let client = client_of(&url, "wrong");
        let call = Call::new(
            Method::HEAD,
            format!("{url}/v2/r/blobs/sha256:00"),
            vec!["repository:r:pull,push".into()],
        );
        let err = client.send(&call, true).await.unwrap_err();
        assert!(
            matches!(&err, PushError::Unauthorized { url, status: 401, .. } if url.ends_with("/token")),
            "{err}"
        );
        assert!(err.is_fatal());
        assert!(!err.to_string().contains("wrong"), "{err}");
        assert_eq!(seen.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn endpoints_parse_scheme_host_and_prefix() {
        let e = Endpoint::parse("https://harbor.site:8443/mirror/").unwrap();
        assert_eq!(
            (e.scheme.as_str(), e.authority.as_str(), e.prefix.as_str()),
            ("https", "harbor.site:8443", "mirror")
        );
        assert_eq!(e.to_string(), "https://harbor.site:8443/mirror");
        let e = Endpoint::parse("harbor.site").unwrap();
        assert_eq!((e.scheme.as_str(), e.prefix.as_str()), ("https", ""));
        assert_eq!(
            e.resolve("/v2/a/blobs/uploads/x?_state=1"),
            "https://harbor.site/v2/a/blobs/uploads/x?_state=1"
        );
        for bad in [
            "ftp://x",
            "https://",
            "https://u:p@host/x",
            "https://host/Upper",
            "https://host/a//b",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(PushError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_busy_or_broken_statuses_are_retried() {
        for s in [500, 502, 503, 408, 413, 429] {
            assert!(retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 201, 202, 400, 401, 403, 404, 416] {
            assert!(!retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
