//! Undoing an install: what `uninstall` runs once it holds the lock and has loaded the
//! record. It stops the services the record names and removes exactly the paths the
//! record says the install created, and nothing else; paths that existed before are kept.
//!
//! It sits above [`super::record`] (it reads a [`Record`]) and below `run`, which
//! prints what it did.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::fsutil::{resolve, PathKind, PathRecord};
use super::host::{Host, Signal};
use super::lock;
use super::record::Record;
use super::service::{Supervision, STOP_TIMEOUT};
use super::{Error, Result};

/// What [`undo`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undone {
    /// Services stopped.
    pub stopped: Vec<String>,
    /// Files removed.
    pub removed_files: usize,
    /// Folders removed.
    pub removed_dirs: usize,
    /// Paths left in place: they existed before the install, or a folder is not empty.
    pub kept: Vec<String>,
}

/// Undoes an install: stops its services (systemd units disabled and stopped; daemons get
/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]), removes the files it created (newest
/// first), then the record and the install lock file, then the folders it created when
/// they are empty. Paths that existed before the install are kept.
///
/// Every step is tried; when any fails the record is kept (so `uninstall` can be re-run)
/// and the error lists what was left behind. Call it while holding the install lock
/// ([`lock::InstallLock`]); its file is removed here, while held.
pub fn undo(root: &Path, record: &Record, host: &dyn Host) -> Result<Undone> {
    let mut summary = Undone::default();
    let mut failures = Vec::new();

    let mut reload = false;
    for service in record.services.iter().rev() {
        match &service.supervision {
            Supervision::Systemd { unit } => {
                match host.run("systemctl", &["disable", "--now", unit]) {
                    Ok(out) if out.success() => summary.stopped.push(service.name.clone()),
                    Ok(out) => failures.push(format!(
                        "systemctl disable --now {unit} failed: {}",
                        out.stderr.trim()
                    )),
                    Err(e) => failures.push(format!("failed to run systemctl: {e}")),
                }
                reload = true;
            }
            Supervision::Daemon(d) => match d.stop(root, host, STOP_TIMEOUT) {
                Ok(true) => summary.stopped.push(service.name.clone()),
                Ok(false) => {}
                Err(e) => failures.push(error_chain(&e)),
            },
        }
    }
    // Processes that outlive their service (containerd's shims, which keep containers
    // running by design) are ours too: their programs are about to be removed.
    for exe in record.services.iter().flat_map(|s| &s.companions) {
        let real = resolve(root, exe);
        for pid in host.processes_of(&real) {
            match host.signal(pid, Signal::Kill) {
                Ok(()) => summary
                    .stopped
                    .push(format!("{} (pid {pid})", real.display())),
                Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {}
                Err(e) => failures.push(format!(
                    "failed to stop pid {pid} ({}): {e}",
                    real.display()
                )),
            }
        }
    }
    // Nothing we started may still run when its files go away.
    if !failures.is_empty() {
        return Err(Error::Uninstall(failures));
    }

    for p in record
        .paths
        .iter()
        .rev()
        .filter(|p| p.kind == PathKind::File)
    {
        if p.existed_before {
            summary.kept.push(p.path.clone());
            continue;
        }
        let real = resolve(root, &p.path);
        match fs::remove_file(&real) {
            Ok(()) => summary.removed_files += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => failures.push(format!("failed to remove {}: {e}", real.display())),
        }
    }
    if reload {
        if let Err(e) = host.run("systemctl", &["daemon-reload"]) {
            tracing::warn!("failed to run systemctl daemon-reload: {e}");
        }
    }
    if !failures.is_empty() {
        return Err(Error::Uninstall(failures));
    }

    for p in record
        .paths
        .iter()
        .rev()
        .filter(|p| p.kind == PathKind::Tree)
    {
        if p.existed_before {
            summary.kept.push(p.path.clone());
            continue;
        }
        let real = resolve(root, &p.path);
        if let Some(m) = mount_under(&real) {
            failures.push(format!(
                "kept {}: {} is mounted inside it (unmount it, then run uninstall again)",
                real.display(),
                m.display()
            ));
            continue;
        }
        match fs::remove_dir_all(&real) {
            Ok(()) => summary.removed_dirs += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => failures.push(format!("failed to remove {}: {e}", real.display())),
        }
    }
    if !failures.is_empty() {
        return Err(Error::Uninstall(failures));
    }

    for logical in [
        Record::logical_path(&record.name),
        lock::LOCK_FILE.to_owned(),
    ] {
        let real = resolve(root, &logical);
        match fs::remove_file(&real) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => failures.push(format!("failed to remove {}: {e}", real.display())),
        }
    }

    // Deepest first, whatever order they were created in.
    let mut dirs: Vec<&PathRecord> = record
        .paths
        .iter()
        .filter(|p| p.kind == PathKind::Dir)
        .collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.path.matches('/').count()));
    for p in dirs {
        if p.existed_before {
            summary.kept.push(p.path.clone());
            continue;
        }
        let real = resolve(root, &p.path);
        match fs::remove_dir(&real) {
            Ok(()) => summary.removed_dirs += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                tracing::info!(
                    "keeping {}: it holds files we did not create",
                    real.display()
                );
                summary.kept.push(p.path.clone());
            }
            Err(e) => failures.push(format!("failed to remove {}: {e}", real.display())),
        }
    }
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(Error::Uninstall(failures))
    }
}

/// A mount point at or below `dir` (from `/proc/self/mountinfo`), if any.
fn mount_under(dir: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        // Spaces and other specials are octal-escaped (`\040`); ours have none that matter.
        .map(|m| Path::new(m).to_path_buf())
        .find(|m| m.starts_with(dir))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use super::*;
    use crate::install::host::FakeHost;
    use crate::install::mirror::{write_mirror_config, Runtimes};
    use crate::install::persist::persist_installer;
    use crate::install::service::{Daemon, ServiceRecord};

    /// Every path under `root` with its content (files) or `None` (folders).
    fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                if p.is_dir() {
                    out.insert(rel, None);
                    stack.push(p);
                } else {
                    out.insert(rel, Some(fs::read(&p).unwrap()));
                }
            }
        }
        out
    }

    /// An install of every recorded kind of step, saving the record after each.
    fn install(root: &Path, host: &FakeHost) -> Record {
        let _lock = lock::InstallLock::acquire(root).unwrap();
        let mut record = Record::load_or_new(root, "edge", "1.0").unwrap();
        record.note_paths(_lock.created().to_vec());
        record.save(root).unwrap();

        let src = root.join("../installer.run");
        let copy = persist_installer(&src, root, "edge", "1.0").unwrap();
        record.note_paths(copy.records.clone());
        record.installer_copy = Some(copy.logical.clone());
        record.save(root).unwrap();

        let listen: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mirrors = write_mirror_config(
            root,
            listen,
            ["docker.io", "example.hub"],
            Runtimes {
                containerd: true,
                k3s: true,
            },
        )
        .unwrap();
        record.note_paths(mirrors.records);
        record.note_mirror_files(mirrors.files);
        record.save(root).unwrap();

        let daemon = Daemon::registry(root, "edge", "1.0", listen);
        let started = daemon.start(root, host).unwrap();
        record.note_paths(started.records);
        record.note_service(ServiceRecord {
            name: "registry".into(),
            listen: Some(listen.to_string()),
            supervision: Supervision::Daemon(daemon),
            companions: vec![],
        });
        record.save(root).unwrap();
        record
    }

    fn temp_root() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("installer.run"), b"stub+payload").unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        (dir, root)
    }

    #[test]
    fn install_then_uninstall_leaves_only_what_existed_before() {
        let (_dir, root) = temp_root();
        // Pre-existing: /etc with a file, and /var (but not /var/lib).
        fs::create_dir_all(root.join("etc/ssh")).unwrap();
        fs::write(root.join("etc/ssh/sshd_config"), b"Port 22\n").unwrap();
        fs::create_dir(root.join("var")).unwrap();
        let before = snapshot(&root);
        let host = FakeHost::default();

        let record = install(&root, &host);
        assert!(root
            .join("etc/containerd/certs.d/_default/hosts.toml")
            .is_file());
        assert!(root.join("var/lib/airlock/edge-1.0.run").is_file());
        let on_disk = Record::load(&root, "edge").unwrap().unwrap();
        assert_eq!(on_disk, record);

        let summary = undo(&root, &record, &host).unwrap();
        assert_eq!(summary.stopped, ["registry"]);
        assert!(
            host.processes.lock().unwrap().is_empty(),
            "the daemon still runs"
        );
        assert_eq!(snapshot(&root), before);
        assert!(summary.kept.is_empty(), "{summary:?}");
    }

    #[test]
    fn a_pre_existing_file_listed_as_existed_before_is_kept() {
        let (_dir, root) = temp_root();
        let hosts = root.join("etc/containerd/certs.d/docker.io/hosts.toml");
        fs::create_dir_all(hosts.parent().unwrap()).unwrap();
        fs::write(&hosts, b"# the admin's own\n").unwrap();
        let host = FakeHost::default();

        let record = install(&root, &host);
        let entry = record
            .paths
            .iter()
            .find(|p| p.path == "/etc/containerd/certs.d/docker.io/hosts.toml")
            .unwrap();
        assert!(entry.existed_before);

        undo(&root, &record, &host).unwrap();
        assert!(hosts.is_file(), "a file that existed before was removed");
        assert!(!root.join("etc/containerd/certs.d/_default").exists());
        assert!(!root.join("etc/rancher").exists());
        assert!(!root.join("var").exists());
    }

    #[test]
    fn a_re_run_keeps_the_first_runs_notes() {
        let (_dir, root) = temp_root();
        let host = FakeHost::default();
        install(&root, &host);
        let second = install(&root, &host);
        let copy = second
            .paths
            .iter()
            .find(|p| p.path == "/var/lib/airlock/edge-1.0.run")
            .unwrap();
        assert!(
            !copy.existed_before,
            "the second run took our own file for the admin's"
        );
        assert_eq!(
            host.calls()
                .iter()
                .filter(|c| c.starts_with("spawn"))
                .count(),
            1,
            "the re-run started a second registry"
        );
        undo(&root, &second, &host).unwrap();
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn a_daemon_that_ignores_sigterm_is_killed() {
        let (_dir, root) = temp_root();
        let host = FakeHost::default();
        let record = install(&root, &host);
        let pid = *host.processes.lock().unwrap().keys().next().unwrap();
        host.stubborn.lock().unwrap().push(pid);
        undo(&root, &record, &host).unwrap();
        let calls = host.calls();
        assert!(calls.contains(&format!("signal {pid} Term")), "{calls:?}");
        assert!(calls.contains(&format!("signal {pid} Kill")), "{calls:?}");
        assert!(host.processes.lock().unwrap().is_empty());
    }
}
