//! `install` and `uninstall` (engine `none`) run for real into a temporary `--root`: files,
//! the persistent installer copy, the registry as a daemon, mirror config, the record; a
//! re-run converges; `uninstall` leaves nothing of ours. With root and containerd, images
//! are pulled through the written `hosts.toml` files, also after the original installer
//! file is gone.

mod util;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use airlock_fixtures::images::{same_name_different_registries, BuiltImage};
use util::oci::{containerd_ready, curl, pull_and_run, status_of, Containerd};
use util::Workdir;

/// An installer `edge` 1.0 with a few files and two images of the same name under two
/// registries.
struct Built {
    work: Workdir,
    installer: PathBuf,
    docker: BuiltImage,
    hub: BuiltImage,
}

fn build() -> Built {
    let work = Workdir::new();
    work.write_file("src/etc/edge/config.yaml", "mode: edge\n");
    work.write_file("src/usr/local/bin/edge-tool", "#!/bin/sh\necho edge\n");
    let (docker, hub) =
        same_name_different_registries(&work.join("images/same")).expect("write same-name layouts");
    work.write_spec(
        r#"name: edge
version: "1.0"
files:
  - src: src/
    dest: /
images:
  - ref: docker.io/library/app:1
    from: oci:images/same/docker:1
  - ref: example.hub/library/app:1
    from: oci:images/same/hub:1
"#,
    );
    let installer = work.build("edge.run");
    Built {
        work,
        installer,
        docker,
        hub,
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// True while `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x") | None)
}

fn wait_gone(pid: u32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn registry_pid(root: &Path) -> u32 {
    fs::read_to_string(root.join("var/lib/airlock/edge-registry.pid"))
        .expect("the pid file exists")
        .trim()
        .parse()
        .expect("the pid file holds a pid")
}

/// Stops a daemon a failed test left behind, with the persistent copy (the original may
/// have been moved away).
struct Cleanup<'a>(&'a Built, &'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let copy = self.1.join("var/lib/airlock/edge-1.0.run");
        if self.1.join("var/lib/airlock/edge.json").exists() && copy.exists() {
            let _ = self
                .0
                .work
                .run_installer(&copy, &["-q", "uninstall", "--root", path_str(self.1)]);
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn install(b: &Built, root: &Path, addr: &str) -> util::Run {
    b.work
        .run_installer(
            &b.installer,
            &[
                "install",
                "--root",
                path_str(root),
                "--listen",
                addr,
                "--yes",
            ],
        )
        .success()
}

#[test]
fn install_into_a_root_serves_mirrors_converges_and_uninstalls_cleanly() {
    let b = build();
    let root = b.work.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), "node-1\n").unwrap();
    let _cleanup = Cleanup(&b, &root);
    let addr = free_addr();

    let first = install(&b, &root, &addr);
    for step in [
        "lock:",
        "record:",
        "preflight: ok",
        "files:",
        "installer copy:",
        "registry: started",
        "registry: ready",
        "mirror config:",
        "undo it:",
    ] {
        assert!(
            first.stdout.contains(step),
            "no {step:?} line:\n{}",
            first.describe()
        );
    }
    assert!(
        first.stdout.contains(&format!(
            "ctr image pull --hosts-dir {}/etc/containerd/certs.d",
            root.display()
        )),
        "{}",
        first.describe()
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/edge/config.yaml")).unwrap(),
        "mode: edge\n"
    );
    assert!(root.join("usr/local/bin/edge-tool").is_file());
    let copy = root.join("var/lib/airlock/edge-1.0.run");
    assert_eq!(
        util::sha256sum(&copy),
        util::sha256sum(&b.installer),
        "the persistent copy differs"
    );
    let r = curl(&[&format!("http://{addr}/v2/")]);
    assert_eq!(status_of(&r), 200, "{}", r.describe());
    for host in ["docker.io", "example.hub", "_default"] {
        let toml = root.join(format!("etc/containerd/certs.d/{host}/hosts.toml"));
        let text = fs::read_to_string(&toml).unwrap_or_else(|e| panic!("{}: {e}", toml.display()));
        assert!(
            text.contains(&format!("[host.\"http://{addr}\"]")),
            "{host}: {text}"
        );
    }
    let yaml = fs::read_to_string(root.join("etc/rancher/k3s/registries.yaml")).unwrap();
    assert!(yaml.contains(&format!("http://{addr}")), "{yaml}");
    assert!(
        yaml.contains("\"example.hub\":") && yaml.contains("\"*\":"),
        "{yaml}"
    );
    let pid = registry_pid(&root);
    assert!(alive(pid));

    // A re-run converges: same daemon, same files.
    let before = tree(&root);
    let second = install(&b, &root, &addr);
    assert!(
        second.stdout.contains("registry: already running"),
        "{}",
        second.describe()
    );
    assert!(
        second.stdout.contains("(already current)"),
        "{}",
        second.describe()
    );
    assert_eq!(registry_pid(&root), pid, "the registry was restarted");
    assert_eq!(tree(&root), before);
    let r = curl(&[&format!("http://{addr}/v2/")]);
    assert_eq!(status_of(&r), 200, "{}", r.describe());

    let gone = b
        .work
        .run_installer(&b.installer, &["uninstall", "--root", path_str(&root)])
        .success();
    assert!(
        gone.stdout.contains("stopped registry"),
        "{}",
        gone.describe()
    );
    assert!(wait_gone(pid), "the registry daemon {pid} still runs");
    assert_eq!(
        tree(&root),
        ["etc", "etc/hostname"],
        "uninstall left files of ours (or removed the admin's)"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "node-1\n"
    );

    // A second uninstall has nothing to do.
    let again = b
        .work
        .run_installer(&b.installer, &["uninstall", "--root", path_str(&root)])
        .success();
    assert!(
        again.stdout.contains("nothing to uninstall"),
        "{}",
        again.describe()
    );
    // The images' expected outputs are used by the containerd test.
    assert_ne!(b.docker.top_digest(), b.hub.top_digest());
}

#[test]
fn dry_run_changes_nothing_under_the_root() {
    let b = build();
    let root = b.work.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), "node-1\n").unwrap();
    let addr = free_addr();
    let run = b
        .work
        .run_installer(
            &b.installer,
            &[
                "install",
                "--root",
                path_str(&root),
                "--listen",
                &addr,
                "--dry-run",
            ],
        )
        .success();
    assert!(run.stdout.contains("plan:"), "{}", run.describe());
    assert!(
        run.stdout.contains("dry run: nothing was changed"),
        "{}",
        run.describe()
    );
    assert_eq!(tree(&root), ["etc", "etc/hostname"]);
    // Nothing listens on the address either.
    assert!(TcpListener::bind(&addr).is_ok(), "something serves {addr}");
}

#[test]
fn a_busy_registry_port_fails_preflight_and_changes_nothing() {
    let b = build();
    let root = b.work.join("root");
    fs::create_dir(&root).unwrap();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let run = b.work.run_installer(
        &b.installer,
        &[
            "install",
            "--root",
            path_str(&root),
            "--listen",
            &addr,
            "--yes",
        ],
    );
    let run = run.expect_code(1);
    run.stderr_has("preflight found 1 problem(s), nothing was changed");
    run.stderr_has(&format!("the registry address {addr} is in use"));
    assert_eq!(
        tree(&root),
        Vec::<String>::new(),
        "preflight changed the root"
    );
}

#[test]
fn containerd_pulls_through_the_installed_mirrors_even_after_the_installer_is_gone() {
    if !containerd_ready("install + containerd test") {
        return;
    }
    install_then_pull_and_run();
}

/// The proof that an install needs no network: the whole install and both pulls run in a
/// network namespace that has only a loopback interface.
#[test]
fn an_install_in_a_network_namespace_with_only_loopback_serves_containerd() {
    util::oci::run_in_loopback_namespace(
        "an_install_in_a_network_namespace_with_only_loopback_serves_containerd",
        install_then_pull_and_run,
    );
}

fn install_then_pull_and_run() {
    let b = build();
    let root = b.work.join("root");
    fs::create_dir(&root).unwrap();
    let _cleanup = Cleanup(&b, &root);
    let addr = free_addr();
    install(&b, &root, &addr);
    let hosts = root.join("etc/containerd/certs.d");
    let ctd = Containerd::start();
    assert_eq!(
        pull_and_run(&ctd, &hosts, "example.hub/library/app:1", "hub"),
        b.hub.expected_output()
    );
    assert_eq!(
        pull_and_run(&ctd, &hosts, "docker.io/library/app:1", "dock"),
        b.docker.expected_output()
    );

    // The USB stick is pulled: the registry runs from its persistent copy.
    let moved = b.work.join("edge.run.gone");
    fs::rename(&b.installer, &moved).unwrap();
    for reference in ["example.hub/library/app:1", "docker.io/library/app:1"] {
        ctd.ctr(&["-n", "airlock", "image", "rm", reference])
            .success();
        // Drop the content too, so the pull must fetch every blob again.
        let _ = ctd.ctr(&["-n", "airlock", "content", "prune", "references"]);
    }
    assert_eq!(
        pull_and_run(&ctd, &hosts, "example.hub/library/app:1", "hub2"),
        b.hub.expected_output()
    );
    assert_eq!(
        pull_and_run(&ctd, &hosts, "docker.io/library/app:1", "dock2"),
        b.docker.expected_output()
    );
}
