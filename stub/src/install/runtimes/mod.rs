//! Mirror config for the runtimes that are not containerd or k3s: Docker Engine
//! ([`docker`]) and CRI-O/podman ([`podman`]), and the pull proxy's certificates that
//! Docker needs ([`proxy_files`]).
//!
//! [`plan`] turns the chosen runtimes, the upstream hosts and the addresses into the files
//! to write (path inside the root, content, mode); the caller notes them in the install
//! record and writes them atomically like every other mirror file. `daemon.json` is the
//! exception: it belongs to the user, so it is merged ([`docker::merge_daemon_json`]) and
//! never recorded as ours; [`unmerge_docker`] takes our values out again on uninstall.

pub mod docker;
pub mod podman;

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use crate::install::fsutil::resolve;
use crate::intercept::{leaf_paths, Authority, CaError, CertPem};

/// What can go wrong while planning or writing runtime config.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// `daemon.json` is not JSON; nothing was changed.
    #[error("{path} is not valid JSON (line {line}, column {column}): fix or remove it, nothing was changed")]
    DaemonJsonInvalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's message.
        reason: String,
    },
    /// `daemon.json` is JSON of an unexpected shape.
    #[error("{path}: {what}; nothing was changed")]
    DaemonJsonShape {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A stored proxy certificate or key could not be read or used.
    #[error("failed to use the pull proxy's CA in {path} (remove the folder to make a new one)")]
    Ca {
        /// The proxy folder.
        path: String,
        /// The cause.
        #[source]
        source: CaError,
    },
    /// A file could not be read.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--mirror-for` named something unknown.
    #[error("unknown runtime {0:?} in --mirror-for (expected containerd, k3s, docker, podman)")]
    UnknownRuntime(String),
}

/// A runtime `install` can write mirror config for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runtime {
    /// containerd `certs.d` (also k0s, kubeadm).
    Containerd,
    /// k3s `registries.yaml`.
    K3s,
    /// Docker Engine: `daemon.json`, `certs.d`, the proxy drop-in.
    Docker,
    /// podman and CRI-O: `registries.conf.d`.
    Podman,
}

impl Runtime {
    /// Its name on the command line and in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::K3s => "k3s",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

impl std::str::FromStr for Runtime {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Runtime, RuntimeError> {
        Ok(match s.trim() {
            "containerd" => Runtime::Containerd,
            "k3s" => Runtime::K3s,
            "docker" => Runtime::Docker,
            "podman" | "cri-o" | "crio" => Runtime::Podman,
            other => return Err(RuntimeError::UnknownRuntime(other.to_owned())),
        })
    }
}

/// The runtimes `install` configures without `--mirror-for`: containerd and k3s always (as
/// before), Docker when `<root>/etc/docker` exists or `dockerd` is on `path`, podman/CRI-O
/// when `<root>/etc/containers` exists or `podman` or `crio` is on `path`.
pub fn detect(root: &Path, path: Option<&str>) -> BTreeSet<Runtime> {
    let on_path = |prog: &str| {
        path.unwrap_or_default()
            .split(':')
            .filter(|d| !d.is_empty())
            .any(|d| Path::new(d).join(prog).is_file())
    };
    let mut out: BTreeSet<Runtime> = [Runtime::Containerd, Runtime::K3s].into();
    if resolve(root, "/etc/docker").is_dir() || on_path("dockerd") {
        out.insert(Runtime::Docker);
    }
    if resolve(root, "/etc/containers").is_dir() || on_path("podman") || on_path("crio") {
        out.insert(Runtime::Podman);
    }
    out
}

pub use crate::install::proxy_dir;

/// The `daemon.json` values an install added, kept for uninstall.
fn docker_keys_path(name: &str) -> String {
    format!("{}/daemon-json-values.json", proxy_dir(name))
}

/// A file to write: path inside the root, content, mode.
pub type PlannedFile = (String, String, u32);

fn read_opt(root: &Path, logical: &str) -> Result<Option<String>, RuntimeError> {
    let real = resolve(root, logical);
    match fs::read_to_string(&real) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RuntimeError::Read {
            path: real.display().to_string(),
            source,
        }),
    }
}

/// The proxy's CA and one leaf per host, reusing what an earlier run stored under `root`
/// (same CA, same leaves); a leaf is made only for a new host, or for all when the CA is
/// new. Returns the files (the CA key and leaf keys 0600) and the CA certificate.
pub fn proxy_files(
    root: &Path,
    name: &str,
    hosts: &BTreeSet<String>,
) -> Result<(Vec<PlannedFile>, String), RuntimeError> {
    let dir = proxy_dir(name);
    let ca_err = |source| RuntimeError::Ca {
        path: resolve(root, &dir).display().to_string(),
        source,
    };
    let (crt, key) = (format!("{dir}/ca.crt"), format!("{dir}/ca.key"));
    let (ca, fresh) = match (read_opt(root, &crt)?, read_opt(root, &key)?) {
        (Some(cert), Some(key)) => (
            Authority::load(name, &CertPem { cert, key }).map_err(ca_err)?,
            false,
        ),
        _ => (Authority::generate(name).map_err(ca_err)?, true),
    };
    let stored = ca.to_pem();
    let mut files = vec![(crt, stored.cert.clone(), 0o644), (key, stored.key, 0o600)];
    for h in hosts {
        let (leaf_crt, leaf_key) = leaf_paths(h);
        let (leaf_crt, leaf_key) = (format!("{dir}/{leaf_crt}"), format!("{dir}/{leaf_key}"));
        let kept = if fresh {
            None
        } else {
            match (read_opt(root, &leaf_crt)?, read_opt(root, &leaf_key)?) {
                (Some(cert), Some(key)) => Some(CertPem { cert, key }),
                _ => None,
            }
        };
        let leaf = match kept {
            Some(l) => l,
            None => ca.issue(h).map_err(ca_err)?,
        };
        files.push((leaf_crt, leaf.cert, 0o644));
        files.push((leaf_key, leaf.key, 0o600));
    }
    Ok((files, stored.cert))
}

/// Where things listen, for the runtime config.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// The registry (plain HTTP).
    pub registry: SocketAddr,
    /// The pull proxy (`HTTPS_PROXY`).
    pub proxy: SocketAddr,
}

/// The Docker and podman files for `hosts` under `root` (other drop-ins of
/// `docker.service` are read for their `NO_PROXY`). `daemon.json` is not in the list: see
/// [`merge_docker`].
pub fn plan(
    root: &Path,
    name: &str,
    runtimes: &BTreeSet<Runtime>,
    hosts: &BTreeSet<String>,
    addrs: Addresses,
) -> Result<Vec<PlannedFile>, RuntimeError> {
    let mut files = Vec::new();
    if runtimes.contains(&Runtime::Docker) {
        let (proxy, ca) = proxy_files(root, name, hosts)?;
        files.extend(proxy);
        let keys = docker::DaemonKeys::for_registry(addrs.registry);
        let values: serde_json::Map<String, serde_json::Value> = keys
            .entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
            .collect();
        files.push((
            docker_keys_path(name),
            format!("{}\n", serde_json::Value::Object(values)),
            0o644,
        ));
        files.extend(
            docker::certs_d_files(hosts, &ca, addrs.registry)
                .into_iter()
                .map(|(p, c)| (p, c, 0o644)),
        );
        let ours = docker::dropin_path(name);
        let mut others = Vec::new();
        if let Ok(rd) = fs::read_dir(resolve(root, docker::DROPIN_DIR)) {
            let mut names: Vec<_> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".conf") && format!("{}/{n}", docker::DROPIN_DIR) != ours)
                .collect();
            names.sort();
            for n in names {
                if let Some(t) = read_opt(root, &format!("{}/{n}", docker::DROPIN_DIR))? {
                    others.push(t);
                }
            }
        }
        let keep = docker::existing_no_proxy(others.iter().map(String::as_str));
        files.push((
            ours,
            docker::dropin(name, addrs.proxy, addrs.registry, &keep),
            0o644,
        ));
    }
    if runtimes.contains(&Runtime::Podman) {
        files.push((
            podman::dropin_path(name),
            podman::registries_conf(name, hosts, addrs.registry),
            0o644,
        ));
    }
    Ok(files)
}

/// The new text of `<root>/etc/docker/daemon.json` with the registry as a Docker Hub mirror
/// (`None`: it already has our values). Call before changing anything: a broken file stops
/// the install.
pub fn merge_docker(root: &Path, registry: SocketAddr) -> Result<Option<String>, RuntimeError> {
    let shown = resolve(root, docker::DAEMON_JSON).display().to_string();
    let existing = read_opt(root, docker::DAEMON_JSON)?;
    docker::merge_daemon_json(
        &shown,
        existing.as_deref(),
        &docker::DaemonKeys::for_registry(registry),
    )
}

/// Takes the values install `name` added out of `<root>/etc/docker/daemon.json` (as its
/// proxy folder remembers them). Returns what to do with the file, `Unchanged` when there
/// is nothing of ours.
pub fn unmerge_docker(root: &Path, name: &str) -> Result<docker::Unmerged, RuntimeError> {
    let Some(values) = read_opt(root, &docker_keys_path(name))? else {
        return Ok(docker::Unmerged::Unchanged);
    };
    let Some(existing) = read_opt(root, docker::DAEMON_JSON)? else {
        return Ok(docker::Unmerged::Unchanged);
    };
    let shown = resolve(root, docker::DAEMON_JSON).display().to_string();
    let values: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&values).unwrap_or_default();
    let entries = ["registry-mirrors", "insecure-registries"]
        .into_iter()
        .map(|k| {
            let v = values
                .get(k)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (k, v)
        })
        .collect();
    docker::unmerge_daemon_json(&shown, &existing, &docker::DaemonKeys { entries })
}

/// What the plan (and `--dry-run`) says about Docker and podman.
pub fn plan_lines(
    root: &Path,
    name: &str,
    runtimes: &BTreeSet<Runtime>,
    proxy: SocketAddr,
) -> Vec<String> {
    let shown = |l: &str| resolve(root, l).display().to_string();
    let mut lines = Vec::new();
    if runtimes.contains(&Runtime::Docker) {
        lines.push(format!(
            "docker: {} merged (registry-mirrors, insecure-registries), {}/<host>/ca.crt and \
             hosts.toml, drop-in {} (HTTPS_PROXY=http://{proxy}), pull proxy CA in {}",
            shown(docker::DAEMON_JSON),
            shown(docker::CERTS_DIR),
            shown(&docker::dropin_path(name)),
            shown(&proxy_dir(name)),
        ));
    }
    if runtimes.contains(&Runtime::Podman) {
        lines.push(format!(
            "podman/CRI-O: {}",
            shown(&podman::dropin_path(name))
        ));
    }
    lines
}

/// Restarts Docker so it reads the proxy drop-in (`--restart-runtimes`, systemd only).
pub fn restart_docker(host: &dyn crate::install::host::Host) -> crate::install::Result<()> {
    for args in [&["daemon-reload"][..], &["restart", "docker.service"][..]] {
        crate::install::service::systemctl(host, args)?;
    }
    Ok(())
}

/// The summary's lines for Docker and podman: what was configured, what is left to do.
pub fn summary_lines(
    root: &Path,
    name: &str,
    runtimes: &BTreeSet<Runtime>,
    addrs: Addresses,
    restarted: bool,
) -> Vec<String> {
    let shown = |l: &str| resolve(root, l).display().to_string();
    let mut lines = Vec::new();
    if runtimes.contains(&Runtime::Docker) {
        lines.push(format!(
            "docker: pull proxy on http://{} (CA {}/ca.crt, trusted only through {}), \
             registry-mirrors in {}, drop-in {}",
            addrs.proxy,
            shown(&proxy_dir(name)),
            shown(docker::CERTS_DIR),
            shown(docker::DAEMON_JSON),
            shown(&docker::dropin_path(name)),
        ));
        lines.push(if restarted {
            "docker: restarted (systemctl daemon-reload, restart docker.service)".to_owned()
        } else {
            "docker: to do: a running dockerd reads the drop-in only when restarted: \
             `systemctl daemon-reload && systemctl restart docker` (or install with \
             --restart-runtimes); with \"live-restore\": true in daemon.json running \
             containers survive the restart"
                .to_owned()
        });
    }
    if runtimes.contains(&Runtime::Podman) {
        lines.push(format!(
            "podman/CRI-O: {} (read at every pull: nothing to restart for podman; \
             `systemctl reload crio` for CRI-O)",
            shown(&podman::dropin_path(name))
        ));
    }
    lines
}

/// Uninstall's Docker step, before the record's files go: our values out of `daemon.json`.
/// Returns the line to print when this install had configured Docker.
pub fn uninstall_docker(root: &Path, name: &str) -> crate::install::Result<Option<String>> {
    if !resolve(root, &docker_keys_path(name)).exists() {
        return Ok(None);
    }
    let real = resolve(root, docker::DAEMON_JSON);
    let what = match unmerge_docker(root, name)? {
        docker::Unmerged::Unchanged => "daemon.json held none of our values",
        docker::Unmerged::Write(text) => {
            crate::install::fsutil::write_atomic(
                root,
                docker::DAEMON_JSON,
                text.as_bytes(),
                0o644,
            )?;
            "took our values out of daemon.json"
        }
        docker::Unmerged::Remove => {
            fs::remove_file(&real).map_err(crate::install::Error::fs("remove", &real))?;
            "removed daemon.json (it held only our values)"
        }
    };
    Ok(Some(format!(
        "docker: {what}; the drop-in and certificates go with the record's files; a running \
         dockerd still uses the proxy until `systemctl daemon-reload && systemctl restart docker`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> BTreeSet<String> {
        ["docker.io", "quay.io"].map(String::from).into()
    }

    fn write(root: &Path, files: &[PlannedFile]) {
        for (p, c, mode) in files {
            let real = resolve(root, p);
            fs::create_dir_all(real.parent().unwrap()).unwrap();
            fs::write(&real, c).unwrap();
            let mode = std::os::unix::fs::PermissionsExt::from_mode(*mode);
            fs::set_permissions(&real, mode).unwrap();
        }
    }

    #[test]
    fn a_re_run_keeps_the_same_ca_and_leaves_and_a_new_host_gets_a_leaf() {
        let root = tempfile::tempdir().unwrap();
        let (first, ca) = proxy_files(root.path(), "edge", &hosts()).unwrap();
        assert_eq!(first.len(), 6);
        assert!(first
            .iter()
            .filter(|(p, _, _)| p.ends_with(".key"))
            .all(|(_, _, m)| *m == 0o600));
        write(root.path(), &first);
        let (second, ca2) = proxy_files(root.path(), "edge", &hosts()).unwrap();
        assert_eq!(ca, ca2);
        assert_eq!(first, second);
        let mut more = hosts();
        more.insert("example.hub".into());
        let (third, _) = proxy_files(root.path(), "edge", &more).unwrap();
        assert_eq!(third.len(), 8);
        assert!(second.iter().all(|f| third.contains(f)));
    }

    #[test]
    fn runtimes_are_detected_from_config_folders_and_named_on_the_command_line() {
        let root = tempfile::tempdir().unwrap();
        let base: BTreeSet<Runtime> = [Runtime::Containerd, Runtime::K3s].into();
        assert_eq!(detect(root.path(), Some("")), base);
        fs::create_dir_all(root.path().join("etc/containers")).unwrap();
        fs::create_dir_all(root.path().join("bin")).unwrap();
        fs::write(root.path().join("bin/dockerd"), "").unwrap();
        let path = root.path().join("bin").display().to_string();
        let all = detect(root.path(), Some(&path));
        assert!(all.contains(&Runtime::Docker) && all.contains(&Runtime::Podman));
        assert_eq!("cri-o".parse::<Runtime>().unwrap(), Runtime::Podman);
        assert!(matches!(
            "rkt".parse::<Runtime>(),
            Err(RuntimeError::UnknownRuntime(r)) if r == "rkt"
        ));
    }

    #[test]
    fn uninstall_takes_out_only_the_values_install_added() {
        let root = tempfile::tempdir().unwrap();
        let addrs = Addresses {
            registry: "127.0.0.1:5000".parse().unwrap(),
            proxy: "127.0.0.1:5001".parse().unwrap(),
        };
        let runtimes: BTreeSet<Runtime> = [Runtime::Docker, Runtime::Podman].into();
        fs::create_dir_all(root.path().join("etc/docker")).unwrap();
        let user = r#"{"debug": true, "insecure-registries": ["10.0.0.1:5000"]}"#;
        fs::write(root.path().join("etc/docker/daemon.json"), user).unwrap();
        let files = plan(root.path(), "edge", &runtimes, &hosts(), addrs).unwrap();
        let paths: Vec<&str> = files.iter().map(|(p, _, _)| p.as_str()).collect();
        assert!(paths.contains(&"/etc/docker/certs.d/quay.io/ca.crt"));
        assert!(paths.contains(&"/etc/systemd/system/docker.service.d/50-airlock-edge.conf"));
        assert!(paths.contains(&"/etc/containers/registries.conf.d/50-airlock-edge.conf"));
        write(root.path(), &files);
        let merged = merge_docker(root.path(), addrs.registry).unwrap().unwrap();
        fs::write(root.path().join("etc/docker/daemon.json"), &merged).unwrap();
        assert_eq!(merge_docker(root.path(), addrs.registry).unwrap(), None);
        let docker::Unmerged::Write(back) = unmerge_docker(root.path(), "edge").unwrap() else {
            panic!("expected a rewrite");
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&back).unwrap(),
            serde_json::from_str::<serde_json::Value>(user).unwrap()
        );
    }

    #[test]
    fn a_broken_daemon_json_stops_before_anything_is_planned_to_change() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc/docker")).unwrap();
        fs::write(root.path().join("etc/docker/daemon.json"), "{\"a\": }").unwrap();
        let err = merge_docker(root.path(), "127.0.0.1:5000".parse().unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("etc/docker/daemon.json") && text.contains("line 1, column 7"),
            "{text}"
        );
    }
}
