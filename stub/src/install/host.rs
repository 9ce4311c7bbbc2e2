//! The install's one seam to the operating system: [`Host`], with the real implementation
//! [`RealHost`] and, for tests, a recording fake (`FakeHost`), so preflight, service and
//! uninstall logic is tested without root, systemd or real processes.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::libc;
use nix::sys::statvfs::FsFlags;

use crate::sys::{FreeSpace, SpaceProbe, Statvfs};

/// A signal the installer sends to processes it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGTERM`: please stop.
    Term,
    /// `SIGKILL`: stop now.
    Kill,
}

/// A daemon to start: `program args...`, detached, output appended to `log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec<'a> {
    /// The executable (also the process's `argv[0]`).
    pub program: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// The log file (created 0640 if missing, appended to).
    pub log: &'a Path,
    /// Variables set on top of the installer's environment.
    pub env: &'a [(String, String)],
}

/// A command run to completion with its output in a log file: hooks, `ctr image pull`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec<'a> {
    /// The executable.
    pub program: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// Variables set on top of the installer's environment.
    pub env: &'a [(String, String)],
    /// Its working folder.
    pub cwd: &'a Path,
    /// stdout and stderr, interleaved as written (created 0640, truncated).
    pub log: &'a Path,
    /// Killed (SIGKILL) when it runs longer.
    pub timeout: Duration,
}

/// How a [`Host::run_logged`] command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signalled,
    /// It ran past its timeout and was killed.
    TimedOut,
}

/// What a finished helper command said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    /// Its exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Everything install and uninstall ask of the operating system.
pub trait Host: Sync {
    /// True when the process runs as root.
    fn is_root(&self) -> bool;
    /// Free bytes and inodes of the filesystem holding `dir`.
    fn free_space(&self, dir: &Path) -> io::Result<FreeSpace>;
    /// True when the filesystem holding `dir` is mounted `noexec`.
    fn is_noexec(&self, dir: &Path) -> io::Result<bool>;
    /// Binds a TCP listener on `addr` and closes it again: `Ok` when the port is free.
    fn try_bind(&self, addr: SocketAddr) -> io::Result<()>;
    /// The executable `name` found in `PATH`.
    fn find_command(&self, name: &str) -> Option<PathBuf>;
    /// True when systemd is PID 1 (`/proc/1/comm` is `systemd`).
    fn systemd_is_init(&self) -> bool;
    /// The command line (`/proc/PID/cmdline`, NUL-separated) of a live process; `None` when
    /// no such process exists or it has exited (a zombie).
    fn process_cmdline(&self, pid: u32) -> Option<Vec<u8>>;
    /// Sends `signal` to `pid`.
    fn signal(&self, pid: u32, signal: Signal) -> io::Result<()>;
    /// Starts a daemon in a new session (stdin null, stdout and stderr appended to its log,
    /// working folder `/`), not waiting for it; returns its pid.
    fn spawn_daemon(&self, spec: &DaemonSpec<'_>) -> io::Result<u32>;
    /// Runs a helper command (`systemctl ...`) to completion.
    fn run(&self, program: &str, args: &[&str]) -> io::Result<CommandOutput>;
    /// Runs a command to completion (or its timeout) with its output in a log file.
    fn run_logged(&self, spec: &RunSpec<'_>) -> io::Result<RunEnd>;
    /// The pids of live processes whose executable (`/proc/PID/exe`) is `exe` or lies
    /// under it (a folder).
    fn processes_of(&self, exe: &Path) -> Vec<u32>;
    /// The pid of a live process whose command line is exactly `cmdline`.
    fn process_with_cmdline(&self, cmdline: &[u8]) -> Option<u32>;
    /// Waits `d` (the fake returns at once).
    fn sleep(&self, d: Duration);
}

/// The real operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealHost;

impl Host for RealHost {
    fn is_root(&self) -> bool {
        crate::sys::is_root()
    }

    fn free_space(&self, dir: &Path) -> io::Result<FreeSpace> {
        Statvfs.free_space(dir)
    }

    fn is_noexec(&self, dir: &Path) -> io::Result<bool> {
        let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
        Ok(st.flags().contains(FsFlags::ST_NOEXEC))
    }

    fn try_bind(&self, addr: SocketAddr) -> io::Result<()> {
        TcpListener::bind(addr).map(drop)
    }

    fn find_command(&self, name: &str) -> Option<PathBuf> {
        find_in_path(name, std::env::var_os("PATH").as_deref())
    }

    fn systemd_is_init(&self) -> bool {
        fs::read("/proc/1/comm").is_ok_and(|c| c.trim_ascii_end() == b"systemd")
    }

    fn process_cmdline(&self, pid: u32) -> Option<Vec<u8>> {
        let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
        // The state follows the last ')' (the command name may contain anything).
        let close = stat.iter().rposition(|&b| b == b')')?;
        let state = stat.get(close + 2).copied()?;
        if matches!(state, b'Z' | b'X' | b'x') {
            return None;
        }
        fs::read(format!("/proc/{pid}/cmdline")).ok()
    }

    fn signal(&self, pid: u32, signal: Signal) -> io::Result<()> {
        let pid = libc::pid_t::try_from(pid)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a process id"))?;
        let sig = match signal {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        };
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; pid > 0 so
        // it never addresses a process group.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn spawn_daemon(&self, spec: &DaemonSpec<'_>) -> io::Result<u32> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(spec.log)?;
        let mut cmd = Command::new(spec.program);
        cmd.args(spec.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir("/")
            // The daemon serves its own file, never one named for this installer run.
            .env_remove(crate::selfexe::INSTALLER_ENV)
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        // SAFETY: the closure runs in the forked child before exec and calls only setsid(2),
        // which is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id();
        // Reap it when it exits, so a stopped daemon does not linger as our zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(pid)
    }

    fn run(&self, program: &str, args: &[&str]) -> io::Result<CommandOutput> {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        Ok(CommandOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn run_logged(&self, spec: &RunSpec<'_>) -> io::Result<RunEnd> {
        let log = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(spec.log)?;
        let mut child = Command::new(spec.program)
            .args(spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env_remove(crate::selfexe::INSTALLER_ENV)
            .current_dir(spec.cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code().map_or(RunEnd::Signalled, RunEnd::Exited));
            }
            if start.elapsed() >= spec.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(RunEnd::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn processes_of(&self, exe: &Path) -> Vec<u32> {
        live_pids()
            .into_iter()
            .filter(|&pid| {
                fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.starts_with(exe))
                    && self.process_cmdline(pid).is_some()
            })
            .collect()
    }

    fn process_with_cmdline(&self, cmdline: &[u8]) -> Option<u32> {
        live_pids().into_iter().find(|&pid| {
            self.process_cmdline(pid)
                .is_some_and(|c| cmdline_is(&c, cmdline))
        })
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// True when the command line `actual` (`/proc/PID/cmdline`) is the one we started,
/// `expected`: the same, or — for a program that is a `#!` script — the interpreter and at
/// most one interpreter argument in front of it (the kernel rewrites argv that way).
pub fn cmdline_is(actual: &[u8], expected: &[u8]) -> bool {
    if actual == expected {
        return true;
    }
    let Some(prefix) = actual.strip_suffix(expected) else {
        return false;
    };
    let words = prefix.iter().filter(|&&b| b == 0).count();
    prefix.ends_with(&[0]) && (1..=2).contains(&words) && !prefix.starts_with(&[0])
}

/// Every numeric entry of `/proc` (empty without /proc).
fn live_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Looks `name` up in the `:`-separated `path`: the first regular file with an execute bit.
pub fn find_in_path(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let path = path?;
    path.as_bytes()
        .split(|&b| b == b':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(OsStr::from_bytes(d)).join(name))
        .find(|p| is_executable_file(p))
}

fn is_executable_file(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Opens (creating) a file for the lock; kept here so every `O_` flag lives in one place.
pub(crate) fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
pub use fake::FakeHost;

#[cfg(test)]
mod fake {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// A scripted host that records every call that would change something.
    #[derive(Debug)]
    pub struct FakeHost {
        /// Answer of `is_root`.
        pub root: bool,
        /// Answer of `free_space`.
        pub free: FreeSpace,
        /// Folders (and everything under them) that are on a `noexec` mount.
        pub noexec: Vec<PathBuf>,
        /// Addresses already bound by someone.
        pub busy: Vec<SocketAddr>,
        /// Commands found in `PATH`.
        pub commands: Vec<String>,
        /// Answer of `systemd_is_init`.
        pub systemd: bool,
        /// Processes that ignore SIGTERM.
        pub stubborn: Mutex<Vec<u32>>,
        /// Live processes and their command lines.
        pub processes: Mutex<BTreeMap<u32, Vec<u8>>>,
        /// Recorded calls: `spawn ...`, `signal PID Term`, `run systemctl ...`, `sleep`.
        pub calls: Mutex<Vec<String>>,
        /// The last pid handed out by `spawn_daemon`.
        pub next_pid: Mutex<u32>,
        /// How `run_logged` commands end, by program file name (default: exit 0); what
        /// they write to their log is the recorded call line.
        pub run_ends: BTreeMap<String, RunEnd>,
    }

    impl Default for FakeHost {
        fn default() -> Self {
            FakeHost {
                root: true,
                free: FreeSpace {
                    bytes: 1 << 40,
                    inodes: Some(1 << 20),
                },
                noexec: Vec::new(),
                busy: Vec::new(),
                commands: Vec::new(),
                systemd: false,
                stubborn: Mutex::new(Vec::new()),
                processes: Mutex::new(BTreeMap::new()),
                calls: Mutex::new(Vec::new()),
                next_pid: Mutex::new(4000),
                run_ends: BTreeMap::new(),
            }
        }
    }

    impl FakeHost {
        /// The recorded calls so far.
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    impl Host for FakeHost {
        fn is_root(&self) -> bool {
            self.root
        }
        fn free_space(&self, _dir: &Path) -> io::Result<FreeSpace> {
            Ok(self.free)
        }
        fn is_noexec(&self, dir: &Path) -> io::Result<bool> {
            Ok(self.noexec.iter().any(|n| dir.starts_with(n)))
        }
        fn try_bind(&self, addr: SocketAddr) -> io::Result<()> {
            if self.busy.contains(&addr) {
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            } else {
                Ok(())
            }
        }
        fn find_command(&self, name: &str) -> Option<PathBuf> {
            self.commands
                .iter()
                .any(|c| c == name)
                .then(|| Path::new("/usr/bin").join(name))
        }
        fn systemd_is_init(&self) -> bool {
            self.systemd
        }
        fn process_cmdline(&self, pid: u32) -> Option<Vec<u8>> {
            self.processes.lock().unwrap().get(&pid).cloned()
        }
        fn signal(&self, pid: u32, signal: Signal) -> io::Result<()> {
            self.record(format!("signal {pid} {signal:?}"));
            let mut procs = self.processes.lock().unwrap();
            if !procs.contains_key(&pid) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if signal == Signal::Kill || !self.stubborn.lock().unwrap().contains(&pid) {
                procs.remove(&pid);
            }
            Ok(())
        }
        fn spawn_daemon(&self, spec: &DaemonSpec<'_>) -> io::Result<u32> {
            let mut next = self.next_pid.lock().unwrap();
            *next += 1;
            let pid = *next;
            let mut cmdline = spec.program.as_os_str().as_bytes().to_vec();
            cmdline.push(0);
            for a in spec.args {
                cmdline.extend_from_slice(a.as_bytes());
                cmdline.push(0);
            }
            self.processes.lock().unwrap().insert(pid, cmdline);
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(spec.log)?;
            self.record(format!(
                "spawn {} {}",
                spec.program.display(),
                spec.args.join(" ")
            ));
            Ok(pid)
        }
        fn run(&self, program: &str, args: &[&str]) -> io::Result<CommandOutput> {
            self.record(format!("run {program} {}", args.join(" ")));
            Ok(CommandOutput {
                code: Some(0),
                ..Default::default()
            })
        }
        fn run_logged(&self, spec: &RunSpec<'_>) -> io::Result<RunEnd> {
            let call = format!(
                "run_logged {} {}",
                spec.program.display(),
                spec.args.join(" ")
            );
            fs::write(spec.log, format!("{call}\n"))?;
            self.record(call);
            let name = spec
                .program
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            Ok(self
                .run_ends
                .get(name.as_ref())
                .copied()
                .unwrap_or(RunEnd::Exited(0)))
        }
        fn processes_of(&self, _exe: &Path) -> Vec<u32> {
            Vec::new()
        }
        fn process_with_cmdline(&self, cmdline: &[u8]) -> Option<u32> {
            let procs = self.processes.lock().unwrap();
            procs
                .iter()
                .find(|(_, c)| c.as_slice() == cmdline)
                .map(|(p, _)| *p)
        }
        fn sleep(&self, _d: Duration) {
            self.record("sleep".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_daemon_is_recognised_behind_its_interpreter() {
        let ours = b"/r/bin/k3s\0server\0";
        assert!(cmdline_is(ours, ours));
        assert!(cmdline_is(b"/bin/sh\0/r/bin/k3s\0server\0", ours));
        assert!(cmdline_is(b"/bin/sh\0-e\0/r/bin/k3s\0server\0", ours));
        assert!(!cmdline_is(b"/bin/sh\0-e\0-x\0/r/bin/k3s\0server\0", ours));
        assert!(!cmdline_is(b"/x/r/bin/k3s\0server\0", ours));
        assert!(!cmdline_is(b"/r/bin/k3s\0server\0--other\0", ours));
    }

    #[test]
    fn find_in_path_finds_only_executable_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("tool"), b"").unwrap();
        fs::write(b.join("tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(b.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(find_in_path("tool", Some(&path)), Some(b.join("tool")));
        assert_eq!(find_in_path("missing", Some(&path)), None);
        assert_eq!(find_in_path("a/tool", Some(&path)), None);
    }

    #[test]
    fn a_bound_port_is_reported_busy() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        assert!(RealHost.try_bind(addr).is_err());
        drop(held);
        assert!(RealHost.try_bind(addr).is_ok());
    }

    #[test]
    fn the_own_process_has_a_command_line_and_a_dead_pid_has_none() {
        let me = RealHost.process_cmdline(std::process::id()).unwrap();
        assert!(!me.is_empty());
        // PIDs above the kernel maximum (4194304) never exist.
        assert_eq!(RealHost.process_cmdline(4_194_305), None);
    }
}
