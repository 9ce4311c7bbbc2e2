//! The engine step of `install`: brings up what the payload's install section names
//! ([`airlock_payload::Engine`]) once files, registry and mirror config are in place.
//! Every path is noted in the record before it is created ([`Record::note_ahead`]), every
//! service right after it is started, so a killed install is undone or completed by the
//! next run.
//!
//! The seam for more engines is [`EngineDriver`]: what install asks of an engine (where its
//! programs run, what preflight should refuse, what hooks see, the plan line, bring-up),
//! chosen once by [`driver`]. A new engine (kubeadm, k0s) is one module with its files and
//! service, one impl here and one arm in [`driver`].

use std::net::SocketAddr;
use std::path::Path;

use airlock_payload::{ContainerdEngine, Engine, Index, K3sEngine, KubeadmEngine};

use super::containerd;
use super::fsutil::{resolve, write_atomic, PathKind};
use super::host::Host;
use super::k3s;
use super::kubeadm;
use super::record::Record;
use super::service::{
    service_is_running, start_service, systemctl, ServiceDef, ServiceMode, StartedService,
    Supervision, STOP_TIMEOUT,
};
use super::Result;

/// What the engine step needs to know.
pub struct EngineStep<'a> {
    /// The install root.
    pub root: &'a Path,
    /// Installer name and version.
    pub name: &'a str,
    /// Installer version.
    pub version: &'a str,
    /// The registry address.
    pub listen: SocketAddr,
    /// systemd or daemon.
    pub mode: ServiceMode,
    /// The payload's index (images, manifests).
    pub index: &'a Index,
    /// The OS.
    pub host: &'a dyn Host,
}

/// Prints one step line.
pub type SayLine<'s> = &'s mut dyn FnMut(String) -> crate::Result<()>;

/// What the install steps ask of a cluster engine.
pub trait EngineDriver {
    /// Folders (inside the root) where the engine's programs run: preflight checks they are
    /// not on a `noexec` mount.
    fn exec_dirs(&self) -> Vec<String>;

    /// Problems preflight should report for the engine (a foreign containerd on our socket).
    fn problems(&self, _root: &Path, _record: &Record, _host: &dyn Host) -> Vec<String> {
        Vec::new()
    }

    /// Environment variables for hooks that depend on the engine.
    fn hook_env(&self, _root: &Path) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The engine's line in the install plan.
    fn plan_line(&self, root: &Path, name: &str) -> String;

    /// Brings the engine up; `say` prints one line per step. Returns summary lines.
    fn bring_up(
        &self,
        step: &EngineStep<'_>,
        record: &mut Record,
        say: SayLine<'_>,
    ) -> crate::Result<Vec<String>>;
}

/// The driver of the engine the payload names.
pub fn driver(engine: &Engine) -> Box<dyn EngineDriver + '_> {
    match engine {
        Engine::None => Box::new(NoEngine),
        Engine::Containerd(c) => Box::new(Containerd(c)),
        Engine::K3s(k) => Box::new(K3s(k)),
        Engine::Kubeadm(k) => Box::new(Kubeadm(k)),
    }
}

/// `engine: none`: files, registry and mirror config only.
struct NoEngine;

impl EngineDriver for NoEngine {
    fn exec_dirs(&self) -> Vec<String> {
        Vec::new()
    }

    fn plan_line(&self, _root: &Path, _name: &str) -> String {
        "engine: none (files, registry and mirror config only)".to_owned()
    }

    fn bring_up(
        &self,
        _step: &EngineStep<'_>,
        _record: &mut Record,
        _say: SayLine<'_>,
    ) -> crate::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// The folder of a payload path, as a logical path (`usr/bin/x` → `/usr/bin`).
fn dir_of(p: &str) -> String {
    format!("/{}", p.rsplit_once('/').map_or("", |(d, _)| d))
}

/// `engine: containerd` ([`containerd`]).
struct Containerd<'a>(&'a ContainerdEngine);

impl EngineDriver for Containerd<'_> {
    fn exec_dirs(&self) -> Vec<String> {
        let c = self.0;
        vec![dir_of(&c.containerd), dir_of(&c.runc), dir_of(&c.shim)]
    }

    fn problems(&self, root: &Path, record: &Record, host: &dyn Host) -> Vec<String> {
        let ours = record
            .services
            .iter()
            .any(|s| s.name == "containerd" && service_is_running(root, s, host));
        containerd::socket_problem(root, ours).into_iter().collect()
    }

    fn hook_env(&self, root: &Path) -> Vec<(String, String)> {
        vec![(
            "AIRLOCK_CONTAINERD_SOCKET".to_owned(),
            real(root, containerd::SOCKET),
        )]
    }

    fn plan_line(&self, root: &Path, name: &str) -> String {
        let c = self.0;
        format!(
            "engine: containerd from {} with config {}, socket {}{}",
            real(root, &format!("/{}", c.containerd)),
            real(root, &containerd::config_path(name)),
            real(root, containerd::SOCKET),
            if c.pull {
                format!(", then every image pulled into namespace {}", c.namespace)
            } else {
                String::new()
            }
        )
    }

    fn bring_up(
        &self,
        step: &EngineStep<'_>,
        record: &mut Record,
        say: SayLine<'_>,
    ) -> crate::Result<Vec<String>> {
        let root = step.root;
        let c = self.0;
        let config = containerd::config_path(step.name);
        let mut ahead = vec![(config.as_str(), PathKind::File)];
        ahead.extend(containerd::trees());
        let pull_log = containerd::pull_log(step.name);
        ahead.push((pull_log.as_str(), PathKind::File));
        record.note_ahead(root, &ahead)?;
        let cri = containerd::CriOptions::for_this_process(c);
        let text = containerd::config_toml(root, step.name, step.version, &cri);
        let written = write_atomic(root, &config, text.as_bytes(), 0o644)?;
        record.note_paths(written.records.clone());
        let def = containerd::service(root, step.name, step.version, c);
        let started = start(step, &def, written.changed, record)?;
        let (how, log) = how(step, &started);
        say(format!(
            "containerd: {} {how} (config {}, log: {log})",
            if started.started {
                "started as"
            } else {
                "already running as"
            },
            resolve(root, &config).display()
        ))?;
        let took = containerd::wait_ready(
            root,
            c,
            containerd::READY_TIMEOUT,
            &alive(step, &started),
            &log,
            step.host,
        )?;
        say(format!(
            "containerd: ready, answered on {} after {} ms",
            resolve(root, containerd::SOCKET).display(),
            took.as_millis()
        ))?;
        let images: Vec<String> = step.index.images().iter().map(|i| i.reference()).collect();
        if c.pull {
            for (n, (reference, image)) in images.iter().zip(step.index.images()).enumerate() {
                containerd::pull(root, c, reference, &pull_log, step.host)?;
                containerd::tag_by_digest(root, c, image, step.host)?;
                say(format!(
                    "containerd: pulled {reference} into namespace {} ({}/{})",
                    c.namespace,
                    n + 1,
                    images.len()
                ))?;
            }
        }
        let sock = resolve(root, containerd::SOCKET);
        let mut lines = vec![
            format!(
                "containerd: {how}, socket {}, {} image(s) in namespace {}",
                sock.display(),
                if c.pull { images.len() } else { 0 },
                c.namespace
            ),
            format!(
                "  try: {} --address {} -n {} images ls",
                resolve(root, &format!("/{}", c.ctr)).display(),
                sock.display(),
                c.namespace
            ),
        ];
        lines.extend(cri.summary());
        Ok(lines)
    }
}

/// `engine: k3s` ([`k3s`]).
struct K3s<'a>(&'a K3sEngine);

impl EngineDriver for K3s<'_> {
    fn exec_dirs(&self) -> Vec<String> {
        vec![dir_of(&self.0.binary), k3s::DATA_DIR.to_owned()]
    }

    fn hook_env(&self, root: &Path) -> Vec<(String, String)> {
        vec![("KUBECONFIG".to_owned(), real(root, k3s::KUBECONFIG))]
    }

    fn plan_line(&self, root: &Path, _name: &str) -> String {
        let k = self.0;
        format!(
            "engine: k3s server from {} (data {}), waiting up to {} s for the node to be Ready",
            real(root, &format!("/{}", k.binary)),
            real(root, k3s::DATA_DIR),
            k.ready_timeout_secs
        )
    }

    fn bring_up(
        &self,
        step: &EngineStep<'_>,
        record: &mut Record,
        say: SayLine<'_>,
    ) -> crate::Result<Vec<String>> {
        let root = step.root;
        let k = self.0;
        let mut ahead: Vec<(&str, PathKind)> = k3s::RUNTIME_TREES
            .iter()
            .map(|t| (*t, PathKind::Tree))
            .collect();
        ahead.push((k3s::KUBECONFIG, PathKind::File));
        record.note_ahead(root, &ahead)?;
        let (copied, changed) = k3s::copy_manifests(root, k, step.index, record)?;
        if k.manifests.is_some() {
            say(format!(
                "k3s: {copied} manifest(s) in {} ({changed} changed)",
                resolve(root, k3s::MANIFESTS_DIR).display()
            ))?;
        }
        let def = k3s::service(root, step.name, step.version, k);
        let started = start(step, &def, false, record)?;
        let (how, log) = how(step, &started);
        say(format!(
            "k3s: {} {how} (log: {log})",
            if started.started {
                "started as"
            } else {
                "already running as"
            }
        ))?;
        let took = k3s::wait_ready(root, k, &alive(step, &started), &log, step.host)?;
        say(format!("k3s: node Ready after {} s", took.as_secs()))?;
        let kubeconfig = resolve(root, k3s::KUBECONFIG);
        Ok(vec![
            format!(
                "k3s: {how}, kubeconfig {}, images through http://{}",
                kubeconfig.display(),
                step.listen
            ),
            format!(
                "  try: {} kubectl --kubeconfig {} get nodes",
                resolve(root, &format!("/{}", k.binary)).display(),
                kubeconfig.display()
            ),
        ])
    }
}

/// `engine: kubeadm` ([`kubeadm`]): the containerd engine, then the kubelet and `kubeadm
/// init`.
struct Kubeadm<'a>(&'a KubeadmEngine);

impl EngineDriver for Kubeadm<'_> {
    fn exec_dirs(&self) -> Vec<String> {
        let k = self.0;
        let mut dirs = Containerd(&k.containerd).exec_dirs();
        dirs.extend([dir_of(&k.kubeadm), dir_of(&k.kubelet), dir_of(&k.kubectl)]);
        dirs.dedup();
        dirs
    }

    fn problems(&self, root: &Path, record: &Record, host: &dyn Host) -> Vec<String> {
        Containerd(&self.0.containerd).problems(root, record, host)
    }

    fn hook_env(&self, root: &Path) -> Vec<(String, String)> {
        let mut env = Containerd(&self.0.containerd).hook_env(root);
        env.push(("KUBECONFIG".to_owned(), real(root, kubeadm::KUBECONFIG)));
        env
    }

    fn plan_line(&self, root: &Path, name: &str) -> String {
        let k = self.0;
        format!(
            "{}; then the kubelet and `kubeadm init` of Kubernetes {} (config {}{}), waiting up \
             to {} s for the node to be Ready",
            Containerd(&k.containerd).plan_line(root, name),
            k.kubernetes_version,
            real(root, &kubeadm::config_path(name)),
            if root == Path::new("/") {
                String::new()
            } else {
                format!(", kubeadm --rootfs {}", root.display())
            },
            k.ready_timeout_secs
        )
    }

    fn bring_up(
        &self,
        step: &EngineStep<'_>,
        record: &mut Record,
        say: SayLine<'_>,
    ) -> crate::Result<Vec<String>> {
        let k = self.0;
        let mut lines = Containerd(&k.containerd).bring_up(step, record, say)?;
        let start = |def: &ServiceDef, record: &mut Record| start(step, def, false, record);
        lines.extend(kubeadm::bring_up(step, k, record, say, &start)?);
        Ok(lines)
    }
}

/// The real path of `logical` under `root`, as text.
fn real(root: &Path, logical: &str) -> String {
    resolve(root, logical).to_string_lossy().into_owned()
}

/// Starts `def`, restarting it when `restart` (its config changed) and it already runs.
fn start(
    step: &EngineStep<'_>,
    def: &ServiceDef,
    restart: bool,
    record: &mut Record,
) -> Result<StartedService> {
    if restart
        && step.mode == ServiceMode::Daemon
        && def.daemon.is_running(step.root, step.host)?.is_some()
    {
        def.daemon.stop(step.root, step.host, STOP_TIMEOUT)?;
    }
    let files = def.files();
    let ahead: Vec<(&str, PathKind)> = files.iter().map(|f| (f.as_str(), PathKind::File)).collect();
    record.note_ahead(step.root, &ahead)?;
    let started = start_service(step.root, def, step.mode, step.host)?;
    if restart && !started.started && step.mode == ServiceMode::Systemd {
        systemctl(step.host, &["restart", &def.unit])?;
    }
    record.note_paths(started.records.clone());
    record.note_service(started.service.clone());
    record.save(step.root)?;
    Ok(started)
}

/// How a started service runs and where its output goes, for messages.
fn how(step: &EngineStep<'_>, s: &StartedService) -> (String, String) {
    match &s.service.supervision {
        Supervision::Daemon(d) => (
            format!("daemon pid {}", s.pid.unwrap_or_default()),
            resolve(step.root, &d.log_file).display().to_string(),
        ),
        Supervision::Systemd { unit } => (
            format!("systemd unit {unit}"),
            format!("journalctl -u {unit}"),
        ),
    }
}

fn alive<'a>(step: &'a EngineStep<'_>, s: &'a StartedService) -> impl Fn() -> bool + 'a {
    move || match &s.service.supervision {
        Supervision::Daemon(d) => d.is_running(step.root, step.host).ok().flatten().is_some(),
        Supervision::Systemd { .. } => true,
    }
}
