//! `install` and `uninstall`, the commands: the building blocks of this module's siblings
//! run in the order the module docs list, each step printing one line, the record saved
//! after every step that changed something.
//!
//! An install is an [`Install`] context walked through one method per step: lock → record
//! → preflight (plan and confirmation) → pre-install hook → files → persistent copy →
//! registry service → readiness ([`super::readiness`]) → mirror config → engine
//! ([`super::engine`]) → post-install hook → record → summary ([`super::report`]). A
//! re-run converges: files are laid out again (equal content), the copy is left alone when
//! current, a running registry is not restarted, mirror files are rewritten only when they
//! differ.
//!
//! [`uninstall`] takes the lock, loads the record and hands it to [`super::undo`].

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_payload::{human_bytes, EntryKind, HookStage, Installer, Payload};
use indicatif::ProgressBar;

use super::engine::{self, EngineStep};
use super::fsutil::{logical_parent, resolve, PathKind, PathRecord};
use super::hooks;
use super::host::Host;
use super::lock::InstallLock;
use super::mirror::{mirror_files, write_mirror_config, MirrorConfig, Runtimes};
use super::mirror::{site_mirror_files, write_site_mirror_config, SiteMirror, SITE_CA};
use super::mirror::{CERTS_DIR, K3S_REGISTRIES};
use super::persist::{installer_copy_path, persist_installer, Persisted};
use super::preflight::{preflight, space_needed, PreflightInput, Problem};
use super::readiness::{poll_addr, wait_ready};
use super::record::Record;
use super::report::{hook_plan_lines, mirror_hosts_text, shown, Plan, Say, Summary};
use super::runtimes::{self, Runtime};
use super::service::{
    choose_mode, registry_service_with_proxy, registry_unit_name, service_is_running,
    start_service, Daemon, ServiceMode, StartedService, Supervision, STOP_TIMEOUT, UNIT_DIR,
};
use super::undo::undo;
use super::upgrade::{compare_versions, prune_stale};
use super::{validate_name, validate_version, STATE_DIR};
use crate::extract::{extract, ExtractOptions};
use crate::sys::Statvfs;
use crate::{Error, Result};

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
    /// How long the registry gets to answer ([`super::readiness::READY_TIMEOUT`]).
    pub ready_timeout: Duration,
    /// Progress of the file step.
    pub bar: &'a ProgressBar,
    /// Called with each frame's stored bytes once decoded (see `ExtractOptions::release`).
    pub release: &'a (dyn Fn(&[u8]) + Sync),
    /// `--mirror-for`: the runtimes to configure; `None` detects them ([`runtimes::detect`])
    /// and adds containerd and k3s.
    pub mirror_for: Option<Vec<Runtime>>,
    /// `--proxy-listen`: the pull proxy's address (Docker); `None` is the registry's port + 1.
    pub proxy_listen: Option<SocketAddr>,
    /// `--restart-runtimes`: restart Docker so it reads the proxy drop-in.
    pub restart_runtimes: bool,
    /// `--registry URL`: the runtimes pull from this site registry and no local registry
    /// runs.
    pub site: Option<SiteInstall<'a>>,
    /// `--keep-previous`: an upgrade keeps the earlier version's persistent copy.
    pub keep_previous: bool,
    /// `--allow-downgrade`: install over a newer installed version.
    pub allow_downgrade: bool,
}

/// `install --registry URL [--ca FILE] [--push]`: a site registry (Harbor, distribution...)
/// holding the images under the names `registry push` gives them
/// (`<prefix>/<host>/<repository>`), which the mirror config points every runtime at.
pub struct SiteInstall<'a> {
    /// Scheme, `host[:port]` and prefix; its `ca` is set by the install (the root's copy).
    pub mirror: SiteMirror,
    /// The PEM text of `--ca FILE`, copied to [`SITE_CA`] under the root.
    pub ca_pem: Option<String>,
    /// `--push`: pushes the installer's images there after preflight, before anything on
    /// this host changes (a failed push leaves the host as it was).
    pub push: Option<PushToSite<'a>>,
}

/// Pushes the images to the site registry, printing its lines on the given output.
pub type PushToSite<'a> = &'a dyn Fn(&mut dyn Write) -> Result<()>;

/// Runs `install` (see the module docs) with the installer `installer` whose file is
/// `opts.installer_path`, writing one line per step and a summary to `out`.
pub fn install(
    installer: &Installer<'_>,
    opts: &InstallOptions<'_>,
    host: &dyn Host,
    out: &mut dyn Write,
) -> Result<()> {
    let mut run = Install::begin(installer, opts, host, out)?;
    run.lock()?;
    run.load_record()?;
    if run.preflight()? == Go::Stop {
        return Ok(());
    }
    run.push_to_site()?;
    run.hook(HookStage::PreInstall)?;
    run.files()?;
    run.prune_previous()?;
    let copy = run.persist()?;
    run.runtime_config()?;
    let registry = match &run.site {
        Some(_) => run.stop_local_registry()?,
        None => {
            let registry = run.registry_service(&copy)?;
            run.readiness(&registry)?;
            registry
        }
    };
    let mirrors = run.mirror_config()?;
    run.drop_previous_copy()?;
    let engine = run.engine()?;
    run.hook(HookStage::PostInstall)?;
    run.finish(&copy, &registry, &mirrors, &engine)
}

/// Whether the install goes on after preflight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Go {
    /// Change things.
    On,
    /// A dry run: the plan was shown, nothing changes.
    Stop,
}

/// The registry once its step ran: the started service and how to talk about it.
struct Registry {
    /// `None` with a site registry (`--registry`): nothing of ours serves.
    service: Option<StartedService>,
    /// `daemon pid 12` or `systemd unit airlock-registry-edge.service`.
    how: String,
    /// Its log file, or the `journalctl` command that shows it.
    log: String,
}

/// One install run: what every step needs, and what the steps before it changed.
struct Install<'a, 'o> {
    installer: &'a Installer<'a>,
    payload: Payload<'a>,
    opts: &'a InstallOptions<'a>,
    host: &'a dyn Host,
    say: Say<'o>,
    /// The install root (absolute).
    root: PathBuf,
    /// True when `--root` named a root other than `/`.
    explicit_root: bool,
    name: &'a str,
    version: &'a str,
    /// How services run on this host.
    mode: ServiceMode,
    /// Held from the lock step on (none in a dry run).
    lock: Option<InstallLock>,
    /// The install record, loaded by the record step.
    record: Record,
    /// True when the record names nothing but the state folders (a failed preflight then
    /// undoes the lock step too).
    fresh: bool,
    /// Environment of the hooks (set once preflight passed).
    hook_env: Vec<(String, String)>,
    /// Payload entries whose path existed at preflight.
    existing: usize,
    /// The runtimes that get mirror config (`--mirror-for`, else detected).
    chosen: std::collections::BTreeSet<Runtime>,
    /// The pull proxy's address (used when Docker is among [`Install::chosen`]).
    proxy_addr: SocketAddr,
    /// Docker's `daemon.json` with our values merged in, once preflight read it.
    daemon_json: Option<String>,
    /// `--registry`: the site registry, with the path its CA copy has for the runtimes.
    site: Option<SiteMirror>,
    /// Runtimes detected on this host that `--registry` leaves without config (Docker).
    left_out: Vec<Runtime>,
    /// An upgrade: the version installed before and its persistent copy (logical path).
    previous: Option<(String, Option<String>)>,
}

impl<'a, 'o> Install<'a, 'o> {
    /// Checks the request and every byte of the installer before anything changes (the
    /// root is not even created for a damaged file), then resolves the root.
    fn begin(
        installer: &'a Installer<'a>,
        opts: &'a InstallOptions<'a>,
        host: &'a dyn Host,
        out: &'o mut dyn Write,
    ) -> Result<Self> {
        let mut say = Say {
            out,
            quiet: opts.quiet,
        };
        if opts.listen.port() == 0 {
            return Err(Error::ListenPortZero(opts.listen));
        }
        let docker_named = opts
            .mirror_for
            .as_ref()
            .is_some_and(|l| l.contains(&Runtime::Docker));
        if opts.site.is_some() && docker_named {
            return Err(super::Error::SiteDocker.into());
        }
        let meta = installer.meta();
        let (name, version) = (meta.name.as_str(), meta.version.as_str());
        validate_name(name)?;
        validate_version(version)?;
        // Nothing is laid out, copied or served from a damaged file (its stub included,
        // since the persistent copy runs it).
        installer.verify_stub()?;
        let payload = installer.load_index()?;
        let report = payload.verify(false, opts.release);
        if !report.damaged.is_empty() {
            return Err(Error::Damaged {
                items: report.damaged.iter().map(|e| e.to_string()).collect(),
            });
        }
        let (root, explicit_root) = install_root(opts.root, !opts.dry_run)?;
        say.line(format!(
            "verify: ok ({} frames, {} checked)",
            report.frames,
            human_bytes(report.bytes)
        ))?;
        let mode = choose_mode(&root, host);
        let chosen = match &opts.mirror_for {
            Some(list) => list.iter().copied().collect(),
            None => runtimes::detect(&root, std::env::var("PATH").ok().as_deref()),
        };
        // An installer without images has nothing for Docker or podman to pull.
        let mut chosen = chosen;
        if payload.index().images().is_empty() {
            chosen.retain(|r| matches!(r, Runtime::Containerd | Runtime::K3s));
        }
        // Docker's classic image store needs the pull proxy, which serves the installer's own
        // registry: a site registry cannot be put behind it (yet).
        let mut left_out = Vec::new();
        if opts.site.is_some() && chosen.remove(&Runtime::Docker) {
            left_out.push(Runtime::Docker);
        }
        let site = opts.site.as_ref().map(|s| SiteMirror {
            ca: s
                .ca_pem
                .as_ref()
                .map(|_| resolve(&root, SITE_CA).to_string_lossy().into_owned()),
            ..s.mirror.clone()
        });
        let proxy_addr = opts.proxy_listen.unwrap_or_else(|| {
            SocketAddr::new(opts.listen.ip(), opts.listen.port().wrapping_add(1))
        });
        Ok(Install {
            installer,
            payload,
            opts,
            host,
            say,
            root,
            explicit_root,
            name,
            version,
            mode,
            lock: None,
            record: Record::new(name, version),
            fresh: true,
            hook_env: Vec::new(),
            existing: 0,
            chosen,
            proxy_addr,
            daemon_json: None,
            site,
            left_out,
            previous: None,
        })
    }

    /// True when Docker gets config (and the registry serves the pull proxy).
    fn docker(&self) -> bool {
        self.chosen.contains(&Runtime::Docker)
    }

    /// The pull proxy's address when Docker gets config.
    fn proxy(&self) -> Option<SocketAddr> {
        self.docker().then_some(self.proxy_addr)
    }

    /// Step 1, lock: one install or uninstall at a time (a dry run changes nothing, so it takes
    /// none).
    fn lock(&mut self) -> Result<()> {
        if self.opts.dry_run {
            return Ok(());
        }
        let lock = InstallLock::acquire(&self.root)?;
        self.say
            .line(format!("lock: holding {}", lock.path().display()))?;
        self.lock = Some(lock);
        Ok(())
    }

    /// Step 2, record: a re-run continues the record of the last run, after removing the temp
    /// files a killed run left.
    fn load_record(&mut self) -> Result<()> {
        let (root, name, version) = (self.root.as_path(), self.name, self.version);
        let previous = Record::load(root, name)?;
        self.fresh = previous.as_ref().is_none_or(only_state);
        if self.lock.is_some() {
            remove_stale_temps(root, previous.as_ref());
        }
        if let Some(r) = previous.as_ref().filter(|r| r.version != version) {
            if compare_versions(version, &r.version) == std::cmp::Ordering::Less
                && !self.opts.allow_downgrade
            {
                return Err(super::Error::Downgrade {
                    name: name.to_owned(),
                    installed: r.version.clone(),
                    this: version.to_owned(),
                }
                .into());
            }
            self.previous = Some((r.version.clone(), r.installer_copy.clone()));
        }
        self.record = match previous {
            Some(mut r) => {
                r.version = version.to_owned();
                self.say.line(format!(
                    "record: continuing {} ({} paths, {} services noted)",
                    shown(root, &Record::logical_path(name)),
                    r.paths.len(),
                    r.services.len()
                ))?;
                r
            }
            None => {
                self.say.line(format!(
                    "record: new install of {name} {version}, kept in {}",
                    shown(root, &Record::logical_path(name))
                ))?;
                Record::new(name, version)
            }
        };
        if let Some(lock) = &self.lock {
            // Saved at once: a run killed from here on leaves a record naming the folders
            // the lock step created, so they are not taken for folders that existed before.
            self.record.note_paths(lock.created().to_vec());
            self.record.save(root)?;
        }
        Ok(())
    }

    /// Step 3, preflight: every problem at once, then the plan (dry run, or before the
    /// confirmation question). Nothing has changed yet when it fails; a fresh install's lock
    /// step is undone too.
    fn preflight(&mut self) -> Result<Go> {
        let (root, name, version, host) = (self.root.as_path(), self.name, self.version, self.host);
        let opts = self.opts;
        let index = self.payload.index();
        let engine = engine::driver(&index.install().engine);
        let installer_len = self.installer.bytes().len() as u64;
        let (need_bytes, need_inodes) = space_needed(
            self.installer.meta().total_size,
            index.entries().len() as u64,
            installer_len,
        );
        let own_registry_running =
            self.record.services.iter().any(|s| {
                s.name == "registry"
                    && s.listen.as_deref() == Some(opts.listen.to_string().as_str())
                    && service_is_running(root, s, host)
            }) || Daemon::registry_with_proxy(root, name, version, opts.listen, self.proxy())
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
        let engine_exec_dirs = engine.exec_dirs();
        let exec_dirs: Vec<&str> = engine_exec_dirs.iter().map(String::as_str).collect();
        let mut report = preflight(
            &PreflightInput {
                root,
                explicit_root: self.explicit_root,
                need_bytes,
                need_inodes,
                listen: opts.listen,
                needs_port: self.site.is_none(),
                own_registry_running,
                commands: &[],
                payload_files: &payload_files,
                exec_dirs: &exec_dirs,
            },
            host,
        );
        report.problems.extend(
            engine
                .problems(root, &self.record, host)
                .into_iter()
                .map(Problem::Engine),
        );
        if self.docker() && !own_registry_running {
            if let Err(e) = host.try_bind(self.proxy_addr) {
                report.problems.push(Problem::PortBusy {
                    addr: self.proxy_addr,
                    cause: e.to_string(),
                });
            }
        }
        // A daemon.json that is not JSON stops the install before anything changes.
        if self.docker() {
            match runtimes::merge_docker(root, opts.listen) {
                Ok(text) => self.daemon_json = text,
                Err(e) => {
                    if self.fresh {
                        release_fresh_lock(root, self.lock.take(), &self.record);
                    }
                    return Err(super::Error::from(e).into());
                }
            }
        }
        let hosts = image_hosts(&self.payload);
        let existing = index
            .entries()
            .iter()
            .filter(|e| fs::symlink_metadata(root.join(e.path.as_str())).is_ok())
            .count();
        self.existing = existing;
        if report.is_ok() {
            let registry = match &self.site {
                Some(site) => format!("site registry {}", site_url(site)),
                None => format!(
                    "registry address {} {}",
                    opts.listen,
                    if own_registry_running {
                        "served by our registry already"
                    } else {
                        "free"
                    }
                ),
            };
            self.say.line(format!(
                "preflight: ok (need {} and {need_inodes} inodes under {}; {registry})",
                human_bytes(need_bytes),
                root.display(),
            ))?;
        } else {
            self.say.line(format!(
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
            let mut extra = vec![engine.plan_line(root, name)];
            extra.extend(hook_plan_lines(&index.install().hooks));
            extra.extend(runtimes::plan_lines(
                root,
                name,
                &self.chosen,
                self.proxy_addr,
            ));
            let plan = Plan {
                root,
                name,
                version,
                entries: index.entries().len(),
                files: payload_files.len(),
                total: self.installer.meta().total_size,
                existing,
                mode: self.mode,
                listen: opts.listen,
                site: self.site.as_ref().map(site_url),
                hosts: &hosts,
                extra,
            };
            self.say.line(plan.text())?;
        }
        if !report.is_ok() {
            if self.fresh {
                release_fresh_lock(root, self.lock.take(), &self.record);
            }
            return Err(report.into_result().unwrap_err().into());
        }
        if opts.dry_run {
            self.say.line("dry run: nothing was changed")?;
            return Ok(Go::Stop);
        }
        if let Some(confirm) = opts.confirm {
            if !confirm(&mut *self.say.out)? {
                if self.fresh {
                    release_fresh_lock(root, self.lock.take(), &self.record);
                }
                return Err(Error::Cancelled);
            }
        }
        // Hooks see where everything is (the copy and the registry exist from post-install
        // on).
        self.hook_env = vec![
            ("AIRLOCK_NAME".into(), name.into()),
            ("AIRLOCK_VERSION".into(), version.into()),
            ("AIRLOCK_ROOT".into(), root.to_string_lossy().into_owned()),
            (
                "AIRLOCK_REGISTRY".into(),
                match &self.site {
                    Some(site) => site_url(site),
                    None => poll_addr(opts.listen).to_string(),
                },
            ),
            (
                "AIRLOCK_INSTALLER".into(),
                opts.installer_path.to_string_lossy().into_owned(),
            ),
            (
                "AIRLOCK_INSTALLER_COPY".into(),
                shown(root, &installer_copy_path(name, version)),
            ),
            (
                "AIRLOCK_ENGINE".into(),
                index.install().engine.kind().into(),
            ),
        ];
        self.hook_env.extend(engine.hook_env(root));
        Ok(Go::On)
    }

    /// The `pre-install` (after preflight) or `post-install` (after the engine) hook, when
    /// the payload has one.
    fn hook(&mut self, stage: HookStage) -> Result<()> {
        let root = self.root.as_path();
        let Some(hook) = self
            .payload
            .index()
            .install()
            .hooks
            .iter()
            .find(|h| h.stage == stage)
        else {
            return Ok(());
        };
        let output = hooks::run_hook(
            root,
            self.name,
            hook,
            &self.payload,
            &self.hook_env,
            &mut self.record,
            self.host,
        )?;
        self.say.line(format!(
            "hook {stage}: ok ({}, log {})\n{output}",
            hook.source,
            shown(root, &hooks::log_path(self.name, hook))
        ))
    }

    /// Step 4, files: what exists is noted before anything is laid out, then the payload's
    /// files are extracted under the root.
    fn files(&mut self) -> Result<()> {
        let root = self.root.as_path();
        let index = self.payload.index();
        let existing = self.existing;
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
        self.record.note_paths(notes);
        self.record.save(root)?;
        if index.entries().is_empty() {
            return self.say.line("files: none in this installer");
        }
        let summary = extract(
            self.installer,
            &self.payload,
            &ExtractOptions {
                target: root,
                paths: &[],
                space: &Statvfs,
                bar: self.opts.bar,
                release: self.opts.release,
            },
        )?;
        self.say.line(format!(
            "files: {} entries ({} files, {}) laid out under {} ({existing} existed before)",
            summary.entries,
            summary.files,
            human_bytes(summary.bytes),
            root.display()
        ))
    }

    /// Step 4b, an upgrade: what the earlier version laid out and this one lacks goes, read
    /// from the earlier version's persistent copy ([`super::upgrade::prune_stale`]).
    fn prune_previous(&mut self) -> Result<()> {
        let Some((old_version, old_copy)) = self.previous.clone() else {
            return Ok(());
        };
        let root = self.root.as_path();
        let Some(copy) = old_copy.map(|c| resolve(root, &c)) else {
            return Ok(());
        };
        let old = match crate::selfexe::InstallerFile::open(&copy).and_then(|f| {
            let installer = Installer::open(f.bytes(), f.elf_end())?;
            Ok(installer.load_index()?.index().clone())
        }) {
            Ok(index) => index,
            Err(e) => {
                return self.say.line(format!(
                    "upgrade from {old_version}: cannot read its installer copy {} ({e}); \
                     files it placed that {} lacks stay",
                    copy.display(),
                    self.version
                ));
            }
        };
        let pruned = prune_stale(root, &old, self.payload.index(), &mut self.record)?;
        self.record.save(root)?;
        let kept = if pruned.kept.is_empty() {
            String::new()
        } else {
            format!(
                "; kept {} changed since {old_version} installed them: {}",
                pruned.kept.len(),
                pruned.kept.join(", ")
            )
        };
        self.say.line(format!(
            "upgrade from {old_version}: removed {} path(s) {} no longer has{kept}",
            pruned.removed.len(),
            self.version
        ))
    }

    /// The earlier version's persistent copy, once this version's registry serves (or the
    /// site registry took over): deleted unless `--keep-previous`.
    fn drop_previous_copy(&mut self) -> Result<()> {
        let Some((old_version, Some(old_copy))) = self.previous.clone() else {
            return Ok(());
        };
        if self.opts.keep_previous {
            return self.say.line(format!(
                "upgrade from {old_version}: kept its installer copy {} (--keep-previous)",
                shown(&self.root, &old_copy)
            ));
        }
        let root = self.root.as_path();
        let path = resolve(root, &old_copy);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::fs("remove the previous installer copy", &path)(e)),
        }
        self.record.paths.retain(|p| p.path != old_copy);
        self.record.save(root)?;
        self.say.line(format!(
            "upgrade from {old_version}: removed its installer copy {}",
            path.display()
        ))
    }

    /// Step 5: The persistent installer copy the registry runs from.
    fn persist(&mut self) -> Result<Persisted> {
        let root = self.root.as_path();
        let copy = persist_installer(self.opts.installer_path, root, self.name, self.version)?;
        self.record.note_paths(copy.records.clone());
        self.record.installer_copy = Some(copy.logical.clone());
        self.record.save(root)?;
        self.say.line(format!(
            "installer copy: {} ({})",
            copy.path.display(),
            if copy.copied {
                format!(
                    "copied {}",
                    human_bytes(self.installer.bytes().len() as u64)
                )
            } else {
                "already current".to_owned()
            }
        ))?;
        Ok(copy)
    }

    /// Step 6a: Docker and podman config, noted in the record before it is written. It
    /// comes before the registry: the pull proxy loads its leaf certificates at start.
    fn runtime_config(&mut self) -> Result<()> {
        let root = self.root.as_path();
        let hosts = image_hosts(&self.payload);
        let upstream = super::mirror::upstream_hosts(hosts.iter().copied())?;
        let addrs = runtimes::Addresses {
            registry: self.opts.listen,
            proxy: self.proxy_addr,
        };
        let files = match &self.site {
            Some(site) => self.site_runtime_files(site, &upstream),
            None => runtimes::plan(root, self.name, &self.chosen, &upstream, addrs)
                .map_err(super::Error::from)?,
        };
        let ahead: Vec<(&str, PathKind)> = files
            .iter()
            .map(|(p, _, _)| (p.as_str(), PathKind::File))
            .collect();
        self.record.note_ahead(root, &ahead)?;
        let mut changed = 0;
        for (logical, text, file_mode) in &files {
            let written = super::fsutil::write_atomic(root, logical, text.as_bytes(), *file_mode)?;
            changed += usize::from(written.changed);
            self.record.note_paths(written.records);
        }
        self.record
            .note_mirror_files(files.iter().map(|(p, _, _)| p.clone()));
        self.record.save(root)?;
        if let Some(text) = &self.daemon_json {
            // The user's file: merged, never recorded as ours (uninstall takes our values out).
            super::fsutil::write_atomic(
                root,
                runtimes::docker::DAEMON_JSON,
                text.as_bytes(),
                0o644,
            )?;
            changed += 1;
        }
        if files.is_empty() {
            return Ok(());
        }
        self.say.line(format!(
            "runtime config: {} files for {}, {changed} changed",
            files.len() + usize::from(self.docker()),
            self.chosen
                .iter()
                .filter(|r| matches!(r, Runtime::Docker | Runtime::Podman))
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// `--push`: the images go to the site registry before anything here changes.
    fn push_to_site(&mut self) -> Result<()> {
        let Some(push) = self.opts.site.as_ref().and_then(|s| s.push) else {
            return Ok(());
        };
        push(&mut *self.say.out)
    }

    /// The podman/CRI-O drop-in (and the site's CA where they read it) for `--registry`.
    fn site_runtime_files(
        &self,
        site: &SiteMirror,
        upstream: &std::collections::BTreeSet<String>,
    ) -> Vec<(String, String, u32)> {
        if !self.chosen.contains(&Runtime::Podman) {
            return Vec::new();
        }
        let mut files = vec![(
            runtimes::podman::dropin_path(self.name),
            runtimes::podman::site_registries_conf(self.name, upstream, site),
            0o644,
        )];
        if let Some(pem) = self.opts.site.as_ref().and_then(|s| s.ca_pem.as_ref()) {
            files.push((
                runtimes::podman::site_ca_path(&site.authority),
                pem.clone(),
                0o644,
            ));
        }
        files
    }

    /// Step 6 with `--registry`: no registry of ours runs. One an earlier install started is
    /// stopped (it stays in the record, so `uninstall` removes its files and an install
    /// without `--registry` starts it again).
    fn stop_local_registry(&mut self) -> Result<Registry> {
        let (root, host) = (self.root.as_path(), self.host);
        for s in &self.record.services {
            if s.name != "registry" || !service_is_running(root, s, host) {
                continue;
            }
            match &s.supervision {
                Supervision::Daemon(d) => {
                    d.stop(root, host, STOP_TIMEOUT)?;
                }
                Supervision::Systemd { unit } => {
                    host.run("systemctl", &["stop", unit]).map_err(|e| {
                        Error::Install(super::Error::Command {
                            command: format!("systemctl stop {unit}"),
                            detail: e.to_string(),
                        })
                    })?;
                }
            }
            self.say
                .line("registry: stopped the local registry of an earlier install")?;
        }
        let site = self.site.as_ref().map(site_url).unwrap_or_default();
        self.say.line(format!(
            "registry: none started; the runtimes pull from {site}"
        ))?;
        Ok(Registry {
            service: None,
            how: format!("site registry {site}"),
            log: String::new(),
        })
    }

    /// Step 6: The registry service. A registry of ours that runs another copy or address, or
    /// whose copy was just replaced, is stopped first: it holds the port and serves old
    /// bytes.
    fn registry_service(&mut self, copy: &Persisted) -> Result<Registry> {
        let (root, name, version, host) = (self.root.as_path(), self.name, self.version, self.host);
        let listen = self.opts.listen;
        if self.mode == ServiceMode::Daemon {
            let wanted = Daemon::registry_with_proxy(root, name, version, listen, self.proxy());
            for s in &self.record.services {
                if let (true, Supervision::Daemon(d)) = (s.name == "registry", &s.supervision) {
                    if (*d != wanted || copy.copied) && d.is_running(root, host)?.is_some() {
                        d.stop(root, host, STOP_TIMEOUT)?;
                        self.say.line(format!(
                            "registry: stopped the previous daemon ({})",
                            d.program.display()
                        ))?;
                    }
                }
            }
        }
        let def = registry_service_with_proxy(root, name, version, listen, self.proxy())?;
        let service_files = def.files();
        let ahead: Vec<(&str, PathKind)> = service_files
            .iter()
            .map(|f| (f.as_str(), PathKind::File))
            .collect();
        self.record.note_ahead(root, &ahead)?;
        let service = start_service(root, &def, self.mode, host)?;
        if self.mode == ServiceMode::Systemd && copy.copied && !service.started {
            // Same unit text, new file under it: the running registry maps the old one.
            let unit = registry_unit_name(name);
            host.run("systemctl", &["restart", &unit]).map_err(|e| {
                Error::Install(super::Error::Command {
                    command: format!("systemctl restart {unit}"),
                    detail: e.to_string(),
                })
            })?;
        }
        self.record.note_paths(service.records.clone());
        self.record.note_service(service.service.clone());
        self.record.save(root)?;
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
        self.say.line(format!(
            "registry: {} {how} on {listen} (log: {log})",
            if service.started {
                "started as"
            } else {
                "already running as"
            },
        ))?;
        Ok(Registry {
            service: Some(service),
            how,
            log,
        })
    }

    /// Step 7, readiness: the registry answers `GET /v2/` with 200.
    fn readiness(&mut self, registry: &Registry) -> Result<()> {
        let (root, host) = (self.root.as_path(), self.host);
        let Some(started) = &registry.service else {
            return Ok(());
        };
        let svc = &started.service;
        let alive = || match &svc.supervision {
            Supervision::Daemon(d) => d.is_running(root, host).ok().flatten().is_some(),
            // systemd restarts a failing unit: keep polling until the timeout.
            Supervision::Systemd { .. } => true,
        };
        let took = wait_ready(
            self.opts.listen,
            self.opts.ready_timeout,
            &alive,
            &registry.log,
        )?;
        self.say.line(format!(
            "registry: ready, http://{}/v2/ answered 200 after {} ms",
            poll_addr(self.opts.listen),
            took.as_millis()
        ))
    }

    /// Step 8: Mirror config for every runtime, noted in the record before it is written.
    fn mirror_config(&mut self) -> Result<MirrorConfig> {
        let root = self.root.as_path();
        let listen = self.opts.listen;
        let hosts = image_hosts(&self.payload);
        let all = self.opts.mirror_for.is_none();
        let runtimes = Runtimes {
            containerd: all || self.chosen.contains(&Runtime::Containerd),
            k3s: all || self.chosen.contains(&Runtime::K3s),
        };
        let ca_pem = self.opts.site.as_ref().and_then(|s| s.ca_pem.as_deref());
        let planned = match &self.site {
            Some(site) => site_mirror_files(site, ca_pem, hosts.iter().copied(), runtimes)?,
            None => mirror_files(listen, hosts.iter().copied(), runtimes)?,
        };
        let ahead: Vec<(&str, PathKind)> = planned
            .iter()
            .map(|(p, _)| (p.as_str(), PathKind::File))
            .collect();
        self.record.note_ahead(root, &ahead)?;
        let mirrors = match &self.site {
            Some(site) => {
                write_site_mirror_config(root, site, ca_pem, hosts.iter().copied(), runtimes)?
            }
            None => write_mirror_config(root, listen, hosts.iter().copied(), runtimes)?,
        };
        self.record.note_paths(mirrors.records.clone());
        self.record.note_mirror_files(mirrors.files.clone());
        if runtimes.containerd || runtimes.k3s {
            self.say.line(format!(
                "mirror config: {} files ({}){}, {} changed",
                mirrors.files.len(),
                match (runtimes.containerd, runtimes.k3s) {
                    (true, true) => format!(
                        "containerd hosts.toml for {}; k3s registries.yaml",
                        mirror_hosts_text(&hosts)
                    ),
                    (true, false) =>
                        format!("containerd hosts.toml for {}", mirror_hosts_text(&hosts)),
                    _ => "k3s registries.yaml".to_owned(),
                },
                match &self.site {
                    Some(site) => format!(" pointing at {}", site_url(site)),
                    None => String::new(),
                },
                mirrors.changed
            ))?;
        } else {
            self.say
                .line("mirror config: none for containerd and k3s (not in --mirror-for)")?;
        }
        self.record.save(root)?;
        Ok(mirrors)
    }

    /// Step 9: The cluster engine ([`super::engine`]); returns its summary lines.
    fn engine(&mut self) -> Result<Vec<String>> {
        let index = self.payload.index();
        let step = EngineStep {
            root: &self.root,
            name: self.name,
            version: self.version,
            listen: self.opts.listen,
            mode: self.mode,
            index,
            host: self.host,
        };
        let say = &mut self.say;
        engine::driver(&index.install().engine)
            .bring_up(&step, &mut self.record, &mut |line| say.line(line))
    }

    /// Step 10: The record, saved a last time; the lock is released; the summary.
    fn finish(
        mut self,
        copy: &Persisted,
        registry: &Registry,
        mirrors: &MirrorConfig,
        engine: &[String],
    ) -> Result<()> {
        let root = self.root.as_path();
        self.record.save(root)?;
        self.say.line(format!(
            "record: saved {}",
            shown(root, &Record::logical_path(self.name))
        ))?;
        drop(self.lock.take());
        let restarted = self.docker()
            && self.opts.restart_runtimes
            && self.mode == ServiceMode::Systemd
            && !self.explicit_root;
        if restarted {
            runtimes::restart_docker(self.host)?;
        }
        let addrs = runtimes::Addresses {
            registry: self.opts.listen,
            proxy: self.proxy_addr,
        };
        let mut engine = engine.to_vec();
        engine.extend(runtimes::summary_lines(
            root,
            self.name,
            &self.chosen,
            addrs,
            restarted,
        ));
        for r in &self.left_out {
            engine.push(format!(
                "{}: no config (found on this host, but install --registry cannot point its \
                 pull proxy at a site registry)",
                r.as_str()
            ));
        }
        let engine = engine.as_slice();
        let index = self.payload.index();
        let summary = Summary {
            root,
            explicit_root: self.explicit_root,
            name: self.name,
            version: self.version,
            index,
            copy: &copy.path,
            listen: self.opts.listen,
            site: self.site.as_ref().map(site_url),
            how: &registry.how,
            log: &registry.log,
            mirror_files: &mirrors.files,
            engine,
            hooks: &index.install().hooks,
        };
        self.say.line(summary.text())
    }
}

/// `https://harbor.site/mirror`: how a site registry is named in lines and the summary.
fn site_url(site: &SiteMirror) -> String {
    if site.prefix.is_empty() {
        format!("{}://{}", site.scheme, site.authority)
    } else {
        format!("{}://{}/{}", site.scheme, site.authority, site.prefix)
    }
}

/// The upstream registry hosts of the captured images (with repeats).
fn image_hosts<'p>(payload: &'p Payload<'_>) -> Vec<&'p str> {
    payload
        .index()
        .images()
        .iter()
        .map(|i| i.registry.as_str())
        .collect()
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
fn release_fresh_lock(root: &Path, lock: Option<InstallLock>, record: &Record) {
    let Some(lock) = lock else {
        return;
    };
    let _ = fs::remove_file(resolve(root, &Record::logical_path(&record.name)));
    let _ = fs::remove_file(lock.path());
    drop(lock);
    let mut dirs: Vec<&PathRecord> = record.paths.iter().filter(|p| !p.existed_before).collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.path.len()));
    for r in dirs {
        let _ = fs::remove_dir(resolve(root, &r.path));
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
        UNIT_DIR.to_owned(),
        logical_parent(K3S_REGISTRIES).unwrap_or("/").to_owned(),
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
            if let Some(parent) = logical_parent(&p.path) {
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
    validate_name(name)?;
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
    let docker_note = runtimes::uninstall_docker(root, name)?;
    // Before the services stop: kubeadm reset removes the cluster's containers via the CRI.
    if let Some(line) = super::kubeadm::reset_before_undo(root, name, host)? {
        say.line(line)?;
    }
    let summary = undo(root, &record, host)?;
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
