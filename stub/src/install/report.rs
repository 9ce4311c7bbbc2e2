//! What `install` and `uninstall` print: one line per step ([`Say`]), the plan shown before
//! anything changes ([`Plan`]) and the summary at the end ([`Summary`]), which says where
//! everything went, how to use it and how to undo it.
//!
//! Text only: the steps in `run` gather the facts, this module words them.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use airlock_payload::{human_bytes, Hook, Index};

use super::fsutil::resolve;
use super::hooks;
use super::mirror::{CERTS_DIR, K3S_REGISTRIES};
use super::persist::installer_copy_path;
use super::record::Record;
use super::service::{registry_unit_name, ServiceMode};
use super::STATE_DIR;
use crate::{Error, Result};

/// Step lines go to `out` unless quiet.
pub struct Say<'o> {
    /// Where the lines go.
    pub out: &'o mut dyn Write,
    /// Print nothing.
    pub quiet: bool,
}

impl Say<'_> {
    /// Prints `text` and a newline, flushed (a step line shows while the next step runs).
    pub fn line(&mut self, text: impl AsRef<str>) -> Result<()> {
        if self.quiet {
            return Ok(());
        }
        writeln!(self.out, "{}", text.as_ref())
            .and_then(|()| self.out.flush())
            .map_err(Error::Output)
    }
}

/// `logical` for messages: the real path under `root`.
pub fn shown(root: &Path, logical: &str) -> String {
    resolve(root, logical).display().to_string()
}

/// The upstream hosts that get mirror config, sorted, with the catch-all last.
pub fn mirror_hosts_text(hosts: &[&str]) -> String {
    let mut sorted: Vec<&str> = hosts.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.push("_default");
    sorted.join(", ")
}

/// What an install is about to do, shown for `--dry-run` and before the confirmation.
pub struct Plan<'a> {
    /// The install root.
    pub root: &'a Path,
    /// Installer name.
    pub name: &'a str,
    /// Installer version.
    pub version: &'a str,
    /// Payload entries.
    pub entries: usize,
    /// Payload entries that are regular files.
    pub files: usize,
    /// Their total size.
    pub total: u64,
    /// Entries whose path exists already under the root.
    pub existing: usize,
    /// How the registry will run.
    pub mode: ServiceMode,
    /// The registry address.
    pub listen: SocketAddr,
    /// `--registry`: the site registry the runtimes are pointed at (no local registry).
    pub site: Option<String>,
    /// Upstream hosts of the captured images.
    pub hosts: &'a [&'a str],
    /// More lines: the engine's and the hooks'.
    pub extra: Vec<String>,
}

impl Plan<'_> {
    /// The plan, one item a line.
    pub fn text(&self) -> String {
        let root = self.root;
        let service = match (&self.site, self.mode) {
            (Some(site), _) => format!("none started: the runtimes pull from {site}"),
            (None, ServiceMode::Systemd) => format!(
                "systemd unit {}, listening on {}",
                registry_unit_name(self.name),
                self.listen
            ),
            (None, ServiceMode::Daemon) => format!(
                "daemon with pid file and log in {}, listening on {}",
                shown(root, STATE_DIR),
                self.listen
            ),
        };
        let mut text = format!(
            "plan:\n  files: {} entries ({} files, {}) under {} ({} exist already: \
             files are replaced, folders merged)\n  installer copy: {}\n  registry: {service}\n  \
             mirror config: containerd {}/<host>/hosts.toml for {}; k3s {}\n  \
             record: {}",
            self.entries,
            self.files,
            human_bytes(self.total),
            root.display(),
            self.existing,
            shown(root, &installer_copy_path(self.name, self.version)),
            shown(root, CERTS_DIR),
            mirror_hosts_text(self.hosts),
            shown(root, K3S_REGISTRIES),
            shown(root, &Record::logical_path(self.name)),
        );
        for line in &self.extra {
            text.push_str(&format!("\n  {line}"));
        }
        text
    }
}

/// The plan line of each hook.
pub fn hook_plan_lines(hooks: &[Hook]) -> Vec<String> {
    hooks
        .iter()
        .map(|h| format!("hook {}: {} ({} bytes)", h.stage, h.source, h.size))
        .collect()
}

/// What a finished install tells its user.
pub struct Summary<'a> {
    /// The install root.
    pub root: &'a Path,
    /// True when `--root` was given (the undo command then repeats it).
    pub explicit_root: bool,
    /// Installer name.
    pub name: &'a str,
    /// Installer version.
    pub version: &'a str,
    /// The payload's index (entries, images).
    pub index: &'a Index,
    /// The persistent installer copy's real path.
    pub copy: &'a Path,
    /// The registry address.
    pub listen: SocketAddr,
    /// `--registry`: the site registry the runtimes pull from (no local registry).
    pub site: Option<String>,
    /// How the registry runs (`daemon pid 12`, `systemd unit ...`).
    pub how: &'a str,
    /// Where its output goes.
    pub log: &'a str,
    /// Mirror config files, inside the root.
    pub mirror_files: &'a [String],
    /// The engine's summary lines.
    pub engine: &'a [String],
    /// The hooks that ran.
    pub hooks: &'a [Hook],
}

impl Summary<'_> {
    /// The summary: where everything is, how to use it, how to undo it.
    pub fn text(&self) -> String {
        let root = self.root;
        let certs = shown(root, CERTS_DIR);
        let registry = match &self.site {
            Some(site) => format!(
                "{site} (site registry, {} image(s) expected there; none of ours runs)",
                self.index.images().len()
            ),
            None => format!(
                "http://{} serving {} image(s) ({}; log: {})",
                self.listen,
                self.index.images().len(),
                self.how,
                self.log
            ),
        };
        let mut text = format!(
            "\ninstalled {} {} under {}:\n  files: {} entries from the installer\n  \
             installer copy: {}\n  registry: {registry}\n  mirror config:",
            self.name,
            self.version,
            root.display(),
            self.index.entries().len(),
            self.copy.display(),
        );
        for f in self.mirror_files {
            text.push_str(&format!("\n    {}", shown(root, f)));
        }
        for line in self.engine {
            text.push_str(&format!("\n  {line}"));
        }
        for h in self.hooks {
            text.push_str(&format!(
                "\n  hook {}: ran {} (log {})",
                h.stage,
                h.source,
                shown(root, &hooks::log_path(self.name, h))
            ));
        }
        text.push_str("\nuse it:");
        match self.index.images().first() {
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
        let root_arg = if self.explicit_root {
            format!(" --root {}", root.display())
        } else {
            String::new()
        };
        text.push_str(&format!(
            "\nundo it:\n  {} uninstall{root_arg}",
            self.copy.display()
        ));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_hosts_are_listed_once_sorted_with_the_catch_all_last() {
        assert_eq!(
            mirror_hosts_text(&["quay.io", "docker.io", "quay.io"]),
            "docker.io, quay.io, _default"
        );
    }

    #[test]
    fn the_plan_names_every_path_under_the_root_and_ends_with_the_extra_lines() {
        let plan = Plan {
            root: Path::new("/tmp/r"),
            name: "edge",
            version: "1.0",
            entries: 3,
            files: 2,
            total: 10,
            existing: 1,
            mode: ServiceMode::Daemon,
            listen: "127.0.0.1:5000".parse().unwrap(),
            site: None,
            hosts: &["docker.io"],
            extra: vec!["engine: none".into()],
        };
        let text = plan.text();
        assert!(
            text.starts_with("plan:\n  files: 3 entries (2 files, "),
            "{text}"
        );
        assert!(
            text.contains("installer copy: /tmp/r/var/lib/airlock/edge-1.0.run"),
            "{text}"
        );
        assert!(text.contains("for docker.io, _default;"), "{text}");
        assert!(text.ends_with("\n  engine: none"), "{text}");
    }

    #[test]
    fn quiet_prints_nothing() {
        let mut out = Vec::new();
        Say {
            out: &mut out,
            quiet: true,
        }
        .line("x")
        .unwrap();
        assert!(out.is_empty());
        Say {
            out: &mut out,
            quiet: false,
        }
        .line("x")
        .unwrap();
        assert_eq!(out, b"x\n");
    }
}
