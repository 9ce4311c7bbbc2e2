//! Why an image could not be captured: [`Error`] names the image, [`ErrorKind`] the step,
//! and each source has its own enum ([`ArchiveError`], [`RegistryError`], [`CaptureError`])
//! that [`ErrorKind`] boxes. They live in one file so that the sources import the errors and
//! the errors import no source.

use std::io;
use std::path::PathBuf;

use airlock_payload::Sha256Digest;
use oci_client::errors::OciDistributionError;

use crate::capture::lock::LockError;

/// An image could not be captured.
#[derive(Debug, thiserror::Error)]
#[error("failed to capture image {image}")]
pub struct Error {
    /// The image, as the installer will serve it.
    pub image: String,
    /// What went wrong.
    #[source]
    pub kind: ErrorKind,
}

/// What went wrong while capturing one image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A blob's content does not hash to its digest.
    #[error("blob {digest} does not match its digest: its content hashes to {actual}")]
    DigestMismatch {
        /// The digest it was asked for by.
        digest: Sha256Digest,
        /// The digest of what was read.
        actual: Sha256Digest,
    },
    /// A blob's length differs from its descriptor's.
    #[error("blob {digest} is {actual} bytes long, its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Sha256Digest,
        /// The descriptor's size.
        expected: u64,
        /// What was read.
        actual: u64,
    },
    /// A blob is not where the source says it is.
    #[error("blob {digest} is missing from {location}")]
    BlobMissing {
        /// The blob.
        digest: Sha256Digest,
        /// The layout, archive or registry.
        location: String,
    },
    /// A descriptor names a digest that is not sha256.
    #[error("unsupported digest `{0}`: only sha256 is supported")]
    BadDigest(String),
    /// The tag is not in an OCI layout.
    #[error("tag `{tag}` not found in {location} (available tags: {})", list(.available))]
    TagNotFound {
        /// The tag looked for.
        tag: String,
        /// The layout.
        location: String,
        /// The tags it has.
        available: Vec<String>,
    },
    /// An OCI layout holds several images and the reference names none by tag.
    #[error("{location} holds several images; name one with oci:DIR:TAG (available tags: {})", list(.available))]
    NoTag {
        /// The layout.
        location: String,
        /// The tags it has.
        available: Vec<String>,
    },
    /// An OCI layout holds no descriptor with the pinned digest.
    #[error("no image with digest {digest} in {location}")]
    DigestNotFound {
        /// The digest looked for.
        digest: Sha256Digest,
        /// The layout.
        location: String,
    },
    /// The index has no manifest for the spec's platform.
    #[error("index {digest} has no manifest for {platform} (it has: {})", list(.available))]
    NoPlatform {
        /// The index.
        digest: Sha256Digest,
        /// The spec's platform.
        platform: String,
        /// The platforms it has.
        available: Vec<String>,
    },
    /// A manifest or index could not be parsed.
    #[error("failed to parse {what} {digest}")]
    Json {
        /// `manifest`, `index`, `config`.
        what: &'static str,
        /// The blob.
        digest: Sha256Digest,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest type airlock does not capture (Docker schema 1, artifacts).
    #[error("manifest {digest} has unsupported media type `{media_type}`")]
    UnsupportedManifest {
        /// The manifest.
        digest: Sha256Digest,
        /// Its media type.
        media_type: String,
    },
    /// Indexes nested deeper than airlock follows.
    #[error("index {0} nests indexes too deeply")]
    TooDeep(Sha256Digest),
    /// The image resolved to another digest than the reference pins.
    #[error("the source holds {actual}, but the reference pins {expected}")]
    PinMismatch {
        /// The pinned digest.
        expected: Sha256Digest,
        /// What the source has.
        actual: Sha256Digest,
    },
    /// Two entries of `images` serve the same name.
    #[error("it is listed twice in `images`")]
    Duplicate,
    /// The payload format rejected the image record.
    #[error(transparent)]
    Record(airlock_payload::ImageError),
    /// A docker-archive problem.
    #[error(transparent)]
    Archive(Box<ArchiveError>),
    /// A registry problem.
    #[error(transparent)]
    Registry(Box<RegistryError>),
    /// A `capture:DIR` problem.
    #[error(transparent)]
    Capture(Box<CaptureError>),
    /// Reading or writing failed.
    #[error("failed to {context}")]
    Io {
        /// The step.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl From<ArchiveError> for ErrorKind {
    fn from(e: ArchiveError) -> Self {
        ErrorKind::Archive(Box::new(e))
    }
}

impl From<RegistryError> for ErrorKind {
    fn from(e: RegistryError) -> Self {
        ErrorKind::Registry(Box::new(e))
    }
}

pub(super) fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

pub(crate) fn io_kind(context: impl Into<String>) -> impl FnOnce(io::Error) -> ErrorKind {
    let context = context.into();
    move |source| ErrorKind::Io { context, source }
}

/// What can be wrong with a docker-archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The tar could not be read.
    #[error("failed to read {} as a tar archive", .path.display())]
    Tar {
        /// The archive.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Neither `manifest.json` nor `index.json`.
    #[error("{} is not a docker-archive: it has neither manifest.json nor index.json", .0.display())]
    NotAnArchive(PathBuf),
    /// Several images and no `:REF`.
    #[error("{} holds several images ({}): name one as docker-archive:{}:REF", .path.display(), .available.join(", "), .path.display())]
    Ambiguous {
        /// The archive.
        path: PathBuf,
        /// The names it has.
        available: Vec<String>,
    },
    /// `:REF` names no image of the archive.
    #[error("image `{wanted}` not found in {} (it holds: {})", .path.display(), if .available.is_empty() { "no tagged image".to_owned() } else { .available.join(", ") })]
    NotFound {
        /// The archive.
        path: PathBuf,
        /// The name asked for.
        wanted: String,
        /// The names it has.
        available: Vec<String>,
    },
    /// A member named by the archive's manifest is missing.
    #[error("{}: member {member} is missing", .path.display())]
    Missing {
        /// The archive.
        path: PathBuf,
        /// The member.
        member: String,
    },
    /// A JSON member could not be parsed.
    #[error("failed to parse {member} in {}", .path.display())]
    Json {
        /// The archive.
        path: PathBuf,
        /// The member.
        member: String,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// A layer's content differs from the config's diff_id.
    #[error("layer {member} in {} has content digest {actual}, but the config's diff_id is {expected}", .path.display())]
    DiffId {
        /// The archive.
        path: PathBuf,
        /// The layer member.
        member: String,
        /// The diff_id.
        expected: String,
        /// The digest of its (uncompressed) content.
        actual: Sha256Digest,
    },
    /// The config lists another number of diff_ids than there are layers.
    #[error("{}: the config of {image} lists {diff_ids} diff_ids for {layers} layers", .path.display())]
    LayerCount {
        /// The archive.
        path: PathBuf,
        /// The image's first tag or config.
        image: String,
        /// How many diff_ids.
        diff_ids: usize,
        /// How many layers.
        layers: usize,
    },
}

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No connection (refused, no route, DNS, timeout).
    #[error("registry {registry} is unreachable")]
    Unreachable {
        /// The host contacted (and the upstream it mirrors).
        registry: String,
        /// The client's error.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// The registry refused the credentials, or anonymous access.
    #[error("registry {registry} refused access to {reference} (authentication failed; credentials come from {auth_file})")]
    Auth {
        /// The host contacted.
        registry: String,
        /// What was pulled.
        reference: String,
        /// Where credentials were looked up.
        auth_file: String,
        /// The client's error.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// The tag, digest or repository does not exist there.
    #[error("{reference} not found on registry {registry}")]
    NotFound {
        /// The host contacted.
        registry: String,
        /// What was pulled.
        reference: String,
        /// The client's error.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// Any other failure.
    #[error("failed to pull {reference} from registry {registry}")]
    Other {
        /// The host contacted.
        registry: String,
        /// What was pulled.
        reference: String,
        /// The client's error.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// A `--registry-mirror` value that is not `HOST=URL`.
    #[error(
        "invalid registry mirror `{0}`: expected HOST=URL such as docker.io=http://127.0.0.1:5000"
    )]
    BadMirror(String),
    /// The credentials file could not be read or parsed.
    #[error("failed to read registry credentials from {}", .path.display())]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The download runtime could not start.
    #[error("failed to start the download runtime")]
    Runtime(#[source] io::Error),
}

/// A capture folder cannot give an image.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The lock file is missing or bad.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The lock file has no such reference.
    #[error("{reference} was not captured in {} (it has: {})", .dir.display(), list_or_nothing(.available))]
    NotCaptured {
        /// The reference asked for.
        reference: String,
        /// The capture folder.
        dir: PathBuf,
        /// What it has.
        available: Vec<String>,
    },
    /// A blob of the image is not in the capture.
    #[error("the capture {} lacks blob {digest}: no client fetched it while capturing (a platform the clients did not pull, or a layer they already had)", .dir.display())]
    Incomplete {
        /// The capture folder.
        dir: PathBuf,
        /// The missing blob.
        digest: Sha256Digest,
    },
}

fn list_or_nothing(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}
