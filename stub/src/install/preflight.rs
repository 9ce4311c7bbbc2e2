//! Checks before anything changes. Every check runs and every problem is reported (not only
//! the first), each with a message that says what is wrong and what to do.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use airlock_payload::human_bytes;

use super::fsutil::resolve;
use super::host::Host;
use super::{Error, Result, STATE_DIR};

/// Space reserved per payload entry on top of file sizes (block rounding, folder blocks);
/// the same margin `extract` checks with.
pub const MARGIN_PER_ENTRY: u64 = 4096;

/// The bytes and inodes an install needs: the payload's files (`total_size`, `entries` from
/// the meta record and index) plus the persistent installer copy (`installer_len`).
pub fn space_needed(total_size: u64, entries: u64, installer_len: u64) -> (u64, u64) {
    let bytes = total_size
        .saturating_add(MARGIN_PER_ENTRY.saturating_mul(entries))
        .saturating_add(installer_len);
    // Entries, the installer copy, and a handful of config, pid, log and record files.
    (bytes, entries + 16)
}

/// What preflight looks at.
#[derive(Debug, Clone)]
pub struct PreflightInput<'a> {
    /// The install root (`/` or `--root DIR`).
    pub root: &'a Path,
    /// True when `--root` was given: root privileges are then not required.
    pub explicit_root: bool,
    /// Bytes needed at the root ([`space_needed`]).
    pub need_bytes: u64,
    /// Inodes needed at the root ([`space_needed`]).
    pub need_inodes: u64,
    /// The registry address.
    pub listen: SocketAddr,
    /// True when our own registry, from an earlier install, already serves `listen`
    /// (`service::service_is_running` on the record's registry service): a busy
    /// port is then fine.
    pub own_registry_running: bool,
    /// False with a site registry (`install --registry`): no registry of ours listens, so
    /// its port is not checked.
    pub needs_port: bool,
    /// Commands the engine needs (`containerd`, `runc`, `k3s`).
    pub commands: &'a [&'a str],
    /// Paths of the payload's files (`usr/local/bin/containerd`): a command shipped in the
    /// payload needs not be in `PATH`.
    pub payload_files: &'a [&'a str],
    /// Folders (inside the root) where binaries will run; [`STATE_DIR`] (the installer copy)
    /// is always checked.
    pub exec_dirs: &'a [&'a str],
}

/// One thing preflight found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not root and no `--root`.
    NotRoot,
    /// Too few free bytes.
    NoSpace {
        /// The folder measured.
        dir: PathBuf,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        available: u64,
    },
    /// Too few free inodes.
    NoInodes {
        /// The folder measured.
        dir: PathBuf,
        /// Inodes needed.
        need: u64,
        /// Inodes available.
        available: u64,
    },
    /// The registry port is taken by someone else.
    PortBusy {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        cause: String,
    },
    /// A command the engine needs is neither in the payload nor in `PATH`.
    MissingCommand(String),
    /// A folder where binaries must run is on a `noexec` mount.
    NoExec {
        /// The folder (inside the root).
        dir: String,
        /// The existing folder whose mount was checked.
        checked: PathBuf,
    },
    /// The engine cannot start here (say why and what to do).
    Engine(String),
    /// A check itself failed.
    CheckFailed {
        /// The check.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        cause: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotRoot => f.write_str(
                "not running as root: run it with sudo, or pass --root DIR to install into a folder",
            ),
            Problem::NoSpace { dir, need, available } => write!(
                f,
                "not enough free space in {}: need {} ({need} bytes), {} ({available} bytes) available",
                dir.display(),
                human_bytes(*need),
                human_bytes(*available)
            ),
            Problem::NoInodes { dir, need, available } => write!(
                f,
                "not enough free inodes in {}: need {need}, {available} available",
                dir.display()
            ),
            Problem::PortBusy { addr, cause } => write!(
                f,
                "the registry address {addr} is in use ({cause}): stop what listens there, or pick another with --listen ADDR"
            ),
            Problem::MissingCommand(name) => write!(
                f,
                "required command {name:?} is neither in the installer nor in PATH"
            ),
            Problem::NoExec { dir, checked } => write!(
                f,
                "{dir} is on a filesystem mounted noexec ({} checked): programs installed there cannot run; remount it with exec or choose another --root",
                checked.display()
            ),
            Problem::Engine(what) => f.write_str(what),
            Problem::CheckFailed { what, path, cause } => {
                write!(f, "failed to {what} {}: {cause}", path.display())
            }
        }
    }
}

/// Everything preflight found; empty when the install may go ahead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// The problems, in check order.
    pub problems: Vec<Problem>,
}

impl Preflight {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// `Ok` when nothing is wrong, else [`Error::Preflight`] listing every problem.
    pub fn into_result(self) -> Result<()> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(Error::Preflight(
                self.problems.iter().map(ToString::to_string).collect(),
            ))
        }
    }
}

/// The nearest folder at or above `path` that exists (statvfs needs one).
fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("/"))
        .to_owned()
}

/// Runs every check; changes nothing.
pub fn preflight(input: &PreflightInput<'_>, host: &dyn Host) -> Preflight {
    let mut problems = Vec::new();

    if !input.explicit_root && !host.is_root() {
        problems.push(Problem::NotRoot);
    }

    let dir = nearest_existing(input.root);
    match host.free_space(&dir) {
        Ok(free) => {
            if input.need_bytes > free.bytes {
                problems.push(Problem::NoSpace {
                    dir: dir.clone(),
                    need: input.need_bytes,
                    available: free.bytes,
                });
            }
            if let Some(inodes) = free.inodes.filter(|n| input.need_inodes > *n) {
                problems.push(Problem::NoInodes {
                    dir: dir.clone(),
                    need: input.need_inodes,
                    available: inodes,
                });
            }
        }
        Err(e) => problems.push(Problem::CheckFailed {
            what: "query free space of",
            path: dir.clone(),
            cause: e.to_string(),
        }),
    }

    if input.needs_port && !input.own_registry_running {
        if let Err(e) = host.try_bind(input.listen) {
            problems.push(Problem::PortBusy {
                addr: input.listen,
                cause: e.to_string(),
            });
        }
    }

    for name in input.commands {
        let shipped = input
            .payload_files
            .iter()
            .any(|p| p.rsplit('/').next() == Some(*name));
        if !shipped && host.find_command(name).is_none() {
            problems.push(Problem::MissingCommand((*name).to_owned()));
        }
    }

    let exec_dirs: BTreeSet<&str> = input.exec_dirs.iter().copied().chain([STATE_DIR]).collect();
    let mut checked = BTreeSet::new();
    for logical in exec_dirs {
        let existing = nearest_existing(&resolve(input.root, logical));
        if !checked.insert(existing.clone()) {
            continue;
        }
        match host.is_noexec(&existing) {
            Ok(true) => problems.push(Problem::NoExec {
                dir: logical.to_owned(),
                checked: existing,
            }),
            Ok(false) => {}
            Err(e) => problems.push(Problem::CheckFailed {
                what: "query the mount flags of",
                path: existing,
                cause: e.to_string(),
            }),
        }
    }

    Preflight { problems }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::install::host::{FakeHost, RealHost};
    use crate::sys::FreeSpace;

    fn input<'a>(root: &'a Path) -> PreflightInput<'a> {
        PreflightInput {
            root,
            explicit_root: false,
            need_bytes: 1000,
            need_inodes: 10,
            listen: "127.0.0.1:5000".parse().unwrap(),
            own_registry_running: false,
            needs_port: true,
            commands: &["containerd", "runc", "iptables"],
            payload_files: &["usr/local/bin/containerd", "usr/local/bin/runc"],
            exec_dirs: &["/usr/local/bin"],
        }
    }

    fn healthy() -> FakeHost {
        FakeHost {
            commands: vec!["iptables".into()],
            ..FakeHost::default()
        }
    }

    #[test]
    fn a_healthy_host_passes() {
        let root = tempfile::tempdir().unwrap();
        let report = preflight(&input(root.path()), &healthy());
        assert_eq!(report.problems, []);
        assert!(report.into_result().is_ok());
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let root = tempfile::tempdir().unwrap();
        let input = input(root.path());
        let host = FakeHost {
            root: false,
            free: FreeSpace {
                bytes: 999,
                inodes: Some(9),
            },
            busy: vec![input.listen],
            noexec: vec![root.path().to_owned()],
            ..FakeHost::default()
        };
        let report = preflight(&input, &host);
        let messages: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(report.problems.len(), 6, "{messages:#?}");
        assert_eq!(report.problems[0], Problem::NotRoot);
        assert!(
            messages[1].contains("need 1.0 kB (1000 bytes), 999 B (999 bytes) available"),
            "{}",
            messages[1]
        );
        assert!(
            messages[2].contains("need 10, 9 available"),
            "{}",
            messages[2]
        );
        assert!(
            messages[3].starts_with("the registry address 127.0.0.1:5000 is in use"),
            "{}",
            messages[3]
        );
        assert_eq!(
            report.problems[4],
            Problem::MissingCommand("iptables".into())
        );
        // Both exec folders live on the root's (noexec) filesystem: one report.
        assert!(messages[5].contains("mounted noexec"), "{}", messages[5]);
        let err = report.into_result().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "preflight found 6 problem(s), nothing was changed:\n  - not running as root"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_explicit_root_needs_no_root_privileges() {
        let root = tempfile::tempdir().unwrap();
        let host = FakeHost {
            root: false,
            ..healthy()
        };
        let mut input = input(root.path());
        assert_eq!(preflight(&input, &host).problems, [Problem::NotRoot]);
        input.explicit_root = true;
        assert!(preflight(&input, &host).is_ok());
    }

    #[test]
    fn a_port_served_by_our_own_registry_is_fine() {
        let root = tempfile::tempdir().unwrap();
        let mut input = input(root.path());
        let host = FakeHost {
            busy: vec![input.listen],
            ..healthy()
        };
        assert!(!preflight(&input, &host).is_ok());
        input.own_registry_running = true;
        assert!(preflight(&input, &host).is_ok());
    }

    #[test]
    fn a_real_busy_port_is_caught() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let root = tempfile::tempdir().unwrap();
        let mut input = input(root.path());
        input.explicit_root = true;
        input.commands = &[];
        input.listen = held.local_addr().unwrap();
        let report = preflight(&input, &RealHost);
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::PortBusy { .. })),
            "{report:?}"
        );
    }

    #[test]
    fn a_noexec_target_is_named_with_the_folder_that_needs_exec() {
        let root = tempfile::tempdir().unwrap();
        let host = FakeHost {
            noexec: vec![root.path().join("opt")],
            ..healthy()
        };
        std::fs::create_dir(root.path().join("opt")).unwrap();
        let mut input = input(root.path());
        input.exec_dirs = &["/opt/edge/bin", "/usr/local/bin"];
        let report = preflight(&input, &host);
        assert_eq!(
            report.problems,
            [Problem::NoExec {
                dir: "/opt/edge/bin".into(),
                checked: root.path().join("opt")
            }]
        );
    }

    #[test]
    fn space_needed_counts_the_installer_copy() {
        assert_eq!(space_needed(1_000_000, 10, 500_000), (1_540_960, 26));
    }
}
