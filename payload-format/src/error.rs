//! The one error type of the format crate.

use std::io;

use crate::digest::Sha256Digest;

/// What can go wrong while reading or writing an installer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is shorter than its header says: a partial copy or download.
    #[error(
        "installer is truncated: it is {actual} bytes but should be {expected} ({missing} {unit} missing); copy or download it again",
        unit = if *.missing == 1 { "byte" } else { "bytes" }
    )]
    Truncated {
        /// Length of the file as found.
        actual: u64,
        /// Length the header records.
        expected: u64,
        /// `expected - actual`.
        missing: u64,
    },
    /// The file ends inside the program part: far too short.
    #[error(
        "installer is truncated: it is {actual} bytes, but its program part alone is {program_len} bytes; copy or download it again"
    )]
    TruncatedProgram {
        /// Length of the file as found.
        actual: u64,
        /// Length the ELF headers declare.
        program_len: u64,
    },
    /// No trailer and no header: the payload was removed or never there.
    #[error("no airlock payload found: {reason}")]
    NoPayload {
        /// The most likely reason.
        reason: String,
    },
    /// A checksum or a structural check failed: the bytes were changed.
    #[error("installer is corrupt: {what}")]
    Corrupt {
        /// What is damaged, naming the region or entry.
        what: String,
    },
    /// A frame's stored bytes do not match its digest.
    #[error("installer is corrupt: frame {frame} is damaged (stored sha256 mismatch), affecting {affects}")]
    DamagedFrame {
        /// Frame number.
        frame: usize,
        /// The entries (paths or blob digests) whose content lives in the frame.
        affects: String,
    },
    /// A blob decoded fine but its content digest does not match (deep verification).
    #[error("installer is corrupt: content of {name} does not match its digest {expected} (got {actual})")]
    DamagedBlob {
        /// Path or digest naming the content.
        name: String,
        /// The recorded digest.
        expected: Sha256Digest,
        /// The digest of what was decoded.
        actual: Sha256Digest,
    },
    /// The index is well-formed JSON but breaks a rule of SPEC.md.
    #[error("installer is corrupt: invalid index: {0}")]
    InvalidIndex(String),
    /// The signature section after the trailer is damaged or breaks a rule of SPEC.md.
    #[error("installer is corrupt: {0}")]
    Signature(String),
    /// A format version this reader does not know.
    #[error("unsupported installer format version {0} (this program reads versions 1 and 2)")]
    UnsupportedVersion(u32),
    /// Reading or writing failed.
    #[error("failed to {context}")]
    Io {
        /// The step that failed.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// True when the error means the installer's bytes are damaged or incomplete
    /// (exit code 3 in the CLIs), as opposed to an environment or usage problem.
    pub fn is_corrupt(&self) -> bool {
        !matches!(self, Error::Io { .. })
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into() }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
