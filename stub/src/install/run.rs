//! `install` and `uninstall` for the `none` engine: the building blocks of this module run
//! in the order the module docs list, each step printing one line, the record saved after
//! every step that changed something.
//!
//! An install: lock → record → preflight (plan and confirmation) → files → persistent copy
//! → registry service → readiness (`GET /v2/` answers 200) → mirror config → record →
//! summary. A re-run converges: files are laid out again (equal content), the copy is left
//! alone when current, a running registry is not restarted, mirror files are rewritten only
//! when they differ. Engines (`containerd`, `k3s`) and hooks are not run here yet.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_payload::{human_bytes, Engine, EntryKind, Hook, HookStage, Installer};
use indicatif::ProgressBar;

use super::host::Host;
use super::lock::InstallLock;
use super::mirror::{mirror_files, write_mirror_config, Runtimes, CERTS_DIR, K3S_REGISTRIES};
use super::persist::{installer_copy_path, persist_installer};
use super::preflight::{preflight, space_needed, PreflightInput};
use super::record::{self, PathKind, PathRecord, Record, ServiceRecord, Supervision};
use super::runtimes::Runtime;
use super::service::{choose_mode, registry_unit_name, service_is_running, Daemon, ServiceMode};
use super::{resolve, STATE_DIR};
use crate::extract::{extract, ExtractOptions};
use crate::sys::Statvfs;
use crate::{Error, Result};

/// How long the registry gets to answer `GET /v2/` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the user to confirm (prints the question on the given output, reads the answer).
pub type Confirm<'a> = &'a dyn Fn(&mut dyn Write) -> Result<bool>;

/// What `install` is asked to do.
pub struct InstallOptions<'a> {
    /// `--root DIR`; `None` means `/`.
    pub root: Option<&'a Path>,
    /// The registry address.
    pub listen: SocketAddr,
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// Print no step lines and no summary.
    pub quiet: bool,
    /// The installer file (the source of the persistent copy).
    pub installer_path: &'a Path,
    /// Asked once before anything changes; `None` to go ahead (`--yes`, no terminal).
    pub confirm: Option<Confirm<'a>>,
    /// How long the registry gets to answer ([`READY_TIMEOUT`]).
    pub ready_timeout: Duration,
    /// Progress of the file step.
    pub bar: &'a ProgressBar,
    /// Called with each frame's stored bytes once decoded (see `ExtractOptions::release`).
    pub release: &'a (dyn Fn(&[u8]) + Sync),
    /// `--mirror-for`: the runtimes to configure; `None` detects them
    /// ([`super::runtimes::detect`]).
    pub mirror_for: Option<Vec<super::runtimes::Runtime>>,
    /// `--proxy-listen`: the pull proxy's address (Docker); `None` is the registry's port + 1.
    pub proxy_listen: Option<SocketAddr>,
    /// `--restart-runtimes`: restart Docker so it reads the proxy drop-in.
    pub restart_runtimes: bool,
}

/// Step lines go to `out` unless quiet.
struct Say<'o> {
    out: &'o mut dyn Write,
    quiet: bool,
}

impl Say<'_> {
    fn line(&mut self, text: impl AsRef<str>) -> Result<()> {
        if self.quiet {
            return Ok(());
        }
        writeln!(self.out, "{}", text.as_ref())
            .and_then(|()| self.out.flush())
            .map_err(Error::Output)
    }
}

/// The install root: `/`, or `--root DIR` made absolute (created when missing unless
/// `create` is false). The second value is true for a root other than `/`.
fn install_root(root: Option<&Path>, create: bool) -> Result<(PathBuf, bool)> {
    let Some(given) = root else {
        return Ok((PathBuf::from("/"), false));
    };
    let abs = std::path::absolute(given).map_err(Error::fs("resolve the root folder", given))?;
    if create && fs::symlink_metadata(&abs).is_err() {
        fs::create_dir(&abs).map_err(Error::fs("create the root folder", &abs))?;
    }
    let real = match fs::canonicalize(&abs) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => abs,
        Err(e) => return Err(Error::fs("resolve the root folder", &abs)(e)),
    };
    let explicit = real != Path::new("/");
    Ok((real, explicit))
}

/// `path` for messages: the real path under `root`.
fn shown(root: &Path, logical: &str) -> String {
    resolve(root, logical).display().to_string()
}

/// Name prefix of the temp files [`super::fsutil::write_atomic`] and the persistent copy
/// write next to their destination before the rename.
const TEMP_PREFIX: &str = ".airlock-tmp-";

/// Removes the `.airlock-tmp-*` files an install killed mid-write (SIGKILL, power cut) left
/// next to the files it writes: in the state folder, the unit folder, the mirror config
/// folders and the parents of every path the record names. Only called with the install
/// lock held, so no other run of ours is writing one of them.
fn remove_stale_temps(root: &Path, record: Option<&Record>) {
    let mut dirs: Vec<String> = vec![
        STATE_DIR.to_owned(),
        super::service::UNIT_DIR.to_owned(),
        super::fsutil::logical_parent(K3S_REGISTRIES)
            .unwrap_or("/")
            .to_owned(),
    ];
    if let Ok(rd) = fs::read_dir(resolve(root, CERTS_DIR)) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(format!("{CERTS_DIR}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    if let Some(r) = record {
        for p in &r.paths {
            if let Some(parent) = super::fsutil::logical_parent(&p.path) {
                dirs.push(parent.to_owned());
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        let Ok(rd) = fs::read_dir(resolve(root, &dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let stale = e.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
                && e.file_type().is_ok_and(|t| t.is_file());
            if stale {
                match fs::remove_file(e.path()) {
                    Ok(()) => tracing::debug!("removed stale temp file {}", e.path().display()),
                    Err(err) => {
                        tracing::warn!(
                            "failed to remove stale temp file {}: {err}",
                            e.path().display()
                        )
                    }
                }
            }
        }
    }
}

/// True for a record that names nothing but the state folders holding it (written by the
/// lock step of a run that stopped before changing anything else).
fn only_state(record: &Record) -> bool {
    record.services.is_empty()
        && record.installer_copy.is_none()
        && record
            .paths
            .iter()
            .all(|p| p.kind == PathKind::Dir && STATE_DIR.starts_with(p.path.as_str()))
}

/// Undoes the lock step of an install that changed nothing else (a fresh record): the
/// record, the lock file and the folders created for them.
fn release_fresh_lock(root: &Path, lock: InstallLock, record: &Record) {
    let _ = fs::remove_file(resolve(root, &Record::logical_path(&record.name)));
    let _ = fs::remove_file(lock.path());
    drop(lock);
    let mut dirs: Vec<&PathRecord> = record.paths.iter().filter(|p| !p.existed_before).collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.path.len()));
    for r in dirs {
        let _ = fs::remove_dir(resolve(root, &r.path));
    }
}

/// The address to poll for an address the registry listens on (unspecified → loopback).
fn poll_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// One `GET /v2/` over plain HTTP/1.1: the status code, or why there is none.
pub fn probe_v2(addr: SocketAddr) -> std::result::Result<u16, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(2))))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed without a response".into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", line.lines().next()))
}

/// Polls `GET http://ADDR/v2/` until it answers 200. `alive` says whether the service still
/// runs (a dead daemon fails at once); `log` names where its output goes.
fn wait_ready(
    listen: SocketAddr,
    timeout: Duration,
    alive: &dyn Fn() -> bool,
    log: &str,
) -> Result<Duration> {
    let addr = poll_addr(listen);
    let start = Instant::now();
    let mut detail;
    loop {
        detail = match probe_v2(addr) {
            Ok(200) => return Ok(start.elapsed()),
            Ok(code) => format!("it answered {code}"),
            Err(e) => e,
        };
        if !alive() {
            detail = format!("the registry process exited; last attempt: {detail}");
            break;
        }
        if start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::RegistryNotReady {
        addr,
        waited: timeout,
        detail,
        log: log.to_owned(),
    })
}

/// Runs `install` (see the module docs) with the installer `installer` whose file is
/// `opts.installer_path`, writing one line per step and a summary to `out`.
pub fn install(
    installer: &Installer<'_>,
    opts: &InstallOptions<'_>,
    host: &dyn Host,
    out: &mut dyn Write,
) -> Result<()> {
    let mut say = Say {
        out,
        quiet: opts.quiet,
    };
    if opts.listen.port() == 0 {
        return Err(Error::ListenPortZero(opts.listen));
    }
    let meta = installer.meta();
    let (name, version) = (meta.name.as_str(), meta.version.as_str());
    super::validate_name(name)?;
    super::validate_version(version)?;
    // Nothing is laid out, copied or served from a damaged file (its stub included, since
    // the persistent copy runs it): check every byte first, before the root is created.
    installer.verify_stub()?;
    let payload = installer.load_index()?;
    let report = payload.verify(false, opts.release);
    if !report.damaged.is_empty() {
        return Err(Error::Damaged {
            items: report.damaged.iter().map(|e| e.to_string()).collect(),
        });
    }
    let (root, explicit_root) = install_root(opts.root, !opts.dry_run)?;
    let root = root.as_path();
    let index = payload.index();
    say.line(format!(
        "verify: ok ({} frames, {} checked)",
        report.frames,
        human_bytes(report.bytes)
    ))?;

    // 1. Lock (a dry run changes nothing, so it takes none).
    let lock = if opts.dry_run {
        None
    } else {
        let lock = InstallLock::acquire(root)?;
        say.line(format!("lock: holding {}", lock.path().display()))?;
        Some(lock)
    };

    // 2. Record.
    let previous = Record::load(root, name)?;
    let fresh = previous.as_ref().is_none_or(only_state);
    if lock.is_some() {
        remove_stale_temps(root, previous.as_ref());
    }
    let mut record = match previous {
        Some(mut r) => {
            r.version = version.to_owned();
            say.line(format!(
                "record: continuing {} ({} paths, {} services noted)",
                shown(root, &Record::logical_path(name)),
                r.paths.len(),
                r.services.len()
            ))?;
            r
        }
        None => {
            say.line(format!(
                "record: new install of {name} {version}, kept in {}",
                shown(root, &Record::logical_path(name))
            ))?;
            Record::new(name, version)
        }
    };
    if let Some(lock) = &lock {
        // Saved at once: a run killed from here on leaves a record naming the folders the
        // lock step created, so they are not taken for folders that existed before.
        record.note_paths(lock.created().to_vec());
        record.save(root)?;
    }
    let engine = &index.install().engine;
    let hooks = &index.install().hooks;

    // 3. Preflight.
    let installer_len = installer.bytes().len() as u64;
    let (need_bytes, need_inodes) =
        space_needed(meta.total_size, index.entries().len() as u64, installer_len);
    let own_registry_running = record.services.iter().any(|s| {
        s.name == "registry"
            && s.listen.as_deref() == Some(opts.listen.to_string().as_str())
            && service_is_running(root, s, host)
    }) || Daemon::registry(root, name, version, opts.listen)
        // A daemon of ours recorded only in its pid file (an install killed before the
        // record named the service) holds the port too; this run adopts it.
        .is_running(root, host)
        .ok()
        .flatten()
        .is_some();
    let payload_files: Vec<&str> = index
        .entries()
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .map(|e| e.path.as_str())
        .collect();
    let engine_exec_dirs = super::engine::exec_dirs(engine);
    let exec_dirs: Vec<&str> = engine_exec_dirs.iter().map(String::as_str).collect();
    let mut report = preflight(
        &PreflightInput {
            root,
            explicit_root,
            need_bytes,
            need_inodes,
            listen: opts.listen,
            own_registry_running,
            commands: &[],
            payload_files: &payload_files,
            exec_dirs: &exec_dirs,
        },
        host,
    );
    report.problems.extend(
        super::engine::problems(engine, root, &record, host)
            .into_iter()
            .map(super::preflight::Problem::Engine),
    );
    let chosen: std::collections::BTreeSet<Runtime> = match &opts.mirror_for {
        Some(list) => list.iter().copied().collect(),
        None => super::runtimes::detect(root, std::env::var("PATH").ok().as_deref()),
    };
    let docker = chosen.contains(&Runtime::Docker);
    let proxy_addr = opts
        .proxy_listen
        .unwrap_or_else(|| SocketAddr::new(opts.listen.ip(), opts.listen.port().wrapping_add(1)));
    let proxy = docker.then_some(proxy_addr);
    if docker && !own_registry_running {
        if let Err(e) = host.try_bind(proxy_addr) {
            report.problems.push(super::preflight::Problem::PortBusy {
                addr: proxy_addr,
                cause: e.to_string(),
            });
        }
    }
    // A daemon.json that is not JSON stops the install before anything changes.
    let daemon_json = if docker {
        match super::runtimes::merge_docker(root, opts.listen) {
            Ok(t) => t,
            Err(e) => {
                if let (Some(lock), true) = (lock, fresh) {
                    release_fresh_lock(root, lock, &record);
                }
                return Err(super::Error::from(e).into());
            }
        }
    } else {
        None
    };
    let mode = choose_mode(root, host);
    let hosts: Vec<&str> = index.images().iter().map(|i| i.registry.as_str()).collect();
    let existing = index
        .entries()
        .iter()
        .filter(|e| fs::symlink_metadata(root.join(e.path.as_str())).is_ok())
        .count();
    if report.is_ok() {
        say.line(format!(
            "preflight: ok (need {} and {need_inodes} inodes under {}; registry address {} {})",
            human_bytes(need_bytes),
            root.display(),
            opts.listen,
            if own_registry_running {
                "served by our registry already"
            } else {
                "free"
            }
        ))?;
    } else {
        say.line(format!(
            "preflight: {} problem(s):{}",
            report.problems.len(),
            report
                .problems
                .iter()
                .map(|p| format!("\n  - {p}"))
                .collect::<String>()
        ))?;
    }
    if opts.dry_run || opts.confirm.is_some() {
        write_plan(
            &mut say,
            root,
            name,
            version,
            index.entries().len(),
            payload_files.len(),
            meta.total_size,
            existing,
            mode,
            opts.listen,
            &hosts,
            &plan_extra(root, name, engine, hooks)
                .into_iter()
                .chain(super::runtimes::plan_lines(root, name, &chosen, proxy_addr))
                .collect::<Vec<_>>(),
        )?;
    }
    if !report.is_ok() {
        if let (Some(lock), true) = (lock, fresh) {
            release_fresh_lock(root, lock, &record);
        }
        return Err(report.into_result().unwrap_err().into());
    }
    if opts.dry_run {
        say.line("dry run: nothing was changed")?;
        return Ok(());
    }
    if let Some(confirm) = opts.confirm {
        if !confirm(say.out)? {
            if let (Some(lock), true) = (lock, fresh) {
                release_fresh_lock(root, lock, &record);
            }
            return Err(Error::Cancelled);
        }
    }

    // Hooks see where everything is (the copy and the registry exist from post-install on).
    let mut hook_env: Vec<(String, String)> = vec![
        ("AIRLOCK_NAME".into(), name.into()),
        ("AIRLOCK_VERSION".into(), version.into()),
        ("AIRLOCK_ROOT".into(), root.to_string_lossy().into_owned()),
        (
            "AIRLOCK_REGISTRY".into(),
            poll_addr(opts.listen).to_string(),
        ),
        (
            "AIRLOCK_INSTALLER".into(),
            opts.installer_path.to_string_lossy().into_owned(),
        ),
        (
            "AIRLOCK_INSTALLER_COPY".into(),
            shown(root, &installer_copy_path(name, version)),
        ),
        ("AIRLOCK_ENGINE".into(), engine.kind().into()),
    ];
    hook_env.extend(super::engine::hook_env(engine, root));
    let run_hook = |stage: HookStage, record: &mut Record, say: &mut Say<'_>| -> Result<()> {
        let Some(hook) = hooks.iter().find(|h| h.stage == stage) else {
            return Ok(());
        };
        let output = super::hooks::run_hook(root, name, hook, &payload, &hook_env, record, host)?;
        say.line(format!(
            "hook {stage}: ok ({}, log {})\n{output}",
            hook.source,
            shown(root, &super::hooks::log_path(name, hook))
        ))
    };

    // 3b. pre-install hook.
    run_hook(HookStage::PreInstall, &mut record, &mut say)?;

    // 4. Files: note what exists before anything is laid out, then extract.
    let notes: Vec<PathRecord> = index
        .entries()
        .iter()
        .map(|e| {
            let logical = format!("/{}", e.path.as_str());
            PathRecord {
                existed_before: fs::symlink_metadata(resolve(root, &logical)).is_ok(),
                kind: if matches!(e.kind, EntryKind::Dir) {
                    PathKind::Dir
                } else {
                    PathKind::File
                },
                path: logical,
            }
        })
        .collect();
    record.note_paths(notes);
    record.save(root)?;
    if index.entries().is_empty() {
        say.line("files: none in this installer")?;
    } else {
        let summary = extract(
            installer,
            &payload,
            &ExtractOptions {
                target: root,
                paths: &[],
                space: &Statvfs,
                bar: opts.bar,
                release: opts.release,
            },
        )?;
        say.line(format!(
            "files: {} entries ({} files, {}) laid out under {} ({existing} existed before)",
            summary.entries,
            summary.files,
            human_bytes(summary.bytes),
            root.display()
        ))?;
    }

    // 5. Persistent copy.
    let copy = persist_installer(opts.installer_path, root, name, version)?;
    record.note_paths(copy.records.clone());
    record.installer_copy = Some(copy.logical.clone());
    record.save(root)?;
    say.line(format!(
        "installer copy: {} ({})",
        copy.path.display(),
        if copy.copied {
            format!("copied {}", human_bytes(installer_len))
        } else {
            "already current".to_owned()
        }
    ))?;

    // 6. Registry service. A registry of ours that runs another copy or address, or whose
    // copy was just replaced, is stopped first: it holds the port and serves old bytes.
    if mode == ServiceMode::Daemon {
        let wanted = Daemon::registry_with_proxy(root, name, version, opts.listen, proxy);
        for s in &record.services {
            if let (true, Supervision::Daemon(d)) = (s.name == "registry", &s.supervision) {
                if (*d != wanted || copy.copied) && d.is_running(root, host)?.is_some() {
                    d.stop(root, host, record::STOP_TIMEOUT)?;
                    say.line(format!(
                        "registry: stopped the previous daemon ({})",
                        d.program.display()
                    ))?;
                }
            }
        }
    }
    // Docker and podman config (the pull proxy's leaves first: the registry loads them).
    let upstream = super::mirror::upstream_hosts(hosts.iter().copied())?;
    let addrs = super::runtimes::Addresses {
        registry: opts.listen,
        proxy: proxy_addr,
    };
    let runtime_files =
        super::runtimes::plan(root, name, &chosen, &upstream, addrs).map_err(super::Error::from)?;
    let ahead: Vec<(&str, PathKind)> = runtime_files
        .iter()
        .map(|(p, _, _)| (p.as_str(), PathKind::File))
        .collect();
    record.note_ahead(root, &ahead)?;
    let mut runtime_changed = 0;
    for (logical, text, file_mode) in &runtime_files {
        let written = super::fsutil::write_atomic(root, logical, text.as_bytes(), *file_mode)?;
        runtime_changed += usize::from(written.changed);
        record.note_paths(written.records);
    }
    record.note_mirror_files(runtime_files.iter().map(|(p, _, _)| p.clone()));
    record.save(root)?;
    if let Some(text) = &daemon_json {
        // The user's file: merged, never recorded as ours (uninstall takes our values out).
        super::fsutil::write_atomic(
            root,
            super::runtimes::docker::DAEMON_JSON,
            text.as_bytes(),
            0o644,
        )?;
        runtime_changed += 1;
    }
    if !runtime_files.is_empty() {
        say.line(format!(
            "runtime config: {} files for {}, {runtime_changed} changed",
            runtime_files.len() + usize::from(docker),
            chosen
                .iter()
                .filter(|r| matches!(r, Runtime::Docker | Runtime::Podman))
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
    }
    let service_files =
        super::service::registry_service_with_proxy(root, name, version, opts.listen, proxy)?
            .files();
    let ahead: Vec<(&str, PathKind)> = service_files
        .iter()
        .map(|f| (f.as_str(), PathKind::File))
        .collect();
    record.note_ahead(root, &ahead)?;
    let service = super::service::start_service(
        root,
        &super::service::registry_service_with_proxy(root, name, version, opts.listen, proxy)?,
        mode,
        host,
    )?;
    if mode == ServiceMode::Systemd && copy.copied && !service.started {
        // Same unit text, new file under it: the running registry maps the old one.
        let unit = registry_unit_name(name);
        host.run("systemctl", &["restart", &unit]).map_err(|e| {
            Error::Install(super::Error::Command {
                command: format!("systemctl restart {unit}"),
                detail: e.to_string(),
            })
        })?;
    }
    record.note_paths(service.records.clone());
    record.note_service(service.service.clone());
    record.save(root)?;
    let (log, how) = match &service.service.supervision {
        Supervision::Daemon(d) => (
            shown(root, &d.log_file),
            format!("daemon pid {}", service.pid.unwrap_or_default()),
        ),
        Supervision::Systemd { unit } => (
            format!("journalctl -u {unit}"),
            format!("systemd unit {unit}"),
        ),
    };
    say.line(format!(
        "registry: {} {how} on {} (log: {log})",
        if service.started {
            "started as"
        } else {
            "already running as"
        },
        opts.listen
    ))?;

    // 7. Readiness.
    let svc: &ServiceRecord = &service.service;
    let alive = || match &svc.supervision {
        Supervision::Daemon(d) => d.is_running(root, host).ok().flatten().is_some(),
        // systemd restarts a failing unit: keep polling until the timeout.
        Supervision::Systemd { .. } => true,
    };
    let took = wait_ready(opts.listen, opts.ready_timeout, &alive, &log)?;
    say.line(format!(
        "registry: ready, http://{}/v2/ answered 200 after {} ms",
        poll_addr(opts.listen),
        took.as_millis()
    ))?;

    // 8. Mirror config, noted in the record before it is written.
    let runtimes = Runtimes {
        containerd: opts.mirror_for.is_none() || chosen.contains(&Runtime::Containerd),
        k3s: opts.mirror_for.is_none() || chosen.contains(&Runtime::K3s),
    };
    let planned = mirror_files(opts.listen, hosts.iter().copied(), runtimes)?;
    let ahead: Vec<(&str, PathKind)> = planned
        .iter()
        .map(|(p, _)| (p.as_str(), PathKind::File))
        .collect();
    record.note_ahead(root, &ahead)?;
    let mirrors = write_mirror_config(root, opts.listen, hosts.iter().copied(), runtimes)?;
    record.note_paths(mirrors.records.clone());
    record.note_mirror_files(mirrors.files.clone());
    if runtimes.containerd || runtimes.k3s {
        say.line(format!(
            "mirror config: {} files (containerd hosts.toml for {}; k3s registries.yaml), {} changed",
            mirrors.files.len(),
            mirror_hosts_text(&hosts),
            mirrors.changed
        ))?;
    } else {
        say.line("mirror config: none for containerd and k3s (not in --mirror-for)")?;
    }

    record.save(root)?;

    // 9. Engine.
    let engine_summary = super::engine::bring_up(
        &super::engine::EngineStep {
            root,
            name,
            version,
            listen: opts.listen,
            mode,
            index,
            host,
        },
        engine,
        &mut record,
        &mut |line| say.line(line),
    )?;

    // 10. post-install hook.
    run_hook(HookStage::PostInstall, &mut record, &mut say)?;

    // 11. Record.
    record.save(root)?;
    say.line(format!(
        "record: saved {}",
        shown(root, &Record::logical_path(name))
    ))?;
    drop(lock);

    // 10. Summary.
    let certs = shown(root, CERTS_DIR);
    let mut text = format!(
        "\ninstalled {name} {version} under {}:\n  files: {} entries from the installer\n  \
         installer copy: {}\n  registry: http://{} serving {} image(s) ({how}; log: {log})\n  \
         mirror config:",
        root.display(),
        index.entries().len(),
        copy.path.display(),
        opts.listen,
        index.images().len(),
    );
    for f in &mirrors.files {
        text.push_str(&format!("\n    {}", shown(root, f)));
    }
    for line in &engine_summary {
        text.push_str(&format!("\n  {line}"));
    }
    let restarted =
        docker && opts.restart_runtimes && mode == ServiceMode::Systemd && !explicit_root;
    if restarted {
        super::runtimes::restart_docker(host)?;
    }
    for line in super::runtimes::summary_lines(root, name, &chosen, addrs, restarted) {
        text.push_str(&format!("\n  {line}"));
    }
    for h in hooks {
        text.push_str(&format!(
            "\n  hook {}: ran {} (log {})",
            h.stage,
            h.source,
            shown(root, &super::hooks::log_path(name, h))
        ));
    }
    text.push_str("\nuse it:");
    match index.images().first() {
        Some(image) => text.push_str(&format!(
            "\n  ctr image pull --hosts-dir {certs} {}",
            image.reference()
        )),
        None => text.push_str(&format!("\n  ctr image pull --hosts-dir {certs} IMAGE")),
    }
    text.push_str(&format!(
        "\n  containerd: config_path = \"{certs}\" (CRI registry section); k3s reads {}",
        shown(root, K3S_REGISTRIES)
    ));
    let root_arg = if explicit_root {
        format!(" --root {}", root.display())
    } else {
        String::new()
    };
    text.push_str(&format!(
        "\nundo it:\n  {} uninstall{root_arg}",
        copy.path.display()
    ));
    say.line(text)
}

fn mirror_hosts_text(hosts: &[&str]) -> String {
    let mut sorted: Vec<&str> = hosts.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.push("_default");
    sorted.join(", ")
}

#[allow(clippy::too_many_arguments)]
fn write_plan(
    say: &mut Say<'_>,
    root: &Path,
    name: &str,
    version: &str,
    entries: usize,
    files: usize,
    total: u64,
    existing: usize,
    mode: ServiceMode,
    listen: SocketAddr,
    hosts: &[&str],
    extra: &[String],
) -> Result<()> {
    let service = match mode {
        ServiceMode::Systemd => format!("systemd unit {}", registry_unit_name(name)),
        ServiceMode::Daemon => {
            format!("daemon with pid file and log in {}", shown(root, STATE_DIR))
        }
    };
    say.line(format!(
        "plan:\n  files: {entries} entries ({files} files, {}) under {} ({existing} exist already: \
         files are replaced, folders merged)\n  installer copy: {}\n  registry: {service}, \
         listening on {listen}\n  mirror config: containerd {}/<host>/hosts.toml for {}; k3s {}\n  \
         record: {}",
        human_bytes(total),
        root.display(),
        shown(root, &installer_copy_path(name, version)),
        shown(root, CERTS_DIR),
        mirror_hosts_text(hosts),
        shown(root, K3S_REGISTRIES),
        shown(root, &Record::logical_path(name)),
    ))?;
    for line in extra {
        say.line(format!("  {line}"))?;
    }
    Ok(())
}

/// Plan lines for the engine and the hooks.
fn plan_extra(root: &Path, name: &str, engine: &Engine, hooks: &[Hook]) -> Vec<String> {
    let mut lines = vec![match engine {
        Engine::None => "engine: none (files, registry and mirror config only)".to_owned(),
        Engine::Containerd(c) => format!(
            "engine: containerd from {} with config {}, socket {}{}",
            shown(root, &format!("/{}", c.containerd)),
            shown(root, &super::containerd::config_path(name)),
            shown(root, super::containerd::SOCKET),
            if c.pull {
                format!(", then every image pulled into namespace {}", c.namespace)
            } else {
                String::new()
            }
        ),
        Engine::K3s(k) => format!(
            "engine: k3s server from {} (data {}), waiting up to {} s for the node to be Ready",
            shown(root, &format!("/{}", k.binary)),
            shown(root, super::k3s::DATA_DIR),
            k.ready_timeout_secs
        ),
    }];
    for h in hooks {
        lines.push(format!("hook {}: {} ({} bytes)", h.stage, h.source, h.size));
    }
    lines
}

/// Runs `uninstall` for installer `name` under `root` (`/` when `None`): stops what the
/// install record names and removes what it created. Without a record, says so and
/// succeeds.
pub fn uninstall(
    name: &str,
    root: Option<&Path>,
    quiet: bool,
    host: &dyn Host,
    out: &mut dyn Write,
) -> Result<()> {
    let mut say = Say { out, quiet };
    super::validate_name(name)?;
    let (root, _) = install_root(root, false)?;
    let root = root.as_path();
    let record_path = shown(root, &Record::logical_path(name));
    if Record::load(root, name)?.is_none() {
        say.line(format!(
            "nothing to uninstall: no install record of {name} at {record_path}"
        ))?;
        return Ok(());
    }
    let lock = InstallLock::acquire(root)?;
    say.line(format!("lock: holding {}", lock.path().display()))?;
    let Some(record) = Record::load(root, name)? else {
        say.line(format!(
            "nothing to uninstall: the record {record_path} went away"
        ))?;
        return Ok(());
    };
    say.line(format!(
        "record: {record_path} ({} paths, {} services)",
        record.paths.len(),
        record.services.len()
    ))?;
    remove_stale_temps(root, Some(&record));
    let docker_note = super::runtimes::uninstall_docker(root, name)?;
    let summary = record::uninstall(root, &record, host)?;
    drop(lock);
    say.line(format!(
        "services: {}",
        if summary.stopped.is_empty() {
            "none running".to_owned()
        } else {
            format!("stopped {}", summary.stopped.join(", "))
        }
    ))?;
    say.line(format!(
        "files: removed {} files and {} folders",
        summary.removed_files, summary.removed_dirs
    ))?;
    if !summary.kept.is_empty() {
        say.line(format!(
            "kept (they existed before the install, or hold other files): {}",
            summary.kept.join(", ")
        ))?;
    }
    if let Some(note) = docker_note {
        say.line(note)?;
    }
    say.line(format!("uninstalled {name} from {}", root.display()))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn probe_v2_reads_the_status_of_a_plain_http_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /v2/ HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .unwrap();
        });
        assert_eq!(probe_v2(addr), Ok(200));
        server.join().unwrap();
    }

    #[test]
    fn a_registry_that_never_answers_fails_naming_its_log() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = wait_ready(
            addr,
            Duration::from_millis(300),
            &|| true,
            "/r/var/lib/airlock/x.log",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/r/var/lib/airlock/x.log"), "{text}");
        assert!(text.contains(&format!("http://{addr}/v2/")), "{text}");
    }

    #[test]
    fn unspecified_listen_addresses_are_polled_on_loopback() {
        assert_eq!(
            poll_addr("0.0.0.0:5000".parse().unwrap()),
            "127.0.0.1:5000".parse().unwrap()
        );
        assert_eq!(
            poll_addr("[::]:5000".parse().unwrap()),
            "[::1]:5000".parse().unwrap()
        );
    }
}
