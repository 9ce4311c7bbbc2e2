//! `airlock-loadgen`: runs [`airlock_loadgen::run`] against one registry and prints the
//! report (text, or JSON with `--json` for `bench/load.sh`). Exits 1 when a valid request
//! failed, the registry died, or a malformed request got an answer it must not get.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use airlock_loadgen::{run, Config, ImageRef};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Concurrent pulls plus malformed requests against an OCI registry")]
struct Args {
    /// The registry, `HOST:PORT`.
    #[arg(long)]
    addr: SocketAddr,
    /// An image to pull, `NAME:TAG[?QUERY]` or `NAME@DIGEST[?QUERY]`; repeat for more.
    #[arg(long = "image", required = true)]
    images: Vec<ImageRef>,
    /// Concurrent pullers.
    #[arg(long, env = "CLIENTS", default_value_t = 64)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, env = "LOAD_SECONDS", default_value_t = 60.0)]
    seconds: f64,
    /// Workers sending malformed requests back to back.
    #[arg(long, default_value_t = 2)]
    malformed_workers: usize,
    /// Slow-loris connections held at once.
    #[arg(long, default_value_t = 16)]
    slowloris: usize,
    /// The registry's pid, for RSS samples and the liveness check.
    #[arg(long)]
    pid: Option<u32>,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let mut cfg = Config::new(a.addr, a.images);
    cfg.clients = a.clients;
    cfg.duration = Duration::from_secs_f64(a.seconds);
    cfg.malformed_workers = a.malformed_workers;
    cfg.slowloris = a.slowloris;
    cfg.pid = a.pid;
    cfg.seed = a.seed;
    let report = match run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("airlock-loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report serializes")
        );
    } else {
        let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
        println!(
            "{} valid requests in {:.1} s ({} pulls, {:.0} req/s, {:.0} MB/s), {} errors",
            report.valid_requests,
            report.seconds,
            report.pulls,
            report.valid_requests as f64 / report.seconds,
            report.bytes as f64 / report.seconds / 1e6,
            report.valid_errors
        );
        println!(
            "latency p50 {:.2} ms, p99 {:.2} ms",
            report.latency.p50_ms, report.latency.p99_ms
        );
        for (k, l) in &report.latency_by_kind {
            println!(
                "  {k:<9} {:>8} p50 {:>8.2} ms  p99 {:>8.2} ms",
                l.count, l.p50_ms, l.p99_ms
            );
        }
        println!(
            "{} malformed requests, {} answered unexpectedly",
            report.malformed, report.malformed_unexpected
        );
        for (k, m) in &report.malformed_outcomes {
            let m: Vec<String> = m.iter().map(|(o, n)| format!("{o}×{n}")).collect();
            println!("  {k:<17} {}", m.join(" "));
        }
        println!(
            "peak RSS {} MiB (start {} MiB); alive: {}",
            mib(report.peak_rss_kib),
            mib(report.start_rss_kib),
            report.alive
        );
        for s in report
            .error_samples
            .iter()
            .chain(&report.unexpected_samples)
        {
            println!("  ! {s}");
        }
    }
    if report.valid_errors > 0 || !report.alive || report.malformed_unexpected > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
