//! Runtime mirror config: every upstream registry host named by the captured images, plus a
//! catch-all, is pointed at the local registry.
//!
//! - containerd: `<root>/etc/containerd/certs.d/<host>/hosts.toml` per host and
//!   `_default/hosts.toml` for every other registry. The local registry is a plain-HTTP
//!   `host` with `pull` and `resolve` (without `resolve`, tags would be resolved upstream);
//!   `server` names the real upstream, tried only after the mirror. A host with a port
//!   (`registry.local:5000`) is a folder of that name, as containerd looks it up.
//! - k3s: `<root>/etc/rancher/k3s/registries.yaml` with a mirror per host and `"*"`.
//!
//! Files are written atomically and only when their content differs, so a re-run rewrites
//! nothing.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use super::fsutil::{write_atomic, PathRecord};
use super::{Error, Result};

/// containerd's hosts folder (its `config_path`), inside the root.
pub const CERTS_DIR: &str = "/etc/containerd/certs.d";
/// k3s's registry config, inside the root.
pub const K3S_REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
/// The catch-all folder name containerd (1.6.17+) falls back to.
pub const DEFAULT_HOST: &str = "_default";

/// Which runtimes get mirror config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtimes {
    /// containerd `hosts.toml` files (also what k0s and kubeadm use through `config_path`).
    pub containerd: bool,
    /// k3s `registries.yaml`.
    pub k3s: bool,
}

/// What [`write_mirror_config`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MirrorConfig {
    /// The config files, as seen inside the root (for the record's mirror list).
    pub files: Vec<String>,
    /// Folders created and files written, for the install record.
    pub records: Vec<PathRecord>,
    /// How many files were actually (re)written; 0 on a converged re-run.
    pub changed: usize,
}

/// The upstream hosts, checked (`host[:port]`, no `/`, no `..`), de-duplicated and sorted.
pub fn upstream_hosts<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Result<BTreeSet<String>> {
    hosts
        .into_iter()
        .map(|h| {
            if airlock_payload::is_valid_registry(h) && h != DEFAULT_HOST {
                Ok(h.to_owned())
            } else {
                Err(Error::InvalidHost(h.to_owned()))
            }
        })
        .collect()
}

/// The `server` containerd falls back to for `host`: Docker Hub's API lives at
/// `registry-1.docker.io`, not `docker.io`.
fn upstream_server(host: &str) -> String {
    match host {
        "docker.io" => "https://registry-1.docker.io".to_owned(),
        _ => format!("https://{host}"),
    }
}

/// The `hosts.toml` for `host` (`None`: the `_default` catch-all, which names no server).
pub fn hosts_toml(host: Option<&str>, registry: SocketAddr) -> String {
    let mut s = String::from("# Written by airlock: pull through the local registry first.\n");
    if let Some(h) = host {
        let _ = writeln!(s, "server = \"{}\"", upstream_server(h));
    }
    let _ = write!(
        s,
        "\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    s
}

/// The k3s `registries.yaml`: every host and `"*"` mirrored to the local registry.
pub fn registries_yaml(hosts: &BTreeSet<String>, registry: SocketAddr) -> String {
    let mut s =
        String::from("# Written by airlock: pull through the local registry first.\nmirrors:\n");
    for h in hosts.iter().map(String::as_str).chain(["*"]) {
        let _ = write!(
            s,
            "  \"{h}\":\n    endpoint:\n      - \"http://{registry}\"\n"
        );
    }
    s
}

/// The mirror config files for `hosts` (and the catch-all), as (path inside the root,
/// content), pointing at the registry at `registry`. Invalid host names are refused.
pub fn mirror_files<'a>(
    registry: SocketAddr,
    hosts: impl IntoIterator<Item = &'a str>,
    runtimes: Runtimes,
) -> Result<Vec<(String, String)>> {
    let hosts = upstream_hosts(hosts)?;
    let mut files: Vec<(String, String)> = Vec::new();
    if runtimes.containerd {
        for h in &hosts {
            files.push((
                format!("{CERTS_DIR}/{h}/hosts.toml"),
                hosts_toml(Some(h), registry),
            ));
        }
        files.push((
            format!("{CERTS_DIR}/{DEFAULT_HOST}/hosts.toml"),
            hosts_toml(None, registry),
        ));
    }
    if runtimes.k3s {
        files.push((K3S_REGISTRIES.to_owned(), registries_yaml(&hosts, registry)));
    }
    Ok(files)
}

/// Writes the mirror config for `hosts` (and the catch-all) under `root`, pointing at the
/// registry at `registry`. Invalid host names are refused before anything is written.
pub fn write_mirror_config<'a>(
    root: &Path,
    registry: SocketAddr,
    hosts: impl IntoIterator<Item = &'a str>,
    runtimes: Runtimes,
) -> Result<MirrorConfig> {
    let files = mirror_files(registry, hosts, runtimes)?;
    let mut out = MirrorConfig::default();
    for (logical, text) in files {
        let written = write_atomic(root, &logical, text.as_bytes(), 0o644)?;
        out.changed += usize::from(written.changed);
        out.records.extend(written.records);
        out.files.push(logical);
    }
    Ok(out)
}

/// Where the CA of a site registry is copied, inside the root (referenced by every config).
pub const SITE_CA: &str = "/etc/airlock/site-ca.crt";

/// A site registry the runtimes pull from instead of the local one (`install --registry`):
/// the images were pushed there by `registry push` under `<prefix>/<host>/<repository>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteMirror {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]` of the site registry.
    pub authority: String,
    /// Its path prefix, without slashes at the ends (may be empty).
    pub prefix: String,
    /// Where the runtimes read its CA when one is copied to [`SITE_CA`]: that path as seen
    /// from the host (under `--root DIR` the root's copy, since the runtimes run on this host).
    pub ca: Option<String>,
}

impl SiteMirror {
    /// The repository prefix the images of upstream `host` live under on the site
    /// (`mirror/docker.io`; a port becomes `_port`, as `registry push` names them).
    pub fn path_for(&self, host: &str) -> String {
        let full = airlock_oci::name::site_repository(&self.prefix, host, "x", false);
        full.strip_suffix("/x").unwrap_or(&full).to_owned()
    }
}

/// The `hosts.toml` that sends pulls of upstream `host` to the site registry: the site's
/// `/v2/<prefix>/<host>` as the API root (`override_path`), the copied CA if any, and the
/// upstream as `server` after it.
pub fn site_hosts_toml(host: &str, site: &SiteMirror) -> String {
    let mut s = String::from("# Written by airlock: pull from the site registry first.\n");
    let _ = writeln!(s, "server = \"{}\"", upstream_server(host));
    let _ = write!(
        s,
        "\n[host.\"{}://{}/v2/{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
        site.scheme,
        site.authority,
        site.path_for(host)
    );
    if let Some(ca) = &site.ca {
        let _ = writeln!(s, "  ca = \"{ca}\"");
    }
    s
}

/// The k3s `registries.yaml` for a site registry: each upstream host mirrored to the site
/// with a `rewrite` that puts `<prefix>/<host>/` in front of the repository, and the CA.
pub fn site_registries_yaml(hosts: &BTreeSet<String>, site: &SiteMirror) -> String {
    let mut s =
        String::from("# Written by airlock: pull from the site registry first.\nmirrors:\n");
    for h in hosts {
        let _ = write!(
            s,
            "  \"{h}\":\n    endpoint:\n      - \"{}://{}\"\n    rewrite:\n      \"^(.*)$\": \"{}/$1\"\n",
            site.scheme,
            site.authority,
            site.path_for(h)
        );
    }
    if let Some(ca) = &site.ca {
        let _ = write!(
            s,
            "configs:\n  \"{}\":\n    tls:\n      ca_file: \"{ca}\"\n",
            site.authority
        );
    }
    s
}

/// The mirror config files for a site registry (no catch-all: an image of an unknown
/// upstream was not pushed under any known name), and the CA copy when `ca` is given.
pub fn site_mirror_files<'a>(
    site: &SiteMirror,
    ca: Option<&str>,
    hosts: impl IntoIterator<Item = &'a str>,
    runtimes: Runtimes,
) -> Result<Vec<(String, String)>> {
    let hosts = upstream_hosts(hosts)?;
    let mut files: Vec<(String, String)> = Vec::new();
    if let Some(pem) = ca {
        files.push((SITE_CA.to_owned(), pem.to_owned()));
    }
    if runtimes.containerd {
        for h in &hosts {
            files.push((
                format!("{CERTS_DIR}/{h}/hosts.toml"),
                site_hosts_toml(h, site),
            ));
        }
    }
    if runtimes.k3s {
        files.push((
            K3S_REGISTRIES.to_owned(),
            site_registries_yaml(&hosts, site),
        ));
    }
    Ok(files)
}

/// Writes [`site_mirror_files`] under `root`, atomically and only where content differs.
pub fn write_site_mirror_config<'a>(
    root: &Path,
    site: &SiteMirror,
    ca: Option<&str>,
    hosts: impl IntoIterator<Item = &'a str>,
    runtimes: Runtimes,
) -> Result<MirrorConfig> {
    let files = site_mirror_files(site, ca, hosts, runtimes)?;
    let mut out = MirrorConfig::default();
    for (logical, text) in files {
        let written = write_atomic(root, &logical, text.as_bytes(), 0o644)?;
        out.changed += usize::from(written.changed);
        out.records.extend(written.records);
        out.files.push(logical);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const ADDR: &str = "127.0.0.1:5000";
    const HOSTS: [&str; 4] = ["docker.io", "quay.io", "example.hub", "registry.local:5000"];
    const BOTH: Runtimes = Runtimes {
        containerd: true,
        k3s: true,
    };

    #[test]
    fn a_site_registry_gets_a_path_per_upstream_with_override_path_and_the_ca() {
        let root = tempfile::tempdir().unwrap();
        let site = SiteMirror {
            scheme: "https".into(),
            authority: "harbor.site".into(),
            prefix: "mirror".into(),
            ca: Some(SITE_CA.into()),
        };
        let out = write_site_mirror_config(
            root.path(),
            &site,
            Some("-----BEGIN CERTIFICATE-----\n"),
            ["docker.io", "registry.local:5000"],
            BOTH,
        )
        .unwrap();
        assert_eq!(
            out.files,
            [
                SITE_CA,
                "/etc/containerd/certs.d/docker.io/hosts.toml",
                "/etc/containerd/certs.d/registry.local:5000/hosts.toml",
                "/etc/rancher/k3s/registries.yaml",
            ]
        );
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("etc/containerd/certs.d/docker.io/hosts.toml"),
            "# Written by airlock: pull from the site registry first.\n\
             server = \"https://registry-1.docker.io\"\n\
             \n\
             [host.\"https://harbor.site/v2/mirror/docker.io\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n  ca = \"/etc/airlock/site-ca.crt\"\n"
        );
        assert!(
            read("etc/containerd/certs.d/registry.local:5000/hosts.toml")
                .contains("[host.\"https://harbor.site/v2/mirror/registry.local_5000\"]")
        );
        let yaml = read("etc/rancher/k3s/registries.yaml");
        assert!(
            yaml.contains("\"^(.*)$\": \"mirror/docker.io/$1\""),
            "{yaml}"
        );
        assert!(
            yaml.contains("ca_file: \"/etc/airlock/site-ca.crt\""),
            "{yaml}"
        );
        assert_eq!(
            read("etc/airlock/site-ca.crt"),
            "-----BEGIN CERTIFICATE-----\n"
        );
        // A re-run rewrites nothing.
        let again = write_site_mirror_config(
            root.path(),
            &site,
            Some("-----BEGIN CERTIFICATE-----\n"),
            ["docker.io", "registry.local:5000"],
            BOTH,
        )
        .unwrap();
        assert_eq!(again.changed, 0);
    }

    #[test]
    fn every_host_and_the_catch_all_get_exact_hosts_toml() {
        let root = tempfile::tempdir().unwrap();
        let out = write_mirror_config(root.path(), ADDR.parse().unwrap(), HOSTS, BOTH).unwrap();
        assert_eq!(
            out.files,
            [
                "/etc/containerd/certs.d/docker.io/hosts.toml",
                "/etc/containerd/certs.d/example.hub/hosts.toml",
                "/etc/containerd/certs.d/quay.io/hosts.toml",
                "/etc/containerd/certs.d/registry.local:5000/hosts.toml",
                "/etc/containerd/certs.d/_default/hosts.toml",
                "/etc/rancher/k3s/registries.yaml",
            ]
        );
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("etc/containerd/certs.d/registry.local:5000/hosts.toml"),
            "# Written by airlock: pull through the local registry first.\n\
             server = \"https://registry.local:5000\"\n\
             \n\
             [host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        assert!(read("etc/containerd/certs.d/docker.io/hosts.toml")
            .contains("server = \"https://registry-1.docker.io\"\n"));
        assert!(read("etc/containerd/certs.d/example.hub/hosts.toml")
            .contains("server = \"https://example.hub\"\n"));
        assert_eq!(
            read("etc/containerd/certs.d/_default/hosts.toml"),
            "# Written by airlock: pull through the local registry first.\n\
             \n\
             [host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        assert_eq!(out.changed, 6);
        // Created folders are recorded, outermost first, and nothing existed before.
        assert_eq!(out.records[0].path, "/etc");
        assert!(out.records.iter().all(|r| !r.existed_before));
    }

    #[test]
    fn k3s_registries_yaml_mirrors_every_host_and_the_wildcard() {
        let root = tempfile::tempdir().unwrap();
        let k3s_only = Runtimes {
            containerd: false,
            k3s: true,
        };
        write_mirror_config(
            root.path(),
            ADDR.parse().unwrap(),
            ["quay.io", "registry.local:5000"],
            k3s_only,
        )
        .unwrap();
        let text = fs::read_to_string(root.path().join("etc/rancher/k3s/registries.yaml")).unwrap();
        assert_eq!(
            text,
            "# Written by airlock: pull through the local registry first.\n\
             mirrors:\n  \
             \"quay.io\":\n    endpoint:\n      - \"http://127.0.0.1:5000\"\n  \
             \"registry.local:5000\":\n    endpoint:\n      - \"http://127.0.0.1:5000\"\n  \
             \"*\":\n    endpoint:\n      - \"http://127.0.0.1:5000\"\n"
        );
        assert!(!root.path().join("etc/containerd").exists());
    }

    #[test]
    fn a_second_run_converges_and_rewrites_nothing() {
        let root = tempfile::tempdir().unwrap();
        let addr = ADDR.parse().unwrap();
        let first = write_mirror_config(root.path(), addr, HOSTS, BOTH).unwrap();
        let mtimes = |files: &[String]| -> Vec<_> {
            files
                .iter()
                .map(|f| {
                    let m = fs::metadata(root.path().join(&f[1..])).unwrap();
                    (
                        m.modified().unwrap(),
                        std::os::unix::fs::MetadataExt::ino(&m),
                    )
                })
                .collect()
        };
        let before = mtimes(&first.files);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = write_mirror_config(root.path(), addr, HOSTS, BOTH).unwrap();
        assert_eq!(second.changed, 0);
        assert_eq!(mtimes(&second.files), before);
        assert!(second.records.iter().all(|r| r.existed_before));

        // Another registry address changes every file.
        let third =
            write_mirror_config(root.path(), "127.0.0.1:5001".parse().unwrap(), HOSTS, BOTH)
                .unwrap();
        assert_eq!(third.changed, 6);
    }

    #[test]
    fn host_names_that_are_not_registry_hosts_are_rejected() {
        let root = tempfile::tempdir().unwrap();
        for bad in [
            "docker.io/library",
            "..",
            "../etc",
            "a..b",
            "",
            "_default",
            "host:port",
        ] {
            let err =
                write_mirror_config(root.path(), ADDR.parse().unwrap(), ["quay.io", bad], BOTH)
                    .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidHost(h) if h == bad),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(
            fs::read_dir(root.path()).unwrap().count(),
            0,
            "something was written"
        );
    }
}
