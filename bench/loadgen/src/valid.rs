//! Valid traffic: the plan (what a pull fetches, with the expected bytes) and the pullers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use crate::{Config, Error, ImageRef};

/// What clients send as `Accept` for manifests: the four types a runtime asks for.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// One URL and the exact bytes it serves.
#[derive(Debug, Clone)]
pub struct Target {
    /// Path and query.
    pub uri: String,
    /// The body, checked against its digest while the plan was fetched.
    pub content: Bytes,
    /// A manifest (sent with `Accept`).
    pub manifest: bool,
}

/// Everything one pull of one image fetches.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// The manifest by tag (or the digest the image was named by).
    pub top: Target,
    /// Manifests by digest below an index (the linux/amd64 one).
    pub children: Vec<Target>,
    /// Config and layers.
    pub blobs: Vec<Target>,
}

/// Every image's plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// In the order of [`Config::images`].
    pub images: Vec<ImagePlan>,
}

impl Plan {
    /// Every blob of every image (for ranges and malformed requests on real content).
    pub fn all_blobs(&self) -> impl Iterator<Item = &Target> {
        self.images.iter().flat_map(|i| &i.blobs)
    }

    /// The smallest blob.
    pub fn smallest_blob(&self) -> &Target {
        self.all_blobs()
            .min_by_key(|t| t.content.len())
            .expect("a plan has blobs")
    }
}

/// A keep-alive HTTP/1 connection to the registry.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
}

async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender })
}

fn request(addr: SocketAddr, method: Method, uri: &str, manifest: bool) -> Request<Empty<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, addr.to_string());
    if manifest {
        b = b.header(header::ACCEPT, MANIFEST_ACCEPT);
    }
    b.body(Empty::new()).expect("a valid request")
}

/// Sends `req` and returns status, headers and the whole body.
async fn fetch(
    conn: &mut Conn,
    req: Request<Empty<Bytes>>,
) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    conn.sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let resp = conn
        .sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// GETs `uri` for the plan: 200 and, with `digest`, content matching it.
async fn get(
    conn: &mut Conn,
    addr: SocketAddr,
    uri: String,
    manifest: bool,
    digest: Option<&str>,
) -> Result<Target, Error> {
    let (status, _, body) = fetch(conn, request(addr, Method::GET, &uri, manifest))
        .await
        .map_err(|reason| Error::Setup {
            what: uri.clone(),
            reason,
        })?;
    if status != StatusCode::OK {
        return Err(Error::Setup {
            what: uri,
            reason: format!("status {status}"),
        });
    }
    if let Some(d) = digest {
        if sha256(&body) != d {
            return Err(Error::DigestMismatch {
                what: uri,
                digest: d.to_owned(),
            });
        }
    }
    Ok(Target {
        uri,
        content: body,
        manifest,
    })
}

/// Fetches every manifest and blob of `images` once, checks each against its digest, and
/// returns what the pullers will request and expect.
pub async fn fetch_plan(addr: SocketAddr, images: &[ImageRef]) -> Result<Plan, Error> {
    let mut conn = connect(addr).await.map_err(|reason| Error::Setup {
        what: addr.to_string(),
        reason,
    })?;
    let mut plans = Vec::new();
    for img in images {
        let base = format!("/v2/{}", img.name);
        let digest = img
            .reference
            .starts_with("sha256:")
            .then_some(img.reference.as_str());
        let top = get(
            &mut conn,
            addr,
            with_query(format!("{base}/manifests/{}", img.reference), &img.query),
            true,
            digest,
        )
        .await?;
        let json = |t: &Target| -> Result<serde_json::Value, Error> {
            serde_json::from_slice(&t.content).map_err(|e| Error::Setup {
                what: t.uri.clone(),
                reason: format!("not a JSON manifest: {e}"),
            })
        };
        let v = json(&top)?;
        let mut children = Vec::new();
        let manifest = if let Some(list) = v["manifests"].as_array() {
            let pick = list
                .iter()
                .find(|m| {
                    m["platform"]["architecture"] == "amd64" && m["platform"]["os"] == "linux"
                })
                .ok_or_else(|| Error::Setup {
                    what: top.uri.clone(),
                    reason: "an index without a linux/amd64 manifest".into(),
                })?;
            let d = pick["digest"].as_str().unwrap_or_default().to_owned();
            let child = get(
                &mut conn,
                addr,
                with_query(format!("{base}/manifests/{d}"), &img.query),
                true,
                Some(&d),
            )
            .await?;
            let v = json(&child)?;
            children.push(child);
            v
        } else {
            v
        };
        let mut digests = vec![manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned()];
        for l in manifest["layers"].as_array().into_iter().flatten() {
            digests.push(l["digest"].as_str().unwrap_or_default().to_owned());
        }
        let mut blobs = Vec::new();
        for d in digests {
            blobs.push(
                get(
                    &mut conn,
                    addr,
                    with_query(format!("{base}/blobs/{d}"), &img.query),
                    false,
                    Some(&d),
                )
                .await?,
            );
        }
        plans.push(ImagePlan {
            top,
            children,
            blobs,
        });
    }
    Ok(Plan { images: plans })
}

/// What one puller saw.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Requests answered correctly.
    pub ok: u64,
    /// Requests answered wrongly or not at all.
    pub errors: u64,
    /// Descriptions of the first errors.
    pub samples: Vec<String>,
    /// Body bytes received.
    pub bytes: u64,
    /// Latencies (µs) per kind.
    pub latencies: Vec<(&'static str, Vec<u32>)>,
    /// Complete pulls.
    pub pulls: u64,
}

impl ClientStats {
    fn record(&mut self, kind: &'static str, micros: u32) {
        match self.latencies.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, v)) => v.push(micros),
            None => self.latencies.push((kind, vec![micros])),
        }
    }
}

/// One request of a pull and what must come back.
struct Step<'p> {
    kind: &'static str,
    method: Method,
    target: &'p Target,
    /// `Some((start, end))` inclusive: a `Range` request expecting 206 and those bytes.
    range: Option<(u64, u64)>,
}

impl Step<'_> {
    /// The status and bytes a correct answer has.
    fn expected(&self) -> (StatusCode, Bytes) {
        let content = &self.target.content;
        match self.range {
            Some((a, b)) => (
                StatusCode::PARTIAL_CONTENT,
                content.slice(a as usize..=b as usize),
            ),
            None => (StatusCode::OK, content.clone()),
        }
    }
}

/// Pulls every image of `plan` again and again until `deadline`: per image HEAD and GET of
/// the manifest, GET of child manifests, config and layers; per pull one `Range` GET of a
/// random blob and one HEAD of a random blob.
pub async fn client(cfg: &Config, plan: &Plan, id: u64, deadline: Instant) -> ClientStats {
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ (id.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let mut stats = ClientStats::default();
    let mut conn: Option<Conn> = None;
    let blobs: Vec<&Target> = plan.all_blobs().collect();
    // Start at a different image per client so the first requests do not all collide.
    let mut turn = id as usize;
    while Instant::now() < deadline {
        let mut steps = Vec::new();
        for k in 0..plan.images.len() {
            let img = &plan.images[(turn + k) % plan.images.len()];
            steps.push(Step {
                kind: "head",
                method: Method::HEAD,
                target: &img.top,
                range: None,
            });
            steps.push(Step {
                kind: "manifest",
                method: Method::GET,
                target: &img.top,
                range: None,
            });
            for c in &img.children {
                steps.push(Step {
                    kind: "manifest",
                    method: Method::GET,
                    target: c,
                    range: None,
                });
            }
            for b in &img.blobs {
                steps.push(Step {
                    kind: "blob",
                    method: Method::GET,
                    target: b,
                    range: None,
                });
            }
        }
        turn += 1;
        let b = blobs[rng.random_range(0..blobs.len())];
        let size = b.content.len() as u64;
        let start = rng.random_range(0..size);
        let end = rng.random_range(start..size.min(start + (1 << 20)));
        steps.push(Step {
            kind: "range",
            method: Method::GET,
            target: b,
            range: Some((start, end)),
        });
        let h = blobs[rng.random_range(0..blobs.len())];
        steps.push(Step {
            kind: "head",
            method: Method::HEAD,
            target: h,
            range: None,
        });

        let mut complete = true;
        for step in &steps {
            if Instant::now() >= deadline {
                complete = false;
                break;
            }
            let t = Instant::now();
            let outcome =
                tokio::time::timeout(cfg.request_timeout, send(cfg.addr, &mut conn, step)).await;
            let micros = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
            let result = match outcome {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", cfg.request_timeout)),
            };
            match result {
                Ok(n) => {
                    stats.ok += 1;
                    stats.bytes += n;
                    stats.record(step.kind, micros);
                }
                Err(e) => {
                    conn = None;
                    complete = false;
                    stats.errors += 1;
                    if stats.samples.len() < 3 {
                        stats.samples.push(format!(
                            "{} {} {:?}: {e}",
                            step.method, step.target.uri, step.range
                        ));
                    }
                }
            }
        }
        if complete {
            stats.pulls += 1;
        }
    }
    stats
}

/// Sends one step and checks the answer while it streams in (status, `Content-Length`,
/// every body byte against the expected content), so no client holds a whole blob.
async fn send(addr: SocketAddr, conn: &mut Option<Conn>, step: &Step<'_>) -> Result<u64, String> {
    if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
        *conn = Some(connect(addr).await?);
    }
    let c = conn.as_mut().expect("connected above");
    let mut req = request(
        addr,
        step.method.clone(),
        &step.target.uri,
        step.target.manifest,
    );
    if let Some((a, b)) = step.range {
        req.headers_mut().insert(
            header::RANGE,
            format!("bytes={a}-{b}").parse().expect("an ASCII header"),
        );
    }
    c.sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let resp = c
        .sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let (want_status, want) = step.expected();
    if resp.status() != want_status {
        return Err(format!("status {}, {want_status} expected", resp.status()));
    }
    let len = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if len != Some(want.len()) {
        return Err(format!("Content-Length {len:?}, {} expected", want.len()));
    }
    let expect_body = if step.method == Method::HEAD {
        0
    } else {
        want.len()
    };
    let mut body = resp.into_body();
    let mut at = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body after {at} bytes: {e}"))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let end = at + data.len();
        if end > expect_body || want[at..end] != data[..] {
            return Err(format!(
                "body differs from the expected content at byte {at}"
            ));
        }
        at = end;
    }
    if at != expect_body {
        return Err(format!("body ended after {at} of {expect_body} bytes"));
    }
    Ok(at as u64)
}

/// `GET /v2/` answers 200 within 5 s.
pub async fn api_root_ok(addr: SocketAddr) -> bool {
    let probe = async {
        let mut c = connect(addr).await.ok()?;
        let (status, _, _) = fetch(&mut c, request(addr, Method::GET, "/v2/", false))
            .await
            .ok()?;
        Some(status == StatusCode::OK)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), probe).await,
        Ok(Some(true))
    )
}
