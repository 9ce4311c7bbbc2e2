use std::path::Path;

use airlock_payload::Sha256Digest;

use super::testutil::{layer, tar_bytes, Layout};
use super::*;
use crate::spec::{ImageSource, ImageSpec};

fn options(platform: &str) -> CaptureOptions {
    CaptureOptions {
        platform: platform.parse().unwrap(),
        registry: RegistryOptions::default(),
        progress: false,
        parallel: 2,
    }
}

fn oci(reference: &str, dir: &Path, tag: Option<&str>) -> ImageSpec {
    ImageSpec {
        reference: reference.parse().unwrap(),
        from: Some(ImageSource::OciLayout {
            dir: dir.to_owned(),
            tag: tag.map(str::to_owned),
        }),
    }
}

fn archive(reference: &str, file: &Path, wanted: Option<&str>) -> ImageSpec {
    ImageSpec {
        reference: reference.parse().unwrap(),
        from: Some(ImageSource::DockerArchive {
            file: file.to_owned(),
            reference: wanted.map(|w| w.parse().unwrap()),
        }),
    }
}

fn capture(spec: ImageSpec, platform: &str) -> Result<CapturedImage, Error> {
    capture_all(&[spec], &options(platform)).map(|mut v| v.remove(0))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn read_blob(b: &ImageBlob) -> Vec<u8> {
    let mut buf = vec![0; b.size as usize];
    b.source.read_at(0, &mut buf).unwrap();
    buf
}

fn digests(c: &CapturedImage) -> Vec<Sha256Digest> {
    c.blobs.iter().map(|b| b.digest).collect()
}

#[test]
fn oci_layout_import_captures_manifest_config_and_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&tmp.path().join("app"));
    let m = l.manifest(
        "amd64",
        &[layer("a.txt", b"alpha"), layer("b.txt", b"beta")],
        true,
    );
    l.tag(&m, "1.0", &[]);
    let c = capture(oci("example.hub/team/app:1.0", &l.dir, None), "linux/amd64").unwrap();
    assert_eq!(c.image.registry, "example.hub");
    assert_eq!(c.image.repository, "team/app");
    assert_eq!(c.image.tag.as_deref(), Some("1.0"));
    assert_eq!(c.image.digest, m.digest);
    assert_eq!(c.image.manifests.len(), 1);
    assert_eq!(c.image.manifests[0].media_type, OCI_MANIFEST);
    assert_eq!(
        c.image.manifests[0].platform.as_deref(),
        Some("linux/amd64")
    );
    let mut content = vec![m.config.unwrap()];
    content.extend(&m.layers);
    assert_eq!(c.image.blobs, content);
    let mut all = vec![m.digest];
    all.extend(&content);
    assert_eq!(digests(&c), all);
    for b in &c.blobs {
        assert_eq!(Sha256Digest::of(&read_blob(b)), b.digest);
    }
    assert!(c.blobs[2].precompressed && c.blobs[3].precompressed);
    assert!(!c.blobs[0].precompressed && !c.blobs[1].precompressed);
}

#[test]
fn uncompressed_layout_layers_are_left_to_the_writer_to_compress() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(tmp.path());
    let m = l.manifest("amd64", &[layer("a", b"x")], false);
    l.tag(&m, "v1", &[]);
    let c = capture(oci("app:v1", &l.dir, None), "linux/amd64").unwrap();
    assert_eq!(c.image.registry, "docker.io");
    assert_eq!(c.image.repository, "library/app");
    let layer = c.blobs.last().unwrap();
    assert_eq!(layer.media_type, OCI_LAYER_TAR);
    assert!(!layer.precompressed);
}

#[test]
fn a_damaged_layout_blob_is_reported_with_the_image_and_the_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(tmp.path());
    let m = l.manifest("amd64", &[layer("a", b"payload")], true);
    l.tag(&m, "1.0", &[]);
    let path = l.blob_path(m.layers[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = capture(oci("example.hub/team/app:1.0", &l.dir, None), "linux/amd64").unwrap_err();
    assert_eq!(err.image, "example.hub/team/app:1.0");
    let text = error_chain(&err);
    assert!(
        text.starts_with("failed to capture image example.hub/team/app:1.0: "),
        "{text}"
    );
    assert!(
        text.contains(&format!("blob {} does not match its digest", m.layers[0])),
        "{text}"
    );
}

#[test]
fn a_missing_layout_blob_is_reported_with_the_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(tmp.path());
    let m = l.manifest("amd64", &[layer("a", b"payload")], true);
    l.tag(&m, "1.0", &[]);
    std::fs::remove_file(l.blob_path(m.config.unwrap())).unwrap();
    let text = error_chain(&capture(oci("a/b:1.0", &l.dir, None), "linux/amd64").unwrap_err());
    assert!(
        text.contains(&format!(
            "blob {} is missing from {}",
            m.config.unwrap(),
            tmp.path().display()
        )),
        "{text}"
    );
}

#[test]
fn an_absent_tag_is_reported_with_the_available_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(tmp.path());
    let m = l.manifest("amd64", &[layer("a", b"1")], true);
    l.tag(&m, "2.0", &[]);
    l.tag(&m, "1.0", &[]);
    let text =
        error_chain(&capture(oci("a/b:1.0", &l.dir, Some("3.0")), "linux/amd64").unwrap_err());
    assert!(text.contains("tag `3.0` not found in"), "{text}");
    assert!(text.contains("(available tags: 1.0, 2.0)"), "{text}");
}

#[test]
fn the_layout_tag_defaults_to_the_references_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(tmp.path());
    let one = l.manifest("amd64", &[layer("a", b"1")], true);
    let two = l.manifest("amd64", &[layer("a", b"2")], true);
    l.tag(&one, "1", &[]);
    l.tag(&two, "2", &[]);
    let c = capture(oci("a/b:2", &l.dir, None), "linux/amd64").unwrap();
    assert_eq!(c.image.digest, two.digest);
    // An explicit TAG wins; the served name keeps the reference's tag.
    let c = capture(oci("a/b:2", &l.dir, Some("1")), "linux/amd64").unwrap();
    assert_eq!(c.image.digest, one.digest);
    assert_eq!(c.image.tag.as_deref(), Some("2"));
}

#[test]
fn a_pinned_digest_must_match_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(tmp.path());
    let m = l.manifest("amd64", &[layer("a", b"1")], true);
    l.tag(&m, "1", &[]);
    let by_digest = format!("a/b@{}", m.digest);
    let c = capture(oci(&by_digest, &l.dir, None), "linux/amd64").unwrap();
    assert_eq!(c.image.tag, None);
    assert_eq!(c.image.digest, m.digest);
    let wrong = format!("a/b:1@{}", Sha256Digest::of(b"other"));
    let text = error_chain(&capture(oci(&wrong, &l.dir, None), "linux/amd64").unwrap_err());
    assert!(text.contains("but the reference pins"), "{text}");
}

#[test]
fn platform_selection_keeps_the_index_and_only_the_amd64_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(tmp.path());
    let shared = layer("shared", b"same in both");
    let amd = l.manifest("amd64", &[shared.clone(), layer("x", b"amd64 only")], true);
    let arm = l.manifest("arm64", &[shared, layer("x", b"arm64 only")], true);
    let index = l.index(&[(&arm, "arm64"), (&amd, "amd64")]);
    l.tag(&index, "1.0", &[]);

    let c = capture(oci("a/b:1.0", &l.dir, None), "linux/amd64").unwrap();
    assert_eq!(c.image.digest, index.digest);
    let manifests: Vec<_> = c
        .image
        .manifests
        .iter()
        .map(|m| (m.digest, m.media_type.as_str(), m.platform.as_deref()))
        .collect();
    assert_eq!(
        manifests,
        vec![
            (index.digest, OCI_INDEX, None),
            (amd.digest, OCI_MANIFEST, Some("linux/amd64")),
        ]
    );
    let mut content = vec![amd.config.unwrap()];
    content.extend(&amd.layers);
    assert_eq!(c.image.blobs, content);
    let stored = digests(&c);
    assert_eq!(stored.len(), 5);
    assert!(!stored.contains(&arm.digest));
    assert!(!stored.contains(&arm.config.unwrap()));
    assert!(!stored.contains(&arm.layers[1]));
    // The index is kept byte for byte.
    assert_eq!(
        read_blob(&c.blobs[0]),
        std::fs::read(l.blob_path(index.digest)).unwrap()
    );

    let c = capture(oci("a/b:1.0", &l.dir, None), "linux/arm64").unwrap();
    assert_eq!(c.image.manifests[1].digest, arm.digest);
    assert_eq!(
        c.image.manifests[1].platform.as_deref(),
        Some("linux/arm64")
    );
}

#[test]
fn an_index_without_the_platform_lists_what_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(tmp.path());
    let arm = l.manifest("arm64", &[layer("x", b"arm")], true);
    let index = l.index(&[(&arm, "arm64")]);
    l.tag(&index, "1.0", &[]);
    let text = error_chain(&capture(oci("a/b:1.0", &l.dir, None), "linux/amd64").unwrap_err());
    assert!(
        text.contains(&format!(
            "index {} has no manifest for linux/amd64 (it has: linux/arm64)",
            index.digest
        )),
        "{text}"
    );
}

/// A `docker save` (docker ≤ 24) archive of one image with uncompressed layers.
fn legacy_archive(
    path: &Path,
    tags: &[&str],
    diff_ids_override: Option<Vec<String>>,
) -> Vec<Vec<u8>> {
    let layers = vec![layer("etc/a", b"first"), layer("etc/b", b"second")];
    let diff_ids: Vec<String> = diff_ids_override.unwrap_or_else(|| {
        layers
            .iter()
            .map(|l| Sha256Digest::of(l).to_string())
            .collect()
    });
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    let config_name = format!("{}.json", Sha256Digest::of(&config).hex());
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": tags,
        "Layers": ["1111/layer.tar", "2222/layer.tar"]
    }]))
    .unwrap();
    let files: Vec<(&str, &[u8])> = vec![
        ("1111/VERSION", b"1.0"),
        ("1111/layer.tar", &layers[0]),
        ("2222/layer.tar", &layers[1]),
        (&config_name, &config),
        ("manifest.json", &manifest),
    ];
    std::fs::write(path, tar_bytes(&files)).unwrap();
    layers
}

#[test]
fn legacy_docker_archive_gets_a_manifest_whose_layers_are_the_diff_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("etcd.tar");
    let layers = legacy_archive(&tar, &["quay.io/coreos/etcd:v3.5.0"], None);
    let c = capture(
        archive("quay.io/coreos/etcd:v3.5.0", &tar, None),
        "linux/amd64",
    )
    .unwrap();
    assert_eq!(c.image.manifests.len(), 1);
    assert_eq!(c.image.manifests[0].media_type, OCI_MANIFEST);
    assert_eq!(
        c.image.manifests[0].platform.as_deref(),
        Some("linux/amd64")
    );
    let manifest: serde_json::Value = serde_json::from_slice(&read_blob(&c.blobs[0])).unwrap();
    assert_eq!(Sha256Digest::of(&read_blob(&c.blobs[0])), c.image.digest);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
    let layer_digests: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], OCI_LAYER_TAR);
            l["digest"].as_str().unwrap().to_owned()
        })
        .collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| Sha256Digest::of(l).to_string())
        .collect();
    assert_eq!(layer_digests, diff_ids);
    // The layers are read in place from the tar, uncompressed, and left to zstd.
    for (blob, content) in c.blobs[2..].iter().zip(&layers) {
        assert!(!blob.precompressed);
        assert_eq!(&read_blob(blob), content);
    }
    // The synthesized manifest is the same on every build.
    let again = capture(
        archive("quay.io/coreos/etcd:v3.5.0", &tar, None),
        "linux/amd64",
    )
    .unwrap();
    assert_eq!(again.image, c.image);
    assert_eq!(read_blob(&again.blobs[0]), read_blob(&c.blobs[0]));
}

#[test]
fn a_legacy_layer_that_differs_from_its_diff_id_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("bad.tar");
    let wrong = Sha256Digest::of(b"not the layer").to_string();
    legacy_archive(&tar, &["a:1"], Some(vec![wrong.clone(), wrong.clone()]));
    let text = error_chain(&capture(archive("a:1", &tar, None), "linux/amd64").unwrap_err());
    assert!(text.contains("layer 1111/layer.tar in"), "{text}");
    assert!(
        text.contains(&format!("but the config's diff_id is {wrong}")),
        "{text}"
    );
}

#[test]
fn a_docker_archive_image_is_picked_by_its_repo_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("one.tar");
    legacy_archive(&tar, &["busybox:1.36"], None);
    assert!(capture(
        archive("x/y:1", &tar, Some("docker.io/library/busybox:1.36")),
        "linux/amd64"
    )
    .is_ok());
    let text = error_chain(
        &capture(archive("x/y:1", &tar, Some("busybox:1.37")), "linux/amd64").unwrap_err(),
    );
    assert!(
        text.contains("image `docker.io/library/busybox:1.37` not found in")
            && text.contains("busybox:1.36"),
        "{text}"
    );
}

#[test]
fn a_docker_25_archive_is_read_as_an_oci_layout_inside_the_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&tmp.path().join("layout"));
    let one = l.manifest("amd64", &[layer("a", b"one")], false);
    let two = l.manifest("amd64", &[layer("a", b"two")], false);
    l.tag(
        &one,
        "1",
        &[("io.containerd.image.name", "docker.io/library/app:1")],
    );
    l.tag(
        &two,
        "2",
        &[("io.containerd.image.name", "docker.io/library/app:2")],
    );
    let tar = tmp.path().join("save.tar");
    l.to_tar(&tar);
    let c = capture(
        archive("example.hub/app:2", &tar, Some("app:2")),
        "linux/amd64",
    )
    .unwrap();
    assert_eq!(c.image.digest, two.digest);
    assert_eq!(c.image.registry, "example.hub");
    for b in &c.blobs {
        assert_eq!(Sha256Digest::of(&read_blob(b)), b.digest);
    }
    let text =
        error_chain(&capture(archive("example.hub/app:2", &tar, None), "linux/amd64").unwrap_err());
    assert!(
        text.contains("holds several images (docker.io/library/app:1, docker.io/library/app:2)"),
        "{text}"
    );
}

#[test]
fn the_same_name_twice_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(tmp.path());
    let m = l.manifest("amd64", &[layer("a", b"1")], true);
    l.tag(&m, "1", &[]);
    let specs = [
        oci("a/b:1", &l.dir, None),
        oci("docker.io/a/b:1", &l.dir, None),
    ];
    let err = capture_all(&specs, &options("linux/amd64")).unwrap_err();
    assert_eq!(
        error_chain(&err),
        "failed to capture image docker.io/a/b:1: it is listed twice in `images`"
    );
}

#[test]
fn several_images_come_back_in_spec_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::new(tmp.path());
    let mut specs = Vec::new();
    let mut expected = Vec::new();
    for i in 0..5 {
        let m = l.manifest("amd64", &[layer("a", format!("{i}").as_bytes())], true);
        l.tag(&m, &format!("t{i}"), &[]);
        specs.push(oci(&format!("a/b:t{i}"), &l.dir, None));
        expected.push(m.digest);
    }
    let got: Vec<_> = capture_all(&specs, &options("linux/amd64"))
        .unwrap()
        .iter()
        .map(|c| c.image.digest)
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn an_unreachable_registry_fails_quickly_with_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options("linux/amd64");
    opts.registry = RegistryOptions {
        mirrors: vec![format!("example.hub=http://127.0.0.1:{port}")
            .parse()
            .unwrap()],
        cache_dir: tmp.path().to_owned(),
        auth_file: None,
        connect_timeout: Some(std::time::Duration::from_secs(5)),
    };
    let spec = ImageSpec {
        reference: "example.hub/team/app:1".parse().unwrap(),
        from: None,
    };
    let start = std::time::Instant::now();
    let err = capture_all(&[spec], &opts).unwrap_err();
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    let text = error_chain(&err);
    assert!(
        text.starts_with(&format!(
            "failed to capture image example.hub/team/app:1: registry 127.0.0.1:{port} (mirror of example.hub) is unreachable"
        )),
        "{text}"
    );
}
