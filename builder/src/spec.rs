//! The `airlock.yaml` spec: what an installer holds.
//!
//! [`Spec::from_path`] reads a spec and turns it into typed values. Every value is parsed into a
//! newtype ([`Name`], [`Version`], [`Platform`], [`Mode`], [`DestPath`], [`SourcePath`]) whose
//! `Deserialize` goes through its `FromStr` inside a serde visitor, so an invalid value cannot
//! exist and every error carries the `file:line:column` of the offending spot:
//!
//! ```text
//! airlock.yaml:7:5: files[1]: unknown field `sorce`, expected one of `src`, `dest`, `mode`
//! ```
//!
//! Paths under `src` are relative to the spec's folder (absolute paths are allowed too) and must
//! exist when the spec is read. `images` entries name the image the installer serves (`ref`,
//! normalised like containerd: [`ImageRef`]) and where it comes from (`from`, an
//! [`ImageSource`] in containers-transport syntax; without it, the image is pulled from its
//! registry; `from: capture:DIR` without `ref` takes every image a capture recorded).
//! `discover` lists folders and files (relative to the spec's folder, existing when the spec
//! is read) whose image references are captured too, and `exclude` drops discovered
//! references: an image reference, or a pattern with `*`/`?` over the normalised reference
//! ([`ImagePattern`], see [`crate::discover`]). `engine` ([`EngineSpec`]) names the cluster
//! engine `install` brings up and `hooks` ([`HooksSpec`]) the scripts it runs before and after.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

pub use crate::discover::ImagePattern;
pub use crate::reference::{ImageRef, ReferenceError};

/// A specialised `Result` for spec parsing.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can be wrong with a spec.
///
/// [`Spec::from_path`] and [`Spec::from_str_at`] only return [`Error::Read`],
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
    /// A name outside `[a-z0-9][a-z0-9-]*`.
    #[error("invalid name `{0}`: use lowercase letters, digits and '-', starting with a letter or digit")]
    InvalidName(String),
    /// A version that is empty or holds '/', whitespace or control characters.
    #[error("invalid version `{value}`: {reason}")]
    InvalidVersion {
        /// The rejected text.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
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
    /// A [`SourcePath`] was deserialized outside [`Spec::from_path`], so there is no folder to
    /// resolve it against.
    #[error("failed to resolve source `{0}`: no spec folder in scope")]
    SourceWithoutBase(String),
}

/// A parsed `airlock.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The installer's name.
    pub name: Name,
    /// The installer's version.
    pub version: Version,
    /// The platform the installer is built for (the builder's own if the spec does not say).
    pub platform: Platform,
    /// Files to lay down, in spec order.
    pub files: Vec<FileSpec>,
    /// Images to capture, in spec order.
    pub images: Vec<ImageSpec>,
    /// The cluster engine `install` runs.
    pub engine: EngineSpec,
    /// Scripts `install` runs before and after.
    pub hooks: HooksSpec,
    /// Folders and files to discover image references in (`discover:`), resolved against the
    /// spec's folder; they existed when the spec was read.
    pub discover: Vec<PathBuf>,
    /// What drops discovered references (`exclude:`).
    pub exclude: Vec<ImagePattern>,
    /// The absolute folder that relative `src` paths were resolved against.
    pub base_dir: PathBuf,
    /// The spec file, as given (used in messages).
    pub path: PathBuf,
}

/// One entry of `files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The source, resolved against the spec's folder; it existed when the spec was read.
    pub src: PathBuf,
    /// Where the source goes inside the target root.
    pub dest: DestPath,
    /// Overrides the source's permission bits.
    pub mode: Option<Mode>,
}

/// One entry of `images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The name the installer serves the image under.
    pub reference: ImageRef,
    /// Where it comes from; `None` pulls `reference` from its registry.
    pub from: Option<ImageSource>,
}

/// Where an image comes from: containers-transport syntax, paths relative to the spec's
/// folder (which must exist when the spec is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `oci:DIR[:TAG]`: an OCI image layout; the tag defaults to the reference's.
    OciLayout {
        /// The layout folder.
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` to pick.
        tag: Option<String>,
    },
    /// `docker-archive:FILE[:REF]`: a `docker save` tar; `REF` picks one of several images.
    DockerArchive {
        /// The archive.
        file: PathBuf,
        /// The image to pick.
        reference: Option<ImageRef>,
    },
    /// `docker://REF`: pull `REF` from its registry instead of the served name.
    Registry(ImageRef),
    /// `capture:DIR`: a folder `airlock capture` wrote; without `ref`, every image in it.
    Capture {
        /// The capture folder (its lock file was readable when the spec was read).
        dir: PathBuf,
    },
}

impl ImageSource {
    /// Parses `text`, resolving paths against `base`.
    pub fn parse(base: &Path, text: &str) -> Result<ImageSource> {
        let invalid = |reason: String| Error::InvalidImageSource {
            value: text.to_owned(),
            reason,
        };
        if let Some(rest) = text.strip_prefix("docker://") {
            let reference = rest
                .parse()
                .map_err(|e: ReferenceError| invalid(e.to_string()))?;
            return Ok(ImageSource::Registry(reference));
        }
        let (transport, rest) = text
            .split_once(':')
            .ok_or_else(|| Error::UnknownTransport(text.to_owned()))?;
        // As in containers/image: the path ends at the first ':'.
        let (path, suffix) = match rest.split_once(':') {
            Some((p, s)) => (p, Some(s)),
            None => (rest, None),
        };
        match transport {
            "oci" => {
                let dir = SourcePath::resolve(base, path)?.into_path_buf();
                let tag = match suffix {
                    None => None,
                    Some(t) if airlock_payload::is_valid_tag(t) => Some(t.to_owned()),
                    Some(t) => return Err(invalid(format!("`{t}` is not a valid tag"))),
                };
                Ok(ImageSource::OciLayout { dir, tag })
            }
            "capture" => {
                let dir = SourcePath::resolve(base, rest)?.into_path_buf();
                crate::capture::Lock::load(&dir).map_err(|e| invalid(chain(&e)))?;
                Ok(ImageSource::Capture { dir })
            }
            "docker-archive" => {
                let file = SourcePath::resolve(base, path)?.into_path_buf();
                let reference = match suffix {
                    None => None,
                    Some(r) => Some(
                        r.parse()
                            .map_err(|e: ReferenceError| invalid(e.to_string()))?,
                    ),
                };
                Ok(ImageSource::DockerArchive { file, reference })
            }
            _ => Err(Error::UnknownTransport(text.to_owned())),
        }
    }
}

impl<'de> Deserialize<'de> for ImageSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(BaseRelativeVisitor {
            expecting: "an image source such as oci:images/app:1.0",
            parse: |base, value| ImageSource::parse(base, value),
        })
    }
}

/// Parses a string that names something relative to the spec's folder (in scope while the
/// spec is parsed), so a missing path is reported at its own line and column.
struct BaseRelativeVisitor<T> {
    expecting: &'static str,
    parse: fn(&Path, &str) -> Result<T>,
}

impl<T> Visitor<'_> for BaseRelativeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        let base = SOURCE_BASE.with(|base| base.borrow().clone());
        let result = match base {
            Some(base) => (self.parse)(&base, value),
            None => Err(Error::SourceWithoutBase(value.to_owned())),
        };
        result.map_err(|err| E::custom(chain(&err)))
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<ImageRef>(
            "an image reference such as docker.io/library/busybox:1.36",
            PhantomData,
        ))
    }
}

impl<'de> Deserialize<'de> for ImagePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<ImagePattern>(
            "an image reference or a pattern such as docker.io/library/*",
            PhantomData,
        ))
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `engine:`: `none`, `containerd`, `k3s`, or a map with `kind` and that engine's options.
///
/// ```yaml
/// engine: containerd
/// engine: {kind: containerd, namespace: k8s.io, pull: true, bin_dir: /usr/local/bin}
/// engine: {kind: k3s, binary: /usr/local/bin/k3s, manifests: /opt/edge/manifests,
///          args: [--disable=traefik], ready_timeout: 300}
/// ```
///
/// Payload paths left out are found among `files` when the installer is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EngineSpec {
    /// Files, registry and mirror config only.
    #[default]
    None,
    /// containerd, containerd-shim-runc-v2, runc and ctr from the payload.
    Containerd(ContainerdSpec),
    /// The k3s binary from the payload.
    K3s(K3sSpec),
}

/// Options of the `containerd` engine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerdSpec {
    /// The containerd namespace images are pre-pulled into.
    #[serde(default = "ContainerdSpec::default_namespace")]
    pub namespace: String,
    /// Pull every captured image once containerd runs.
    #[serde(default = "ContainerdSpec::default_pull")]
    pub pull: bool,
    /// The folder (among `files`' destinations) holding containerd, containerd-shim-runc-v2,
    /// runc and ctr; default: the folder of the only file named `containerd`.
    #[serde(default)]
    pub bin_dir: Option<DestPath>,
    /// The CRI's `sandbox_image` (every pod's pause image); default: the payload's
    /// containerd's own default ([`crate::sandbox`]).
    #[serde(default)]
    pub sandbox_image: Option<ImageRef>,
}

impl ContainerdSpec {
    fn default_namespace() -> String {
        "k8s.io".to_owned()
    }
    fn default_pull() -> bool {
        true
    }
}

impl Default for ContainerdSpec {
    fn default() -> Self {
        ContainerdSpec {
            namespace: Self::default_namespace(),
            pull: Self::default_pull(),
            bin_dir: None,
            sandbox_image: None,
        }
    }
}

/// Options of the `k3s` engine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sSpec {
    /// The k3s binary among `files`' destinations; default: the only file named `k3s`.
    #[serde(default)]
    pub binary: Option<DestPath>,
    /// A folder among `files`' destinations whose files go to k3s's auto-deploy folder.
    #[serde(default)]
    pub manifests: Option<DestPath>,
    /// Extra arguments for `k3s server`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Seconds to wait for the node to be Ready.
    #[serde(default = "K3sSpec::default_ready_timeout")]
    pub ready_timeout: u64,
}

impl K3sSpec {
    fn default_ready_timeout() -> u64 {
        300
    }
}

impl Default for K3sSpec {
    fn default() -> Self {
        K3sSpec {
            binary: None,
            manifests: None,
            args: Vec::new(),
            ready_timeout: Self::default_ready_timeout(),
        }
    }
}

impl EngineSpec {
    /// `none`, `containerd` or `k3s`.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineSpec::None => "none",
            EngineSpec::Containerd(_) => "containerd",
            EngineSpec::K3s(_) => "k3s",
        }
    }
}

/// The map form of `engine:`, tagged by `kind`.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum EngineMap {
    None,
    Containerd(ContainerdSpec),
    K3s(K3sSpec),
}

impl<'de> Deserialize<'de> for EngineSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EngineVisitor;
        impl<'de> Visitor<'de> for EngineVisitor {
            type Value = EngineSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`none`, `containerd`, `k3s`, or a map with `kind` and options")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EngineSpec, E> {
                match v {
                    "none" | "" => Ok(EngineSpec::None),
                    "containerd" => Ok(EngineSpec::Containerd(ContainerdSpec::default())),
                    "k3s" => Ok(EngineSpec::K3s(K3sSpec::default())),
                    other => Err(E::unknown_variant(other, &["none", "containerd", "k3s"])),
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<EngineSpec, E> {
                Ok(EngineSpec::None)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<EngineSpec, A::Error> {
                let m = EngineMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match m {
                    EngineMap::None => EngineSpec::None,
                    EngineMap::Containerd(c) => EngineSpec::Containerd(c),
                    EngineMap::K3s(k) => EngineSpec::K3s(k),
                })
            }
        }
        deserializer.deserialize_any(EngineVisitor)
    }
}

/// `hooks:`: scripts (relative to the spec's folder) `install` runs, each with a shebang
/// line (they are executed directly).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HooksSpec {
    /// Runs after preflight, before any file is laid out.
    #[serde(default)]
    pub pre_install: Option<SourcePath>,
    /// Runs after the engine is up, before the summary.
    #[serde(default)]
    pub post_install: Option<SourcePath>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Name,
    version: Version,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    files: Vec<RawFileSpec>,
    #[serde(default)]
    images: Option<Vec<RawImageSpec>>,
    #[serde(default)]
    discover: Option<Vec<SourcePath>>,
    #[serde(default)]
    engine: Option<EngineSpec>,
    #[serde(default)]
    hooks: Option<HooksSpec>,
    #[serde(default)]
    exclude: Option<Vec<ImagePattern>>,
}

/// An `images` entry. `ref` may only be left out by `from: capture:DIR` (every captured
/// image), which a derived struct cannot say; the errors and their locations are the ones a
/// derived struct gives (the key visitor for unknown keys, the mapping for a missing `ref`).
struct RawImageSpec {
    reference: Option<ImageRef>,
    from: Option<ImageSource>,
}

impl<'de> Deserialize<'de> for RawImageSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Ref,
            From,
        }
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = RawImageSpec;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an image entry with `ref` and `from`")
            }

            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawImageSpec, A::Error> {
                let (mut reference, mut from) = (None, None);
                while let Some(key) = map.next_key()? {
                    match key {
                        Field::Ref if reference.is_some() => {
                            return Err(de::Error::duplicate_field("ref"))
                        }
                        Field::From if from.is_some() => {
                            return Err(de::Error::duplicate_field("from"))
                        }
                        Field::Ref => reference = Some(map.next_value::<ImageRef>()?),
                        Field::From => from = Some(map.next_value::<Option<ImageSource>>()?),
                    }
                }
                let from = from.flatten();
                if reference.is_none() && !matches!(from, Some(ImageSource::Capture { .. })) {
                    return Err(de::Error::missing_field("ref"));
                }
                Ok(RawImageSpec { reference, from })
            }
        }
        deserializer.deserialize_map(EntryVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSpec {
    src: SourcePath,
    dest: DestPath,
    #[serde(default)]
    mode: Option<Mode>,
}

impl Spec {
    /// Reads and parses the spec at `path`; relative `src` paths are resolved against its folder.
    pub fn from_path(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Spec::from_str_at(&text, path)
    }

    /// Parses spec `text` as if it had been read from `spec_path`: relative `src` paths are
    /// resolved against `spec_path`'s folder (which is made absolute against the current
    /// directory) and messages name `spec_path`.
    pub fn from_str_at(text: &str, spec_path: &Path) -> Result<Spec> {
        let parent = spec_path.parent().unwrap_or(Path::new(""));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let base_dir = std::path::absolute(parent).map_err(|source| Error::Read {
            path: spec_path.to_owned(),
            source,
        })?;

        let raw: RawSpec = {
            let _scope = SourceBase::enter(base_dir.clone());
            serde_yaml_ng::from_str(text).map_err(|err| located(spec_path, &err))?
        };

        let platform = match raw.platform {
            Some(platform) => platform,
            None => Platform::host().ok_or_else(|| Error::Invalid {
                file: spec_path.to_owned(),
                line: 1,
                column: 1,
                message: format!(
                    "no `platform` given and the builder's own ({}) is not supported; set it",
                    std::env::consts::ARCH
                ),
            })?,
        };

        Ok(Spec {
            name: raw.name,
            version: raw.version,
            platform,
            files: raw
                .files
                .into_iter()
                .map(|file| FileSpec {
                    src: file.src.into_path_buf(),
                    dest: file.dest,
                    mode: file.mode,
                })
                .collect(),
            images: expand_images(raw.images.unwrap_or_default(), spec_path)?,
            engine: raw.engine.unwrap_or_default(),
            hooks: raw.hooks.unwrap_or_default(),
            discover: raw
                .discover
                .unwrap_or_default()
                .into_iter()
                .map(SourcePath::into_path_buf)
                .collect(),
            exclude: raw.exclude.unwrap_or_default(),
            base_dir,
            path: spec_path.to_owned(),
        })
    }
}

/// Turns `images` entries into [`ImageSpec`]s: an entry without `ref` (`from: capture:DIR`)
/// becomes one entry per captured reference, after the entries that name theirs (which win).
fn expand_images(raw: Vec<RawImageSpec>, spec_path: &Path) -> Result<Vec<ImageSpec>> {
    let mut images = Vec::with_capacity(raw.len());
    let mut captures = Vec::new();
    for image in raw {
        match (image.reference, image.from) {
            (Some(reference), from) => images.push(ImageSpec { reference, from }),
            (None, Some(ImageSource::Capture { dir })) => captures.push(dir),
            (None, _) => unreachable!("RawImageSpec requires `ref` here"),
        }
    }
    for dir in captures {
        let all = crate::capture::image_specs(&dir).map_err(|e| Error::Invalid {
            file: spec_path.to_owned(),
            line: 1,
            column: 1,
            message: chain(&e),
        })?;
        crate::capture::add_missing(&mut images, all);
    }
    Ok(images)
}

/// Turns a serde_yaml_ng error into [`Error::Invalid`] with the spec path and the location.
///
/// serde_yaml_ng appends " at line L column C" to its messages; the location moves to the front
/// in the `file:line:column` form editors and terminals recognise, so it is removed from the
/// message. Errors without a location (an empty document) point at 1:1.
fn located(spec_path: &Path, err: &serde_yaml_ng::Error) -> Error {
    let mut message = err.to_string();
    let (line, column) = match err.location() {
        Some(location) => {
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            if let Some(start) = message.find(&suffix) {
                message.replace_range(start..start + suffix.len(), "");
            }
            (location.line(), location.column())
        }
        None => (1, 1),
    };
    Error::Invalid {
        file: spec_path.to_owned(),
        line,
        column,
        message,
    }
}

/// Formats an error and its sources as one line, for serde messages (which only take text).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// -------------------------------------------------------------------------------------------
// The folder that `src` paths are resolved against while a spec is deserialized.
//
// serde's `Deserialize` takes no context, and the values it produces carry no positions, so the
// only way to report a missing `src` with serde_yaml_ng's `file:line:column` is to check it while
// the scalar is being deserialized. `Spec::from_str_at` therefore puts the spec's folder into a
// thread-local for the duration of `serde_yaml_ng::from_str` (which runs on the calling thread),
// and `SourcePath`'s visitor reads it. A `DeserializeSeed` chain would avoid the thread-local but
// needs hand-written visitors for every struct down to the file entry, losing the derived
// `deny_unknown_fields` handling. The guard restores the previous value, so nested or panicking
// parses leave no stale folder behind.
// -------------------------------------------------------------------------------------------

thread_local! {
    static SOURCE_BASE: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Sets the thread's source folder until dropped.
struct SourceBase {
    previous: Option<PathBuf>,
}

impl SourceBase {
    fn enter(dir: PathBuf) -> SourceBase {
        let previous = SOURCE_BASE.with(|base| base.replace(Some(dir)));
        SourceBase { previous }
    }
}

impl Drop for SourceBase {
    fn drop(&mut self) {
        let previous = self.previous.take();
        SOURCE_BASE.with(|base| *base.borrow_mut() = previous);
    }
}

// -------------------------------------------------------------------------------------------
// Value types.
// -------------------------------------------------------------------------------------------

/// Deserializes `T` from a string through `FromStr`, inside the visitor so that serde_yaml_ng
/// attaches the scalar's location to the error.
struct FromStrVisitor<T>(&'static str, PhantomData<T>);

impl<T> Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: std::error::Error,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        value.parse().map_err(|err: T::Err| E::custom(chain(&err)))
    }
}

/// Implements `Deserialize` through [`FromStrVisitor`] and `Serialize` through `Display`.
macro_rules! string_serde {
    ($type:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(FromStrVisitor::<$type>($expecting, PhantomData))
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

/// An installer name: `[a-z0-9][a-z0-9-]*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = Error;

    fn from_str(text: &str) -> Result<Name> {
        let mut bytes = text.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if first_ok && rest_ok {
            Ok(Name(text.to_owned()))
        } else {
            Err(Error::InvalidName(text.to_owned()))
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_serde!(Name, "a name such as `edge`");

/// An installer version: non-empty, without '/', whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(String);

impl Version {
    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Version {
    type Err = Error;

    fn from_str(text: &str) -> Result<Version> {
        let reason = if text.is_empty() {
            Some("it is empty")
        } else if text.contains('/') {
            Some("it contains '/'")
        } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("it contains whitespace or a control character")
        } else {
            None
        };
        match reason {
            None => Ok(Version(text.to_owned())),
            Some(reason) => Err(Error::InvalidVersion {
                value: text.to_owned(),
                reason,
            }),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_serde!(Version, "a version such as \"1.30.4-1\"");

/// A target platform in OCI notation, `os/arch[/variant]`; only `linux` on `amd64` or `arm64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl Platform {
    /// The platform of the running builder, if it is one airlock supports.
    pub fn host() -> Option<Platform> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            _ => return None,
        };
        if std::env::consts::OS != "linux" {
            return None;
        }
        Some(Platform {
            os: "linux".to_owned(),
            arch: arch.to_owned(),
            variant: None,
        })
    }

    /// The operating system, always `linux`.
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The architecture in Go/OCI naming: `amd64` or `arm64`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The architecture variant, such as `v8`, if given.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(text: &str) -> Result<Platform> {
        let invalid = || Error::InvalidPlatform(text.to_owned());
        let mut parts = text.split('/');
        let os = parts.next().ok_or_else(invalid)?;
        let arch = parts.next().ok_or_else(invalid)?;
        let variant = parts.next();
        if parts.next().is_some() || os != "linux" || !matches!(arch, "amd64" | "arm64") {
            return Err(invalid());
        }
        if let Some(variant) = variant {
            let token = !variant.is_empty()
                && variant
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !token {
                return Err(invalid());
            }
        }
        Ok(Platform {
            os: os.to_owned(),
            arch: arch.to_owned(),
            variant: variant.map(str::to_owned),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

string_serde!(Platform, "a platform such as linux/amd64");

/// Permission bits, at most `0o7777`.
///
/// In YAML, write it as an octal string (`"0755"`, `"755"`, `"0o755"`; an unquoted `0755` is a
/// string in YAML 1.2 too). A YAML number is taken as the value itself (`493` or `0o755`) but
/// must not exceed 511: a number such as `755` is almost always a mistyped `"0755"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(u32);

impl Mode {
    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Mode {
    type Error = Error;

    fn try_from(bits: u32) -> Result<Mode> {
        if bits <= 0o7777 {
            Ok(Mode(bits))
        } else {
            Err(Error::InvalidMode(format!("{bits:o}")))
        }
    }
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Mode> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let valid = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        let bits = valid
            .then(|| u32::from_str_radix(digits, 8).ok())
            .flatten()
            .filter(|bits| *bits <= 0o7777);
        bits.map(Mode)
            .ok_or_else(|| Error::InvalidMode(text.to_owned()))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModeVisitor;

        impl Visitor<'_> for ModeVisitor {
            type Value = Mode;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mode such as \"0755\"")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Mode, E> {
                value.parse().map_err(|err: Error| E::custom(chain(&err)))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Mode, E> {
                if value > 0o777 {
                    return Err(E::custom(Error::AmbiguousMode(value)));
                }
                Ok(Mode(value as u32))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Mode, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::custom(Error::InvalidMode(value.to_string()))),
                }
            }
        }

        deserializer.deserialize_any(ModeVisitor)
    }
}

/// A normalised path inside the target root.
///
/// Written in the spec as an absolute path; `//` and `.` components collapse, `..` components
/// are rejected. Stored without the leading '/', so the root itself is `""`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestPath(String);

impl DestPath {
    /// The path relative to the target root, '/'-separated, without a leading '/'; `""` for the
    /// root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root of the target.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for DestPath {
    type Err = Error;

    fn from_str(text: &str) -> Result<DestPath> {
        if text.contains('\0') {
            return Err(Error::PathHasNul(text.to_owned()));
        }
        let mut parts = Vec::new();
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(Error::DestEscapes(text.to_owned())),
                part => parts.push(part),
            }
        }
        if !text.starts_with('/') {
            return Err(Error::DestNotAbsolute(text.to_owned()));
        }
        Ok(DestPath(parts.join("/")))
    }
}

impl fmt::Display for DestPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

string_serde!(DestPath, "an absolute path such as /usr/local/bin/tool");

/// A source path that existed when the spec was read, resolved against the spec's folder.
///
/// Deserializing one needs the spec's folder, which only [`Spec::from_str_at`] provides (see
/// the comment on the thread-local in this module); elsewhere use [`SourcePath::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourcePath(PathBuf);

impl SourcePath {
    /// Resolves `text` against `base` (unless it is absolute) and checks that it exists; a
    /// symlink counts as existing even if its target does not.
    pub fn resolve(base: &Path, text: &str) -> Result<SourcePath> {
        if text.is_empty() {
            return Err(Error::SourceEmpty);
        }
        if text.contains('\0') {
            return Err(Error::PathHasNul(text.to_owned()));
        }
        let path = base.join(text);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok(SourcePath(path)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(Error::SourceNotFound(path)),
            Err(source) => Err(Error::SourceInspect { path, source }),
        }
    }

    /// The resolved path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The resolved path, by value.
    pub fn into_path_buf(self) -> PathBuf {
        self.0
    }
}

impl<'de> Deserialize<'de> for SourcePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(BaseRelativeVisitor {
            expecting: "a path relative to the spec's folder",
            parse: |base, value| SourcePath::resolve(base, value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec folder with `rootfs/` and `bin/containerd`.
    fn spec_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs/etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/containerd"), b"elf").unwrap();
        dir
    }

    fn parse(dir: &tempfile::TempDir, text: &str) -> Result<Spec> {
        Spec::from_str_at(text, &dir.path().join("airlock.yaml"))
    }

    fn parse_err(dir: &tempfile::TempDir, text: &str) -> String {
        match parse(dir, text) {
            Ok(spec) => panic!("expected an error, got {spec:?}"),
            Err(err) => err.to_string(),
        }
    }

    const VALID: &str = "\
name: edge
version: \"1.30.4-1\"
platform: linux/arm64/v8
files:
  - src: rootfs/
    dest: /
  - src: bin/containerd
    dest: /usr/local//bin/./containerd
    mode: \"0755\"
";

    #[test]
    fn valid_spec_parses_into_typed_values() {
        let dir = spec_dir();
        let spec = parse(&dir, VALID).unwrap();
        assert_eq!(spec.name.as_str(), "edge");
        assert_eq!(spec.version.as_str(), "1.30.4-1");
        assert_eq!(spec.platform.to_string(), "linux/arm64/v8");
        assert_eq!(spec.platform.arch(), "arm64");
        assert_eq!(spec.platform.variant(), Some("v8"));
        assert_eq!(spec.base_dir, dir.path());
        assert_eq!(spec.files.len(), 2);
        assert_eq!(spec.files[0].src, dir.path().join("rootfs/"));
        assert!(spec.files[0].dest.is_root());
        assert_eq!(spec.files[0].mode, None);
        assert_eq!(spec.files[1].src, dir.path().join("bin/containerd"));
        assert_eq!(spec.files[1].dest.as_str(), "usr/local/bin/containerd");
        assert_eq!(spec.files[1].dest.to_string(), "/usr/local/bin/containerd");
        assert_eq!(spec.files[1].mode.map(Mode::bits), Some(0o755));
    }

    #[test]
    fn spec_is_read_from_a_file_and_relative_to_its_folder() {
        let dir = spec_dir();
        let path = dir.path().join("airlock.yaml");
        std::fs::write(&path, VALID).unwrap();
        let spec = Spec::from_path(&path).unwrap();
        assert_eq!(spec.path, path);
        assert_eq!(spec.files[1].src, dir.path().join("bin/containerd"));
    }

    #[test]
    fn missing_spec_file_is_a_read_error() {
        let dir = spec_dir();
        let err = Spec::from_path(&dir.path().join("nope.yaml")).unwrap_err();
        assert!(matches!(err, Error::Read { .. }), "{err}");
        assert!(err.to_string().starts_with("failed to read spec"), "{err}");
    }

    #[test]
    fn platform_defaults_to_the_builders_own() {
        let dir = spec_dir();
        let spec = parse(&dir, "name: edge\nversion: '1'\n").unwrap();
        let expected = if cfg!(target_arch = "aarch64") {
            "linux/arm64"
        } else {
            "linux/amd64"
        };
        assert_eq!(spec.platform.to_string(), expected);
        assert!(spec.files.is_empty());
    }

    #[test]
    fn unquoted_numeric_version_keeps_its_text() {
        let dir = spec_dir();
        let spec = parse(&dir, "name: edge\nversion: 1.30\n").unwrap();
        assert_eq!(spec.version.as_str(), "1.30");
    }

    #[test]
    fn unknown_key_is_reported_with_its_location() {
        let dir = spec_dir();
        let text = "\
name: edge
version: '1'
files:
  - src: rootfs
    dest: /
  - dest: /x
    sorce: bin/containerd
";
        let err = parse_err(&dir, text);
        assert!(err.contains("airlock.yaml:7:5: "), "{err}");
        assert!(
            err.contains("unknown field `sorce`, expected one of `src`, `dest`, `mode`"),
            "{err}"
        );
        assert!(!err.contains(" at line "), "{err}");
    }

    #[test]
    fn unknown_top_level_key_is_reported_with_its_location() {
        let dir = spec_dir();
        let err = parse_err(&dir, "name: edge\nversion: '1'\nplatfrom: linux/amd64\n");
        assert!(err.contains("airlock.yaml:3:1: "), "{err}");
        assert!(err.contains("unknown field `platfrom`"), "{err}");
    }

    #[test]
    fn wrong_type_is_reported_with_its_location() {
        let dir = spec_dir();
        let err = parse_err(&dir, "name: edge\nversion: '1'\nfiles: 3\n");
        assert!(err.contains("airlock.yaml:3:8: "), "{err}");
        assert!(err.contains("invalid type: integer `3`"), "{err}");
    }

    #[test]
    fn missing_src_key_is_reported_with_a_location() {
        let dir = spec_dir();
        let err = parse_err(&dir, "name: edge\nversion: '1'\nfiles:\n  - dest: /x\n");
        assert!(err.contains("missing field `src`"), "{err}");
        assert!(err.contains("airlock.yaml:4:"), "{err}");
    }

    #[test]
    fn missing_source_is_reported_at_the_src_value() {
        let dir = spec_dir();
        let text = "\
name: edge
version: '1'
files:
  - src: rootfs
    dest: /
  - src: bin/runc
    dest: /usr/bin/runc
";
        let err = parse_err(&dir, text);
        assert!(err.contains("airlock.yaml:6:10: "), "{err}");
        let missing = dir.path().join("bin/runc");
        assert!(
            err.contains(&format!("source not found: {}", missing.display())),
            "{err}"
        );
    }

    #[test]
    fn absolute_source_is_kept_as_is() {
        let dir = spec_dir();
        let other = spec_dir();
        let src = other.path().join("bin/containerd");
        let text = format!(
            "name: edge\nversion: '1'\nfiles:\n  - src: {}\n    dest: /c\n",
            src.display()
        );
        let spec = parse(&dir, &text).unwrap();
        assert_eq!(spec.files[0].src, src);
    }

    #[test]
    fn dest_with_dotdot_escapes_the_root() {
        let dir = spec_dir();
        for dest in ["/../etc", "../x", "/usr/../../etc"] {
            let text =
                format!("name: edge\nversion: '1'\nfiles:\n  - src: rootfs\n    dest: {dest}\n");
            let err = parse_err(&dir, &text);
            assert!(err.contains("escapes the root"), "{dest}: {err}");
            assert!(err.contains("airlock.yaml:5:11: "), "{dest}: {err}");
        }
    }

    #[test]
    fn relative_dest_is_rejected() {
        let err = "usr/bin".parse::<DestPath>().unwrap_err();
        assert!(matches!(err, Error::DestNotAbsolute(_)), "{err}");
        assert!("/a\0b".parse::<DestPath>().is_err());
    }

    #[test]
    fn dest_is_normalised() {
        let dest: DestPath = "//usr/./local//bin/".parse().unwrap();
        assert_eq!(dest.as_str(), "usr/local/bin");
        let root: DestPath = "/./".parse().unwrap();
        assert!(root.is_root());
        assert_eq!(root.to_string(), "/");
    }

    #[test]
    fn bad_name_is_rejected_with_its_location() {
        let dir = spec_dir();
        let err = parse_err(&dir, "name: Edge_1\nversion: '1'\n");
        assert!(err.contains("airlock.yaml:1:7: "), "{err}");
        assert!(err.contains("invalid name `Edge_1`"), "{err}");
        for bad in ["", "-edge", "edge.1", "EDGE"] {
            assert!(bad.parse::<Name>().is_err(), "{bad:?}");
        }
        for good in ["edge", "0edge", "edge-1-30"] {
            assert_eq!(good.parse::<Name>().unwrap().as_str(), good);
        }
    }

    #[test]
    fn bad_version_is_rejected() {
        for bad in ["", "1/2", "1 2", "1\t2"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
        let dir = spec_dir();
        let err = parse_err(&dir, "name: edge\nversion: 'a/b'\n");
        assert!(
            err.contains("airlock.yaml:2:10: version: invalid version `a/b`"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_platform_is_rejected() {
        for bad in [
            "linux",
            "windows/amd64",
            "linux/riscv64",
            "linux/amd64/v3/x",
            "linux/arm64/",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?}");
        }
        let platform: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(platform.os(), "linux");
        assert_eq!(platform.variant(), None);
    }

    #[test]
    fn mode_accepts_octal_strings_and_small_numbers() {
        let dir = spec_dir();
        for (written, bits) in [
            ("\"0755\"", 0o755),
            ("0755", 0o755),
            ("'644'", 0o644),
            ("\"4755\"", 0o4755),
            ("0o750", 0o750),
            ("493", 0o755),
        ] {
            let text = format!(
                "name: edge\nversion: '1'\nfiles:\n  - src: bin/containerd\n    dest: /c\n    mode: {written}\n"
            );
            let spec = parse(&dir, &text).unwrap();
            assert_eq!(spec.files[0].mode.unwrap().bits(), bits, "{written}");
        }
    }

    #[test]
    fn invalid_or_ambiguous_mode_is_rejected_with_its_location() {
        let dir = spec_dir();
        for (written, expected) in [
            ("\"0999\"", "invalid mode `0999`"),
            ("\"17777\"", "invalid mode `17777`"),
            ("\"\"", "invalid mode ``"),
            ("755", "ambiguous mode 755"),
            ("-1", "invalid mode `-1`"),
        ] {
            let text = format!(
                "name: edge\nversion: '1'\nfiles:\n  - src: bin/containerd\n    dest: /c\n    mode: {written}\n"
            );
            let err = parse_err(&dir, &text);
            assert!(err.contains("airlock.yaml:6:11: "), "{written}: {err}");
            assert!(err.contains(expected), "{written}: {err}");
        }
    }

    #[test]
    fn mode_displays_as_four_octal_digits() {
        assert_eq!(Mode::try_from(0o755).unwrap().to_string(), "0755");
        assert!(Mode::try_from(0o10000).is_err());
    }

    #[test]
    fn images_parse_references_and_sources() {
        let dir = spec_dir();
        std::fs::create_dir_all(dir.path().join("images/app")).unwrap();
        std::fs::write(dir.path().join("images/etcd.tar"), b"").unwrap();
        let hex = "ab".repeat(32);
        let text = format!(
            "\
name: edge
version: '1'
images:
  - ref: busybox
  - ref: example.hub/team/app:1.0
    from: oci:images/app:1.0
  - ref: quay.io/coreos/etcd:v3.5.0
    from: docker-archive:images/etcd.tar:quay.io/coreos/etcd:v3.5.0
  - ref: registry.local:5000/a/b:1
    from: docker://127.0.0.1:5001/a/b:1
  - ref: docker.io/library/alpine@sha256:{hex}
  - ref: x/y
    from: oci:images/app
"
        );
        let spec = parse(&dir, &text).unwrap();
        let refs: Vec<String> = spec
            .images
            .iter()
            .map(|i| i.reference.to_string())
            .collect();
        assert_eq!(
            refs,
            [
                "docker.io/library/busybox:latest".to_owned(),
                "example.hub/team/app:1.0".to_owned(),
                "quay.io/coreos/etcd:v3.5.0".to_owned(),
                "registry.local:5000/a/b:1".to_owned(),
                format!("docker.io/library/alpine@sha256:{hex}"),
                "docker.io/x/y:latest".to_owned(),
            ]
        );
        assert_eq!(spec.images[0].from, None);
        assert_eq!(
            spec.images[1].from,
            Some(ImageSource::OciLayout {
                dir: dir.path().join("images/app"),
                tag: Some("1.0".into())
            })
        );
        assert_eq!(
            spec.images[2].from,
            Some(ImageSource::DockerArchive {
                file: dir.path().join("images/etcd.tar"),
                reference: Some("quay.io/coreos/etcd:v3.5.0".parse().unwrap())
            })
        );
        assert_eq!(
            spec.images[3].from,
            Some(ImageSource::Registry(
                "127.0.0.1:5001/a/b:1".parse().unwrap()
            ))
        );
        assert_eq!(spec.images[4].reference.tag(), None);
        assert!(spec.images[4].reference.digest().is_some());
        assert_eq!(
            spec.images[5].from,
            Some(ImageSource::OciLayout {
                dir: dir.path().join("images/app"),
                tag: None
            })
        );
    }

    #[test]
    fn an_unknown_image_transport_is_reported_with_its_location() {
        let dir = spec_dir();
        let text = "\
name: edge
version: '1'
images:
  - ref: busybox
  - ref: app:1
    from: containers-storage:app:1
";
        let err = parse_err(&dir, text);
        assert!(err.contains("airlock.yaml:6:11: "), "{err}");
        assert!(
            err.contains("unknown image transport in `containers-storage:app:1`"),
            "{err}"
        );
    }

    #[test]
    fn bad_image_entries_are_reported_with_their_location() {
        let dir = spec_dir();
        for (entry, at, expected) in [
            (
                "- ref: Busybox",
                "4:10",
                "invalid image reference `Busybox`",
            ),
            (
                "- ref: a\n    from: oci:missing",
                "5:11",
                "source not found",
            ),
            (
                "- ref: a\n    from: docker://",
                "5:11",
                "invalid image source `docker://`",
            ),
            (
                "- ref: a\n    from: oci:rootfs:-bad",
                "5:11",
                "`-bad` is not a valid tag",
            ),
            (
                "- ref: a\n    form: oci:rootfs",
                "5:5",
                "unknown field `form`",
            ),
            ("- from: oci:rootfs", "4:5", "missing field `ref`"),
        ] {
            let text = format!("name: edge\nversion: '1'\nimages:\n  {entry}\n");
            let err = parse_err(&dir, &text);
            assert!(
                err.contains(&format!("airlock.yaml:{at}: ")),
                "{entry}: {err}"
            );
            assert!(err.contains(expected), "{entry}: {err}");
        }
    }

    #[test]
    fn a_capture_without_ref_takes_every_captured_image_after_named_ones() {
        use crate::capture::{Lock, LockEntry};
        let dir = spec_dir();
        let cap = dir.path().join("cap");
        std::fs::create_dir(&cap).unwrap();
        let mut lock = Lock::default();
        for (r, b) in [("example.hub/team/app:1", 1), ("busybox:1.36", 2)] {
            lock.record(LockEntry {
                reference: r.parse().unwrap(),
                digest: airlock_payload::Sha256Digest([b; 32]),
                media_type: crate::image::OCI_MANIFEST.to_owned(),
            });
        }
        lock.save(&cap).unwrap();
        let text = "\
name: edge
version: '1'
images:
  - from: capture:cap
  - ref: busybox:1.36
    from: oci:rootfs
  - ref: example.hub/team/app:1
    from: capture:cap
";
        let spec = parse(&dir, text).unwrap();
        let got: Vec<(String, ImageSource)> = spec
            .images
            .iter()
            .map(|i| (i.reference.to_string(), i.from.clone().unwrap()))
            .collect();
        let capture = ImageSource::Capture { dir: cap.clone() };
        assert_eq!(
            got,
            [
                (
                    "docker.io/library/busybox:1.36".to_owned(),
                    ImageSource::OciLayout {
                        dir: dir.path().join("rootfs"),
                        tag: None
                    }
                ),
                ("example.hub/team/app:1".to_owned(), capture.clone()),
            ]
        );

        std::fs::create_dir(dir.path().join("empty")).unwrap();
        for (from, at, expected) in [
            ("capture:missing", "4:11", "source not found"),
            ("capture:empty", "4:11", "is not a capture"),
        ] {
            let err = parse_err(
                &dir,
                &format!("name: edge\nversion: '1'\nimages:\n  - from: {from}\n"),
            );
            assert!(err.contains(&format!("airlock.yaml:{at}: ")), "{err}");
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn engines_are_a_name_or_a_map_with_kind() {
        let dir = spec_dir();
        let head = "name: edge\nversion: '1'\n";
        let engine = |text: &str| parse(&dir, &format!("{head}{text}\n")).map(|s| s.engine);
        assert_eq!(engine("engine: none").unwrap(), EngineSpec::None);
        assert_eq!(
            engine("engine: containerd").unwrap(),
            EngineSpec::Containerd(ContainerdSpec::default())
        );
        assert_eq!(
            engine(
                "engine: {kind: containerd, namespace: default, pull: false, bin_dir: /opt/bin}"
            )
            .unwrap(),
            EngineSpec::Containerd(ContainerdSpec {
                namespace: "default".into(),
                pull: false,
                bin_dir: Some("/opt/bin".parse().unwrap()),
                sandbox_image: None,
            })
        );
        assert_eq!(
            engine("engine:\n  kind: k3s\n  args: [--disable=traefik]\n  ready_timeout: 60")
                .unwrap(),
            EngineSpec::K3s(K3sSpec {
                args: vec!["--disable=traefik".into()],
                ready_timeout: 60,
                ..K3sSpec::default()
            })
        );
        let err = parse_err(&dir, &format!("{head}engine: k8s\n"));
        assert!(
            err.contains("airlock.yaml:3:9: engine: unknown variant `k8s`"),
            "{err}"
        );
        let err = parse_err(
            &dir,
            &format!("{head}engine:\n  kind: k3s\n  binry: /k3s\n"),
        );
        // Tagged by `kind`, the map is read as a whole: the error points at its start.
        assert!(
            err.contains("airlock.yaml:4:3") && err.contains("unknown field `binry`"),
            "{err}"
        );
    }

    #[test]
    fn hooks_name_existing_scripts() {
        let dir = spec_dir();
        std::fs::write(dir.path().join("pre.sh"), "#!/bin/sh\n").unwrap();
        let head = "name: edge\nversion: '1'\n";
        let spec = parse(&dir, &format!("{head}hooks:\n  pre-install: pre.sh\n")).unwrap();
        assert_eq!(
            spec.hooks
                .pre_install
                .as_ref()
                .map(|p| p.as_path().to_owned()),
            Some(dir.path().join("pre.sh"))
        );
        assert!(spec.hooks.post_install.is_none());
        let err = parse_err(&dir, &format!("{head}hooks:\n  post-install: missing.sh\n"));
        assert!(
            err.contains("airlock.yaml:4:17") && err.contains("missing.sh"),
            "{err}"
        );
        let err = parse_err(&dir, &format!("{head}hooks:\n  during-install: pre.sh\n"));
        assert!(err.contains("unknown field `during-install`"), "{err}");
    }

    #[test]
    fn empty_unsupported_keys_are_accepted() {
        let dir = spec_dir();
        let text = "name: edge\nversion: '1'\nimages: []\ndiscover:\nhooks: {}\nengine: none\n";
        assert!(parse(&dir, text).is_ok());
    }

    #[test]
    fn discover_paths_and_exclude_patterns_parse() {
        let dir = spec_dir();
        let text = "name: edge\nversion: '1'\ndiscover: [rootfs/, bin/containerd]\nexclude:\n  - busybox\n  - 'docker.io/library/*'\n";
        let spec = parse(&dir, text).unwrap();
        assert_eq!(
            spec.discover,
            [
                dir.path().join("rootfs/"),
                dir.path().join("bin/containerd")
            ]
        );
        let exclude: Vec<String> = spec.exclude.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            exclude,
            ["docker.io/library/busybox:latest", "docker.io/library/*"]
        );
        let none = parse(&dir, "name: edge\nversion: '1'\ndiscover:\nexclude: []\n").unwrap();
        assert!(none.discover.is_empty() && none.exclude.is_empty());
    }

    #[test]
    fn bad_discover_or_exclude_entries_are_reported_with_their_location() {
        let dir = spec_dir();
        for (entry, at, expected) in [
            ("discover: [rootfs, manifests/]", "3:20", "source not found"),
            ("discover: manifests", "3:11", "invalid type"),
            (
                "exclude: ['Busy Box']",
                "3:11",
                "invalid image reference `Busy Box`",
            ),
            (
                "exclude: ['a b*']",
                "3:11",
                "invalid exclude pattern `a b*`",
            ),
        ] {
            let err = parse_err(&dir, &format!("name: edge\nversion: '1'\n{entry}\n"));
            assert!(
                err.contains(&format!("airlock.yaml:{at}: ")),
                "{entry}: {err}"
            );
            assert!(err.contains(expected), "{entry}: {err}");
        }
    }

    #[test]
    fn yaml_syntax_error_has_a_location() {
        let dir = spec_dir();
        let err = parse_err(&dir, "name: edge\nversion: [\n");
        assert!(err.contains("airlock.yaml:"), "{err}");
        assert!(matches!(
            parse(&dir, "name: [").unwrap_err(),
            Error::Invalid { .. }
        ));
    }

    #[test]
    fn source_path_needs_a_spec_folder_in_scope() {
        let result: std::result::Result<SourcePath, _> = serde_yaml_ng::from_str("rootfs");
        let err = result.unwrap_err().to_string();
        assert!(err.contains("no spec folder in scope"), "{err}");
    }

    #[test]
    fn source_folder_is_cleared_after_parsing() {
        let dir = spec_dir();
        parse(&dir, VALID).unwrap();
        assert!(SOURCE_BASE.with(|base| base.borrow().is_none()));
    }
}
