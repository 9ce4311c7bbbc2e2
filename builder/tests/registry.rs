//! `airlock build` pulling an image through `--registry-mirror` from a real registry
//! (distribution's `docker-registry`), fed by `skopeo copy` from an OCI layout.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_payload::{Installer, Sha256Digest};
use serde_json::json;

/// Returns false (after printing `SKIP <test>: ...`) when a tool is missing outside CI;
/// fails under CI.
fn have(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !Path::new(t).exists())
        .collect();
    airlock_fixtures::skip::prerequisite(
        missing.is_empty(),
        test,
        &format!("missing {}", missing.join(", ")),
    )
}

struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let registry = Registry { child, port };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    registry
}

fn write_blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let d = Sha256Digest::of(bytes);
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    (d.to_string(), bytes.len())
}

/// An OCI layout with one image tagged `tag`: a gzip layer and a config. Returns the
/// manifest, config and layer digests.
fn write_layout(dir: &Path, tag: &str) -> [String; 3] {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let content = b"hello from the registry\n";
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "hello.txt", &content[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let (ld, ls) = write_blob(dir, &layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Sha256Digest::of(&tar).to_string()]},
        "config": {}
    }))
    .unwrap();
    let (cd, cs) = write_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}]
    }))
    .unwrap();
    let (md, ms) = write_blob(dir, &manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    [md, cd, ld]
}

fn airlock() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_airlock"))
}

fn build(dir: &Path, spec: &str, mirror: &str, cache: &Path, out: &Path) -> std::process::Output {
    std::fs::write(dir.join("airlock.yaml"), spec).unwrap();
    Command::new(airlock())
        .arg("build")
        .arg("-f")
        .arg(dir.join("airlock.yaml"))
        .arg("-o")
        .arg(out)
        // The airlock program is itself a static ELF with nothing appended: a valid stub.
        .arg("--stub")
        .arg(airlock())
        .arg("--registry-mirror")
        .arg(mirror)
        .env("AIRLOCK_CACHE_DIR", cache)
        .env("REGISTRY_AUTH_FILE", dir.join("no-auth.json"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap()
}

#[test]
fn build_pulls_an_image_through_a_registry_mirror() {
    if !have(
        "build_pulls_an_image_through_a_registry_mirror",
        &["/usr/bin/docker-registry", "/usr/bin/skopeo"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = start_registry(tmp.path());
    let layout = tmp.path().join("layout");
    let [manifest, config, layer] = write_layout(&layout, "1");
    let status = Command::new("/usr/bin/skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://127.0.0.1:{}/team/app:1", registry.port))
        .status()
        .unwrap();
    assert!(status.success(), "skopeo copy failed");

    let spec = "name: pulled\nversion: '1'\nplatform: linux/amd64\nimages:\n  - ref: example.hub/team/app:1\n";
    let mirror = format!("example.hub=http://127.0.0.1:{}", registry.port);
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("pulled.run");
    let result = build(tmp.path(), spec, &mirror, &cache, &out);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );

    let bytes = std::fs::read(&out).unwrap();
    let installer = Installer::open(&bytes, airlock_payload::declared_elf_end(&bytes)).unwrap();
    let payload = installer.load_index().unwrap();
    let images = payload.index().images();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(image.reference(), "example.hub/team/app:1");
    assert_eq!(image.digest.to_string(), manifest);
    assert_eq!(image.manifests[0].platform.as_deref(), Some("linux/amd64"));
    let blobs: Vec<String> = image.blobs.iter().map(|d| d.to_string()).collect();
    assert_eq!(blobs, [config.clone(), layer.clone()]);
    for d in [&manifest, &config, &layer] {
        let digest: Sha256Digest = d.parse().unwrap();
        let blob = payload.index().blob(&digest).expect("blob stored");
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut payload.blob_reader(blob), &mut content).unwrap();
        assert_eq!(Sha256Digest::of(&content), digest);
    }
    // Config and layer are in the build cache now.
    for d in [&config, &layer] {
        let hex = d.strip_prefix("sha256:").unwrap();
        assert!(cache.join("blobs/sha256").join(hex).is_file(), "{d} cached");
    }

    // A second build gives the same file.
    let again = tmp.path().join("again.run");
    let result = build(tmp.path(), spec, &mirror, &cache, &again);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(std::fs::read(&again).unwrap() == bytes, "builds differ");

    // A reference by digest pulls that exact manifest and is served untagged.
    let pinned = format!(
        "name: pulled\nversion: '1'\nplatform: linux/amd64\nimages:\n  - ref: example.hub/team/app@{manifest}\n"
    );
    let result = build(tmp.path(), &pinned, &mirror, &cache, &again);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let bytes = std::fs::read(&again).unwrap();
    let installer = Installer::open(&bytes, airlock_payload::declared_elf_end(&bytes)).unwrap();
    let payload = installer.load_index().unwrap();
    let image = &payload.index().images()[0];
    assert_eq!(image.tag, None);
    assert_eq!(image.digest.to_string(), manifest);

    // An absent tag names the image and says it is not found.
    let missing = "name: pulled\nversion: '1'\nplatform: linux/amd64\nimages:\n  - ref: example.hub/team/app:2\n";
    let result = build(tmp.path(), missing, &mirror, &cache, &again);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("failed to capture image example.hub/team/app:2")
            && stderr.contains("not found on registry"),
        "{stderr}"
    );
}
