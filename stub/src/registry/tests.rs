//! Registry tests: most call [`Registry::handle`] directly; a few go through a socket.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use airlock_payload::{Codec, Installer, Sha256Digest};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::testutil::{damage_frame, installer_with_images, ImageSpec, OCI_MANIFEST};
use airlock_oci::testutil::{assert_refuses_hostile_requests, exchange, head_of};

const MIB: usize = 1 << 20;

/// The images of the shared test installer.
struct Fixture {
    bytes: &'static [u8],
    /// docker.io/library/app:1, with layers over 4 MiB (several frames each).
    big: ImageSpec,
    /// example.hub/library/app:1: same repository and tag, other content.
    hub: ImageSpec,
    /// docker.io/library/app:2 and :3.
    app2: ImageSpec,
    app3: ImageSpec,
    /// registry.local:5000/a/b:1.
    ported: ImageSpec,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let big = ImageSpec::sample(
            "docker.io",
            "library/app",
            "1",
            1,
            5 * MIB + 7,
            5 * MIB + 11,
        );
        let hub = ImageSpec::sample("example.hub", "library/app", "1", 2, 1000, 3000);
        let app2 = ImageSpec::sample("docker.io", "library/app", "2", 3, 500, 700);
        let app3 = ImageSpec::sample("docker.io", "library/app", "3", 4, 500, 700);
        let ported = ImageSpec::sample("registry.local:5000", "a/b", "1", 5, 100, 200);
        let bytes = installer_with_images(&[
            big.clone(),
            hub.clone(),
            app2.clone(),
            app3.clone(),
            ported.clone(),
        ])
        .leak();
        Fixture {
            bytes,
            big,
            hub,
            app2,
            app3,
            ported,
        }
    })
}

fn registry_of(bytes: &'static [u8]) -> Registry {
    Registry::new(Installer::open(bytes, None).unwrap().load_index().unwrap())
}

fn registry() -> Registry {
    registry_of(fixture().bytes)
}

fn request(method: Method, uri: &str, range: Option<&str>) -> Request<()> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(r) = range {
        b = b.header("range", r);
    }
    b.body(()).unwrap()
}

fn get(reg: &Registry, uri: &str) -> Response<Body> {
    reg.handle(&request(Method::GET, uri, None))
}

fn head(reg: &Registry, uri: &str) -> Response<Body> {
    reg.handle(&request(Method::HEAD, uri, None))
}

/// The whole body; streamed blob bodies need a runtime for their producer thread.
fn body(resp: Response<Body>) -> Result<Vec<u8>, std::io::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(resp.into_body().collect())
        .map(|c| c.to_bytes().to_vec())
}

fn json(resp: Response<Body>) -> serde_json::Value {
    assert_eq!(resp.headers()["content-type"], "application/json");
    serde_json::from_slice(&body(resp).unwrap()).unwrap()
}

fn hdr<'r>(resp: &'r Response<Body>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Asserts an OCI error answer with `status` and `code`.
#[track_caller]
fn assert_error(resp: Response<Body>, status: u16, code: &str) {
    assert_eq!(resp.status().as_u16(), status, "{resp:?}");
    let v = json(resp);
    let errors = v["errors"].as_array().expect("an errors array");
    assert_eq!(errors.len(), 1, "{v}");
    assert_eq!(errors[0]["code"], code, "{v}");
    assert!(
        errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(errors[0].get("detail").is_some(), "{v}");
}

fn digest(b: &[u8]) -> String {
    Sha256Digest::of(b).to_string()
}

#[test]
fn the_large_layers_span_several_raw_and_zstd_frames() {
    let f = fixture();
    let payload = Installer::open(f.bytes, None)
        .unwrap()
        .load_index()
        .unwrap();
    for (layer, codec) in [
        (&f.big.raw_layer, Codec::Raw),
        (&f.big.zstd_layer, Codec::Zstd),
    ] {
        let blob = payload.index().blob(&Sha256Digest::of(layer)).unwrap();
        let mut frames = payload.blob_frames(blob);
        assert!(frames.clone().count() > 1);
        assert!(frames.all(|i| payload.index().frames()[i].codec == codec));
    }
}

#[test]
fn base_endpoint_answers_200_with_an_empty_object() {
    let reg = registry();
    for uri in ["/v2/", "/v2"] {
        let resp = get(&reg, uri);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            hdr(&resp, "docker-distribution-api-version"),
            Some("registry/2.0")
        );
        assert_eq!(json(resp), serde_json::json!({}));
    }
    assert_eq!(reg.image_count(), 5);
}

#[test]
fn manifest_by_tag_is_served_verbatim_with_its_headers() {
    let (reg, f) = (registry(), fixture());
    let resp = get(&reg, "/v2/library/app/manifests/1?ns=docker.io");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(hdr(&resp, "content-type"), Some(OCI_MANIFEST));
    assert_eq!(
        hdr(&resp, "docker-content-digest"),
        Some(f.big.digest().to_string().as_str())
    );
    assert_eq!(
        hdr(&resp, "content-length"),
        Some(f.big.manifest.len().to_string().as_str())
    );
    assert_eq!(hdr(&resp, "oci-namespace"), Some("docker.io"));
    assert_eq!(body(resp).unwrap(), f.big.manifest);
}

#[test]
fn manifest_by_digest_answers_get_and_head() {
    let (reg, f) = (registry(), fixture());
    let uri = format!(
        "/v2/library/app/manifests/{}?ns=example.hub",
        f.hub.digest()
    );
    let resp = get(&reg, &uri);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).unwrap(), f.hub.manifest);
    let resp = head(&reg, &uri);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(hdr(&resp, "content-type"), Some(OCI_MANIFEST));
    assert_eq!(
        hdr(&resp, "docker-content-digest"),
        Some(f.hub.digest().to_string().as_str())
    );
    assert_eq!(
        hdr(&resp, "content-length"),
        Some(f.hub.manifest.len().to_string().as_str())
    );
    assert!(body(resp).unwrap().is_empty());
}

#[test]
fn a_manifest_digest_of_another_repository_is_unknown() {
    let (reg, f) = (registry(), fixture());
    // The example.hub image's manifest, asked for under docker.io.
    let resp = get(
        &reg,
        &format!("/v2/library/app/manifests/{}?ns=docker.io", f.hub.digest()),
    );
    assert_error(resp, 404, "MANIFEST_UNKNOWN");
    let resp = get(
        &reg,
        &format!(
            "/v2/a/b/manifests/{}?ns=registry.local:5000",
            f.big.digest()
        ),
    );
    assert_error(resp, 404, "MANIFEST_UNKNOWN");
}

#[test]
fn a_wrong_namespace_is_manifest_unknown_and_echoed() {
    let reg = registry();
    let resp = get(&reg, "/v2/library/app/manifests/1?ns=quay.io");
    assert_eq!(hdr(&resp, "oci-namespace"), Some("quay.io"));
    assert_error(resp, 404, "MANIFEST_UNKNOWN");
    assert_error(
        get(&reg, "/v2/library/app/manifests/9?ns=docker.io"),
        404,
        "MANIFEST_UNKNOWN",
    );
}

#[test]
fn same_repository_and_tag_under_two_registries_resolve_apart() {
    let (reg, f) = (registry(), fixture());
    let top = |uri: &str| {
        let resp = head(&reg, uri);
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        (
            hdr(&resp, "docker-content-digest").unwrap().to_owned(),
            hdr(&resp, "oci-namespace").unwrap().to_owned(),
        )
    };
    let docker = (f.big.digest().to_string(), "docker.io".to_owned());
    let hub = (f.hub.digest().to_string(), "example.hub".to_owned());
    assert_ne!(docker.0, hub.0);
    // By `ns`, as containerd asks through a mirror.
    assert_eq!(top("/v2/library/app/manifests/1?ns=docker.io"), docker);
    assert_eq!(top("/v2/library/app/manifests/1?ns=example.hub"), hub);
    assert_eq!(
        top("/v2/library/app/manifests/1?ns=index.docker.io"),
        docker
    );
    // By path prefix, as podman mirrors and skopeo ask.
    assert_eq!(top("/v2/example.hub/library/app/manifests/1"), hub);
    assert_eq!(top("/v2/docker.io/library/app/manifests/1"), docker);
    let ported = (
        f.ported.digest().to_string(),
        "registry.local:5000".to_owned(),
    );
    assert_eq!(top("/v2/registry.local:5000/a/b/manifests/1"), ported);
    assert_eq!(top("/v2/a/b/manifests/1?ns=registry.local:5000"), ported);
    // A bare name means docker.io.
    assert_eq!(top("/v2/library/app/manifests/1"), docker);
}

#[test]
fn a_host_like_prefix_that_no_image_has_is_part_of_a_docker_io_name() {
    let reg = registry();
    let resp = get(&reg, "/v2/quay.io/library/app/manifests/1");
    assert_eq!(hdr(&resp, "oci-namespace"), Some("docker.io"));
    assert_error(resp, 404, "MANIFEST_UNKNOWN");
}

#[test]
fn blobs_are_served_whole_from_raw_and_zstd_frames() {
    let (reg, f) = (registry(), fixture());
    for layer in [&f.big.raw_layer, &f.big.zstd_layer, &f.big.config] {
        let d = digest(layer);
        let resp = get(&reg, &format!("/v2/library/app/blobs/{d}?ns=docker.io"));
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(hdr(&resp, "content-type"), Some("application/octet-stream"));
        assert_eq!(hdr(&resp, "docker-content-digest"), Some(d.as_str()));
        assert_eq!(
            hdr(&resp, "content-length"),
            Some(layer.len().to_string().as_str())
        );
        assert_eq!(hdr(&resp, "accept-ranges"), Some("bytes"));
        let got = body(resp).unwrap();
        assert_eq!(got.len(), layer.len());
        assert!(got == *layer, "blob {d} differs");
    }
    // A manifest is a blob too.
    let resp = get(&reg, &format!("/v2/library/app/blobs/{}", f.big.digest()));
    assert_eq!(body(resp).unwrap(), f.big.manifest);
}

#[test]
fn ranges_return_206_with_the_exact_bytes_across_frame_boundaries() {
    let (reg, f) = (registry(), fixture());
    for layer in [&f.big.raw_layer, &f.big.zstd_layer] {
        let size = layer.len();
        let uri = format!("/v2/library/app/blobs/{}", digest(layer));
        let cases = [
            (
                format!("bytes={}-{}", 4 * MIB - 1000, 4 * MIB + 999),
                4 * MIB - 1000,
                4 * MIB + 999,
            ),
            ("bytes=0-0".to_owned(), 0, 0),
            ("bytes=10-19".to_owned(), 10, 19),
            (format!("bytes={}-", 3 * MIB), 3 * MIB, size - 1),
            ("bytes=-100".to_owned(), size - 100, size - 1),
            (format!("bytes=5-{}", size * 2), 5, size - 1),
        ];
        for (range, start, end) in cases {
            let resp = reg.handle(&request(Method::GET, &uri, Some(&range)));
            assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(
                hdr(&resp, "content-range"),
                Some(format!("bytes {start}-{end}/{size}").as_str()),
                "{range}"
            );
            assert_eq!(
                hdr(&resp, "content-length"),
                Some((end - start + 1).to_string().as_str())
            );
            let got = body(resp).unwrap();
            assert!(got == layer[start..=end], "{range}: wrong bytes");
        }
    }
}

#[test]
fn an_unsatisfiable_range_is_416_with_the_size() {
    let (reg, f) = (registry(), fixture());
    let size = f.hub.raw_layer.len();
    let uri = format!(
        "/v2/example.hub/library/app/blobs/{}",
        digest(&f.hub.raw_layer)
    );
    let resp = reg.handle(&request(Method::GET, &uri, Some(&format!("bytes={size}-"))));
    assert_eq!(
        hdr(&resp, "content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    assert_error(resp, 416, "RANGE_INVALID");
    // Ranges this server does not support are ignored: the whole blob.
    let resp = reg.handle(&request(Method::GET, &uri, Some("bytes=0-1,5-6")));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).unwrap(), f.hub.raw_layer);
}

#[test]
fn blob_head_returns_length_and_digest_without_a_body() {
    let (reg, f) = (registry(), fixture());
    for layer in [&f.big.raw_layer, &f.big.zstd_layer] {
        let d = digest(layer);
        let resp = head(&reg, &format!("/v2/library/app/blobs/{d}?ns=docker.io"));
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            hdr(&resp, "content-length"),
            Some(layer.len().to_string().as_str())
        );
        assert_eq!(hdr(&resp, "docker-content-digest"), Some(d.as_str()));
        assert!(body(resp).unwrap().is_empty());
    }
}

#[test]
fn missing_blobs_and_blobs_of_other_repositories_are_blob_unknown() {
    let (reg, f) = (registry(), fixture());
    let missing = format!("sha256:{}", "0".repeat(64));
    assert_error(
        get(&reg, &format!("/v2/library/app/blobs/{missing}")),
        404,
        "BLOB_UNKNOWN",
    );
    let resp = head(&reg, &format!("/v2/library/app/blobs/{missing}"));
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(hdr(&resp, "content-type"), Some("application/json"));
    assert!(body(resp).unwrap().is_empty(), "HEAD answers have no body");
    // example.hub's layer is stored, but not part of docker.io/library/app.
    let other = digest(&f.hub.raw_layer);
    assert_error(
        get(&reg, &format!("/v2/library/app/blobs/{other}")),
        404,
        "BLOB_UNKNOWN",
    );
    assert_error(
        get(&reg, &format!("/v2/no/such/blobs/{other}")),
        404,
        "BLOB_UNKNOWN",
    );
    assert_error(
        get(&reg, &format!("/v2/library/app/manifests/{missing}")),
        404,
        "MANIFEST_UNKNOWN",
    );
}

#[test]
fn invalid_digests_are_400_digest_invalid() {
    let reg = registry();
    for d in [
        "sha256:xyz",
        "sha256:",
        "sha512:0000",
        &format!("sha256:{}", "A".repeat(64)),
        &format!("sha256:{}", "0".repeat(63)),
        "latest",
    ] {
        assert_error(
            get(&reg, &format!("/v2/library/app/blobs/{d}")),
            400,
            "DIGEST_INVALID",
        );
    }
    assert_error(
        get(&reg, "/v2/library/app/manifests/sha256:xyz"),
        400,
        "DIGEST_INVALID",
    );
    assert_error(
        get(&reg, "/v2/library/app/manifests/-bad"),
        400,
        "TAG_INVALID",
    );
}

#[test]
fn hostile_names_are_400_name_invalid() {
    let reg = registry();
    let d = format!("sha256:{}", "0".repeat(64));
    let long = "a".repeat(10_000);
    for name in [
        "..",
        "%2e%2e",
        "library/%2E%2E",
        "library/../app",
        "Library/App",
        long.as_str(),
        "a%zz",
        "a%ff",
        "",
        "registry.local:5001/a/b",
    ] {
        for path in [
            format!("/v2/{name}/manifests/1"),
            format!("/v2/{name}/blobs/{d}"),
            format!("/v2/{name}/tags/list"),
        ] {
            let resp = get(&reg, &path);
            assert_eq!(
                resp.status(),
                StatusCode::BAD_REQUEST,
                "{}",
                &path[..path.len().min(80)]
            );
            let v = json(resp);
            assert_eq!(v["errors"][0]["code"], "NAME_INVALID");
            assert!(v.to_string().len() < 2000, "an error repeats a long name");
        }
    }
    assert_error(
        get(&reg, "/v2/library/app/manifests/1?ns=..%2f"),
        400,
        "NAME_INVALID",
    );
}

#[test]
fn tags_list_is_sorted_and_pages_with_n_last_and_link() {
    let reg = registry();
    let resp = get(&reg, "/v2/library/app/tags/list");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(hdr(&resp, "link").is_none());
    assert_eq!(
        json(resp),
        serde_json::json!({"name": "library/app", "tags": ["1", "2", "3"]})
    );
    let resp = get(&reg, "/v2/library/app/tags/list?n=2");
    assert_eq!(
        hdr(&resp, "link"),
        Some(r#"</v2/library/app/tags/list?last=2&n=2>; rel="next""#)
    );
    assert_eq!(json(resp)["tags"], serde_json::json!(["1", "2"]));
    let resp = get(&reg, "/v2/library/app/tags/list?last=2&n=2");
    assert!(hdr(&resp, "link").is_none());
    assert_eq!(json(resp)["tags"], serde_json::json!(["3"]));
    let resp = get(&reg, "/v2/library/app/tags/list?n=1&ns=docker.io");
    assert_eq!(
        hdr(&resp, "link"),
        Some(r#"</v2/library/app/tags/list?last=1&n=1&ns=docker.io>; rel="next""#)
    );
    let resp = get(&reg, "/v2/example.hub/library/app/tags/list");
    assert_eq!(
        json(resp),
        serde_json::json!({"name": "example.hub/library/app", "tags": ["1"]})
    );
    assert_eq!(
        json(get(&reg, "/v2/library/app/tags/list?n=0"))["tags"],
        serde_json::json!([])
    );
    assert_error(get(&reg, "/v2/no/such/tags/list"), 404, "NAME_UNKNOWN");
    assert_error(
        get(&reg, "/v2/library/app/tags/list?ns=quay.io"),
        404,
        "NAME_UNKNOWN",
    );
    assert_error(
        get(&reg, "/v2/library/app/tags/list?n=x"),
        400,
        "PAGINATION_NUMBER_INVALID",
    );
}

#[test]
fn catalog_names_repositories_the_way_a_name_without_ns_addresses_them() {
    let reg = registry();
    assert_eq!(
        json(get(&reg, "/v2/_catalog")),
        serde_json::json!({"repositories": [
            "example.hub/library/app", "library/app", "registry.local:5000/a/b"
        ]})
    );
    let resp = get(&reg, "/v2/_catalog?n=1");
    assert_eq!(
        hdr(&resp, "link"),
        Some(r#"</v2/_catalog?last=example.hub/library/app&n=1>; rel="next""#)
    );
    assert_eq!(
        json(resp)["repositories"],
        serde_json::json!(["example.hub/library/app"])
    );
    let resp = get(&reg, "/v2/_catalog?n=5&last=example.hub/library/app");
    assert_eq!(
        json(resp)["repositories"],
        serde_json::json!(["library/app", "registry.local:5000/a/b"])
    );
}

#[test]
fn every_catalog_name_resolves_to_its_images() {
    let reg = registry();
    let f = fixture();
    let v = json(get(&reg, "/v2/_catalog"));
    for name in v["repositories"].as_array().unwrap() {
        let resp = get(&reg, &format!("/v2/{}/tags/list", name.as_str().unwrap()));
        assert_eq!(resp.status(), StatusCode::OK, "{name}");
    }
    let resp = head(&reg, "/v2/library/app/manifests/3");
    assert_eq!(
        hdr(&resp, "docker-content-digest"),
        Some(f.app3.digest().to_string().as_str())
    );
    let resp = head(&reg, "/v2/library/app/manifests/2");
    assert_eq!(
        hdr(&resp, "docker-content-digest"),
        Some(f.app2.digest().to_string().as_str())
    );
}

#[test]
fn writes_are_405_unsupported() {
    let reg = registry();
    for m in [Method::PUT, Method::POST, Method::DELETE, Method::PATCH] {
        for uri in [
            "/v2/library/app/manifests/1",
            "/v2/library/app/blobs/uploads/",
            "/v2/",
        ] {
            let resp = reg.handle(&request(m.clone(), uri, None));
            assert_eq!(hdr(&resp, "allow"), Some("GET, HEAD"));
            assert_error(resp, 405, "UNSUPPORTED");
        }
    }
}

#[test]
fn unknown_paths_are_404() {
    let reg = registry();
    for uri in [
        "/",
        "/v1/",
        "/v2x",
        "/v2/library",
        "/v2/library/app/other/1",
        "/v2/a/tags/lists",
    ] {
        assert_error(get(&reg, uri), 404, "NOT_FOUND");
    }
}

#[test]
fn damaged_content_is_never_served() {
    let spec = ImageSpec::sample("docker.io", "library/x", "1", 9, 2000, 3000);
    let mut bytes = installer_with_images(std::slice::from_ref(&spec));
    let (raw_frame, zstd_frame) = {
        let payload = Installer::open(&bytes, None).unwrap().load_index().unwrap();
        let frame_of = |b: &[u8]| {
            let blob = payload.index().blob(&Sha256Digest::of(b)).unwrap();
            *payload.blob_frames(blob).start()
        };
        (frame_of(&spec.raw_layer), frame_of(&spec.zstd_layer))
    };
    assert_ne!(raw_frame, zstd_frame);
    damage_frame(&mut bytes, raw_frame);
    damage_frame(&mut bytes, zstd_frame);
    let reg = registry_of(bytes.leak());
    for layer in [&spec.raw_layer, &spec.zstd_layer] {
        let resp = get(&reg, &format!("/v2/library/x/blobs/{}", digest(layer)));
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(body(resp).is_err(), "a damaged frame was served");
    }
}

// Through a socket.

fn test_options() -> ServeOptions {
    ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        grace: Duration::from_secs(5),
        ..ServeOptions::default()
    }
}

/// Starts `serve` on 127.0.0.1:0; returns the address, the shutdown trigger and the task.
async fn start() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let reg = Arc::new(registry());
    let task = tokio::spawn(serve(listener, reg, test_options(), async {
        let _ = rx.await;
    }));
    (addr, tx, task)
}

#[test]
fn a_docker_hub_alias_as_ns_is_docker_io() {
    // Regression (issue 10, bug 1): `registry.hub.docker.com` was a namespace of its own.
    let reg = registry();
    let f = fixture();
    for ns in [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "registry.hub.docker.com",
    ] {
        let resp = head(&reg, &format!("/v2/library/app/manifests/1?ns={ns}"));
        assert_eq!(resp.status(), StatusCode::OK, "{ns}");
        assert_eq!(hdr(&resp, "oci-namespace"), Some("docker.io"), "{ns}");
        assert_eq!(
            hdr(&resp, "docker-content-digest"),
            Some(f.big.digest().to_string().as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_client_gets_answers_and_oversized_heads_are_refused() {
    let (addr, stop, task) = start().await;
    assert_refuses_hostile_requests(addr, test_options().header_read_timeout).await;

    // HEAD keeps Content-Length through hyper; the server still answers after all that.
    let f = fixture();
    let req = "HEAD /v2/library/app/manifests/1?ns=docker.io HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let r = exchange(addr, req.as_bytes()).await;
    let h = head_of(&r);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(
        h.contains(&format!("content-length: {}\r\n", f.big.manifest.len())),
        "{h}"
    );
    assert!(
        h.contains(&format!("docker-content-digest: {}", f.big.digest())),
        "{h}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_download_in_flight_finish_then_ends_the_server() {
    let (addr, stop, task) = start().await;
    let f = fixture();
    let layer = &f.big.zstd_layer;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /v2/library/app/blobs/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        digest(layer)
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(n > 0);
    stop.send(()).unwrap();
    // New connections are refused once the listener is closed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let mut all = first[..n].to_vec();
    all.extend_from_slice(&rest);
    let head_len = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(head_of(&all).starts_with("http/1.1 200"));
    assert!(all[head_len..] == layer[..], "the download was cut short");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn the_installer_file_is_served_whole_and_by_range_with_its_trailer_digest() {
    let bytes = fixture().bytes;
    // Without the file, the path is not a route.
    assert_eq!(
        get(&registry(), INSTALLER_PATH).status(),
        StatusCode::NOT_FOUND
    );
    let reg = registry_of(bytes).with_installer_file(bytes);
    let tail = &bytes[bytes.len() - airlock_payload::TRAILER_LEN as usize..];
    let want = Sha256Digest::of(tail).to_string();
    let resp = get(&reg, INSTALLER_PATH);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(hdr(&resp, TRAILER_DIGEST_HEADER), Some(want.as_str()));
    assert_eq!(
        hdr(&resp, "content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(body(resp).unwrap(), bytes);
    let resp = head(&reg, INSTALLER_PATH);
    assert_eq!(hdr(&resp, "accept-ranges"), Some("bytes"));
    assert!(body(resp).unwrap().is_empty());
    let from = bytes.len() - 1000;
    let resp = reg.handle(&request(
        Method::GET,
        INSTALLER_PATH,
        Some(&format!("bytes={from}-")),
    ));
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        hdr(&resp, "content-range"),
        Some(format!("bytes {from}-{}/{}", bytes.len() - 1, bytes.len()).as_str())
    );
    assert_eq!(body(resp).unwrap(), &bytes[from..]);
    let resp = reg.handle(&request(
        Method::GET,
        INSTALLER_PATH,
        Some(&format!("bytes={}-", bytes.len())),
    ));
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let resp = reg.handle(&request(Method::DELETE, INSTALLER_PATH, None));
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}
