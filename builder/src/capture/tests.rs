//! The proxy against a fake upstream: a small hyper registry on loopback that counts the
//! requests it gets, can hold a blob back half-way, and can serve a blob with wrong bytes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_payload::Sha256Digest;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::{mpsc, Notify};

use super::lock::Lock;
use super::proxy::{resolve, Proxy};
use super::store::Store;
use super::upstream::Upstream;
use crate::image::Mirror;
use airlock_oci::media::{OCI_INDEX, OCI_MANIFEST};
use airlock_oci::Body;

/// A fake upstream registry.
#[derive(Default)]
struct Fake {
    /// `repo:tag` → manifest digest.
    tags: HashMap<String, Sha256Digest>,
    /// Manifests and blobs by digest.
    blobs: HashMap<Sha256Digest, (String, Bytes)>,
    /// Blobs served with other bytes than their digest's.
    corrupt: Vec<Sha256Digest>,
    /// Blobs whose second half waits for this.
    gate: Option<(Sha256Digest, Arc<Notify>)>,
    /// Requests by path.
    hits: Mutex<HashMap<String, usize>>,
}

impl Fake {
    fn add(&mut self, media_type: &str, bytes: Vec<u8>) -> Sha256Digest {
        let d = Sha256Digest::of(&bytes);
        self.blobs
            .insert(d, (media_type.to_owned(), Bytes::from(bytes)));
        d
    }

    /// An image: one layer of `layer` bytes, a config, a manifest, tagged `repo:tag`.
    fn image(&mut self, repo: &str, tag: &str, layer: Vec<u8>) -> (Sha256Digest, Sha256Digest) {
        let size = layer.len();
        let layer = self.add("application/octet-stream", layer);
        let config = self.add(
            "application/octet-stream",
            br#"{"architecture":"amd64","os":"linux"}"#.to_vec(),
        );
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 37},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.to_string(), "size": size}],
        }))
        .unwrap();
        let m = self.add(OCI_MANIFEST, manifest);
        self.tags.insert(format!("{repo}:{tag}"), m);
        (m, layer)
    }

    fn hits(&self, path_end: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.ends_with(path_end))
            .map(|(_, n)| n)
            .sum()
    }

    fn answer(self: &Arc<Self>, path: &str) -> Response<Body> {
        *self
            .hits
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default() += 1;
        let not_found = |code: &str| {
            let mut r = Response::new(Body::full(
                serde_json::to_vec(&json!({"errors": [{"code": code, "message": "no"}]})).unwrap(),
            ));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        };
        if path == "/v2/" {
            return Response::new(Body::full("{}"));
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return not_found("NOT_FOUND");
        };
        let (front, last) = rest.rsplit_once('/').unwrap();
        let (repo, kind) = front.rsplit_once('/').unwrap();
        let digest = match kind {
            "manifests" => match last.parse::<Sha256Digest>() {
                Ok(d) => d,
                Err(_) => match self.tags.get(&format!("{repo}:{last}")) {
                    Some(d) => *d,
                    None => return not_found("MANIFEST_UNKNOWN"),
                },
            },
            _ => match last.parse() {
                Ok(d) => d,
                Err(_) => return not_found("DIGEST_INVALID"),
            },
        };
        let Some((media_type, bytes)) = self.blobs.get(&digest) else {
            return not_found(if kind == "manifests" {
                "MANIFEST_UNKNOWN"
            } else {
                "BLOB_UNKNOWN"
            });
        };
        let mut bytes = bytes.clone();
        if self.corrupt.contains(&digest) {
            let mut v = bytes.to_vec();
            v[0] ^= 0xff;
            bytes = Bytes::from(v);
        }
        let len = bytes.len();
        let body = match &self.gate {
            Some((d, gate)) if *d == digest => {
                let (tx, rx) = mpsc::channel(1);
                let gate = gate.clone();
                tokio::spawn(async move {
                    let half = bytes.len() / 2;
                    let _ = tx.send(Ok(bytes.slice(..half))).await;
                    gate.notified().await;
                    let _ = tx.send(Ok(bytes.slice(half..))).await;
                });
                Body::channel(rx)
            }
            _ => Body::full(bytes),
        };
        let mut r = Response::new(body);
        let h = r.headers_mut();
        h.insert("content-type", media_type.parse().unwrap());
        h.insert("content-length", len.into());
        h.insert("docker-content-digest", digest.to_string().parse().unwrap());
        r
    }

    /// Serves on a free loopback port; returns `127.0.0.1:PORT`.
    async fn serve(self: Arc<Self>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let fake = self.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let fake = fake.clone();
                        async move { Ok::<_, Infallible>(fake.answer(req.uri().path())) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }
}

/// A proxy into a fresh folder, mapping `example.hub` to `addr`.
fn proxy(dir: &std::path::Path, addr: &str) -> Proxy {
    let mirror: Mirror = format!("example.hub=http://{addr}").parse().unwrap();
    let upstream = Upstream::new(vec![mirror], None, Duration::from_secs(2)).unwrap();
    Proxy::new(
        upstream,
        Store::open(dir).unwrap(),
        Lock::load_or_default(dir).unwrap(),
    )
}

fn get(path: &str) -> Request<()> {
    Request::get(path).body(()).unwrap()
}

#[test]
fn names_resolve_to_upstreams() {
    let r = |name, ns| {
        let r = resolve(name, ns).unwrap();
        format!("{}/{}", r.host, r.name)
    };
    assert_eq!(r("team/app", Some("example.hub")), "example.hub/team/app");
    assert_eq!(
        r("library/app", Some("index.docker.io")),
        "docker.io/library/app"
    );
    assert_eq!(r("busybox", None), "docker.io/library/busybox");
    assert_eq!(r("example.hub/team/app", None), "example.hub/team/app");
    assert_eq!(
        r("registry.local:5000/a/b", None),
        "registry.local:5000/a/b"
    );
    assert_eq!(r("team/app", None), "docker.io/team/app");
    assert!(resolve("Team/App", None).is_err());
    assert!(resolve("app", Some("bad host!")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_is_streamed_stored_and_recorded() {
    let mut fake = Fake::default();
    let (manifest, layer) = fake.image("team/app", "1", vec![7; 300_000]);
    let addr = Arc::new(fake).serve().await;
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), &addr);

    let resp = p
        .handle(&get("/v2/team/app/manifests/1?ns=example.hub"))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], OCI_MANIFEST);
    assert_eq!(
        resp.headers()["docker-content-digest"],
        manifest.to_string().as_str()
    );
    let bytes = resp.into_body().read_all().await.unwrap();
    assert_eq!(Sha256Digest::of(&bytes), manifest);

    let resp = p
        .handle(&get(&format!("/v2/team/app/blobs/{layer}?ns=example.hub")))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "300000");
    let bytes = resp.into_body().read_all().await.unwrap();
    assert_eq!(Sha256Digest::of(&bytes), layer);
    assert!(dir.path().join("blobs/sha256").join(layer.hex()).is_file());
    assert!(dir
        .path()
        .join("blobs/sha256")
        .join(manifest.hex())
        .is_file());

    let lock = Lock::load(dir.path()).unwrap();
    assert_eq!(lock.entries().len(), 1);
    let e = &lock.entries()[0];
    assert_eq!(e.reference.to_string(), "example.hub/team/app:1");
    assert_eq!(e.digest, manifest);
    assert_eq!(e.media_type, OCI_MANIFEST);

    // The manifest by digest (containerd's second request) is served from the capture and
    // adds no entry: it is the tag's manifest.
    let resp = p
        .handle(&get(&format!(
            "/v2/team/app/manifests/{manifest}?ns=example.hub"
        )))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(Lock::load(dir.path()).unwrap(), lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_by_digest_is_recorded_but_an_index_child_is_not() {
    let mut fake = Fake::default();
    let (child, _) = fake.image("team/app", "single", vec![1; 10]);
    let (other, _) = fake.image("team/other", "x", vec![2; 10]);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": 1,
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }))
    .unwrap();
    let index = fake.add(OCI_INDEX, index);
    fake.tags.insert("team/app:multi".to_owned(), index);
    let addr = Arc::new(fake).serve().await;
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), &addr);

    let resp = p
        .handle(&get("/v2/team/app/manifests/multi?ns=example.hub"))
        .await;
    // No `mediaType` in the index: inferred, like the builder does.
    assert_eq!(resp.headers()["content-type"], OCI_INDEX);
    let resp = p
        .handle(&get(&format!(
            "/v2/team/app/manifests/{child}?ns=example.hub"
        )))
        .await;
    assert_eq!(resp.status(), 200);
    let resp = p
        .handle(&get(&format!(
            "/v2/team/other/manifests/{other}?ns=example.hub"
        )))
        .await;
    assert_eq!(resp.status(), 200);
    let refs: Vec<String> = Lock::load(dir.path())
        .unwrap()
        .entries()
        .iter()
        .map(|e| e.reference.to_string())
        .collect();
    assert_eq!(
        refs,
        [
            "example.hub/team/app:multi".to_owned(),
            format!("example.hub/team/other@{other}")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_a_blob_fetch_it_upstream_once() {
    let mut fake = Fake::default();
    let (_, layer) = fake.image(
        "team/app",
        "1",
        (0..1_000_000u32).map(|i| i as u8).collect(),
    );
    let gate = Arc::new(Notify::new());
    fake.gate = Some((layer, gate.clone()));
    let fake = Arc::new(fake);
    let addr = fake.clone().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), &addr);

    let path = format!("/v2/team/app/blobs/{layer}?ns=example.hub");
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (p, path) = (p.clone(), path.clone());
            tokio::spawn(async move { p.handle(&get(&path)).await })
        })
        .collect();
    // All three have their answer (status and length) while upstream holds the second half.
    let mut bodies = Vec::new();
    for c in clients {
        let resp = c.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-length"], "1000000");
        bodies.push(tokio::spawn(resp.into_body().read_all()));
    }
    assert_eq!(p.blob_fetches(), 1);
    gate.notify_one();
    for b in bodies {
        let bytes = b.await.unwrap().unwrap();
        assert_eq!(Sha256Digest::of(&bytes), layer);
    }
    assert_eq!(fake.hits(&format!("/blobs/{layer}")), 1);
    // Later pulls come from the capture.
    let bytes = p
        .handle(&get(&path))
        .await
        .into_body()
        .read_all()
        .await
        .unwrap();
    assert_eq!(Sha256Digest::of(&bytes), layer);
    assert_eq!(fake.hits(&format!("/blobs/{layer}")), 1);
    assert_eq!(p.blob_fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_does_not_match_its_digest_is_not_stored_and_the_client_gets_an_error() {
    let mut fake = Fake::default();
    let (_, layer) = fake.image("team/app", "1", vec![9; 700_000]);
    fake.corrupt.push(layer);
    let addr = Arc::new(fake).serve().await;
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), &addr);
    let resp = p
        .handle(&get(&format!("/v2/team/app/blobs/{layer}?ns=example.hub")))
        .await;
    assert_eq!(
        resp.status(),
        200,
        "the status goes out before the last byte"
    );
    let err = resp.into_body().read_all().await.unwrap_err().to_string();
    assert!(err.contains("not stored"), "{err}");
    assert!(!dir.path().join("blobs/sha256").join(layer.hex()).exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    // The next request tries again (and fails again): nothing false was kept.
    let resp = p
        .handle(&get(&format!("/v2/team/app/blobs/{layer}?ns=example.hub")))
        .await;
    assert!(resp.into_body().read_all().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_404_is_passed_on_and_records_nothing() {
    let mut fake = Fake::default();
    fake.image("team/app", "1", vec![1; 10]);
    let addr = Arc::new(fake).serve().await;
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), &addr);
    let resp = p
        .handle(&get("/v2/team/app/manifests/2?ns=example.hub"))
        .await;
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().read_all().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let missing = Sha256Digest([0; 32]);
    let resp = p
        .handle(&get(&format!(
            "/v2/team/app/blobs/{missing}?ns=example.hub"
        )))
        .await;
    assert_eq!(resp.status(), 404);
    assert!(Lock::load(dir.path()).is_err(), "no lock file was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_quick_502_and_records_nothing() {
    // A port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), &addr);
    let start = Instant::now();
    let resp = p
        .handle(&get("/v2/team/app/manifests/1?ns=example.hub"))
        .await;
    assert_eq!(resp.status(), 502);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().read_all().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("example.hub (http://{addr})")),
        "{message}"
    );
    let blob = format!(
        "/v2/team/app/blobs/{}?ns=example.hub",
        Sha256Digest([1; 32])
    );
    assert_eq!(p.handle(&get(&blob)).await.status(), 502);
    assert!(Lock::load(dir.path()).is_err(), "no lock file was written");
    assert_eq!(p.store().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_oci_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), "127.0.0.1:9");
    for (req, status, code) in [
        (
            Request::post("/v2/a/blobs/uploads/").body(()).unwrap(),
            405,
            "UNSUPPORTED",
        ),
        (get("/v2/a/manifests/-bad"), 400, "TAG_INVALID"),
        (get("/v2/a/blobs/sha256:12"), 400, "DIGEST_INVALID"),
        (get("/v2/Bad/manifests/1"), 400, "NAME_INVALID"),
        (get("/v2/_catalog"), 404, "NOT_FOUND"),
        (get("/other"), 404, "NOT_FOUND"),
    ] {
        let resp = p.handle(&req).await;
        assert_eq!(resp.status(), status, "{}", req.uri());
        let body: serde_json::Value =
            serde_json::from_slice(&resp.into_body().read_all().await.unwrap()).unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{}", req.uri());
    }
    let resp = p.handle(&get("/v2/")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

/// Regression (issue 10, bug 2): the capture proxy answered 200 to a request with a 100 KiB
/// header. On `airlock-oci`'s server loop it refuses hostile requests as the stub's
/// registry does (the same checks run there), stays up, and stops on its shutdown future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_hostile_requests_and_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), "127.0.0.1:9");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = super::ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        ..super::serve_options()
    };
    let task = tokio::spawn(super::serve(listener, p, opts, async {
        let _ = stopped.await;
    }));
    airlock_oci::testutil::assert_refuses_hostile_requests(addr, Duration::from_millis(500)).await;
    // A bad request through the socket still gets the proxy's OCI error.
    let r = airlock_oci::testutil::exchange(
        addr,
        b"GET /v2/Bad/manifests/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let h = airlock_oci::testutil::head_of(&r);
    assert!(h.starts_with("http/1.1 400"), "{h}");
    assert!(String::from_utf8_lossy(&r).contains("NAME_INVALID"));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
}

#[test]
fn every_docker_hub_alias_is_one_upstream() {
    for ns in [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "registry.hub.docker.com",
    ] {
        let r = resolve("busybox", Some(ns)).unwrap();
        assert_eq!(
            (r.host.as_str(), r.name.as_str()),
            ("docker.io", "library/busybox")
        );
    }
}
