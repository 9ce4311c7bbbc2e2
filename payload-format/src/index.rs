//! The index (frames, blobs, entries, images, install section, SBOM), with every rule of SPEC.md
//! enforced while deserializing: an [`Index`] that exists is a valid one. The rules of one
//! entry live with [`Entry`]; this module checks the rules that span the index.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::digest::{bare_hex, Sha256Digest};
use crate::entry::{Entry, EntryKind, EntryPath};
use crate::image::Image;
use crate::install::{InstallConfig, InstallError};

/// Largest decoded frame a reader accepts (writers stay at [`crate::FRAME_SIZE`]).
pub const MAX_FRAME_RAW: u64 = 16 << 20;
/// Largest decoded index a reader accepts.
pub const MAX_INDEX_RAW: u64 = 1 << 30;

/// How a frame's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Stored as is.
    Raw,
    /// One zstd frame.
    Zstd,
}

/// One independently decodable frame of the raw stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    /// How the bytes are stored.
    pub codec: Codec,
    /// Stored length.
    pub stored_len: u64,
    /// Decoded length.
    pub raw_len: u64,
    /// SHA-256 of the stored bytes.
    #[serde(with = "bare_hex")]
    pub sha256: Sha256Digest,
}

/// Content stored once, found by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blob {
    /// SHA-256 of the content.
    pub digest: Sha256Digest,
    /// Content length (at least 1).
    pub size: u64,
    /// Where the content starts in the raw stream.
    pub raw_offset: u64,
}

/// Media type of the SBOM an airlock build embeds (SPDX 2.3, JSON).
pub const SPDX_JSON_MEDIA_TYPE: &str = "application/spdx+json";

/// The software bill of materials stored in the payload: a blob, named by the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SbomRef {
    /// Digest of the document (a stored blob).
    pub digest: Sha256Digest,
    /// Its length in bytes.
    pub size: u64,
    /// Its media type ([`SPDX_JSON_MEDIA_TYPE`]).
    pub media_type: String,
}

/// Which rule of SPEC.md an index breaks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// A frame decodes to nothing or to more than [`MAX_FRAME_RAW`] bytes.
    #[error("frame {frame} declares {raw_len} decoded bytes (1..=16 MiB allowed)")]
    FrameSize {
        /// The frame number.
        frame: usize,
        /// The decoded length it declares.
        raw_len: u64,
    },
    /// A raw frame whose stored and decoded lengths differ.
    #[error("raw frame {frame} has different stored and decoded lengths")]
    RawFrameLength {
        /// The frame number.
        frame: usize,
    },
    /// A frame with no stored bytes.
    #[error("frame {frame} is empty")]
    EmptyFrame {
        /// The frame number.
        frame: usize,
    },
    /// The decoded lengths add up to more than a u64.
    #[error("raw stream length overflows")]
    RawOverflow,
    /// The stored lengths add up to more than a u64.
    #[error("frames length overflows")]
    StoredOverflow,
    /// Blobs out of digest order, or one digest twice.
    #[error("blobs are not sorted by digest or not unique")]
    BlobsUnsorted,
    /// A blob that is empty or reaches past the raw stream.
    #[error(
        "blob {digest} of {size} bytes at {raw_offset} lies outside the {raw_len}-byte raw stream"
    )]
    BlobOutside {
        /// The blob.
        digest: Sha256Digest,
        /// Its length.
        size: u64,
        /// Where it starts.
        raw_offset: u64,
        /// The raw stream's length.
        raw_len: u64,
    },
    /// Two blobs share raw-stream bytes.
    #[error("two blobs overlap in the raw stream")]
    BlobsOverlap,
    /// Entries out of path order, or one path twice.
    #[error("entries are not sorted by path or not unique")]
    EntriesUnsorted,
    /// An entry whose parent is not a folder.
    #[error("entry {path:?} lies under a non-folder")]
    UnderNonFolder {
        /// The entry.
        path: EntryPath,
    },
    /// An entry whose parent has no entry.
    #[error("entry {path:?} has no parent folder entry")]
    NoParent {
        /// The entry.
        path: EntryPath,
    },
    /// A file whose size differs from its blob's.
    #[error("file {path:?} declares {size} bytes but its blob has {blob_size}")]
    FileSize {
        /// The entry.
        path: EntryPath,
        /// The size it declares.
        size: u64,
        /// The blob's size.
        blob_size: u64,
    },
    /// A file whose blob is not stored.
    #[error("file {path:?} names a blob {digest} that is not stored")]
    FileBlobMissing {
        /// The entry.
        path: EntryPath,
        /// The digest it names.
        digest: Sha256Digest,
    },
    /// A hard link whose target is not an earlier file entry.
    #[error("hardlink {path:?} does not name an earlier file")]
    HardlinkTarget {
        /// The entry.
        path: EntryPath,
    },
    /// Images out of order, or one image twice.
    #[error("images are not sorted or not unique")]
    ImagesUnsorted,
    /// One tag with two digests.
    #[error("image {image} appears twice with different digests")]
    ImageTwice {
        /// The image reference.
        image: String,
    },
    /// An image that names a blob that is not stored.
    #[error("image {image} names a blob {digest} that is not stored")]
    ImageBlobMissing {
        /// The image reference.
        image: String,
        /// The digest it names.
        digest: Sha256Digest,
    },
    /// The install section breaks a rule.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// The SBOM names a blob that is not stored, or one of another size.
    #[error("the sbom names a blob {digest} of {size} bytes that is not stored")]
    SbomBlobMissing {
        /// The digest it names.
        digest: Sha256Digest,
        /// The size it declares.
        size: u64,
    },
}

/// The full index of an installer. Constructing one (by deserializing or with
/// [`Index::new`]) checks every cross-reference rule of SPEC.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawIndex", into = "RawIndex")]
pub struct Index {
    frames: Vec<Frame>,
    blobs: Vec<Blob>,
    entries: Vec<Entry>,
    images: Vec<Image>,
    install: InstallConfig,
    sbom: Option<SbomRef>,
    /// Raw-stream offset where each frame starts, plus the total at the end.
    #[serde(skip)]
    raw_starts: Vec<u64>,
    /// Stored offset (relative to the first frame) where each frame starts, plus the total.
    #[serde(skip)]
    stored_starts: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    frames: Vec<Frame>,
    blobs: Vec<Blob>,
    entries: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    images: Vec<Image>,
    #[serde(default, skip_serializing_if = "is_default")]
    install: InstallConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sbom: Option<SbomRef>,
}

fn is_default(i: &InstallConfig) -> bool {
    *i == InstallConfig::default()
}

impl TryFrom<RawIndex> for Index {
    type Error = IndexError;
    fn try_from(r: RawIndex) -> Result<Self, IndexError> {
        let index = Index::new(r.frames, r.blobs, r.entries, r.images)?.with_install(r.install)?;
        match r.sbom {
            Some(sbom) => index.with_sbom(sbom),
            None => Ok(index),
        }
    }
}

impl From<Index> for RawIndex {
    fn from(i: Index) -> RawIndex {
        RawIndex {
            frames: i.frames,
            blobs: i.blobs,
            entries: i.entries,
            images: i.images,
            install: i.install,
            sbom: i.sbom,
        }
    }
}

impl Index {
    /// Builds an index, checking every rule of SPEC.md; the error names the broken rule.
    pub fn new(
        frames: Vec<Frame>,
        blobs: Vec<Blob>,
        entries: Vec<Entry>,
        images: Vec<Image>,
    ) -> Result<Self, IndexError> {
        let mut raw_starts = Vec::with_capacity(frames.len() + 1);
        let mut stored_starts = Vec::with_capacity(frames.len() + 1);
        let (mut raw, mut stored) = (0u64, 0u64);
        for (i, f) in frames.iter().enumerate() {
            if f.raw_len == 0 || f.raw_len > MAX_FRAME_RAW {
                return Err(IndexError::FrameSize {
                    frame: i,
                    raw_len: f.raw_len,
                });
            }
            if f.codec == Codec::Raw && f.stored_len != f.raw_len {
                return Err(IndexError::RawFrameLength { frame: i });
            }
            if f.stored_len == 0 {
                return Err(IndexError::EmptyFrame { frame: i });
            }
            raw_starts.push(raw);
            stored_starts.push(stored);
            raw = raw.checked_add(f.raw_len).ok_or(IndexError::RawOverflow)?;
            stored = stored
                .checked_add(f.stored_len)
                .ok_or(IndexError::StoredOverflow)?;
        }
        raw_starts.push(raw);
        stored_starts.push(stored);

        if blobs.windows(2).any(|w| w[0].digest >= w[1].digest) {
            return Err(IndexError::BlobsUnsorted);
        }
        let mut spans: Vec<(u64, u64)> = Vec::with_capacity(blobs.len());
        for b in &blobs {
            let end = b
                .raw_offset
                .checked_add(b.size)
                .filter(|&e| e <= raw && b.size > 0);
            match end {
                Some(end) => spans.push((b.raw_offset, end)),
                None => {
                    return Err(IndexError::BlobOutside {
                        digest: b.digest,
                        size: b.size,
                        raw_offset: b.raw_offset,
                        raw_len: raw,
                    })
                }
            }
        }
        spans.sort_unstable();
        if spans.windows(2).any(|w| w[1].0 < w[0].1) {
            return Err(IndexError::BlobsOverlap);
        }

        if entries.windows(2).any(|w| w[0].path >= w[1].path) {
            return Err(IndexError::EntriesUnsorted);
        }
        let by_path: HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), i))
            .collect();
        let blob_sizes: HashMap<Sha256Digest, u64> =
            blobs.iter().map(|b| (b.digest, b.size)).collect();
        for (i, e) in entries.iter().enumerate() {
            if let Some(parent) = e.path.parent() {
                match by_path.get(parent).map(|&p| &entries[p].kind) {
                    Some(EntryKind::Dir) => {}
                    Some(_) => {
                        return Err(IndexError::UnderNonFolder {
                            path: e.path.clone(),
                        })
                    }
                    None => {
                        return Err(IndexError::NoParent {
                            path: e.path.clone(),
                        })
                    }
                }
            }
            match &e.kind {
                EntryKind::File { size, digest } if *size > 0 => match blob_sizes.get(digest) {
                    Some(s) if s == size => {}
                    Some(s) => {
                        return Err(IndexError::FileSize {
                            path: e.path.clone(),
                            size: *size,
                            blob_size: *s,
                        })
                    }
                    None => {
                        return Err(IndexError::FileBlobMissing {
                            path: e.path.clone(),
                            digest: *digest,
                        })
                    }
                },
                EntryKind::Hardlink { target } => match by_path.get(target.as_str()) {
                    Some(&t) if t < i && matches!(entries[t].kind, EntryKind::File { .. }) => {}
                    _ => {
                        return Err(IndexError::HardlinkTarget {
                            path: e.path.clone(),
                        })
                    }
                },
                _ => {}
            }
        }
        let key = |i: &Image| {
            (
                i.registry.clone(),
                i.repository.clone(),
                i.tag.clone(),
                i.digest,
            )
        };
        if images.windows(2).any(|w| key(&w[0]) >= key(&w[1])) {
            return Err(IndexError::ImagesUnsorted);
        }
        let mut tags = std::collections::HashSet::new();
        for img in &images {
            if img.tag.is_some() && !tags.insert((&img.registry, &img.repository, &img.tag)) {
                return Err(IndexError::ImageTwice {
                    image: img.to_string(),
                });
            }
            let digests = img.manifests.iter().map(|m| &m.digest).chain(&img.blobs);
            for d in digests {
                if !blob_sizes.contains_key(d) {
                    return Err(IndexError::ImageBlobMissing {
                        image: img.to_string(),
                        digest: *d,
                    });
                }
            }
        }
        Ok(Index {
            frames,
            blobs,
            entries,
            images,
            install: InstallConfig::default(),
            sbom: None,
            raw_starts,
            stored_starts,
        })
    }

    /// Sets the install section (engine and hooks), checking that every payload path it
    /// names is a file (or folder) entry and every hook a stored blob.
    pub fn with_install(mut self, install: InstallConfig) -> Result<Self, IndexError> {
        let blob_sizes: HashMap<Sha256Digest, u64> =
            self.blobs.iter().map(|b| (b.digest, b.size)).collect();
        crate::install::validate(&install, &self.entries, &blob_sizes)?;
        self.install = install;
        Ok(self)
    }

    /// Names the stored blob that holds the installer's SBOM, checking that it is stored
    /// with that size.
    pub fn with_sbom(mut self, sbom: SbomRef) -> Result<Self, IndexError> {
        if self.blob(&sbom.digest).map(|b| b.size) != Some(sbom.size) {
            return Err(IndexError::SbomBlobMissing {
                digest: sbom.digest,
                size: sbom.size,
            });
        }
        self.sbom = Some(sbom);
        Ok(self)
    }

    /// The SBOM, if the installer carries one (installers built before airlock embedded
    /// one, and version 1 files, do not).
    pub fn sbom(&self) -> Option<&SbomRef> {
        self.sbom.as_ref()
    }

    /// The install section: engine and hooks (engine `none`, no hooks when absent).
    pub fn install(&self) -> &InstallConfig {
        &self.install
    }

    /// Frames in file order.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Blobs sorted by digest.
    pub fn blobs(&self) -> &[Blob] {
        &self.blobs
    }

    /// Entries sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Captured images, sorted by registry, repository, tag.
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// The entry at `path` (relative, no leading `/`).
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The blob with `digest`.
    pub fn blob(&self, digest: &Sha256Digest) -> Option<&Blob> {
        self.blobs
            .binary_search_by(|b| b.digest.cmp(digest))
            .ok()
            .map(|i| &self.blobs[i])
    }

    /// Total decoded length of all frames.
    pub fn raw_len(&self) -> u64 {
        *self.raw_starts.last().expect("one more start than frames")
    }

    /// Total stored length of all frames.
    pub fn stored_len(&self) -> u64 {
        *self
            .stored_starts
            .last()
            .expect("one more start than frames")
    }

    /// Where frame `i` starts in the raw stream.
    pub fn frame_raw_start(&self, i: usize) -> u64 {
        self.raw_starts[i]
    }

    /// Where frame `i` starts, relative to the first frame.
    pub fn frame_stored_start(&self, i: usize) -> u64 {
        self.stored_starts[i]
    }

    /// The frames `[first, last]` that hold raw-stream bytes `[offset, offset + len)`;
    /// `len` must be at least 1 and the range inside the stream.
    pub fn frames_for(&self, offset: u64, len: u64) -> std::ops::RangeInclusive<usize> {
        let find = |pos: u64| self.raw_starts.partition_point(|&s| s <= pos) - 1;
        find(offset)..=find(offset + len - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> Entry {
        Entry {
            path: path.to_owned().try_into().unwrap(),
            mode: 0o644,
            kind: EntryKind::File {
                size: data.len() as u64,
                digest: Sha256Digest::of(data),
            },
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.to_owned().try_into().unwrap(),
            mode: 0o755,
            kind: EntryKind::Dir,
        }
    }

    fn frame(raw_len: u64) -> Frame {
        Frame {
            codec: Codec::Raw,
            stored_len: raw_len,
            raw_len,
            sha256: Sha256Digest::of(b"x"),
        }
    }

    #[test]
    fn entry_under_a_symlink_is_rejected() {
        let link = Entry {
            path: "a".to_owned().try_into().unwrap(),
            mode: 0o777,
            kind: EntryKind::Symlink {
                target: "/etc".into(),
            },
        };
        let err = Index::new(vec![], vec![], vec![link, file("a/passwd", b"")], vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("non-folder"), "{err}");
    }

    #[test]
    fn missing_parent_and_unsorted_entries_are_rejected() {
        assert!(Index::new(vec![], vec![], vec![file("a/b", b"")], vec![])
            .unwrap_err()
            .to_string()
            .contains("parent"));
        let err = Index::new(vec![], vec![], vec![file("b", b""), file("a", b"")], vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sorted"), "{err}");
    }

    #[test]
    fn blob_outside_the_stream_or_overlapping_is_rejected() {
        let d1 = Sha256Digest::of(b"1");
        let d2 = Sha256Digest::of(b"2");
        let (lo, hi) = if d1 < d2 { (d1, d2) } else { (d2, d1) };
        let past = vec![Blob {
            digest: lo,
            size: 11,
            raw_offset: 0,
        }];
        assert!(Index::new(vec![frame(10)], past, vec![], vec![])
            .unwrap_err()
            .to_string()
            .contains("outside"));
        let overlap = vec![
            Blob {
                digest: lo,
                size: 6,
                raw_offset: 0,
            },
            Blob {
                digest: hi,
                size: 6,
                raw_offset: 4,
            },
        ];
        assert!(Index::new(vec![frame(10)], overlap, vec![], vec![])
            .unwrap_err()
            .to_string()
            .contains("overlap"));
    }

    #[test]
    fn declared_size_must_match_the_blob() {
        let data = b"tiny";
        let blob = Blob {
            digest: Sha256Digest::of(data),
            size: 4,
            raw_offset: 0,
        };
        let mut lying = file("f", data);
        lying.kind = EntryKind::File {
            size: 10 << 30,
            digest: Sha256Digest::of(data),
        };
        let err = Index::new(vec![frame(4)], vec![blob], vec![lying], vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("declares"), "{err}");
    }

    #[test]
    fn huge_frames_are_rejected() {
        let err = Index::new(vec![frame(MAX_FRAME_RAW + 1)], vec![], vec![], vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("16 MiB"), "{err}");
    }

    #[test]
    fn hardlink_must_name_an_earlier_file() {
        let hl = |t: &str| Entry {
            path: "z".to_owned().try_into().unwrap(),
            mode: 0o644,
            kind: EntryKind::Hardlink {
                target: t.to_owned().try_into().unwrap(),
            },
        };
        assert!(Index::new(vec![], vec![], vec![file("a", b""), hl("a")], vec![]).is_ok());
        assert!(Index::new(vec![], vec![], vec![dir("a"), hl("a")], vec![]).is_err());
        assert!(Index::new(vec![], vec![], vec![hl("zz")], vec![]).is_err());
    }

    #[test]
    fn frames_for_finds_the_spanned_frames() {
        let idx = Index::new(vec![frame(10), frame(10), frame(5)], vec![], vec![], vec![]).unwrap();
        assert_eq!(idx.frames_for(0, 10), 0..=0);
        assert_eq!(idx.frames_for(9, 2), 0..=1);
        assert_eq!(idx.frames_for(10, 15), 1..=2);
        assert_eq!(idx.frames_for(24, 1), 2..=2);
    }

    #[test]
    fn index_json_round_trips() {
        let data = b"hello";
        let blob = Blob {
            digest: Sha256Digest::of(data),
            size: 5,
            raw_offset: 0,
        };
        let idx = Index::new(
            vec![frame(5)],
            vec![blob],
            vec![dir("d"), file("d/f", data)],
            vec![],
        )
        .unwrap();
        let json = serde_json::to_string(&idx).unwrap();
        let back: Index = serde_json::from_str(&json).unwrap();
        assert_eq!(back, idx);
        assert!(serde_json::from_str::<Index>(&json.replace("\"dir\"", "\"fifo\"")).is_err());
    }
}
