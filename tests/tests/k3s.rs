//! The `k3s` engine against a fake `k3s` (fixtures/k3s/fake-k3s): no real k3s runs in CI.
//! The fake follows k3s's documented CLI and config files and refuses what k3s would
//! refuse; the test checks what it was given (flags, environment, registries.yaml,
//! auto-deployed manifests, kubeconfig mode), that install waits for the node to be Ready,
//! that a re-run converges, and that uninstall leaves nothing.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use util::Workdir;

fn fake_k3s() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/k3s/fake-k3s")
}

/// k3s's default `--pause-image`: every pod's sandbox, so it must be in the payload.
const K3S_PAUSE: &str = "docker.io/rancher/mirrored-pause:3.6";

fn build(args: &str) -> (Workdir, PathBuf) {
    let work = write_spec(
        args,
        &format!("  - ref: {K3S_PAUSE}\n    from: oci:images/pause:3.6\n"),
    );
    let installer = work.build("edge.run");
    (work, installer)
}

/// A k3s node's workdir and spec with server `args` and `extra_images` (lines of
/// `images:`) beside the two fixture images.
fn write_spec(args: &str, extra_images: &str) -> Workdir {
    let work = Workdir::new();
    airlock_fixtures::images::write_pause_layout(&work.join("images/pause"), "3.6")
        .expect("pause image");
    let fixtures =
        airlock_fixtures::images::same_name_different_registries(&work.join("images/same"))
            .expect("fixture images");
    drop(fixtures);
    work.write_file(
        "manifests/app.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n  - name: app\n    image: example.hub/team/app:1.0\n",
    );
    work.write_spec(&format!(
        r#"name: edge
version: "2.0"
files:
  - src: {k3s}
    dest: /usr/local/bin/k3s
    mode: "0755"
  - src: manifests/
    dest: /opt/edge/manifests/
images:
  - ref: example.hub/team/app:1.0
    from: oci:images/same/hub:1
  - ref: docker.io/library/app:1
    from: oci:images/same/docker:1
{extra_images}engine:
  kind: k3s
  manifests: /opt/edge/manifests
  args: {args}
  ready_timeout: 20
"#,
        k3s = fake_k3s().display()
    ));
    work
}

/// Pids whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

struct Cleanup<'a>(&'a Workdir, &'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let copy = self.1.join("var/lib/airlock/edge-2.0.run");
        if copy.exists() {
            let _ = self.0.run_installer(
                &copy,
                &["-q", "uninstall", "--root", self.1.to_str().unwrap()],
            );
        }
    }
}

#[test]
fn k3s_gets_documented_flags_env_mirrors_and_manifests_and_install_waits_for_ready() {
    let (work, installer) = build("[--disable=traefik]");
    let root = work.join("root");
    let _cleanup = Cleanup(&work, &root);
    let r = root.to_str().unwrap();
    let addr = util::free_addr();
    let args = ["install", "--root", r, "--listen", &addr, "--yes"];
    let run = work.run_installer(&installer, &args).success();
    for line in [
        "k3s: 1 manifest(s) in ",
        "k3s: started as daemon pid",
        "k3s: node Ready after",
        "kubeconfig ",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?}:\n{}",
            run.describe()
        );
    }

    let seen = root.join("var/lib/rancher/k3s/fake-k3s");
    let read = |f: &str| fs::read_to_string(seen.join(f)).unwrap();
    assert_eq!(
        read("args"),
        format!(
            "--data-dir {r}/var/lib/rancher/k3s --private-registry {r}/etc/rancher/k3s/registries.yaml \
             --disable-default-registry-endpoint --disable=traefik\n"
        )
    );
    let env = read("env");
    assert!(
        env.contains(&format!(
            "K3S_KUBECONFIG_OUTPUT={r}/etc/rancher/k3s/k3s.yaml\n"
        )),
        "{env}"
    );
    assert!(env.contains("K3S_KUBECONFIG_MODE=600\n"), "{env}");
    assert!(env.contains(&format!("PATH={r}/usr/local/bin:")), "{env}");
    assert_eq!(read("default-endpoint-disabled"), "true\n");
    let registries = read("registries.yaml");
    for host in ["\"docker.io\":", "\"example.hub\":", "\"*\":"] {
        assert!(
            registries.contains(host),
            "{host} missing from\n{registries}"
        );
    }
    assert_eq!(
        registries.matches(&format!("- \"http://{addr}\"")).count(),
        3,
        "{registries}"
    );
    assert_eq!(read("manifests"), "app.yaml\n");
    assert_eq!(
        fs::read_to_string(root.join("var/lib/rancher/k3s/server/manifests/app.yaml")).unwrap(),
        fs::read_to_string(work.join("manifests/app.yaml")).unwrap()
    );
    let kubeconfig = root.join("etc/rancher/k3s/k3s.yaml");
    assert_eq!(
        fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // NotReady first, so install polled at least twice.
    assert!(read("polls").trim().parse::<u32>().unwrap() >= 2);

    // A re-run converges: k3s is not restarted.
    let again = work.run_installer(&installer, &args).success();
    assert!(
        again.stdout.contains("k3s: already running as daemon pid"),
        "{}",
        again.describe()
    );
    assert!(again.stdout.contains("(0 changed)"), "{}", again.describe());

    work.run_installer(
        &root.join("var/lib/airlock/edge-2.0.run"),
        &["uninstall", "--root", r],
    )
    .success();
    assert_eq!(
        util::tree(&root),
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
fn a_k3s_that_exits_fails_the_install_naming_its_log() {
    let (work, installer) = build("[--no-such-flag]");
    let root = work.join("root");
    let _cleanup = Cleanup(&work, &root);
    let r = root.to_str().unwrap();
    let addr = util::free_addr();
    let run = work
        .run_installer(
            &installer,
            &["install", "--root", r, "--listen", &addr, "--yes"],
        )
        .expect_code(1);
    run.stderr_has("k3s: the node was not Ready within 20 s (k3s exited");
    let log = format!("{r}/var/lib/airlock/edge-k3s.log");
    run.stderr_has(&format!("look at {log}"));
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("Incorrect Usage: flag provided but not defined: --no-such-flag"),
        "{text}"
    );
}

#[test]
fn a_k3s_pause_image_missing_from_the_images_fails_the_build_naming_it() {
    // k3s's default, with no `images:` entry for it.
    let work = write_spec("[]", "");
    let run = work
        .airlock(&["build", "-f", "airlock.yaml", "-o", "edge.run"])
        .expect_code(1);
    run.stderr_has(&format!(
        "engine k3s: the pause image {K3S_PAUSE} (k3s's default) is not among the images"
    ));
    assert!(!work.join("edge.run").exists());

    // `--pause-image` names another: that one must be there, the default is not enough.
    let work = write_spec(
        "[--pause-image=example.hub/k8s/pause:9]",
        &format!("  - ref: {K3S_PAUSE}\n    from: oci:images/pause:3.6\n"),
    );
    let run = work
        .airlock(&["build", "-f", "airlock.yaml", "-o", "edge.run"])
        .expect_code(1);
    run.stderr_has(
        "engine k3s: the pause image example.hub/k8s/pause:9 (from --pause-image) is not among the images",
    );

    // Under the flag's name, it builds.
    let work = write_spec(
        "[--pause-image, example.hub/k8s/pause:9]",
        "  - ref: example.hub/k8s/pause:9\n    from: oci:images/pause:3.6\n",
    );
    work.build("edge.run");
}
