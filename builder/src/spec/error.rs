//! What can be wrong with a spec: one error type for reading it and for every value in it.
//!
//! Values ([`Platform`](super::Platform), [`Mode`](super::Mode), paths, image sources) fail
//! with the specific variants; inside a spec, their text becomes the message of an
//! [`Error::Invalid`] at the offending `file:line:column`. Names and versions fail with
//! [`airlock_payload::NameError`] and [`airlock_payload::VersionError`] (the rule the
//! installer applies too).

use std::io;
use std::path::PathBuf;

/// A specialised `Result` for spec parsing.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can be wrong with a spec.
///
/// [`Spec::from_path`](super::Spec::from_path) and
/// [`Spec::from_str_at`](super::Spec::from_str_at) only return [`Error::Read`],
/// [`Error::Invalid`] and [`Error::Unsupported`]; the other variants are what the `FromStr`
/// implementations of the value types return, and they end up as the message of an
/// [`Error::Invalid`] when they occur inside a spec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec file could not be read.
    #[error("failed to read spec {path}")]
    Read {
        /// The spec file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// The spec is not valid YAML or does not have the expected shape or values.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The spec file, as given.
        file: PathBuf,
        /// 1-based line of the offending spot.
        line: usize,
        /// 1-based column of the offending spot.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// The spec uses a key that this version of airlock recognises but cannot build yet.
    #[error("{file}:{line}:{column}: `{key}` is not supported yet")]
    Unsupported {
        /// The spec file, as given.
        file: PathBuf,
        /// 1-based line of the key.
        line: usize,
        /// 1-based column of the key.
        column: usize,
        /// The key, such as `images`.
        key: &'static str,
    },
    /// A platform other than `linux/amd64` or `linux/arm64` (with an optional variant).
    #[error("invalid platform `{0}`: expected linux/amd64 or linux/arm64")]
    InvalidPlatform(String),
    /// A mode that is not an octal number up to `7777`.
    #[error("invalid mode `{0}`: expected an octal string such as \"0755\", at most \"7777\"")]
    InvalidMode(String),
    /// A mode written as a YAML number above 511 (`0o777`): `755` is almost always a mistyped
    /// `"0755"`, so numbers must not set the setuid, setgid or sticky bits.
    #[error("ambiguous mode {0}: write octal modes as a string such as \"0755\"")]
    AmbiguousMode(u64),
    /// A destination that is not absolute.
    #[error("dest `{0}` must be an absolute path such as /usr/local/bin/tool")]
    DestNotAbsolute(String),
    /// A destination with a `..` component.
    #[error("dest `{0}` escapes the root")]
    DestEscapes(String),
    /// A destination or source with a NUL byte.
    #[error("path contains a NUL byte: {0:?}")]
    PathHasNul(String),
    /// An empty `src`.
    #[error("src is empty")]
    SourceEmpty,
    /// A `src` that does not exist.
    #[error("source not found: {}", .0.display())]
    SourceNotFound(PathBuf),
    /// A `src` whose metadata could not be read for another reason than not existing.
    #[error("failed to inspect source {}", .path.display())]
    SourceInspect {
        /// The resolved source path.
        path: PathBuf,
        /// Why it could not be inspected.
        #[source]
        source: io::Error,
    },
    /// An image `from` with a transport airlock does not read.
    #[error("unknown image transport in `{0}`: expected oci:DIR[:TAG], docker-archive:FILE[:REF], docker://REF or capture:DIR")]
    UnknownTransport(String),
    /// An image `from` whose transport is known but whose rest is not valid.
    #[error("invalid image source `{value}`: {reason}")]
    InvalidImageSource {
        /// The text given.
        value: String,
        /// Why.
        reason: String,
    },
    /// A [`SourcePath`](super::SourcePath) was deserialized outside
    /// [`Spec::from_path`](super::Spec::from_path), so there is no folder to
    /// resolve it against.
    #[error("failed to resolve source `{0}`: no spec folder in scope")]
    SourceWithoutBase(String),
}
