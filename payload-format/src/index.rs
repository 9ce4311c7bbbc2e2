//! The index (frames, blobs, entries) and the meta record, with every rule of SPEC.md
//! enforced while deserializing: an [`Index`] that exists is a valid one.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::bare_hex;
use crate::image::Image;
use crate::install::InstallConfig;
use crate::Sha256Digest;

/// Largest decoded frame a reader accepts (writers stay at [`crate::FRAME_SIZE`]).
pub const MAX_FRAME_RAW: u64 = 16 << 20;
/// Longest entry path accepted.
pub const MAX_PATH_LEN: usize = 4096;
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

/// A relative, normalised entry path; see SPEC.md for the rules.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntryPath(String);

/// Why a string is not an [`EntryPath`].
#[derive(Debug, thiserror::Error)]
#[error("invalid entry path {path:?}: {reason}")]
pub struct PathError {
    path: String,
    reason: &'static str,
}

impl EntryPath {
    /// The path as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent path, `None` for a top-level entry.
    pub fn parent(&self) -> Option<&str> {
        self.0.rfind('/').map(|i| &self.0[..i])
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl TryFrom<String> for EntryPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        let reason = if s.is_empty() {
            Some("empty")
        } else if s.len() > MAX_PATH_LEN {
            Some("longer than 4096 bytes")
        } else if s.starts_with('/') {
            Some("absolute")
        } else if s.contains('\0') {
            Some("contains NUL")
        } else if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            Some("has an empty, `.` or `..` component")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(PathError {
                path: s.chars().take(200).collect(),
                reason,
            }),
            None => Ok(EntryPath(s)),
        }
    }
}

impl From<EntryPath> for String {
    fn from(p: EntryPath) -> String {
        p.0
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A folder.
    Dir,
    /// A regular file.
    File {
        /// Content length.
        size: u64,
        /// Content digest.
        digest: Sha256Digest,
    },
    /// A symbolic link, target stored verbatim.
    Symlink {
        /// Link text.
        target: String,
    },
    /// A hard link to an earlier file entry.
    Hardlink {
        /// The file entry it links to.
        target: EntryPath,
    },
}

/// One path of the installer's file tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawEntry", into = "RawEntry")]
pub struct Entry {
    /// Where it goes, relative to the target.
    pub path: EntryPath,
    /// Permission bits.
    pub mode: u32,
    /// What it is.
    pub kind: EntryKind,
}

impl Entry {
    /// The entry's type as `list` prints it.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            EntryKind::Dir => "dir",
            EntryKind::File { .. } => "file",
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::Hardlink { .. } => "hardlink",
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    path: EntryPath,
    #[serde(rename = "type")]
    kind: String,
    mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<Sha256Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

impl TryFrom<RawEntry> for Entry {
    type Error = String;
    fn try_from(r: RawEntry) -> Result<Self, String> {
        if r.mode > 0o7777 {
            return Err(format!(
                "entry {:?} has mode {:o} beyond permission bits",
                r.path, r.mode
            ));
        }
        let extra = |what: &str| format!("entry {:?} of type {} has a `{what}`", r.path, r.kind);
        let kind = match r.kind.as_str() {
            "dir" => {
                if r.size.is_some() || r.digest.is_some() || r.target.is_some() {
                    return Err(extra("size, digest or target"));
                }
                EntryKind::Dir
            }
            "file" => {
                if r.target.is_some() {
                    return Err(extra("target"));
                }
                let (Some(size), Some(digest)) = (r.size, r.digest) else {
                    return Err(format!("file entry {:?} lacks size or digest", r.path));
                };
                if size == 0 && digest != Sha256Digest::empty() {
                    return Err(format!(
                        "empty file entry {:?} has a non-empty digest",
                        r.path
                    ));
                }
                EntryKind::File { size, digest }
            }
            "symlink" | "hardlink" => {
                if r.size.is_some() || r.digest.is_some() {
                    return Err(extra("size or digest"));
                }
                let Some(target) = r.target else {
                    return Err(format!("{} entry {:?} lacks a target", r.kind, r.path));
                };
                if r.kind == "symlink" {
                    if target.is_empty() || target.contains('\0') || target.len() > MAX_PATH_LEN {
                        return Err(format!("symlink {:?} has an invalid target", r.path));
                    }
                    EntryKind::Symlink { target }
                } else {
                    let target = EntryPath::try_from(target).map_err(|e| e.to_string())?;
                    EntryKind::Hardlink { target }
                }
            }
            other => {
                let other: String = other.chars().take(40).collect();
                return Err(format!("entry {:?} has unknown type {other:?}", r.path));
            }
        };
        Ok(Entry {
            path: r.path,
            mode: r.mode,
            kind,
        })
    }
}

impl From<Entry> for RawEntry {
    fn from(e: Entry) -> RawEntry {
        let kind = e.type_name().to_owned();
        let (size, digest, target) = match e.kind {
            EntryKind::Dir => (None, None, None),
            EntryKind::File { size, digest } => (Some(size), Some(digest), None),
            EntryKind::Symlink { target } => (None, None, Some(target)),
            EntryKind::Hardlink { target } => (None, None, Some(target.0)),
        };
        RawEntry {
            path: e.path,
            kind,
            mode: e.mode,
            size,
            digest,
            target,
        }
    }
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
}

fn is_default(i: &InstallConfig) -> bool {
    *i == InstallConfig::default()
}

impl TryFrom<RawIndex> for Index {
    type Error = String;
    fn try_from(r: RawIndex) -> Result<Self, String> {
        Index::new(r.frames, r.blobs, r.entries, r.images)?.with_install(r.install)
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
    ) -> Result<Self, String> {
        let mut raw_starts = Vec::with_capacity(frames.len() + 1);
        let mut stored_starts = Vec::with_capacity(frames.len() + 1);
        let (mut raw, mut stored) = (0u64, 0u64);
        for (i, f) in frames.iter().enumerate() {
            if f.raw_len == 0 || f.raw_len > MAX_FRAME_RAW {
                return Err(format!(
                    "frame {i} declares {} decoded bytes (1..=16 MiB allowed)",
                    f.raw_len
                ));
            }
            if f.codec == Codec::Raw && f.stored_len != f.raw_len {
                return Err(format!(
                    "raw frame {i} has different stored and decoded lengths"
                ));
            }
            if f.stored_len == 0 {
                return Err(format!("frame {i} is empty"));
            }
            raw_starts.push(raw);
            stored_starts.push(stored);
            raw = raw
                .checked_add(f.raw_len)
                .ok_or("raw stream length overflows")?;
            stored = stored
                .checked_add(f.stored_len)
                .ok_or("frames length overflows")?;
        }
        raw_starts.push(raw);
        stored_starts.push(stored);

        if blobs.windows(2).any(|w| w[0].digest >= w[1].digest) {
            return Err("blobs are not sorted by digest or not unique".into());
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
                    return Err(format!(
                        "blob {} of {} bytes at {} lies outside the {raw}-byte raw stream",
                        b.digest, b.size, b.raw_offset
                    ))
                }
            }
        }
        spans.sort_unstable();
        if spans.windows(2).any(|w| w[1].0 < w[0].1) {
            return Err("two blobs overlap in the raw stream".into());
        }

        if entries.windows(2).any(|w| w[0].path >= w[1].path) {
            return Err("entries are not sorted by path or not unique".into());
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
                    Some(_) => return Err(format!("entry {:?} lies under a non-folder", e.path)),
                    None => return Err(format!("entry {:?} has no parent folder entry", e.path)),
                }
            }
            match &e.kind {
                EntryKind::File { size, digest } if *size > 0 => match blob_sizes.get(digest) {
                    Some(s) if s == size => {}
                    Some(s) => {
                        return Err(format!(
                            "file {:?} declares {size} bytes but its blob has {s}",
                            e.path
                        ))
                    }
                    None => {
                        return Err(format!(
                            "file {:?} names a blob {digest} that is not stored",
                            e.path
                        ))
                    }
                },
                EntryKind::Hardlink { target } => match by_path.get(target.as_str()) {
                    Some(&t) if t < i && matches!(entries[t].kind, EntryKind::File { .. }) => {}
                    _ => {
                        return Err(format!(
                            "hardlink {:?} does not name an earlier file",
                            e.path
                        ))
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
            return Err("images are not sorted or not unique".into());
        }
        let mut tags = std::collections::HashSet::new();
        for img in &images {
            if img.tag.is_some() && !tags.insert((&img.registry, &img.repository, &img.tag)) {
                return Err(format!("image {img} appears twice with different digests"));
            }
            let digests = img.manifests.iter().map(|m| &m.digest).chain(&img.blobs);
            for d in digests {
                if !blob_sizes.contains_key(d) {
                    return Err(format!("image {img} names a blob {d} that is not stored"));
                }
            }
        }
        Ok(Index {
            frames,
            blobs,
            entries,
            images,
            install: InstallConfig::default(),
            raw_starts,
            stored_starts,
        })
    }

    /// Sets the install section (engine and hooks), checking that every payload path it
    /// names is a file (or folder) entry and every hook a stored blob.
    pub fn with_install(mut self, install: InstallConfig) -> Result<Self, String> {
        let blob_sizes: HashMap<Sha256Digest, u64> =
            self.blobs.iter().map(|b| (b.digest, b.size)).collect();
        crate::install::validate(&install, &self.entries, &blob_sizes)?;
        self.install = install;
        Ok(self)
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

/// What `info` shows; stored separately from the index so it reads in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Installer name.
    pub name: String,
    /// Installer version.
    pub version: String,
    /// `os/arch[/variant]` the payload is for.
    pub platform: String,
    /// Build time (seconds since the epoch; `SOURCE_DATE_EPOCH` or a fixed date).
    pub created: u64,
    /// Modification time given to every extracted entry.
    pub mtime: u64,
    /// Program and version that wrote the file.
    pub builder: String,
    /// Number of regular files.
    pub files: u64,
    /// Number of folders.
    pub dirs: u64,
    /// Number of symbolic links.
    pub symlinks: u64,
    /// Number of hard links.
    pub hardlinks: u64,
    /// Sum of file sizes.
    pub total_size: u64,
    /// Sum of stored frame lengths.
    pub stored_size: u64,
    /// Number of distinct contents stored.
    pub blob_count: u64,
    /// Number of frames.
    pub frame_count: u64,
    /// Number of captured images.
    #[serde(default)]
    pub images: u64,
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
    fn escaping_and_odd_paths_are_rejected() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "./a",
            "a/",
            "a\0b",
        ] {
            assert!(
                EntryPath::try_from(bad.to_owned()).is_err(),
                "{bad:?} accepted"
            );
        }
        for good in ["a", "a b/c", "-rf", "naïve/файл", "a/.hidden", "..a"] {
            assert!(
                EntryPath::try_from(good.to_owned()).is_ok(),
                "{good:?} rejected"
            );
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
        let err =
            Index::new(vec![], vec![], vec![link, file("a/passwd", b"")], vec![]).unwrap_err();
        assert!(err.contains("non-folder"), "{err}");
    }

    #[test]
    fn missing_parent_and_unsorted_entries_are_rejected() {
        assert!(Index::new(vec![], vec![], vec![file("a/b", b"")], vec![])
            .unwrap_err()
            .contains("parent"));
        let err =
            Index::new(vec![], vec![], vec![file("b", b""), file("a", b"")], vec![]).unwrap_err();
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
        let err = Index::new(vec![frame(4)], vec![blob], vec![lying], vec![]).unwrap_err();
        assert!(err.contains("declares"), "{err}");
    }

    #[test]
    fn huge_frames_are_rejected() {
        let err = Index::new(vec![frame(MAX_FRAME_RAW + 1)], vec![], vec![], vec![]).unwrap_err();
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
