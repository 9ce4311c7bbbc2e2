//! The building blocks of `install` and `uninstall`.
//!
//! Every path the installer touches lives under a root (`/`, or `--root DIR`): modules take
//! the root and *logical* paths (`/etc/containerd/...`), and the install record stores
//! logical paths, so a staged root can be tested without privileges.
//!
//! The steps, in the order an install runs them:
//!
//! 1. [`lock::InstallLock::acquire`]: one install or uninstall at a time.
//! 2. [`record::Record::load_or_new`]: a re-run continues the record of the last run.
//! 3. [`preflight::preflight`]: root, space, inodes, the registry port, commands, `noexec`;
//!    every problem at once, before anything changes.
//! 4. (files from the payload: [`crate::extract`].)
//! 5. [`persist::persist_installer`]: the installer copy the registry runs from.
//! 6. Runtime config, [`runtimes::plan`]: Docker (`daemon.json` merged, `certs.d`, the pull proxy's drop-in)
//!    and podman/CRI-O (`registries.conf.d`) config; then [`service::start_service`] of the
//!    registry (with the pull proxy as a second listen address when Docker is configured): a
//!    systemd unit, or a [`service::Daemon`] with a pid file; then [`readiness::wait_ready`].
//! 7. [`mirror::write_mirror_config`]: containerd `hosts.toml` per upstream host and
//!    `_default`; k3s `registries.yaml`.
//! 8. [`engine::driver`]: [`containerd`] (config, service, readiness, image pulls) or
//!    [`k3s`] (manifests, service, node Ready).
//!
//! [`hooks`] run `pre-install` after preflight and `post-install` after the engine.
//!
//! [`run::install`] and [`run::uninstall`] run these steps for the `install` and `uninstall`
//! commands; [`report`] words what they print.
//!
//! After each step the caller notes what it created in the record and saves it
//! ([`record::Record::save`]); [`undo::undo`] undoes exactly that. All OS access
//! that is not plain file I/O goes through [`host::Host`].
//!
//! Imports run one way, from the bottom up (no module imports one above it):
//!
//! | layer | modules |
//! |---|---|
//! | leaves | [`error`] (and this module's constants), [`host`], [`fsutil`], [`readiness`] |
//! | steps | [`lock`], [`persist`], [`service`], [`mirror`], [`preflight`] |
//! | runtimes | [`runtimes`]: Docker and podman config, the pull proxy's files (on [`mirror`], [`service`]) |
//! | record | [`record`]: gathers the `PathRecord`s and `ServiceRecord`s the steps produce |
//! | on the record | [`undo`], [`upgrade`], [`hooks`], [`containerd`], [`k3s`], then [`engine`] |
//! | commands | [`report`], then [`run`] |

pub mod containerd;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod hooks;
pub mod host;
pub mod k3s;
pub mod kubeadm;
pub mod lock;
pub mod mirror;
pub mod persist;
pub mod preflight;
pub mod readiness;
pub mod record;
pub mod report;
pub mod run;
pub mod runtimes;
pub mod service;
pub mod undo;
pub mod upgrade;

pub use error::{Error, Result};

/// The installer's state folder, inside the root: record, lock, installer copy, pid files
/// and logs.
pub const STATE_DIR: &str = "/var/lib/airlock";

/// The pull proxy's folder for installer `name`, inside the root: CA, leaves, and the
/// `daemon.json` values the install added (written by [`runtimes`], read by the registry
/// service's command line in [`service`]).
pub fn proxy_dir(name: &str) -> String {
    format!("{STATE_DIR}/proxy-{name}")
}

/// Checks an installer name as the spec allows it: `[a-z0-9][a-z0-9-]*` (the rule lives in
/// [`airlock_payload::Name`], which the builder applies too).
pub fn validate_name(name: &str) -> Result<()> {
    airlock_payload::Name::validate(name).map_err(|e| Error::InvalidName {
        what: "name",
        value: name.to_owned(),
        why: e.reason(),
    })
}

/// Checks that a version can be part of a file name (the rule lives in
/// [`airlock_payload::Version`], which the builder applies too): no `/`, `\` or `%`, no
/// leading `.`, printable ASCII without blanks.
pub fn validate_version(version: &str) -> Result<()> {
    airlock_payload::Version::validate(version).map_err(|e| Error::InvalidName {
        what: "version",
        value: version.to_owned(),
        why: e.reason(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions_that_would_escape_a_file_name_are_refused() {
        assert!(validate_name("edge-1").is_ok());
        assert!(validate_name("Edge").is_err());
        assert!(validate_name("-edge").is_err());
        assert!(validate_name("../x").is_err());
        assert!(validate_version("1.30.4-1").is_ok());
        assert!(validate_version("..").is_err());
        assert!(validate_version("1/2").is_err());
        assert!(validate_version("1 2").is_err());
    }
}
