//! systemd unit text for the services of ours: the registry's unit and the shape every
//! engine's unit shares ([`unit_text`]), with `ExecStart=` words quoted the way systemd
//! reads them. Text only: writing and starting a unit is `service::start_service`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// Where systemd units are written, inside the root.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The registry unit's name for installer `name`.
pub fn registry_unit_name(name: &str) -> String {
    format!("airlock-registry-{name}.service")
}

/// Quotes one word of an `ExecStart=` line: `%` escaped as `%%`, words with blanks, quotes
/// or backslashes in double quotes.
fn systemd_word(word: &str) -> String {
    let w = word.replace('%', "%%");
    if w.is_empty()
        || w.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        w
    }
}

/// What goes into a unit file of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec<'a> {
    /// `Description=`.
    pub description: String,
    /// `ExecStart=` words (program first).
    pub exec: Vec<String>,
    /// `Environment=` pairs.
    pub env: &'a [(String, String)],
    /// `After=` units.
    pub after: &'a str,
    /// `Before=` units (empty: none).
    pub before: &'a str,
    /// `Type=` (`simple`, `notify`).
    pub service_type: &'a str,
    /// More `[Service]` lines, each ending in a newline.
    pub extra: &'a str,
}

/// A unit file of ours: restarted on failure, wanted by `multi-user.target`.
pub fn unit_text(name: &str, version: &str, spec: &UnitSpec<'_>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "# Written by airlock for {name} {version}; `uninstall` removes it.\n\
         [Unit]\n\
         Description={}\n\
         After={}\n",
        spec.description, spec.after
    );
    if !spec.before.is_empty() {
        let _ = writeln!(s, "Before={}", spec.before);
    }
    let _ = write!(s, "\n[Service]\nType={}\n", spec.service_type);
    for (k, v) in spec.env {
        let _ = writeln!(s, "Environment={}", systemd_word(&format!("{k}={v}")));
    }
    let exec: Vec<String> = spec.exec.iter().map(|w| systemd_word(w)).collect();
    let _ = write!(
        s,
        "ExecStart={}\n{}Restart=on-failure\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n",
        exec.join(" "),
        spec.extra
    );
    s
}

/// The registry's unit text: `exec registry serve --listen ADDR`. It needs no network
/// (it serves on loopback from a local file), so it waits only for local filesystems, and
/// orders itself before the runtimes that pull through it.
pub fn registry_unit_text(name: &str, version: &str, exec: &Path, listen: SocketAddr) -> String {
    registry_unit_text_with(name, version, exec, listen, &[])
}

/// [`registry_unit_text`] with `extra` words after `--listen ADDR` (the pull proxy's).
pub fn registry_unit_text_with(
    name: &str,
    version: &str,
    exec: &Path,
    listen: SocketAddr,
    extra: &[String],
) -> String {
    unit_text(
        name,
        version,
        &UnitSpec {
            description: format!(
                "airlock registry for {name} {version} (serves the captured images)"
            ),
            exec: vec![
                exec.to_string_lossy().into_owned(),
                "registry".into(),
                "serve".into(),
                "--listen".into(),
                listen.to_string(),
            ]
            .into_iter()
            .chain(extra.iter().cloned())
            .collect(),
            env: &[],
            after: "local-fs.target",
            before: "containerd.service k3s.service",
            service_type: "simple",
            extra: "",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn the_unit_runs_the_persistent_copy_and_needs_no_network() {
        let text = registry_unit_text(
            "edge",
            "1.0",
            Path::new("/var/lib/airlock/edge-1.0.run"),
            addr(),
        );
        assert!(text.contains(
            "\nExecStart=/var/lib/airlock/edge-1.0.run registry serve --listen 127.0.0.1:5000\n"
        ));
        assert!(text.contains("\nRestart=on-failure\n"));
        assert!(text.contains("\nWantedBy=multi-user.target\n"));
        assert!(
            !text.contains("network"),
            "the registry must not wait for the network"
        );
    }

    #[test]
    fn exec_start_words_with_blanks_and_percent_are_quoted() {
        let text = registry_unit_text(
            "edge",
            "1",
            Path::new("/tmp/my root/100%/edge-1.run"),
            addr(),
        );
        assert!(
            text.contains("ExecStart=\"/tmp/my root/100%%/edge-1.run\" registry serve"),
            "{text}"
        );
    }
}
