//! The `kubeadm` engine against fakes (fixtures/kubeadm/fake-{kubeadm,kubelet,kubectl}):
//! no real kubeadm runs in CI. The fakes follow kubeadm's, the kubelet's and kubectl's
//! documented CLIs and refuse what those would refuse (a wrong flag, a config of another
//! apiVersion, a criSocket that is not a socket); containerd underneath is Debian's, for
//! real. The tests check what the fakes saw (`--rootfs`, the merged config, our socket),
//! that install waits for Ready and prints and saves the join command, that uninstall runs
//! `kubeadm reset` and leaves nothing under the root, and that a payload without kubelet or
//! without a control-plane image does not build.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use airlock_fixtures::images::{write_oci_layout, write_pause_layout, ImageContent};
use util::Workdir;

fn fake(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fixtures/kubeadm/fake-{name}"))
}

/// Debian's containerd engine programs.
const CONTAINERD: [(&str, &str); 4] = [
    ("/usr/bin/containerd", "containerd"),
    (
        "/usr/bin/containerd-shim-runc-v2",
        "containerd-shim-runc-v2",
    ),
    ("/usr/bin/ctr", "ctr"),
    ("/usr/sbin/runc", "runc"),
];

/// What `kubeadm config images list --kubernetes-version v1.31.4` prints, as fixture tags.
const CONTROL_PLANE: [(&str, &str); 6] = [
    ("registry.k8s.io/kube-apiserver:v1.31.4", "apiserver"),
    (
        "registry.k8s.io/kube-controller-manager:v1.31.4",
        "controller-manager",
    ),
    ("registry.k8s.io/kube-scheduler:v1.31.4", "scheduler"),
    ("registry.k8s.io/kube-proxy:v1.31.4", "proxy"),
    ("registry.k8s.io/coredns/coredns:v1.11.3", "coredns"),
    ("registry.k8s.io/etcd:3.5.15-0", "etcd"),
];
const PAUSE: &str = "registry.k8s.io/pause:3.10";

const CONFIG: &str = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  name: node-a\n  criSocket: unix:///var/run/crio/crio.sock\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: 10.244.0.0/16\n";

/// A kubeadm node's workdir and spec: Debian's containerd, the fakes (`skip` left out of the
/// files), the control-plane images but `missing_image`.
fn write_spec(skip: Option<&str>, missing_image: Option<&str>) -> Workdir {
    let work = Workdir::new();
    let contents: Vec<(&str, ImageContent, bool)> = CONTROL_PLANE
        .iter()
        .map(|(r, tag)| (*tag, ImageContent::new(format!("fixture for {r}")), false))
        .collect();
    write_oci_layout(&work.join("images/cp"), &contents).expect("control-plane fixtures");
    write_pause_layout(&work.join("images/pause"), "3.10").expect("pause");
    let mut files: String = CONTAINERD
        .iter()
        .map(|(src, name)| format!("  - src: {src}\n    dest: /usr/local/bin/{name}\n"))
        .collect();
    for tool in ["kubeadm", "kubelet", "kubectl"] {
        if skip != Some(tool) {
            files.push_str(&format!(
                "  - src: {}\n    dest: /usr/bin/{tool}\n    mode: \"0755\"\n",
                fake(tool).display()
            ));
        }
    }
    let mut images: String = CONTROL_PLANE
        .iter()
        .filter(|(r, _)| Some(*r) != missing_image)
        .map(|(r, tag)| format!("  - ref: {r}\n    from: oci:images/cp:{tag}\n"))
        .collect();
    images.push_str(&format!(
        "  - ref: {PAUSE}\n    from: oci:images/pause:3.10\n"
    ));
    work.write_file("kubeadm.yaml", CONFIG);
    work.write_spec(&format!(
        "name: kube\nversion: \"1.31\"\nfiles:\n{files}images:\n{images}\
         engine:\n  kind: kubeadm\n  kubernetes_version: v1.31.4\n  config: kubeadm.yaml\n  ready_timeout: 30\n"
    ));
    work
}

/// Undoes an install a failed assertion left behind.
struct Cleanup<'a>(&'a Workdir, &'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let copy = self.1.join("var/lib/airlock/kube-1.31.run");
        if copy.exists() {
            let _ = self.0.run_installer(
                &copy,
                &["-q", "uninstall", "--root", self.1.to_str().unwrap()],
            );
        }
    }
}

/// Pids whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[test]
fn kubeadm_inits_over_our_containerd_with_rootfs_and_install_prints_the_join_command() {
    util::oci::run_in_loopback_namespace(
        "kubeadm_inits_over_our_containerd_with_rootfs_and_install_prints_the_join_command",
        kubeadm_round_trip,
    );
}

fn kubeadm_round_trip() {
    let work = write_spec(None, None);
    let build = work
        .airlock(&["build", "-f", "airlock.yaml", "-o", "kube.run"])
        .success();
    assert!(
        build.stdout.contains(
            "kubeadm: 7 control-plane image(s) read from `kubeadm config images list --kubernetes-version v1.31.4`"
        ),
        "{}",
        build.describe()
    );
    let installer = work.join("kube.run");
    // Short: containerd's socket path must stay under 108 bytes.
    let root_dir = tempfile::Builder::new()
        .prefix("kadm")
        .tempdir_in("/tmp")
        .unwrap();
    let root = root_dir.path();
    let r = root.to_str().unwrap();
    let _cleanup = Cleanup(&work, root);
    let addr = util::free_addr();
    let args = ["install", "--root", r, "--listen", &addr, "--yes"];
    let run = work.run_installer(&installer, &args).success();
    let join = "kubeadm join 127.0.0.1:6443 --token abcdef.0123456789abcdef";
    for line in [
        "containerd: ready",
        "containerd: pulled registry.k8s.io/kube-apiserver:v1.31.4",
        "kubeadm: config ",
        "kubeadm: init done (kubelet started as daemon pid",
        "kubeadm: node Ready after",
        join,
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?}:\n{}",
            run.describe()
        );
    }
    let seen = root.join("etc/kubernetes/fake-kubeadm");
    let read = |f: &str| fs::read_to_string(seen.join(f)).unwrap();
    // kubeadm's own --rootfs puts its files under the root; the config path is the chroot's.
    assert_eq!(
        read("args"),
        format!(
            "init --config /etc/kubernetes/airlock-kube-kubeadm.yaml \
             --ignore-preflight-errors=Port-10250 --rootfs {r}\n"
        )
    );
    assert_eq!(
        read("socket"),
        format!("{r}/run/containerd/containerd.sock\n")
    );
    let config = read("config");
    assert!(
        config.contains("  criSocket: unix:///run/containerd/containerd.sock\n"),
        "{config}"
    );
    assert!(config.contains("  name: node-a\n"), "{config}");
    assert!(config.contains("  podSubnet: 10.244.0.0/16\n"), "{config}");
    assert!(config.contains("kubernetesVersion: v1.31.4\n"), "{config}");
    assert!(root.join("etc/kubernetes/admin.conf").exists());
    let kubelet_args = fs::read_to_string(root.join("var/lib/kubelet/fake-kubelet.args")).unwrap();
    assert!(
        kubelet_args.contains(&format!(
            "--container-runtime-endpoint=unix://{r}/run/containerd/containerd.sock"
        )),
        "{kubelet_args}"
    );
    // False first, so install polled at least twice.
    let polls = fs::read_to_string(root.join("etc/kubernetes/fake-kubectl-polls")).unwrap();
    assert!(polls.trim().parse::<u32>().unwrap() >= 2, "{polls}");
    let saved = root.join("var/lib/airlock/kube-join-command");
    assert!(
        fs::read_to_string(&saved).unwrap().starts_with(join),
        "join command not saved"
    );
    assert_eq!(
        fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The kubelet's pause image is containerd's sandbox image too.
    let toml = fs::read_to_string(root.join("etc/containerd/airlock-kube.toml")).unwrap();
    assert!(
        toml.contains(&format!("sandbox_image = \"{PAUSE}\"")),
        "{toml}"
    );

    // A re-run converges: init is not run again (a real kubeadm would refuse).
    let again = work.run_installer(&installer, &args).success();
    assert!(
        again
            .stdout
            .contains("kubeadm: already initialised, init skipped (kubelet already running as"),
        "{}",
        again.describe()
    );

    let un = work
        .run_installer(
            &root.join("var/lib/airlock/kube-1.31.run"),
            &["uninstall", "--root", r],
        )
        .success();
    assert!(
        un.stdout.contains(&format!(
            "kubeadm: reset ({r}/usr/bin/kubeadm reset --force --rootfs {r})"
        )),
        "{}",
        un.describe()
    );
    assert_eq!(
        util::tree(root),
        Vec::<String>::new(),
        "uninstall left files"
    );
    assert_eq!(
        processes_mentioning(r),
        Vec::<u32>::new(),
        "uninstall left processes"
    );
}

#[test]
fn a_payload_missing_kubelet_fails_the_build_naming_it() {
    let work = write_spec(Some("kubelet"), None);
    let run = work
        .airlock(&["build", "-f", "airlock.yaml", "-o", "kube.run"])
        .expect_code(1);
    run.stderr_has("engine kubeadm: the files hold no `kubelet` binary");
    assert!(!work.join("kube.run").exists());
}

/// A control-plane image no `images:` entry holds is pulled from its registry; offline
/// (a network namespace with only loopback) the build fails naming it.
#[test]
fn a_control_plane_image_the_build_cannot_capture_fails_the_build_naming_it() {
    util::oci::run_in_loopback_namespace(
        "a_control_plane_image_the_build_cannot_capture_fails_the_build_naming_it",
        control_plane_image_missing,
    );
}

fn control_plane_image_missing() {
    let missing = "registry.k8s.io/etcd:3.5.15-0";
    let work = write_spec(None, Some(missing));
    let run = work
        .airlock(&["build", "-f", "airlock.yaml", "-o", "kube.run"])
        .expect_code(1);
    run.stderr_has(missing);
    assert!(!work.join("kube.run").exists());
}

/// A kubeadm that cannot run on the build host (another architecture) needs the images
/// listed in the engine section, and the build says it used that list.
#[test]
fn a_kubeadm_that_does_not_run_here_takes_the_images_listed_in_the_spec() {
    let work = write_spec(Some("kubeadm"), None);
    work.write_file("kubeadm", "#!/bin/sh\nexit 126\n");
    util::chmod(&work.join("kubeadm"), 0o755);
    let spec = fs::read_to_string(work.join("airlock.yaml")).unwrap();
    let spec = spec.replacen(
        "images:\n",
        "  - src: kubeadm\n    dest: /usr/bin/kubeadm\nimages:\n",
        1,
    );
    work.write_spec(&spec);
    let run = work
        .airlock(&["build", "-f", "airlock.yaml", "-o", "kube.run"])
        .expect_code(1);
    run.stderr_has("does not run on this build host; list them in the engine section");
    let listed: Vec<&str> = CONTROL_PLANE.iter().map(|(r, _)| *r).collect();
    work.write_spec(&format!(
        "{spec}  images: [{}, {PAUSE}]\n",
        listed.join(", ")
    ));
    let run = work
        .airlock(&["build", "-f", "airlock.yaml", "-o", "kube.run"])
        .success();
    assert!(
        run.stdout
            .contains("kubeadm: 7 control-plane image(s) listed in the spec's engine section"),
        "{}",
        run.describe()
    );
}
