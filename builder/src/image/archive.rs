//! `docker save` archives (`docker-archive:FILE[:REF]`).
//!
//! The tar is indexed once (where each member's data starts); blobs are then read in place
//! with pread, never unpacked. Two layouts exist:
//!
//! - docker 25 and later write an OCI layout (`index.json`, `blobs/sha256/...`) inside the
//!   tar: it is read like an `oci:` folder, the image picked by `io.containerd.image.name`
//!   or `org.opencontainers.image.ref.name`.
//! - older docker writes `manifest.json` (`Config`, `RepoTags`, `Layers`) with uncompressed
//!   `<id>/layer.tar` members and no manifest: airlock synthesizes an OCI image manifest
//!   whose layer digests are the sha256 of each `layer.tar`, which must equal the config's
//!   `rootfs.diff_ids` (a gzip-compressed layer is accepted when its decompressed content
//!   matches). The synthesized JSON has a fixed key order, so the same archive always gives
//!   the same manifest digest.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use airlock_payload::{ManifestRef, Sha256Digest};
use serde::{Deserialize, Serialize};

use super::blob::{verify_hashed, CapturedImage, FileRange, ImageBlob};
use super::collect::{finish, Collected};
use super::error::{io_kind, ArchiveError, ErrorKind};
use super::layout::{capture_from, LayoutIndex, RangeStore, REF_NAME};
use super::manifest::{ConfigPlatform, DescPlatform, Descriptor};
use super::media::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST};
use crate::progress::ImageBar;
use crate::reference::ImageRef;
use crate::spec::Platform;

/// The annotation containerd and docker put the full image name in.
pub const IMAGE_NAME: &str = "io.containerd.image.name";

/// Where a member's data is inside the archive.
#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// The members of a tar, by normalised path.
#[derive(Debug)]
pub struct TarIndex {
    path: PathBuf,
    members: HashMap<String, Member>,
}

/// `a/./b/../c` → `a/c`; leading `/` and `./` dropped.
fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl TarIndex {
    /// Reads the headers of every member of the tar at `path` (not their data).
    pub fn open(path: &Path) -> Result<TarIndex, ArchiveError> {
        let tar_err = |source| ArchiveError::Tar {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(tar_err)?;
        let mut archive = tar::Archive::new(io::BufReader::new(file));
        let mut members = HashMap::new();
        for entry in archive.entries().map_err(tar_err)? {
            let entry = entry.map_err(tar_err)?;
            let name = entry.path().map_err(tar_err)?;
            let name = normalise(&name.to_string_lossy());
            let header = entry.header();
            let member = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
                tar::EntryType::Symlink => {
                    let target = entry.link_name().map_err(tar_err)?.unwrap_or_default();
                    let target = target.to_string_lossy();
                    let parent = name.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                    if target.starts_with('/') {
                        Member::Link(normalise(&target))
                    } else {
                        Member::Link(normalise(&format!("{parent}/{target}")))
                    }
                }
                tar::EntryType::Link => {
                    let target = entry.link_name().map_err(tar_err)?.unwrap_or_default();
                    Member::Link(normalise(&target.to_string_lossy()))
                }
                _ => continue,
            };
            members.insert(name, member);
        }
        Ok(TarIndex {
            path: path.to_owned(),
            members,
        })
    }

    /// The data range of member `name`, following links.
    pub fn range(&self, name: &str) -> Option<io::Result<FileRange>> {
        let mut name = normalise(name);
        for _ in 0..16 {
            match self.members.get(&name)? {
                Member::File { offset, size } => {
                    return Some(FileRange::new(self.path.clone(), *offset, *size))
                }
                Member::Link(target) => name = target.clone(),
            }
        }
        None
    }

    fn require(&self, name: &str) -> Result<FileRange, ErrorKind> {
        match self.range(name) {
            Some(r) => r.map_err(io_kind(format!("open {}", self.path.display()))),
            None => Err(ArchiveError::Missing {
                path: self.path.clone(),
                member: name.to_owned(),
            }
            .into()),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ErrorKind> {
        let range = self.require(name)?;
        let mut bytes = Vec::new();
        range
            .reader()
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(io_kind(format!("read {name} in {}", self.path.display())))?;
        Ok(bytes)
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T, ErrorKind> {
        let bytes = self.read(name)?;
        serde_json::from_slice(&bytes).map_err(|source| {
            ArchiveError::Json {
                path: self.path.clone(),
                member: name.to_owned(),
                source,
            }
            .into()
        })
    }
}

/// One image of a legacy `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LegacyImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct LegacyConfig {
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// A descriptor in the synthesized manifest (fixed key order).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SynthDescriptor {
    media_type: &'static str,
    digest: String,
    size: u64,
}

/// The synthesized OCI image manifest (fixed key order).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SynthManifest {
    schema_version: u32,
    media_type: &'static str,
    config: SynthDescriptor,
    layers: Vec<SynthDescriptor>,
}

/// True when `name` (a tag as written in the archive) names the same image as `wanted`.
fn same_image(name: &str, wanted: &ImageRef) -> bool {
    name.parse::<ImageRef>().is_ok_and(|n| n == *wanted)
}

/// Captures an image from the docker-archive `file`: the one named `wanted`, else the only
/// one.
pub fn capture(
    file: &Path,
    wanted: Option<&ImageRef>,
    served: &ImageRef,
    platform: &Platform,
    bar: &ImageBar,
) -> Result<CapturedImage, ErrorKind> {
    let tar = TarIndex::open(file)?;
    let location = file.display().to_string();
    if tar.range("index.json").is_some() {
        let index: LayoutIndex = tar.json("index.json")?;
        let names = |d: &Descriptor| {
            d.annotation(IMAGE_NAME)
                .or(d.annotation(REF_NAME))
                .unwrap_or(&d.digest)
                .to_owned()
        };
        let desc = match wanted {
            Some(w) => index
                .manifests
                .iter()
                .find(|d| {
                    d.annotation(IMAGE_NAME).is_some_and(|n| same_image(n, w))
                        || d.annotation(REF_NAME)
                            .is_some_and(|n| same_image(n, w) || Some(n) == w.tag())
                })
                .ok_or_else(|| ArchiveError::NotFound {
                    path: file.to_owned(),
                    wanted: w.to_string(),
                    available: index.manifests.iter().map(names).collect(),
                })?,
            None => match index.manifests.as_slice() {
                [only] => only,
                many => {
                    return Err(ArchiveError::Ambiguous {
                        path: file.to_owned(),
                        available: many.iter().map(names).collect(),
                    }
                    .into())
                }
            },
        };
        let store = RangeStore {
            location,
            find: |d: Sha256Digest| tar.range(&format!("blobs/sha256/{}", d.hex())),
        };
        return capture_from(&store, desc, served, platform, bar);
    }
    if tar.range("manifest.json").is_none() {
        return Err(ArchiveError::NotAnArchive(file.to_owned()).into());
    }
    let images: Vec<LegacyImage> = tar.json("manifest.json")?;
    let all_tags = || -> Vec<String> {
        images
            .iter()
            .flat_map(|i| i.repo_tags.clone().unwrap_or_default())
            .collect()
    };
    let image = match wanted {
        Some(w) => images
            .iter()
            .find(|i| i.repo_tags.iter().flatten().any(|t| same_image(t, w)))
            .ok_or_else(|| ArchiveError::NotFound {
                path: file.to_owned(),
                wanted: w.to_string(),
                available: all_tags(),
            })?,
        None => match images.as_slice() {
            [only] => only,
            _ => {
                return Err(ArchiveError::Ambiguous {
                    path: file.to_owned(),
                    available: all_tags(),
                }
                .into())
            }
        },
    };
    capture_legacy(&tar, image, served, platform, bar)
}

fn capture_legacy(
    tar: &TarIndex,
    image: &LegacyImage,
    served: &ImageRef,
    platform: &Platform,
    bar: &ImageBar,
) -> Result<CapturedImage, ErrorKind> {
    let path = tar.path.clone();
    let config_bytes = tar.read(&image.config)?;
    let config_digest = Sha256Digest::of(&config_bytes);
    let config: LegacyConfig =
        serde_json::from_slice(&config_bytes).map_err(|source| ArchiveError::Json {
            path: path.clone(),
            member: image.config.clone(),
            source,
        })?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != image.layers.len() {
        return Err(ArchiveError::LayerCount {
            path,
            image: image
                .repo_tags
                .iter()
                .flatten()
                .next()
                .cloned()
                .unwrap_or_else(|| image.config.clone()),
            diff_ids: diff_ids.len(),
            layers: image.layers.len(),
        }
        .into());
    }
    let ranges: Vec<FileRange> = image
        .layers
        .iter()
        .map(|l| tar.require(l))
        .collect::<Result<_, _>>()?;
    bar.add_total(ranges.iter().map(|r| r.len).sum());

    let mut layer_blobs = Vec::with_capacity(ranges.len());
    let mut descriptors = Vec::with_capacity(ranges.len());
    for ((member, range), diff_id) in image.layers.iter().zip(ranges).zip(&diff_ids) {
        let read_err = io_kind(format!("read {member} in {}", path.display()));
        let mut magic = [0u8; 2];
        let gzip = range.len >= 2
            && range
                .reader()
                .and_then(|mut r| r.read_exact(&mut magic))
                .is_ok()
            && magic == [0x1f, 0x8b];
        let (digest, len) = range.hash().map_err(read_err)?;
        verify_hashed(digest, len, digest, Some(range.len))?;
        let content = if gzip {
            let reader = range
                .reader()
                .map_err(io_kind(format!("read {member} in {}", path.display())))?;
            Sha256Digest::of_reader(flate2::read::GzDecoder::new(reader))
                .map_err(io_kind(format!(
                    "decompress {member} in {}",
                    path.display()
                )))?
                .0
        } else {
            digest
        };
        if content.to_string() != *diff_id {
            return Err(ArchiveError::DiffId {
                path,
                member: member.clone(),
                expected: diff_id.clone(),
                actual: content,
            }
            .into());
        }
        bar.add_done(range.len);
        let media_type = if gzip { OCI_LAYER_GZIP } else { OCI_LAYER_TAR };
        descriptors.push(SynthDescriptor {
            media_type,
            digest: digest.to_string(),
            size: range.len,
        });
        layer_blobs.push(ImageBlob {
            digest,
            size: range.len,
            media_type: media_type.to_owned(),
            precompressed: gzip,
            source: Box::new(range),
        });
    }
    let manifest = SynthManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config: SynthDescriptor {
            media_type: OCI_CONFIG,
            digest: config_digest.to_string(),
            size: config_bytes.len() as u64,
        },
        layers: descriptors,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let manifest_digest = Sha256Digest::of(&manifest_bytes);
    let label = serde_json::from_slice::<ConfigPlatform>(&config_bytes)
        .ok()
        .filter(|c| !c.os.is_empty() && !c.architecture.is_empty())
        .map(|c| {
            DescPlatform {
                os: c.os,
                architecture: c.architecture,
                variant: c.variant,
            }
            .to_string()
        });
    if let Some(l) = &label {
        if !l.starts_with(&format!("{}/{}", platform.os(), platform.arch())) {
            tracing::warn!(image = %served, archive = %path.display(), "the image is for {l}, the installer for {platform}");
        }
    }

    let mut collected = Collected {
        manifests: vec![ManifestRef {
            digest: manifest_digest,
            media_type: OCI_MANIFEST.to_owned(),
            platform: label,
        }],
        blobs: Vec::new(),
        content: vec![config_digest],
    };
    let mut seen = std::collections::HashSet::new();
    collected.push(
        &mut seen,
        ImageBlob {
            digest: manifest_digest,
            size: manifest_bytes.len() as u64,
            media_type: OCI_MANIFEST.to_owned(),
            precompressed: false,
            source: Box::new(manifest_bytes),
        },
        false,
    );
    collected.push(
        &mut seen,
        ImageBlob {
            digest: config_digest,
            size: config_bytes.len() as u64,
            media_type: OCI_CONFIG.to_owned(),
            precompressed: false,
            source: Box::new(config_bytes),
        },
        true,
    );
    for blob in layer_blobs {
        collected.push(&mut seen, blob, true);
    }
    finish(served, manifest_digest, collected)
}
