//! What can go wrong while pushing images into a registry.

use std::io;
use std::path::PathBuf;

/// A failed push. Messages never hold credentials.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// `--to` is not an `http(s)://host[:port][/prefix]` URL.
    #[error("invalid registry URL {url:?}: {why}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A CA file could not be read or holds no certificate.
    #[error("failed to read the CA certificates in {}", .path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The TLS setup was refused by rustls (no usable root, bad provider).
    #[error("failed to set up TLS: {0}")]
    TlsSetup(String),
    /// The registry's certificate was refused; never retried.
    #[error("refused the TLS certificate of {host}: {why} (pass its CA with --ca FILE)")]
    TlsRefused {
        /// The registry host.
        host: String,
        /// What was wrong, naming the certificate's subject and issuer.
        why: String,
    },
    /// Credentials could not be read (stdin, docker config).
    #[error("failed to read credentials from {from}")]
    Credentials {
        /// Where they were read from.
        from: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The registry wants credentials and none were given.
    #[error(
        "{host} asks for credentials: pass --user U --password-stdin or log in with docker login"
    )]
    NeedsCredentials {
        /// The registry host.
        host: String,
    },
    /// The credentials were refused (by the registry or its token endpoint); never retried.
    #[error("{host} refused the credentials of user {user:?} ({status} from {url})")]
    Unauthorized {
        /// The registry host.
        host: String,
        /// The user name (never the password).
        user: String,
        /// The URL that answered 401/403 (the token realm or the registry).
        url: String,
        /// The status code.
        status: u16,
    },
    /// The registry's auth challenge could not be followed.
    #[error("failed to get a token from {realm}: {why}")]
    Token {
        /// The token endpoint.
        realm: String,
        /// What went wrong.
        why: String,
    },
    /// The registry could not be reached (after retries).
    #[error("failed to {step} ({attempts} attempts)")]
    Connect {
        /// The request, e.g. `PATCH https://host/v2/...`.
        step: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The registry answered a request with a status we cannot go on from.
    #[error("{step}: the registry answered {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Status {
        /// The request, e.g. `PUT https://host/v2/.../manifests/1`.
        step: String,
        /// The status code.
        status: u16,
        /// The start of the error body.
        body: String,
    },
    /// A registry answer lacked something the protocol requires.
    #[error("{step}: {why}")]
    Protocol {
        /// The request.
        step: String,
        /// What was missing or malformed.
        why: String,
    },
    /// A blob could not be pushed; what was pushed before stays, a re-run continues.
    #[error("failed to push blob {digest} of {image}")]
    Blob {
        /// The image (or images) the blob belongs to.
        image: String,
        /// The blob.
        digest: String,
        /// The cause.
        #[source]
        source: Box<PushError>,
    },
    /// A manifest could not be pushed; its parents were not pushed.
    #[error("failed to push manifest {digest} of {image}")]
    Manifest {
        /// The image.
        image: String,
        /// The manifest.
        digest: String,
        /// The cause.
        #[source]
        source: Box<PushError>,
    },
    /// The registry stored a manifest under another digest than ours: not byte-identical.
    #[error("the registry stored it as {got}, not {expected}; its parents were not pushed")]
    DigestMismatch {
        /// Our digest.
        expected: String,
        /// `Docker-Content-Digest` of the answer.
        got: String,
    },
    /// Two images map to the same name on the target (with `--flatten`).
    #[error("{first} and {second} would both be pushed as {target}; push without --flatten or rename one")]
    Collision {
        /// One image.
        first: String,
        /// The other.
        second: String,
        /// The name both map to.
        target: String,
    },
    /// A name could not be made valid on the target.
    #[error("cannot push {image} as {target:?}: not a valid repository name")]
    BadName {
        /// The image.
        image: String,
        /// The repository it would become.
        target: String,
    },
    /// Reading a blob or manifest from the installer failed (damage is reported with its digest).
    #[error("failed to read {digest} from the installer")]
    Read {
        /// The blob.
        digest: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The upload-session file could not be written.
    #[error("failed to record upload sessions in {}", .path.display())]
    Sessions {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The async runtime could not start.
    #[error("failed to start the async runtime")]
    Runtime(#[source] io::Error),
}

impl PushError {
    /// True for errors a retry cannot fix (refused credentials or certificates).
    pub fn is_fatal(&self) -> bool {
        match self {
            PushError::TlsRefused { .. }
            | PushError::NeedsCredentials { .. }
            | PushError::Unauthorized { .. }
            | PushError::Token { .. } => true,
            PushError::Blob { source, .. } | PushError::Manifest { source, .. } => {
                source.is_fatal()
            }
            _ => false,
        }
    }
}
