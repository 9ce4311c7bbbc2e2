//! The error type of the install building blocks.

use std::io;
use std::path::PathBuf;

/// What can go wrong while installing or uninstalling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem step failed.
    #[error("failed to {step} {}", .path.display())]
    Fs {
        /// The step, e.g. "write".
        step: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another install or uninstall holds the install lock.
    #[error("another install is running ({}); lock file {}", .pid.map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}")), .path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The holder, as written in the lock file.
        pid: Option<u32>,
    },
    /// A host name from an image reference is not a registry host (`host[:port]`).
    #[error("not a valid registry host for a mirror config: {0:?}")]
    InvalidHost(String),
    /// A name or version cannot be used in a file name.
    #[error("invalid {what} {value:?}: {why}")]
    InvalidName {
        /// "name" or "version".
        what: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A path in an install record is not an absolute path without `..`.
    #[error("invalid path in the install record: {0:?}")]
    InvalidPath(String),
    /// Preflight found problems; nothing was changed.
    #[error("preflight found {} problem(s), nothing was changed:{}", .0.len(), .0.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Preflight(Vec<String>),
    /// The install record could not be read or parsed.
    #[error("failed to parse the install record {}", .path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An older version than the one installed, without `--allow-downgrade`.
    #[error(
        "{name} {installed} is installed and this installer is the older {this}: nothing was \
         changed; pass --allow-downgrade to install it anyway"
    )]
    Downgrade {
        /// The installer name.
        name: String,
        /// The installed version.
        installed: String,
        /// This installer's version.
        this: String,
    },
    /// `install --registry` with Docker named in `--mirror-for`.
    #[error(
        "install --registry cannot configure Docker: its pull proxy serves the installer's own \
         registry, not a site registry; leave docker out of --mirror-for (containerd, k3s and \
         podman/CRI-O pull from the site registry), or install without --registry"
    )]
    SiteDocker,
    /// A helper command (`systemctl`) could not be run or failed.
    #[error("failed to run `{command}`: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and the end of its stderr, or why it did not start.
        detail: String,
    },
    /// A daemon could not be started.
    #[error("failed to start {what}")]
    Spawn {
        /// The daemon, e.g. "the registry daemon (/var/lib/airlock/x.run)".
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A process could not be stopped.
    #[error("failed to stop process {pid} ({what})")]
    Stop {
        /// The process.
        pid: u32,
        /// What it is, or why it survived.
        what: String,
        /// The cause.
        #[source]
        source: Option<io::Error>,
    },
    /// A hook script failed; what it printed is in its log and shown in the message.
    #[error("hook {stage} {end}; nothing after it was done (its output, also in {}):\n{output}", .log.display())]
    Hook {
        /// `pre-install` or `post-install`.
        stage: String,
        /// How it ended: "exited with code 3", "was killed by a signal", "timed out after 30 min".
        end: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its output, indented.
        output: String,
    },
    /// The cluster engine did not come up.
    #[error("{engine}: {what}")]
    Engine {
        /// `containerd` or `k3s`.
        engine: &'static str,
        /// What failed and where to look.
        what: String,
    },
    /// Docker or podman config could not be planned (a broken `daemon.json`, the CA).
    #[error(transparent)]
    Runtime(#[from] super::runtimes::RuntimeError),
    /// Uninstall could not undo everything; the record is kept so it can be re-run.
    #[error("uninstall left {} item(s) behind, the install record is kept for a re-run:{}", .0.len(), .0.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Uninstall(Vec<String>),
}

impl Error {
    /// Adapter for `map_err`: a failed filesystem `step` on `path`.
    pub(crate) fn fs(
        step: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Fs { step, path, source }
    }
}

/// Result with the install [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
