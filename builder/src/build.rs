//! The build: spec → gathered tree and captured images → hashed, de-duplicated content →
//! installer written atomically next to its final path.
//!
//! File blobs come first in the payload, in path order; image blobs follow, images sorted by
//! (registry, repository, tag, digest), each image's blobs in manifest order. A blob shared by
//! files and images, or by several images, is stored once.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use airlock_payload::{
    write_installer_cached, BlobInput, BlobSource, BuildInfo, Entry, EntryKind, EntryPath,
    PayloadContents, Sha256Digest, WriteOptions, WriteSummary,
};
use rayon::prelude::*;

use crate::cache::{FileStamp, FrameStore, StatCache};
use crate::discover;
use crate::image::{self, CaptureOptions, RegistryOptions};
use crate::progress::Progress;
use crate::spec::{self, Spec};
use crate::stubcheck;
use crate::tree::{self, SourceEntry, SourceKind};

/// The date given to every entry and to the build when `SOURCE_DATE_EPOCH` is unset:
/// 1980-01-01, the earliest date zip and most tools accept.
pub const DEFAULT_EPOCH: u64 = 315_532_800;

/// What went wrong in a build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] spec::Error),
    /// Image discovery failed (or found problems under `--strict`).
    #[error(transparent)]
    Discover(#[from] discover::Error),
    /// The tree could not be gathered.
    #[error(transparent)]
    Tree(#[from] tree::Error),
    /// An image could not be captured.
    #[error(transparent)]
    Image(#[from] image::Error),
    /// No stub was given and none was found beside the program.
    #[error("failed to find the installer stub: none given with --stub, AIRLOCK_STUB is unset and {0} does not exist")]
    NoStub(PathBuf),
    /// The stub is not usable.
    #[error("failed to use stub {path}")]
    BadStub {
        /// The stub file.
        path: PathBuf,
        /// Why.
        #[source]
        source: stubcheck::Error,
    },
    /// A stub that already carries data after its ELF image.
    #[error("failed to use stub {0}: it has data after its program (is it an installer rather than a stub?)")]
    StubHasPayload(PathBuf),
    /// A source file changed between hashing and packing.
    #[error("failed to pack {0}: it changed while the build was reading it")]
    SourceChanged(PathBuf),
    /// `SOURCE_DATE_EPOCH` is not a number.
    #[error("failed to read SOURCE_DATE_EPOCH: {0:?} is not a number of seconds")]
    BadEpoch(String),
    /// Reading or writing failed.
    #[error("failed to {context}")]
    Io {
        /// The step.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The payload writer failed.
    #[error(transparent)]
    Payload(#[from] airlock_payload::Error),
    /// The engine or a hook is not usable.
    #[error(transparent)]
    Engine(#[from] crate::engine::Error),
    /// The engine's sandbox (pause) image is unknown or not in the payload.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::Error),
    /// The kubeadm engine's control-plane images cannot be found.
    #[error(transparent)]
    Kubeadm(#[from] crate::kubeadm::Error),
    /// A `--from-capture` folder could not be read.
    #[error(transparent)]
    Capture(crate::capture::lock::LockError),
    /// A signing key could not be used, or signing failed.
    #[error(transparent)]
    Sign(#[from] crate::sign::Error),
    /// The build cache could not be pruned.
    #[error(transparent)]
    Cache(#[from] crate::cache::Error),
    /// The SBOM could not be written.
    #[error(transparent)]
    Sbom(#[from] crate::sbom::Error),
    /// `--split` failed or its size is too small for the stub.
    #[error(transparent)]
    Split(#[from] crate::split::Error),
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A validated build request (what `airlock build` was asked for).
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// The spec file.
    pub spec: PathBuf,
    /// Where the installer goes.
    pub output: PathBuf,
    /// An explicit stub, else the default one.
    pub stub: Option<PathBuf>,
    /// zstd level.
    pub level: i32,
    /// Show progress bars.
    pub progress: bool,
    /// How images are pulled from registries (mirrors, cache, credentials).
    pub registry: RegistryOptions,
    /// Capture folders whose every image is added (`--from-capture`).
    pub from_capture: Vec<PathBuf>,
    /// Fail when image discovery has warnings or unresolved references.
    pub strict: bool,
    /// Secret keys to sign the installer with (`--sign`, repeatable).
    pub sign: Vec<PathBuf>,
    /// Use the frame and stat caches in `registry.cache_dir` (`--no-cache` turns it off).
    pub cache: bool,
    /// After the build, prune the frame cache to this many bytes (`--cache-max`).
    pub cache_max: Option<u64>,
    /// Split the installer into parts of this size (`--split`); see [`crate::split`].
    pub split: Option<crate::split::SplitSize>,
}

/// What a build produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// The installer written.
    pub output: PathBuf,
    /// What the build decided that the user should know (how the control-plane images of
    /// a kubeadm engine were found).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Its summary.
    #[serde(flatten)]
    pub summary: airlock_payload::Summary,
    /// Frames taken from the build cache.
    pub frames_reused: u64,
    /// Frames compressed (or stored raw) in this build.
    pub frames_encoded: u64,
    /// Source files whose digest came from the stat cache (not read).
    pub files_unread: u64,
    /// With `--split`: every part written, the first (`output`) first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PathBuf>,
}

/// Finds the default stub: `AIRLOCK_STUB`, else `airlock-stub` beside this program.
pub fn default_stub() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AIRLOCK_STUB") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(io_err("find the airlock program's own path"))?;
    let beside = exe.with_file_name("airlock-stub");
    if beside.exists() {
        Ok(beside)
    } else {
        Err(Error::NoStub(beside))
    }
}

fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => s.trim().parse().map_err(|_| Error::BadEpoch(s)),
        _ => Ok(DEFAULT_EPOCH),
    }
}

/// Runs a build.
pub fn build(plan: &BuildPlan) -> Result<BuildReport> {
    let mut spec = Spec::from_path(&plan.spec)?;
    for dir in &plan.from_capture {
        let captured = spec::captured(dir).map_err(Error::Capture)?;
        spec::add_missing(&mut spec.images, captured);
    }
    let epoch = source_date_epoch()?;
    // Keys first: a wrong password fails before any work.
    let keys = plan
        .sign
        .iter()
        .map(|k| crate::sign::load_secret_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let stub_path = match &plan.stub {
        Some(p) => p.clone(),
        None => default_stub()?,
    };
    let stub =
        fs::read(&stub_path).map_err(io_err(format!("read stub {}", stub_path.display())))?;
    let info =
        stubcheck::check_stub(&stub, spec.platform.arch()).map_err(|source| Error::BadStub {
            path: stub_path.clone(),
            source,
        })?;
    if info.elf_end != stub.len() as u64 {
        return Err(Error::StubHasPayload(stub_path));
    }
    tracing::debug!(stub = %stub_path.display(), machine = %info.machine, "stub checked");
    let stub = stubcheck::with_first_stage(&stub, &info);
    if let Some(size) = plan.split {
        // The first part must hold the program and the payload header: refused before any I/O.
        let need = airlock_payload::align_payload(stub.len() as u64) + airlock_payload::HEADER_LEN;
        if size.bytes() < need {
            return Err(crate::split::Error::TooSmall {
                size: size.bytes(),
                need,
            }
            .into());
        }
    }

    let sources = tree::gather(&spec.files)?;
    tracing::debug!(entries = sources.len(), "tree gathered");
    let cache_dir = &plan.registry.cache_dir;
    let stat_cache = plan.cache.then(|| StatCache::open(cache_dir, &plan.spec));
    let (entries, mut blobs, files_unread) =
        hash_tree(&sources, plan.progress, stat_cache.as_ref())?;
    // Before any image is pulled: a missing engine program fails fast.
    let mut install = crate::engine::install_config(
        &spec.engine,
        &spec.hooks,
        &spec.base_dir,
        &entries,
        &mut blobs,
    )?;
    // Every pod runs the sandbox image: captured like any image (pulled unless an `images:`
    // entry names it), so a build that cannot get it fails naming it.
    if let airlock_payload::Engine::Containerd(c) = &mut install.engine {
        let explicit = match &spec.engine {
            crate::spec::EngineSpec::Containerd(spec) => spec.sandbox_image.clone(),
            _ => None,
        };
        let sandbox = match explicit {
            Some(image) => image,
            None => {
                let binary = source_of(&sources, &c.containerd).ok_or_else(|| Error::Io {
                    context: format!("find the build host's file behind /{}", c.containerd),
                    source: io::Error::from(io::ErrorKind::NotFound),
                })?;
                let (image, how) = crate::sandbox::containerd_default(&binary)?;
                tracing::info!("sandbox image {image} ({how})");
                c.sandbox_image = Some(image.to_string());
                image
            }
        };
        crate::sandbox::ensure_captured(&mut spec.images, &sandbox);
    }
    let mut notes = Vec::new();
    if let airlock_payload::Engine::Kubeadm(k) = &mut install.engine {
        let crate::spec::EngineSpec::Kubeadm(ks) = &spec.engine else {
            unreachable!("the install section follows the spec's engine")
        };
        let binary = source_of(&sources, &k.kubeadm).ok_or_else(|| Error::Io {
            context: format!("find the build host's file behind /{}", k.kubeadm),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        let (control_plane, how) = crate::kubeadm::control_plane_images(
            &binary,
            &k.kubernetes_version,
            ks.images.as_deref(),
        )?;
        notes.push(format!(
            "kubeadm: {} control-plane image(s) {how}",
            control_plane.len()
        ));
        // The kubelet and the CRI agree on the pause image: kubeadm's, unless the spec says.
        if k.containerd.sandbox_image.is_none() {
            k.containerd.sandbox_image =
                crate::kubeadm::pause_image(&control_plane).map(ToString::to_string);
        }
        if let Some(sandbox) = &k.containerd.sandbox_image {
            let sandbox: crate::reference::ImageRef =
                sandbox
                    .parse()
                    .map_err(|e: crate::reference::ReferenceError| {
                        crate::kubeadm::Error::BadImage {
                            line: sandbox.clone(),
                            reason: e.to_string(),
                        }
                    })?;
            crate::sandbox::ensure_captured(&mut spec.images, &sandbox);
        }
        for image in &control_plane {
            crate::sandbox::ensure_captured(&mut spec.images, image);
        }
        k.images = control_plane.iter().map(ToString::to_string).collect();
    }
    let images = image_plan(&spec, plan.strict)?;
    if let airlock_payload::Engine::K3s(k) = &install.engine {
        // k3s pulls its pause image itself (through the mirrors): it must be among them.
        let pause = crate::sandbox::check_k3s_pause(&k.args, &images.image_specs())?;
        tracing::debug!(%pause, "k3s pause image captured");
    }

    let capture_options = CaptureOptions {
        platform: spec.platform.clone(),
        registry: plan.registry.clone(),
        progress: plan.progress,
        parallel: 4,
    };
    let image_specs = images.image_specs();
    let mut captured = image::capture_all(&image_specs, &capture_options)?;
    let artifacts = image::signatures::capture_signatures(
        &image_specs,
        &captured,
        &|r| spec.wants_signatures(r),
        &capture_options,
    )?;
    captured.extend(artifacts);
    tracing::debug!(images = captured.len(), "images captured");
    let images = add_image_blobs(captured, &mut blobs);
    let sha1_cache = plan.cache.then(|| cache_dir.join("sha1"));
    let sbom = add_sbom(
        &spec,
        epoch,
        &entries,
        &mut blobs,
        &images,
        &install,
        sha1_cache.as_deref(),
    )?;

    let out_dir = match plan.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".airlock-build-")
        .tempfile_in(&out_dir)
        .map_err(io_err(format!(
            "create a temporary file in {}",
            out_dir.display()
        )))?;
    let build_info = BuildInfo {
        name: spec.name.to_string(),
        version: spec.version.to_string(),
        platform: spec.platform.to_string(),
        created: epoch,
        mtime: epoch,
        builder: format!("airlock {}", env!("CARGO_PKG_VERSION")),
    };
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let bar = Progress::bytes(plan.progress, "packing", total);
    let mut writer = BufWriter::with_capacity(
        1 << 20,
        tmp.as_file()
            .try_clone()
            .map_err(io_err("open the output"))?,
    );
    let frame_store = plan.cache.then(|| FrameStore::new(cache_dir));
    let summary: WriteSummary = write_installer_cached(
        &mut writer,
        &stub,
        &build_info,
        PayloadContents {
            blobs,
            entries,
            images,
            install,
            sbom: Some(sbom),
        },
        WriteOptions {
            level: plan.level,
            ..WriteOptions::default()
        },
        frame_store
            .as_ref()
            .map(|s| s as &dyn airlock_payload::FrameCache),
        &|done| bar.set(done),
    )?;
    drop(writer);
    bar.finish();
    if !keys.is_empty() {
        let file_name = plan
            .output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let comment =
            crate::sign::trusted_comment(epoch, &file_name, &build_info.name, &build_info.version);
        let signatures = keys
            .iter()
            .map(|k| {
                let f = File::open(tmp.path()).map_err(io_err("read the installer back"))?;
                Ok(crate::sign::sign_message(
                    k,
                    io::Read::take(f, summary.file_len),
                    &comment,
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        crate::sign::append_section(tmp.as_file_mut(), summary.file_len, signatures)?;
    }
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o755))
        .map_err(io_err("make the installer executable"))?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err("flush the installer to disk"))?;
    tmp.persist(&plan.output).map_err(|e| Error::Io {
        context: format!("move the installer to {}", plan.output.display()),
        source: e.error,
    })?;

    // Read the result back through the reader: a writer bug shows here, not on a field site.
    let summary_back = inspect(&plan.output)?;
    debug_assert_eq!(summary_back.payload_offset, summary.payload_offset);
    let parts = match plan.split {
        Some(size) => crate::split::split_file(&plan.output, size)?,
        // An unsplit build replaces a split one whole: no stale parts stay beside it.
        None => {
            crate::split::remove_parts_after(&plan.output, 1)?;
            Vec::new()
        }
    };
    tracing::info!(
        "frames: {} reused, {} compressed; files: {} unread",
        summary.frames_reused,
        summary.frames_encoded,
        files_unread
    );
    if let Some(stat) = stat_cache {
        if let Err(e) = stat.save() {
            tracing::warn!("{e}");
        }
    }
    if let (true, Some(max)) = (plan.cache, plan.cache_max) {
        let pruned = crate::cache::prune(cache_dir, max)?;
        tracing::debug!(
            removed = pruned.removed,
            freed = pruned.freed,
            "frame cache pruned"
        );
    }
    Ok(BuildReport {
        output: plan.output.clone(),
        notes,
        summary: summary_back,
        frames_reused: summary.frames_reused,
        frames_encoded: summary.frames_encoded,
        files_unread,
        parts,
    })
}

/// `images:` joined with what `discover:` finds; discovery's warnings and unresolved
/// references are logged (and fail the build when `strict`).
pub fn image_plan(spec: &Spec, strict: bool) -> Result<discover::ImagePlan> {
    let images = discover::plan(spec)?;
    for warning in &images.warnings {
        tracing::warn!("{warning}");
    }
    for unresolved in &images.unresolved {
        tracing::warn!("unresolved image reference, not captured: {unresolved}");
    }
    if strict {
        images.check_strict()?;
    }
    if !spec.discover.is_empty() {
        tracing::debug!(
            images = images.images.len(),
            files = images.files_scanned,
            "images discovered"
        );
    }
    Ok(images)
}

/// A file's content as the writer reads it, refusing to pack a file that changed since it
/// was hashed (size or modification time differ).
struct FileSource {
    path: PathBuf,
    size: u64,
    mtime: Option<SystemTime>,
}

impl BlobSource for FileSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let f = File::open(&self.path)?;
        let md = f.metadata()?;
        if md.len() != self.size || md.modified().ok() != self.mtime {
            return Err(io::Error::other(Error::SourceChanged(self.path.clone())));
        }
        f.read_exact_at(buf, offset)
    }
}

/// The build host's file behind payload path `path`: a regular file of the tree, or the
/// file a hardlink entry names.
fn source_of(sources: &[SourceEntry], path: &str) -> Option<PathBuf> {
    let mut path = path.to_owned();
    for _ in 0..sources.len().max(1) {
        match &sources.iter().find(|s| s.path == path)?.kind {
            SourceKind::File { src, .. } => return Some(src.clone()),
            SourceKind::Hardlink { target } => path = target.clone(),
            _ => return None,
        }
    }
    None
}

/// Hashes every file (in parallel; a file whose stamp `stat` knows is not read), then maps
/// sources onto index entries and distinct blobs in first-use order. Also returns how many
/// files were not read.
fn hash_tree(
    sources: &[SourceEntry],
    progress: bool,
    stat: Option<&StatCache>,
) -> Result<(Vec<Entry>, Vec<BlobInput>, u64)> {
    let total: u64 = sources
        .iter()
        .map(|s| match s.kind {
            SourceKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    let bar = Progress::bytes(progress, "hashing", total);
    let done = AtomicU64::new(0);
    let unread = AtomicU64::new(0);
    let hashed: Vec<Option<(Sha256Digest, u64, Option<SystemTime>)>> = sources
        .par_iter()
        .map(|s| match &s.kind {
            SourceKind::File { src, .. } => {
                if let Some(stat) = stat {
                    let md =
                        fs::metadata(src).map_err(io_err(format!("inspect {}", src.display())))?;
                    if let Some(digest) = stat.lookup(src, &FileStamp::of(&md)) {
                        let n = md.len();
                        bar.set(done.fetch_add(n, Ordering::Relaxed) + n);
                        unread.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some((digest, n, md.modified().ok())));
                    }
                }
                let f = File::open(src).map_err(io_err(format!("open {}", src.display())))?;
                let md = f
                    .metadata()
                    .map_err(io_err(format!("inspect {}", src.display())))?;
                let (digest, n) = Sha256Digest::of_reader(&f)
                    .map_err(io_err(format!("read {}", src.display())))?;
                if n != md.len() || f.metadata().map(|m| m.mtime()).ok() != Some(md.mtime()) {
                    return Err(Error::SourceChanged(src.clone()));
                }
                if let Some(stat) = stat {
                    stat.record(src, FileStamp::of(&md), digest);
                }
                bar.set(done.fetch_add(n, Ordering::Relaxed) + n);
                Ok(Some((digest, n, md.modified().ok())))
            }
            _ => Ok(None),
        })
        .collect::<Result<_>>()?;
    bar.finish();

    let mut entries = Vec::with_capacity(sources.len());
    let mut blobs: Vec<BlobInput> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (s, h) in sources.iter().zip(hashed) {
        let path = EntryPath::try_from(s.path.clone()).map_err(|e| Error::Io {
            context: "name an entry".into(),
            source: io::Error::other(e),
        })?;
        let kind = match (&s.kind, h) {
            (SourceKind::Dir, _) => EntryKind::Dir,
            (SourceKind::Symlink { target }, _) => EntryKind::Symlink {
                target: target.clone(),
            },
            (SourceKind::Hardlink { target }, _) => EntryKind::Hardlink {
                target: EntryPath::try_from(target.clone()).map_err(|e| Error::Io {
                    context: "name a hardlink".into(),
                    source: io::Error::other(e),
                })?,
            },
            (SourceKind::File { src, .. }, Some((digest, size, mtime))) => {
                if size > 0 && seen.insert(digest) {
                    blobs.push(BlobInput {
                        digest,
                        size,
                        precompressed: false,
                        name: src.display().to_string(),
                        source: Box::new(FileSource {
                            path: src.clone(),
                            size,
                            mtime,
                        }),
                    });
                }
                EntryKind::File { size, digest }
            }
            (SourceKind::File { .. }, None) => unreachable!("every file was hashed"),
        };
        entries.push(Entry {
            path,
            mode: s.mode,
            kind,
        });
    }
    Ok((entries, blobs, unread.into_inner()))
}

/// Appends the blobs of `captured` that `blobs` does not hold yet (images in index order,
/// each image's blobs in manifest order) and returns the image records, sorted by
/// (registry, repository, tag, digest).
fn add_image_blobs(
    mut captured: Vec<image::CapturedImage>,
    blobs: &mut Vec<BlobInput>,
) -> Vec<airlock_payload::Image> {
    captured.sort_by(|a, b| {
        let key = |c: &image::CapturedImage| {
            (
                c.image.registry.clone(),
                c.image.repository.clone(),
                c.image.tag.clone(),
                c.image.digest,
            )
        };
        key(a).cmp(&key(b))
    });
    let mut seen: std::collections::HashSet<Sha256Digest> =
        blobs.iter().map(|b| b.digest).collect();
    let mut records: Vec<airlock_payload::Image> = Vec::with_capacity(captured.len());
    for c in captured {
        for b in c.blobs {
            if b.size > 0 && seen.insert(b.digest) {
                blobs.push(BlobInput {
                    digest: b.digest,
                    size: b.size,
                    precompressed: b.precompressed,
                    name: format!("{} blob {}", c.image.reference(), b.digest),
                    source: b.source,
                });
            }
        }
        if records.last() != Some(&c.image) {
            records.push(c.image);
        }
    }
    records
}

/// Writes the SPDX document of what the payload holds and adds it to `blobs` (unless an
/// identical content is already stored).
#[allow(clippy::too_many_arguments)]
fn add_sbom(
    spec: &Spec,
    epoch: u64,
    entries: &[Entry],
    blobs: &mut Vec<BlobInput>,
    images: &[airlock_payload::Image],
    install: &airlock_payload::InstallConfig,
    sha1_cache: Option<&Path>,
) -> Result<airlock_payload::SbomRef> {
    let name = spec.name.to_string();
    let version = spec.version.to_string();
    let platform = spec.platform.to_string();
    let doc = crate::sbom::spdx_document(&crate::sbom::SbomInput {
        name: &name,
        version: &version,
        platform: &platform,
        created: epoch,
        tool: &format!("airlock-{}", env!("CARGO_PKG_VERSION")),
        entries,
        blobs,
        images,
        install,
        sha1_cache,
    })?;
    let digest = Sha256Digest::of(&doc);
    let size = doc.len() as u64;
    if !blobs.iter().any(|b| b.digest == digest) {
        blobs.push(BlobInput {
            digest,
            size,
            precompressed: false,
            name: "the sbom".into(),
            source: Box::new(doc),
        });
    }
    Ok(airlock_payload::SbomRef {
        digest,
        size,
        media_type: airlock_payload::SPDX_JSON_MEDIA_TYPE.into(),
    })
}

/// Reads the SBOM of an installer without running it; `None` when it carries none.
pub fn read_sbom(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    // SAFETY: as in `inspect`: a read-only private map of a file we only read.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(format!("map {}", path.display())))?;
    let elf_end = airlock_payload::declared_elf_end(&map);
    let installer = airlock_payload::Installer::open(&map, elf_end)?;
    Ok(installer.load_index()?.sbom_document()?)
}

/// Reads the summary of an installer without running it.
pub fn inspect(path: &Path) -> Result<airlock_payload::Summary> {
    let file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    // SAFETY: a read-only private map of a file we only read; if another process truncates
    // the file while it is mapped, reads past the new end fault (SIGBUS). The builder maps
    // only installers it was asked to inspect and holds no map across user-visible steps.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(format!("map {}", path.display())))?;
    let elf_end = airlock_payload::declared_elf_end(&map);
    let installer = airlock_payload::Installer::open(&map, elf_end)?;
    Ok(installer.summary())
}

/// True when `err` means an installer is corrupt or truncated (exit code 3).
pub fn is_corrupt(err: &Error) -> bool {
    match err {
        Error::Payload(e) => e.is_corrupt(),
        Error::Sign(e) => e.is_corrupt(),
        Error::Split(e) => e.is_corrupt(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::{layer, Layout};
    use crate::image::{capture_all, CaptureOptions, RegistryOptions};
    use crate::spec::{ImageSource, ImageSpec};
    use airlock_payload::write_installer;

    /// Writes an installer with one file and the images of `specs` to memory.
    fn write(specs: &[ImageSpec], file_content: &[u8]) -> Vec<u8> {
        let captured = capture_all(
            specs,
            &CaptureOptions {
                platform: "linux/amd64".parse().unwrap(),
                registry: RegistryOptions::default(),
                progress: false,
                parallel: 3,
            },
        )
        .unwrap();
        let digest = Sha256Digest::of(file_content);
        let mut blobs = vec![BlobInput {
            digest,
            size: file_content.len() as u64,
            precompressed: false,
            name: "file".into(),
            source: Box::new(file_content.to_vec()),
        }];
        let entries = vec![Entry {
            path: EntryPath::try_from("file".to_owned()).unwrap(),
            mode: 0o644,
            kind: EntryKind::File {
                size: file_content.len() as u64,
                digest,
            },
        }];
        let images = add_image_blobs(captured, &mut blobs);
        let info = BuildInfo {
            name: "t".into(),
            version: "1".into(),
            platform: "linux/amd64".into(),
            created: DEFAULT_EPOCH,
            mtime: DEFAULT_EPOCH,
            builder: "test".into(),
        };
        let mut out = io::Cursor::new(Vec::new());
        write_installer(
            &mut out,
            b"#!stub",
            &info,
            PayloadContents {
                blobs,
                entries,
                images,
                ..Default::default()
            },
            WriteOptions::default(),
            &|_| {},
        )
        .unwrap();
        out.into_inner()
    }

    #[test]
    fn shared_layers_are_stored_once_and_images_are_sorted() {
        let tmp = tempfile::tempdir().unwrap();
        let mut l = Layout::new(tmp.path());
        let shared = layer("shared", b"base layer");
        let a = l.manifest("amd64", &[shared.clone(), layer("a", b"a")], true);
        let b = l.manifest("amd64", &[shared.clone(), layer("b", b"b")], true);
        l.tag(&a, "a", &[]);
        l.tag(&b, "b", &[]);
        let spec = |r: &str, tag: &str| ImageSpec {
            reference: r.parse().unwrap(),
            from: Some(ImageSource::OciLayout {
                dir: l.dir.clone(),
                tag: Some(tag.into()),
            }),
        };
        // Spec order differs from index order; a layer equals a file's content.
        let specs = [
            spec("quay.io/z/app:1", "b"),
            spec("example.hub/team/app:1", "a"),
        ];
        let bytes = write(&specs, &crate::image::testutil::gzip(&shared));
        let installer = airlock_payload::Installer::open(&bytes, None).unwrap();
        let payload = installer.load_index().unwrap();
        let index = payload.index();
        let names: Vec<String> = index.images().iter().map(|i| i.reference()).collect();
        assert_eq!(names, ["example.hub/team/app:1", "quay.io/z/app:1"]);
        // 1 file (= the shared layer) + 2 × (manifest, config, own layer).
        assert_eq!(index.blobs().len(), 7);
        for image in index.images() {
            for d in image
                .blobs
                .iter()
                .chain(image.manifests.iter().map(|m| &m.digest))
            {
                assert!(index.blob(d).is_some(), "{d} stored");
            }
        }
        // Same inputs, same bytes.
        assert!(write(&specs, &crate::image::testutil::gzip(&shared)) == bytes);
    }
}
