//! Stock Docker Engine and podman pull every upstream name through the installer, for real:
//! Debian's dockerd 20.10 (classic image store) and podman 4.3 run in a network namespace
//! with only loopback and a private mount namespace, after `install --root R`, with the
//! config that install wrote (`R/etc/docker` bind-mounted over `/etc/docker`, the
//! `docker.service` drop-in's environment, `R/etc/containers/registries.conf.d` over the
//! host's). docker.io comes through `registry-mirrors`, every other host through the
//! TLS-intercepting pull proxy; podman through path-prefix mirrors.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_fixtures::images::{write_oci_layout, BuiltImage, ImageContent};
use util::{free_addr, have_command, is_root, prerequisite, run, Workdir};

/// The three fixture images of the runtime tests and the installer holding them.
struct Built {
    work: Workdir,
    installer: PathBuf,
    images: Vec<(&'static str, BuiltImage)>,
}

fn build_three() -> Built {
    let work = Workdir::new();
    let mut images = Vec::new();
    let specs = [
        (
            "example.hub/team/app:1.0",
            "hub",
            "hello from example.hub/team/app",
        ),
        (
            "docker.io/library/app:1",
            "dock",
            "hello from docker.io/library/app",
        ),
        (
            "quay.io/team/tool:2.0",
            "quay",
            "hello from quay.io/team/tool",
        ),
    ];
    let mut yaml = String::from("name: edge\nversion: \"1.0\"\nimages:\n");
    for (reference, dir, message) in specs {
        let mut built = write_oci_layout(
            &work.join(format!("images/{dir}")),
            &[("t", ImageContent::new(message), false)],
        )
        .expect("write a fixture image");
        yaml.push_str(&format!(
            "  - ref: {reference}\n    from: oci:images/{dir}:t\n"
        ));
        images.push((reference, built.remove(0)));
    }
    work.write_spec(&yaml);
    let installer = work.build("edge.run");
    Built {
        work,
        installer,
        images,
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Set (to a marker file path) when a test binary runs inside `unshare -n -m`.
const MARKER: &str = "AIRLOCK_TEST_RUNTIME_NS_MARKER";

/// Runs `inner` in new network (loopback only, up) and mount namespaces: the test binary
/// re-runs itself there filtered to `test`; a marker file proves the inner run happened.
/// Returns false (skipped) when a prerequisite is missing outside CI.
fn in_private_namespaces(test: &str, programs: &[&str], inner: fn()) {
    if let Some(marker) = std::env::var_os(MARKER) {
        inner();
        fs::write(marker, "ran").unwrap();
        return;
    }
    let missing: Vec<&&str> = programs.iter().filter(|p| !have_command(p)).collect();
    if !prerequisite(is_root(), test, "needs root (namespaces, dockerd, mounts)")
        || !prerequisite(
            missing.is_empty(),
            test,
            &format!("missing programs {missing:?} (apt-get install docker.io podman util-linux iproute2)"),
        )
        || !prerequisite(
            util::can_mount_in_namespace(),
            test,
            "cannot mount in a new mount namespace",
        )
    {
        return;
    }
    util::oci::rerun_in_namespaces(test, &["--net", "--mount"], MARKER);
}

/// `mount --bind from to` (in the test's private mount namespace).
fn bind_mount(from: &Path, to: &str) {
    run({
        let mut c = Command::new("mount");
        c.args(["--bind", path_str(from), to]);
        c
    })
    .success();
}

/// Installs `b.installer` under `root` for `runtimes`, returning the registry and proxy
/// addresses.
fn install(b: &Built, root: &Path, runtimes: &str) -> (String, String) {
    let (listen, proxy) = (free_addr(), free_addr());
    install_at(b, root, runtimes, &listen, &proxy);
    (listen, proxy)
}

/// [`install`] with given addresses.
fn install_at(b: &Built, root: &Path, runtimes: &str, listen: &str, proxy: &str) {
    let r = b
        .work
        .run_installer(
            &b.installer,
            &[
                "install",
                "--root",
                path_str(root),
                "--listen",
                listen,
                "--proxy-listen",
                proxy,
                "--mirror-for",
                runtimes,
                "-y",
            ],
        )
        .success();
    eprintln!("{}", r.stdout);
}

/// Uninstalls from `root` when dropped (also after a failed assertion).
struct Uninstall<'a>(&'a Built, &'a Path);

impl Drop for Uninstall<'_> {
    fn drop(&mut self) {
        let copy = self.1.join("var/lib/airlock/edge-1.0.run");
        if copy.exists() {
            let r = self
                .0
                .work
                .run_installer(&copy, &["uninstall", "--root", path_str(self.1)]);
            eprintln!("{}", r.stdout);
        }
    }
}

/// The `KEY=VALUE` words of the drop-in's `Environment=` lines.
fn dropin_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(|rest| rest.split_whitespace())
        .filter_map(|w| {
            let (k, v) = w.trim_matches('"').split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Debian's docker client (`/usr/local/bin` may hold a newer one).
fn docker_cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

struct Dockerd {
    child: Child,
    sock: PathBuf,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn docker(d: &Dockerd, args: &[&str]) -> util::Run {
    run({
        let mut c = Command::new(docker_cli());
        c.env("DOCKER_HOST", format!("unix://{}", d.sock.display()))
            .args(args);
        c
    })
}

fn docker_inside() {
    let b = build_three();
    let root = b.work.join("R");
    let (_listen, proxy) = install(&b, &root, "docker");
    let _undo = Uninstall(&b, &root);

    let dropin =
        fs::read_to_string(root.join("etc/systemd/system/docker.service.d/50-airlock-edge.conf"))
            .unwrap();
    let env = dropin_env(&dropin);
    assert!(
        env.contains(&("HTTPS_PROXY".to_owned(), format!("http://{proxy}"))),
        "{dropin}"
    );
    for host in ["example.hub", "quay.io", "docker.io"] {
        let ca = root.join(format!("etc/docker/certs.d/{host}/ca.crt"));
        assert!(ca.is_file(), "{} missing", ca.display());
    }
    let key = root.join("var/lib/airlock/proxy-edge/ca.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "CA key mode");

    // Docker reads /etc/docker/certs.d: the installed folder stands in for it.
    bind_mount(&root.join("etc/docker"), "/etc/docker");
    let state = b.work.join("dockerd");
    fs::create_dir_all(&state).unwrap();
    let sock = state.join("docker.sock");
    let log = fs::File::create(state.join("dockerd.log")).unwrap();
    let mut cmd = Command::new("dockerd");
    cmd.args([
        "--data-root",
        path_str(&state.join("data")),
        "--exec-root",
        path_str(&state.join("exec")),
        "--pidfile",
        path_str(&state.join("docker.pid")),
        "-H",
        &format!("unix://{}", sock.display()),
        "--bridge=none",
        "--iptables=false",
        "--config-file",
        path_str(&root.join("etc/docker/daemon.json")),
    ])
    .envs(env)
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log);
    let d = Dockerd {
        child: cmd.spawn().expect("start dockerd"),
        sock,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while docker(&d, &["version"]).code != Some(0) {
        assert!(
            Instant::now() < deadline,
            "dockerd did not come up: {}",
            fs::read_to_string(state.join("dockerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (reference, image) in &b.images {
        docker(&d, &["pull", "-q", reference]).success();
        let out = docker(&d, &["run", "--rm", "--network", "none", reference]).success();
        assert_eq!(out.stdout, image.expected_output(), "{reference}");
    }
    let start = Instant::now();
    let absent = docker(&d, &["pull", "example.hub/absent:1"]);
    assert!(absent.code != Some(0), "absent image pulled");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a failed pull took {:?}",
        start.elapsed()
    );
    drop(d);
}

#[test]
fn docker_engine_pulls_and_runs_every_upstream_name_through_the_installer() {
    in_private_namespaces(
        "docker_engine_pulls_and_runs_every_upstream_name_through_the_installer",
        &["dockerd", "unshare", "ip", "mount"],
        docker_inside,
    );
}

fn podman_inside() {
    let b = build_three();
    let root = b.work.join("R");
    install(&b, &root, "podman");
    let _undo = Uninstall(&b, &root);
    let dropins = root.join("etc/containers/registries.conf.d");
    assert!(dropins.join("50-airlock-edge.conf").is_file());
    fs::create_dir_all("/etc/containers/registries.conf.d").unwrap();
    bind_mount(&dropins, "/etc/containers/registries.conf.d");
    let storage = b.work.join("podman");
    let podman = |args: &[&str]| {
        run({
            let mut c = Command::new("podman");
            c.args([
                "--root",
                path_str(&storage.join("storage")),
                "--runroot",
                path_str(&storage.join("run")),
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args);
            c
        })
    };
    for (reference, image) in &b.images {
        podman(&["pull", "-q", reference]).success();
        let out = podman(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            reference,
        ])
        .success();
        assert_eq!(out.stdout, image.expected_output(), "{reference}");
    }
}

#[test]
fn podman_pulls_and_runs_every_upstream_name_through_the_installer() {
    in_private_namespaces(
        "podman_pulls_and_runs_every_upstream_name_through_the_installer",
        &["podman", "unshare", "ip", "mount"],
        podman_inside,
    );
}

#[test]
fn a_broken_daemon_json_stops_the_install_before_anything_changes() {
    let b = build_three();
    let root = b.work.join("R");
    fs::create_dir_all(root.join("etc/docker")).unwrap();
    let broken = "{\n  \"debug\": true,\n  oops\n}\n";
    fs::write(root.join("etc/docker/daemon.json"), broken).unwrap();
    let r = b
        .work
        .run_installer(
            &b.installer,
            &[
                "install",
                "--root",
                path_str(&root),
                "--listen",
                &free_addr(),
                "--mirror-for",
                "docker",
                "-y",
            ],
        )
        .expect_code(1);
    r.stderr_has("etc/docker/daemon.json is not valid JSON (line 3, column 3)");
    assert_eq!(
        util::tree(&root),
        ["etc", "etc/docker", "etc/docker/daemon.json"]
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/docker/daemon.json")).unwrap(),
        broken
    );
}

#[test]
fn the_docker_dropin_passes_systemd_analyze_verify_and_daemon_json_round_trips() {
    if !prerequisite(
        have_command("systemd-analyze"),
        "the_docker_dropin_passes_systemd_analyze_verify_and_daemon_json_round_trips",
        "systemd-analyze is missing (apt-get install systemd)",
    ) {
        return;
    }
    let b = build_three();
    let root = b.work.join("R");
    fs::create_dir_all(root.join("etc/docker")).unwrap();
    let user = "{\"log-driver\": \"journald\", \"live-restore\": true}";
    fs::write(root.join("etc/docker/daemon.json"), user).unwrap();
    let (listen, proxy) = install(&b, &root, "docker,podman");
    {
        let _undo = Uninstall(&b, &root);
        let units = b.work.join("units");
        fs::create_dir_all(units.join("docker.service.d")).unwrap();
        fs::write(
            units.join("docker.service"),
            "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        fs::copy(
            root.join("etc/systemd/system/docker.service.d/50-airlock-edge.conf"),
            units.join("docker.service.d/50-airlock-edge.conf"),
        )
        .unwrap();
        let verify = run({
            let mut c = Command::new("systemd-analyze");
            c.args(["verify", path_str(&units.join("docker.service"))])
                .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()));
            c
        });
        assert_eq!(verify.code, Some(0), "{}", verify.describe());
        assert!(
            !verify.stderr.contains("50-airlock-edge.conf"),
            "systemd-analyze complained about the drop-in: {}",
            verify.stderr
        );
        let merged: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(root.join("etc/docker/daemon.json")).unwrap())
                .unwrap();
        assert_eq!(merged["log-driver"], "journald");
        assert_eq!(merged["live-restore"], true);
        assert_eq!(merged["registry-mirrors"].as_array().unwrap().len(), 1);
        // A re-run converges: same CA, no duplicate values.
        let ca = fs::read(root.join("var/lib/airlock/proxy-edge/ca.crt")).unwrap();
        install_at(&b, &root, "docker,podman", &listen, &proxy);
        assert_eq!(
            fs::read(root.join("var/lib/airlock/proxy-edge/ca.crt")).unwrap(),
            ca
        );
        let again: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(root.join("etc/docker/daemon.json")).unwrap())
                .unwrap();
        assert_eq!(again, merged);
    }
    // Uninstall gave the user's daemon.json back and removed the rest.
    let back: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root.join("etc/docker/daemon.json")).unwrap())
            .unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(user).unwrap()
    );
    assert!(!root.join("etc/docker/certs.d").exists());
    assert!(!root.join("etc/systemd").exists());
    assert!(!root.join("etc/containers").exists());
}
