//! The `kubeadm` engine: the containerd engine first (the CRI runtime, with every captured
//! image, the control-plane images among them, pulled into `k8s.io`), then the kubelet as a
//! service and `kubeadm init` with the user's config merged with ours; install waits until
//! the node is Ready and saves the join command for more nodes.
//!
//! How kubeadm is run (kubeadm's documented CLI):
//!
//! ```text
//! kubeadm init --config /etc/kubernetes/airlock-<name>-kubeadm.yaml [--rootfs ROOT]
//! kubeadm token create --print-join-command [--rootfs ROOT]
//! kubeadm reset --force [--rootfs ROOT]                        (uninstall)
//! ```
//!
//! The config is the user's YAML documents with `nodeRegistration.criSocket` of the
//! InitConfiguration set to `unix:///run/containerd/containerd.sock` (our containerd) and the
//! ClusterConfiguration's `kubernetesVersion` set to the engine's; missing documents are
//! added, every other field is kept ([`merge_config`]).
//!
//! `--root DIR` other than `/`: kubeadm's global `--rootfs DIR` ("the path to the 'real'
//! host root filesystem"; kubeadm chroots into it before anything else), so its
//! `/etc/kubernetes`, `/var/lib/etcd` and `/var/lib/kubelet` and the paths in the config are
//! the root's. The kubelet has no such flag: it gets root-prefixed `--config`,
//! `--kubeconfig`, `--bootstrap-kubeconfig`, `--root-dir`, `--cert-dir` and
//! `--container-runtime-endpoint`, but the paths kubeadm writes *into* its config.yaml
//! (static pod folder, client CA) are the chroot's, so a real cluster comes up at `--root /`
//! only; another root stages the files and is what the tests run, against fakes.
//!
//! Supervision: where systemd runs the root (`/`), the kubelet unit and kubeadm's drop-in
//! (`kubelet.service`, `kubelet.service.d/10-kubeadm.conf`, as the Kubernetes packages
//! install them) are written and enabled, and `kubeadm init` (re)starts the kubelet itself.
//! Elsewhere the kubelet is a supervised daemon, which cannot start before its config
//! exists: `kubeadm init phase kubelet-start` writes it, the daemon starts, then `kubeadm
//! init --ignore-preflight-errors=Port-10250` (the port our kubelet holds) runs the rest.
//!
//! No kubeadm can be downloaded in CI: the tests run these steps against fakes
//! (`fixtures/kubeadm/`) that check flags, config fields and the socket the way kubeadm
//! and the kubelet document them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_payload::KubeadmEngine;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use super::containerd::SOCKET;
use super::fsutil::{resolve, write_atomic, PathKind};
use super::host::{Host, RunEnd, RunSpec};
use super::record::Record;
use super::service::{Daemon, ServiceDef, ServiceMode};
use super::{Error, Result, STATE_DIR};

/// The admin kubeconfig `kubeadm init` writes, inside the root.
pub const KUBECONFIG: &str = "/etc/kubernetes/admin.conf";
/// The kubelet's config file kubeadm writes, inside the root.
pub const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
/// The kubelet unit, as the Kubernetes packages name it (kubeadm restarts `kubelet`).
pub const KUBELET_UNIT: &str = "kubelet.service";
/// kubeadm's drop-in for the kubelet unit.
pub const KUBELET_DROPIN: &str = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf";
/// Folders kubeadm and the kubelet fill: ours to remove on uninstall when they did not
/// exist before.
pub const TREES: [&str; 5] = [
    "/etc/kubernetes",
    "/var/lib/kubelet",
    "/var/lib/etcd",
    "/var/log/pods",
    "/var/log/containers",
];
/// How long one kubeadm command may run.
pub const KUBEADM_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The kubeadm API version of documents we add when the user's config has none.
const DEFAULT_API: &str = "kubeadm.k8s.io/v1beta4";

/// Our kubeadm config (the user's, merged), inside the root.
pub fn config_path(name: &str) -> String {
    format!("/etc/kubernetes/airlock-{name}-kubeadm.yaml")
}

/// The saved join command, inside the root (mode 0600: it holds a bootstrap token).
pub fn join_path(name: &str) -> String {
    format!("{STATE_DIR}/{name}-join-command")
}

/// What uninstall needs to run `kubeadm reset`, inside the root.
pub fn reset_path(name: &str) -> String {
    format!("{STATE_DIR}/{name}-kubeadm-reset.json")
}

/// kubeadm's output, inside the root.
pub fn log_path(name: &str) -> String {
    format!("{STATE_DIR}/{name}-kubeadm.log")
}

/// The CRI socket as kubeadm sees it (in the chroot of `--rootfs`, or at `/`).
pub fn cri_socket() -> String {
    format!("unix://{SOCKET}")
}

/// `kubeadm` arguments `args` plus `--rootfs ROOT` when the root is not `/`.
pub fn kubeadm_args(root: &Path, args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if root != Path::new("/") {
        out.push("--rootfs".to_owned());
        out.push(root.to_string_lossy().into_owned());
    }
    out
}

/// Why a kubeadm config cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A document is not YAML.
    #[error("document {0} of the kubeadm config is not YAML: {1}")]
    Yaml(usize, #[source] serde_yaml_ng::Error),
    /// A document is not a map, or a field we set is not a map.
    #[error("document {0} of the kubeadm config: {1}")]
    Shape(usize, &'static str),
}

/// The user's kubeadm config `user` (YAML documents) with `criSocket` and
/// `kubernetesVersion` set (see the module docs); other fields are kept as they are.
pub fn merge_config(
    user: Option<&str>,
    kubernetes_version: &str,
    cri_socket: &str,
) -> std::result::Result<String, ConfigError> {
    let mut docs: Vec<Value> = Vec::new();
    for (n, doc) in serde_yaml_ng::Deserializer::from_str(user.unwrap_or("")).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| ConfigError::Yaml(n + 1, e))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    let kind_of = |v: &Value| v.get("kind").and_then(Value::as_str).map(str::to_owned);
    let api = docs
        .iter()
        .find(|d| {
            d.get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|a| a.starts_with("kubeadm.k8s.io/"))
        })
        .and_then(|d| d.get("apiVersion").and_then(Value::as_str))
        .unwrap_or(DEFAULT_API)
        .to_owned();
    for kind in ["InitConfiguration", "ClusterConfiguration"] {
        if !docs.iter().any(|d| kind_of(d).as_deref() == Some(kind)) {
            let mut m = Mapping::new();
            m.insert("apiVersion".into(), api.clone().into());
            m.insert("kind".into(), kind.into());
            let at = if kind == "InitConfiguration" { 0 } else { 1 };
            docs.insert(at.min(docs.len()), Value::Mapping(m));
        }
    }
    for (n, doc) in docs.iter_mut().enumerate() {
        let kind = kind_of(doc);
        let map = doc
            .as_mapping_mut()
            .ok_or(ConfigError::Shape(n + 1, "not a map"))?;
        match kind.as_deref() {
            Some("InitConfiguration") => {
                let reg = map
                    .entry("nodeRegistration".into())
                    .or_insert_with(|| Value::Mapping(Mapping::new()));
                let reg = reg
                    .as_mapping_mut()
                    .ok_or(ConfigError::Shape(n + 1, "nodeRegistration is not a map"))?;
                reg.insert("criSocket".into(), cri_socket.into());
            }
            Some("ClusterConfiguration") => {
                map.insert("kubernetesVersion".into(), kubernetes_version.into());
            }
            _ => {}
        }
    }
    let mut out =
        String::from("# Written by airlock: the spec's kubeadm config with our criSocket.\n");
    for (n, doc) in docs.iter().enumerate() {
        if n > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml_ng::to_string(doc).map_err(|e| ConfigError::Yaml(n + 1, e))?);
    }
    Ok(out)
}

/// A payload path as a real path under `root`.
fn program(root: &Path, payload_path: &str) -> PathBuf {
    resolve(root, &format!("/{payload_path}"))
}

/// The kubelet's command line (program first): kubeadm's usual flags, every path under the
/// root.
pub fn kubelet_command(root: &Path, engine: &KubeadmEngine) -> Vec<String> {
    let real = |l: &str| resolve(root, l).to_string_lossy().into_owned();
    vec![
        program(root, &engine.kubelet)
            .to_string_lossy()
            .into_owned(),
        format!(
            "--bootstrap-kubeconfig={}",
            real("/etc/kubernetes/bootstrap-kubelet.conf")
        ),
        format!("--kubeconfig={}", real("/etc/kubernetes/kubelet.conf")),
        format!("--config={}", real(KUBELET_CONFIG)),
        format!("--container-runtime-endpoint=unix://{}", real(SOCKET)),
        format!("--root-dir={}", real("/var/lib/kubelet")),
        format!("--cert-dir={}", real("/var/lib/kubelet/pki")),
    ]
}

/// The kubelet unit the Kubernetes packages install (`kubelet.service`), for the payload's
/// kubelet.
pub fn kubelet_unit(root: &Path, name: &str, version: &str, engine: &KubeadmEngine) -> String {
    format!(
        "# Written by airlock for {name} {version}; `uninstall` removes it.\n\
         [Unit]\n\
         Description=kubelet: The Kubernetes Node Agent ({name} {version}, airlock)\n\
         Documentation=https://kubernetes.io/docs/\n\
         After=local-fs.target {}\n\
         \n\
         [Service]\n\
         ExecStart={}\n\
         Restart=always\n\
         StartLimitInterval=0\n\
         RestartSec=10\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        super::containerd::unit_name(name),
        program(root, &engine.kubelet).display()
    )
}

/// kubeadm's drop-in for the kubelet unit (`10-kubeadm.conf` of the Kubernetes packages),
/// with our socket.
pub fn kubelet_dropin(root: &Path, engine: &KubeadmEngine) -> String {
    let cmd = kubelet_command(root, engine);
    format!(
        "# Written by airlock; `uninstall` removes it.\n\
         [Service]\n\
         Environment=\"KUBELET_KUBECONFIG_ARGS={} {}\"\n\
         Environment=\"KUBELET_CONFIG_ARGS={} {}\"\n\
         EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env\n\
         EnvironmentFile=-/etc/default/kubelet\n\
         ExecStart=\n\
         ExecStart={} $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS\n",
        cmd[1], cmd[2], cmd[3], cmd[4], cmd[0]
    )
}

/// The kubelet as a service of installer `name`.
pub fn kubelet_service(
    root: &Path,
    name: &str,
    version: &str,
    engine: &KubeadmEngine,
) -> ServiceDef {
    let cmd = kubelet_command(root, engine);
    ServiceDef {
        name: "kubelet".to_owned(),
        unit: KUBELET_UNIT.to_owned(),
        unit_text: kubelet_unit(root, name, version, engine),
        daemon: Daemon::new(&format!("{name}-kubelet"), &cmd[0], cmd[1..].to_vec()),
        listen: None,
        companions: Vec::new(),
    }
}

/// What uninstall runs before stopping the services: `kubeadm reset --force`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetCommand {
    /// The kubeadm binary (real path).
    pub kubeadm: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

impl ResetCommand {
    /// `kubeadm reset --force` for the engine under `root`.
    pub fn new(root: &Path, engine: &KubeadmEngine) -> ResetCommand {
        ResetCommand {
            kubeadm: program(root, &engine.kubeadm),
            args: kubeadm_args(root, &["reset", "--force"]),
        }
    }
}

fn engine_err(what: String) -> Error {
    Error::Engine {
        engine: "kubeadm",
        what,
    }
}

/// Runs kubeadm with `args`, output appended to the kubeadm log.
pub fn run_kubeadm(
    root: &Path,
    name: &str,
    engine: &KubeadmEngine,
    args: &[String],
    host: &dyn Host,
) -> Result<()> {
    let kubeadm = program(root, &engine.kubeadm);
    let log = resolve(root, &log_path(name));
    let end = host
        .run_logged(&RunSpec {
            program: &kubeadm,
            args,
            env: &[],
            cwd: Path::new("/"),
            log: &log,
            timeout: KUBEADM_TIMEOUT,
        })
        .map_err(|e| engine_err(format!("failed to run {}: {e}", kubeadm.display())))?;
    if end == RunEnd::Exited(0) {
        return Ok(());
    }
    Err(engine_err(format!(
        "`kubeadm {}` failed ({}); look at {}:\n{}",
        args.join(" "),
        super::hooks::describe_end(end, KUBEADM_TIMEOUT),
        log.display(),
        super::hooks::tail(&log, 20)
    )))
}

/// Waits until `kubectl get nodes` lists nodes that are all Ready.
pub fn wait_ready(
    root: &Path,
    engine: &KubeadmEngine,
    alive: &dyn Fn() -> bool,
    host: &dyn Host,
) -> Result<Duration> {
    let timeout = Duration::from_secs(engine.ready_timeout_secs);
    let kubectl = program(root, &engine.kubectl);
    let kubeconfig = resolve(root, KUBECONFIG);
    let (kubectl_s, kc) = (kubectl.to_string_lossy(), kubeconfig.to_string_lossy());
    let jsonpath = "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}";
    let args = ["--kubeconfig", &kc, "get", "nodes", "-o", jsonpath];
    let start = Instant::now();
    let mut last;
    loop {
        last = match host.run(&kubectl_s, &args) {
            Ok(out) if out.success() => match nodes_ready(&out.stdout) {
                Ok(()) => return Ok(start.elapsed()),
                Err(why) => why,
            },
            Ok(out) => out.stderr.trim().to_owned(),
            Err(e) => e.to_string(),
        };
        if !alive() {
            last = format!("the kubelet exited; last answer: {last}");
            break;
        }
        if start.elapsed() >= timeout {
            break;
        }
        host.sleep(Duration::from_secs(1));
    }
    Err(engine_err(format!(
        "the node was not Ready within {} s ({last}); run `{} --kubeconfig {} get nodes,pods -A`",
        timeout.as_secs(),
        kubectl.display(),
        kubeconfig.display()
    )))
}

/// `Ok` when the `name=Status` lines name nodes that are all `True`.
fn nodes_ready(out: &str) -> std::result::Result<(), String> {
    let nodes: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .collect();
    if nodes.is_empty() {
        return Err("no node registered yet".to_owned());
    }
    let waiting: Vec<String> = nodes
        .iter()
        .filter(|(_, s)| *s != "True")
        .map(|(n, s)| {
            format!(
                "{n} is not Ready ({})",
                if s.is_empty() { "no condition" } else { s }
            )
        })
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(waiting.join(", "))
    }
}

/// `kubeadm token create --print-join-command`: the command that joins another node.
pub fn join_command(root: &Path, engine: &KubeadmEngine, host: &dyn Host) -> Result<String> {
    let kubeadm = program(root, &engine.kubeadm);
    let args = kubeadm_args(root, &["token", "create", "--print-join-command"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = host
        .run(&kubeadm.to_string_lossy(), &args)
        .map_err(|e| engine_err(format!("failed to run {}: {e}", kubeadm.display())))?;
    let line = out
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kubeadm join "));
    match line {
        Some(l) if out.success() => Ok(l.to_owned()),
        _ => Err(engine_err(format!(
            "`kubeadm {}` printed no join command: {}",
            args.join(" "),
            out.stderr.trim()
        ))),
    }
}

/// Writes what uninstall needs to reset kubeadm (noted in the record first).
pub fn save_reset(
    root: &Path,
    name: &str,
    engine: &KubeadmEngine,
    record: &mut Record,
) -> Result<()> {
    let path = reset_path(name);
    record.note_ahead(root, &[(path.as_str(), PathKind::File)])?;
    let json = serde_json::to_vec_pretty(&ResetCommand::new(root, engine)).expect("serializes");
    let written = write_atomic(root, &path, &json, 0o600)?;
    record.note_paths(written.records);
    Ok(())
}

/// Saves the join command (mode 0600), noted in the record first.
pub fn save_join(root: &Path, name: &str, command: &str, record: &mut Record) -> Result<PathBuf> {
    let path = join_path(name);
    record.note_ahead(root, &[(path.as_str(), PathKind::File)])?;
    let written = write_atomic(root, &path, format!("{command}\n").as_bytes(), 0o600)?;
    record.note_paths(written.records);
    Ok(resolve(root, &path))
}

/// Uninstall's first step for a kubeadm node: `kubeadm reset --force` while containerd and
/// the kubelet still run (it removes the cluster's containers through the CRI). Returns a
/// line for the output; `None` when the install had no kubeadm engine.
pub fn reset_before_undo(root: &Path, name: &str, host: &dyn Host) -> Result<Option<String>> {
    let path = resolve(root, &reset_path(name));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::fs("read the kubeadm reset command", path)(e)),
    };
    let cmd: ResetCommand = serde_json::from_slice(&bytes)
        .map_err(|e| engine_err(format!("{} is not a reset command: {e}", path.display())))?;
    if !cmd.kubeadm.exists() {
        return Ok(Some(format!(
            "kubeadm: {} is gone, reset skipped",
            cmd.kubeadm.display()
        )));
    }
    let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
    let out = host
        .run(&cmd.kubeadm.to_string_lossy(), &args)
        .map_err(|e| engine_err(format!("failed to run {}: {e}", cmd.kubeadm.display())))?;
    if !out.success() {
        return Err(engine_err(format!(
            "`{} {}` failed: {}",
            cmd.kubeadm.display(),
            cmd.args.join(" "),
            out.stderr.trim()
        )));
    }
    Ok(Some(format!(
        "kubeadm: reset ({} {})",
        cmd.kubeadm.display(),
        cmd.args.join(" ")
    )))
}

/// Brings kubeadm up once containerd runs (see the module docs). Returns summary lines.
pub fn bring_up(
    step: &super::engine::EngineStep<'_>,
    engine: &KubeadmEngine,
    record: &mut Record,
    say: super::engine::SayLine<'_>,
    start: &dyn Fn(&ServiceDef, &mut Record) -> Result<super::service::StartedService>,
) -> crate::Result<Vec<String>> {
    let (root, name, version, host) = (step.root, step.name, step.version, step.host);
    let mut ahead: Vec<(&str, PathKind)> = TREES.iter().map(|t| (*t, PathKind::Tree)).collect();
    let config = config_path(name);
    let log = log_path(name);
    ahead.push((config.as_str(), PathKind::File));
    ahead.push((log.as_str(), PathKind::File));
    if step.mode == ServiceMode::Systemd {
        ahead.push((KUBELET_DROPIN, PathKind::File));
    }
    record.note_ahead(root, &ahead)?;
    save_reset(root, name, engine, record)?;
    let text = merge_config(
        engine.config.as_deref(),
        &engine.kubernetes_version,
        &cri_socket(),
    )
    .map_err(|e| engine_err(e.to_string()))?;
    let written = write_atomic(root, &config, text.as_bytes(), 0o600)?;
    record.note_paths(written.records);
    record.save(root)?;
    say(format!(
        "kubeadm: config {} (criSocket {}, kubernetesVersion {})",
        resolve(root, &config).display(),
        cri_socket(),
        engine.kubernetes_version
    ))?;

    let initialised = resolve(root, KUBECONFIG).exists();
    let def = kubelet_service(root, name, version, engine);
    let started;
    if step.mode == ServiceMode::Systemd {
        let dropin = kubelet_dropin(root, engine);
        let written = write_atomic(root, KUBELET_DROPIN, dropin.as_bytes(), 0o644)?;
        record.note_paths(written.records);
        started = start(&def, record)?;
        if !initialised {
            run_kubeadm(
                root,
                name,
                engine,
                &kubeadm_args(root, &["init", "--config", &config]),
                host,
            )?;
        }
    } else {
        if !initialised {
            let args = kubeadm_args(
                root,
                &["init", "phase", "kubelet-start", "--config", &config],
            );
            run_kubeadm(root, name, engine, &args, host)?;
        }
        started = start(&def, record)?;
        if !initialised {
            let args = kubeadm_args(
                root,
                &[
                    "init",
                    "--config",
                    &config,
                    "--ignore-preflight-errors=Port-10250",
                ],
            );
            run_kubeadm(root, name, engine, &args, host)?;
        }
    }
    let how = match &started.service.supervision {
        super::service::Supervision::Daemon(_) => {
            format!("daemon pid {}", started.pid.unwrap_or_default())
        }
        super::service::Supervision::Systemd { unit } => format!("systemd unit {unit}"),
    };
    say(format!(
        "kubeadm: {} (kubelet {} {how}; log {})",
        if initialised {
            "already initialised, init skipped"
        } else {
            "init done"
        },
        if started.started {
            "started as"
        } else {
            "already running as"
        },
        resolve(root, &log).display()
    ))?;
    let daemon = def.daemon.clone();
    let mode = step.mode;
    let alive = move || {
        mode == ServiceMode::Systemd || daemon.is_running(root, host).ok().flatten().is_some()
    };
    let took = wait_ready(root, engine, &alive, host)?;
    say(format!("kubeadm: node Ready after {} s", took.as_secs()))?;
    let join = join_command(root, engine, host)?;
    let saved = save_join(root, name, &join, record)?;
    record.save(root)?;
    let kubeconfig = resolve(root, KUBECONFIG);
    Ok(vec![
        format!(
            "kubeadm: Kubernetes {} initialised, kubeconfig {}",
            engine.kubernetes_version,
            kubeconfig.display()
        ),
        format!(
            "  try: {} --kubeconfig {} get nodes",
            program(root, &engine.kubectl).display(),
            kubeconfig.display()
        ),
        format!(
            "  join more nodes with (saved in {}): {join}",
            saved.display()
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_config_gets_our_socket_and_version_and_keeps_its_other_fields() {
        let user = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\nnodeRegistration:\n  name: node-a\n  criSocket: unix:///var/run/crio/crio.sock\n---\napiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: 10.244.0.0/16\n---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n";
        let text = merge_config(
            Some(user),
            "v1.31.4",
            "unix:///run/containerd/containerd.sock",
        )
        .unwrap();
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 3, "{text}");
        assert_eq!(
            docs[0]["nodeRegistration"]["criSocket"],
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(docs[0]["nodeRegistration"]["name"], "node-a");
        assert_eq!(docs[1]["kubernetesVersion"], "v1.31.4");
        assert_eq!(docs[1]["networking"]["podSubnet"], "10.244.0.0/16");
        assert_eq!(docs[2]["cgroupDriver"], "cgroupfs");
    }

    #[test]
    fn without_a_config_both_documents_are_written_in_v1beta4() {
        let text = merge_config(None, "v1.31.4", "unix:///s").unwrap();
        assert!(text.contains("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  criSocket: unix:///s\n"), "{text}");
        assert!(
            text.contains("kind: ClusterConfiguration\nkubernetesVersion: v1.31.4\n"),
            "{text}"
        );
        assert!(matches!(
            merge_config(Some("- a\n"), "v1", "s"),
            Err(ConfigError::Shape(_, "not a map"))
        ));
    }

    #[test]
    fn kubeadm_gets_rootfs_under_another_root_and_the_kubelet_prefixed_paths() {
        assert_eq!(
            kubeadm_args(Path::new("/"), &["reset", "--force"]),
            ["reset", "--force"]
        );
        assert_eq!(
            kubeadm_args(Path::new("/r"), &["reset", "--force"]),
            ["reset", "--force", "--rootfs", "/r"]
        );
        let engine = KubeadmEngine {
            containerd: airlock_payload::ContainerdEngine {
                containerd: "usr/bin/containerd".into(),
                shim: "usr/bin/containerd-shim-runc-v2".into(),
                runc: "usr/bin/runc".into(),
                ctr: "usr/bin/ctr".into(),
                namespace: "k8s.io".into(),
                pull: true,
                sandbox_image: None,
            },
            kubeadm: "usr/bin/kubeadm".into(),
            kubelet: "usr/bin/kubelet".into(),
            kubectl: "usr/bin/kubectl".into(),
            kubernetes_version: "v1.31.4".into(),
            config: None,
            images: vec![],
            ready_timeout_secs: 5,
        };
        let cmd = kubelet_command(Path::new("/r"), &engine);
        assert_eq!(cmd[0], "/r/usr/bin/kubelet");
        assert!(cmd.contains(
            &"--container-runtime-endpoint=unix:///r/run/containerd/containerd.sock".to_owned()
        ));
        assert!(cmd.contains(&"--config=/r/var/lib/kubelet/config.yaml".to_owned()));
        let dropin = kubelet_dropin(Path::new("/"), &engine);
        assert!(
            dropin.contains("\nExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS"),
            "{dropin}"
        );
        assert!(dropin.contains("EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env"));
        let unit = kubelet_unit(Path::new("/"), "edge", "1", &engine);
        assert!(
            unit.contains("\nExecStart=/usr/bin/kubelet\nRestart=always\n"),
            "{unit}"
        );
    }

    #[test]
    fn readiness_needs_every_node_true() {
        assert!(nodes_ready("n1=True\n").is_ok());
        assert_eq!(nodes_ready("").unwrap_err(), "no node registered yet");
        assert_eq!(
            nodes_ready("n1=True\nn2=False\n").unwrap_err(),
            "n2 is not Ready (False)"
        );
    }
}
