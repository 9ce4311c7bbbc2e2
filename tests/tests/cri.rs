//! A node a kubelet can use offline, proven the way a kubelet uses it: an installer with
//! Debian's containerd, its shim, runc and ctr (`engine: containerd`) installs into a
//! temporary `--root` inside a network namespace that has only loopback; then a CRI client
//! (gRPC over containerd's socket, `util/cri.rs`) asks `Version` and `Status`, removes and
//! re-pulls an `example.hub/` and a `docker.io/` image through the installer's registry, checks
//! that `ImageStatus` shows their tags and repo digests, runs a host-network pod sandbox (the
//! payload's pause image as `sandbox_image`) with one container per image, reads their
//! messages from the CRI log files, stops and removes everything and uninstalls: nothing of
//! ours is left under the root, and no process runs from it.

mod util;

#[path = "util/cri.rs"]
mod cri_api;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_fixtures::images::{write_oci_layout, write_pause_layout, BuiltImage, ImageContent};
use cri_api::{ContainerState, CriClient};
use util::Workdir;

/// Where Debian puts the containerd engine's programs.
const PROGRAMS: [(&str, &str); 4] = [
    ("/usr/bin/containerd", "containerd"),
    (
        "/usr/bin/containerd-shim-runc-v2",
        "containerd-shim-runc-v2",
    ),
    ("/usr/bin/ctr", "ctr"),
    ("/usr/sbin/runc", "runc"),
];

/// containerd 1.6's default `sandbox_image`: the name a kubelet's pods need offline.
const PAUSE: &str = "registry.k8s.io/pause:3.6";
const HUB: &str = "example.hub/team/app:1.0";
const DOCKER: &str = "docker.io/library/hello:2";

struct Built {
    work: Workdir,
    installer: PathBuf,
    hub: BuiltImage,
    docker: BuiltImage,
    pause: BuiltImage,
}

fn build_node(engine: &str) -> Built {
    let work = Workdir::new();
    let hub = write_oci_layout(
        &work.join("images/hub"),
        &[("1.0", ImageContent::new("hello from example.hub"), false)],
    )
    .expect("write the example.hub image")
    .remove(0);
    let docker = write_oci_layout(
        &work.join("images/hello"),
        &[("2", ImageContent::new("hello from docker.io"), false)],
    )
    .expect("write the docker.io image")
    .remove(0);
    let pause = write_pause_layout(&work.join("images/pause"), "3.6").expect("write pause");
    let files: String = PROGRAMS
        .iter()
        .map(|(src, name)| format!("  - src: {src}\n    dest: /usr/local/bin/{name}\n"))
        .collect();
    work.write_spec(&format!(
        "name: kube\nversion: \"1.0\"\nfiles:\n{files}images:\n\
         \x20 - ref: {HUB}\n    from: oci:images/hub:1.0\n\
         \x20 - ref: {DOCKER}\n    from: oci:images/hello:2\n\
         \x20 - ref: {PAUSE}\n    from: oci:images/pause:3.6\n\
         engine: {engine}\n"
    ));
    let installer = work.build("kube.run");
    Built {
        work,
        installer,
        hub,
        docker,
        pause,
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Processes whose executable lies under `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(exe) = fs::read_link(e.path().join("exe")) {
            if exe.starts_with(dir) {
                out.push(format!("{pid} {}", exe.display()));
            }
        }
    }
    out
}

/// Undoes an install a failed assertion left behind (processes, mounts).
struct Cleanup<'a> {
    work: &'a Workdir,
    root: &'a Path,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let copy = self.root.join("var/lib/airlock/kube-1.0.run");
        if copy.exists() {
            let _ = self
                .work
                .run_installer(&copy, &["-q", "uninstall", "--root", path_str(self.root)]);
        }
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | xargs -r -n1 umount -l",
                self.root.display()
            ))
            .status();
    }
}

/// Waits until container `id` has exited and returns its status.
fn wait_exited(cri: &CriClient, id: &str) -> cri_api::ContainerStatus {
    let start = Instant::now();
    loop {
        let status = cri.container_status(id).expect("ContainerStatus");
        if status.state == ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "container {id} did not exit: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The proof, in a network namespace with only loopback.
#[test]
fn a_kubelet_can_pull_and_run_pods_offline_on_a_containerd_node() {
    util::oci::run_in_loopback_namespace(
        "a_kubelet_can_pull_and_run_pods_offline_on_a_containerd_node",
        cri_round_trip,
    );
}

fn cri_round_trip() {
    let b = build_node(&format!("{{kind: containerd, sandbox_image: {PAUSE}}}"));
    // Short: containerd's socket path must stay under 108 bytes.
    let root_dir = tempfile::Builder::new()
        .prefix("cri")
        .tempdir_in("/tmp")
        .unwrap();
    let root = root_dir.path();
    let _cleanup = Cleanup {
        work: &b.work,
        root,
    };
    let addr = util::free_addr();
    let install = b
        .work
        .run_installer(
            &b.installer,
            &[
                "install",
                "--root",
                path_str(root),
                "--listen",
                &addr,
                "--yes",
            ],
        )
        .success();
    let config = fs::read_to_string(root.join("etc/containerd/airlock-kube.toml")).unwrap();
    assert!(
        config.contains(&format!("sandbox_image = \"{PAUSE}\"")),
        "{config}"
    );
    if !has_cap_sys_resource() {
        assert!(
            install.stdout.contains("restrict_oom_score_adj = true"),
            "{}",
            install.describe()
        );
    }

    let sock = root.join("run/containerd/containerd.sock");
    let cri = CriClient::connect(&sock, Duration::from_secs(60)).expect("connect to the CRI");
    let version = cri.version().expect("Version");
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    let status = cri.status().expect("Status");
    let conditions = status.status.expect("a runtime status").conditions;
    let runtime_ready = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .unwrap_or_else(|| panic!("no RuntimeReady in {conditions:?}"));
    assert!(runtime_ready.status, "{conditions:?}");

    // The images the install pre-pulled are there as a kubelet looks them up.
    let listed = cri.list_images().expect("ListImages");
    for reference in [HUB, DOCKER, PAUSE] {
        assert!(
            listed
                .iter()
                .any(|i| i.repo_tags.iter().any(|t| t == reference)),
            "{reference} missing from ListImages: {listed:?}"
        );
    }
    assert_kubelet_sees(&cri, PAUSE, &b.pause);

    // RemoveImage, then PullImage through the mirror config to the installer's registry.
    for (reference, image) in [(HUB, &b.hub), (DOCKER, &b.docker)] {
        cri.remove_image(reference).expect("RemoveImage");
        assert_eq!(cri.image_status(reference).expect("ImageStatus"), None);
        let pulled = cri.pull_image(reference).expect("PullImage");
        assert_eq!(
            pulled, image.config.digest,
            "PullImage returns the image ID"
        );
        assert_kubelet_sees(&cri, reference, image);
    }

    // A host-network pod with one container per image; the sandbox runs the pause image.
    let logs = root.join("var/log/pods/default_hello_0000");
    let sandbox = cri_api::host_network_sandbox("hello", "0000", &logs);
    let pod = cri.run_pod_sandbox(&sandbox).expect("RunPodSandbox");
    let mut ids = Vec::new();
    for (name, reference, image) in [("hub", HUB, &b.hub), ("docker", DOCKER, &b.docker)] {
        let config = cri_api::image_container(name, reference);
        let id = cri
            .create_container(&pod, &config, &sandbox)
            .expect("CreateContainer");
        cri.start_container(&id).expect("StartContainer");
        let status = wait_exited(&cri, &id);
        assert_eq!(status.exit_code, 0, "{status:?}");
        assert_eq!(
            status.image_ref,
            image.manifest_ref(reference),
            "{status:?}"
        );
        let log = fs::read_to_string(&status.log_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", status.log_path));
        assert_eq!(
            cri_api::log_messages(&log),
            image.expected_output(),
            "{log}"
        );
        ids.push(id);
    }
    for id in &ids {
        cri.stop_container(id, 0).expect("StopContainer");
        cri.remove_container(id).expect("RemoveContainer");
    }
    cri.stop_pod_sandbox(&pod).expect("StopPodSandbox");
    cri.remove_pod_sandbox(&pod).expect("RemovePodSandbox");
    drop(cri);
    // The pod's log folder is the kubelet's (it removes it with the pod), not the installer's.
    assert!(logs.join("hub/0.log").is_file() && logs.join("docker/0.log").is_file());
    fs::remove_dir_all(root.join("var/log")).unwrap();

    b.work
        .run_installer(
            &root.join("var/lib/airlock/kube-1.0.run"),
            &["uninstall", "--root", path_str(root)],
        )
        .success();
    assert_eq!(processes_under(root), Vec::<String>::new());
    assert_eq!(
        util::tree(root),
        Vec::<String>::new(),
        "uninstall left files behind"
    );
    // containerd 1.6's shim puts its sockets in /run/containerd/s whatever the config says
    // (a path compiled in); each shim removes its own, so only that folder may remain.
    let shim_sockets = util::names_in(Path::new("/run/containerd/s"));
    assert!(
        shim_sockets.iter().all(|s| !owned_by_us(s, root)),
        "shim sockets left in /run/containerd/s: {shim_sockets:?}"
    );
    assert!(
        !Path::new("/run/containerd/runc/k8s.io").exists()
            || util::names_in(Path::new("/run/containerd/runc/k8s.io")).is_empty(),
        "runc state went to the host's /run/containerd/runc"
    );
}

/// Whether shim socket `name` in /run/containerd/s belongs to a shim started from `root`
/// (no process of ours holds it once every shim under `root` is gone).
fn owned_by_us(name: &str, root: &Path) -> bool {
    let sock = format!("/run/containerd/s/{name}");
    processes_under(root).iter().any(|p| {
        let pid = p.split_whitespace().next().unwrap_or("");
        fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains(&sock))
    })
}

/// `ImageStatus` shows `reference` as a kubelet expects: its tag, its repo digest (so a
/// digest reference is found locally) and the image ID.
fn assert_kubelet_sees(cri: &CriClient, reference: &str, image: &BuiltImage) {
    let found = cri
        .image_status(reference)
        .expect("ImageStatus")
        .unwrap_or_else(|| panic!("{reference} is not present"));
    assert_eq!(found.id, image.config.digest, "{found:?}");
    assert!(found.repo_tags.iter().any(|t| t == reference), "{found:?}");
    let by_digest = image.manifest_ref(reference);
    assert!(
        found.repo_digests.contains(&by_digest),
        "{reference}: no repo digest {by_digest}: {found:?}"
    );
    let again = cri
        .image_status(&by_digest)
        .expect("ImageStatus by digest")
        .unwrap_or_else(|| panic!("{by_digest} is not found locally"));
    assert_eq!(again.id, found.id);
}

/// True when this process holds CAP_SYS_RESOURCE in its effective set.
fn has_cap_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|m| m & (1 << 24) != 0)
}

/// `repo@sha256:...` of `reference` (`repo:tag`) and this image's manifest.
trait ManifestRef {
    fn manifest_ref(&self, reference: &str) -> String;
}

impl ManifestRef for BuiltImage {
    fn manifest_ref(&self, reference: &str) -> String {
        let repo = reference.rsplit_once(':').map_or(reference, |(r, _)| r);
        format!("{repo}@{}", self.manifest.digest)
    }
}

/// A `sandbox_image` that no `images:` entry holds is pulled from its registry like any
/// image; where that registry cannot be reached (here: a network namespace with only
/// loopback), the build fails naming the image and writes nothing.
#[test]
fn a_sandbox_image_the_build_cannot_capture_fails_the_build_naming_it() {
    util::oci::run_in_loopback_namespace(
        "a_sandbox_image_the_build_cannot_capture_fails_the_build_naming_it",
        sandbox_image_missing,
    );
}

fn sandbox_image_missing() {
    let work = Workdir::new();
    let files: String = PROGRAMS
        .iter()
        .map(|(src, name)| format!("  - src: {src}\n    dest: /usr/local/bin/{name}\n"))
        .collect();
    work.write_spec(&format!(
        "name: kube\nversion: \"1.0\"\nfiles:\n{files}\
         engine: {{kind: containerd, sandbox_image: registry.k8s.io/pause:3.9}}\n"
    ));
    let run = work
        .airlock(&["build", "-f", "airlock.yaml", "-o", "kube.run"])
        .expect_code(1);
    run.stderr_has("registry.k8s.io/pause:3.9");
    assert!(!work.join("kube.run").exists());
}

/// With no `sandbox_image`, the build uses the default of the payload's containerd (Debian's
/// 1.6: [`PAUSE`]); when no `images:` entry holds it and its registry cannot be reached, the
/// build fails naming that default.
#[test]
fn a_default_sandbox_image_the_build_cannot_capture_fails_the_build_naming_it() {
    util::oci::run_in_loopback_namespace(
        "a_default_sandbox_image_the_build_cannot_capture_fails_the_build_naming_it",
        default_sandbox_image_missing,
    );
}

fn default_sandbox_image_missing() {
    let work = Workdir::new();
    let files: String = PROGRAMS
        .iter()
        .map(|(src, name)| format!("  - src: {src}\n    dest: /usr/local/bin/{name}\n"))
        .collect();
    work.write_spec(&format!(
        "name: kube\nversion: \"1.0\"\nfiles:\n{files}engine: containerd\n"
    ));
    let run = work
        .airlock(&["build", "-f", "airlock.yaml", "-o", "kube.run"])
        .expect_code(1);
    run.stderr_has(PAUSE);
    assert!(!work.join("kube.run").exists());
}
