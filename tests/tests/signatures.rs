//! Image signatures and attestations carried into the air gap (`signatures: true`): a
//! cosign-style `sha256-<hex>.sig` tag and an OCI 1.1 referrer (a manifest whose `subject` is
//! the image), from an OCI layout and from Debian's docker-registry (distribution 2.8, which
//! has no referrers API: capture falls back to the referrers tag schema), carried through a
//! build, then fetched from `registry serve` by skopeo (the tag) and by referrers requests
//! (with and without the `artifactType` filter).

mod util;

use std::fs;
use std::process::Command;

use airlock_fixtures::images::{
    add_signature_artifacts, write_oci_layout, BuiltImage, ImageContent, SignatureArtifacts,
    REFERRER_ARTIFACT_TYPE,
};
use serde_json::Value;
use util::oci::{body_of, curl, header_of, start_distribution, status_of, ServedRegistry};
use util::{free_port, have_command, prerequisite, run, Workdir};

/// A layout with `1.0` (signed: a .sig tag and a referrer) and `plain` (nothing).
fn signed_layout(w: &Workdir) -> (BuiltImage, BuiltImage, SignatureArtifacts) {
    let dir = w.join("images/layout");
    let built = write_oci_layout(
        &dir,
        &[
            ("1.0", ImageContent::new("signed app"), false),
            ("plain", ImageContent::new("unsigned app"), false),
        ],
    )
    .expect("write the OCI layout");
    let artifacts = add_signature_artifacts(&dir, &built[0].manifest, "example.hub/team/app")
        .expect("add the signature artifacts");
    (built[0].clone(), built[1].clone(), artifacts)
}

fn referrers(url: &str, repo: &str, subject: &str, filter: Option<&str>) -> util::Run {
    let mut target = format!("{url}/v2/{repo}/referrers/{subject}");
    if let Some(t) = filter {
        target.push_str(&format!(
            "?artifactType={}",
            t.replace('/', "%2F").replace('+', "%2B")
        ));
    }
    curl(&["-s", "-i", &target])
}

fn digests_in(index: &Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn signatures_from_an_oci_layout_are_carried_and_served() {
    let w = Workdir::new();
    let (app, plain, art) = signed_layout(&w);
    w.write_spec(
        "name: demo\nversion: \"1\"\nimages:\n  - ref: example.hub/team/app:1.0\n    from: oci:images/layout:1.0\n    signatures: true\n  - ref: example.hub/team/app:plain\n    from: oci:images/layout:plain\n",
    );
    let edge = w.build("edge.run");
    w.run_installer(&edge, &["-q", "verify", "--deep"])
        .success();

    // `list` says which image is signed.
    let list = w.run_installer(&edge, &["list"]).success();
    let line = |tag: &str| {
        list.stdout
            .lines()
            .find(|l| l.contains(&format!("example.hub/team/app:{tag}")))
            .unwrap_or_else(|| panic!("no {tag} in:\n{}", list.stdout))
            .to_owned()
    };
    assert!(line("1.0").contains("(signed: sig)"), "{}", list.stdout);
    assert!(!line("plain").contains("signed"), "{}", list.stdout);
    let json = w.run_installer(&edge, &["list", "--json"]).success().json();
    let refs: Vec<String> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "image")
        .map(|r| r["reference"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        refs.contains(&format!("example.hub/team/app:{}", art.sig_tag)),
        "{refs:?}"
    );
    assert!(
        refs.contains(&format!("example.hub/team/app@{}", art.referrer.digest)),
        "{refs:?}"
    );
    // The unsigned image's (absent) artifacts were not looked for: no .sig of it.
    assert!(!refs
        .iter()
        .any(|r| r.contains(&format!("sha256-{}", plain.manifest.hex()))));

    let served = ServedRegistry::start(&edge);
    let url = served.url();
    // The referrers API, without and with the artifactType filter.
    let r = referrers(&url, "example.hub/team/app", &app.manifest.digest, None);
    assert_eq!(status_of(&r), 200, "{}", r.describe());
    assert_eq!(
        header_of(&r, "content-type").as_deref(),
        Some("application/vnd.oci.image.index.v1+json")
    );
    assert_eq!(header_of(&r, "oci-filters-applied"), None);
    let index: Value = serde_json::from_str(body_of(&r)).unwrap();
    assert_eq!(
        digests_in(&index),
        std::slice::from_ref(&art.referrer.digest)
    );
    assert_eq!(
        index["manifests"][0]["artifactType"],
        REFERRER_ARTIFACT_TYPE
    );
    assert_eq!(index["manifests"][0]["size"], art.referrer.size);
    assert!(index["manifests"][0]["annotations"]["org.opencontainers.image.created"].is_string());
    let r = referrers(
        &url,
        "example.hub/team/app",
        &app.manifest.digest,
        Some(REFERRER_ARTIFACT_TYPE),
    );
    assert_eq!(
        header_of(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let index: Value = serde_json::from_str(body_of(&r)).unwrap();
    assert_eq!(digests_in(&index).len(), 1);
    let r = referrers(
        &url,
        "example.hub/team/app",
        &app.manifest.digest,
        Some("application/x-other"),
    );
    assert_eq!(status_of(&r), 200);
    let index: Value = serde_json::from_str(body_of(&r)).unwrap();
    assert!(digests_in(&index).is_empty());
    // An image without referrers has an empty list; a bad digest is refused.
    let r = referrers(&url, "example.hub/team/app", &plain.manifest.digest, None);
    assert!(digests_in(&serde_json::from_str(body_of(&r)).unwrap()).is_empty());
    assert_eq!(
        status_of(&referrers(
            &url,
            "example.hub/team/app",
            "sha256:nothex",
            None
        )),
        400
    );
    // The referrer manifest itself, by digest.
    let r = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!(
            "{url}/v2/example.hub/team/app/manifests/{}",
            art.referrer.digest
        ),
    ]);
    assert_eq!(r.stdout.trim(), "200");

    // skopeo fetches the .sig tag as stored.
    if !prerequisite(have_command("skopeo"), "skopeo", "skopeo is not installed") {
        return;
    }
    let out = w.join("sig-copy");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--src-tls-verify=false", "--preserve-digests"])
        .arg(format!(
            "docker://{}/example.hub/team/app:{}",
            url.trim_start_matches("http://"),
            art.sig_tag
        ))
        .arg(format!("oci:{}:sig", out.display()));
    let copy = run(cmd);
    assert_eq!(copy.code, Some(0), "{}", copy.describe());
    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], art.sig.digest);
}

/// Pushes blob `bytes` and then manifest(s) to distribution at `base` with curl.
fn push_blob(base: &str, repo: &str, digest: &str, file: &std::path::Path) {
    let start = curl(&[
        "-s",
        "-i",
        "-X",
        "POST",
        &format!("{base}/v2/{repo}/blobs/uploads/"),
    ]);
    let location = header_of(&start, "location").expect("an upload location");
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{base}{location}")
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{location}{sep}digest={digest}"),
    ]);
    assert_eq!(
        put.stdout.trim(),
        "201",
        "push blob {digest}: {}",
        put.describe()
    );
}

fn push_manifest(
    base: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    file: &std::path::Path,
) {
    let put = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {media_type}"),
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{base}/v2/{repo}/manifests/{reference}"),
    ]);
    assert_eq!(
        put.stdout.trim(),
        "201",
        "push manifest {reference}: {}",
        put.describe()
    );
}

#[test]
fn signatures_from_distribution_use_the_sig_tag_and_the_referrers_tag_schema() {
    if !prerequisite(
        have_command("docker-registry") && have_command("skopeo") && have_command("curl"),
        "signatures_from_distribution",
        "docker-registry, skopeo or curl is not installed",
    ) {
        return;
    }
    let w = Workdir::new();
    let (app, _, art) = signed_layout(&w);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        w.join("dist/data").display()
    );
    let mut registry = start_distribution(&w.join("dist"), port, &config);
    // The image itself, with skopeo.
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--dest-tls-verify=false", "--preserve-digests"])
        .arg(format!("oci:{}:1.0", w.join("images/layout").display()))
        .arg(format!("docker://127.0.0.1:{port}/team/app:1.0"));
    let copy = run(cmd);
    assert_eq!(copy.code, Some(0), "{}", copy.describe());
    // The artifacts, with curl: blobs, the .sig tag, the referrer by digest, and the
    // referrers tag schema's index (distribution 2.8 has no referrers API).
    let blobs = w.join("images/layout/blobs/sha256");
    for (info, _) in &art.blobs {
        if info.digest != art.sig.digest && info.digest != art.referrer.digest {
            push_blob(&base, "team/app", &info.digest, &blobs.join(info.hex()));
        }
    }
    let sig_file = blobs.join(art.sig.hex());
    push_manifest(
        &base,
        "team/app",
        &art.sig_tag,
        &art.sig.media_type,
        &sig_file,
    );
    let ref_file = blobs.join(art.referrer.hex());
    push_manifest(
        &base,
        "team/app",
        &art.referrer.digest,
        &art.referrer.media_type,
        &ref_file,
    );
    let fallback = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": art.referrer.media_type, "digest": art.referrer.digest,
            "size": art.referrer.size, "artifactType": REFERRER_ARTIFACT_TYPE
        }]
    });
    let fallback_file = w.write_file("fallback.json", serde_json::to_vec(&fallback).unwrap());
    push_manifest(
        &base,
        "team/app",
        &format!("sha256-{}", app.manifest.hex()),
        "application/vnd.oci.image.index.v1+json",
        &fallback_file,
    );

    w.write_spec(&format!(
        "name: demo\nversion: \"1\"\nsignatures: true\nimages:\n  - ref: example.hub/team/app:1.0\n    from: docker://127.0.0.1:{port}/team/app:1.0\n"
    ));
    let edge = w.join("edge.run");
    let (cache, no_auth) = (w.join("cache"), w.join("no-auth.json"));
    w.airlock_env(
        &[
            "-q",
            "build",
            "-f",
            "airlock.yaml",
            "-o",
            "edge.run",
            "--registry-mirror",
            &format!("127.0.0.1:{port}=http://127.0.0.1:{port}"),
        ],
        &[
            ("AIRLOCK_CACHE_DIR", cache.to_str().unwrap()),
            ("REGISTRY_AUTH_FILE", no_auth.to_str().unwrap()),
        ],
    )
    .success();
    let _ = registry.kill();
    let _ = registry.wait();
    w.run_installer(&edge, &["-q", "verify"]).success();

    let served = ServedRegistry::start(&edge);
    let url = served.url();
    let r = referrers(&url, "example.hub/team/app", &app.manifest.digest, None);
    let index: Value = serde_json::from_str(body_of(&r)).unwrap();
    assert_eq!(
        digests_in(&index),
        std::slice::from_ref(&art.referrer.digest),
        "{}",
        r.describe()
    );
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!(
            "docker://{}/example.hub/team/app:{}",
            url.trim_start_matches("http://"),
            art.sig_tag
        ));
    let raw = run(cmd);
    assert_eq!(raw.code, Some(0), "{}", raw.describe());
    assert!(
        raw.stdout.contains("dev.cosignproject.cosign/signature"),
        "{}",
        raw.stdout
    );
}
