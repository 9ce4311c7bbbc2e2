//! Hostile requests for tests of any server built on [`crate::serve`] (feature
//! `testutil`): oversized heads, a head that never ends, and a check that the server still
//! answers afterwards. The stub's registry and the builder's capture proxy both run
//! [`assert_refuses_hostile_requests`], so their guards cannot drift apart again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` and reads until the server closes (or 5 s pass, which fails).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the server");
    // The server may close before everything is written (oversized heads).
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    out
}

/// The status line and headers of `response`, lowercase.
pub fn head_of(response: &[u8]) -> String {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    String::from_utf8_lossy(&response[..end]).to_lowercase()
}

/// Asserts that the server at `addr` (serving `GET /v2/` with 200, with the default head
/// limit of 64 KiB and a header read timeout under `header_timeout`) refuses oversized
/// request heads with `431` or a closed connection, drops a head that never ends, serves a
/// head just under the limit, and still answers after all of that.
pub async fn assert_refuses_hostile_requests(addr: SocketAddr, header_timeout: Duration) {
    let ok = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let r = exchange(addr, ok).await;
    let h = head_of(&r);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(
        h.contains("docker-distribution-api-version: registry/2.0"),
        "{h}"
    );
    assert!(r.ends_with(b"{}"));

    // 100 KiB of headers: 431 or a closed connection, never an answer.
    let mut big = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..1000 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(90)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    assert!(big.len() > 100 << 10);
    let r = exchange(addr, &big).await;
    let h = head_of(&r);
    assert!(r.is_empty() || h.starts_with("http/1.1 431"), "{h}");

    // Regression (bench/load.sh's malformed stream, then issue 10 for the capture proxy):
    // one 100 KiB header in one write got 200, because hyper checks its buffer limit only
    // while a head is incomplete.
    let one = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(100 << 10)
    );
    let r = exchange(addr, one.as_bytes()).await;
    let h = head_of(&r);
    assert!(r.is_empty() || h.starts_with("http/1.1 431"), "{h}");
    // Just under the limit is still served.
    let fits = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(60 << 10)
    );
    let h = head_of(&exchange(addr, fits.as_bytes()).await);
    assert!(h.starts_with("http/1.1 200"), "{h}");

    // A head that never ends is dropped after the header timeout.
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr)
        .await
        .expect("connect to the server");
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write a partial head");
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "a slow client kept its connection");
    assert!(started.elapsed() < header_timeout + Duration::from_secs(3));

    // And the server is still up.
    let h = head_of(&exchange(addr, ok).await);
    assert!(
        h.starts_with("http/1.1 200"),
        "the server stopped answering: {h}"
    );
}
