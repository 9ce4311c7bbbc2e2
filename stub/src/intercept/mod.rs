//! The TLS-intercepting pull proxy: how a stock Docker Engine (classic image store) pulls
//! `example.hub/team/app:1.0` from the installer, since its `registry-mirrors` covers
//! docker.io only.
//!
//! Docker sends registry traffic through `HTTPS_PROXY` as `CONNECT host:443`. The proxy
//! answers `200` only for the upstream hosts the installer holds images for (one leaf
//! certificate each, signed by the installer's CA, see [`ca`]), terminates TLS with that
//! leaf and hands every request inside the tunnel to the installer's [`Registry`] with the
//! host as the namespace (`?ns=<host>`), exactly as if containerd had sent it through a
//! mirror. Every other `CONNECT` is refused at once with `403` and a logged reason: in an
//! air-gapped site nothing else is reachable, and a failed pull must fail fast.
//!
//! Limits: the `CONNECT` head must arrive within [`ProxyOptions::header_read_timeout`] and
//! fit in [`ProxyOptions::max_buf_size`] (hyper answers `431` or closes); the TLS handshake
//! must finish within [`ProxyOptions::handshake_timeout`]; at most
//! [`ProxyOptions::max_connections`] connections are served at once. A client that breaks
//! any of these loses its own connection only.
//!
//! Files: [`Interceptor::load_dir`] reads the leaves the install step wrote
//! (`<dir>/hosts/<host>.crt` and `.key`, see [`leaf_paths`]); the CA key is never read by
//! the proxy.

pub mod ca;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_oci::{accept_loop, serve_connection, AcceptLimits, ServeOptions};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::registry::{Body, Registry, DEFAULT_NAMESPACE};

pub use ca::{Authority, CaError, CertPem};

/// The folder of leaf certificates inside the proxy's folder.
pub const LEAF_DIR: &str = "hosts";

/// What can go wrong while loading the proxy's certificates.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// A certificate or key file could not be read.
    #[error("failed to read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{} holds no PEM {what}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// rustls refused a certificate and key pair.
    #[error("failed to set up TLS for {host}")]
    Tls {
        /// The upstream host of the leaf.
        host: String,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The folder holds no leaf at all: the proxy would refuse everything.
    #[error("no leaf certificates in {}", .0.display())]
    NoLeaves(PathBuf),
}

/// `s` cut to a length fit for a log line (a CONNECT target can be kilobytes long).
fn echo(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The leaf certificate and key files of upstream `host`, relative to the proxy's folder.
pub fn leaf_paths(host: &str) -> (String, String) {
    (
        format!("{LEAF_DIR}/{host}.crt"),
        format!("{LEAF_DIR}/{host}.key"),
    )
}

/// The namespace a `CONNECT` target means: `quay.io:443` → `quay.io`,
/// `registry.local:5000` → itself, Docker Hub's hosts → `docker.io`. `None` when the
/// target has no port (the authority form requires one).
pub fn namespace_of(authority: &str) -> Option<String> {
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let ns = match (host.as_str(), port) {
        ("registry-1.docker.io" | "index.docker.io" | "docker.io", "443") => {
            DEFAULT_NAMESPACE.to_owned()
        }
        (h, "443") => h.to_owned(),
        (h, p) => format!("{h}:{p}"),
    };
    Some(ns)
}

/// The hosts the proxy intercepts, each with the TLS setup of its leaf certificate.
pub struct Interceptor {
    hosts: BTreeMap<String, Arc<ServerConfig>>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("hosts", &self.hosts.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Interceptor {
    /// An interceptor for `(namespace, leaf)` pairs given in PEM.
    pub fn new<'a>(
        leaves: impl IntoIterator<Item = (&'a str, &'a CertPem)>,
    ) -> Result<Interceptor, InterceptError> {
        let mut hosts = BTreeMap::new();
        for (host, pem) in leaves {
            let where_ = || PathBuf::from(format!("the leaf of {host}"));
            let chain = parse_certs(pem.cert.as_bytes(), &where_())?;
            let key = parse_key(pem.key.as_bytes(), &where_())?;
            hosts.insert(host.to_owned(), server_config(host, chain, key)?);
        }
        Ok(Interceptor { hosts })
    }

    /// Loads every `hosts/<host>.crt` (with its `.key`) from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Interceptor, InterceptError> {
        let leaf_dir = dir.join(LEAF_DIR);
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| InterceptError::Read { path, source }
        };
        let mut hosts = BTreeMap::new();
        for entry in std::fs::read_dir(&leaf_dir).map_err(read_err(&leaf_dir))? {
            let entry = entry.map_err(read_err(&leaf_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(host) = name.strip_suffix(".crt") else {
                continue;
            };
            let (cert_rel, key_rel) = leaf_paths(host);
            let (cert_path, key_path) = (dir.join(cert_rel), dir.join(key_rel));
            let cert = std::fs::read(&cert_path).map_err(read_err(&cert_path))?;
            let key = std::fs::read(&key_path).map_err(read_err(&key_path))?;
            let chain = parse_certs(&cert, &cert_path)?;
            let key = parse_key(&key, &key_path)?;
            hosts.insert(host.to_owned(), server_config(host, chain, key)?);
        }
        if hosts.is_empty() {
            return Err(InterceptError::NoLeaves(leaf_dir));
        }
        Ok(Interceptor { hosts })
    }

    /// The intercepted namespaces, sorted.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    /// The namespace and TLS setup for a `CONNECT` target, when it is intercepted.
    fn lookup(&self, authority: &str) -> Option<(String, Arc<ServerConfig>)> {
        let ns = namespace_of(authority)?;
        let config = self.hosts.get(&ns)?.clone();
        Some((ns, config))
    }
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, InterceptError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| InterceptError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
        })?;
    if chain.is_empty() {
        return Err(InterceptError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(chain)
}

fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, InterceptError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| InterceptError::Pem {
        path: path.to_path_buf(),
        what: "private key",
    })
}

fn server_config(
    host: &str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, InterceptError> {
    let tls = |source| InterceptError::Tls {
        host: host.to_owned(),
        source,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first, and our order wins over the client's: a layer is gigabytes, and
    // 128-bit AES costs both ends ~10-15 % less CPU per byte than the AES-256 most clients
    // list first (10 rounds, not 14); every suite of the default set stays allowed.
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        )
    });
    let provider = Arc::new(provider);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Limits and timeouts of [`serve_proxy`].
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Time a client has to send a complete request head (the `CONNECT`, and each request
    /// inside the tunnel).
    pub header_read_timeout: Duration,
    /// Time from the `200` answer to a `CONNECT` to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// Largest request head; larger ones get `431` or a closed connection.
    pub max_buf_size: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long tunnels in flight may take to finish after shutdown begins.
    pub grace: Duration,
}

impl ProxyOptions {
    /// The HTTP limits of one connection inside a tunnel.
    fn http(&self) -> ServeOptions {
        ServeOptions {
            header_read_timeout: self.header_read_timeout,
            max_buf_size: self.max_buf_size,
            max_connections: self.max_connections,
            grace: self.grace,
        }
    }
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_buf_size: 16 << 10,
            max_connections: 1024,
            grace: Duration::from_secs(30),
        }
    }
}

/// A short plain-text answer that closes the connection.
fn refusal(status: StatusCode, text: String) -> Response<Body> {
    let len = text.len();
    let mut resp = Response::new(Body::full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A tunnel the proxy agreed to: hyper's upgrade and the namespace it serves.
type Tunnel = (hyper::upgrade::OnUpgrade, String, Arc<ServerConfig>);

/// Answers one request on the proxy port: `200` to an intercepted `CONNECT` (the tunnel is
/// handed to `tunnels`), `403` to any other `CONNECT`, `405` to anything else.
fn answer(
    interceptor: &Interceptor,
    mut req: Request<Incoming>,
    peer: std::net::SocketAddr,
    tunnels: &mpsc::Sender<Tunnel>,
) -> Response<Body> {
    if req.method() != Method::CONNECT {
        tracing::warn!(%peer, method = %req.method(), "refused a request that is not CONNECT");
        return refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "airlock pull proxy: only CONNECT is served here\n".into(),
        );
    }
    let target = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let Some((ns, config)) = interceptor.lookup(&target) else {
        let held: Vec<&str> = interceptor.hosts().collect();
        tracing::warn!(
            %peer,
            target = %echo(&target),
            "refused CONNECT: this installer holds no images from that host (it serves {})",
            held.join(", ")
        );
        return refusal(
            StatusCode::FORBIDDEN,
            format!(
                "airlock pull proxy: CONNECT {} refused: this installer holds no images from \
                 that host\n",
                echo(&target)
            ),
        );
    };
    let upgrade = hyper::upgrade::on(&mut req);
    if tunnels.try_send((upgrade, ns, config)).is_err() {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "airlock pull proxy: one tunnel per connection\n".into(),
        );
    }
    Response::new(Body::empty())
}

/// `req` with `?ns=<ns>` in front of its own query (any `ns` it had is dropped).
fn with_namespace<B>(req: &Request<B>, ns: &str) -> Request<()> {
    let mut query = format!("ns={ns}");
    for pair in req.uri().query().unwrap_or_default().split('&') {
        if !pair.is_empty() && pair != "ns" && !pair.starts_with("ns=") {
            query.push('&');
            query.push_str(pair);
        }
    }
    let uri: Uri = format!("{}?{query}", req.uri().path())
        .parse()
        .unwrap_or_else(|_| req.uri().clone());
    let mut out = Request::new(());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = uri;
    *out.headers_mut() = req.headers().clone();
    out
}

/// Serves the requests inside one accepted tunnel from `registry`, namespace `ns`.
async fn serve_tunnel(
    upgraded: hyper::upgrade::Upgraded,
    ns: String,
    config: Arc<ServerConfig>,
    registry: Arc<Registry>,
    opts: &ProxyOptions,
    stop: &mut watch::Receiver<()>,
    peer: std::net::SocketAddr,
) {
    let acceptor = TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(
        opts.handshake_timeout,
        acceptor.accept(TokioIo::new(upgraded)),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(%peer, %ns, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, %ns, "TLS handshake not done after {:?}; closed", opts.handshake_timeout);
            return;
        }
    };
    let service = service_fn(move |req: Request<Incoming>| {
        let registry = registry.clone();
        let inner = with_namespace(&req, &ns);
        async move {
            let resp = registry.handle(&inner);
            tracing::debug!(
                method = %inner.method(),
                path = %echo(inner.uri().path_and_query().map_or("", |p| p.as_str())),
                status = resp.status().as_u16(),
                "proxied request"
            );
            Ok::<_, Infallible>(resp)
        }
    });
    let result = serve_connection(TokioIo::new(tls), service, &opts.http(), stop).await;
    if let Err(e) = result {
        tracing::debug!(%peer, "tunnel ended: {e}");
    }
}

/// Serves the pull proxy on `listener` until `shutdown` completes, then lets tunnels in
/// flight finish for at most [`ProxyOptions::grace`] and returns.
pub async fn serve_proxy(
    listener: TcpListener,
    registry: Arc<Registry>,
    interceptor: Arc<Interceptor>,
    opts: ProxyOptions,
    shutdown: impl Future<Output = ()>,
) {
    let limits = AcceptLimits {
        max_connections: opts.max_connections,
        grace: opts.grace,
    };
    accept_loop(listener, limits, shutdown, move |stream, peer, mut stop| {
        let (registry, interceptor, opts) = (registry.clone(), interceptor.clone(), opts.clone());
        async move {
            let (tx, mut rx) = mpsc::channel::<Tunnel>(1);
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = answer(&interceptor, req, peer, &tx);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(opts.header_read_timeout)
                .max_buf_size(opts.max_buf_size)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "proxy connection ended: {e}");
                return;
            }
            let Ok((upgrade, ns, config)) = rx.try_recv() else {
                return;
            };
            match upgrade.await {
                Ok(upgraded) => {
                    serve_tunnel(upgraded, ns, config, registry, &opts, &mut stop, peer).await
                }
                Err(e) => tracing::debug!(%peer, "CONNECT upgrade failed: {e}"),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests;
