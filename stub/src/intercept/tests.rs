//! Proxy tests over real sockets: tunnels to held hosts reach the registry through TLS that
//! verifies against the installer's CA; everything else is refused or closed, fast, and
//! never stops the proxy serving other clients.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use airlock_payload::Installer;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::*;
use crate::testutil::{installer_with_images, ImageSpec};

struct Fixture {
    bytes: &'static [u8],
    quay: ImageSpec,
    hub: ImageSpec,
    ca: String,
    leaves: Vec<(String, CertPem)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let quay = ImageSpec::sample("quay.io", "team/tool", "2.0", 1, 1000, 2000);
        let hub = ImageSpec::sample("docker.io", "library/app", "1", 2, 300, 400);
        let ported = ImageSpec::sample("registry.local:5000", "a/b", "1", 3, 100, 200);
        let bytes = installer_with_images(&[quay.clone(), hub.clone(), ported]).leak();
        let ca = Authority::generate("test").unwrap();
        // docker.io's leaf comes from the CA as a re-run loads it: it must chain to the
        // certificate stored by the first run.
        let reloaded = Authority::load("test", &ca.to_pem()).unwrap();
        let leaves = vec![
            ("quay.io".to_owned(), ca.issue("quay.io").unwrap()),
            ("docker.io".to_owned(), reloaded.issue("docker.io").unwrap()),
            (
                "registry.local:5000".to_owned(),
                ca.issue("registry.local:5000").unwrap(),
            ),
        ];
        Fixture {
            bytes,
            quay,
            hub,
            ca: ca.cert_pem().to_owned(),
            leaves,
        }
    })
}

fn interceptor() -> Interceptor {
    let f = fixture();
    Interceptor::new(f.leaves.iter().map(|(h, p)| (h.as_str(), p))).unwrap()
}

fn fast() -> ProxyOptions {
    ProxyOptions {
        header_read_timeout: Duration::from_millis(500),
        handshake_timeout: Duration::from_millis(400),
        grace: Duration::from_secs(1),
        ..ProxyOptions::default()
    }
}

/// Starts the proxy on a free port; returns its address.
async fn start(opts: ProxyOptions) -> std::net::SocketAddr {
    let registry = Registry::new(
        Installer::open(fixture().bytes, None)
            .unwrap()
            .load_index()
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_proxy(
        listener,
        Arc::new(registry),
        Arc::new(interceptor()),
        opts,
        std::future::pending(),
    ));
    addr
}

/// Reads until the end of a response head (or EOF); returns it as text.
async fn read_head(s: &mut (impl AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn connect(addr: std::net::SocketAddr, target: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    (s, head)
}

fn client_config() -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(fixture().ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// GET `path` inside a TLS tunnel to `target` verified as `name`; returns the head.
async fn get_through(addr: std::net::SocketAddr, target: &str, name: &str, path: &str) -> String {
    let (s, head) = connect(addr, target).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let connector = TlsConnector::from(client_config());
    let server = ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = connector.connect(server, s).await.expect("TLS handshake");
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {name}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_head(&mut tls).await
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn a_tunnel_to_a_held_host_serves_its_images_over_verified_tls() {
    let addr = start(fast()).await;
    let head = get_through(
        addr,
        "quay.io:443",
        "quay.io",
        "/v2/team/tool/manifests/2.0",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "docker-content-digest"),
        Some(fixture().quay.digest().to_string().as_str())
    );
    assert_eq!(header(&head, "oci-namespace"), Some("quay.io"));
    // The same repository name under docker.io is not quay.io's.
    let head = get_through(
        addr,
        "quay.io:443",
        "quay.io",
        "/v2/library/app/manifests/1",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[tokio::test]
async fn tunnels_use_aes_128_gcm_even_when_the_client_lists_aes_256_first() {
    let addr = start(fast()).await;
    let (s, head) = connect(addr, "quay.io:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let config = client_config();
    let first = config.crypto_provider().cipher_suites[0].suite();
    assert_eq!(
        first,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        "the client's order"
    );
    let server = ServerName::try_from("quay.io".to_owned()).unwrap();
    let tls = TlsConnector::from(config).connect(server, s).await.unwrap();
    let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
}

#[tokio::test]
async fn docker_hub_tunnels_are_the_docker_io_namespace() {
    let addr = start(fast()).await;
    for host in ["registry-1.docker.io", "index.docker.io"] {
        let head = get_through(
            addr,
            &format!("{host}:443"),
            host,
            "/v2/library/app/manifests/1",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{host}: {head}");
        assert_eq!(
            header(&head, "docker-content-digest"),
            Some(fixture().hub.digest().to_string().as_str())
        );
        assert_eq!(header(&head, "oci-namespace"), Some("docker.io"));
    }
    // A host with a port keeps it in the namespace; its certificate names the bare host.
    let head = get_through(
        addr,
        "registry.local:5000",
        "registry.local",
        "/v2/a/b/manifests/1",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn connect_to_a_host_the_installer_does_not_hold_is_refused_at_once() {
    let addr = start(fast()).await;
    for target in ["github.com:443", "quay.io:80", "example.hub:443", "quay.io"] {
        let start = Instant::now();
        let (_s, head) = connect(addr, target).await;
        assert!(
            head.starts_with("HTTP/1.1 403") || head.starts_with("HTTP/1.1 400"),
            "{target}: {head}"
        );
        assert!(start.elapsed() < Duration::from_millis(300), "{target}");
    }
    let (_s, head) = connect(addr, "github.com:443").await;
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
}

#[tokio::test]
async fn requests_that_are_not_connect_get_405() {
    let addr = start(fast()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET http://quay.io/v2/ HTTP/1.1\r\nHost: quay.io\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
}

/// After each hostile client, a well-behaved one is still served.
async fn still_serves(addr: std::net::SocketAddr) {
    let head = get_through(addr, "quay.io:443", "quay.io", "/v2/").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn an_oversized_connect_line_is_closed_and_others_are_still_served() {
    let addr = start(fast()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let long = "a".repeat(64 << 10);
    let _ = s
        .write_all(format!("CONNECT {long}.io:443 HTTP/1.1\r\n\r\n").as_bytes())
        .await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was not closed");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    still_serves(addr).await;
}

#[tokio::test]
async fn garbage_instead_of_tls_is_closed_and_others_are_still_served() {
    let addr = start(fast()).await;
    let (mut s, head) = connect(addr, "quay.io:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\x01garbage garbage")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the tunnel was not closed");
    // Garbage on the proxy port itself (no HTTP at all) is closed too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x16\x03\x01\x00\x05hello\r\n\r\n")
        .await
        .unwrap();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was not closed");
    still_serves(addr).await;
}

#[tokio::test]
async fn a_handshake_that_never_finishes_is_closed_after_the_timeout() {
    let addr = start(fast()).await;
    let (mut silent, head) = connect(addr, "quay.io:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A second client that starts a ClientHello and stalls.
    let (mut stalled, _) = connect(addr, "quay.io:443").await;
    stalled
        .write_all(b"\x16\x03\x01\x02\x00\x01")
        .await
        .unwrap();
    let start = Instant::now();
    still_serves(addr).await;
    for s in [&mut silent, &mut stalled] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "a stalled handshake was not closed");
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
}

#[test]
fn connect_targets_map_to_namespaces() {
    assert_eq!(namespace_of("quay.io:443").as_deref(), Some("quay.io"));
    assert_eq!(
        namespace_of("Registry-1.Docker.io:443").as_deref(),
        Some("docker.io")
    );
    assert_eq!(
        namespace_of("registry.local:5000").as_deref(),
        Some("registry.local:5000")
    );
    assert_eq!(namespace_of("quay.io"), None);
    assert_eq!(namespace_of(":443"), None);
    assert_eq!(namespace_of("quay.io:x"), None);
}

#[test]
fn the_namespace_replaces_any_ns_the_client_sent() {
    let req = Request::builder()
        .uri("/v2/team/tool/tags/list?ns=evil.io&n=2&last=a")
        .header("range", "bytes=0-1")
        .body(())
        .unwrap();
    let out = with_namespace(&req, "quay.io");
    assert_eq!(out.uri(), "/v2/team/tool/tags/list?ns=quay.io&n=2&last=a");
    assert_eq!(out.headers()["range"], "bytes=0-1");
    let plain = Request::builder().uri("/v2/").body(()).unwrap();
    assert_eq!(
        with_namespace(&plain, "docker.io").uri(),
        "/v2/?ns=docker.io"
    );
}

#[test]
fn leaves_load_from_a_folder_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Interceptor::load_dir(dir.path()),
        Err(InterceptError::Read { .. })
    ));
    std::fs::create_dir(dir.path().join(LEAF_DIR)).unwrap();
    assert!(matches!(
        Interceptor::load_dir(dir.path()),
        Err(InterceptError::NoLeaves(_))
    ));
    let (_, pem) = &fixture().leaves[0];
    let (crt, key) = leaf_paths("quay.io");
    std::fs::write(dir.path().join(&crt), &pem.cert).unwrap();
    std::fs::write(dir.path().join(&key), &pem.key).unwrap();
    let loaded = Interceptor::load_dir(dir.path()).unwrap();
    assert_eq!(loaded.hosts().collect::<Vec<_>>(), ["quay.io"]);
    std::fs::write(dir.path().join(&key), "no key here").unwrap();
    let err = Interceptor::load_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("quay.io.key"), "{err}");
}
