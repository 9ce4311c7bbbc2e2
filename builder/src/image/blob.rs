//! Blobs and where they come from: [`BlobStore`] (what every source is), [`ImageBlob`] and
//! [`CapturedImage`] (what a capture returns), digest checks, and [`FileRange`] (a blob
//! inside a file on disk, read with pread).

use std::fmt;
use std::io;
use std::path::PathBuf;

use airlock_payload::{BlobSource, Image, Sha256Digest};

use super::error::ErrorKind;

/// One blob of a captured image.
pub struct ImageBlob {
    /// Its digest (verified).
    pub digest: Sha256Digest,
    /// Its length.
    pub size: u64,
    /// The media type its descriptor gives.
    pub media_type: String,
    /// Already compressed (gzip or zstd layers): stored verbatim.
    pub precompressed: bool,
    /// Where the writer reads it.
    pub source: Box<dyn BlobSource>,
}

impl fmt::Debug for ImageBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageBlob")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("media_type", &self.media_type)
            .field("precompressed", &self.precompressed)
            .finish_non_exhaustive()
    }
}

/// An image ready to be written: its index record and its blobs (manifests first, then
/// configs and layers; unique).
#[derive(Debug)]
pub struct CapturedImage {
    /// The record the payload index gets.
    pub image: Image,
    /// The blobs it names.
    pub blobs: Vec<ImageBlob>,
}

/// What a blob is, for sources that fetch manifests and blobs differently (registries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// A manifest or index.
    Manifest,
    /// A config or layer.
    Blob,
}

/// Where an image's blobs come from. Every method verifies what it returns against the
/// digest (and the size, when known).
pub trait BlobStore: Sync {
    /// Reads a small blob (manifest, index, config) into memory.
    fn read(
        &self,
        kind: BlobKind,
        digest: Sha256Digest,
        size: Option<u64>,
    ) -> Result<Vec<u8>, ErrorKind>;
    /// Opens a layer for the writer.
    fn open(&self, digest: Sha256Digest, size: u64) -> Result<Box<dyn BlobSource>, ErrorKind>;
    /// Fetches the given layers ahead of `open` (registries download them in parallel).
    fn prefetch(&self, _blobs: &[(Sha256Digest, u64)]) -> Result<(), ErrorKind> {
        Ok(())
    }
    /// True when the store advances the progress bar itself (downloads).
    fn reports_progress(&self) -> bool {
        false
    }
}

/// Checks `bytes` against `digest` and `size`.
pub fn verify_bytes(
    bytes: &[u8],
    digest: Sha256Digest,
    size: Option<u64>,
) -> Result<(), ErrorKind> {
    verify_hashed(Sha256Digest::of(bytes), bytes.len() as u64, digest, size)
}

/// Checks a computed digest and length against the expected ones.
pub fn verify_hashed(
    actual: Sha256Digest,
    len: u64,
    digest: Sha256Digest,
    size: Option<u64>,
) -> Result<(), ErrorKind> {
    if actual != digest {
        return Err(ErrorKind::DigestMismatch { digest, actual });
    }
    match size {
        Some(expected) if expected != len => Err(ErrorKind::SizeMismatch {
            digest,
            expected,
            actual: len,
        }),
        _ => Ok(()),
    }
}

/// A file's bytes from `offset` on, for [`BlobSource`]s over files; refuses to read a file
/// that changed (length or modification time) since it was verified.
#[derive(Debug)]
pub struct FileRange {
    /// The file.
    pub path: PathBuf,
    /// Where the blob starts.
    pub offset: u64,
    /// The blob's length.
    pub len: u64,
    /// The file's length when verified.
    pub file_len: u64,
    /// Its modification time then.
    pub mtime: Option<std::time::SystemTime>,
}

impl FileRange {
    /// Describes `len` bytes at `offset` of `path` as the file is now.
    pub fn new(path: PathBuf, offset: u64, len: u64) -> io::Result<FileRange> {
        let md = std::fs::metadata(&path)?;
        Ok(FileRange {
            path,
            offset,
            len,
            file_len: md.len(),
            mtime: md.modified().ok(),
        })
    }

    /// Hashes the range (to its end, with `io::copy`) and returns the digest and the count.
    pub fn hash(&self) -> io::Result<(Sha256Digest, u64)> {
        let f = std::fs::File::open(&self.path)?;
        let reader = io::Read::take(
            PositionedReader {
                file: f,
                pos: self.offset,
            },
            self.len,
        );
        Sha256Digest::of_reader(reader)
    }

    /// A reader over the range.
    pub fn reader(&self) -> io::Result<impl io::Read> {
        let f = std::fs::File::open(&self.path)?;
        Ok(io::Read::take(
            PositionedReader {
                file: f,
                pos: self.offset,
            },
            self.len,
        ))
    }
}

impl BlobSource for FileRange {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&self.path)?;
        let md = f.metadata()?;
        if md.len() != self.file_len || md.modified().ok() != self.mtime {
            return Err(io::Error::other(format!(
                "{} changed while the build was reading it",
                self.path.display()
            )));
        }
        if offset + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the blob",
            ));
        }
        f.read_exact_at(buf, self.offset + offset)
    }
}

/// Reads a file with pread from a moving position (no shared seek offset).
pub(crate) struct PositionedReader {
    pub file: std::fs::File,
    pub pos: u64,
}

impl io::Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
