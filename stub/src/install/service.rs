//! The registry as a service, running from the persistent installer copy
//! ([`super::persist`]).
//!
//! - Where systemd is PID 1 and the root is `/`: a unit
//!   `<root>/etc/systemd/system/airlock-registry-<name>.service`, enabled and started with
//!   `systemctl` (restarted only when the unit text changed).
//! - Otherwise (containers, chroots, `--root` into a folder): a [`Daemon`] in its own
//!   session, with a pid file and a log under `<root>/var/lib/airlock/`. Its liveness is the
//!   pid *and* the command line in `/proc/<pid>/cmdline`, so a reused pid is not mistaken
//!   for it.
//!
//! The unit file is written in both cases, so a host that boots with systemd later finds it.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fsutil::{create_dirs, logical_parent, resolve, write_atomic};
use super::host::{DaemonSpec, Host, Signal};
use super::persist::installer_copy_path;
use super::record::{PathKind, PathRecord, ServiceRecord, Supervision};
use super::{validate_name, Error, Result, STATE_DIR};

/// Where systemd units are written, inside the root.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// How often a stopping process is polled.
const POLL: Duration = Duration::from_millis(100);
/// How long a process gets to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The registry unit's name for installer `name`.
pub fn registry_unit_name(name: &str) -> String {
    format!("airlock-registry-{name}.service")
}

/// Quotes one word of an `ExecStart=` line: `%` escaped as `%%`, words with blanks, quotes
/// or backslashes in double quotes.
fn systemd_word(word: &str) -> String {
    let w = word.replace('%', "%%");
    if w.is_empty()
        || w.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        w
    }
}

/// What goes into a unit file of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec<'a> {
    /// `Description=`.
    pub description: String,
    /// `ExecStart=` words (program first).
    pub exec: Vec<String>,
    /// `Environment=` pairs.
    pub env: &'a [(String, String)],
    /// `After=` units.
    pub after: &'a str,
    /// `Before=` units (empty: none).
    pub before: &'a str,
    /// `Type=` (`simple`, `notify`).
    pub service_type: &'a str,
    /// More `[Service]` lines, each ending in a newline.
    pub extra: &'a str,
}

/// A unit file of ours: restarted on failure, wanted by `multi-user.target`.
pub fn unit_text(name: &str, version: &str, spec: &UnitSpec<'_>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "# Written by airlock for {name} {version}; `uninstall` removes it.\n\
         [Unit]\n\
         Description={}\n\
         After={}\n",
        spec.description, spec.after
    );
    if !spec.before.is_empty() {
        let _ = writeln!(s, "Before={}", spec.before);
    }
    let _ = write!(s, "\n[Service]\nType={}\n", spec.service_type);
    for (k, v) in spec.env {
        let _ = writeln!(s, "Environment={}", systemd_word(&format!("{k}={v}")));
    }
    let exec: Vec<String> = spec.exec.iter().map(|w| systemd_word(w)).collect();
    let _ = write!(
        s,
        "ExecStart={}\n{}Restart=on-failure\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n",
        exec.join(" "),
        spec.extra
    );
    s
}

/// The registry's unit text: `exec registry serve --listen ADDR`. It needs no network
/// (it serves on loopback from a local file), so it waits only for local filesystems, and
/// orders itself before the runtimes that pull through it.
pub fn registry_unit_text(name: &str, version: &str, exec: &Path, listen: SocketAddr) -> String {
    registry_unit_text_with(name, version, exec, listen, &[])
}

/// [`registry_unit_text`] with `extra` words after `--listen ADDR` (the pull proxy's).
fn registry_unit_text_with(
    name: &str,
    version: &str,
    exec: &Path,
    listen: SocketAddr,
    extra: &[String],
) -> String {
    unit_text(
        name,
        version,
        &UnitSpec {
            description: format!(
                "airlock registry for {name} {version} (serves the captured images)"
            ),
            exec: vec![
                exec.to_string_lossy().into_owned(),
                "registry".into(),
                "serve".into(),
                "--listen".into(),
                listen.to_string(),
            ]
            .into_iter()
            .chain(extra.iter().cloned())
            .collect(),
            env: &[],
            after: "local-fs.target",
            before: "containerd.service k3s.service",
            service_type: "simple",
            extra: "",
        },
    )
}

/// How a service is run on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceMode {
    /// A systemd unit (systemd is PID 1 and the root is `/`).
    Systemd,
    /// A daemon with a pid file.
    Daemon,
}

/// Systemd when it is PID 1 and the install goes to the real root; a daemon otherwise (a
/// unit under another root would mean nothing to the running systemd).
pub fn choose_mode(root: &Path, host: &dyn Host) -> ServiceMode {
    if root == Path::new("/") && host.systemd_is_init() {
        ServiceMode::Systemd
    } else {
        ServiceMode::Daemon
    }
}

/// A daemon the installer supervises: `program args...` with a pid file and a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    /// Its name, e.g. `edge-registry`.
    pub name: String,
    /// The executable's real path (also `argv[0]`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The pid file, inside the root.
    pub pid_file: String,
    /// The log file (stdout and stderr, appended), inside the root.
    pub log_file: String,
    /// Variables set on top of the installer's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
}

/// What [`Daemon::start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonStart {
    /// The daemon's pid.
    pub pid: u32,
    /// False when it was already running (nothing was started).
    pub started: bool,
    /// Folders, pid file and log file, for the install record.
    pub records: Vec<PathRecord>,
}

impl Daemon {
    /// A daemon named `name` with pid file and log `/var/lib/airlock/<name>.{pid,log}`.
    pub fn new(name: &str, program: impl Into<PathBuf>, args: Vec<String>) -> Daemon {
        Daemon {
            name: name.to_owned(),
            program: program.into(),
            args,
            pid_file: format!("{STATE_DIR}/{name}.pid"),
            log_file: format!("{STATE_DIR}/{name}.log"),
            env: Vec::new(),
        }
    }

    /// The same daemon with `env` set on top of the installer's environment.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Daemon {
        self.env = env;
        self
    }

    /// The registry of installer `name` `version`, run from its persistent copy under `root`.
    pub fn registry(root: &Path, name: &str, version: &str, listen: SocketAddr) -> Daemon {
        let exec = resolve(root, &installer_copy_path(name, version));
        let daemon_name = format!("{name}-registry");
        // The daemon writes its own pid file once bound: an install killed between the
        // spawn and its own pid-file write leaves no daemon that nothing records.
        let pid_file = resolve(root, &format!("{STATE_DIR}/{daemon_name}.pid"));
        let args = ["registry", "serve", "--listen"]
            .into_iter()
            .map(str::to_owned)
            .chain([listen.to_string(), "--pid-file".to_owned()])
            .chain([pid_file.to_string_lossy().into_owned()])
            .collect();
        Daemon::new(&daemon_name, exec, args)
    }

    /// [`Daemon::registry`] that also serves the pull proxy on `proxy` (see
    /// [`intercept_args`]).
    pub fn registry_with_proxy(
        root: &Path,
        name: &str,
        version: &str,
        listen: SocketAddr,
        proxy: Option<SocketAddr>,
    ) -> Daemon {
        let mut d = Daemon::registry(root, name, version, listen);
        d.args.extend(intercept_args(root, name, proxy));
        d
    }

    /// The command line `/proc/<pid>/cmdline` shows for this daemon.
    fn cmdline(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let mut c = self.program.as_os_str().as_bytes().to_vec();
        c.push(0);
        for a in &self.args {
            c.extend_from_slice(a.as_bytes());
            c.push(0);
        }
        c
    }

    /// The pid in the pid file, if there is a readable one.
    pub fn read_pid(&self, root: &Path) -> Result<Option<u32>> {
        let path = resolve(root, &self.pid_file);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().parse().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::fs("read the pid file", path)(e)),
        }
    }

    /// The pid of the running daemon: the pid file names a live process whose command line
    /// is this daemon's (a reused pid is not ours). Without a pid file naming it (an
    /// install killed between the spawn and the pid file), a live process with exactly
    /// this command line is ours.
    pub fn is_running(&self, root: &Path, host: &dyn Host) -> Result<Option<u32>> {
        if let Some(pid) = self.read_pid(root)? {
            if self.is_ours(pid, host) {
                return Ok(Some(pid));
            }
        }
        Ok(host.process_with_cmdline(&self.cmdline()))
    }

    fn is_ours(&self, pid: u32, host: &dyn Host) -> bool {
        host.process_cmdline(pid)
            .is_some_and(|c| super::host::cmdline_is(&c, &self.cmdline()))
    }

    /// Starts the daemon unless it already runs (converges); writes its pid file.
    pub fn start(&self, root: &Path, host: &dyn Host) -> Result<DaemonStart> {
        let mut records = Vec::new();
        for f in [&self.pid_file, &self.log_file] {
            if let Some(parent) = logical_parent(f) {
                records.extend(create_dirs(root, parent)?);
            }
        }
        let log = resolve(root, &self.log_file);
        records.push(PathRecord {
            path: self.log_file.clone(),
            kind: PathKind::File,
            existed_before: fs::symlink_metadata(&log).is_ok(),
        });
        if let Some(pid) = self.is_running(root, host)? {
            tracing::debug!(pid, name = %self.name, "already running");
            if self.read_pid(root)? == Some(pid) {
                records.push(PathRecord {
                    path: self.pid_file.clone(),
                    kind: PathKind::File,
                    existed_before: true,
                });
            } else {
                // Adopted by its command line: give it the pid file it lacks.
                let written =
                    write_atomic(root, &self.pid_file, format!("{pid}\n").as_bytes(), 0o644)?;
                records.extend(written.records);
            }
            return Ok(DaemonStart {
                pid,
                started: false,
                records,
            });
        }
        let spec = DaemonSpec {
            program: &self.program,
            args: &self.args,
            log: &log,
            env: &self.env,
        };
        let pid = host.spawn_daemon(&spec).map_err(|source| Error::Spawn {
            what: format!("{} ({})", self.name, self.program.display()),
            source,
        })?;
        let written = write_atomic(root, &self.pid_file, format!("{pid}\n").as_bytes(), 0o644)?;
        records.extend(written.records);
        Ok(DaemonStart {
            pid,
            started: true,
            records,
        })
    }

    /// Stops the daemon: SIGTERM, up to `timeout` to exit, then SIGKILL. Returns whether a
    /// process was stopped; the pid file is removed either way.
    pub fn stop(&self, root: &Path, host: &dyn Host, timeout: Duration) -> Result<bool> {
        let Some(pid) = self.is_running(root, host)? else {
            self.remove_pid_file(root)?;
            return Ok(false);
        };
        let what = format!("{} ({})", self.name, self.program.display());
        let signal = |s| match host.signal(pid, s) {
            Ok(()) => Ok(()),
            // Gone already.
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Ok(()),
            Err(e) => Err(Error::Stop {
                pid,
                what: what.clone(),
                source: Some(e),
            }),
        };
        signal(Signal::Term)?;
        if !self.wait_gone(pid, host, timeout) {
            tracing::warn!(
                pid,
                "{what} did not exit within {timeout:?} of SIGTERM; sending SIGKILL"
            );
            signal(Signal::Kill)?;
            if !self.wait_gone(pid, host, KILL_WAIT) {
                return Err(Error::Stop {
                    pid,
                    what: format!("{what}, still running after SIGKILL"),
                    source: None,
                });
            }
        }
        self.remove_pid_file(root)?;
        Ok(true)
    }

    fn wait_gone(&self, pid: u32, host: &dyn Host, timeout: Duration) -> bool {
        let rounds = (timeout.as_millis() / POLL.as_millis()).max(1);
        for _ in 0..rounds {
            if !self.is_ours(pid, host) {
                return true;
            }
            host.sleep(POLL);
        }
        !self.is_ours(pid, host)
    }

    fn remove_pid_file(&self, root: &Path) -> Result<()> {
        let path = resolve(root, &self.pid_file);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::fs("remove the pid file", path)(e)),
        }
    }
}

/// What [`start_service`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedService {
    /// How it runs.
    pub mode: ServiceMode,
    /// For the install record.
    pub service: ServiceRecord,
    /// Files and folders written, for the install record.
    pub records: Vec<PathRecord>,
    /// False when it already ran with the same configuration (nothing was (re)started).
    pub started: bool,
    /// The daemon's pid (daemon mode).
    pub pid: Option<u32>,
}

/// A service of ours: its unit for systemd, its daemon otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDef {
    /// What it is, for the record: `registry`, `containerd`, `k3s`.
    pub name: String,
    /// The unit name (`airlock-registry-edge.service`).
    pub unit: String,
    /// The unit text ([`unit_text`]).
    pub unit_text: String,
    /// The same program as a daemon.
    pub daemon: Daemon,
    /// The address it listens on, when it does.
    pub listen: Option<String>,
    /// Executables (inside the root) whose processes belong to the service and outlive it
    /// (containerd's shims): uninstall stops them too.
    pub companions: Vec<String>,
}

impl ServiceDef {
    /// The files starting it may create (unit, pid file, log), inside the root: noted in
    /// the record before the start ([`super::record::Record::note_ahead`]).
    pub fn files(&self) -> [String; 3] {
        [
            format!("{UNIT_DIR}/{}", self.unit),
            self.daemon.pid_file.clone(),
            self.daemon.log_file.clone(),
        ]
    }
}

/// Writes the service's unit and starts it the way `mode` says ([`choose_mode`]; see the
/// module docs): with systemd, `enable` and (re)start when the unit text changed, else
/// `enable --now` (a no-op for a running unit); as a daemon, started unless it runs.
pub fn start_service(
    root: &Path,
    def: &ServiceDef,
    mode: ServiceMode,
    host: &dyn Host,
) -> Result<StartedService> {
    let unit_file = format!("{UNIT_DIR}/{}", def.unit);
    let written = write_atomic(root, &unit_file, def.unit_text.as_bytes(), 0o644)?;
    let mut records = written.records;
    let unit = def.unit.clone();
    let (supervision, started, pid) = match mode {
        ServiceMode::Systemd => {
            if written.changed {
                systemctl(host, &["daemon-reload"])?;
                systemctl(host, &["enable", &unit])?;
                // Starts it, or restarts a running one so it runs the new unit.
                systemctl(host, &["restart", &unit])?;
            } else {
                // A no-op for an enabled, running unit: converges without a restart.
                systemctl(host, &["enable", "--now", &unit])?;
            }
            (Supervision::Systemd { unit }, written.changed, None)
        }
        ServiceMode::Daemon => {
            let start = def.daemon.start(root, host)?;
            records.extend(start.records);
            (
                Supervision::Daemon(def.daemon.clone()),
                start.started,
                Some(start.pid),
            )
        }
    };
    Ok(StartedService {
        mode,
        service: ServiceRecord {
            name: def.name.clone(),
            listen: def.listen.clone(),
            supervision,
            companions: def.companions.clone(),
        },
        records,
        started,
        pid,
    })
}

/// The registry of installer `name` `version` as a service listening on `listen`, run
/// from the persistent copy ([`super::persist::persist_installer`]).
pub fn registry_service(
    root: &Path,
    name: &str,
    version: &str,
    listen: SocketAddr,
) -> Result<ServiceDef> {
    validate_name(name)?;
    let exec = resolve(root, &installer_copy_path(name, version));
    Ok(ServiceDef {
        name: "registry".to_owned(),
        unit: registry_unit_name(name),
        unit_text: registry_unit_text(name, version, &exec, listen),
        daemon: Daemon::registry(root, name, version, listen),
        listen: Some(listen.to_string()),
        companions: Vec::new(),
    })
}

/// `--intercept ADDR --intercept-dir DIR` for the pull proxy of installer `name` on
/// `proxy` (nothing for `None`).
pub fn intercept_args(root: &Path, name: &str, proxy: Option<SocketAddr>) -> Vec<String> {
    match proxy {
        Some(addr) => vec![
            "--intercept".into(),
            addr.to_string(),
            "--intercept-dir".into(),
            resolve(root, &super::runtimes::proxy_dir(name))
                .to_string_lossy()
                .into_owned(),
        ],
        None => Vec::new(),
    }
}

/// [`registry_service`] that also serves the pull proxy on `proxy`: one service, one more
/// listen address.
pub fn registry_service_with_proxy(
    root: &Path,
    name: &str,
    version: &str,
    listen: SocketAddr,
    proxy: Option<SocketAddr>,
) -> Result<ServiceDef> {
    let mut def = registry_service(root, name, version, listen)?;
    let exec = resolve(root, &installer_copy_path(name, version));
    let extra = intercept_args(root, name, proxy);
    def.unit_text = registry_unit_text_with(name, version, &exec, listen, &extra);
    def.daemon = Daemon::registry_with_proxy(root, name, version, listen, proxy);
    Ok(def)
}

/// Writes the registry unit and starts the registry ([`registry_service`],
/// [`start_service`]).
pub fn start_registry(
    root: &Path,
    name: &str,
    version: &str,
    listen: SocketAddr,
    mode: ServiceMode,
    host: &dyn Host,
) -> Result<StartedService> {
    start_service(
        root,
        &registry_service(root, name, version, listen)?,
        mode,
        host,
    )
}

/// True when the service recorded as `service` is up: a live daemon with our command line,
/// or an active systemd unit. Preflight uses it to accept a registry port that our own
/// registry, from an earlier install, already serves.
pub fn service_is_running(root: &Path, service: &ServiceRecord, host: &dyn Host) -> bool {
    match &service.supervision {
        Supervision::Daemon(d) => d.is_running(root, host).ok().flatten().is_some(),
        Supervision::Systemd { unit } => host
            .run("systemctl", &["is-active", "--quiet", unit])
            .is_ok_and(|o| o.success()),
    }
}

pub(crate) fn systemctl(host: &dyn Host, args: &[&str]) -> Result<()> {
    let command = format!("systemctl {}", args.join(" "));
    match host.run("systemctl", args) {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(Error::Command {
            command,
            detail: format!(
                "exit code {}: {}",
                out.code
                    .map_or_else(|| "none (killed)".to_owned(), |c| c.to_string()),
                out.stderr.trim()
            ),
        }),
        Err(e) => Err(Error::Command {
            command,
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::install::host::{FakeHost, RealHost};

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn the_unit_runs_the_persistent_copy_and_needs_no_network() {
        let text = registry_unit_text(
            "edge",
            "1.0",
            Path::new("/var/lib/airlock/edge-1.0.run"),
            addr(),
        );
        assert!(text.contains(
            "\nExecStart=/var/lib/airlock/edge-1.0.run registry serve --listen 127.0.0.1:5000\n"
        ));
        assert!(text.contains("\nRestart=on-failure\n"));
        assert!(text.contains("\nWantedBy=multi-user.target\n"));
        assert!(
            !text.contains("network"),
            "the registry must not wait for the network"
        );
    }

    #[test]
    fn exec_start_words_with_blanks_and_percent_are_quoted() {
        let text = registry_unit_text(
            "edge",
            "1",
            Path::new("/tmp/my root/100%/edge-1.run"),
            addr(),
        );
        assert!(
            text.contains("ExecStart=\"/tmp/my root/100%%/edge-1.run\" registry serve"),
            "{text}"
        );
    }

    #[test]
    fn systemd_analyze_verify_accepts_the_unit() {
        let Some(analyze) = RealHost.find_command("systemd-analyze") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "systemd-analyze is missing under CI=true (apt package systemd)"
            );
            eprintln!("skipped: systemd-analyze not found in PATH (apt package systemd)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // verify checks that ExecStart's binary exists and is executable.
        let exec = root.join("var/lib/airlock/edge-1.0.run");
        fs::create_dir_all(exec.parent().unwrap()).unwrap();
        fs::write(&exec, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&exec, fs::Permissions::from_mode(0o755)).unwrap();
        let host = FakeHost::default();
        start_registry(root, "edge", "1.0", addr(), ServiceMode::Daemon, &host).unwrap();
        let unit = root.join("etc/systemd/system/airlock-registry-edge.service");
        let verify = || {
            std::process::Command::new(&analyze)
                .arg("verify")
                .arg(&unit)
                .env("SYSTEMD_LOG_LEVEL", "notice")
                .output()
                .unwrap()
        };
        let out = verify();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Without a running systemd, verify may warn about other units it loads; only
        // complaints about ours count.
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("airlock-registry-edge"))
            .collect();
        assert!(out.status.success() && ours.is_empty(), "{stderr}");
        // The check can fail: without its program the same unit is refused.
        fs::remove_file(&exec).unwrap();
        assert!(
            !verify().status.success(),
            "verify accepted a unit whose program is missing"
        );
    }

    #[test]
    fn without_systemd_the_registry_runs_as_a_daemon_and_a_rerun_converges() {
        let root = tempfile::tempdir().unwrap();
        let host = FakeHost::default();
        let first = start_registry(
            root.path(),
            "edge",
            "1.0",
            addr(),
            ServiceMode::Daemon,
            &host,
        )
        .unwrap();
        assert_eq!(first.mode, ServiceMode::Daemon);
        assert!(first.started);
        let pid = first.pid.unwrap();
        assert_eq!(
            fs::read_to_string(root.path().join("var/lib/airlock/edge-registry.pid")).unwrap(),
            format!("{pid}\n")
        );
        let exec = root.path().join("var/lib/airlock/edge-1.0.run");
        assert_eq!(
            host.calls(),
            [format!(
                "spawn {} registry serve --listen 127.0.0.1:5000 --pid-file {}",
                exec.display(),
                root.path()
                    .join("var/lib/airlock/edge-registry.pid")
                    .display()
            )]
        );
        assert!(service_is_running(root.path(), &first.service, &host));

        let second = start_registry(
            root.path(),
            "edge",
            "1.0",
            addr(),
            ServiceMode::Daemon,
            &host,
        )
        .unwrap();
        assert!(!second.started);
        assert_eq!(second.pid, Some(pid));
        assert_eq!(host.calls().len(), 1, "a second daemon was spawned");
    }

    #[test]
    fn systemd_is_used_only_as_pid_1_and_for_the_real_root() {
        let host = FakeHost {
            systemd: true,
            ..FakeHost::default()
        };
        assert_eq!(choose_mode(Path::new("/tmp/x"), &host), ServiceMode::Daemon);
        assert_eq!(choose_mode(Path::new("/"), &host), ServiceMode::Systemd);
        assert_eq!(
            choose_mode(Path::new("/"), &FakeHost::default()),
            ServiceMode::Daemon
        );
    }

    #[test]
    fn with_systemd_the_unit_is_enabled_and_restarted_only_when_it_changed() {
        let root = tempfile::tempdir().unwrap();
        let host = FakeHost::default();
        let unit = "airlock-registry-edge.service";
        let first = start_registry(
            root.path(),
            "edge",
            "1.0",
            addr(),
            ServiceMode::Systemd,
            &host,
        )
        .unwrap();
        assert!(first.started);
        assert_eq!(
            first.service.supervision,
            Supervision::Systemd { unit: unit.into() }
        );
        let expected = [
            "run systemctl daemon-reload".to_owned(),
            format!("run systemctl enable {unit}"),
            format!("run systemctl restart {unit}"),
        ];
        assert_eq!(host.calls(), expected);

        let second = start_registry(
            root.path(),
            "edge",
            "1.0",
            addr(),
            ServiceMode::Systemd,
            &host,
        )
        .unwrap();
        assert!(!second.started);
        assert_eq!(
            host.calls()[3..],
            [format!("run systemctl enable --now {unit}")]
        );

        let moved = start_registry(
            root.path(),
            "edge",
            "1.0",
            "127.0.0.1:5001".parse().unwrap(),
            ServiceMode::Systemd,
            &host,
        )
        .unwrap();
        assert!(moved.started);
        assert_eq!(
            host.calls().last().unwrap(),
            &format!("run systemctl restart {unit}")
        );
    }

    #[test]
    fn a_reused_pid_is_not_taken_for_the_daemon() {
        let root = tempfile::tempdir().unwrap();
        let host = FakeHost::default();
        let d = Daemon::new("x", "/usr/bin/x", vec!["serve".into()]);
        fs::create_dir_all(root.path().join("var/lib/airlock")).unwrap();
        fs::write(root.path().join("var/lib/airlock/x.pid"), "77\n").unwrap();
        host.processes
            .lock()
            .unwrap()
            .insert(77, b"/usr/bin/other\0serve\0".to_vec());
        assert_eq!(d.is_running(root.path(), &host).unwrap(), None);
        let started = d.start(root.path(), &host).unwrap();
        assert!(started.started);
        assert_ne!(started.pid, 77);
        // Stopping ours leaves the stranger alone.
        assert!(d.stop(root.path(), &host, Duration::from_secs(1)).unwrap());
        assert!(host.processes.lock().unwrap().contains_key(&77));
        assert!(!host.calls().iter().any(|c| c.starts_with("signal 77")));
    }

    #[test]
    fn a_real_daemon_starts_once_and_stops() {
        let sleep = RealHost.find_command("sleep").expect("sleep in PATH");
        let root = tempfile::tempdir().unwrap();
        let d = Daemon::new("sleeper", &sleep, vec!["30".into()]);
        let host = RealHost;

        let first = d.start(root.path(), &host).unwrap();
        assert!(first.started);
        let pid_file = root.path().join("var/lib/airlock/sleeper.pid");
        assert_eq!(
            fs::read_to_string(&pid_file).unwrap(),
            format!("{}\n", first.pid)
        );
        assert_eq!(d.is_running(root.path(), &host).unwrap(), Some(first.pid));
        assert!(root.path().join("var/lib/airlock/sleeper.log").is_file());

        let second = d.start(root.path(), &host).unwrap();
        assert!(!second.started);
        assert_eq!(second.pid, first.pid);

        assert!(d.stop(root.path(), &host, Duration::from_secs(5)).unwrap());
        assert_eq!(
            host.process_cmdline(first.pid),
            None,
            "the daemon still runs"
        );
        assert!(!pid_file.exists());
        assert!(!d.stop(root.path(), &host, Duration::from_secs(5)).unwrap());
    }
}
