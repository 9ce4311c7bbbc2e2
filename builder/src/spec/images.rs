//! `images:`: which images an installer serves ([`ImageSpec`]) and where each comes from
//! ([`ImageSource`], containers-transport syntax).
//!
//! A `capture:DIR` source is checked here only as far as the spec goes: the folder exists and
//! has a readable lock file, and an entry without `ref` becomes one entry per captured
//! reference ([`captured`]). Reading the images out of the folder is an image source's job
//! (the builder's `image::capture` module).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::de::{chain, BaseRelativeVisitor};
use super::error::{Error, Result};
use super::values::SourcePath;
use crate::capture::lock::{Lock, LockError};
use crate::reference::{ImageRef, ReferenceError};

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
                Lock::load(&dir).map_err(|e| invalid(chain(&e)))?;
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

/// An `images` entry. `ref` may only be left out by `from: capture:DIR` (every captured
/// image), which a derived struct cannot say; the errors and their locations are the ones a
/// derived struct gives (the key visitor for unknown keys, the mapping for a missing `ref`).
pub(super) struct RawImageSpec {
    reference: Option<ImageRef>,
    from: Option<ImageSource>,
    signatures: Option<bool>,
}

impl<'de> Deserialize<'de> for RawImageSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Ref,
            From,
            Signatures,
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
                let (mut reference, mut from, mut signatures) = (None, None, None);
                while let Some(key) = map.next_key()? {
                    match key {
                        Field::Ref if reference.is_some() => {
                            return Err(de::Error::duplicate_field("ref"))
                        }
                        Field::From if from.is_some() => {
                            return Err(de::Error::duplicate_field("from"))
                        }
                        Field::Signatures if signatures.is_some() => {
                            return Err(de::Error::duplicate_field("signatures"))
                        }
                        Field::Signatures => signatures = Some(map.next_value::<bool>()?),
                        Field::Ref => reference = Some(map.next_value::<ImageRef>()?),
                        Field::From => from = Some(map.next_value::<Option<ImageSource>>()?),
                    }
                }
                let from = from.flatten();
                if reference.is_none() && !matches!(from, Some(ImageSource::Capture { .. })) {
                    return Err(de::Error::missing_field("ref"));
                }
                Ok(RawImageSpec {
                    reference,
                    from,
                    signatures,
                })
            }
        }
        deserializer.deserialize_map(EntryVisitor)
    }
}

/// The `images` entries that say `signatures:` themselves, with what they say.
pub(super) type SignatureChoices = Vec<(ImageRef, bool)>;

/// Turns `images` entries into [`ImageSpec`]s: an entry without `ref` (`from: capture:DIR`)
/// becomes one entry per captured reference, after the entries that name theirs (which win).
/// Also returns the entries' own `signatures:` choices.
pub(super) fn expand_images(
    raw: Vec<RawImageSpec>,
    spec_path: &Path,
) -> Result<(Vec<ImageSpec>, SignatureChoices)> {
    let mut images = Vec::with_capacity(raw.len());
    let mut captures = Vec::new();
    let mut signatures = Vec::new();
    for image in raw {
        match (image.reference, image.from) {
            (Some(reference), from) => {
                if let Some(s) = image.signatures {
                    signatures.push((reference.clone(), s));
                }
                images.push(ImageSpec { reference, from })
            }
            (None, Some(ImageSource::Capture { dir })) => captures.push(dir),
            (None, _) => unreachable!("RawImageSpec requires `ref` here"),
        }
    }
    for dir in captures {
        let all = captured(&dir).map_err(|e| Error::Invalid {
            file: spec_path.to_owned(),
            line: 1,
            column: 1,
            message: chain(&e),
        })?;
        add_missing(&mut images, all);
    }
    Ok((images, signatures))
}

/// One `images` entry per reference in the lock file of the capture folder `dir`, served
/// under that reference (`from: capture:DIR` without `ref`, `airlock build --from-capture`).
pub fn captured(dir: &Path) -> std::result::Result<Vec<ImageSpec>, LockError> {
    let lock = Lock::load(dir)?;
    Ok(lock
        .entries()
        .iter()
        .map(|e| ImageSpec {
            reference: e.reference.clone(),
            from: Some(ImageSource::Capture {
                dir: dir.to_owned(),
            }),
        })
        .collect())
}

/// Adds `extra` entries to `images`, skipping those whose name an entry already serves (the
/// entry listed first wins, so an explicit `ref` wins over a capture's).
pub fn add_missing(images: &mut Vec<ImageSpec>, extra: Vec<ImageSpec>) {
    for spec in extra {
        let r = &spec.reference;
        let taken = images.iter().any(|i| {
            let s = &i.reference;
            s.registry() == r.registry()
                && s.repository() == r.repository()
                && s.tag() == r.tag()
                && (r.tag().is_some() || s.digest() == r.digest())
        });
        if taken {
            tracing::debug!(reference = %r, "listed before; the capture's copy is not used");
        } else {
            images.push(spec);
        }
    }
}
