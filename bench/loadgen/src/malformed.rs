//! The malformed stream: requests no client should send, written as raw bytes (an HTTP
//! client refuses to send most of them), and slow-loris connections that never finish
//! their request head. Only the answer's status code is read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::valid::Plan;
use crate::Config;

/// How a malformed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// An answer with this status.
    Status(u16),
    /// The server closed the connection without an answer.
    Closed,
    /// Neither an answer nor a close in time.
    Timeout,
    /// The connection could not be made.
    Refused,
    /// A slow-loris connection still open when the run ended.
    Held,
}

impl Outcome {
    fn label(self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Closed => "closed".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Refused => "refused".into(),
            Outcome::Held => "held".into(),
        }
    }

    fn is_4xx(self) -> bool {
        matches!(self, Outcome::Status(400..=499))
    }
}

/// What a kind of malformed request may be answered with.
#[derive(Debug, Clone, Copy)]
enum Allowed {
    /// A 4xx.
    Refuse,
    /// A 4xx, or a closed connection (the request is not HTTP enough to answer).
    RefuseOrDrop,
    /// A 4xx or 200: syntax a server may ignore (RFC 9110 lets a server ignore `Range`;
    /// distribution ignores `ns`).
    IgnoreOrRefuse,
}

impl Allowed {
    fn admits(self, o: Outcome) -> bool {
        match self {
            Allowed::Refuse => o.is_4xx(),
            Allowed::RefuseOrDrop => o.is_4xx() || o == Outcome::Closed,
            Allowed::IgnoreOrRefuse => o.is_4xx() || o == Outcome::Status(200),
        }
    }
}

/// Every kind of malformed request, in the order the workers cycle through them.
pub const MALFORMED_KINDS: [&str; 21] = [
    "bad-digest",
    "short-digest",
    "unknown-digest",
    "dotdot-path",
    "dotdot-name",
    "dotdot-encoded",
    "bad-escape",
    "bad-tag",
    "bad-ns",
    "huge-header",
    "many-headers",
    "range-beyond-end",
    "range-garbage",
    "range-reversed",
    "unknown-method",
    "put-manifest",
    "delete-blob",
    "garbage-bytes",
    "bad-request-line",
    "bad-version",
    "nul-in-header",
];

/// The bytes of malformed request `kind` and what may answer it.
fn build(kind: &str, plan: &Plan, rng: &mut SmallRng) -> (Vec<u8>, Allowed) {
    let blob = plan.smallest_blob();
    let top = &plan.images[rng.random_range(0..plan.images.len())].top;
    // The repository part of a real blob URI, and its query (`?ns=...` or empty).
    let (path, query) = blob.uri.split_once('?').unwrap_or((&blob.uri, ""));
    let repo_base = path
        .rsplit_once("/blobs/")
        .map_or("/v2/library/x", |(r, _)| r);
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: registry\r\n{extra}Connection: close\r\n\r\n")
            .into_bytes()
    };
    use Allowed::*;
    match kind {
        "bad-digest" => (get(&format!("{repo_base}/blobs/sha256:{}{q}", "z".repeat(64)), ""), Refuse),
        "short-digest" => (get(&format!("{repo_base}/blobs/sha256:abc{q}"), ""), Refuse),
        "unknown-digest" => (get(&format!("{repo_base}/blobs/sha256:{}{q}", "0".repeat(64)), ""), Refuse),
        "dotdot-path" => (get("/v2/../../../../etc/passwd", ""), RefuseOrDrop),
        "dotdot-name" => (get(&format!("/v2/library/../../../etc/manifests/1{q}"), ""), Refuse),
        "dotdot-encoded" => {
            let digest = path.rsplit('/').next().unwrap_or_default();
            (get(&format!("/v2/%2e%2e/%2e%2e/etc/blobs/{digest}{q}"), ""), Refuse)
        }
        "bad-escape" => (get(&format!("/v2/%zz%c3%28/manifests/1{q}"), ""), Refuse),
        "bad-tag" => {
            let (p, _) = top.uri.split_once('?').unwrap_or((&top.uri, ""));
            let base = p.rsplit_once("/manifests/").map_or("/v2/x", |(b, _)| b);
            (get(&format!("{base}/manifests/!!{}!!{q}", "-".repeat(200)), ""), Refuse)
        }
        "bad-ns" => {
            let (p, _) = top.uri.split_once('?').unwrap_or((&top.uri, ""));
            (get(&format!("{p}?ns=evil%2F..%2F..%2Fhost"), ""), IgnoreOrRefuse)
        }
        "huge-header" => {
            let filler = format!("X-Filler: {}\r\n", "a".repeat(100 << 10));
            (get("/v2/", &filler), RefuseOrDrop)
        }
        "many-headers" => {
            let headers: String = (0..4000).map(|i| format!("X-H{i}: v\r\n")).collect();
            (get("/v2/", &headers), RefuseOrDrop)
        }
        "range-beyond-end" => {
            let r = format!("Range: bytes={}-\r\n", blob.content.len() + 10);
            (get(&blob.uri, &r), IgnoreOrRefuse)
        }
        "range-garbage" => (get(&blob.uri, "Range: bytes=zz-yy,,-\r\n"), IgnoreOrRefuse),
        "range-reversed" => (get(&blob.uri, "Range: bytes=9-2\r\n"), IgnoreOrRefuse),
        "unknown-method" => (
            b"BREW /v2/ HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n".to_vec(),
            Refuse,
        ),
        "put-manifest" => (
            format!("PUT {} HTTP/1.1\r\nHost: registry\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", top.uri)
                .into_bytes(),
            Refuse,
        ),
        "delete-blob" => (
            format!("DELETE {} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n", blob.uri).into_bytes(),
            Refuse,
        ),
        "garbage-bytes" => {
            let mut b = vec![0u8; rng.random_range(1..4096)];
            rng.fill(&mut b[..]);
            b.extend_from_slice(b"\r\n\r\n");
            (b, RefuseOrDrop)
        }
        "bad-request-line" => (b"GET\r\nHost: registry\r\n\r\n".to_vec(), RefuseOrDrop),
        "bad-version" => (b"GET /v2/ HTTP/7.3\r\nHost: registry\r\n\r\n".to_vec(), RefuseOrDrop),
        "nul-in-header" => (get("/v2/", "X-A: a\0b\r\n"), RefuseOrDrop),
        other => unreachable!("unknown malformed kind {other}"),
    }
}

/// Sends `bytes` on a new connection and reads until the server closes it.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Outcome {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    else {
        return Outcome::Refused;
    };
    let io = async {
        // A server may answer (431) and close before the whole request is written.
        let _ = s.write_all(bytes).await;
        let mut head = Vec::new();
        let mut buf = [0u8; 16 << 10];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) if head.len() < 64 => head.extend_from_slice(&buf[..n]),
                Ok(_) => {}
            }
        }
        head
    };
    let Ok(head) = tokio::time::timeout(Duration::from_secs(20), io).await else {
        return Outcome::Timeout;
    };
    // The status code of "HTTP/1.x NNN ...", the only part of the answer read.
    let status = head
        .strip_prefix(b"HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok());
    match status {
        Some(code) => Outcome::Status(code),
        None => Outcome::Closed,
    }
}

/// Counts of outcomes.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Requests sent.
    pub total: u64,
    /// Kind → outcome label → count.
    pub by_kind: BTreeMap<String, BTreeMap<String, u64>>,
    /// Outcomes the kind does not allow.
    pub unexpected: u64,
    /// The first of those.
    pub samples: Vec<String>,
}

impl Outcomes {
    fn add(&mut self, kind: &str, o: Outcome, allowed: bool) {
        self.total += 1;
        *self
            .by_kind
            .entry(kind.to_owned())
            .or_default()
            .entry(o.label())
            .or_default() += 1;
        if !allowed {
            self.unexpected += 1;
            if self.samples.len() < 10 {
                self.samples.push(format!("{kind}: {}", o.label()));
            }
        }
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: Outcomes) {
        self.total += other.total;
        self.unexpected += other.unexpected;
        for (k, m) in other.by_kind {
            let mine = self.by_kind.entry(k).or_default();
            for (label, n) in m {
                *mine.entry(label).or_default() += n;
            }
        }
        for s in other.samples {
            if self.samples.len() < 10 {
                self.samples.push(s);
            }
        }
    }
}

/// Sends malformed requests back to back, cycling through [`MALFORMED_KINDS`], until
/// `deadline`.
pub async fn worker(cfg: &Config, plan: &Plan, id: u64, deadline: Instant) -> Outcomes {
    let mut rng = SmallRng::seed_from_u64(cfg.seed.wrapping_add(1000 + id));
    let mut out = Outcomes::default();
    let mut i = id as usize * 7;
    while Instant::now() < deadline {
        let kind = MALFORMED_KINDS[i % MALFORMED_KINDS.len()];
        i += 1;
        let (bytes, allowed) = build(kind, plan, &mut rng);
        let o = exchange(cfg.addr, &bytes).await;
        out.add(kind, o, allowed.admits(o));
    }
    out
}

/// Keeps `cfg.slowloris` connections that send a request head one header line per second
/// and never end it; a connection the server closes is replaced. Returns the outcomes, how
/// many the server closed, and how long it kept each of those open.
pub async fn slowloris(cfg: &Config, deadline: Instant) -> (Outcomes, u64, Vec<Duration>) {
    let mut tasks = Vec::new();
    for _ in 0..cfg.slowloris {
        let addr = cfg.addr;
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            while Instant::now() < deadline {
                let start = Instant::now();
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    results.push((Outcome::Refused, start.elapsed()));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut line = 0u64;
                let mut outcome = Outcome::Held;
                if s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n").await.is_err() {
                    outcome = Outcome::Closed;
                }
                let mut buf = [0u8; 256];
                while outcome == Outcome::Held && Instant::now() < deadline {
                    tokio::select! {
                        r = s.read(&mut buf) => {
                            outcome = match r {
                                Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1.") => std::str::from_utf8(&buf[9..12])
                                    .ok()
                                    .and_then(|c| c.parse().ok())
                                    .map_or(Outcome::Closed, Outcome::Status),
                                _ => Outcome::Closed,
                            };
                        }
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            line += 1;
                            if s.write_all(format!("X-Slow-{line}: 1\r\n").as_bytes()).await.is_err() {
                                outcome = Outcome::Closed;
                            }
                        }
                    }
                }
                results.push((outcome, start.elapsed()));
            }
            results
        }));
    }
    let mut out = Outcomes::default();
    let (mut closed, mut holds) = (0, Vec::new());
    for t in tasks {
        for (o, held) in t.await.expect("a slow-loris task does not panic") {
            // Closing (or answering 408) is the defence; holding until the end of a short
            // run is not wrong either. Refusing the connection is.
            let ok = o == Outcome::Held || o == Outcome::Closed || o.is_4xx();
            if o == Outcome::Closed || o.is_4xx() {
                closed += 1;
                holds.push(held);
            }
            out.add("slowloris", o, ok);
        }
    }
    (out, closed, holds)
}
