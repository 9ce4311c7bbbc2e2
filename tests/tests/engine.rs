//! The `containerd` engine and hooks, for real: an installer carrying Debian's containerd,
//! containerd-shim-runc-v2, runc and ctr installs into a temporary `--root` inside a network
//! namespace that has only loopback, starts its containerd from the payload, pulls every
//! captured image through the local registry, and `ctr run` starts them; hooks see the
//! documented environment; `uninstall` leaves no process and no file. A failing hook stops
//! the install and shows its output.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_fixtures::images::{same_name_different_registries, write_pause_layout, BuiltImage};
use util::Workdir;

struct Built {
    work: Workdir,
    installer: PathBuf,
    docker: BuiltImage,
    hub: BuiltImage,
}

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

/// Debian's containerd 1.6's default sandbox image: the build picks it when the spec names
/// none, and takes it from the `images:` entry of the same ref.
const DEFAULT_PAUSE: &str = "registry.k8s.io/pause:3.6";

const POST_HOOK: &str = r#"#!/bin/sh
set -e
out="$AIRLOCK_ROOT/hook-post.txt"
echo "hook=$AIRLOCK_HOOK name=$AIRLOCK_NAME version=$AIRLOCK_VERSION engine=$AIRLOCK_ENGINE" > "$out"
echo "registry=$AIRLOCK_REGISTRY" >> "$out"
echo "socket=$AIRLOCK_CONTAINERD_SOCKET" >> "$out"
echo "copy=$AIRLOCK_INSTALLER_COPY" >> "$out"
echo "cwd=$(pwd)" >> "$out"
test -x "$AIRLOCK_INSTALLER_COPY"
echo "post-install saw the node"
"#;

fn build_containerd() -> Built {
    let work = Workdir::new();
    let (docker, hub) =
        same_name_different_registries(&work.join("images/same")).expect("write fixture images");
    write_pause_layout(&work.join("images/pause"), "3.6").expect("write the pause image");
    let files: String = PROGRAMS
        .iter()
        .map(|(src, name)| format!("  - src: {src}\n    dest: /usr/local/bin/{name}\n"))
        .collect();
    work.write_file("hooks/post.sh", POST_HOOK);
    work.write_spec(&format!(
        r#"name: node
version: "1.0"
files:
{files}images:
  - ref: example.hub/team/app:1.0
    from: oci:images/same/hub:1
  - ref: docker.io/library/app:1
    from: oci:images/same/docker:1
  - ref: {DEFAULT_PAUSE}
    from: oci:images/pause:3.6
engine: containerd
hooks:
  post-install: hooks/post.sh
"#
    ));
    let installer = work.build("node.run");
    Built {
        work,
        installer,
        docker,
        hub,
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
    copy: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let copy = self.root.join(self.copy);
        if copy.exists() {
            let _ = self
                .work
                .run_installer(&copy, &["-q", "uninstall", "--root", path_str(self.root)]);
        }
    }
}

/// The issue's proof, in a network namespace with only loopback.
#[test]
fn containerd_engine_installs_offline_runs_both_images_and_uninstalls() {
    util::oci::run_in_loopback_namespace(
        "containerd_engine_installs_offline_runs_both_images_and_uninstalls",
        containerd_engine_round_trip,
    );
}

fn containerd_engine_round_trip() {
    let b = build_containerd();
    // Short: containerd's socket path must stay under 108 bytes.
    let root_dir = tempfile::Builder::new()
        .prefix("eng")
        .tempdir_in("/tmp")
        .unwrap();
    let root = root_dir.path();
    let _cleanup = Cleanup {
        work: &b.work,
        root,
        copy: "var/lib/airlock/node-1.0.run",
    };
    let addr = util::free_addr();
    let args = [
        "install",
        "--root",
        path_str(root),
        "--listen",
        &addr,
        "--yes",
    ];
    let first = b.work.run_installer(&b.installer, &args).success();
    for line in [
        "containerd: started as daemon pid",
        "containerd: ready, answered on",
        "containerd: pulled docker.io/library/app:1 into namespace k8s.io (1/3)",
        "containerd: pulled example.hub/team/app:1.0 into namespace k8s.io (2/3)",
        "containerd: pulled registry.k8s.io/pause:3.6 into namespace k8s.io (3/3)",
        "hook post-install: ok (hooks/post.sh, log",
        "hook post-install: ok",
        "post-install saw the node",
    ] {
        assert!(
            first.stdout.contains(line),
            "missing {line:?} in\n{}",
            first.describe()
        );
    }

    // No `sandbox_image` in the spec: the payload's containerd's default is written.
    let config = fs::read_to_string(root.join("etc/containerd/airlock-node.toml")).unwrap();
    assert!(
        config.contains(&format!("\n  sandbox_image = \"{DEFAULT_PAUSE}\"\n")),
        "{config}"
    );

    // The hook saw the documented environment.
    let seen = fs::read_to_string(root.join("hook-post.txt")).unwrap();
    let sock = root.join("run/containerd/containerd.sock");
    assert!(seen.contains("hook=post-install name=node version=1.0 engine=containerd"));
    assert!(seen.contains(&format!("registry={addr}\n")), "{seen}");
    assert!(
        seen.contains(&format!("socket={}\n", sock.display())),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("cwd={}\n", root.display())),
        "{seen}"
    );
    fs::remove_file(root.join("hook-post.txt")).unwrap();

    // The images were pre-pulled: run them with the installed ctr, no pull needed.
    let ctr = root.join("usr/local/bin/ctr");
    let run = |reference: &str, id: &str| {
        let mut c = Command::new(&ctr);
        c.arg("--address")
            .arg(&sock)
            .args(["-n", "k8s.io", "run", "--rm", reference, id]);
        util::run(c).success().stdout
    };
    assert_eq!(
        run("example.hub/team/app:1.0", "hub"),
        b.hub.expected_output()
    );
    assert_eq!(
        run("docker.io/library/app:1", "dock"),
        b.docker.expected_output()
    );

    // A re-run converges: nothing restarted.
    let second = b.work.run_installer(&b.installer, &args).success();
    assert!(
        second
            .stdout
            .contains("containerd: already running as daemon pid"),
        "{}",
        second.describe()
    );
    assert!(second
        .stdout
        .contains("registry: already running as daemon pid"));
    fs::remove_file(root.join("hook-post.txt")).unwrap();

    // Uninstall: no process, no file.
    b.work
        .run_installer(
            &root.join("var/lib/airlock/node-1.0.run"),
            &["uninstall", "--root", path_str(root)],
        )
        .success();
    assert_eq!(processes_under(root), Vec::<String>::new());
    assert_eq!(
        util::tree(root),
        Vec::<String>::new(),
        "uninstall left files behind"
    );
}

#[test]
fn a_failing_pre_install_hook_stops_the_install_and_shows_its_output() {
    let work = Workdir::new();
    work.write_file("etc/app.conf", "x\n");
    work.write_file(
        "pre.sh",
        "#!/bin/sh\necho \"checking $AIRLOCK_NAME on $AIRLOCK_ROOT\"\necho 'kernel too old' >&2\nexit 3\n",
    );
    work.write_spec(
        "name: app\nversion: '2'\nfiles:\n  - src: etc/\n    dest: /etc/app/\nhooks:\n  pre-install: pre.sh\n",
    );
    let installer = work.build("app.run");
    let root = work.join("root");
    let addr = util::free_addr();
    let run = work.run_installer(
        &installer,
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
    run.stderr_has("hook pre-install exited with code 3");
    run.stderr_has(&format!("  | checking app on {}", root.display()));
    run.stderr_has("  | kernel too old");
    assert!(
        !root.join("etc/app").exists(),
        "files were laid out after a failed hook"
    );

    // The plan names the hook; uninstall removes what the failed run created.
    let dry = work
        .run_installer(
            &installer,
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
    assert!(
        dry.stdout.contains("hook pre-install: "),
        "{}",
        dry.describe()
    );
    work.run_installer(&installer, &["uninstall", "--root", path_str(&root)])
        .success();
    assert_eq!(util::tree(&root), Vec::<String>::new());
}

#[test]
fn a_spec_whose_engine_lacks_runc_fails_the_build_naming_it() {
    let work = Workdir::new();
    work.write_file("bin/containerd", "#!/bin/sh\n");
    work.write_spec(
        "name: x\nversion: '1'\nfiles:\n  - src: bin/containerd\n    dest: /usr/bin/containerd\nengine: containerd\n",
    );
    let run = work
        .airlock(&["build", "-f", "airlock.yaml", "-o", "x.run"])
        .expect_code(1);
    run.stderr_has("engine containerd: /usr/bin/containerd-shim-runc-v2 is not among the files");
    assert!(!work.join("x.run").exists());
}
