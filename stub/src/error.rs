//! The one error type of the stub library.

use std::io;
use std::path::PathBuf;

/// What can go wrong while the stub runs a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The installer file could not be found or opened.
    #[error("failed to open the installer file {path}{hint}")]
    Open {
        /// The path tried last.
        path: PathBuf,
        /// Why that path was tried, e.g. that `/proc` is missing.
        hint: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The installer file could not be mapped into memory.
    #[error("failed to map the installer file {path}")]
    Map {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The payload is missing, damaged or unreadable.
    #[error(transparent)]
    Payload(#[from] airlock_payload::Error),
    /// A part of a split installer is missing, cut, extra, or does not fit.
    #[error(transparent)]
    Parts(#[from] airlock_payload::PartError),
    /// `copy --to` failed.
    #[error(transparent)]
    Copy(#[from] crate::copy::CopyError),
    /// `verify` found damage; the message lists every damaged item, each naming what it
    /// affects.
    #[error("installer is corrupt: {} damaged item(s):{}", items.len(), items.iter().map(|i| format!("\n  damaged: {i}")).collect::<String>())]
    Damaged {
        /// One message per damaged item.
        items: Vec<String>,
    },
    /// Content of selected entries could not be decoded during `extract`.
    #[error("failed to extract {entries}")]
    Content {
        /// The selected entries whose content lives in the failed frame.
        entries: String,
        /// The cause (a damaged frame is corrupt, exit code 3).
        #[source]
        source: airlock_payload::Error,
    },
    /// `extract` was asked for paths the installer does not hold.
    #[error("not in the installer: {}", .paths.join(", "))]
    NotInPayload {
        /// The names asked for, as given.
        paths: Vec<String>,
    },
    /// The target filesystem is too small; refused before anything was written.
    #[error("not enough space in {}: need {need}, {available} available", .dir.display())]
    NoSpace {
        /// The target folder.
        dir: PathBuf,
        /// What is needed, e.g. "1.2 GB and 1200 inodes".
        need: String,
        /// What is available, in the same units.
        available: String,
    },
    /// The target filesystem filled up during `extract`, after the space check passed
    /// (another writer took the space, or the filesystem used more than estimated).
    #[error("failed to extract into {}: the filesystem ran out of space ({step} {entry}); the staging folder was removed, free some space and run again", .dir.display())]
    SpaceRanOut {
        /// The target folder.
        dir: PathBuf,
        /// The step that hit the full disk, e.g. "write file".
        step: &'static str,
        /// The entry it was working on, relative to the target.
        entry: String,
        /// The cause (`ENOSPC` or `EDQUOT`).
        #[source]
        source: io::Error,
    },
    /// A folder would replace a symbolic link: never followed, never replaced.
    #[error("refusing to replace symlink {} with a folder", .0.display())]
    SymlinkInTheWay(PathBuf),
    /// A file or link would replace a folder.
    #[error("refusing to replace folder {} with a {kind}", .path.display())]
    FolderInTheWay {
        /// The existing folder.
        path: PathBuf,
        /// What would replace it ("file", "symlink").
        kind: &'static str,
    },
    /// A folder would replace something that is neither a folder nor a symlink.
    #[error("refusing to replace {} with a folder: it exists and is not a folder", .0.display())]
    NotAFolder(PathBuf),
    /// A filesystem step failed.
    #[error("failed to {step} {}", .path.display())]
    Fs {
        /// The step, e.g. "create folder".
        step: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The registry could not listen on its address.
    #[error("failed to listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting up the registry server failed.
    #[error("failed to {step}")]
    Serve {
        /// The step, e.g. "start the async runtime".
        step: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An install or uninstall step failed.
    #[error(transparent)]
    Install(#[from] crate::install::Error),
    /// `deploy` or `undeploy` failed.
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
    /// The pull proxy's certificates could not be loaded (`registry serve --intercept`).
    #[error("failed to start the pull proxy")]
    Intercept(#[from] crate::intercept::InterceptError),
    /// `install --ca FILE` cannot be read or holds no certificate.
    #[error("cannot use --ca {}: {why}", .path.display())]
    SiteCa {
        /// The file given.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// `registry push` failed.
    #[error(transparent)]
    Push(#[from] crate::registry::push::PushError),
    /// The registry service did not answer in time after it was started.
    #[error("the registry did not answer on http://{addr}/v2/ within {} s ({detail}); see {log}", .waited.as_secs())]
    RegistryNotReady {
        /// The address polled.
        addr: std::net::SocketAddr,
        /// How long it was polled.
        waited: std::time::Duration,
        /// What the last attempt saw.
        detail: String,
        /// Where its output goes: a log file or a `journalctl` command.
        log: String,
    },
    /// `install --listen` with port 0: the mirror config needs a fixed port.
    #[error(
        "the registry needs a fixed port for the mirror config: --listen {0} picks a random one"
    )]
    ListenPortZero(std::net::SocketAddr),
    /// The user answered no to the confirmation question.
    #[error("install cancelled, nothing was changed")]
    Cancelled,
    /// The confirmation answer could not be read.
    #[error("failed to read the answer to the confirmation question")]
    Prompt(#[source] io::Error),
    /// A signature check failed, or a key could not be used.
    #[error(transparent)]
    Signature(#[from] crate::signature::SignatureError),
    /// `sbom` on an installer that carries none.
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
    /// Writing the command's output failed.
    #[error("failed to write output")]
    Output(#[source] io::Error),
}

impl Error {
    /// True when the error means the installer's bytes are damaged or incomplete (exit code
    /// 3), including damage found while extracting or verifying.
    pub fn is_corrupt(&self) -> bool {
        match self {
            Error::Payload(e) | Error::Content { source: e, .. } => e.is_corrupt(),
            Error::Damaged { .. } => true,
            Error::Parts(e) => e.is_corrupt(),
            Error::Copy(e) => e.is_corrupt(),
            Error::Signature(e) => e.is_corrupt(),
            _ => false,
        }
    }

    /// True when the output pipe was closed by the reader (`list | head`): not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Adapter for `map_err`: a failed filesystem `step` on `path`.
    pub(crate) fn fs(
        step: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Fs { step, path, source }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Output(e.into())
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
