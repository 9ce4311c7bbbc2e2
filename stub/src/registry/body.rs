//! Blob content straight from the payload, as an `airlock-oci` [`Body`] stream (small JSON
//! answers are plain in-memory bodies).
//!
//! Blob content is produced by a blocking task (frame checks and zstd decoding are CPU work)
//! and handed to hyper through a channel of at most [`CHANNEL_DEPTH`] chunks, so a slow
//! client holds a bounded amount of memory. Parts of the blob stored in `raw` frames are sent
//! as slices of the mapped installer ([`Bytes::from_static`]: no copy); parts in `zstd`
//! frames are decoded in [`CHUNK`]-sized pieces. Every frame is checked against its digest
//! before a byte of it is sent (raw frames once per process, see
//! [`Payload::check_frame_once`]).

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use airlock_payload::{Blob, Codec, Payload};

use airlock_oci::Body;
use bytes::Bytes;

use super::Pages;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// Decoded bytes per chunk of a compressed blob.
pub const CHUNK: usize = 256 << 10;
/// Chunks buffered between the producer and the connection.
pub const CHANNEL_DEPTH: usize = 2;

/// `len` bytes of `blob` from `offset` (the caller keeps them inside the blob), as a body.
pub fn blob_body(
    payload: Arc<Payload<'static>>,
    pages: Pages,
    blob: Blob,
    offset: u64,
    len: u64,
) -> Body {
    debug_assert!(offset + len <= blob.size);
    if len == 0 {
        return Body::empty();
    }
    Body::stream(BlobStream {
        payload,
        pages,
        blob,
        offset,
        remaining: len,
        rx: None,
    })
}

/// `len` bytes of a blob from `offset`, produced on first poll.
#[derive(Debug)]
struct BlobStream {
    payload: Arc<Payload<'static>>,
    pages: Pages,
    blob: Blob,
    offset: u64,
    remaining: u64,
    rx: Option<mpsc::Receiver<io::Result<Bytes>>>,
}

impl hyper::body::Body for BlobStream {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.get_mut().poll_chunk(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Drop for BlobStream {
    /// The response is done (or abandoned): its mapped frames leave resident memory. Frames
    /// another response still sends fault back in from the page cache.
    fn drop(&mut self) {
        if self.blob.size == 0 {
            return;
        }
        let index = self.payload.index();
        for i in index.frames_for(self.blob.raw_offset, self.blob.size) {
            if index.frames()[i].codec == Codec::Raw {
                (self.pages.release)(self.payload.frame_stored(i));
            }
        }
    }
}

impl BlobStream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let rx = self.rx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            let (payload, blob, pages) = (self.payload.clone(), self.blob.clone(), self.pages);
            let (offset, len) = (self.offset, self.remaining);
            tokio::task::spawn_blocking(move || produce(&payload, pages, &blob, offset, len, &tx));
            rx
        });
        match rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                let n = (chunk.len() as u64).min(self.remaining);
                self.remaining -= n;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                let missing = self.remaining;
                self.remaining = 0;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("blob {} ended {missing} bytes early", self.blob.digest),
                ))))
            }
        }
    }
}

/// Sends `len` bytes of `blob` from `offset` into `tx`, frame by frame; stops when the
/// receiver is gone (the client left). Runs on a blocking thread.
fn produce(
    payload: &Payload<'static>,
    pages: Pages,
    blob: &Blob,
    offset: u64,
    len: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) {
    let index = payload.index();
    let (start, end) = (blob.raw_offset + offset, blob.raw_offset + offset + len);
    // Slices sent but maybe not yet written to the socket: the channel holds CHANNEL_DEPTH,
    // hyper one more. Older ones are released from resident memory (safe even if still in
    // use: the read-only map faults the same bytes back in).
    let mut in_flight: std::collections::VecDeque<&'static [u8]> =
        std::collections::VecDeque::new();
    for i in index.frames_for(start, len) {
        let frame = &index.frames()[i];
        let f_start = index.frame_raw_start(i);
        let (from, to) = (start.max(f_start), end.min(f_start + frame.raw_len));
        let sent = match frame.codec {
            Codec::Raw => match payload.check_frame_once(i) {
                // A raw frame stores the raw bytes: serve the mapped slice itself.
                Ok(stored) => {
                    let part = &stored[(from - f_start) as usize..(to - f_start) as usize];
                    (pages.populate)(part);
                    let sent = tx.blocking_send(Ok(Bytes::from_static(part))).is_ok();
                    in_flight.push_back(part);
                    if in_flight.len() > CHANNEL_DEPTH + 1 {
                        (pages.release)(in_flight.pop_front().expect("not empty"));
                    }
                    sent
                }
                Err(e) => {
                    tracing::warn!("serving blob {}: {e}", blob.digest);
                    let _ = tx.blocking_send(Err(io::Error::other(e)));
                    return;
                }
            },
            Codec::Zstd => send_decoded(payload, blob, from - blob.raw_offset, to - from, tx),
        };
        if !sent {
            return;
        }
    }
}

/// Decodes `len` bytes of `blob` from `offset` (all in one zstd frame) and sends them in
/// [`CHUNK`]s. False when sending failed or stopped.
fn send_decoded(
    payload: &Payload<'static>,
    blob: &Blob,
    offset: u64,
    len: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> bool {
    let mut reader = payload.blob_reader_range(blob, offset, len);
    let mut left = len;
    while left > 0 {
        let mut chunk = vec![0u8; (left as usize).min(CHUNK)];
        if let Err(e) = reader.read_exact(&mut chunk) {
            tracing::warn!("serving blob {}: {e}", blob.digest);
            let _ = tx.blocking_send(Err(e));
            return false;
        }
        left -= chunk.len() as u64;
        if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            return false;
        }
    }
    true
}
