//! A load generator for OCI registries (the pull side of the distribution API): `clients`
//! concurrent pullers fetch every image again and again for a while, next to a stream of
//! malformed requests and slow-loris connections, and the registry process's memory is
//! sampled. Used by `bench/load.sh` (airlock against distribution) and by the short load
//! test in `tests/`.
//!
//! Valid traffic goes through hyper's HTTP/1 client, one keep-alive connection per client.
//! Every answer to a valid request is checked: status, `Content-Length`, and the body byte
//! for byte against the content fetched (and checked against its digest) before the run.
//! Malformed requests are written as raw bytes over TCP, because an HTTP client refuses to
//! send most of them; only the status code of the answer is read.
//!
//! [`run`] returns a [`Report`]: valid requests served, errors on them (with samples),
//! p50/p99 latency per kind, the status distribution of malformed requests and which of
//! them were answered in a way the catalogue does not allow, peak RSS, and whether the
//! registry is still alive afterwards.
#![deny(missing_docs)]

mod malformed;
mod valid;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use malformed::MALFORMED_KINDS;
pub use valid::{fetch_plan, Plan};

/// What can stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image name is not `NAME:REFERENCE[?QUERY]`.
    #[error("invalid image {0:?}: expected NAME:REFERENCE[?QUERY]")]
    ImageSyntax(String),
    /// The registry could not be reached or answered a setup request wrongly.
    #[error("failed to fetch {what}: {reason}")]
    Setup {
        /// The request.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// A fetched blob does not match its digest.
    #[error("{what} does not match its digest {digest}")]
    DigestMismatch {
        /// The request.
        what: String,
        /// The digest it should have.
        digest: String,
    },
    /// The async runtime could not start.
    #[error("failed to start the runtime")]
    Runtime(#[source] std::io::Error),
}

/// An image to pull: `/v2/<name>/manifests/<reference>` plus `?query` on every request
/// (`library/app:1?ns=docker.io` for airlock, `library/app:1` for distribution,
/// `NAME@sha256:...` by digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Repository path.
    pub name: String,
    /// Tag or digest.
    pub reference: String,
    /// Query string without `?`, may be empty.
    pub query: String,
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (main, query) = s.split_once('?').unwrap_or((s, ""));
        // `NAME@DIGEST`, or the tag after the last `:` that follows the last `/` (a name
        // may hold a registry port).
        let slash = main.rfind('/').map_or(0, |i| i + 1);
        let (name, reference) = match main.split_once('@') {
            Some(parts) => parts,
            None => match main[slash..].rfind(':') {
                Some(i) => (&main[..slash + i], &main[slash + i + 1..]),
                None => return Err(Error::ImageSyntax(s.to_owned())),
            },
        };
        if name.is_empty() || reference.is_empty() {
            return Err(Error::ImageSyntax(s.to_owned()));
        }
        Ok(ImageRef {
            name: name.to_owned(),
            reference: reference.to_owned(),
            query: query.to_owned(),
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The registry.
    pub addr: SocketAddr,
    /// The images every client pulls, each pull in this order.
    pub images: Vec<ImageRef>,
    /// Concurrent pullers.
    pub clients: usize,
    /// How long the load lasts.
    pub duration: Duration,
    /// Workers sending malformed requests back to back (0: none).
    pub malformed_workers: usize,
    /// Slow-loris connections held open at once (0: none).
    pub slowloris: usize,
    /// The registry's process, for memory samples and the liveness check.
    pub pid: Option<u32>,
    /// Seed of the random choices (ranges, malformed kinds, garbage bytes).
    pub seed: u64,
    /// A valid request with no complete answer after this long counts as an error.
    pub request_timeout: Duration,
}

impl Config {
    /// Defaults for `addr` and `images`: 64 clients for 60 s, 2 malformed workers, 16
    /// slow-loris connections.
    pub fn new(addr: SocketAddr, images: Vec<ImageRef>) -> Config {
        Config {
            addr,
            images,
            clients: 64,
            duration: Duration::from_secs(60),
            malformed_workers: 2,
            slowloris: 16,
            pid: None,
            seed: 1,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Latency of one kind of valid request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Requests answered correctly.
    pub count: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
}

impl Latency {
    fn of(mut micros: Vec<u32>) -> Latency {
        if micros.is_empty() {
            return Latency::default();
        }
        micros.sort_unstable();
        let at = |q: f64| {
            let i = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
            f64::from(micros[i]) / 1000.0
        };
        Latency {
            count: micros.len() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// The outcome of [`run`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Wall time of the load, seconds.
    pub seconds: f64,
    /// Concurrent pullers.
    pub clients: usize,
    /// Valid requests sent (served correctly + errors).
    pub valid_requests: u64,
    /// Valid requests answered wrongly or not at all: must be 0.
    pub valid_errors: u64,
    /// Up to 10 descriptions of such errors.
    pub error_samples: Vec<String>,
    /// Body bytes received for valid requests.
    pub bytes: u64,
    /// All valid requests answered correctly.
    pub latency: Latency,
    /// Per kind: `manifest`, `blob`, `head`, `range`.
    pub latency_by_kind: BTreeMap<String, Latency>,
    /// Complete pulls (every request of every image).
    pub pulls: u64,
    /// Malformed requests sent (slow-loris connections included).
    pub malformed: u64,
    /// Their outcomes: status code, `closed` (connection closed without an answer),
    /// `timeout`, `refused`; per malformed kind, outcome → count.
    pub malformed_outcomes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Malformed requests whose outcome the catalogue does not allow (a 5xx, a 2xx for a
    /// request that must fail, no answer): should be 0.
    pub malformed_unexpected: u64,
    /// Up to 10 descriptions of those.
    pub unexpected_samples: Vec<String>,
    /// Slow-loris connections the server closed before the end of the run.
    pub slowloris_closed: u64,
    /// Median time the server kept a slow-loris connection open before closing it, seconds.
    pub slowloris_hold_s: Option<f64>,
    /// Peak RSS of the registry process (`VmHWM`), KiB.
    pub peak_rss_kib: Option<u64>,
    /// RSS when the load started, KiB.
    pub start_rss_kib: Option<u64>,
    /// Largest sampled `VmRSS` during the run, KiB.
    pub max_sampled_rss_kib: Option<u64>,
    /// The process exists (and is no zombie) after the run and answers `GET /v2/` with 200.
    pub alive: bool,
}

/// Builds a runtime and runs [`run_async`].
pub fn run(cfg: &Config) -> Result<Report, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(run_async(cfg))
}

/// Fetches the plan (every manifest and blob, checked against its digest), then runs the
/// load for `cfg.duration` and reports.
pub async fn run_async(cfg: &Config) -> Result<Report, Error> {
    let plan = Arc::new(fetch_plan(cfg.addr, &cfg.images).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let start_rss = cfg.pid.and_then(|p| proc_status_kib(p, "VmRSS"));
    let sampler = cfg.pid.map(|pid| {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(proc_status_kib(pid, "VmRSS").unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max
        })
    });

    let t0 = Instant::now();
    let deadline = t0 + cfg.duration;
    let mut clients = Vec::new();
    for i in 0..cfg.clients {
        let plan = plan.clone();
        let cfg = cfg.clone();
        clients.push(tokio::spawn(async move {
            valid::client(&cfg, &plan, i as u64, deadline).await
        }));
    }
    let mut bad = Vec::new();
    for i in 0..cfg.malformed_workers {
        let plan = plan.clone();
        let cfg = cfg.clone();
        bad.push(tokio::spawn(async move {
            malformed::worker(&cfg, &plan, i as u64, deadline).await
        }));
    }
    let loris = (cfg.slowloris > 0).then(|| {
        let cfg = cfg.clone();
        tokio::spawn(async move { malformed::slowloris(&cfg, deadline).await })
    });

    let mut report = Report {
        clients: cfg.clients,
        ..Report::default()
    };
    let mut all = Vec::new();
    let mut by_kind: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for c in clients {
        let s = c.await.expect("a client task does not panic");
        report.valid_requests += s.ok + s.errors;
        report.valid_errors += s.errors;
        report.bytes += s.bytes;
        report.pulls += s.pulls;
        for e in s.samples {
            if report.error_samples.len() < 10 {
                report.error_samples.push(e);
            }
        }
        for (kind, micros) in s.latencies {
            all.extend_from_slice(&micros);
            by_kind.entry(kind.to_owned()).or_default().extend(micros);
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    let mut outcomes = malformed::Outcomes::default();
    for b in bad {
        outcomes.merge(b.await.expect("a malformed worker does not panic"));
    }
    if let Some(l) = loris {
        let (o, closed, holds) = l.await.expect("the slow-loris task does not panic");
        outcomes.merge(o);
        report.slowloris_closed = closed;
        if !holds.is_empty() {
            let micros: Vec<u32> = holds.iter().map(|d| d.as_micros() as u32).collect();
            report.slowloris_hold_s = Some(Latency::of(micros).p50_ms / 1000.0);
        }
    }
    report.malformed = outcomes.total;
    report.malformed_outcomes = outcomes.by_kind;
    report.malformed_unexpected = outcomes.unexpected;
    report.unexpected_samples = outcomes.samples;
    report.latency = Latency::of(all);
    report.latency_by_kind = by_kind
        .into_iter()
        .map(|(k, v)| (k, Latency::of(v)))
        .collect();

    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        report.max_sampled_rss_kib = Some(s.await.expect("the sampler does not panic"));
    }
    report.start_rss_kib = start_rss;
    report.peak_rss_kib = cfg.pid.and_then(|p| proc_status_kib(p, "VmHWM"));
    let answers = valid::api_root_ok(cfg.addr).await;
    report.alive = answers && cfg.pid.is_none_or(process_alive);
    Ok(report)
}

/// A `kB` field of `/proc/PID/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs_parse_names_with_ports_digests_and_queries() {
        let r: ImageRef = "library/app:1?ns=docker.io".parse().unwrap();
        assert_eq!(
            (r.name.as_str(), r.reference.as_str(), r.query.as_str()),
            ("library/app", "1", "ns=docker.io")
        );
        let r: ImageRef = "registry.local:5000/a/b:v2".parse().unwrap();
        assert_eq!(
            (r.name.as_str(), r.reference.as_str(), r.query.as_str()),
            ("registry.local:5000/a/b", "v2", "")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r: ImageRef = format!("a/b@{d}").parse().unwrap();
        assert_eq!((r.name.as_str(), r.reference.as_str()), ("a/b", d.as_str()));
        assert!("library/app".parse::<ImageRef>().is_err());
        assert!(":1".parse::<ImageRef>().is_err());
    }

    #[test]
    fn percentiles_pick_ranked_samples() {
        let l = Latency::of((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!(
            (l.count, l.p50_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(Latency::of(vec![]).count, 0);
    }

    #[test]
    fn own_process_is_alive_and_has_memory() {
        let me = std::process::id();
        assert!(process_alive(me));
        assert!(proc_status_kib(me, "VmHWM").is_some_and(|k| k > 0));
        assert!(proc_status_kib(me, "NoSuchField").is_none());
    }
}
