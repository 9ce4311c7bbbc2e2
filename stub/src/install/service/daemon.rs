//! A daemon the installer supervises itself where systemd is not used: started in its own
//! session with a pid file and a log under `<root>/var/lib/airlock/`, stopped with SIGTERM
//! then SIGKILL. Its liveness is the pid *and* the command line in `/proc/<pid>/cmdline`,
//! so a reused pid is not mistaken for it.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::install::fsutil::{create_dirs, logical_parent, resolve, write_atomic};
use crate::install::fsutil::{PathKind, PathRecord};
use crate::install::host::{cmdline_is, DaemonSpec, Host, Signal};
use crate::install::persist::installer_copy_path;
use crate::install::{Error, Result, STATE_DIR};

/// How long a stopped daemon gets between SIGTERM and SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a stopping process is polled.
const POLL: Duration = Duration::from_millis(100);
/// How long a process gets to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

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
    /// [`super::intercept_args`]).
    pub fn registry_with_proxy(
        root: &Path,
        name: &str,
        version: &str,
        listen: SocketAddr,
        proxy: Option<SocketAddr>,
    ) -> Daemon {
        let mut d = Daemon::registry(root, name, version, listen);
        d.args.extend(super::intercept_args(root, name, proxy));
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
            .is_some_and(|c| cmdline_is(&c, &self.cmdline()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::host::{FakeHost, RealHost};

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
