//! Helpers for tests that pull images from an installer's registry with real clients:
//! a running `registry serve`, a private containerd, hosts.toml mirror folders, curl.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{have_command, is_root, prerequisite, run, Run};

/// An installer's registry, serving on a free loopback port until dropped.
pub struct ServedRegistry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl ServedRegistry {
    /// Starts `installer registry serve --listen 127.0.0.1:0` and waits for the line that
    /// names the bound address.
    pub fn start(installer: &Path) -> ServedRegistry {
        let mut child = Command::new(installer)
            .args(["registry", "serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "failed to start {} registry serve: {e}",
                    installer.display()
                )
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the first line of registry serve");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .unwrap_or_else(|| panic!("registry serve printed no address: {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        ServedRegistry { child, addr }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ServedRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private containerd (own root, state and socket under a temp folder), killed on drop.
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd with the CRI plugin disabled and waits until `ctr version` answers.
    pub fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("ctd")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n"
        );
        fs::write(dir.path().join("config.toml"), config).expect("write containerd config");
        let log = fs::File::create(dir.path().join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let ctd = Containerd { child, dir };
        let start = Instant::now();
        while ctd.ctr(&["version"]).code != Some(0) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "containerd did not start: {}",
                ctd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ctd
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Runs `ctr --address SOCK ARGS...`.
    pub fn ctr(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.socket()).args(args);
        run(cmd)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Containers are gone with `run --rm`; overlay mounts of snapshots may linger.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}

/// Writes containerd mirror config: `<dir>/<host>/hosts.toml` for each of `hosts` (use
/// `_default` for the catch-all), each sending pulls and resolves to `http://addr`.
pub fn write_hosts_dir(dir: &Path, hosts: &[&str], addr: &str) {
    for host in hosts {
        let d = dir.join(host);
        fs::create_dir_all(&d).expect("create hosts dir");
        let server = if *host == "_default" {
            String::new()
        } else {
            format!("server = \"https://{host}\"\n")
        };
        fs::write(
            d.join("hosts.toml"),
            format!(
                "{server}\n[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .expect("write hosts.toml");
    }
}

/// `curl -s -S -i ARGS...`: headers and body in stdout.
pub fn curl(args: &[&str]) -> Run {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-i", "--max-time", "20"]).args(args);
    run(cmd)
}

/// The status code of a `curl -i` response.
pub fn status_of(r: &Run) -> u16 {
    r.stdout
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {}", r.describe()))
}

/// A header's value in a `curl -i` response (case-insensitive name).
pub fn header_of(r: &Run, name: &str) -> Option<String> {
    let head = r.stdout.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The body of a `curl -i` response.
pub fn body_of(r: &Run) -> &str {
    r.stdout.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// True when a private containerd can run here (root, containerd, ctr, runc); otherwise the
/// test is skipped with a reason, or fails under CI.
pub fn containerd_ready(test: &str) -> bool {
    prerequisite(is_root(), test, "containerd and runc need root")
        && prerequisite(
            have_command("containerd") && have_command("ctr") && have_command("runc"),
            test,
            "apt-get install containerd runc",
        )
}

/// Pulls `reference` through the mirror config in `hosts`, runs it as container `id`, and
/// returns what it printed.
pub fn pull_and_run(ctd: &Containerd, hosts: &Path, reference: &str, id: &str) -> String {
    let hosts = hosts.to_str().expect("UTF-8 hosts dir");
    let pulled = ctd.ctr(&[
        "-n",
        "airlock",
        "image",
        "pull",
        "--hosts-dir",
        hosts,
        reference,
    ]);
    assert_eq!(
        pulled.code,
        Some(0),
        "pull {reference}: {}\n{}",
        pulled.describe(),
        ctd.log()
    );
    let ran = ctd.ctr(&["-n", "airlock", "run", "--rm", reference, id]);
    assert_eq!(ran.code, Some(0), "run {reference}: {}", ran.describe());
    ran.stdout
}

/// Set (to a marker file path) when a test binary runs inside `unshare -n`.
const NETNS_MARKER: &str = "AIRLOCK_TEST_NETNS_MARKER";

/// Runs `inner` in a network namespace that has only a loopback interface (up): the test
/// binary re-runs itself there filtered to `test` (its exact name); a marker file proves the
/// inner run happened. Needs root, containerd, `unshare` and `ip` (skipped, or failed in CI,
/// without them).
pub fn run_in_loopback_namespace(test: &str, inner: fn()) {
    if let Some(marker) = std::env::var_os(NETNS_MARKER) {
        let links = run({
            let mut c = Command::new("ip");
            c.args(["-o", "link", "show"]);
            c
        })
        .success();
        let names: Vec<&str> = links
            .stdout
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(str::trim))
            .collect();
        assert_eq!(
            names,
            ["lo"],
            "the namespace must hold only loopback: {}",
            links.stdout
        );
        inner();
        fs::write(marker, "ran").unwrap();
        return;
    }
    let tools = have_command("unshare") && have_command("ip");
    if !containerd_ready(test)
        || !prerequisite(
            tools,
            test,
            "unshare and ip are needed (util-linux, iproute2)",
        )
    {
        return;
    }
    rerun_in_namespaces(test, &["--net"], NETNS_MARKER);
}

/// Re-runs this test binary, filtered to `test`, under `unshare` with `namespaces` (always
/// including `--net`; loopback is brought up first), with `marker_var` naming a marker file
/// the inner run writes; fails the test unless the inner run happened and passed.
pub fn rerun_in_namespaces(test: &str, namespaces: &[&str], marker_var: &str) {
    let marker = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    fs::remove_file(&marker).unwrap();
    let status = Command::new("unshare")
        .args(namespaces)
        .args(["sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(marker_var, &marker)
        .status()
        .expect("run unshare");
    assert!(
        status.success(),
        "{test} failed inside the namespaces {namespaces:?}: {status}"
    );
    assert!(marker.exists(), "the inner run of {test} did not happen");
}

/// Starts Debian's `docker-registry` (distribution) with `config` (YAML text, which must
/// listen on `127.0.0.1:<port>`) written to `dir/registry.yml`, its output in
/// `dir/registry.log`, and waits up to 20 s until the port accepts connections.
pub fn start_distribution(dir: &Path, port: u16, config: &str) -> Child {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("registry.yml");
    fs::write(&path, config).unwrap();
    let log = fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start docker-registry");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "docker-registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}
