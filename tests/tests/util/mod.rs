//! Shared helpers of the end-to-end tests: where the built programs are, a per-test work
//! folder that runs them, and checks for prerequisites (root, mount namespaces).
//!
//! Every test file includes this module with `mod util;`; not every file uses every helper.
#![allow(dead_code)]

pub mod oci;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Environment variables that change what `airlock` or an installer does; every run starts
/// without them so the caller's shell cannot leak into a test.
const SCRUBBED_ENV: [&str; 7] = [
    "AIRLOCK_INSTALLER",
    "AIRLOCK_KEY_PASSWORD",
    "AIRLOCK_TRUSTED_KEYS",
    "AIRLOCK_STUB",
    "SOURCE_DATE_EPOCH",
    "RUST_LOG",
    "NO_COLOR",
];

/// The folder holding the workspace's binaries: the test executable lives in
/// `target/<triple>/<profile>/deps/`, the binaries one level up.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe.parent().expect("the test executable has a folder");
    let dir = if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().unwrap()
    } else {
        deps
    };
    dir.to_path_buf()
}

fn workspace_bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first (the README's test command is \
         `cargo build --release --workspace && cargo test --release --workspace`)",
        path.display()
    );
    path
}

/// The `airlock` builder program.
pub fn airlock_bin() -> PathBuf {
    workspace_bin("airlock")
}

/// The bare installer stub (`airlock-stub`), as the builder puts it in front of payloads.
pub fn stub_bin() -> PathBuf {
    workspace_bin("airlock-stub")
}

/// True when the tests run under CI (`CI=true`): a missing prerequisite is then a failure.
pub fn in_ci() -> bool {
    airlock_fixtures::skip::in_ci()
}

/// True when this process runs as root (effective uid 0), read from `/proc/self/status`.
pub fn is_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            // Uid: real effective saved fs
            return line.split_whitespace().nth(2) == Some("0");
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Checks a prerequisite: returns true when it holds. Otherwise, outside CI, prints
/// `SKIP <test>: <reason>` and returns false; under `CI=true` it fails the test.
pub fn prerequisite(holds: bool, test: &str, reason: &str) -> bool {
    airlock_fixtures::skip::prerequisite(holds, test, reason)
}

/// True when `unshare --mount --fork` works here (root, or a user allowed to create mount
/// namespaces) and can mount a tmpfs.
pub fn can_mount_in_namespace() -> bool {
    Command::new("unshare")
        .args([
            "--mount",
            "--fork",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when `cmd` is found in `PATH`.
pub fn have_command(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `cmd`, retrying while the kernel says the program file is busy (`ETXTBSY`): a test
/// that just wrote an executable can race with a fork in another test thread that briefly
/// holds the write descriptor until its `exec`.
pub fn output_of(cmd: &mut Command) -> Output {
    let mut tries = 0;
    loop {
        match cmd.output() {
            Ok(o) => return o,
            Err(e) if e.raw_os_error() == Some(26) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("failed to run {cmd:?}: {e}"),
        }
    }
}

/// A finished process, with its output decoded and a description for assertion messages.
#[derive(Debug)]
pub struct Run {
    /// What ran.
    pub what: String,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Run {
    fn from_command(mut cmd: Command) -> Run {
        let what = format!("{cmd:?}");
        let start = Instant::now();
        let out = output_of(&mut cmd);
        let elapsed = start.elapsed();
        Run {
            what,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed,
        }
    }

    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\nexit code: {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.code,
            self.elapsed,
            truncate(&self.stdout, 4000),
            truncate(&self.stderr, 4000)
        )
    }

    /// Asserts exit code `code` and returns `self`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}:\n{}",
            self.describe()
        );
        self
    }

    /// Asserts success and returns `self`.
    #[track_caller]
    pub fn success(self) -> Run {
        self.expect_code(0)
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr should contain {needle:?}:\n{}",
            self.describe()
        );
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.describe()))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A test's own folder (removed at the end), with helpers that run the real programs in it.
pub struct Workdir {
    tmp: tempfile::TempDir,
}

impl Workdir {
    /// A fresh, empty folder.
    pub fn new() -> Workdir {
        let tmp = tempfile::Builder::new()
            .prefix("airlock-e2e-")
            .tempdir()
            .expect("create a temp dir");
        Workdir { tmp }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// A path inside the folder.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes `airlock.yaml` and returns its path.
    pub fn write_spec(&self, yaml: &str) -> PathBuf {
        let path = self.join("airlock.yaml");
        fs::write(&path, yaml).expect("write the spec");
        path
    }

    /// Writes a file (creating parents) and returns its path.
    pub fn write_file(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parents");
        }
        fs::write(&path, contents).expect("write a file");
        path
    }

    /// Names of the entries directly in `rel` (sorted).
    pub fn names_in(&self, rel: impl AsRef<Path>) -> Vec<String> {
        names_in(&self.join(rel))
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.path());
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs `airlock ARGS` in the folder.
    pub fn airlock(&self, args: &[&str]) -> Run {
        self.airlock_env(args, &[])
    }

    /// Runs `airlock ARGS` in the folder with extra environment variables.
    pub fn airlock_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(&airlock_bin());
        cmd.args(args).envs(envs.iter().copied());
        Run::from_command(cmd)
    }

    /// Builds `airlock.yaml` into `out` (relative to the folder), asserting success.
    pub fn build(&self, out: &str) -> PathBuf {
        self.airlock(&["-q", "build", "-f", "airlock.yaml", "-o", out])
            .success();
        let path = self.join(out);
        assert!(path.is_file(), "{} was not written", path.display());
        path
    }

    /// Runs the installer `installer` with `args`, in the folder.
    pub fn run_installer(&self, installer: &Path, args: &[&str]) -> Run {
        let cmd = self.installer_command(installer, args);
        Run::from_command(cmd)
    }

    /// The command that runs `installer` with `args` (for callers that add settings).
    pub fn installer_command(&self, installer: &Path, args: &[&str]) -> Command {
        let mut cmd = self.command(&absolute(installer));
        cmd.args(args);
        cmd
    }

    /// Runs the bare stub with `AIRLOCK_INSTALLER=file`: for a file so damaged that it
    /// cannot run itself (truncated inside its program).
    pub fn run_stub_on(&self, file: &Path, args: &[&str]) -> Run {
        let mut cmd = self.command(&stub_bin());
        cmd.args(args).env("AIRLOCK_INSTALLER", absolute(file));
        Run::from_command(cmd)
    }

    /// Runs a shell script with positional arguments, in the folder.
    pub fn sh(&self, script: &str, args: &[&OsStr]) -> Run {
        let mut cmd = self.command(Path::new("/bin/sh"));
        cmd.arg("-c").arg(script).arg("sh").args(args);
        Run::from_command(cmd)
    }

    /// `airlock inspect --json FILE`, asserting success.
    pub fn inspect_json(&self, file: &Path) -> Value {
        self.airlock(&["inspect", "--json", file.to_str().unwrap()])
            .success()
            .json()
    }
}

/// Runs `cmd` with argv[0] set to `arg0`.
pub fn run_with_arg0(mut cmd: Command, arg0: &str) -> Run {
    cmd.arg0(arg0);
    Run::from_command(cmd)
}

/// Runs a prepared command.
pub fn run(cmd: Command) -> Run {
    Run::from_command(cmd)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap().join(p)
    }
}

/// Names of the entries directly in `dir` (sorted); empty when `dir` does not exist.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("failed to read {}: {e}", dir.display()),
    };
    names.sort();
    names
}

/// `sha256sum FILE` as `sha256:<hex>`, computed by the coreutils program (an independent
/// implementation of the digest).
pub fn sha256sum(file: &Path) -> String {
    let out = output_of(Command::new("sha256sum").arg(file));
    assert!(out.status.success(), "sha256sum {} failed", file.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest");
    assert_eq!(hex.len(), 64, "{text}");
    format!("sha256:{hex}")
}

/// Inverts every bit of the byte at `offset` of `file`.
pub fn flip_byte(file: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .expect("open for flipping");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)
        .expect("read the byte to flip");
    b[0] ^= 0xff;
    f.write_all_at(&b, offset).expect("write the flipped byte");
}

/// Copies the first `len` bytes of `src` into a new executable file `dst`.
pub fn truncated_copy(src: &Path, dst: &Path, len: u64) {
    use std::io::Read;
    let mut input = fs::File::open(src).expect("open the installer").take(len);
    let mut output = fs::File::create(dst).expect("create the truncated copy");
    let copied = io::copy(&mut input, &mut output).expect("copy");
    assert_eq!(copied, len);
    drop(output);
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).expect("chmod 755");
}

/// Sets permission bits.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// True when `text` holds `n` as a whole number (not as part of a longer one).
pub fn contains_number(text: &str, n: u64) -> bool {
    let needle = n.to_string();
    text.match_indices(&needle).any(|(i, m)| {
        let before = text[..i].chars().next_back();
        let after = text[i + m.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// Every `<number> <unit>` size in `text` (B, kB, KB, KiB, MB, MiB, GB, GiB), in bytes.
pub fn sizes_in(text: &str) -> Vec<f64> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .collect();
    let mut sizes = Vec::new();
    for pair in words.windows(2) {
        let Ok(n) = pair[0].parse::<f64>() else {
            continue;
        };
        let factor = match pair[1].trim_end_matches([':', ';', '.']) {
            "B" | "bytes" => 1.0,
            "kB" | "KB" => 1e3,
            "KiB" => 1024.0,
            "MB" => 1e6,
            "MiB" => 1024.0 * 1024.0,
            "GB" => 1e9,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            _ => continue,
        };
        sizes.push(n * factor);
    }
    sizes
}

/// The first regular file in `list --json` order with a non-zero size.
pub fn first_nonempty_file(list: &Value) -> String {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "file" && e["size"].as_u64().is_some_and(|s| s > 0))
        .and_then(|e| e["path"].as_str())
        .expect("the installer holds a non-empty file")
        .to_owned()
}

/// Reads `key` of a JSON object as u64.
#[track_caller]
pub fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// A loopback port that was free a moment ago (for servers that need a fixed port).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("a bound address").port()
}

/// A loopback address with a port that was free a moment ago (`install` needs a fixed port).
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Every path under `dir`, relative, sorted (symlinks are listed, not followed); empty when
/// `dir` does not exist.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.expect("read a folder entry");
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Root, `unshare`, `chroot` and permission to mount in a new mount namespace.
pub fn root_with_mounts(test: &str) -> bool {
    prerequisite(is_root(), test, "needs root (chroot and mount)")
        && prerequisite(
            have_command("unshare") && have_command("chroot"),
            test,
            "needs unshare and chroot",
        )
        && prerequisite(
            can_mount_in_namespace(),
            test,
            "cannot mount inside `unshare --mount` here",
        )
}
