//! Reading an installer from a byte slice (the stub maps its own file): open and check the
//! trailer, read meta, load the index, read and verify content.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::digest::Sha256Digest;
use crate::entry::EntryKind;
use crate::error::{Error, Result};
use crate::index::{Blob, Codec, Index, MAX_INDEX_RAW};
use crate::layout::{align_payload, Header, Trailer, FRAMES_OFFSET, HEADER_LEN};
use crate::meta::Meta;
use crate::signature::SignatureSection;

/// An installer whose trailer, header and meta record have been checked. Opening is cheap
/// (no index, no content): `info` needs only this.
#[derive(Debug, Clone)]
pub struct Installer<'a> {
    /// The whole file, signature section included.
    bytes: &'a [u8],
    /// `bytes[..signed_len]`: the installer as written, the message signatures cover.
    signed: &'a [u8],
    format_version: u32,
    signatures: Vec<String>,
    trailer: Trailer,
    meta: Meta,
}

impl<'a> Installer<'a> {
    /// Opens the installer in `bytes` (the whole file). `elf_end` is the end of the stub's
    /// ELF image as its headers declare it ([`crate::declared_elf_end`]), used only to
    /// explain a missing trailer (truncation, `strip`, UPX).
    ///
    /// A signature section after the trailer (SPEC.md) is parsed and its records kept (not
    /// verified: that needs keys, see [`Installer::signatures`]); a damaged one is an error.
    pub fn open(file: &'a [u8], elf_end: Option<u64>) -> Result<Self> {
        if let Some(end) = elf_end.filter(|&e| e > file.len() as u64) {
            // A first stage knows the whole installer's length (SPEC.md, "First stage").
            if let Some(first) =
                crate::elf::FirstStage::find(file).filter(|f| f.file_len > file.len() as u64)
            {
                return Err(Error::Truncated {
                    actual: file.len() as u64,
                    expected: first.file_len,
                    missing: first.file_len - file.len() as u64,
                });
            }
            return Err(Error::TruncatedProgram {
                actual: file.len() as u64,
                program_len: end,
            });
        }
        let (bytes, signatures) = if SignatureSection::is_present(file) {
            let section = SignatureSection::from_file_end(file)?;
            (&file[..section.signed_len as usize], section.signatures)
        } else {
            (file, Vec::new())
        };
        if !Trailer::is_present(bytes) {
            return Err(diagnose_missing_trailer(bytes, elf_end));
        }
        let trailer = Trailer::from_file_end(bytes)?;
        let format_version = Trailer::version_of(bytes);
        if format_version < 2 && !signatures.is_empty() {
            return Err(Error::Signature(
                "a version 1 installer cannot carry a signature section".into(),
            ));
        }
        let po = trailer.payload_offset as usize;
        match Header::from_bytes(&bytes[po..po + HEADER_LEN as usize]) {
            Some(h)
                if h.file_len == trailer.file_len && h.trailer_offset == trailer.file_len - 256 => {
            }
            _ => return Err(Error::corrupt("payload header is damaged")),
        }
        let meta_bytes = &bytes[trailer.meta_range()];
        if Sha256Digest::of(meta_bytes) != trailer.meta_sha256 {
            return Err(Error::corrupt("meta record checksum mismatch"));
        }
        let meta: Meta = serde_json::from_slice(meta_bytes)
            .map_err(|e| Error::corrupt(format!("meta record is not valid: {e}")))?;
        Ok(Installer {
            bytes: file,
            signed: bytes,
            format_version,
            signatures,
            trailer,
            meta,
        })
    }

    /// The installer without its signature section: the message every signature covers
    /// (the whole file when it is unsigned).
    pub fn signed_message(&self) -> &'a [u8] {
        self.signed
    }

    /// The signatures after the installer, each the text of a minisign `.minisig` file, in
    /// the order they were added; empty when the file is unsigned. Not verified here.
    pub fn signatures(&self) -> &[String] {
        &self.signatures
    }

    /// The format version of the file (1 or 2).
    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    /// The meta record.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The trailer.
    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    /// The whole file, signature section included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Checks the stub (and padding) against its digest.
    pub fn verify_stub(&self) -> Result<()> {
        let stub = &self.bytes[..self.trailer.payload_offset as usize];
        if Sha256Digest::of(stub) != self.trailer.stub_sha256 {
            return Err(Error::corrupt("the program part (stub) was modified"));
        }
        Ok(())
    }

    /// Checks, decompresses and parses the index.
    pub fn load_index(&self) -> Result<Payload<'a>> {
        let t = &self.trailer;
        let stored = &self.bytes[t.index_range()];
        if Sha256Digest::of(stored) != t.index_sha256 {
            return Err(Error::corrupt("index checksum mismatch"));
        }
        if t.index_raw_len > MAX_INDEX_RAW {
            return Err(Error::corrupt(format!(
                "index declares {} bytes (over 1 GiB)",
                t.index_raw_len
            )));
        }
        let mut json = Vec::with_capacity(t.index_raw_len as usize);
        zstd::stream::read::Decoder::new(stored)
            .map_err(Error::io("start decompressing the index"))?
            .take(t.index_raw_len + 1)
            .read_to_end(&mut json)
            .map_err(|e| Error::corrupt(format!("index does not decompress: {e}")))?;
        if json.len() as u64 != t.index_raw_len {
            return Err(Error::corrupt(
                "index length differs from the trailer's record",
            ));
        }
        let index: Index =
            serde_json::from_slice(&json).map_err(|e| Error::InvalidIndex(e.to_string()))?;
        let counts = [
            (index.frames().len() as u64, t.frame_count, "frames"),
            (index.blobs().len() as u64, t.blob_count, "blobs"),
            (index.entries().len() as u64, t.entry_count, "entries"),
            (index.stored_len(), t.frames_len, "frame bytes"),
        ];
        for (have, want, what) in counts {
            if have != want {
                return Err(Error::InvalidIndex(format!(
                    "index has {have} {what}, trailer records {want}"
                )));
            }
        }
        let total: u64 = index
            .entries()
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum();
        if total != t.total_size {
            return Err(Error::InvalidIndex(
                "file sizes do not add up to the trailer's total".into(),
            ));
        }
        let checked = (0..index.frames().len())
            .map(|_| AtomicBool::new(false))
            .collect();
        Ok(Payload {
            bytes: self.bytes,
            trailer: *t,
            index,
            checked,
        })
    }
}

fn diagnose_missing_trailer(bytes: &[u8], elf_end: Option<u64>) -> Error {
    let len = bytes.len() as u64;
    let head = &bytes[..bytes.len().min(4096)];
    if head.windows(4).any(|w| w == b"UPX!") {
        return Error::NoPayload {
            reason:
                "the program was packed with UPX, which drops appended data; use the original file"
                    .into(),
        };
    }
    let Some(elf_end) = elf_end else {
        return Error::NoPayload {
            reason: "the file does not end with an airlock trailer (truncated, modified, or not an installer)".into(),
        };
    };
    let header_at = align_payload(elf_end);
    let header = bytes
        .get(header_at as usize..(header_at + HEADER_LEN) as usize)
        .and_then(Header::from_bytes);
    match header {
        Some(h)
            if len > h.file_len
                && is_section_start(&bytes[h.file_len as usize..]) =>
        {
            Error::Signature(format!(
                "signature section is damaged: the {} bytes after the installer do not end with a valid signature footer (cut short or modified)",
                len - h.file_len
            ))
        }
        Some(h) if len < h.file_len => {
            Error::Truncated { actual: len, expected: h.file_len, missing: h.file_len - len }
        }
        Some(h) if len > h.file_len => Error::corrupt(format!(
            "{} bytes were appended after the installer's end ({} bytes expected)",
            len - h.file_len,
            h.file_len
        )),
        Some(_) => Error::corrupt("the trailer (last 256 bytes) is damaged"),
        None if len == elf_end => Error::NoPayload {
            reason: format!(
                "the file ends where the program ends ({len} bytes): it was stripped (`strip` removes appended data) \
                 or it is the bare stub, not an installer"
            ),
        },
        None if len <= header_at => Error::corrupt(format!(
            "installer is truncated: it ends {} bytes after its program, before the payload starts",
            len.saturating_sub(elf_end)
        )),
        None if len < header_at + HEADER_LEN => Error::corrupt(format!(
            "installer is truncated inside the payload header: only {} bytes follow the program",
            len - header_at
        )),
        None => Error::NoPayload {
            reason: "no payload header after the program and no trailer at the end (modified, or not an installer)"
                .into(),
        },
    }
}

/// True when `rest` (the bytes after an installer's end) begins like a signature section.
fn is_section_start(rest: &[u8]) -> bool {
    let magic = crate::signature::SIGNATURE_MAGIC;
    rest.starts_with(magic) || magic.starts_with(rest)
}

/// A loaded payload: the checked index plus the bytes it describes.
#[derive(Debug)]
pub struct Payload<'a> {
    bytes: &'a [u8],
    trailer: Trailer,
    index: Index,
    /// Frames already checked by [`Payload::check_frame_once`].
    checked: Box<[AtomicBool]>,
}

/// The outcome of [`Payload::verify`].
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Frames checked.
    pub frames: usize,
    /// Stored bytes hashed.
    pub bytes: u64,
    /// Every problem found, each naming what is damaged.
    pub damaged: Vec<Error>,
}

impl<'a> Payload<'a> {
    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The trailer.
    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    /// The stored bytes of frame `i`, not yet checked.
    pub fn frame_stored(&self, i: usize) -> &'a [u8] {
        let start = (self.trailer.payload_offset + FRAMES_OFFSET + self.index.frame_stored_start(i))
            as usize;
        &self.bytes[start..start + self.index.frames()[i].stored_len as usize]
    }

    /// Checks frame `i` against its digest and returns its stored bytes.
    pub fn check_frame(&self, i: usize) -> Result<&'a [u8]> {
        let stored = self.frame_stored(i);
        if Sha256Digest::of(stored) != self.index.frames()[i].sha256 {
            return Err(Error::DamagedFrame {
                frame: i,
                affects: self.frame_contents(i),
            });
        }
        Ok(stored)
    }

    /// Like [`Payload::check_frame`], but hashes each frame at most once per `Payload`: for
    /// long-running readers (the registry) of a file that cannot change underneath (a
    /// read-only map of a file nobody writes).
    pub fn check_frame_once(&self, i: usize) -> Result<&'a [u8]> {
        if self.checked[i].load(Ordering::Acquire) {
            return Ok(self.frame_stored(i));
        }
        let stored = self.check_frame(i)?;
        self.checked[i].store(true, Ordering::Release);
        Ok(stored)
    }

    /// The bytes of `blob` straight from the file when all its frames are raw, each frame
    /// checked (once) before the slice is returned; `Ok(None)` when any frame is compressed.
    pub fn checked_raw_blob(&self, blob: &Blob) -> Result<Option<&'a [u8]>> {
        let Some(bytes) = self.raw_blob_bytes(blob) else {
            return Ok(None);
        };
        for i in self.blob_frames(blob) {
            self.check_frame_once(i)?;
        }
        Ok(Some(bytes))
    }

    /// Checks and decodes frame `i` into `out` (replacing its content).
    pub fn decode_frame(&self, i: usize, out: &mut Vec<u8>) -> Result<()> {
        let stored = self.check_frame(i)?;
        let frame = &self.index.frames()[i];
        out.clear();
        match frame.codec {
            Codec::Raw => out.extend_from_slice(stored),
            Codec::Zstd => {
                out.resize(frame.raw_len as usize, 0);
                let n = zstd::bulk::Decompressor::new()
                    .and_then(|mut d| d.decompress_to_buffer(stored, &mut out[..]))
                    .map_err(|e| Error::corrupt(format!("frame {i} does not decode: {e}")))?;
                if n as u64 != frame.raw_len {
                    return Err(Error::corrupt(format!(
                        "frame {i} decodes to {n} bytes, {} recorded",
                        frame.raw_len
                    )));
                }
            }
        }
        Ok(())
    }

    /// The installer's SBOM document, read whole and checked against its digest;
    /// `Ok(None)` when the installer carries none (built before airlock embedded one).
    pub fn sbom_document(&self) -> Result<Option<Vec<u8>>> {
        let Some(sbom) = self.index.sbom() else {
            return Ok(None);
        };
        let blob = self
            .index
            .blob(&sbom.digest)
            .expect("the index checked that the sbom blob is stored");
        let mut doc = Vec::with_capacity(sbom.size as usize);
        self.blob_reader(blob).read_to_end(&mut doc).map_err(|e| {
            let text = e.to_string();
            match e.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(damage)) => *damage,
                _ => Error::corrupt(format!("the sbom cannot be read: {text}")),
            }
        })?;
        let actual = Sha256Digest::of(&doc);
        if actual != sbom.digest {
            return Err(Error::DamagedBlob {
                name: "the sbom".into(),
                expected: sbom.digest,
                actual,
            });
        }
        Ok(Some(doc))
    }

    /// A reader of a blob's content; each frame is checked before any of its bytes are
    /// returned.
    pub fn blob_reader(&self, blob: &Blob) -> BlobReader<'_, 'a> {
        self.blob_reader_range(blob, 0, blob.size)
    }

    /// A reader of `len` bytes of `blob` from `offset` (clamped to the blob), for `Range`
    /// requests.
    pub fn blob_reader_range(&self, blob: &Blob, offset: u64, len: u64) -> BlobReader<'_, 'a> {
        let start = blob.raw_offset + offset.min(blob.size);
        let end = start + len.min(blob.size - offset.min(blob.size));
        BlobReader {
            payload: self,
            next: start,
            end,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// The stored bytes of `blob` when all of its frames are raw (for serving without
    /// copying); `None` if any frame is compressed. The bytes are NOT checked: call
    /// [`Payload::check_frame`] for each of [`Payload::blob_frames`] first.
    pub fn raw_blob_bytes(&self, blob: &Blob) -> Option<&'a [u8]> {
        let frames = self.blob_frames(blob);
        if !frames
            .clone()
            .all(|i| self.index.frames()[i].codec == Codec::Raw)
        {
            return None;
        }
        let first = *frames.start();
        let start = self.trailer.payload_offset
            + FRAMES_OFFSET
            + self.index.frame_stored_start(first)
            + (blob.raw_offset - self.index.frame_raw_start(first));
        Some(&self.bytes[start as usize..(start + blob.size) as usize])
    }

    /// The frames holding `blob`.
    pub fn blob_frames(&self, blob: &Blob) -> std::ops::RangeInclusive<usize> {
        self.index.frames_for(blob.raw_offset, blob.size)
    }

    /// Names what lives in frame `i`: up to three paths (or blob digests) and a count.
    pub fn frame_contents(&self, i: usize) -> String {
        let start = self.index.frame_raw_start(i);
        let end = start + self.index.frames()[i].raw_len;
        let digests: Vec<&Blob> = self
            .index
            .blobs()
            .iter()
            .filter(|b| b.raw_offset < end && b.raw_offset + b.size > start)
            .collect();
        let mut names: Vec<String> = Vec::new();
        for b in &digests {
            let paths = self.index.entries().iter().filter(
                |e| matches!(&e.kind, EntryKind::File { digest, .. } if *digest == b.digest),
            );
            let mut any = false;
            for e in paths {
                names.push(e.path.to_string());
                any = true;
            }
            if !any {
                names.push(b.digest.to_string());
            }
        }
        match names.len() {
            0 => "no content".into(),
            1..=3 => names.join(", "),
            n => format!("{} and {} more", names[..3].join(", "), n - 3),
        }
    }

    /// Checks every frame (in parallel), and with `deep` also decodes every blob and checks
    /// its content digest. `checked` is called with each frame's stored bytes once they are
    /// checked (for progress, or to release mapped pages).
    pub fn verify(&self, deep: bool, checked: &(dyn Fn(&'a [u8]) + Sync)) -> VerifyReport {
        let mut damaged: Vec<(usize, Error)> = (0..self.index.frames().len())
            .into_par_iter()
            .filter_map(|i| {
                let r = self.check_frame(i);
                checked(self.frame_stored(i));
                r.err().map(|e| (i, e))
            })
            .collect();
        damaged.sort_by_key(|(i, _)| *i);
        let mut damaged: Vec<Error> = damaged.into_iter().map(|(_, e)| e).collect();
        if deep && damaged.is_empty() {
            let mut bad: Vec<Error> = self
                .index
                .blobs()
                .par_iter()
                .filter_map(|b| {
                    let (actual, _) = match Sha256Digest::of_reader(self.blob_reader(b)) {
                        Ok(d) => d,
                        Err(e) => return Some(Error::corrupt(format!("blob {}: {e}", b.digest))),
                    };
                    (actual != b.digest).then(|| Error::DamagedBlob {
                        name: b.digest.to_string(),
                        expected: b.digest,
                        actual,
                    })
                })
                .collect();
            damaged.append(&mut bad);
        }
        VerifyReport {
            frames: self.index.frames().len(),
            bytes: self.index.stored_len(),
            damaged,
        }
    }
}

/// Streams one blob's content, checking each frame before returning its bytes.
pub struct BlobReader<'p, 'a> {
    payload: &'p Payload<'a>,
    next: u64,
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl Read for BlobReader<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.next >= self.end || out.is_empty() {
            return Ok(0);
        }
        let in_buf =
            self.next >= self.buf_start && self.next < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            let frame = *self.payload.index.frames_for(self.next, 1).start();
            self.payload
                .decode_frame(frame, &mut self.buf)
                .map_err(io::Error::other)?;
            self.buf_start = self.payload.index.frame_raw_start(frame);
        }
        let from = (self.next - self.buf_start) as usize;
        let avail = (self.buf.len() - from).min((self.end - self.next) as usize);
        let n = avail.min(out.len());
        out[..n].copy_from_slice(&self.buf[from..from + n]);
        self.next += n as u64;
        Ok(n)
    }
}
