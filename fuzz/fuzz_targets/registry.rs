//! Arbitrary requests to `Registry::handle` over the base installer's three images. The
//! path is built from pieces that mean something to the router (real names, digests, tags,
//! `manifests`, `blobs`, `tags/list`, `%`-escapes) mixed with arbitrary text, so the fuzzer
//! gets past the first 404. Every answer must be well formed: no 5xx (the file is intact),
//! `Content-Length` that matches the body, the API version header, an OCI error body on
//! errors, `Content-Range` inside the blob on 206.
#![no_main]

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use airlock_payload::Installer;
use airlock_stub::registry::{Body, Registry};
use arbitrary::Arbitrary;
use http::{Method, Request, StatusCode};
use hyper::body::Body as _;
use libfuzzer_sys::fuzz_target;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let bytes: &'static [u8] = &airlock_fuzz::fixture().bytes;
        Registry::new(Installer::open(bytes, None).unwrap().load_index().unwrap())
    })
}

/// Strings the router cares about.
fn words() -> &'static Vec<String> {
    static W: OnceLock<Vec<String>> = OnceLock::new();
    W.get_or_init(|| {
        let mut w: Vec<String> = [
            "v2",
            "",
            "manifests",
            "blobs",
            "tags",
            "list",
            "_catalog",
            "library",
            "app",
            "a",
            "b",
            "docker.io",
            "example.hub",
            "registry.local:5000",
            "localhost",
            "1",
            "v2",
            "latest",
            "..",
            ".",
            "%2e%2e",
            "%2F",
            "%",
            "%zz",
            "%c3%28",
            "sha256:",
            "SHA256:abc",
            "uploads",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for img in &airlock_fuzz::fixture().images {
            w.push(img.digest().to_string());
            for b in &img.blobs {
                w.push(airlock_payload::Sha256Digest::of(b).to_string());
            }
        }
        w
    })
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Word(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    custom_method: String,
    pieces: Vec<Piece>,
    query: Vec<(u8, String)>,
    range: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
}

const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "DELETE", "POST", "OPTIONS"];
const QUERY_KEYS: [&str; 5] = ["ns", "n", "last", "digest", ""];

fn build(input: &Input) -> Option<Request<()>> {
    let w = words();
    let mut path = String::from("/v2");
    for p in &input.pieces {
        path.push('/');
        match p {
            Piece::Word(i) => path.push_str(&w[*i as usize % w.len()]),
            Piece::Text(t) => path.push_str(t),
        }
    }
    let mut uri = path;
    for (i, (k, v)) in input.query.iter().enumerate() {
        uri.push(if i == 0 { '?' } else { '&' });
        uri.push_str(QUERY_KEYS[*k as usize % QUERY_KEYS.len()]);
        uri.push('=');
        uri.push_str(v);
    }
    let method = match input.method as usize {
        i if i < 200 => Method::from_bytes(METHODS[i % METHODS.len()].as_bytes()).ok()?,
        _ => Method::from_bytes(input.custom_method.as_bytes()).ok()?,
    };
    // hyper hands `handle` only what `http` accepts: skip requests it would reject.
    let mut b = Request::builder().method(method).uri(uri.as_str());
    if let Some(r) = &input.range {
        b = b.header("range", r.as_str());
    }
    for (k, v) in &input.headers {
        b = b.header(k.as_str(), v.as_slice());
    }
    b.body(()).ok()
}

/// The body of a JSON answer (always in memory: no runtime needed).
fn json_body(body: Body) -> Vec<u8> {
    let mut body = Box::pin(body);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match Pin::as_mut(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(f))) => out.extend_from_slice(f.data_ref().expect("data frame")),
            Poll::Ready(None) => return out,
            other => panic!("a JSON body is not ready at once: {other:?}"),
        }
    }
}

fuzz_target!(|input: Input| {
    let Some(req) = build(&input) else {
        return;
    };
    let head = req.method() == Method::HEAD;
    let resp = registry().handle(&req);
    let status = resp.status();
    assert!(!status.is_server_error(), "{status} for {req:?}");
    let h = resp.headers();
    assert_eq!(h["docker-distribution-api-version"], "registry/2.0");
    let len: u64 = h
        .get("content-length")
        .unwrap_or_else(|| panic!("no Content-Length for {req:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let hint = resp.body().size_hint().exact();
    if head {
        assert_eq!(hint, Some(0), "HEAD with a body");
    } else {
        assert_eq!(
            hint,
            Some(len),
            "Content-Length differs from the body for {req:?}"
        );
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = h["content-range"].to_str().unwrap();
        let (range, total) = cr.strip_prefix("bytes ").unwrap().split_once('/').unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b, total): (u64, u64, u64) = (
            a.parse().unwrap(),
            b.parse().unwrap(),
            total.parse().unwrap(),
        );
        assert!(
            a <= b && b < total && b - a + 1 == len,
            "{cr} with length {len}"
        );
    }
    let is_json = h
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    if status.is_client_error() {
        assert!(is_json, "an error without a JSON body: {req:?}");
    }
    if is_json && !head {
        let body = json_body(resp.into_body());
        assert_eq!(body.len() as u64, len);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
        if status.is_client_error() {
            let code = v["errors"][0]["code"].as_str().expect("an OCI error code");
            assert!(!code.is_empty());
        }
    }
});
