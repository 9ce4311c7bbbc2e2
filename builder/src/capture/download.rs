//! Blob downloads: one upstream fetch per digest, however many clients ask at once.
//!
//! The first request for a blob that is not stored starts a download task ([`fetch`]) and
//! registers it in [`Downloads`]; requests that arrive while it runs join it. The task writes
//! the upstream's bytes to a file in `DIR/tmp/`, hashing them, and publishes how much is
//! written through a `watch` channel ([`Progress`]). Every client, the first one included,
//! streams from that file as it grows ([`body`]), so a client that goes away stops nothing:
//! the download finishes and the blob is stored for the next pull.
//!
//! The last byte of a blob is held back from every client until the whole blob was checked
//! against its digest. A blob that does not match is deleted, never stored, and each client's
//! response ends early with an error: a client cannot receive a complete wrong blob.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use airlock_payload::Sha256Digest;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, watch};

use airlock_oci::Body;

use super::error::{chain, ProxyError};
use super::store::Store;
use super::upstream::{Repo, Upstream};

/// Bytes per file write and per chunk sent to a client.
pub const CHUNK: usize = 256 << 10;
/// Chunks buffered between a file reader and its connection.
const CHANNEL_DEPTH: usize = 4;

/// Where a download is.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Waiting for the upstream's answer.
    Waiting,
    /// Arriving: `written` bytes are in `file`.
    Streaming {
        /// The upstream's `Content-Length`.
        len: Option<u64>,
        /// Bytes written to `file` so far.
        written: u64,
        /// The download file (read with `pread`, so it can be shared).
        file: Arc<File>,
    },
    /// Complete, checked and stored; `file` is the stored blob.
    Stored {
        /// Its length.
        len: u64,
        /// The file.
        file: Arc<File>,
    },
    /// The upstream failed, or the content did not match its digest; nothing was stored.
    Failed(Arc<ProxyError>),
}

/// What a request for a blob found.
#[derive(Debug)]
pub enum Joined {
    /// The blob is stored: serve it.
    Stored(Progress),
    /// A download is running: follow it.
    Running(watch::Receiver<Progress>),
    /// Nothing yet: the caller starts [`fetch`] with the sender, and follows the receiver.
    Start(watch::Sender<Progress>, watch::Receiver<Progress>),
}

/// The downloads in progress, by digest.
#[derive(Debug, Default)]
pub struct Downloads {
    running: Mutex<HashMap<Sha256Digest, watch::Receiver<Progress>>>,
    started: AtomicUsize,
}

impl Downloads {
    /// Joins the download of `digest`, or finds it stored, or registers a new one.
    pub fn join(&self, store: &Store, digest: Sha256Digest) -> Result<Joined, ProxyError> {
        let mut running = self.running.lock().expect("no panics while locked");
        if let Some(rx) = running.get(&digest) {
            return Ok(Joined::Running(rx.clone()));
        }
        // Checked under the lock: a download that just finished has stored its blob.
        if let Some((file, len)) = store.open_blob(digest)? {
            return Ok(Joined::Stored(Progress::Stored {
                len,
                file: Arc::new(file),
            }));
        }
        let (tx, rx) = watch::channel(Progress::Waiting);
        running.insert(digest, rx.clone());
        self.started.fetch_add(1, Ordering::Relaxed);
        Ok(Joined::Start(tx, rx))
    }

    fn finish(&self, digest: Sha256Digest) {
        self.running
            .lock()
            .expect("no panics while locked")
            .remove(&digest);
    }

    /// Upstream blob fetches started so far.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }
}

/// Downloads blob `digest` of `repo` into the store, publishing progress on `tx`, then
/// unregisters itself from `downloads`.
pub async fn fetch(
    upstream: Arc<Upstream>,
    store: Store,
    downloads: Arc<Downloads>,
    repo: Repo,
    digest: Sha256Digest,
    tx: watch::Sender<Progress>,
) {
    match fetch_to_store(&upstream, &store, &repo, digest, &tx).await {
        Ok(len) => tracing::debug!(%digest, len, "blob stored"),
        Err(e) => {
            tracing::warn!("{}", chain(&e));
            tx.send_replace(Progress::Failed(Arc::new(e)));
        }
    }
    downloads.finish(digest);
}

async fn fetch_to_store(
    upstream: &Upstream,
    store: &Store,
    repo: &Repo,
    digest: Sha256Digest,
    tx: &watch::Sender<Progress>,
) -> Result<u64, ProxyError> {
    let sized = upstream.blob(repo, digest).await?;
    let tmp = store.temp_file()?;
    let storage = |source| ProxyError::Storage {
        context: format!("write blob {digest}"),
        source,
    };
    let file = Arc::new(tmp.as_file().try_clone().map_err(storage)?);
    let len = sized.content_length;
    tx.send_replace(Progress::Streaming {
        len,
        written: 0,
        file: file.clone(),
    });
    let mut stream = sized.stream;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        let end = match stream.next().await {
            Some(Ok(chunk)) => {
                buf.extend_from_slice(&chunk);
                false
            }
            Some(Err(e)) => return Err(stream_error(upstream, repo, digest, e)),
            None => true,
        };
        if buf.len() >= CHUNK || (end && !buf.is_empty()) {
            let data = buf.split().freeze();
            let n = data.len() as u64;
            let f = file.clone();
            let at = written;
            // File writes and hashing are blocking work: off the async workers.
            hasher = tokio::task::spawn_blocking(move || {
                f.write_all_at(&data, at)?;
                hasher.update(&data);
                Ok::<_, io::Error>(hasher)
            })
            .await
            .expect("a blob write does not panic")
            .map_err(storage)?;
            written += n;
            tx.send_modify(|p| {
                if let Progress::Streaming { written: w, .. } = p {
                    *w = written;
                }
            });
        }
        if end {
            break;
        }
    }
    let actual = Sha256Digest(hasher.finalize().into());
    if actual != digest {
        return Err(ProxyError::DigestMismatch {
            upstream: upstream.describe(&repo.host),
            digest: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    if let Some(expected) = len.filter(|l| *l != written) {
        return Err(ProxyError::SizeMismatch {
            upstream: upstream.describe(&repo.host),
            digest: digest.to_string(),
            expected,
            got: written,
        });
    }
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.persist(tmp, digest))
        .await
        .expect("storing a blob does not panic")?;
    tx.send_replace(Progress::Stored { len: written, file });
    Ok(written)
}

/// An error in the middle of the upstream's body: oci-client reports a digest mismatch at
/// the end of the stream itself.
fn stream_error(
    upstream: &Upstream,
    repo: &Repo,
    digest: Sha256Digest,
    e: io::Error,
) -> ProxyError {
    use oci_client::errors::DigestError;
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<DigestError>());
    match inner {
        Some(DigestError::VerificationError { expected, actual }) => ProxyError::DigestMismatch {
            upstream: upstream.describe(&repo.host),
            digest: expected.clone(),
            actual: actual.clone(),
        },
        _ => ProxyError::UpstreamFailed {
            upstream: upstream.describe(&repo.host),
            what: format!("blob {digest} of {}/{}", repo.host, repo.name),
            cause: chain(&e),
        },
    }
}

/// Waits until the download has an answer: the first [`Progress`] that is not `Waiting`.
pub async fn answer(mut rx: watch::Receiver<Progress>) -> (Progress, watch::Receiver<Progress>) {
    let state = match rx.wait_for(|p| !matches!(p, Progress::Waiting)).await {
        Ok(p) => p.clone(),
        Err(_) => Progress::Failed(Arc::new(ProxyError::UpstreamFailed {
            upstream: "(unknown)".to_owned(),
            what: "a blob".to_owned(),
            cause: "the download stopped".to_owned(),
        })),
    };
    (state, rx)
}

/// A body that streams `file` as the download behind `rx` fills it.
pub fn body(file: Arc<File>, rx: watch::Receiver<Progress>) -> Body {
    let (tx, out) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(tail(file, rx, tx));
    Body::channel(out)
}

async fn tail(
    file: Arc<File>,
    mut rx: watch::Receiver<Progress>,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let mut sent = 0u64;
    loop {
        let state = rx.borrow_and_update().clone();
        let (limit, done) = match state {
            Progress::Waiting => (0, false),
            // The last byte waits for the digest check.
            Progress::Streaming { written, .. } => (written.saturating_sub(1), false),
            Progress::Stored { len, .. } => (len, true),
            Progress::Failed(e) => {
                let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                return;
            }
        };
        while sent < limit {
            let n = (limit - sent).min(CHUNK as u64) as usize;
            let f = file.clone();
            let at = sent;
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; n];
                f.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
            })
            .await
            .expect("a blob read does not panic");
            let failed = read.is_err();
            if tx.send(read).await.is_err() || failed {
                return;
            }
            sent += n as u64;
        }
        if done {
            return;
        }
        if rx.changed().await.is_err() {
            let _ = tx.send(Err(io::Error::other("the download stopped"))).await;
            return;
        }
    }
}
