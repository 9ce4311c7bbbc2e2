//! Fixed-size binary structures: the header after the stub and the trailer at the end.

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// Format version this crate writes. Version 2 adds the signature section after the
/// trailer and the index's `sbom`; this crate reads versions 1 and 2.
pub const FORMAT_VERSION: u32 = 2;
/// Oldest format version this crate reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// Magic at the start of the header.
pub const HEADER_MAGIC: &[u8; 8] = b"AIRLOCKH";
/// Magic at the start of the trailer.
pub const TRAILER_MAGIC: &[u8; 8] = b"AIRLOCKT";
/// Magic at the end of the trailer, the last bytes of the file.
pub const TRAILER_END_MAGIC: &[u8; 8] = b"AIRLOCKE";
/// Size of the header.
pub const HEADER_LEN: u64 = 64;
/// Size of the trailer.
pub const TRAILER_LEN: u64 = 256;
/// Alignment of the payload after the stub.
pub const PAYLOAD_ALIGN: u64 = 4096;

/// The header at `payload_offset`; see SPEC.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the whole installer.
    pub file_len: u64,
    /// Absolute offset of the trailer.
    pub trailer_offset: u64,
}

impl Header {
    /// Encodes the header with its checksum, as format version [`FORMAT_VERSION`].
    pub fn to_bytes(&self) -> [u8; HEADER_LEN as usize] {
        self.to_bytes_version(FORMAT_VERSION)
    }

    /// Encodes the header with its checksum, as format `version`.
    pub fn to_bytes_version(&self, version: u32) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(HEADER_MAGIC);
        b[8..12].copy_from_slice(&version.to_le_bytes());
        b[16..24].copy_from_slice(&self.file_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.trailer_offset.to_le_bytes());
        let sum = Sha256Digest::of(&b[0..32]);
        b[32..64].copy_from_slice(&sum.0);
        b
    }

    /// Decodes a header; `None` when the bytes are not a valid header (wrong magic or
    /// checksum), because a header is only ever looked for, never trusted blindly.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER_LEN as usize || &b[0..8] != HEADER_MAGIC {
            return None;
        }
        if Sha256Digest::of(&b[0..32]).0 != b[32..64] {
            return None;
        }
        Some(Header {
            file_len: u64_at(b, 16),
            trailer_offset: u64_at(b, 24),
        })
    }
}

/// The trailer: the last 256 bytes of every installer; see SPEC.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Absolute offset of the header, where the payload starts.
    pub payload_offset: u64,
    /// Total stored length of all frames.
    pub frames_len: u64,
    /// Relative offset of the meta JSON.
    pub meta_offset: u64,
    /// Length of the meta JSON.
    pub meta_len: u64,
    /// Relative offset of the compressed index.
    pub index_offset: u64,
    /// Stored length of the index.
    pub index_len: u64,
    /// Decompressed length of the index.
    pub index_raw_len: u64,
    /// Sum of all file sizes.
    pub total_size: u64,
    /// Number of entries.
    pub entry_count: u64,
    /// Number of frames.
    pub frame_count: u64,
    /// Number of blobs.
    pub blob_count: u64,
    /// SHA-256 of `[0, payload_offset)`.
    pub stub_sha256: Sha256Digest,
    /// SHA-256 of the meta bytes.
    pub meta_sha256: Sha256Digest,
    /// SHA-256 of the stored index bytes.
    pub index_sha256: Sha256Digest,
    /// Length of the whole installer.
    pub file_len: u64,
}

/// Relative offset of the first frame.
pub const FRAMES_OFFSET: u64 = HEADER_LEN;

impl Trailer {
    /// Encodes the trailer with its checksum, as format version [`FORMAT_VERSION`].
    pub fn to_bytes(&self) -> [u8; TRAILER_LEN as usize] {
        self.to_bytes_version(FORMAT_VERSION)
    }

    /// Encodes the trailer with its checksum, as format `version` (writers of version 1
    /// files exist for compatibility tests).
    pub fn to_bytes_version(&self, version: u32) -> [u8; TRAILER_LEN as usize] {
        let mut b = [0u8; TRAILER_LEN as usize];
        b[0..8].copy_from_slice(TRAILER_MAGIC);
        b[8..12].copy_from_slice(&version.to_le_bytes());
        let fields = [
            self.payload_offset,
            FRAMES_OFFSET,
            self.frames_len,
            self.meta_offset,
            self.meta_len,
            self.index_offset,
            self.index_len,
            self.index_raw_len,
            self.total_size,
            self.entry_count,
            self.frame_count,
            self.blob_count,
        ];
        for (i, v) in fields.iter().enumerate() {
            b[16 + i * 8..24 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        b[112..144].copy_from_slice(&self.stub_sha256.0);
        b[144..176].copy_from_slice(&self.meta_sha256.0);
        b[176..208].copy_from_slice(&self.index_sha256.0);
        b[208..216].copy_from_slice(&self.file_len.to_le_bytes());
        let sum = Sha256Digest::of(&b[0..216]);
        b[216..248].copy_from_slice(&sum.0);
        b[248..256].copy_from_slice(TRAILER_END_MAGIC);
        b
    }

    /// True when the last bytes of `file` carry both trailer magics.
    pub fn is_present(file: &[u8]) -> bool {
        file.len() as u64 >= TRAILER_LEN
            && file.ends_with(TRAILER_END_MAGIC)
            && &file[file.len() - TRAILER_LEN as usize..][..8] == TRAILER_MAGIC
    }

    /// Decodes and checks the trailer at the end of `file` against the file's length.
    /// The caller has checked [`Trailer::is_present`].
    pub fn from_file_end(file: &[u8]) -> Result<Self> {
        let len = file.len() as u64;
        let b = &file[(len - TRAILER_LEN) as usize..];
        if Sha256Digest::of(&b[0..216]).0 != b[216..248] {
            return Err(Error::corrupt(
                "trailer checksum mismatch (the last 256 bytes were changed)",
            ));
        }
        let version = Self::version_of(file);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        if b[12..16] != [0; 4] {
            return Err(Error::corrupt("trailer has unknown flags"));
        }
        let t = Trailer {
            payload_offset: u64_at(b, 16),
            frames_len: u64_at(b, 32),
            meta_offset: u64_at(b, 40),
            meta_len: u64_at(b, 48),
            index_offset: u64_at(b, 56),
            index_len: u64_at(b, 64),
            index_raw_len: u64_at(b, 72),
            total_size: u64_at(b, 80),
            entry_count: u64_at(b, 88),
            frame_count: u64_at(b, 96),
            blob_count: u64_at(b, 104),
            stub_sha256: Sha256Digest(b[112..144].try_into().expect("32 bytes")),
            meta_sha256: Sha256Digest(b[144..176].try_into().expect("32 bytes")),
            index_sha256: Sha256Digest(b[176..208].try_into().expect("32 bytes")),
            file_len: u64_at(b, 208),
        };
        if t.file_len != len {
            return Err(Error::corrupt(format!(
                "trailer records a file of {} bytes, the file has {len}",
                t.file_len
            )));
        }
        if u64_at(b, 24) != FRAMES_OFFSET {
            return Err(Error::corrupt("trailer has an invalid frames offset"));
        }
        let chain = (|| {
            let frames_end = FRAMES_OFFSET.checked_add(t.frames_len)?;
            (t.meta_offset == frames_end).then_some(())?;
            (t.index_offset == t.meta_offset.checked_add(t.meta_len)?).then_some(())?;
            let end = t
                .payload_offset
                .checked_add(t.index_offset)?
                .checked_add(t.index_len)?;
            (end == len - TRAILER_LEN).then_some(())
        })();
        if chain.is_none() || t.payload_offset % PAYLOAD_ALIGN != 0 {
            return Err(Error::corrupt("trailer offsets do not describe this file"));
        }
        Ok(t)
    }

    /// The format version recorded in the trailer at the end of `file` (unchecked: call
    /// [`Trailer::from_file_end`] first).
    pub fn version_of(file: &[u8]) -> u32 {
        let b = &file[file.len() - TRAILER_LEN as usize..];
        u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"))
    }

    /// Absolute byte range of the frames region.
    pub fn frames_range(&self) -> std::ops::Range<usize> {
        let start = (self.payload_offset + FRAMES_OFFSET) as usize;
        start..start + self.frames_len as usize
    }

    /// Absolute byte range of the meta JSON.
    pub fn meta_range(&self) -> std::ops::Range<usize> {
        let start = (self.payload_offset + self.meta_offset) as usize;
        start..start + self.meta_len as usize
    }

    /// Absolute byte range of the stored index.
    pub fn index_range(&self) -> std::ops::Range<usize> {
        let start = (self.payload_offset + self.index_offset) as usize;
        start..start + self.index_len as usize
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Rounds `n` up to the payload alignment.
pub fn align_payload(n: u64) -> u64 {
    n.div_ceil(PAYLOAD_ALIGN) * PAYLOAD_ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_any_flipped_byte() {
        let h = Header {
            file_len: 5 << 32,
            trailer_offset: (5 << 32) - 256,
        };
        let bytes = h.to_bytes();
        assert_eq!(Header::from_bytes(&bytes), Some(h));
        for i in 0..bytes.len() {
            let mut b = bytes;
            b[i] ^= 0x10;
            assert_eq!(Header::from_bytes(&b), None, "flip at {i} accepted");
        }
    }
}
