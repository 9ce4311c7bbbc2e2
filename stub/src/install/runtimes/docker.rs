//! Docker Engine config: pure functions from the installer's hosts and addresses to file
//! text, so every rule is unit-tested without a daemon.
//!
//! - `daemon.json` ([`merge_daemon_json`], [`unmerge_daemon_json`]): the user's file is
//!   merged, never overwritten. We add the local registry to `registry-mirrors` (Docker
//!   Hub's only mirror knob, moby#18818) and to `insecure-registries` (it is plain HTTP);
//!   uninstall removes exactly those values. Not JSON: an error naming the file and the
//!   line and column, before anything changes.
//! - `certs.d/<host>/ca.crt` and `hosts.toml` ([`certs_d_files`]): the proxy's CA for the
//!   classic image store, containerd-style mirrors for Docker ≥ 28.3 with the containerd
//!   store.
//! - The systemd drop-in ([`dropin`]): `HTTPS_PROXY` at the pull proxy, `NO_PROXY` keeping
//!   what other drop-ins said plus loopback and the registry.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{Map, Value};

use super::RuntimeError;
use crate::install::mirror::{hosts_toml, DEFAULT_HOST};

/// Docker's daemon config, inside the root.
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// Docker's per-registry folders, inside the root.
pub const CERTS_DIR: &str = "/etc/docker/certs.d";
/// The drop-in folder of `docker.service`, inside the root.
pub const DROPIN_DIR: &str = "/etc/systemd/system/docker.service.d";

/// The drop-in of installer `name`.
pub fn dropin_path(name: &str) -> String {
    format!("{DROPIN_DIR}/50-airlock-{name}.conf")
}

/// The `daemon.json` values an install adds, per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonKeys {
    /// `(key, values)`: `registry-mirrors` and `insecure-registries`.
    pub entries: Vec<(&'static str, Vec<String>)>,
}

impl DaemonKeys {
    /// The keys for the local registry at `registry`.
    pub fn for_registry(registry: SocketAddr) -> DaemonKeys {
        DaemonKeys {
            entries: vec![
                ("registry-mirrors", vec![format!("http://{registry}")]),
                ("insecure-registries", vec![registry.to_string()]),
            ],
        }
    }
}

/// Parses `text` (the file `shown`) as a JSON object.
fn parse_object(shown: &str, text: &str) -> Result<Map<String, Value>, RuntimeError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(RuntimeError::DaemonJsonShape {
            path: shown.to_owned(),
            what: format!("the top level is {}, not an object", kind_of(&other)),
        }),
        Err(e) => Err(RuntimeError::DaemonJsonInvalid {
            path: shown.to_owned(),
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        }),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The array at `key` (created empty when missing); anything else is an error.
fn array_at<'m>(
    shown: &str,
    map: &'m mut Map<String, Value>,
    key: &str,
) -> Result<&'m mut Vec<Value>, RuntimeError> {
    let v = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    let kind = kind_of(v);
    v.as_array_mut()
        .ok_or_else(|| RuntimeError::DaemonJsonShape {
            path: shown.to_owned(),
            what: format!("\"{key}\" is {kind}, not an array"),
        })
}

fn to_text(map: Map<String, Value>) -> String {
    let mut s = serde_json::to_string_pretty(&Value::Object(map)).expect("JSON serializes");
    s.push('\n');
    s
}

/// `existing` (the text of `shown`, `None` when missing) with `ours` added. `None` when
/// the file already holds them all: nothing to write. Keys of the user are kept (key order
/// becomes sorted when the file is rewritten); values are never duplicated.
pub fn merge_daemon_json(
    shown: &str,
    existing: Option<&str>,
    ours: &DaemonKeys,
) -> Result<Option<String>, RuntimeError> {
    let mut map = parse_object(shown, existing.unwrap_or_default())?;
    let mut changed = existing.is_none();
    for (key, values) in &ours.entries {
        let arr = array_at(shown, &mut map, key)?;
        for v in values {
            if !arr.iter().any(|x| x.as_str() == Some(v)) {
                arr.push(Value::String(v.clone()));
                changed = true;
            }
        }
    }
    Ok(changed.then(|| to_text(map)))
}

/// What uninstall does to `daemon.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmerged {
    /// None of our values are in it.
    Unchanged,
    /// Our values removed; the rest, to write back.
    Write(String),
    /// Nothing but our values was in it: remove the file (`{}` means the same to Docker).
    Remove,
}

/// `existing` without `ours`: only our values leave, and a key only when it held nothing
/// else.
pub fn unmerge_daemon_json(
    shown: &str,
    existing: &str,
    ours: &DaemonKeys,
) -> Result<Unmerged, RuntimeError> {
    let mut map = parse_object(shown, existing)?;
    let mut changed = false;
    for (key, values) in &ours.entries {
        let Some(Value::Array(arr)) = map.get_mut(*key) else {
            continue;
        };
        let before = arr.len();
        arr.retain(|x| !x.as_str().is_some_and(|s| values.iter().any(|v| v == s)));
        if arr.len() != before {
            changed = true;
            if arr.is_empty() {
                map.remove(*key);
            }
        }
    }
    Ok(match (changed, map.is_empty()) {
        (false, _) => Unmerged::Unchanged,
        (true, true) => Unmerged::Remove,
        (true, false) => Unmerged::Write(to_text(map)),
    })
}

/// `certs.d` files for every upstream host and `_default`: the CA that signs the proxy's
/// leaves (classic store, through `HTTPS_PROXY`) and a `hosts.toml` naming the registry
/// (containerd image store, Docker ≥ 28.3). As (path inside the root, content).
pub fn certs_d_files(
    hosts: &BTreeSet<String>,
    ca_pem: &str,
    registry: SocketAddr,
) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for h in hosts {
        files.push((format!("{CERTS_DIR}/{h}/ca.crt"), ca_pem.to_owned()));
        files.push((
            format!("{CERTS_DIR}/{h}/hosts.toml"),
            hosts_toml(Some(h), registry),
        ));
    }
    files.push((
        format!("{CERTS_DIR}/{DEFAULT_HOST}/hosts.toml"),
        hosts_toml(None, registry),
    ));
    files
}

/// The `NO_PROXY` values set by `Environment=` lines of other drop-ins (`texts`), in order.
pub fn existing_no_proxy<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    for text in texts {
        for line in text.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("Environment=") else {
                continue;
            };
            for word in rest.split_whitespace() {
                let word = word.trim_matches('"');
                let value = word
                    .strip_prefix("NO_PROXY=")
                    .or_else(|| word.strip_prefix("no_proxy="));
                if let Some(v) = value {
                    out.extend(
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                    );
                }
            }
        }
    }
    out
}

/// The `docker.service` drop-in of installer `name`: registry traffic to the pull proxy at
/// `proxy`; `NO_PROXY` is what other drop-ins set (`keep`) plus loopback and the registry
/// at `registry`, without duplicates.
pub fn dropin(name: &str, proxy: SocketAddr, registry: SocketAddr, keep: &[String]) -> String {
    let mut no_proxy: Vec<String> = Vec::new();
    let ours = [
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        registry.ip().to_string(),
        registry.to_string(),
    ];
    for v in keep.iter().chain(ours.iter()) {
        if !no_proxy.contains(v) {
            no_proxy.push(v.clone());
        }
    }
    let no_proxy = no_proxy.join(",");
    format!(
        "# Written by airlock for {name}: Docker pulls the installer's images through its pull\n\
         # proxy (a restart of docker.service reads it). `uninstall` removes this file.\n\
         [Service]\n\
         Environment=\"HTTPS_PROXY=http://{proxy}\" \"https_proxy=http://{proxy}\"\n\
         Environment=\"NO_PROXY={no_proxy}\" \"no_proxy={no_proxy}\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/r/etc/docker/daemon.json";

    fn ours() -> DaemonKeys {
        DaemonKeys::for_registry("127.0.0.1:5000".parse().unwrap())
    }

    #[test]
    fn daemon_json_merge_keeps_unrelated_keys_and_round_trips() {
        let user = r#"{"log-driver": "journald", "registry-mirrors": ["https://m.example"],
            "features": {"buildkit": true}, "live-restore": true}"#;
        let merged = merge_daemon_json(FILE, Some(user), &ours())
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(v["log-driver"], "journald");
        assert_eq!(v["features"]["buildkit"], true);
        assert_eq!(v["live-restore"], true);
        assert_eq!(
            v["registry-mirrors"],
            serde_json::json!(["https://m.example", "http://127.0.0.1:5000"])
        );
        assert_eq!(
            v["insecure-registries"],
            serde_json::json!(["127.0.0.1:5000"])
        );
        // Re-run: nothing to write, no duplicates.
        assert_eq!(
            merge_daemon_json(FILE, Some(&merged), &ours()).unwrap(),
            None
        );
        // Uninstall: the user's file comes back, value for value.
        let Unmerged::Write(back) = unmerge_daemon_json(FILE, &merged, &ours()).unwrap() else {
            panic!("expected a rewrite")
        };
        let back: Value = serde_json::from_str(&back).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(user).unwrap());
        assert_eq!(
            unmerge_daemon_json(FILE, user, &ours()).unwrap(),
            Unmerged::Unchanged
        );
    }

    #[test]
    fn a_daemon_json_we_created_is_removed_whole_on_uninstall() {
        let created = merge_daemon_json(FILE, None, &ours()).unwrap().unwrap();
        assert_eq!(
            unmerge_daemon_json(FILE, &created, &ours()).unwrap(),
            Unmerged::Remove
        );
        // An empty file counts as `{}`.
        assert!(merge_daemon_json(FILE, Some("  \n"), &ours())
            .unwrap()
            .is_some());
    }

    #[test]
    fn invalid_daemon_json_names_the_file_line_and_column() {
        let err =
            merge_daemon_json(FILE, Some("{\n  \"debug\": true,\n  oops\n}"), &ours()).unwrap_err();
        match &err {
            RuntimeError::DaemonJsonInvalid { line, column, .. } => {
                assert_eq!((*line, *column), (3, 3));
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(FILE) && text.contains("line 3"), "{text}");
        let err = merge_daemon_json(FILE, Some("[1]"), &ours()).unwrap_err();
        assert!(err.to_string().contains("not an object"), "{err}");
        let err =
            merge_daemon_json(FILE, Some(r#"{"registry-mirrors": "x"}"#), &ours()).unwrap_err();
        assert!(
            err.to_string().contains("\"registry-mirrors\" is a string"),
            "{err}"
        );
    }

    #[test]
    fn certs_d_holds_the_ca_and_hosts_toml_per_host_and_a_catch_all() {
        let hosts: BTreeSet<String> = ["quay.io", "registry.local:5000"].map(String::from).into();
        let files = certs_d_files(&hosts, "PEM", "127.0.0.1:5000".parse().unwrap());
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/docker/certs.d/quay.io/ca.crt",
                "/etc/docker/certs.d/quay.io/hosts.toml",
                "/etc/docker/certs.d/registry.local:5000/ca.crt",
                "/etc/docker/certs.d/registry.local:5000/hosts.toml",
                "/etc/docker/certs.d/_default/hosts.toml",
            ]
        );
        assert_eq!(files[0].1, "PEM");
        assert!(files[1].1.contains("server = \"https://quay.io\""));
    }

    #[test]
    fn the_dropin_points_https_at_the_proxy_and_keeps_other_no_proxy_values() {
        let keep = existing_no_proxy([
            "[Service]\nEnvironment=\"HTTP_PROXY=http://corp:3128\" \"NO_PROXY=corp.lan,10.0.0.0/8\"\n",
            "[Service]\nEnvironment=no_proxy=localhost\n",
        ]);
        assert_eq!(keep, ["corp.lan", "10.0.0.0/8", "localhost"]);
        let text = dropin(
            "edge",
            "127.0.0.1:5001".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
            &keep,
        );
        assert_eq!(
            text,
            "# Written by airlock for edge: Docker pulls the installer's images through its pull\n\
             # proxy (a restart of docker.service reads it). `uninstall` removes this file.\n\
             [Service]\n\
             Environment=\"HTTPS_PROXY=http://127.0.0.1:5001\" \"https_proxy=http://127.0.0.1:5001\"\n\
             Environment=\"NO_PROXY=corp.lan,10.0.0.0/8,localhost,127.0.0.1,::1,127.0.0.1:5000\" \
             \"no_proxy=corp.lan,10.0.0.0/8,localhost,127.0.0.1,::1,127.0.0.1:5000\"\n"
        );
    }
}
