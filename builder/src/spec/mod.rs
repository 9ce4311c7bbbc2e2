//! The `airlock.yaml` spec: what an installer holds.
//!
//! [`Spec::from_path`] reads a spec and turns it into typed values. Every value is parsed into a
//! newtype ([`Name`], [`Version`], [`Platform`], [`Mode`], [`DestPath`], [`SourcePath`]) whose
//! `Deserialize` goes through its `FromStr` inside a serde visitor, so an invalid value cannot
//! exist and every error carries the `file:line:column` of the offending spot ([`Error`]):
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
//!
//! The parts, each importing only those listed before it:
//!
//! - `error`: [`Error`], one type for reading a spec and for every value in it.
//! - `de`: serde plumbing (`FromStr` visitors, the spec folder in scope, located errors).
//! - `values`: [`Name`] and [`Version`] (the payload format's rule), [`Platform`], [`Mode`],
//!   [`DestPath`], [`SourcePath`].
//! - `images`: [`ImageSpec`], [`ImageSource`], and the references of a capture folder
//!   ([`captured`], [`add_missing`]).
//! - `engine`: [`EngineSpec`] and [`HooksSpec`].
//! - [`charts`]: the `charts:` entries (Helm charts discovery renders, with their values).
//! - this file: [`Spec`] and [`FileSpec`], the document as a whole.

pub mod charts;
mod de;
mod engine;
mod error;
mod images;
mod values;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::discover::pattern::ImagePattern;
pub use crate::reference::{ImageRef, ReferenceError};
pub use engine::{ContainerdSpec, EngineSpec, HooksSpec, K3sSpec, KubeadmSpec};
pub use error::{Error, Result};
pub use images::{add_missing, captured, ImageSource, ImageSpec};
pub use values::{DestPath, Mode, Name, NameError, Platform, SourcePath, Version, VersionError};

use de::{located, SourceBase};
use images::{expand_images, RawImageSpec};

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
    /// Capture the cosign signatures, attestations, SBOMs and OCI referrers of every image
    /// (`signatures:`, default false); an `images` entry's own `signatures:` wins.
    pub signatures: bool,
    /// The `images` entries that say `signatures:` themselves.
    pub image_signatures: Vec<(ImageRef, bool)>,
    /// The cluster engine `install` runs.
    pub engine: EngineSpec,
    /// Scripts `install` runs before and after.
    pub hooks: HooksSpec,
    /// Folders and files to discover image references in (`discover:`), resolved against the
    /// spec's folder; they existed when the spec was read.
    pub discover: Vec<PathBuf>,
    /// What drops discovered references (`exclude:`).
    pub exclude: Vec<ImagePattern>,
    /// Helm charts discovery renders with these values (`charts:`, [`charts`]).
    pub charts: Vec<charts::ChartSpec>,
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
    signatures: Option<bool>,
    #[serde(default)]
    discover: Option<Vec<SourcePath>>,
    #[serde(default)]
    engine: Option<EngineSpec>,
    #[serde(default)]
    hooks: Option<HooksSpec>,
    #[serde(default)]
    exclude: Option<Vec<ImagePattern>>,
    #[serde(default)]
    charts: Option<Vec<charts::ChartSpec>>,
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
    /// Whether the signatures and referrers of `image` are captured: its `images` entry's
    /// `signatures:`, else the spec-wide one.
    pub fn wants_signatures(&self, image: &ImageRef) -> bool {
        self.image_signatures
            .iter()
            .find(|(r, _)| r == image)
            .map_or(self.signatures, |(_, s)| *s)
    }

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

        let (images, image_signatures) = expand_images(raw.images.unwrap_or_default(), spec_path)?;
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
            images,
            signatures: raw.signatures.unwrap_or(false),
            image_signatures,
            engine: raw.engine.unwrap_or_default(),
            hooks: raw.hooks.unwrap_or_default(),
            discover: raw
                .discover
                .unwrap_or_default()
                .into_iter()
                .map(SourcePath::into_path_buf)
                .collect(),
            exclude: raw.exclude.unwrap_or_default(),
            charts: raw.charts.unwrap_or_default(),
            base_dir,
            path: spec_path.to_owned(),
        })
    }
}
