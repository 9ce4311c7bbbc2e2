//! The install record, `<root>/var/lib/airlock/<name>.json`: what an install created (and
//! whether it existed before), which services it started, which mirror files it wrote and
//! where the persistent installer copy lives.
//!
//! The install saves the record after each step ([`Record::save`]), so a run killed half-way
//! leaves a record of everything it did; a re-run loads it ([`Record::load_or_new`]) and
//! adds to it (the first note of a path wins, so a file created by the first run stays
//! "created by us" on the second). [`uninstall`] undoes exactly what the record names and
//! nothing else.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fsutil::{check_logical, create_dirs, resolve, write_atomic};
use super::host::Host;
use super::service::Daemon;
use super::{lock, Error, Result, STATE_DIR};

/// The record's format version.
pub const RECORD_FORMAT: u32 = 1;

/// How long a stopped daemon gets between SIGTERM and SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A file or folder an install touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRecord {
    /// The path as seen inside the root (`/etc/containerd/certs.d/docker.io/hosts.toml`).
    pub path: String,
    /// File or folder.
    pub kind: PathKind,
    /// True when something was at `path` before the install touched it: uninstall keeps it.
    pub existed_before: bool,
}

/// What a [`PathRecord`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// A regular file (or symlink) the install wrote.
    File,
    /// A folder the install created.
    Dir,
    /// A folder the install created whose whole content belongs to it (containerd's root
    /// and state): uninstall removes it with everything in it, unless something is mounted
    /// inside.
    Tree,
}

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

/// Everything an install did, in the order it did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// The installer's name.
    pub name: String,
    /// The installer's version (of the last install run).
    pub version: String,
    /// Files and folders written or created, in order.
    pub paths: Vec<PathRecord>,
    /// Services started, in order.
    pub services: Vec<ServiceRecord>,
    /// Mirror config files written.
    pub mirror_files: Vec<String>,
    /// The persistent installer copy.
    pub installer_copy: Option<String>,
}

impl Record {
    /// An empty record.
    pub fn new(name: &str, version: &str) -> Record {
        Record {
            format: RECORD_FORMAT,
            name: name.to_owned(),
            version: version.to_owned(),
            paths: Vec::new(),
            services: Vec::new(),
            mirror_files: Vec::new(),
            installer_copy: None,
        }
    }

    /// Where the record of installer `name` lives, inside the root.
    pub fn logical_path(name: &str) -> String {
        format!("{STATE_DIR}/{name}.json")
    }

    /// Loads the record of `name` under `root`; `None` when there is none.
    pub fn load(root: &Path, name: &str) -> Result<Option<Record>> {
        let path = resolve(root, &Self::logical_path(name));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::fs("read the install record", path)(e)),
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|source| Error::Record {
            path: path.clone(),
            source,
        })?;
        // Paths come back from disk: never let one escape the root.
        for p in record
            .paths
            .iter()
            .map(|p| &p.path)
            .chain(&record.mirror_files)
            .chain(&record.installer_copy)
        {
            check_logical(p)?;
        }
        for s in &record.services {
            if let Supervision::Daemon(d) = &s.supervision {
                check_logical(&d.pid_file)?;
                check_logical(&d.log_file)?;
            }
        }
        Ok(Some(record))
    }

    /// Loads the record of a previous (possibly half-finished) install, or starts a new one;
    /// the version is updated to `version`.
    pub fn load_or_new(root: &Path, name: &str, version: &str) -> Result<Record> {
        let mut record = Self::load(root, name)?.unwrap_or_else(|| Record::new(name, version));
        record.version = version.to_owned();
        Ok(record)
    }

    /// Writes the record atomically. Folders it needs are created and noted first.
    pub fn save(&mut self, root: &Path) -> Result<()> {
        let created = create_dirs(root, STATE_DIR)?;
        self.note_paths(created);
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Record {
            path: resolve(root, &Self::logical_path(&self.name)),
            source: e,
        })?;
        write_atomic(root, &Self::logical_path(&self.name), &json, 0o644)?;
        Ok(())
    }

    /// Notes paths; a path already noted keeps its first note (and so its `existed_before`),
    /// except that a folder noted again as a [`PathKind::Tree`] becomes one.
    pub fn note_paths(&mut self, records: impl IntoIterator<Item = PathRecord>) {
        for r in records {
            match self.paths.iter_mut().find(|p| p.path == r.path) {
                // A folder first noted as a parent, then as a whole tree of ours: a tree.
                Some(p) if p.kind == PathKind::Dir && r.kind == PathKind::Tree => {
                    p.kind = PathKind::Tree
                }
                Some(_) => {}
                None => self.paths.push(r),
            }
        }
    }

    /// Write-ahead: notes `paths` and their missing parent folders *before* they are
    /// created, and saves the record, so a run killed while creating them leaves a record
    /// that names them (a noted path that was never created is skipped by uninstall).
    pub fn note_ahead(&mut self, root: &Path, paths: &[(&str, PathKind)]) -> Result<()> {
        let mut notes = Vec::new();
        for &(logical, kind) in paths {
            check_logical(logical)?;
            let mut ancestors: Vec<&str> = Vec::new();
            let mut cur = super::fsutil::logical_parent(logical);
            while let Some(dir) = cur.filter(|d| *d != "/" && !d.is_empty()) {
                ancestors.push(dir);
                cur = super::fsutil::logical_parent(dir);
            }
            for dir in ancestors.into_iter().rev() {
                if fs::symlink_metadata(resolve(root, dir)).is_err() {
                    notes.push(PathRecord {
                        path: dir.to_owned(),
                        kind: PathKind::Dir,
                        existed_before: false,
                    });
                }
            }
            notes.push(PathRecord {
                path: logical.to_owned(),
                kind,
                existed_before: fs::symlink_metadata(resolve(root, logical)).is_ok(),
            });
        }
        self.note_paths(notes);
        self.save(root)
    }

    /// Notes a service; one with the same name is replaced (the latest way it runs).
    pub fn note_service(&mut self, service: ServiceRecord) {
        match self.services.iter_mut().find(|s| s.name == service.name) {
            Some(s) => *s = service,
            None => self.services.push(service),
        }
    }

    /// Notes mirror files written (their paths must also be noted with [`Self::note_paths`]).
    pub fn note_mirror_files(&mut self, files: impl IntoIterator<Item = String>) {
        for f in files {
            if !self.mirror_files.contains(&f) {
                self.mirror_files.push(f);
            }
        }
    }
}

/// What [`uninstall`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UninstallSummary {
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
pub fn uninstall(root: &Path, record: &Record, host: &dyn Host) -> Result<UninstallSummary> {
    let mut summary = UninstallSummary::default();
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
            match host.signal(pid, super::host::Signal::Kill) {
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
fn mount_under(dir: &Path) -> Option<std::path::PathBuf> {
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
    use crate::install::service::Daemon;

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

        let summary = uninstall(&root, &record, &host).unwrap();
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

        uninstall(&root, &record, &host).unwrap();
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
        uninstall(&root, &second, &host).unwrap();
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn a_record_with_a_path_escaping_the_root_is_rejected() {
        let (_dir, root) = temp_root();
        let mut record = Record::new("edge", "1");
        record.save(&root).unwrap();
        record.paths.push(PathRecord {
            path: "/../../etc/passwd".into(),
            kind: PathKind::File,
            existed_before: false,
        });
        let json = serde_json::to_vec(&record).unwrap();
        fs::write(root.join("var/lib/airlock/edge.json"), json).unwrap();
        let err = Record::load(&root, "edge").unwrap_err();
        assert!(matches!(err, Error::InvalidPath(_)), "{err}");
    }

    #[test]
    fn a_daemon_that_ignores_sigterm_is_killed() {
        let (_dir, root) = temp_root();
        let host = FakeHost::default();
        let record = install(&root, &host);
        let pid = *host.processes.lock().unwrap().keys().next().unwrap();
        host.stubborn.lock().unwrap().push(pid);
        uninstall(&root, &record, &host).unwrap();
        let calls = host.calls();
        assert!(calls.contains(&format!("signal {pid} Term")), "{calls:?}");
        assert!(calls.contains(&format!("signal {pid} Kill")), "{calls:?}");
        assert!(host.processes.lock().unwrap().is_empty());
    }
}
