//! `airlock capture` with real parts: two distribution registries (`docker-registry`) as the
//! upstreams `docker.io` and `example.hub`, filled by skopeo from fixture images; a real
//! containerd pulling through the proxy; an installer built from the capture; and the same
//! images pulled from that installer in a network namespace with only loopback.

mod util;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_fixtures::images::{write_oci_layout, BuiltImage, ImageContent};
use serde_json::Value;
use util::oci::{
    body_of, containerd_ready, curl, pull_and_run, status_of, write_hosts_dir, Containerd,
    ServedRegistry,
};
use util::{have_command, prerequisite, Workdir};

/// True when skopeo, docker-registry and curl are here (else skip, or fail under CI).
fn registry_tools(test: &str) -> bool {
    prerequisite(
        have_command("skopeo") && have_command("docker-registry") && have_command("curl"),
        test,
        "apt-get install skopeo docker-registry curl",
    )
}

/// A distribution registry (`docker-registry`) on a free loopback port, killed on drop. Its
/// log (level info: one line per request) goes to a file.
struct Upstream {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Upstream {
    fn start(dir: &Path) -> Upstream {
        let port = util::free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        );
        let child = util::oci::start_distribution(dir, port, &config);
        Upstream {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Copies `oci:LAYOUT:TAG` (every platform) to `REPO:TAG` here.
    fn push(&self, layout: &Path, tag: &str, repo: &str) {
        util::run({
            let mut c = Command::new("skopeo");
            c.args([
                "--insecure-policy",
                "copy",
                "--all",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://127.0.0.1:{}/{repo}:{tag}", self.port));
            c
        })
        .success();
    }

    /// GET requests the registry answered for a URI containing `suffix`.
    fn gets(&self, suffix: &str) -> usize {
        let log = fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
        log.lines()
            .filter(|l| {
                l.contains("response completed")
                    && l.contains("http.request.method=GET")
                    && l.contains(suffix)
            })
            .count()
    }

    /// The file where the registry keeps blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `airlock capture`; its stdout is collected line by line.
struct Proxy {
    child: Child,
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(work: &Workdir, out: &Path, upstreams: &[String]) -> Proxy {
        let mut cmd = Command::new(util::airlock_bin());
        cmd.current_dir(work.path())
            .args(["capture", "--listen", "127.0.0.1:0", "--out"])
            .arg(out)
            .env("REGISTRY_AUTH_FILE", work.join("no-auth.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for u in upstreams {
            cmd.args(["--upstream", u]);
        }
        let mut child = cmd.spawn().expect("start airlock capture");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        let addr = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .unwrap_or_else(|| panic!("airlock capture printed no address: {first:?}"))
            .trim_end_matches('/')
            .to_owned();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proxy {
            child,
            addr,
            lines,
            reader: Some(reader),
        }
    }

    /// SIGTERM, then the exit status and everything it printed after the first line.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        util::run({
            let mut c = Command::new("kill");
            c.args(["-TERM", &self.child.id().to_string()]);
            c
        })
        .success();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "airlock capture did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.reader.take().unwrap().join().unwrap();
        let lines = self.lines.lock().unwrap().clone();
        (status, lines)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn content(message: &str, seed: Option<u64>) -> ImageContent {
    ImageContent {
        message: message.to_owned(),
        extra_layer_seed: seed,
    }
}

/// The three images of the end-to-end test, by the reference clients pull.
struct Images {
    app: BuiltImage,
    multi: BuiltImage,
    tool: BuiltImage,
}

impl Images {
    fn by_reference(&self) -> [(&'static str, &BuiltImage); 3] {
        [
            ("docker.io/library/app:1", &self.app),
            ("docker.io/library/multi:1", &self.multi),
            ("example.hub/team/tool:2", &self.tool),
        ]
    }
}

/// Two upstreams: docker.io holds `library/app:1` and the multi-arch `library/multi:1`,
/// example.hub holds `team/tool:2`.
fn upstreams(work: &Workdir) -> (Upstream, Upstream, Images) {
    let docker = Upstream::start(&work.join("docker.io"));
    let hub = Upstream::start(&work.join("example.hub"));
    let layout = work.join("images/docker");
    let built = write_oci_layout(
        &layout,
        &[
            (
                "1",
                content("hello from docker.io/library/app", Some(11)),
                false,
            ),
            (
                "multi",
                content("hello from the multi-arch image", None),
                true,
            ),
        ],
    )
    .unwrap();
    docker.push(&layout, "1", "library/app");
    // skopeo copies a tag to the same tag: give the multi-arch image its tag `1` through a
    // layout of its own.
    let multi_layout = work.join("images/multi");
    let multi = write_oci_layout(
        &multi_layout,
        &[("1", content("hello from the multi-arch image", None), true)],
    )
    .unwrap()
    .remove(0);
    assert_eq!(multi.top_digest(), built[1].top_digest());
    docker.push(&multi_layout, "1", "library/multi");
    let hub_layout = work.join("images/hub");
    let tool = write_oci_layout(
        &hub_layout,
        &[(
            "2",
            content("hello from example.hub/team/tool", Some(12)),
            false,
        )],
    )
    .unwrap()
    .remove(0);
    hub.push(&hub_layout, "2", "team/tool");
    let images = Images {
        app: built[0].clone(),
        multi,
        tool,
    };
    (docker, hub, images)
}

fn mappings(docker: &Upstream, hub: &Upstream) -> Vec<String> {
    vec![
        format!("docker.io={}", docker.url()),
        format!("example.hub={}", hub.url()),
    ]
}

fn lock_of(dir: &Path) -> Value {
    let text = fs::read_to_string(dir.join("airlock-capture.lock.json")).expect("the lock file");
    serde_json::from_str(&text).unwrap()
}

/// Set (to a JSON job) when this test binary runs inside `unshare -n`.
const NETNS_JOB: &str = "AIRLOCK_TEST_CAPTURE_NETNS_JOB";
const NETNS_TEST: &str = "containerd_pulls_through_the_capture_and_the_installer_serves_it_offline";

/// The issue's end-to-end test: capture three images from two upstreams with a real
/// containerd, stop the proxy, build an installer from the capture, and pull the same images
/// from it with no network.
#[test]
fn containerd_pulls_through_the_capture_and_the_installer_serves_it_offline() {
    if let Some(job) = std::env::var_os(NETNS_JOB) {
        return pull_offline(&serde_json::from_str(job.to_str().unwrap()).unwrap());
    }
    let test = "capture end-to-end test";
    if !registry_tools(test)
        || !containerd_ready(test)
        || !prerequisite(
            have_command("unshare") && have_command("ip"),
            test,
            "unshare and ip are needed (util-linux, iproute2)",
        )
    {
        return;
    }
    let work = Workdir::new();
    let (docker, hub, images) = upstreams(&work);
    let cap = work.join("cap");
    let proxy = Proxy::start(&work, &cap, &mappings(&docker, &hub));

    // containerd reaches every upstream through the catch-all mirror, sending `ns`.
    let hosts = work.join("certs.d");
    write_hosts_dir(&hosts, &["_default"], &proxy.addr);
    let ctd = Containerd::start();
    for (i, (reference, image)) in images.by_reference().into_iter().enumerate() {
        assert_eq!(
            pull_and_run(&ctd, &hosts, reference, &format!("c{i}")),
            image.expected_output(),
            "{reference} through the proxy"
        );
    }
    drop(ctd);
    let (status, lines) = proxy.stop();
    assert!(status.success(), "airlock capture exited with {status}");
    for (reference, image) in images.by_reference() {
        let line = format!("captured {reference} {}", image.top_digest());
        assert!(lines.contains(&line), "{line:?} not in {lines:?}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("stopped: 3 references")),
        "{lines:?}"
    );

    // The lock names each reference with the upstream's digest, nothing else.
    let lock = lock_of(&cap);
    let entries: Vec<(String, String)> = lock["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["reference"].as_str().unwrap().to_owned(),
                e["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = images
        .by_reference()
        .iter()
        .map(|(r, i)| (r.to_string(), i.top_digest().to_owned()))
        .collect();
    assert_eq!(entries, expected);
    assert!(!cap.join("tmp").exists(), "downloads folder left behind");
    // The multi-arch index is kept with the platform containerd fetched (amd64) only.
    let arm64_only: Vec<&str> = images
        .multi
        .blobs
        .iter()
        .map(|b| b.digest.as_str())
        .filter(|d| {
            *d != images.multi.top_digest()
                && *d != images.multi.manifest.digest
                && *d != images.multi.config.digest
                && !images.multi.layers.iter().any(|l| l.digest == *d)
        })
        .collect();
    assert!(!arm64_only.is_empty());
    for d in arm64_only {
        let hex = d.strip_prefix("sha256:").unwrap();
        assert!(!cap.join("blobs/sha256").join(hex).exists(), "{d} captured");
    }

    // The installer, from the capture only: both upstreams are gone.
    drop((docker, hub));
    work.write_spec(
        "name: captured\nversion: '1'\nplatform: linux/amd64\nimages:\n  - from: capture:cap\n",
    );
    let installer = work.build("captured.run");
    let listed = work
        .airlock(&["inspect", "--json", "captured.run"])
        .success()
        .json();
    assert_eq!(listed["images"], 3, "{listed}");

    // `--from-capture` gives the same installer as `from: capture:DIR`.
    work.write_spec("name: captured\nversion: '1'\nplatform: linux/amd64\n");
    work.airlock_env(
        &[
            "-q",
            "build",
            "-f",
            "airlock.yaml",
            "-o",
            "flag.run",
            "--from-capture",
            "cap",
        ],
        &[("SOURCE_DATE_EPOCH", "0")],
    )
    .success();
    work.write_spec(
        "name: captured\nversion: '1'\nplatform: linux/amd64\nimages:\n  - from: capture:cap\n",
    );
    work.airlock_env(
        &["-q", "build", "-f", "airlock.yaml", "-o", "spec.run"],
        &[("SOURCE_DATE_EPOCH", "0")],
    )
    .success();
    assert!(
        fs::read(work.join("flag.run")).unwrap() == fs::read(work.join("spec.run")).unwrap(),
        "--from-capture and capture:DIR differ"
    );

    // Offline: the installer's registry and a fresh containerd in a namespace with only
    // loopback. The test binary re-runs itself there, filtered to this test.
    let marker = work.join("netns-ran");
    let job = serde_json::json!({
        "installer": installer,
        "marker": marker,
        "work": work.path(),
        "expect": images
            .by_reference()
            .iter()
            .map(|(r, i)| serde_json::json!([r, i.expected_output()]))
            .collect::<Vec<_>>(),
    });
    let status = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", NETNS_TEST, "--test-threads=1", "--nocapture"])
        .env(NETNS_JOB, job.to_string())
        .status()
        .expect("run unshare");
    assert!(status.success(), "the offline pulls failed: {status}");
    assert!(marker.exists(), "the inner test did not run");
}

/// Inside `unshare -n`: serve the installer's images and pull and run each of them.
fn pull_offline(job: &Value) {
    let links = util::run({
        let mut c = Command::new("ip");
        c.args(["-o", "link", "show"]);
        c
    })
    .success();
    assert!(
        links.stdout.lines().count() == 1 && links.stdout.contains(": lo:"),
        "the namespace must hold only loopback: {}",
        links.stdout
    );
    let installer = PathBuf::from(job["installer"].as_str().unwrap());
    let work = PathBuf::from(job["work"].as_str().unwrap());
    let reg = ServedRegistry::start(&installer);
    let hosts = work.join("certs.d-offline");
    write_hosts_dir(&hosts, &["_default"], &reg.addr);
    let ctd = Containerd::start();
    for (i, pair) in job["expect"].as_array().unwrap().iter().enumerate() {
        let reference = pair[0].as_str().unwrap();
        assert_eq!(
            pull_and_run(&ctd, &hosts, reference, &format!("off{i}")),
            pair[1].as_str().unwrap(),
            "{reference} offline"
        );
    }
    fs::write(job["marker"].as_str().unwrap(), "ran").unwrap();
}

/// An upstream that does not answer: the client gets a quick 502 with an OCI error, the
/// proxy keeps serving, and nothing is recorded.
#[test]
fn an_unreachable_upstream_is_a_quick_502_and_the_proxy_keeps_serving() {
    if !prerequisite(
        have_command("curl"),
        "unreachable upstream test",
        "curl is not installed",
    ) {
        return;
    }
    let work = Workdir::new();
    let cap = work.join("cap");
    let closed = format!("example.hub=http://127.0.0.1:{}", util::free_port());
    let proxy = Proxy::start(&work, &cap, &[closed]);
    let base = format!("http://{}", proxy.addr);
    for path in [
        "/v2/team/app/manifests/1?ns=example.hub".to_owned(),
        format!(
            "/v2/team/app/blobs/sha256:{}?ns=example.hub",
            "1".repeat(64)
        ),
    ] {
        let r = curl(&[&format!("{base}{path}")]);
        assert_eq!(status_of(&r), 502, "{}", r.describe());
        assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
        let body: Value = serde_json::from_str(body_of(&r)).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    }
    let r = curl(&[&format!("{base}/v2/")]);
    assert_eq!(
        status_of(&r),
        200,
        "the proxy stopped serving: {}",
        r.describe()
    );
    assert!(!cap.join("airlock-capture.lock.json").exists());
    let (status, lines) = proxy.stop();
    assert!(status.success());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("stopped: 0 references and 0 blobs")),
        "{lines:?}"
    );
    assert!(fs::read_dir(cap.join("blobs/sha256"))
        .unwrap()
        .next()
        .is_none());
}

/// Bad upstream content: a layer whose bytes were damaged in the registry's storage. The
/// client's transfer fails, the blob is not stored, the manifest (intact) still is, and
/// concurrent pulls of an intact blob reach the upstream once.
#[test]
fn a_damaged_upstream_blob_is_not_stored_and_a_shared_blob_is_fetched_once() {
    if !registry_tools("damaged upstream blob test") {
        return;
    }
    let work = Workdir::new();
    let docker = Upstream::start(&work.join("docker.io"));
    let layout = work.join("images/docker");
    let built = write_oci_layout(&layout, &[("1", content("two layers", Some(21)), false)])
        .unwrap()
        .remove(0);
    docker.push(&layout, "1", "library/app");
    let cap = work.join("cap");
    let proxy = Proxy::start(&work, &cap, &[format!("docker.io={}", docker.url())]);
    let base = format!("http://{}", proxy.addr);
    let ok = curl(&[&format!("{base}/v2/library/app/manifests/1?ns=docker.io")]);
    assert_eq!(status_of(&ok), 200, "{}", ok.describe());

    // Four clients at once want the random layer: one upstream GET.
    let shared = &built.layers[2].digest;
    let url = format!("{base}/v2/library/app/blobs/{shared}?ns=docker.io");
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (url, out) = (url.clone(), work.join(format!("client-{i}")));
            std::thread::spawn(move || {
                let r = util::run({
                    let mut c = Command::new("curl");
                    c.args(["-s", "-S", "-f", "--max-time", "20", "-o"])
                        .arg(&out)
                        .arg(&url);
                    c
                });
                (r, out)
            })
        })
        .collect();
    for c in clients {
        let (r, out) = c.join().unwrap();
        assert_eq!(r.code, Some(0), "{}", r.describe());
        assert_eq!(&util::sha256sum(&out), shared);
    }
    let hex = shared.strip_prefix("sha256:").unwrap();
    assert_eq!(
        &util::sha256sum(&cap.join("blobs/sha256").join(hex)),
        shared
    );
    assert_eq!(
        docker.gets(&format!("/blobs/{shared}")),
        1,
        "upstream GETs of {shared}"
    );

    // The rest of the image but the message layer, so that the build below misses only it.
    for d in [&built.config.digest, &built.layers[0].digest] {
        let r = curl(&[
            "-o",
            "/dev/null",
            &format!("{base}/v2/library/app/blobs/{d}?ns=docker.io"),
        ]);
        assert_eq!(r.code, Some(0), "{}", r.describe());
    }

    // The message layer, damaged at rest in the upstream.
    let damaged = &built.layers[1].digest;
    util::flip_byte(&docker.blob_file(damaged), 10);
    let r = util::run({
        let mut c = Command::new("curl");
        // -f: an error status (when the mismatch is known before the answer) fails too.
        c.args(["-s", "-S", "-f", "-o", "/dev/null", "--max-time", "20"])
            .arg(format!(
                "{base}/v2/library/app/blobs/{damaged}?ns=docker.io"
            ));
        c
    });
    assert_ne!(
        r.code,
        Some(0),
        "the client must see an error: {}",
        r.describe()
    );
    let hex = damaged.strip_prefix("sha256:").unwrap();
    assert!(
        !cap.join("blobs/sha256").join(hex).exists(),
        "a damaged blob was stored"
    );
    // The proxy still serves, and still refuses the damaged blob.
    let again = curl(&[&format!("{base}/v2/library/app/manifests/1?ns=docker.io")]);
    assert_eq!(status_of(&again), 200);
    let (status, _) = proxy.stop();
    assert!(status.success());
    let lock = lock_of(&cap);
    assert_eq!(lock["images"][0]["reference"], "docker.io/library/app:1");
    assert_eq!(lock["images"][0]["digest"], built.manifest.digest.as_str());
    assert!(
        fs::read_dir(cap.join("tmp")).is_err(),
        "downloads folder left behind"
    );

    // A build from this capture names the missing blob instead of writing a broken installer.
    work.write_spec(
        "name: broken\nversion: '1'\nplatform: linux/amd64\nimages:\n  - from: capture:cap\n",
    );
    let r = work.airlock(&["-q", "build", "-f", "airlock.yaml", "-o", "broken.run"]);
    r.stderr_has("failed to capture image docker.io/library/app:1")
        .stderr_has(&format!("lacks blob {damaged}"));
    assert_eq!(r.code, Some(1));
    assert!(!work.join("broken.run").exists());
}

/// `capture:DIR` with a `ref` takes that image, and names what the capture has otherwise.
#[test]
fn a_reference_missing_from_a_capture_is_named() {
    let work = Workdir::new();
    work.write_file(
        "cap/airlock-capture.lock.json",
        format!(
            r#"{{"version": 1, "images": [{{"reference": "docker.io/library/app:1",
              "digest": "sha256:{}", "mediaType": "application/vnd.oci.image.manifest.v1+json"}}]}}"#,
            "a".repeat(64)
        ),
    );
    work.write_spec(
        "name: x\nversion: '1'\nimages:\n  - ref: docker.io/library/app:2\n    from: capture:cap\n",
    );
    let r = work.airlock(&["-q", "build", "-f", "airlock.yaml", "-o", "x.run"]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    r.stderr_has("docker.io/library/app:2 was not captured")
        .stderr_has("it has: docker.io/library/app:1");
    work.write_spec("name: x\nversion: '1'\nimages:\n  - from: capture:nothing-here\n");
    work.airlock(&["-q", "build", "-f", "airlock.yaml", "-o", "x.run"])
        .expect_code(1)
        .stderr_has("airlock.yaml:4:11")
        .stderr_has("source not found");
}
