//! The services an install starts (the registry, and the engine's containerd or k3s), and
//! how they are supervised.
//!
//! - Where systemd is PID 1 and the root is `/`: a unit
//!   `<root>/etc/systemd/system/<unit>.service` ([`unit`]), enabled and started with
//!   `systemctl` (restarted only when the unit text changed).
//! - Otherwise (containers, chroots, `--root` into a folder): a [`Daemon`] in its own
//!   session, with a pid file and a log under `<root>/var/lib/airlock/` ([`daemon`]).
//!
//! The unit file is written in both cases, so a host that boots with systemd later finds it.
//! The registry runs from the persistent installer copy ([`super::persist`]).
//!
//! [`start_service`] returns the [`ServiceRecord`] the install record keeps; this module
//! knows nothing of the record itself.

pub mod daemon;
pub mod unit;

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use daemon::{Daemon, DaemonStart, STOP_TIMEOUT};
pub use unit::{registry_unit_name, registry_unit_text, unit_text, UnitSpec, UNIT_DIR};

use super::fsutil::{resolve, write_atomic, PathRecord};
use super::host::Host;
use super::persist::installer_copy_path;
use super::{validate_name, Error, Result};

/// A service the install started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// What it is: `registry`, `containerd`, `k3s`.
    pub name: String,
    /// The address it listens on, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// How it is supervised.
    pub supervision: Supervision,
    /// Executables (inside the root) whose processes outlive the service and are stopped
    /// with it (containerd's shims).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub companions: Vec<String>,
}

/// How a service runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Supervision {
    /// A systemd unit, enabled and started with `systemctl`.
    Systemd {
        /// The unit name (`airlock-registry-edge.service`).
        unit: String,
    },
    /// A daemon with a pid file.
    Daemon(Daemon),
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
    /// the record before the start (`Record::note_ahead`).
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
            resolve(root, &super::proxy_dir(name))
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
    def.unit_text = unit::registry_unit_text_with(name, version, &exec, listen, &extra);
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
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::install::host::{FakeHost, RealHost};

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn systemd_analyze_verify_accepts_the_unit() {
        let Some(analyze) = RealHost.find_command("systemd-analyze") else {
            airlock_fixtures::skip::prerequisite(
                false,
                "systemd_analyze_verify_accepts_the_unit",
                "systemd-analyze not found in PATH (apt package systemd)",
            );
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
}
