//! Image signatures and attestations (`signatures: true`): besides an image, capture what
//! policy controllers verify it with, from the same source, so they can verify offline.
//!
//! For an image whose top-level digest is `sha256:<hex>`, two conventions are looked up in
//! the image's own repository:
//!
//! - cosign's tags: `sha256-<hex>.sig` (signatures), `.att` (attestations), `.sbom`;
//! - OCI 1.1 referrers of the digest (manifests whose `subject` is the image): from a
//!   registry, the referrers API, else the referrers tag schema (an index tagged
//!   `sha256-<hex>`, what distribution 2.8 and cosign's fallback give); from an OCI layout,
//!   every manifest of `index.json` whose `subject` names the image.
//!
//! What is found is captured like any image (manifests and blobs verified): the tags under
//! their names, the referrers by digest. What is absent is simply not there. Docker archives
//! and capture folders hold no such artifacts; for them nothing is looked up.

use std::path::Path;

use airlock_payload::Sha256Digest;
use serde::Deserialize;

use super::blob::CapturedImage;
use super::error::{Error, ErrorKind, RegistryError};
use super::layout::LayoutIndex;
use super::parallel::{capture_one, CaptureOptions};
use super::registry::Puller;
use crate::progress::ImageBar;
use crate::reference::ImageRef;
use crate::spec::{ImageSource, ImageSpec};

/// cosign's tag suffixes, in the order they are looked up.
pub const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

fn not_found(kind: &ErrorKind) -> bool {
    match kind {
        ErrorKind::TagNotFound { .. } | ErrorKind::DigestNotFound { .. } => true,
        ErrorKind::Registry(e) => matches!(**e, RegistryError::NotFound { .. }),
        _ => false,
    }
}

/// `spec`'s source, asked for `tag` (or, with `None`, for the digest of `pull`).
fn source_for(
    spec: &ImageSpec,
    tag: Option<&str>,
    digest: Option<Sha256Digest>,
) -> Option<Option<ImageSource>> {
    let retarget = |r: &ImageRef| -> ImageRef {
        let text = match (tag, digest) {
            (Some(t), _) => format!("{}/{}:{t}", r.registry(), r.repository()),
            (None, Some(d)) => format!("{}/{}@{d}", r.registry(), r.repository()),
            (None, None) => r.to_string(),
        };
        text.parse()
            .expect("a valid reference with another tag or digest")
    };
    match &spec.from {
        None => Some(None),
        Some(ImageSource::Registry(pull)) => Some(Some(ImageSource::Registry(retarget(pull)))),
        Some(ImageSource::OciLayout { dir, .. }) => Some(Some(ImageSource::OciLayout {
            dir: dir.clone(),
            tag: tag.map(str::to_owned),
        })),
        Some(ImageSource::DockerArchive { .. }) | Some(ImageSource::Capture { .. }) => None,
    }
}

fn served_as(spec: &ImageSpec, tag: Option<&str>, digest: Option<Sha256Digest>) -> ImageRef {
    let r = &spec.reference;
    let text = match (tag, digest) {
        (Some(t), _) => format!("{}/{}:{t}", r.registry(), r.repository()),
        (None, Some(d)) => format!("{}/{}@{d}", r.registry(), r.repository()),
        (None, None) => r.to_string(),
    };
    text.parse()
        .expect("a valid reference with another tag or digest")
}

/// The manifests of the OCI layout `dir` whose `subject` is `subject`.
fn layout_referrers(dir: &Path, subject: Sha256Digest) -> Result<Vec<Sha256Digest>, ErrorKind> {
    #[derive(Deserialize)]
    struct Subject {
        digest: String,
    }
    #[derive(Deserialize)]
    struct WithSubject {
        subject: Option<Subject>,
    }
    let location = dir.display().to_string();
    let bytes = std::fs::read(dir.join("index.json")).map_err(|source| ErrorKind::Io {
        context: format!("read {location}/index.json"),
        source,
    })?;
    let index = LayoutIndex::parse(&bytes, &location)?;
    let mut out = Vec::new();
    for d in &index.manifests {
        let Ok(digest) = d.sha256() else { continue };
        // A manifest over 4 MiB is no referrer worth reading (registries refuse them).
        if d.size > 4 << 20 {
            continue;
        }
        let Ok(m) = std::fs::read(dir.join("blobs/sha256").join(digest.hex())) else {
            continue;
        };
        let names_subject = serde_json::from_slice::<WithSubject>(&m)
            .ok()
            .and_then(|w| w.subject)
            .is_some_and(|s| s.digest == subject.to_string());
        if names_subject && !out.contains(&digest) {
            out.push(digest);
        }
    }
    Ok(out)
}

/// Captures the cosign tags and OCI referrers of each captured image whose spec `wants`
/// them. `captured[i]` is the image of `specs[i]`.
pub fn capture_signatures(
    specs: &[ImageSpec],
    captured: &[CapturedImage],
    wants: &dyn Fn(&ImageRef) -> bool,
    options: &CaptureOptions,
) -> Result<Vec<CapturedImage>, Error> {
    let chosen: Vec<(&ImageSpec, &CapturedImage)> = specs
        .iter()
        .zip(captured)
        .filter(|(s, _)| wants(&s.reference))
        .collect();
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let needs_registry = chosen
        .iter()
        .any(|(s, _)| matches!(s.from, None | Some(ImageSource::Registry(_))));
    let err = |spec: &ImageSpec| {
        let image = spec.reference.to_string();
        move |kind| Error { image, kind }
    };
    let puller = if needs_registry {
        Some(Puller::new(&options.registry).map_err(err(chosen[0].0))?)
    } else {
        None
    };
    let bar = ImageBar::hidden();
    let mut out: Vec<CapturedImage> = Vec::new();
    for (spec, image) in chosen {
        let subject = image.image.digest;
        let hex = subject.hex();
        if source_for(spec, None, None).is_none() {
            tracing::warn!(
                image = %spec.reference,
                "signatures: true has no effect for a docker-archive or capture source"
            );
            continue;
        }
        let mut found = Vec::new();
        for suffix in COSIGN_SUFFIXES {
            let tag = format!("sha256-{hex}.{suffix}");
            let artifact = ImageSpec {
                reference: served_as(spec, Some(&tag), None),
                from: source_for(spec, Some(&tag), None).expect("checked above"),
            };
            match capture_one(&artifact, options, puller.as_ref(), &bar) {
                Ok(c) => found.push(c),
                Err(kind) if not_found(&kind) => {}
                Err(kind) => return Err(err(&artifact)(kind)),
            }
        }
        let referrers = match &spec.from {
            Some(ImageSource::OciLayout { dir, .. }) => layout_referrers(dir, subject),
            Some(ImageSource::Registry(pull)) => puller
                .as_ref()
                .expect("a puller for registry sources")
                .referrers(pull, subject, &bar),
            None => puller
                .as_ref()
                .expect("a puller for registry sources")
                .referrers(&spec.reference, subject, &bar),
            _ => Ok(Vec::new()),
        }
        .map_err(err(spec))?;
        for digest in referrers {
            let artifact = ImageSpec {
                reference: served_as(spec, None, Some(digest)),
                from: source_for(spec, None, Some(digest)).expect("checked above"),
            };
            match capture_one(&artifact, options, puller.as_ref(), &bar) {
                Ok(c) => found.push(c),
                Err(kind) if not_found(&kind) => {
                    tracing::warn!(image = %spec.reference, %digest, "listed referrer not found")
                }
                Err(kind) => return Err(err(&artifact)(kind)),
            }
        }
        tracing::info!(
            image = %spec.reference,
            artifacts = found.len(),
            "signatures and referrers captured"
        );
        out.extend(found);
    }
    Ok(out)
}
