//! The `k3s` engine: the k3s binary from the payload runs `k3s server` as a service or
//! daemon, pulling every image through the `registries.yaml` the mirror step wrote (a
//! mirror per upstream host and `"*"`, so k3s's own system images come from the installer
//! too); manifests named by the spec are copied into its auto-deploy folder; install waits
//! until `k3s kubectl get nodes` says every node is Ready.
//!
//! How k3s is started (k3s's documented CLI and environment):
//!
//! ```text
//! K3S_KUBECONFIG_OUTPUT=<root>/etc/rancher/k3s/k3s.yaml K3S_KUBECONFIG_MODE=600 \
//! k3s server --data-dir <root>/var/lib/rancher/k3s \
//!     --private-registry <root>/etc/rancher/k3s/registries.yaml \
//!     --disable-default-registry-endpoint [spec args...]
//! ```
//!
//! `--disable-default-registry-endpoint` (k3s v1.26.13, v1.27.10, v1.28.6, v1.29.1 and
//! later) keeps k3s from trying the real upstream after the mirror: there is no network.
//! The tests run these steps against a fake `k3s` (`fixtures/k3s/fake-k3s`) that checks
//! the flags, environment and `registries.yaml` the way k3s documents them; no real k3s
//! runs in CI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_payload::{EntryKind, Index, K3sEngine};

use super::fsutil::{resolve, write_atomic, PathKind};
use super::host::Host;
use super::mirror::K3S_REGISTRIES;
use super::record::Record;
use super::service::{unit_text, Daemon, ServiceDef, UnitSpec};
use super::{Error, Result};

/// k3s's data folder, inside the root.
pub const DATA_DIR: &str = "/var/lib/rancher/k3s";
/// The auto-deploy folder k3s applies manifests from, inside the root.
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
/// The kubeconfig k3s writes, inside the root.
pub const KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
/// Folders k3s creates outside its data folder (kubelet state, pod logs, its containerd
/// state): ours to remove on uninstall when they did not exist before.
pub const RUNTIME_TREES: [&str; 4] = [DATA_DIR, "/run/k3s", "/var/lib/kubelet", "/var/log/pods"];

/// The unit name for installer `name`.
pub fn unit_name(name: &str) -> String {
    format!("airlock-k3s-{name}.service")
}

fn program(root: &Path, engine: &K3sEngine) -> PathBuf {
    resolve(root, &format!("/{}", engine.binary))
}

/// The `k3s server` command line (program first) and its environment.
pub fn command(root: &Path, engine: &K3sEngine) -> (Vec<String>, Vec<(String, String)>) {
    let real = |l: &str| resolve(root, l).to_string_lossy().into_owned();
    let mut exec = vec![
        program(root, engine).to_string_lossy().into_owned(),
        "server".to_owned(),
        "--data-dir".to_owned(),
        real(DATA_DIR),
        "--private-registry".to_owned(),
        real(K3S_REGISTRIES),
        "--disable-default-registry-endpoint".to_owned(),
    ];
    exec.extend(engine.args.iter().cloned());
    let bin = program(root, engine);
    let bin_dir = bin.parent().unwrap_or(Path::new("/"));
    let env = vec![
        ("K3S_KUBECONFIG_OUTPUT".to_owned(), real(KUBECONFIG)),
        ("K3S_KUBECONFIG_MODE".to_owned(), "600".to_owned()),
        (
            "PATH".to_owned(),
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                bin_dir.display()
            ),
        ),
    ];
    (exec, env)
}

/// k3s as a service of installer `name` (its unit mirrors the one k3s's install script
/// writes: `Type=notify`, `KillMode=process`, `Delegate=yes`).
pub fn service(root: &Path, name: &str, version: &str, engine: &K3sEngine) -> ServiceDef {
    let (exec, env) = command(root, engine);
    let unit_text = unit_text(
        name,
        version,
        &UnitSpec {
            description: format!("k3s for {name} {version} (airlock)"),
            exec: exec.clone(),
            env: &env,
            after: &format!(
                "local-fs.target {}",
                super::service::registry_unit_name(name)
            ),
            before: "",
            service_type: "notify",
            extra: "Delegate=yes\nKillMode=process\nLimitNOFILE=1048576\nLimitNPROC=infinity\n\
                    LimitCORE=infinity\nTasksMax=infinity\nTimeoutStartSec=0\n",
        },
    );
    ServiceDef {
        name: "k3s".to_owned(),
        unit: unit_name(name),
        unit_text,
        daemon: Daemon::new(
            &format!("{name}-k3s"),
            program(root, engine),
            exec[1..].to_vec(),
        )
        .with_env(env),
        listen: None,
        // Its containerd shims run from under the data folder and outlive it.
        companions: vec![DATA_DIR.to_owned()],
    }
}

/// Copies every file under the engine's `manifests` payload folder (already laid out under
/// the root) into [`MANIFESTS_DIR`], keeping relative paths; noted in the record first.
/// Returns how many files changed.
pub fn copy_manifests(
    root: &Path,
    engine: &K3sEngine,
    index: &Index,
    record: &mut Record,
) -> Result<(usize, usize)> {
    let Some(dir) = &engine.manifests else {
        return Ok((0, 0));
    };
    let prefix = format!("{dir}/");
    let files: Vec<(String, String)> = index
        .entries()
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. } | EntryKind::Hardlink { .. }))
        .filter_map(|e| {
            let rel = e.path.as_str().strip_prefix(&prefix)?;
            Some((
                format!("/{}", e.path.as_str()),
                format!("{MANIFESTS_DIR}/{rel}"),
            ))
        })
        .collect();
    let targets: Vec<(&str, PathKind)> = files
        .iter()
        .map(|(_, to)| (to.as_str(), PathKind::File))
        .collect();
    record.note_ahead(root, &targets)?;
    let mut changed = 0;
    for (from, to) in &files {
        let src = resolve(root, from);
        let bytes = std::fs::read(&src).map_err(Error::fs("read the manifest", &src))?;
        if write_atomic(root, to, &bytes, 0o600)?.changed {
            changed += 1;
        }
    }
    Ok((files.len(), changed))
}

/// Waits until `k3s kubectl get nodes` lists at least one node and every node is Ready.
pub fn wait_ready(
    root: &Path,
    engine: &K3sEngine,
    alive: &dyn Fn() -> bool,
    log: &str,
    host: &dyn Host,
) -> Result<Duration> {
    let timeout = Duration::from_secs(engine.ready_timeout_secs);
    let k3s = program(root, engine);
    let kubeconfig = resolve(root, KUBECONFIG);
    let (k3s_s, kc) = (k3s.to_string_lossy(), kubeconfig.to_string_lossy());
    let args = [
        "kubectl",
        "--kubeconfig",
        &kc,
        "get",
        "nodes",
        "--no-headers",
    ];
    let start = Instant::now();
    let mut last;
    loop {
        last = match host.run(&k3s_s, &args) {
            Ok(out) if out.success() => match nodes_ready(&out.stdout) {
                Ok(()) => return Ok(start.elapsed()),
                Err(why) => why.to_string(),
            },
            Ok(out) => out.stderr.trim().to_owned(),
            Err(e) => e.to_string(),
        };
        if !alive() {
            last = format!("k3s exited; last answer: {last}");
            break;
        }
        if start.elapsed() >= timeout {
            break;
        }
        host.sleep(Duration::from_secs(1));
    }
    Err(Error::Engine {
        engine: "k3s",
        what: format!(
            "the node was not Ready within {} s ({last}); look at {log} and run `{} kubectl \
             --kubeconfig {} get nodes,pods -A` (images missing from the installer show as \
             ImagePullBackOff)",
            timeout.as_secs(),
            k3s.display(),
            kubeconfig.display()
        ),
    })
}

/// Why the cluster is not Ready yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NotReady {
    /// `get nodes` listed no node.
    #[error("no node registered yet")]
    NoNode,
    /// Nodes that are not `Ready`, as "NAME is STATUS".
    #[error("{}", .0.join(", "))]
    Waiting(Vec<String>),
}

/// `Ok` when the `get nodes --no-headers` output names nodes that are all `Ready`.
fn nodes_ready(out: &str) -> std::result::Result<(), NotReady> {
    let nodes: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?, w.next()?))
        })
        .collect();
    if nodes.is_empty() {
        return Err(NotReady::NoNode);
    }
    let waiting: Vec<String> = nodes
        .iter()
        .filter(|(_, status)| *status != "Ready")
        .map(|(n, s)| format!("{n} is {s}"))
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(NotReady::Waiting(waiting))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> K3sEngine {
        K3sEngine {
            binary: "usr/local/bin/k3s".into(),
            manifests: None,
            args: vec!["--disable=traefik".into()],
            ready_timeout_secs: 5,
        }
    }

    #[test]
    fn k3s_gets_its_data_dir_registries_and_kubeconfig_under_the_root() {
        let (exec, env) = command(Path::new("/r"), &engine());
        assert_eq!(
            exec,
            [
                "/r/usr/local/bin/k3s",
                "server",
                "--data-dir",
                "/r/var/lib/rancher/k3s",
                "--private-registry",
                "/r/etc/rancher/k3s/registries.yaml",
                "--disable-default-registry-endpoint",
                "--disable=traefik"
            ]
        );
        assert!(env.contains(&(
            "K3S_KUBECONFIG_OUTPUT".into(),
            "/r/etc/rancher/k3s/k3s.yaml".into()
        )));
        let def = service(Path::new("/r"), "edge", "1", &engine());
        assert!(def.unit_text.contains("\nType=notify\n"));
        assert!(def
            .unit_text
            .contains("\nExecStart=/r/usr/local/bin/k3s server --data-dir"));
        assert_eq!(def.daemon.args[0], "server");
    }

    #[test]
    fn readiness_needs_every_node_ready() {
        assert!(nodes_ready("n1   Ready   control-plane,master   1m   v1.30.4+k3s1\n").is_ok());
        assert_eq!(
            nodes_ready("").unwrap_err().to_string(),
            "no node registered yet"
        );
        assert_eq!(
            nodes_ready("n1 Ready x 1m v1\nn2 NotReady x 1m v1\n")
                .unwrap_err()
                .to_string(),
            "n2 is NotReady"
        );
    }
}
