//! The streaming writer: stub, header, frames compressed in parallel, meta, index, trailer.
//!
//! Memory stays bounded: frames are gathered, compressed and written a batch at a time, and a
//! frame never holds more than [`FRAME_SIZE`] decoded bytes.
//!
//! With a [`FrameCache`] ([`write_installer_cached`]), a frame whose key is cached and whose
//! entry checks out is taken from the cache without reading its sources; any other frame is
//! encoded as usual and stored. The output is the same bytes either way.

use std::io::{self, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

use sha2::{Digest as _, Sha256};

use crate::cache::{CachedFrame, FrameCache, KeyInputs};
use crate::digest::Sha256Digest;
use crate::entry::{Entry, EntryKind};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::index::{Blob, Codec, Frame, Index, SbomRef};
use crate::install::InstallConfig;
use crate::layout::{align_payload, Header, Trailer, FRAMES_OFFSET, HEADER_LEN, TRAILER_LEN};
use crate::meta::Meta;

/// Decoded size of a full frame.
pub const FRAME_SIZE: u64 = 4 << 20;
/// Blobs smaller than this share frames with their neighbours.
pub const SOLID_THRESHOLD: u64 = 4 << 20;
/// Bytes of a frame compressed as a probe before deciding whether to compress at all.
const PROBE_LEN: usize = 64 << 10;

/// Where a blob's bytes come from at write time.
pub trait BlobSource: Send + Sync {
    /// Fills `buf` with the content bytes starting at `offset`; an error if fewer exist.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// In-memory content (tests, small metadata blobs).
impl BlobSource for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = self.get(start..start + buf.len()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "content shorter than declared",
            )
        })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// One distinct content to store.
pub struct BlobInput {
    /// SHA-256 of the content, computed by the caller.
    pub digest: Sha256Digest,
    /// Length of the content, at least 1.
    pub size: u64,
    /// The content is already compressed (an image layer): store it raw, never recompress.
    pub precompressed: bool,
    /// A name for errors ("usr/lib/libfoo.so", an image layer).
    pub name: String,
    /// Where the bytes come from.
    pub source: Box<dyn BlobSource>,
}

/// Metadata the caller decides; the writer adds the counts.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// Installer name.
    pub name: String,
    /// Installer version.
    pub version: String,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Build time, seconds since the epoch.
    pub created: u64,
    /// Modification time for extracted entries.
    pub mtime: u64,
    /// Program that writes the file, e.g. `airlock 0.1.0`.
    pub builder: String,
}

/// Tuning for the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// zstd level.
    pub level: i32,
    /// Format version to write: [`crate::FORMAT_VERSION`], or 1 for compatibility tests
    /// (a version 1 file carries no SBOM and cannot be signed).
    pub format_version: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            level: 3,
            format_version: crate::layout::FORMAT_VERSION,
        }
    }
}

/// What the writer produced.
#[derive(Debug, Clone)]
pub struct WriteSummary {
    /// The meta record written.
    pub meta: Meta,
    /// Length of the whole file.
    pub file_len: u64,
    /// Offset where the payload starts.
    pub payload_offset: u64,
    /// Frames taken from the frame cache (0 without one).
    pub frames_reused: u64,
    /// Frames encoded (gathered from their sources and compressed or stored raw).
    pub frames_encoded: u64,
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    blob: usize,
    offset: u64,
    len: u64,
}

#[derive(Debug)]
struct PlannedFrame {
    pieces: Vec<Piece>,
    raw_len: u64,
    precompressed: bool,
    /// Several small blobs packed together: always compressed (a probe of one part says
    /// little about the rest), unlike a piece of one large blob.
    solid: bool,
}

/// Lays blobs into the raw stream in the given order and cuts it into frames (SPEC.md,
/// "Frame packing"). Returns the frames and each blob's raw offset.
fn plan_frames(blobs: &[BlobInput]) -> (Vec<PlannedFrame>, Vec<u64>) {
    let mut frames: Vec<PlannedFrame> = Vec::new();
    let mut offsets = Vec::with_capacity(blobs.len());
    let mut raw = 0u64;
    let mut solid_open = false;
    for (i, b) in blobs.iter().enumerate() {
        offsets.push(raw);
        raw += b.size;
        let solid = b.size < SOLID_THRESHOLD && !b.precompressed;
        if solid {
            let fits = solid_open
                && frames
                    .last()
                    .is_some_and(|f| f.raw_len + b.size <= FRAME_SIZE);
            if !fits {
                frames.push(PlannedFrame {
                    pieces: Vec::new(),
                    raw_len: 0,
                    precompressed: false,
                    solid: true,
                });
                solid_open = true;
            }
            let f = frames.last_mut().expect("pushed above");
            f.pieces.push(Piece {
                blob: i,
                offset: 0,
                len: b.size,
            });
            f.raw_len += b.size;
        } else {
            solid_open = false;
            let mut off = 0;
            while off < b.size {
                let len = (b.size - off).min(FRAME_SIZE);
                frames.push(PlannedFrame {
                    pieces: vec![Piece {
                        blob: i,
                        offset: off,
                        len,
                    }],
                    raw_len: len,
                    precompressed: b.precompressed,
                    solid: false,
                });
                off += len;
            }
        }
    }
    (frames, offsets)
}

/// Encodes one frame: raw when it is precompressed or does not compress, zstd otherwise.
/// `precompressed` content is stored raw; other content is probed first (a 64 KiB sample)
/// unless `solid`, and stored raw when compression would not save at least 5%.
pub fn encode_frame(
    raw: Vec<u8>,
    precompressed: bool,
    solid: bool,
    level: i32,
) -> Result<(Frame, Vec<u8>)> {
    let raw_len = raw.len() as u64;
    let make = |codec, stored: Vec<u8>| {
        let frame = Frame {
            codec,
            stored_len: stored.len() as u64,
            raw_len,
            sha256: Sha256Digest::of(&stored),
        };
        (frame, stored)
    };
    if !precompressed && (solid || worth_compressing(&raw, level)?) {
        let z = zstd::bulk::compress(&raw, level).map_err(Error::io("compress a frame"))?;
        if z.len() < raw.len() {
            return Ok(make(Codec::Zstd, z));
        }
    }
    Ok(make(Codec::Raw, raw))
}

fn worth_compressing(raw: &[u8], level: i32) -> Result<bool> {
    if raw.len() <= PROBE_LEN * 2 {
        return Ok(true);
    }
    let probe = &raw[raw.len() / 2 - PROBE_LEN / 2..][..PROBE_LEN];
    let z = zstd::bulk::compress(probe, level.min(1)).map_err(Error::io("compress a probe"))?;
    Ok((z.len() as f64) < PROBE_LEN as f64 * 0.95)
}

fn gather(plan: &PlannedFrame, blobs: &[BlobInput]) -> Result<Vec<u8>> {
    let mut raw = vec![0u8; plan.raw_len as usize];
    let mut at = 0usize;
    for p in &plan.pieces {
        let b = &blobs[p.blob];
        b.source
            .read_at(p.offset, &mut raw[at..at + p.len as usize])
            .map_err(Error::io(format!("read {}", b.name)))?;
        at += p.len as usize;
    }
    Ok(raw)
}

/// Takes `plan` from `cache` when it holds a sound entry; else gathers and encodes it (and
/// stores the result). The flag says whether the frame was reused.
fn encode_planned(
    plan: &PlannedFrame,
    blobs: &[BlobInput],
    level: i32,
    cache: Option<&dyn FrameCache>,
) -> Result<(Frame, Vec<u8>, bool)> {
    let Some(cache) = cache else {
        let (frame, stored) =
            encode_frame(gather(plan, blobs)?, plan.precompressed, plan.solid, level)?;
        return Ok((frame, stored, false));
    };
    let pieces: Vec<(Sha256Digest, u64, u64)> = plan
        .pieces
        .iter()
        .map(|p| (blobs[p.blob].digest, p.offset, p.len))
        .collect();
    let key = KeyInputs {
        level,
        precompressed: plan.precompressed,
        solid: plan.solid,
        probe_len: PROBE_LEN,
        pieces: &pieces,
    }
    .key();
    if let Some(entry) = cache.load(&key) {
        if let Some((frame, stored)) = CachedFrame::decode(entry, plan.raw_len) {
            return Ok((frame, stored, true));
        }
    }
    let (frame, stored) =
        encode_frame(gather(plan, blobs)?, plan.precompressed, plan.solid, level)?;
    cache.store(&key, &CachedFrame::encode(&frame, &stored));
    Ok((frame, stored, false))
}

struct HashingWriter<'w, W> {
    inner: &'w mut W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<'_, W> {
    fn put(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.inner
            .write_all(bytes)
            .map_err(Error::io(format!("write {what}")))?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Compresses `plan`'s frames on every core and hands them to `sink` in plan order.
/// At most `WINDOW_PER_THREAD * threads` frames are in memory at once (each at most
/// [`FRAME_SIZE`] decoded plus its stored form), whatever the payload's size.
fn compress_in_order(
    plan: &[PlannedFrame],
    blobs: &[BlobInput],
    level: i32,
    cache: Option<&dyn FrameCache>,
    mut sink: impl FnMut(Frame, Vec<u8>, bool) -> Result<()>,
) -> Result<()> {
    const WINDOW_PER_THREAD: usize = 2;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let window = threads * WINDOW_PER_THREAD;
    let next = AtomicUsize::new(0);
    // Frames written so far, and whether the writer gave up; workers wait on it to stay
    // within the window.
    let state = Mutex::new((0usize, false));
    let moved = Condvar::new();
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::channel::<(usize, Result<(Frame, Vec<u8>, bool)>)>();
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, state, moved) = (&next, &state, &moved);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plan.len() {
                    return;
                }
                {
                    let mut st = state.lock().expect("writer state lock");
                    while i >= st.0 + window && !st.1 {
                        st = moved.wait(st).expect("writer state lock");
                    }
                    if st.1 {
                        return;
                    }
                }
                let p = &plan[i];
                let encoded = encode_planned(p, blobs, level, cache);
                if tx.send((i, encoded)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut pending = std::collections::BTreeMap::new();
        let mut cursor = 0usize;
        let result = (|| {
            for (i, encoded) in &rx {
                pending.insert(i, encoded?);
                while let Some((frame, stored, reused)) = pending.remove(&cursor) {
                    sink(frame, stored, reused)?;
                    cursor += 1;
                    state.lock().expect("writer state lock").0 = cursor;
                    moved.notify_all();
                }
            }
            Ok(())
        })();
        if result.is_err() {
            state.lock().expect("writer state lock").1 = true;
            moved.notify_all();
        }
        drop(rx);
        result
    })?;
    Ok(())
}

/// What goes into a payload besides the stub.
#[derive(Default)]
pub struct PayloadContents {
    /// Distinct contents, in the order they are laid out (the caller sorts them by first use).
    pub blobs: Vec<BlobInput>,
    /// The file tree, sorted by path.
    pub entries: Vec<Entry>,
    /// Captured images, sorted by registry, repository, tag (their blobs are in `blobs`).
    pub images: Vec<Image>,
    /// Engine and hooks (hook contents are in `blobs`).
    pub install: InstallConfig,
    /// The SBOM (its content is in `blobs`); version 2 only.
    pub sbom: Option<SbomRef>,
}

/// Writes a complete installer to `out`: `stub`, then the payload built from `contents`.
/// `progress` is called with the number of decoded bytes finished so far.
pub fn write_installer<W: Write + Seek + Send>(
    out: &mut W,
    stub: &[u8],
    info: &BuildInfo,
    contents: PayloadContents,
    opts: WriteOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteSummary> {
    write_installer_cached(out, stub, info, contents, opts, None, progress)
}

/// [`write_installer`] that reuses frames from `cache` and stores the frames it encodes
/// there. The output does not depend on what the cache holds.
pub fn write_installer_cached<W: Write + Seek + Send>(
    out: &mut W,
    stub: &[u8],
    info: &BuildInfo,
    contents: PayloadContents,
    opts: WriteOptions,
    cache: Option<&dyn FrameCache>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteSummary> {
    if !(crate::layout::MIN_FORMAT_VERSION..=crate::layout::FORMAT_VERSION)
        .contains(&opts.format_version)
    {
        return Err(Error::UnsupportedVersion(opts.format_version));
    }
    let PayloadContents {
        blobs,
        entries,
        images,
        install,
        sbom,
    } = contents;
    if sbom.is_some() && opts.format_version < 2 {
        return Err(Error::InvalidIndex(
            "a version 1 installer cannot carry an SBOM".into(),
        ));
    }
    let (plan, raw_offsets) = plan_frames(&blobs);
    let mut index_blobs: Vec<Blob> = blobs
        .iter()
        .zip(&raw_offsets)
        .map(|(b, &raw_offset)| Blob {
            digest: b.digest,
            size: b.size,
            raw_offset,
        })
        .collect();
    index_blobs.sort_by_key(|b| b.digest);

    // Stub, padding, placeholder header. A first stage in front of the stub (SPEC.md,
    // "First stage") gets the installer's length once it is known; the stub's digest covers
    // that patched value, so it is computed then.
    let payload_offset = align_payload(stub.len() as u64);
    let padding = vec![0u8; (payload_offset - stub.len() as u64) as usize];
    let first_stage = crate::elf::FirstStage::find(stub);
    let stub_digest = |file_len: u64| {
        let mut hasher = Sha256::new();
        match first_stage {
            Some(first) => {
                let at = first.file_len_offset() as usize;
                hasher.update(&stub[..at]);
                hasher.update(file_len.to_le_bytes());
                hasher.update(&stub[at + 8..]);
            }
            None => hasher.update(stub),
        }
        hasher.update(&padding);
        Sha256Digest(hasher.finalize().into())
    };
    out.write_all(stub).map_err(Error::io("write the stub"))?;
    out.write_all(&padding)
        .map_err(Error::io("write the stub"))?;
    out.write_all(&[0u8; HEADER_LEN as usize])
        .map_err(Error::io("write the header"))?;

    // Frames: workers compress frames in any order; this thread writes them in order.
    let mut frames: Vec<Frame> = Vec::with_capacity(plan.len());
    let (mut frames_len, mut done, mut reused_count) = (0u64, 0u64, 0u64);
    compress_in_order(&plan, &blobs, opts.level, cache, |frame, stored, reused| {
        out.write_all(&stored).map_err(Error::io("write a frame"))?;
        reused_count += u64::from(reused);
        frames_len += frame.stored_len;
        done += frame.raw_len;
        frames.push(frame);
        progress(done);
        Ok(())
    })?;
    if frames.len() != plan.len() {
        return Err(Error::Io {
            context: "compress the payload".into(),
            source: io::Error::other("a compression worker stopped early"),
        });
    }

    // Meta.
    let mut meta = Meta {
        name: info.name.clone(),
        version: info.version.clone(),
        platform: info.platform.clone(),
        created: info.created,
        mtime: info.mtime,
        builder: info.builder.clone(),
        files: 0,
        dirs: 0,
        symlinks: 0,
        hardlinks: 0,
        total_size: 0,
        stored_size: frames_len,
        blob_count: index_blobs.len() as u64,
        frame_count: frames.len() as u64,
        images: images.len() as u64,
    };
    for e in &entries {
        match e.kind {
            EntryKind::Dir => meta.dirs += 1,
            EntryKind::File { size, .. } => {
                meta.files += 1;
                meta.total_size += size;
            }
            EntryKind::Symlink { .. } => meta.symlinks += 1,
            EntryKind::Hardlink { .. } => meta.hardlinks += 1,
        }
    }
    let entry_count = entries.len() as u64;
    let index = Index::new(frames, index_blobs, entries, images)
        .and_then(|i| i.with_install(install))
        .and_then(|i| match sbom {
            Some(s) => i.with_sbom(s),
            None => Ok(i),
        })
        .map_err(|e| Error::InvalidIndex(format!("the writer was given an invalid tree: {e}")))?;
    let meta_bytes = serde_json::to_vec(&meta).expect("meta serializes");
    let index_json = serde_json::to_vec(&index).expect("index serializes");
    let index_bytes =
        zstd::bulk::compress(&index_json, 9).map_err(Error::io("compress the index"))?;

    let meta_offset = FRAMES_OFFSET + frames_len;
    let index_offset = meta_offset + meta_bytes.len() as u64;
    let trailer_offset = payload_offset + index_offset + index_bytes.len() as u64;
    let file_len = trailer_offset + TRAILER_LEN;
    let stub_sha256 = stub_digest(file_len);
    let mut w = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        written: 0,
    };
    w.put(&meta_bytes, "the meta record")?;
    w.put(&index_bytes, "the index")?;
    let trailer = Trailer {
        payload_offset,
        frames_len,
        meta_offset,
        meta_len: meta_bytes.len() as u64,
        index_offset,
        index_len: index_bytes.len() as u64,
        index_raw_len: index_json.len() as u64,
        total_size: meta.total_size,
        entry_count,
        frame_count: meta.frame_count,
        blob_count: meta.blob_count,
        stub_sha256,
        meta_sha256: Sha256Digest::of(&meta_bytes),
        index_sha256: Sha256Digest::of(&index_bytes),
        file_len,
    };
    w.put(
        &trailer.to_bytes_version(opts.format_version),
        "the trailer",
    )?;
    if let Some(first) = first_stage {
        out.seek(SeekFrom::Start(first.file_len_offset()))
            .map_err(Error::io("seek to the first stage"))?;
        out.write_all(&file_len.to_le_bytes())
            .map_err(Error::io("write the first stage"))?;
    }
    out.seek(SeekFrom::Start(payload_offset))
        .map_err(Error::io("seek to the header"))?;
    out.write_all(
        &Header {
            file_len,
            trailer_offset,
        }
        .to_bytes(),
    )
    .map_err(Error::io("write the header"))?;
    out.seek(SeekFrom::Start(file_len))
        .map_err(Error::io("seek to the end"))?;
    out.flush().map_err(Error::io("flush the installer"))?;
    let frames_reused = reused_count;
    Ok(WriteSummary {
        frames_encoded: meta.frame_count - frames_reused,
        frames_reused,
        meta,
        file_len,
        payload_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(data: Vec<u8>, precompressed: bool) -> BlobInput {
        BlobInput {
            digest: Sha256Digest::of(&data),
            size: data.len() as u64,
            precompressed,
            name: "t".into(),
            source: Box::new(data),
        }
    }

    #[test]
    fn small_blobs_share_frames_and_large_ones_are_split() {
        let blobs = vec![
            input(vec![1; 1000], false),
            input(vec![2; 2000], false),
            input(vec![3; (FRAME_SIZE + 5) as usize], false),
            input(vec![4; 10], false),
            input(vec![5; 3 << 20], true),
        ];
        let (frames, offsets) = plan_frames(&blobs);
        let lens: Vec<u64> = frames.iter().map(|f| f.raw_len).collect();
        assert_eq!(lens, vec![3000, FRAME_SIZE, 5, 10, 3 << 20]);
        assert_eq!(
            offsets,
            vec![0, 1000, 3000, 3000 + FRAME_SIZE + 5, 3010 + FRAME_SIZE + 5]
        );
        assert!(frames[4].precompressed);
    }

    #[test]
    fn incompressible_frames_are_stored_raw() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let noise: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (frame, stored) = encode_frame(noise.clone(), false, false, 3).unwrap();
        assert_eq!(frame.codec, Codec::Raw);
        assert_eq!(stored, noise);
        let (frame, stored) = encode_frame(vec![b'a'; 1 << 20], false, false, 3).unwrap();
        assert_eq!(frame.codec, Codec::Zstd);
        assert!(stored.len() < 1000);
        assert_eq!(frame.sha256, Sha256Digest::of(&stored));
    }

    #[test]
    fn precompressed_frames_are_never_recompressed() {
        let (frame, _) = encode_frame(vec![0; 1 << 20], true, false, 3).unwrap();
        assert_eq!(frame.codec, Codec::Raw);
    }

    /// A frame cache in memory, for tests.
    #[derive(Default)]
    struct MemCache(Mutex<std::collections::HashMap<crate::cache::FrameKey, Vec<u8>>>);

    impl FrameCache for MemCache {
        fn load(&self, key: &crate::cache::FrameKey) -> Option<Vec<u8>> {
            self.0.lock().unwrap().get(key).cloned()
        }
        fn store(&self, key: &crate::cache::FrameKey, entry: &[u8]) {
            self.0.lock().unwrap().insert(*key, entry.to_vec());
        }
    }

    /// Content that fails every read: proves a frame was not gathered.
    struct Unreadable;

    impl BlobSource for Unreadable {
        fn read_at(&self, _: u64, _: &mut [u8]) -> io::Result<()> {
            Err(io::Error::other("the source was read"))
        }
    }

    fn contents(blobs: Vec<BlobInput>) -> PayloadContents {
        PayloadContents {
            blobs,
            ..Default::default()
        }
    }

    fn build(
        blobs: Vec<BlobInput>,
        cache: Option<&dyn FrameCache>,
    ) -> Result<(Vec<u8>, WriteSummary)> {
        let info = BuildInfo {
            name: "t".into(),
            version: "1".into(),
            platform: "linux/amd64".into(),
            created: 0,
            mtime: 0,
            builder: "test".into(),
        };
        let mut out = io::Cursor::new(Vec::new());
        let s = write_installer_cached(
            &mut out,
            b"#!stub",
            &info,
            contents(blobs),
            WriteOptions::default(),
            cache,
            &|_| {},
        )?;
        Ok((out.into_inner(), s))
    }

    fn sample() -> Vec<BlobInput> {
        vec![
            input(vec![1; 1000], false),
            input(b"text ".repeat(2 << 20), false),
            input(vec![4; 10], false),
            input(vec![5; 3 << 20], true),
        ]
    }

    #[test]
    fn cached_frames_give_the_same_bytes_without_reading_sources() {
        let cache = MemCache::default();
        let (cold, s) = build(sample(), None).unwrap();
        assert_eq!(s.frames_reused, 0);
        let (first, s1) = build(sample(), Some(&cache)).unwrap();
        assert_eq!(first, cold);
        assert_eq!(
            (s1.frames_reused, s1.frames_encoded),
            (0, s1.meta.frame_count)
        );
        // Same digests, unreadable sources: every frame must come from the cache.
        let blind: Vec<BlobInput> = sample()
            .into_iter()
            .map(|b| BlobInput {
                source: Box::new(Unreadable),
                ..b
            })
            .collect();
        let (second, s2) = build(blind, Some(&cache)).unwrap();
        assert_eq!(second, cold);
        assert_eq!(
            (s2.frames_reused, s2.frames_encoded),
            (s2.meta.frame_count, 0)
        );
    }

    #[test]
    fn a_corrupt_cache_entry_is_encoded_again_and_replaced() {
        let cache = MemCache::default();
        let (cold, _) = build(sample(), Some(&cache)).unwrap();
        let n = cache.0.lock().unwrap().len();
        for entry in cache.0.lock().unwrap().values_mut() {
            let last = entry.len() - 1;
            entry[last] ^= 0x40;
        }
        let (again, s) = build(sample(), Some(&cache)).unwrap();
        assert_eq!(again, cold);
        assert_eq!(s.frames_encoded as usize, n);
        let (third, s) = build(sample(), Some(&cache)).unwrap();
        assert_eq!(third, cold);
        assert_eq!(s.frames_encoded, 0, "the damaged entries were rewritten");
    }

    #[test]
    fn a_changed_blob_encodes_only_its_frames() {
        let cache = MemCache::default();
        build(sample(), Some(&cache)).unwrap();
        let mut changed = sample();
        changed[3] = input(vec![6; 3 << 20], true);
        let (bytes, s) = build(changed, Some(&cache)).unwrap();
        assert_eq!(s.frames_encoded, 1);
        let mut cold = sample();
        cold[3] = input(vec![6; 3 << 20], true);
        assert_eq!(bytes, build(cold, None).unwrap().0);
    }
}
