//! The readiness step of `install`: the registry service counts as up once `GET /v2/`
//! answers 200 on the address it listens on. The probe is one plain-HTTP request through
//! hyper's HTTP/1 client (no hand-written HTTP), polled until it succeeds, the service dies,
//! or the timeout passes.
//!
//! It depends on nothing else of the install modules: the caller says how to tell that the
//! service still runs and where its log is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::{Error, Result};

/// How long the registry gets to answer `GET /v2/` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one probe waits for the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one probe waits for the response head once connected.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why one `GET /v2/` got no status code.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The async runtime for the client could not be built.
    #[error("failed to start the HTTP client runtime")]
    Runtime(#[source] std::io::Error),
    /// The TCP connection failed.
    #[error("failed to connect")]
    Connect(#[source] std::io::Error),
    /// The TCP connection did not complete in time.
    #[error("connection timed out after {} s", .0.as_secs())]
    ConnectTimeout(Duration),
    /// The request could not be built (an address hyper does not accept as a host).
    #[error("failed to build the request")]
    Request(#[source] hyper::http::Error),
    /// The HTTP exchange failed: the connection closed without a response, or the answer
    /// is not HTTP.
    #[error("failed to read an HTTP response")]
    Http(#[source] hyper::Error),
    /// No response head arrived in time.
    #[error("no response within {} s", .0.as_secs())]
    ResponseTimeout(Duration),
}

/// The address to poll for an address the registry listens on (unspecified → loopback).
pub fn poll_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// A current-thread runtime for the probes (install itself is synchronous).
fn runtime() -> std::result::Result<Runtime, ProbeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(ProbeError::Runtime)
}

/// One `GET /v2/` over plain HTTP/1.1: the status code, or why there is none.
pub fn probe_v2(addr: SocketAddr) -> std::result::Result<u16, ProbeError> {
    runtime()?.block_on(probe_on(addr))
}

async fn probe_on(addr: SocketAddr) -> std::result::Result<u16, ProbeError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| ProbeError::ConnectTimeout(CONNECT_TIMEOUT))?
        .map_err(ProbeError::Connect)?;
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ProbeError::Http)?;
        let request = Request::get("/v2/")
            .header(HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(ProbeError::Request)?;
        // The connection is driven by its own task; the answer's head is all we read, and
        // the task ends with the runtime.
        let driver = tokio::spawn(conn);
        let response = sender.send_request(request).await;
        driver.abort();
        Ok(response.map_err(ProbeError::Http)?.status().as_u16())
    };
    tokio::time::timeout(RESPONSE_TIMEOUT, exchange)
        .await
        .map_err(|_| ProbeError::ResponseTimeout(RESPONSE_TIMEOUT))?
}

/// Polls `GET http://ADDR/v2/` until it answers 200. `alive` says whether the service still
/// runs (a dead daemon fails at once); `log` names where its output goes.
pub fn wait_ready(
    listen: SocketAddr,
    timeout: Duration,
    alive: &dyn Fn() -> bool,
    log: &str,
) -> Result<Duration> {
    let addr = poll_addr(listen);
    let start = Instant::now();
    let rt = runtime().map_err(|e| Error::RegistryNotReady {
        addr,
        waited: timeout,
        detail: chain(&e),
        log: log.to_owned(),
    })?;
    let mut detail;
    loop {
        detail = match rt.block_on(probe_on(addr)) {
            Ok(200) => return Ok(start.elapsed()),
            Ok(code) => format!("it answered {code}"),
            Err(e) => chain(&e),
        };
        if !alive() {
            detail = format!("the registry process exited; last attempt: {detail}");
            break;
        }
        if start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::RegistryNotReady {
        addr,
        waited: timeout,
        detail,
        log: log.to_owned(),
    })
}

/// `e` and its causes, `: `-separated, for the one-line detail of [`Error::RegistryNotReady`].
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn probe_v2_reads_the_status_of_a_plain_http_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /v2/ HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .unwrap();
        });
        assert_eq!(probe_v2(addr).unwrap(), 200);
        server.join().unwrap();
    }

    #[test]
    fn an_answer_that_is_not_http_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        });
        let err = probe_v2(addr).unwrap_err();
        assert!(matches!(err, ProbeError::Http(_)), "{err:?}");
        server.join().unwrap();
    }

    #[test]
    fn a_registry_that_never_answers_fails_naming_its_log() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = wait_ready(
            addr,
            Duration::from_millis(300),
            &|| true,
            "/r/var/lib/airlock/x.log",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/r/var/lib/airlock/x.log"), "{text}");
        assert!(text.contains(&format!("http://{addr}/v2/")), "{text}");
    }

    #[test]
    fn unspecified_listen_addresses_are_polled_on_loopback() {
        assert_eq!(
            poll_addr("0.0.0.0:5000".parse().unwrap()),
            "127.0.0.1:5000".parse().unwrap()
        );
        assert_eq!(
            poll_addr("[::]:5000".parse().unwrap()),
            "[::1]:5000".parse().unwrap()
        );
    }
}
