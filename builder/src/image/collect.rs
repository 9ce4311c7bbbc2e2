//! Walking an image: from its top manifest or index through a [`BlobStore`], keeping the
//! index verbatim, picking the spec's platform, and gathering every blob verified; then the
//! payload's record of the image ([`finish`]).

use std::collections::HashSet;

use airlock_payload::{Image, ManifestRef, Sha256Digest};

use super::blob::{verify_bytes, BlobKind, BlobStore, CapturedImage, ImageBlob};
use super::error::ErrorKind;
use super::manifest::{AnyManifest, ConfigPlatform, DescPlatform, Descriptor};
use super::media::{is_index, layer_is_compressed, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST};
use crate::progress::ImageBar;
use crate::reference::ImageRef;
use crate::spec::Platform;

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
    pub(super) fn push(
        &mut self,
        seen: &mut HashSet<Sha256Digest>,
        blob: ImageBlob,
        content: bool,
    ) {
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
