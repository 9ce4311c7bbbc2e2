//! The frame cache seam: lets a rebuild reuse frames it already compressed.
//!
//! A frame is fully determined by what goes into it (the blob bytes it covers, named by
//! their digests, offsets and lengths) and by how it is encoded (format version, zstd
//! version and level, the precompressed and solid flags). [`FrameKey`] is a SHA-256 over
//! exactly those inputs, so a reused frame gives the same bytes as a fresh encode and a
//! cached build is byte-identical to a cold one.
//!
//! The writer owns the entry encoding and its verification ([`CachedFrame`]); a
//! [`FrameCache`] only stores opaque bytes by key, so this crate holds no file-system
//! policy (where entries live, eviction): the builder implements that.

use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;
use crate::index::{Codec, Frame};
use crate::layout::FORMAT_VERSION;

/// A frame's cache key: SHA-256 over its encoding inputs and content identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameKey(pub [u8; 32]);

impl FrameKey {
    /// The key as lowercase hex (64 characters), e.g. for a file name.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Stores encoded frames by [`FrameKey`]. Implementations must be safe to share between
/// threads (the writer encodes frames in parallel) and between processes if the storage is
/// shared: a `load` must never return a partly written entry (the writer still checks).
pub trait FrameCache: Send + Sync {
    /// The bytes stored under `key`, if any. Errors count as a miss.
    fn load(&self, key: &FrameKey) -> Option<Vec<u8>>;
    /// Stores `entry` under `key`, replacing any entry there. Best effort: a failure only
    /// costs a future miss, so it is reported by the implementation, not to the writer.
    fn store(&self, key: &FrameKey, entry: &[u8]);
}

/// Inputs of one frame's key, hashed in a fixed order.
pub(crate) struct KeyInputs<'a> {
    pub level: i32,
    pub precompressed: bool,
    pub solid: bool,
    pub probe_len: usize,
    /// (blob digest, offset in the blob, length) of each piece, in frame order.
    pub pieces: &'a [(Sha256Digest, u64, u64)],
}

impl KeyInputs<'_> {
    pub(crate) fn key(&self) -> FrameKey {
        let mut h = Sha256::new();
        h.update(b"airlock frame cache key v1\0");
        h.update(FORMAT_VERSION.to_le_bytes());
        // A different zstd may compress differently: its version is part of the decision.
        h.update(zstd::zstd_safe::version_number().to_le_bytes());
        h.update(self.level.to_le_bytes());
        h.update([u8::from(self.precompressed), u8::from(self.solid)]);
        h.update((self.probe_len as u64).to_le_bytes());
        h.update((self.pieces.len() as u64).to_le_bytes());
        for (digest, offset, len) in self.pieces {
            h.update(digest.0);
            h.update(offset.to_le_bytes());
            h.update(len.to_le_bytes());
        }
        FrameKey(h.finalize().into())
    }
}

const ENTRY_MAGIC: &[u8; 8] = b"ALFRAME1";
/// magic, codec (1 byte), 7 reserved bytes, raw_len (u64 LE), SHA-256 of the stored bytes.
const ENTRY_HEAD: usize = 8 + 8 + 8 + 32;

/// One cached frame: its index record and stored bytes, encoded as a cache entry.
pub(crate) struct CachedFrame;

impl CachedFrame {
    /// The entry for `frame` with stored bytes `stored`.
    pub(crate) fn encode(frame: &Frame, stored: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENTRY_HEAD + stored.len());
        out.extend_from_slice(ENTRY_MAGIC);
        out.push(match frame.codec {
            Codec::Raw => 0,
            Codec::Zstd => 1,
        });
        out.extend_from_slice(&[0; 7]);
        out.extend_from_slice(&frame.raw_len.to_le_bytes());
        out.extend_from_slice(&frame.sha256.0);
        out.extend_from_slice(stored);
        out
    }

    /// Parses and checks an entry expected to decode to `raw_len` bytes: `None` for any
    /// damage (bad magic, unknown codec, other length, stored bytes whose SHA-256 differs).
    pub(crate) fn decode(mut entry: Vec<u8>, raw_len: u64) -> Option<(Frame, Vec<u8>)> {
        if entry.len() < ENTRY_HEAD || &entry[..8] != ENTRY_MAGIC || entry[9..16] != [0; 7] {
            return None;
        }
        let codec = match entry[8] {
            0 => Codec::Raw,
            1 => Codec::Zstd,
            _ => return None,
        };
        let recorded_raw = u64::from_le_bytes(entry[16..24].try_into().ok()?);
        let sha: [u8; 32] = entry[24..56].try_into().ok()?;
        let stored = entry.split_off(ENTRY_HEAD);
        let actual = Sha256Digest::of(&stored);
        if recorded_raw != raw_len || actual.0 != sha {
            return None;
        }
        // The codec byte is outside the digest: check it against the bytes. A raw frame has
        // exactly `raw_len` bytes; a zstd frame (always smaller) declares `raw_len` itself.
        let consistent = match codec {
            Codec::Raw => stored.len() as u64 == raw_len,
            Codec::Zstd => {
                (stored.len() as u64) < raw_len
                    && matches!(zstd::zstd_safe::get_frame_content_size(&stored), Ok(Some(n)) if n == raw_len)
            }
        };
        if !consistent {
            return None;
        }
        let frame = Frame {
            codec,
            stored_len: stored.len() as u64,
            raw_len,
            sha256: actual,
        };
        Some((frame, stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(stored: &[u8], raw_len: u64, codec: Codec) -> Frame {
        Frame {
            codec,
            stored_len: stored.len() as u64,
            raw_len,
            sha256: Sha256Digest::of(stored),
        }
    }

    #[test]
    fn an_entry_round_trips() {
        let stored = zstd::bulk::compress(&[9u8; 1000], 3).unwrap();
        let frame = frame_of(&stored, 1000, Codec::Zstd);
        let entry = CachedFrame::encode(&frame, &stored);
        let (back, bytes) = CachedFrame::decode(entry, 1000).unwrap();
        assert_eq!(back, frame);
        assert_eq!(bytes, stored);
    }

    #[test]
    fn a_damaged_entry_is_refused() {
        let stored = vec![7u8; 100];
        let frame = frame_of(&stored, 100, Codec::Raw);
        let entry = CachedFrame::encode(&frame, &stored);
        for at in [0, 8, 20, 30, ENTRY_HEAD + 5] {
            let mut bad = entry.clone();
            bad[at] ^= 1;
            assert!(CachedFrame::decode(bad, 100).is_none(), "flip at {at}");
        }
        assert!(CachedFrame::decode(entry[..entry.len() - 1].to_vec(), 100).is_none());
        assert!(CachedFrame::decode(entry.clone(), 101).is_none());
        assert!(CachedFrame::decode(entry, 100).is_some());
        // A zstd frame relabelled raw is refused too.
        let z = zstd::bulk::compress(&[1u8; 1000], 3).unwrap();
        let mut entry = CachedFrame::encode(&frame_of(&z, 1000, Codec::Zstd), &z);
        assert!(CachedFrame::decode(entry.clone(), 1000).is_some());
        entry[8] = 0;
        assert!(CachedFrame::decode(entry, 1000).is_none());
    }

    #[test]
    fn the_key_changes_with_every_input() {
        let d = Sha256Digest::of(b"a");
        let pieces = [(d, 0, 10)];
        let base = KeyInputs {
            level: 3,
            precompressed: false,
            solid: true,
            probe_len: 1,
            pieces: &pieces,
        };
        let k = base.key();
        let other_pieces = [(d, 1, 10)];
        let variants = [
            KeyInputs { level: 4, ..base },
            KeyInputs {
                precompressed: true,
                ..base
            },
            KeyInputs {
                solid: false,
                ..base
            },
            KeyInputs {
                probe_len: 2,
                ..base
            },
            KeyInputs {
                pieces: &other_pieces,
                ..base
            },
        ];
        for v in variants {
            assert_ne!(v.key(), k);
        }
    }
}
