//! Images captured into an installer and pulled back from its registry with real clients:
//! skopeo, containerd (through hosts.toml mirrors, then `ctr run`), and curl for the
//! read-only pull checks of the OCI distribution-spec conformance suite.

mod util;


use sha2::Digest as _;

use airlock_fixtures::images::{
    same_name_different_registries, write_docker_archive_legacy, write_docker_archive_oci,
    write_oci_layout, BuiltImage, ImageContent,
};
use util::oci::{
    body_of, containerd_ready, curl, header_of, pull_and_run, status_of, write_hosts_dir,
    Containerd, ServedRegistry,
};
use util::{have_command, prerequisite, Workdir};

fn content(message: &str, seed: Option<u64>) -> ImageContent {
    ImageContent {
        message: message.to_owned(),
        extra_layer_seed: seed,
    }
}

/// Every kind of image source in one installer.
struct Captured {
    work: Workdir,
    installer: std::path::PathBuf,
    app: BuiltImage,
    multi: BuiltImage,
    etcd: BuiltImage,
    newstyle: BuiltImage,
    same_docker: BuiltImage,
    same_hub: BuiltImage,
}

fn capture() -> Captured {
    let work = Workdir::new();
    let layout = work.join("images/layout");
    let built = write_oci_layout(
        &layout,
        &[
            (
                "1.0",
                content("hello from example.hub/team/app", Some(7)),
                false,
            ),
            ("multi", content("multi-arch", None), true),
        ],
    )
    .expect("write the OCI layout");
    let (app, multi) = (built[0].clone(), built[1].clone());
    let etcd = write_docker_archive_legacy(
        &work.join("images/etcd.tar"),
        "quay.io/coreos/etcd:v3.5.0",
        &content("etcd legacy archive", None),
    )
    .expect("write the legacy docker archive");
    let newstyle = write_docker_archive_oci(
        &work.join("images/new.tar"),
        "registry.local:5000/a/b:1",
        &content("new-style archive", None),
    )
    .expect("write the v25 docker archive");
    let (same_docker, same_hub) =
        same_name_different_registries(&work.join("images/same")).expect("write same-name layouts");
    work.write_spec(
        r#"name: images
version: "1"
images:
  - ref: example.hub/team/app:1.0
    from: oci:images/layout:1.0
  - ref: docker.io/library/multi:1
    from: oci:images/layout:multi
  - ref: quay.io/coreos/etcd:v3.5.0
    from: docker-archive:images/etcd.tar
  - ref: registry.local:5000/a/b:1
    from: docker-archive:images/new.tar
  - ref: docker.io/library/app:1
    from: oci:images/same/docker:1
  - ref: example.hub/library/app:1
    from: oci:images/same/hub:1
"#,
    );
    let installer = work.build("images.run");
    Captured {
        work,
        installer,
        app,
        multi,
        etcd,
        newstyle,
        same_docker,
        same_hub,
    }
}

fn skopeo_digest(reference: &str) -> String {
    let r = util::run({
        let mut c = std::process::Command::new("skopeo");
        c.args(["inspect", "--tls-verify=false", "--raw", reference]);
        c
    })
    .success();
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(r.stdout.as_bytes()))
    )
}

#[test]
fn skopeo_pulls_every_captured_image_with_the_source_digests() {
    if !prerequisite(
        have_command("skopeo"),
        "skopeo test",
        "skopeo is not installed (apt-get install skopeo)",
    ) {
        return;
    }
    let c = capture();
    let reg = ServedRegistry::start(&c.installer);
    let a = &reg.addr;
    // `registry.local:5000/a/b:1` is left out: no client can put a host with a port into a
    // path prefix (skopeo rejects the reference); containerd reaches it through `ns`.
    let cases: [(&str, &str); 5] = [
        ("example.hub/team/app:1.0", c.app.top_digest()),
        ("docker.io/library/multi:1", c.multi.top_digest()),
        ("quay.io/coreos/etcd:v3.5.0", c.etcd.top_digest()),
        ("docker.io/library/app:1", c.same_docker.top_digest()),
        ("example.hub/library/app:1", c.same_hub.top_digest()),
    ];
    for (name, want) in cases {
        // skopeo has no `ns`: the upstream travels as a path prefix; docker.io is the default.
        let path = name.strip_prefix("docker.io/").unwrap_or(name);
        let got = skopeo_digest(&format!("docker://{a}/{path}"));
        if !want.is_empty() {
            assert_eq!(got, want, "{name}");
        }
    }
    assert_ne!(
        c.same_docker.top_digest(),
        c.same_hub.top_digest(),
        "fixtures differ"
    );
    // A full copy re-checks every blob's digest on the client side.
    let out = c.work.join("copied");
    util::run({
        let mut cmd = std::process::Command::new("skopeo");
        cmd.args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{a}/example.hub/team/app:1.0"),
            &format!("oci:{}:x", out.display()),
        ]);
        cmd
    })
    .success();
    for layer in &c.app.layers {
        let hex = layer.digest.strip_prefix("sha256:").unwrap();
        assert!(
            out.join("blobs/sha256").join(hex).exists(),
            "layer {} was not copied",
            layer.digest
        );
    }
}

#[test]
fn containerd_pulls_through_per_host_mirrors_and_runs_the_images() {
    if !containerd_ready("containerd per-host test") {
        return;
    }
    let c = capture();
    let reg = ServedRegistry::start(&c.installer);
    let hosts = c.work.join("certs.d");
    write_hosts_dir(
        &hosts,
        &["docker.io", "quay.io", "example.hub", "registry.local:5000"],
        &reg.addr,
    );
    let ctd = Containerd::start();
    assert_eq!(
        pull_and_run(&ctd, &hosts, "example.hub/team/app:1.0", "app"),
        c.app.expected_output()
    );
    // Same repository and tag under two upstreams: containerd's `ns` keeps them apart.
    assert_eq!(
        pull_and_run(&ctd, &hosts, "docker.io/library/app:1", "a1"),
        c.same_docker.expected_output()
    );
    assert_eq!(
        pull_and_run(&ctd, &hosts, "example.hub/library/app:1", "a2"),
        c.same_hub.expected_output()
    );
    assert_eq!(
        pull_and_run(&ctd, &hosts, "quay.io/coreos/etcd:v3.5.0", "etcd"),
        c.etcd.expected_output()
    );
    assert_eq!(
        pull_and_run(&ctd, &hosts, "registry.local:5000/a/b:1", "ab"),
        c.newstyle.expected_output()
    );
    assert_eq!(
        pull_and_run(&ctd, &hosts, "docker.io/library/multi:1", "multi"),
        c.multi.expected_output()
    );
}

#[test]
fn containerd_pulls_through_the_default_mirror_alone() {
    if !containerd_ready("containerd _default test") {
        return;
    }
    let c = capture();
    let reg = ServedRegistry::start(&c.installer);
    let hosts = c.work.join("certs.d");
    write_hosts_dir(&hosts, &["_default"], &reg.addr);
    let ctd = Containerd::start();
    assert_eq!(
        pull_and_run(&ctd, &hosts, "example.hub/library/app:1", "hub"),
        c.same_hub.expected_output()
    );
    assert_eq!(
        pull_and_run(&ctd, &hosts, "docker.io/library/app:1", "dock"),
        c.same_docker.expected_output()
    );
}

/// The read-only pull checks of the OCI distribution-spec conformance suite, over HTTP.
#[test]
fn pull_api_follows_the_distribution_spec() {
    if !prerequisite(
        have_command("curl"),
        "conformance test",
        "curl is not installed",
    ) {
        return;
    }
    let c = capture();
    let reg = ServedRegistry::start(&c.installer);
    let base = reg.url();
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
    let missing = format!("sha256:{}", "0".repeat(64));

    let r = curl(&[&format!("{base}/v2/")]);
    assert_eq!(status_of(&r), 200, "{}", r.describe());

    // Manifests: GET and HEAD by tag and by digest.
    let by_tag = curl(&[
        "-H",
        accept,
        &format!("{base}/v2/team/app/manifests/1.0?ns=example.hub"),
    ]);
    assert_eq!(status_of(&by_tag), 200, "{}", by_tag.describe());
    assert_eq!(
        header_of(&by_tag, "Docker-Content-Digest").as_deref(),
        Some(c.app.top_digest())
    );
    assert_eq!(
        header_of(&by_tag, "Content-Type").as_deref(),
        Some(c.app.manifest.media_type.as_str())
    );
    assert_eq!(
        header_of(&by_tag, "Content-Length"),
        Some(body_of(&by_tag).len().to_string())
    );
    let head = curl(&[
        "-I",
        "-H",
        accept,
        &format!(
            "{base}/v2/example.hub/team/app/manifests/{}",
            c.app.top_digest()
        ),
    ]);
    assert_eq!(status_of(&head), 200, "{}", head.describe());
    assert_eq!(
        header_of(&head, "Content-Length"),
        Some(c.app.manifest.size.to_string())
    );
    assert!(body_of(&head).is_empty());

    // Blobs: GET, HEAD, Range.
    let layer = &c.app.layers[0];
    let blob_url = format!("{base}/v2/team/app/blobs/{}?ns=example.hub", layer.digest);
    let head = curl(&["-I", &blob_url]);
    assert_eq!(status_of(&head), 200, "{}", head.describe());
    assert_eq!(
        header_of(&head, "Content-Length"),
        Some(layer.size.to_string())
    );
    assert_eq!(
        header_of(&head, "Docker-Content-Digest").as_deref(),
        Some(layer.digest.as_str())
    );
    let range = curl(&["-H", "Range: bytes=10-19", &blob_url]);
    assert_eq!(status_of(&range), 206, "{}", range.describe());
    assert_eq!(
        header_of(&range, "Content-Range"),
        Some(format!("bytes 10-19/{}", layer.size))
    );
    assert_eq!(header_of(&range, "Content-Length").as_deref(), Some("10"));

    // 404s: missing blob, missing manifest by tag and by digest, unknown repository.
    for (url, code) in [
        (
            format!("{base}/v2/team/app/blobs/{missing}?ns=example.hub"),
            "BLOB_UNKNOWN",
        ),
        (
            format!("{base}/v2/team/app/manifests/nope?ns=example.hub"),
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("{base}/v2/team/app/manifests/{missing}?ns=example.hub"),
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("{base}/v2/team/app/manifests/1.0?ns=quay.io"),
            "MANIFEST_UNKNOWN",
        ),
    ] {
        let r = curl(&["-H", accept, &url]);
        assert_eq!(status_of(&r), 404, "{url}: {}", r.describe());
        assert!(body_of(&r).contains(code), "{url}: {}", r.describe());
    }
    // A malformed digest is 400 (or 404, both allowed by the spec).
    let r = curl(&[&format!(
        "{base}/v2/team/app/blobs/sha256:xyz?ns=example.hub"
    )]);
    assert!(matches!(status_of(&r), 400 | 404), "{}", r.describe());

    // Tags list with paging.
    let all = curl(&[&format!("{base}/v2/example.hub/library/app/tags/list")]);
    assert_eq!(status_of(&all), 200, "{}", all.describe());
    assert!(body_of(&all).contains("\"1\""), "{}", all.describe());
    let page = curl(&[&format!("{base}/v2/library/multi/tags/list?n=1")]);
    assert_eq!(status_of(&page), 200, "{}", page.describe());
    let unknown = curl(&[&format!("{base}/v2/no/such/tags/list")]);
    assert_eq!(status_of(&unknown), 404, "{}", unknown.describe());
    assert!(body_of(&unknown).contains("NAME_UNKNOWN"));
}

#[test]
fn list_and_info_show_the_captured_images() {
    let c = capture();
    let info = c
        .work
        .run_installer(&c.installer, &["info", "--json"])
        .success()
        .json();
    assert_eq!(info["images"], 6, "{info}");
    let list = c.work.run_installer(&c.installer, &["list"]).success();
    for name in [
        "example.hub/team/app:1.0",
        "quay.io/coreos/etcd:v3.5.0",
        "docker.io/library/app:1",
    ] {
        assert!(
            list.stdout.contains(name),
            "{name} missing from list: {}",
            list.stdout
        );
    }
    c.work
        .run_installer(&c.installer, &["verify", "--deep"])
        .success();
}

#[test]
fn shared_layers_are_stored_once() {
    let c = capture();
    let info = c
        .work
        .run_installer(&c.installer, &["info", "--json"])
        .success()
        .json();
    // Six images share the busybox base layer; distinct blobs must be fewer than the sum.
    let per_image: usize = [
        &c.app,
        &c.multi,
        &c.etcd,
        &c.newstyle,
        &c.same_docker,
        &c.same_hub,
    ]
    .iter()
    .map(|i| i.layers.len() + 2)
    .sum();
    assert!(
        info["blob_count"].as_u64().unwrap() < per_image as u64,
        "{info}"
    );
}
