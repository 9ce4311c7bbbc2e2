//! Capturing container images at build time.
//!
//! Each `images:` entry of the spec names the image the installer will serve (its `ref`) and
//! where to get it (`from`): an OCI layout ([`layout`]), a `docker save` archive
//! ([`archive`]), a registry ([`registry`]) or a capture folder ([`crate::capture::source`]).
//! Every source is a [`BlobStore`]; [`collect`] walks the top-level manifest or index through
//! it, keeps the index verbatim, picks the spec's platform, and returns every manifest, config and layer blob, each one verified
//! against its digest as it is read. [`capture_all`] runs the entries in parallel, with one
//! progress bar per image.

pub mod archive;
pub mod layout;
pub mod registry;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use airlock_payload::{BlobSource, Image, ManifestRef, Sha256Digest};
use serde::{Deserialize, Serialize};

use crate::progress::{ImageBar, MultiBars};
use crate::reference::ImageRef;
use crate::spec::{ImageSource, ImageSpec, Platform};

pub use registry::{Mirror, RegistryOptions};

/// The media types, from `airlock-oci` (one set for every crate).
pub use airlock_oci::media::{
    is_index, DOCKER_LIST, DOCKER_MANIFEST, MANIFEST_TYPES, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP,
    OCI_LAYER_TAR, OCI_MANIFEST,
};

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
    #[error("{0}")]
    Record(String),
    /// A docker-archive problem.
    #[error(transparent)]
    Archive(Box<archive::ArchiveError>),
    /// A registry problem.
    #[error(transparent)]
    Registry(Box<registry::RegistryError>),
    /// A `capture:DIR` problem.
    #[error(transparent)]
    Capture(Box<crate::capture::SourceError>),
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

impl From<archive::ArchiveError> for ErrorKind {
    fn from(e: archive::ArchiveError) -> Self {
        ErrorKind::Archive(Box::new(e))
    }
}

impl From<registry::RegistryError> for ErrorKind {
    fn from(e: registry::RegistryError) -> Self {
        ErrorKind::Registry(Box::new(e))
    }
}

fn list(items: &[String]) -> String {
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

/// One blob of a captured image.
pub struct ImageBlob {
    /// Its digest (verified).
    pub digest: Sha256Digest,
    /// Its length.
    pub size: u64,
    /// The media type its descriptor gives.
    pub media_type: String,
    /// Already compressed (gzip or zstd layers): stored verbatim.
    pub precompressed: bool,
    /// Where the writer reads it.
    pub source: Box<dyn BlobSource>,
}

impl fmt::Debug for ImageBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageBlob")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("media_type", &self.media_type)
            .field("precompressed", &self.precompressed)
            .finish_non_exhaustive()
    }
}

/// An image ready to be written: its index record and its blobs (manifests first, then
/// configs and layers; unique).
#[derive(Debug)]
pub struct CapturedImage {
    /// The record the payload index gets.
    pub image: Image,
    /// The blobs it names.
    pub blobs: Vec<ImageBlob>,
}

/// A content descriptor as manifests and indexes write it (only the fields airlock uses;
/// the blobs themselves are kept verbatim).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// `sha256:...`.
    pub digest: String,
    /// Length in bytes.
    pub size: u64,
    /// Platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DescPlatform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Descriptor {
    /// The digest, if it is a sha256 one.
    pub fn sha256(&self) -> Result<Sha256Digest, ErrorKind> {
        self.digest
            .parse()
            .map_err(|_| ErrorKind::BadDigest(self.digest.clone()))
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// The platform of an index entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DescPlatform {
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl fmt::Display for DescPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A manifest or index, parsed leniently (unknown fields ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// The parts of an image config airlock reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// What a blob is, for sources that fetch manifests and blobs differently (registries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// A manifest or index.
    Manifest,
    /// A config or layer.
    Blob,
}

/// Where an image's blobs come from. Every method verifies what it returns against the
/// digest (and the size, when known).
pub trait BlobStore: Sync {
    /// Reads a small blob (manifest, index, config) into memory.
    fn read(
        &self,
        kind: BlobKind,
        digest: Sha256Digest,
        size: Option<u64>,
    ) -> Result<Vec<u8>, ErrorKind>;
    /// Opens a layer for the writer.
    fn open(&self, digest: Sha256Digest, size: u64) -> Result<Box<dyn BlobSource>, ErrorKind>;
    /// Fetches the given layers ahead of `open` (registries download them in parallel).
    fn prefetch(&self, _blobs: &[(Sha256Digest, u64)]) -> Result<(), ErrorKind> {
        Ok(())
    }
    /// True when the store advances the progress bar itself (downloads).
    fn reports_progress(&self) -> bool {
        false
    }
}

/// Checks `bytes` against `digest` and `size`.
pub fn verify_bytes(
    bytes: &[u8],
    digest: Sha256Digest,
    size: Option<u64>,
) -> Result<(), ErrorKind> {
    verify_hashed(Sha256Digest::of(bytes), bytes.len() as u64, digest, size)
}

/// Checks a computed digest and length against the expected ones.
pub fn verify_hashed(
    actual: Sha256Digest,
    len: u64,
    digest: Sha256Digest,
    size: Option<u64>,
) -> Result<(), ErrorKind> {
    if actual != digest {
        return Err(ErrorKind::DigestMismatch { digest, actual });
    }
    match size {
        Some(expected) if expected != len => Err(ErrorKind::SizeMismatch {
            digest,
            expected,
            actual: len,
        }),
        _ => Ok(()),
    }
}

/// Whether a layer of this media type arrives compressed (stored verbatim in raw frames).
/// Uncompressed tar layers are zstd-compressed in the payload and decoded when served.
pub fn layer_is_compressed(media_type: &str) -> bool {
    !media_type.ends_with(".tar")
}

/// The top of an image: the manifest or index a tag resolves to.
#[derive(Debug, Clone)]
pub struct Top {
    /// Its digest.
    pub digest: Sha256Digest,
    /// Its size, when a descriptor gave one.
    pub size: Option<u64>,
    /// The media type a descriptor or the registry gave.
    pub media_type: Option<String>,
    /// Its bytes, when already fetched (and verified).
    pub bytes: Option<Vec<u8>>,
}

/// Manifests and blobs found under a top-level manifest or index.
#[derive(Debug, Default)]
pub struct Collected {
    /// Every manifest kept, the top-level one first.
    pub manifests: Vec<ManifestRef>,
    /// Every blob kept (manifests, configs, layers), unique.
    pub blobs: Vec<ImageBlob>,
    /// The config and layer digests, unique, in manifest order.
    pub content: Vec<Sha256Digest>,
}

impl Collected {
    fn push(&mut self, seen: &mut HashSet<Sha256Digest>, blob: ImageBlob, content: bool) {
        if content && !self.content.contains(&blob.digest) {
            self.content.push(blob.digest);
        }
        if seen.insert(blob.digest) {
            self.blobs.push(blob);
        }
    }
}

/// Walks `top` through `store`: keeps an index verbatim and follows only the entries for
/// `platform`; for each manifest kept, reads its config and opens its layers.
pub fn collect(
    store: &dyn BlobStore,
    top: Top,
    platform: &Platform,
    bar: &ImageBar,
) -> Result<Collected, ErrorKind> {
    let mut out = Collected::default();
    let mut seen = HashSet::new();
    visit(store, top, None, platform, bar, 0, &mut out, &mut seen)?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn visit(
    store: &dyn BlobStore,
    node: Top,
    platform_label: Option<String>,
    platform: &Platform,
    bar: &ImageBar,
    depth: usize,
    out: &mut Collected,
    seen: &mut HashSet<Sha256Digest>,
) -> Result<(), ErrorKind> {
    let digest = node.digest;
    if depth > 2 {
        return Err(ErrorKind::TooDeep(digest));
    }
    let bytes = match node.bytes {
        Some(b) => {
            verify_bytes(&b, digest, node.size)?;
            b
        }
        None => store.read(BlobKind::Manifest, digest, node.size)?,
    };
    let parsed: AnyManifest = serde_json::from_slice(&bytes).map_err(|source| ErrorKind::Json {
        what: "manifest",
        digest,
        source,
    })?;
    let media_type = parsed
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .or(node.media_type.filter(|m| !m.is_empty()))
        .unwrap_or_else(|| {
            if parsed.manifests.is_some() {
                OCI_INDEX.to_owned()
            } else {
                OCI_MANIFEST.to_owned()
            }
        });
    if parsed.schema_version != Some(2) || !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(ErrorKind::UnsupportedManifest {
            digest,
            media_type: if parsed.schema_version == Some(1) {
                format!("{media_type} (schema 1)")
            } else {
                media_type
            },
        });
    }
    let size = bytes.len() as u64;
    bar.add_total(size);
    bar.add_done(size);

    if is_index(&media_type) {
        out.manifests.push(ManifestRef {
            digest,
            media_type: media_type.clone(),
            platform: None,
        });
        out.push(
            seen,
            ImageBlob {
                digest,
                size,
                media_type,
                precompressed: false,
                source: Box::new(bytes),
            },
            false,
        );
        let children = parsed.manifests.unwrap_or_default();
        let chosen = select_platform(&children, platform);
        if chosen.is_empty() {
            return Err(ErrorKind::NoPlatform {
                digest,
                platform: platform.to_string(),
                available: children
                    .iter()
                    .filter_map(|c| c.platform.as_ref().map(|p| p.to_string()))
                    .collect(),
            });
        }
        for child in chosen {
            visit(
                store,
                Top {
                    digest: child.sha256()?,
                    size: Some(child.size),
                    media_type: Some(child.media_type.clone()),
                    bytes: None,
                },
                child.platform.as_ref().map(|p| p.to_string()),
                platform,
                bar,
                depth + 1,
                out,
                seen,
            )?;
        }
        return Ok(());
    }

    // An image manifest.
    let config = parsed.config.unwrap_or_default();
    let config_digest = config.sha256()?;
    let layers = parsed.layers.unwrap_or_default();
    let mut layer_ids = Vec::with_capacity(layers.len());
    for l in &layers {
        layer_ids.push((l.sha256()?, l.size));
    }
    bar.add_total(config.size + layers.iter().map(|l| l.size).sum::<u64>());
    let config_bytes = store.read(BlobKind::Blob, config_digest, Some(config.size))?;
    let own_progress = store.reports_progress();
    if !own_progress {
        bar.add_done(config.size);
    }
    let label = match platform_label {
        Some(l) => Some(l),
        None => serde_json::from_slice::<ConfigPlatform>(&config_bytes)
            .ok()
            .filter(|c| !c.os.is_empty() && !c.architecture.is_empty())
            .map(|c| {
                DescPlatform {
                    os: c.os,
                    architecture: c.architecture,
                    variant: c.variant,
                }
                .to_string()
            }),
    };
    out.manifests.push(ManifestRef {
        digest,
        media_type: media_type.clone(),
        platform: label,
    });
    out.push(
        seen,
        ImageBlob {
            digest,
            size,
            media_type,
            precompressed: false,
            source: Box::new(bytes),
        },
        false,
    );
    out.push(
        seen,
        ImageBlob {
            digest: config_digest,
            size: config.size,
            media_type: config.media_type.clone(),
            precompressed: false,
            source: Box::new(config_bytes),
        },
        true,
    );
    let missing: Vec<(Sha256Digest, u64)> = layer_ids
        .iter()
        .copied()
        .filter(|(d, _)| !seen.contains(d))
        .collect();
    store.prefetch(&missing)?;
    for (l, (d, size)) in layers.iter().zip(layer_ids) {
        if seen.contains(&d) {
            if !out.content.contains(&d) {
                out.content.push(d);
            }
            continue;
        }
        let source = store.open(d, size)?;
        if !own_progress {
            bar.add_done(size);
        }
        out.push(
            seen,
            ImageBlob {
                digest: d,
                size,
                media_type: l.media_type.clone(),
                precompressed: layer_is_compressed(&l.media_type),
                source,
            },
            true,
        );
    }
    Ok(())
}

/// The index entries to keep for `platform`: the first entry whose os and architecture
/// match and whose variant matches (or that has none when the spec names none), else the
/// first with a matching os and architecture; nested indexes without a platform are
/// followed too.
pub fn select_platform<'a>(children: &'a [Descriptor], platform: &Platform) -> Vec<&'a Descriptor> {
    let matches = |c: &&Descriptor| {
        c.platform
            .as_ref()
            .is_some_and(|p| p.os == platform.os() && p.architecture == platform.arch())
    };
    let exact = children.iter().filter(matches).find(|c| {
        let v = c.platform.as_ref().and_then(|p| p.variant.as_deref());
        v == platform.variant() || (platform.variant().is_none() && matches!(v, None | Some("v8")))
    });
    let chosen = exact.or_else(|| {
        if platform.variant().is_none() {
            children.iter().find(matches)
        } else {
            None
        }
    });
    let mut out: Vec<&Descriptor> = chosen.into_iter().collect();
    out.extend(
        children
            .iter()
            .filter(|c| c.platform.is_none() && is_index(&c.media_type)),
    );
    out
}

/// Builds the index record of a captured image.
pub fn finish(
    served: &ImageRef,
    top: Sha256Digest,
    c: Collected,
) -> Result<CapturedImage, ErrorKind> {
    if let Some(pin) = served.digest() {
        if pin != top {
            return Err(ErrorKind::PinMismatch {
                expected: pin,
                actual: top,
            });
        }
    }
    let image = Image::new(
        served.registry().to_owned(),
        served.repository().to_owned(),
        served.tag().map(str::to_owned),
        top,
        c.manifests,
        c.content,
    )
    .map_err(ErrorKind::Record)?;
    Ok(CapturedImage {
        image,
        blobs: c.blobs,
    })
}

/// What [`capture_all`] needs besides the images.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// The platform whose manifests are kept.
    pub platform: Platform,
    /// Registry pulls: mirrors, cache, credentials.
    pub registry: RegistryOptions,
    /// Draw progress bars.
    pub progress: bool,
    /// Images captured at once.
    pub parallel: usize,
}

/// Captures every image, several at once; the result is in spec order. The first failure
/// (in spec order) is returned; images not started yet when one fails are skipped.
pub fn capture_all(
    specs: &[ImageSpec],
    options: &CaptureOptions,
) -> Result<Vec<CapturedImage>, Error> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let mut names = HashSet::new();
    for s in specs {
        if s.reference.tag().is_some()
            && !names.insert((
                s.reference.registry(),
                s.reference.repository(),
                s.reference.tag(),
            ))
        {
            return Err(Error {
                image: s.reference.to_string(),
                kind: ErrorKind::Duplicate,
            });
        }
    }
    let needs_registry = specs
        .iter()
        .any(|s| matches!(s.from, None | Some(ImageSource::Registry(_))));
    let puller = if needs_registry {
        Some(
            registry::Puller::new(&options.registry).map_err(|kind| Error {
                image: specs[0].reference.to_string(),
                kind,
            })?,
        )
    } else {
        None
    };
    let bars = MultiBars::new(options.progress);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<CapturedImage, Error>>>> =
        specs.iter().map(|_| Mutex::new(None)).collect();
    let workers = options.parallel.clamp(1, specs.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= specs.len() || failed.load(Ordering::SeqCst) {
                    break;
                }
                let spec = &specs[i];
                let bar = bars.image(&spec.reference.to_string());
                let result =
                    capture_one(spec, options, puller.as_ref(), &bar).map_err(|kind| Error {
                        image: spec.reference.to_string(),
                        kind,
                    });
                bar.finish();
                if result.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                *results[i].lock().expect("no panics while locked") = Some(result);
            });
        }
    });
    let mut out = Vec::with_capacity(specs.len());
    for r in results {
        match r.into_inner().expect("no panics while locked") {
            Some(Ok(image)) => out.push(image),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(out)
}

/// Captures one image from its source.
pub fn capture_one(
    spec: &ImageSpec,
    options: &CaptureOptions,
    puller: Option<&registry::Puller>,
    bar: &ImageBar,
) -> Result<CapturedImage, ErrorKind> {
    let served = &spec.reference;
    let platform = &options.platform;
    match &spec.from {
        Some(ImageSource::OciLayout { dir, tag }) => {
            let tag = tag.clone().or_else(|| served.tag().map(str::to_owned));
            layout::capture(dir, tag.as_deref(), served, platform, bar)
        }
        Some(ImageSource::DockerArchive { file, reference }) => {
            archive::capture(file, reference.as_ref(), served, platform, bar)
        }
        Some(ImageSource::Capture { dir }) => {
            crate::capture::source::capture(dir, served, platform, bar)
        }
        Some(ImageSource::Registry(pull)) => {
            let puller = puller.expect("a puller exists when an image needs one");
            puller.capture(pull, served, platform, bar)
        }
        None => {
            let puller = puller.expect("a puller exists when an image needs one");
            puller.capture(served, served, platform, bar)
        }
    }
}

/// A file's bytes from `offset` on, for [`BlobSource`]s over files; refuses to read a file
/// that changed (length or modification time) since it was verified.
#[derive(Debug)]
pub struct FileRange {
    /// The file.
    pub path: PathBuf,
    /// Where the blob starts.
    pub offset: u64,
    /// The blob's length.
    pub len: u64,
    /// The file's length when verified.
    pub file_len: u64,
    /// Its modification time then.
    pub mtime: Option<std::time::SystemTime>,
}

impl FileRange {
    /// Describes `len` bytes at `offset` of `path` as the file is now.
    pub fn new(path: PathBuf, offset: u64, len: u64) -> io::Result<FileRange> {
        let md = std::fs::metadata(&path)?;
        Ok(FileRange {
            path,
            offset,
            len,
            file_len: md.len(),
            mtime: md.modified().ok(),
        })
    }

    /// Hashes the range (to its end, with `io::copy`) and returns the digest and the count.
    pub fn hash(&self) -> io::Result<(Sha256Digest, u64)> {
        let f = std::fs::File::open(&self.path)?;
        let reader = io::Read::take(
            PositionedReader {
                file: f,
                pos: self.offset,
            },
            self.len,
        );
        Sha256Digest::of_reader(reader)
    }

    /// A reader over the range.
    pub fn reader(&self) -> io::Result<impl io::Read> {
        let f = std::fs::File::open(&self.path)?;
        Ok(io::Read::take(
            PositionedReader {
                file: f,
                pos: self.offset,
            },
            self.len,
        ))
    }
}

impl BlobSource for FileRange {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&self.path)?;
        let md = f.metadata()?;
        if md.len() != self.file_len || md.modified().ok() != self.mtime {
            return Err(io::Error::other(format!(
                "{} changed while the build was reading it",
                self.path.display()
            )));
        }
        if offset + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the blob",
            ));
        }
        f.read_exact_at(buf, self.offset + offset)
    }
}

/// Reads a file with pread from a moving position (no shared seek offset).
pub(crate) struct PositionedReader {
    pub file: std::fs::File,
    pub pos: u64,
}

impl io::Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
