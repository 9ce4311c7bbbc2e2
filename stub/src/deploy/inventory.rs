//! The inventory: which hosts to deploy to, how to reach them and what role each plays,
//! in Ansible's YAML inventory shape so an existing inventory works unchanged.
//!
//! ```yaml
//! all:
//!   vars: {ansible_user: ops, ansible_ssh_private_key_file: ~/.ssh/site}
//!   children:
//!     servers: {hosts: {cp1: {ansible_host: 10.0.0.11}}}
//!     agents:  {hosts: {w1: {ansible_host: 10.0.0.21}}}
//! ```
//!
//! Groups nest through `children`; `vars` of a group apply to every host below it, a
//! child's and a host's own vars win over its parents'. Hosts in the group `servers` are
//! servers, hosts in `agents` agents; the first server (else the first host) is the first
//! node, the one the installer is uploaded to. Keys other than the ones [`HostVars`] names
//! are errors (a typo must not silently deploy somewhere else), and so is a host without
//! `ansible_host`; both name the host and `file:line`.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// What can be wrong with an inventory.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error("failed to read the inventory {}", .path.display())]
    Read {
        /// The inventory file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not have the inventory's shape (unknown key, wrong type...).
    #[error("{}: invalid inventory: {message}", .path.display())]
    Shape {
        /// The inventory file.
        path: PathBuf,
        /// serde's message, with the line and column.
        message: String,
    },
    /// A host lacks a value it needs, or has one that cannot be used.
    #[error("{}:{line}: host {host}: {why}", .path.display())]
    Host {
        /// The inventory file.
        path: PathBuf,
        /// The line that names the host (1-based).
        line: usize,
        /// The host's inventory name.
        host: String,
        /// What is wrong.
        why: String,
    },
    /// The inventory names no host at all.
    #[error("{}: the inventory names no host", .path.display())]
    Empty {
        /// The inventory file.
        path: PathBuf,
    },
}

/// The vars a group or host may set. Unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostVars {
    /// The address or name ssh connects to.
    pub ansible_host: Option<String>,
    /// The remote user (ssh `-l`).
    pub ansible_user: Option<String>,
    /// The ssh port.
    pub ansible_port: Option<u16>,
    /// The private key (ssh `-i`); a leading `~/` is the operator's home.
    pub ansible_ssh_private_key_file: Option<String>,
    /// The install root on the host (default `/`): staging and tests.
    pub airlock_root: Option<String>,
    /// The address the host's registry listens on (default `127.0.0.1:5000`; the first
    /// node's must be reachable from the others when there are several).
    pub airlock_listen: Option<String>,
    /// `own` (default): every node serves its own copy of the images; `first`: nodes
    /// other than the first point their mirror config at the first node's registry.
    pub registry: Option<RegistryMode>,
}

impl HostVars {
    /// `self` with every value `over` sets replacing ours.
    fn overlaid(&self, over: &HostVars) -> HostVars {
        HostVars {
            ansible_host: over
                .ansible_host
                .clone()
                .or_else(|| self.ansible_host.clone()),
            ansible_user: over
                .ansible_user
                .clone()
                .or_else(|| self.ansible_user.clone()),
            ansible_port: over.ansible_port.or(self.ansible_port),
            ansible_ssh_private_key_file: over
                .ansible_ssh_private_key_file
                .clone()
                .or_else(|| self.ansible_ssh_private_key_file.clone()),
            airlock_root: over
                .airlock_root
                .clone()
                .or_else(|| self.airlock_root.clone()),
            airlock_listen: over
                .airlock_listen
                .clone()
                .or_else(|| self.airlock_listen.clone()),
            registry: over.registry.or(self.registry),
        }
    }
}

/// Where the nodes other than the first pull images from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryMode {
    /// Each node runs its own registry over its own copy: pulls never leave the node.
    #[default]
    Own,
    /// Nodes other than the first use the first node's registry.
    First,
}

/// What a host does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// In the group `servers`: a k3s server (control plane).
    Server,
    /// In the group `agents`: a k3s agent (worker).
    Agent,
    /// In neither group (engines `containerd` and `none` need no role).
    Node,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Agent => "agent",
            Role::Node => "node",
        })
    }
}

/// One host, with every var resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its inventory name.
    pub name: String,
    /// The line of the inventory that names it.
    pub line: usize,
    /// What ssh connects to.
    pub address: String,
    /// The ssh user (`None`: ssh's own default or `~/.ssh/config`).
    pub user: Option<String>,
    /// The ssh port.
    pub port: Option<u16>,
    /// The private key file.
    pub key: Option<PathBuf>,
    /// The install root on the host.
    pub root: String,
    /// The registry's address on the host.
    pub listen: SocketAddr,
    /// Its role.
    pub role: Role,
}

/// A parsed inventory: hosts in deploy order (servers first, in inventory order, then
/// every other host in inventory order), the first being the first node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// The file it was read from.
    pub path: PathBuf,
    /// The hosts; never empty.
    pub hosts: Vec<Host>,
    /// Where the nodes other than the first pull from.
    pub registry: RegistryMode,
}

/// A group: vars, hosts, child groups.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    #[serde(default)]
    vars: Option<HostVars>,
    #[serde(default)]
    hosts: Option<Ordered<Option<HostVars>>>,
    #[serde(default)]
    children: Option<Ordered<Option<Group>>>,
}

/// A YAML map whose order is kept (the first server is the first one written).
#[derive(Debug)]
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// The default registry address of a node.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";

impl Inventory {
    /// Reads and resolves the inventory at `path`.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        Inventory::parse(&text, path)
    }

    /// Resolves the inventory `text` (read from `path`, named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Inventory, InventoryError> {
        let shape = |message: String| InventoryError::Shape {
            path: path.to_owned(),
            message,
        };
        let top: Ordered<Option<Group>> =
            serde_yaml_ng::from_str(text).map_err(|e| shape(e.to_string()))?;
        // (name, merged vars, groups it is in), first mention first.
        let mut found: Vec<(String, HostVars, Vec<String>)> = Vec::new();
        fn walk(
            name: &str,
            group: &Group,
            inherited: &HostVars,
            found: &mut Vec<(String, HostVars, Vec<String>)>,
        ) {
            let vars = inherited.overlaid(group.vars.as_ref().unwrap_or(&HostVars::default()));
            for (host, own) in group.hosts.iter().flat_map(|h| h.0.iter()) {
                let merged = vars.overlaid(own.as_ref().unwrap_or(&HostVars::default()));
                match found.iter_mut().find(|(n, _, _)| n == host) {
                    Some((_, v, groups)) => {
                        *v = v.overlaid(own.as_ref().unwrap_or(&HostVars::default()));
                        groups.push(name.to_owned());
                    }
                    None => found.push((host.clone(), merged, vec![name.to_owned()])),
                }
            }
            for (child, g) in group.children.iter().flat_map(|c| c.0.iter()) {
                walk(child, g.as_ref().unwrap_or(&Group::default()), &vars, found);
            }
        }
        for (name, group) in &top.0 {
            walk(
                name,
                group.as_ref().unwrap_or(&Group::default()),
                &HostVars::default(),
                &mut found,
            );
        }
        if found.is_empty() {
            return Err(InventoryError::Empty {
                path: path.to_owned(),
            });
        }
        let mut registry = None;
        let mut hosts = Vec::new();
        for (name, vars, groups) in found {
            let line = line_of(text, &name);
            let bad = |why: String| InventoryError::Host {
                path: path.to_owned(),
                line,
                host: name.clone(),
                why,
            };
            let server = groups.iter().any(|g| g == "servers");
            let agent = groups.iter().any(|g| g == "agents");
            let role = match (server, agent) {
                (true, true) => {
                    return Err(bad(
                        "is in both `servers` and `agents`; a host has one role".into(),
                    ))
                }
                (true, false) => Role::Server,
                (false, true) => Role::Agent,
                (false, false) => Role::Node,
            };
            let address = vars
                .ansible_host
                .clone()
                .filter(|a| !a.trim().is_empty())
                .ok_or_else(|| bad("no `ansible_host` (the address ssh connects to)".into()))?;
            let listen_text = vars.airlock_listen.as_deref().unwrap_or(DEFAULT_LISTEN);
            let listen: SocketAddr = listen_text.parse().map_err(|_| {
                bad(format!(
                    "airlock_listen {listen_text:?} is not an address such as 10.0.0.11:5000"
                ))
            })?;
            if listen.port() == 0 {
                return Err(bad(format!(
                    "airlock_listen {listen} needs a port other than 0"
                )));
            }
            let root = vars.airlock_root.clone().unwrap_or_else(|| "/".to_owned());
            if !root.starts_with('/') {
                return Err(bad(format!(
                    "airlock_root {root:?} must be an absolute path"
                )));
            }
            if root.contains(['\n', '\0']) {
                return Err(bad("airlock_root holds a newline or NUL".into()));
            }
            let mode = vars.registry.unwrap_or_default();
            match registry {
                None => registry = Some(mode),
                Some(m) if m != mode => {
                    return Err(bad(format!(
                        "registry: {} differs from the other hosts'; set it once for all",
                        if mode == RegistryMode::First {
                            "first"
                        } else {
                            "own"
                        }
                    )))
                }
                Some(_) => {}
            }
            hosts.push(Host {
                name: name.clone(),
                line,
                address,
                user: vars.ansible_user.clone(),
                port: vars.ansible_port,
                key: vars
                    .ansible_ssh_private_key_file
                    .as_deref()
                    .map(expand_home),
                root,
                listen,
                role,
            });
        }
        // Servers first, keeping inventory order within each part.
        hosts.sort_by_key(|h| h.role != Role::Server);
        Ok(Inventory {
            path: path.to_owned(),
            hosts,
            registry: registry.unwrap_or_default(),
        })
    }

    /// The first node: the installer is uploaded to it, the others fetch from it.
    pub fn first(&self) -> &Host {
        &self.hosts[0]
    }
}

/// `~/x` is `$HOME/x`; everything else is kept.
fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The 1-based line where `host` first appears as a map key (1 when it cannot be found).
fn line_of(text: &str, host: &str) -> usize {
    let keys = [
        format!("{host}:"),
        format!("\"{host}\":"),
        format!("'{host}':"),
    ];
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches(['{', ' ']);
            keys.iter().any(|k| t.starts_with(k.as_str()))
                || keys
                    .iter()
                    .any(|k| l.contains(&format!("{{{k}")) || l.contains(&format!(" {k}")))
        })
        .map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, InventoryError> {
        Inventory::parse(text, Path::new("nodes.yaml"))
    }

    const SITE: &str = "\
all:
  vars: {ansible_user: ops, ansible_ssh_private_key_file: /keys/site}
  children:
    agents:
      hosts:
        w1: {ansible_host: 10.0.0.21, ansible_port: 2222}
    servers:
      vars: {airlock_listen: \"0.0.0.0:5000\"}
      hosts:
        cp1: {ansible_host: 10.0.0.11, ansible_user: root}
        cp2: {ansible_host: 10.0.0.12, airlock_root: /srv/stage}
";

    #[test]
    fn the_issues_inventory_gives_servers_first_with_roles_and_merged_vars() {
        let inv = parse(SITE).unwrap();
        let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["cp1", "cp2", "w1"]);
        let cp1 = inv.first();
        assert_eq!(cp1.role, Role::Server);
        assert_eq!(cp1.user.as_deref(), Some("root"), "a host's own var wins");
        assert_eq!(cp1.key, Some(PathBuf::from("/keys/site")));
        assert_eq!(cp1.listen, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(cp1.root, "/");
        assert_eq!(cp1.line, 10);
        let cp2 = &inv.hosts[1];
        assert_eq!(cp2.user.as_deref(), Some("ops"));
        assert_eq!(cp2.root, "/srv/stage");
        let w1 = &inv.hosts[2];
        assert_eq!(w1.role, Role::Agent);
        assert_eq!(w1.port, Some(2222));
        assert_eq!(w1.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(inv.registry, RegistryMode::Own);
    }

    #[test]
    fn an_unknown_key_is_an_error_with_its_line() {
        let err =
            parse("all:\n  hosts:\n    a:\n      ansible_host: 10.0.0.1\n      ansible_hots: x\n")
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("nodes.yaml: invalid inventory: "), "{err}");
        assert!(err.contains("ansible_hots"), "{err}");
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn a_host_without_ansible_host_is_an_error_naming_it_and_its_line() {
        let err =
            parse("all:\n  hosts:\n    a: {ansible_host: 10.0.0.1}\n    b: {ansible_user: x}\n")
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "nodes.yaml:4: host b: no `ansible_host` (the address ssh connects to)"
        );
        let err = parse("all:\n  hosts:\n    lonely:\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("nodes.yaml:3: host lonely: no `ansible_host`"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_errors_naming_the_host() {
        let err = parse("all:\n  hosts:\n    a: {ansible_host: h, airlock_listen: nowhere}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nodes.yaml:3: host a: airlock_listen \"nowhere\""),
            "{err}"
        );
        let err = parse("all:\n  hosts:\n    a: {ansible_host: h, airlock_root: rel}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be an absolute path"), "{err}");
        let err = parse("all:\n  hosts:\n    a: {ansible_host: h, ansible_port: 70000}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid inventory"), "{err}");
        let err = parse(
            "all:\n  children:\n    servers: {hosts: {a: {ansible_host: h}}}\n    agents: {hosts: {a: }}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("host a: is in both"), "{err}");
        assert!(matches!(
            parse("all: {}\n"),
            Err(InventoryError::Empty { .. })
        ));
    }

    #[test]
    fn registry_first_is_read_from_the_vars() {
        let inv =
            parse("all:\n  vars: {registry: first}\n  hosts:\n    a: {ansible_host: h}\n").unwrap();
        assert_eq!(inv.registry, RegistryMode::First);
        let err = parse("all:\n  vars: {registry: nearest}\n  hosts:\n    a: {ansible_host: h}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `nearest`"), "{err}");
    }

    #[test]
    fn hosts_without_a_role_group_keep_inventory_order() {
        let inv = parse("all:\n  hosts:\n    z: {ansible_host: h1}\n    a: {ansible_host: h2}\n")
            .unwrap();
        let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["z", "a"]);
        assert!(inv.hosts.iter().all(|h| h.role == Role::Node));
    }
}
