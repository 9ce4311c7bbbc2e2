//! `airlock capture`: a pull-through registry that records every image a cluster pulls, so
//! that `airlock build` can put exactly those images into an installer.
//!
//! Run it during a cluster bring-up (point containerd at it with a `hosts.toml` per upstream
//! or `_default` alone), stop it, and build with `images: - from: capture:DIR` or
//! `airlock build --from-capture DIR`. Unlike distribution's proxy, which mirrors one
//! `remoteurl`, it serves every upstream at once: containerd's `?ns=<host>` says which one a
//! request is for.
//!
//! - [`proxy`]: the proxy as a value ([`Proxy::handle`]): routing, manifests, blobs, the lock.
//! - [`upstream`]: fetches with the builder's registry client (oci-client, credentials,
//!   `--upstream HOST=URL`).
//! - [`download`]: one upstream fetch per blob however many clients ask, streamed to all of
//!   them, checked against its digest before it is stored.
//! - [`store`]: the capture folder (`DIR/blobs/sha256/`, `DIR/tmp/`).
//! - [`lock`]: `DIR/airlock-capture.lock.json`, reference → digest; a leaf (it imports
//!   only [`crate::reference`]), so the spec can read it.
//! - [`serve`]: the proxy on `airlock-oci`'s server loop (hyper over TCP, with limits and a
//!   graceful stop on SIGINT/SIGTERM), the one the stub's registry runs on too.
//!
//! The build side, a capture folder as an image source, is [`crate::image::capture`].

pub mod download;
pub mod error;
pub mod lock;
pub mod proxy;
pub mod store;
pub mod upstream;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

pub use airlock_oci::{shutdown_signal, ServeOptions};
pub use error::ProxyError;
pub use lock::{Lock, LockEntry, LockError, LOCK_FILE};
pub use proxy::Proxy;

use crate::image::registry::RegistryError;
use crate::image::Mirror;

/// What `airlock capture` was asked for.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Where to listen (port 0 picks a free one; the bound address is printed).
    pub listen: SocketAddr,
    /// The capture folder (created if missing; an existing capture is added to).
    pub out: PathBuf,
    /// `--upstream HOST=URL`: fetch HOST from URL instead.
    pub upstreams: Vec<Mirror>,
    /// The docker config file with credentials, if any.
    pub auth_file: Option<PathBuf>,
    /// How long a connection to an upstream may take.
    pub connect_timeout: Duration,
}

/// `airlock capture` could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The capture folder could not be created or opened.
    #[error("failed to open the capture folder {}", .dir.display())]
    Store {
        /// The folder.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The folder's lock file is bad.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Credentials could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The address could not be bound.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The runtime or the signal handlers could not start.
    #[error("failed to start the proxy")]
    Runtime(#[source] io::Error),
}

/// The proxy's limits: [`ServeOptions`]' defaults with fewer connections (512) and a
/// shorter drain (10 s) than a registry of captured images.
pub fn serve_options() -> ServeOptions {
    ServeOptions {
        max_connections: 512,
        grace: Duration::from_secs(10),
        ..ServeOptions::default()
    }
}

/// Serves `proxy` on `listener` with `airlock-oci`'s server loop until `shutdown`
/// completes (see [`airlock_oci::server`] for the limits and the drain).
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let handler = move |req: http::Request<hyper::body::Incoming>| {
        let proxy = proxy.clone();
        async move { proxy.handle(&req).await }
    };
    airlock_oci::serve(listener, handler, opts, shutdown).await;
}

/// What a capture run recorded.
#[derive(Debug, Clone)]
pub struct Summary {
    /// References in the lock file.
    pub references: usize,
    /// Blobs in the capture folder.
    pub blobs: usize,
    /// The capture folder.
    pub out: PathBuf,
}

/// Runs the proxy until SIGINT or SIGTERM. Prints `capturing on http://ADDR into DIR` first
/// (the bound address, for port 0), then `captured REF DIGEST` per new reference.
pub fn run(options: &CaptureOptions) -> Result<Summary, Error> {
    let store = store::Store::open(&options.out).map_err(|source| Error::Store {
        dir: options.out.clone(),
        source,
    })?;
    let lock = Lock::load_or_default(&options.out)?;
    let upstream = upstream::Upstream::new(
        options.upstreams.clone(),
        options.auth_file.as_deref(),
        options.connect_timeout,
    )?;
    let proxy = Proxy::new(upstream, store, lock).printing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: options.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::Runtime)?;
        let signal = shutdown_signal().map_err(Error::Runtime)?;
        let _ = writeln!(
            io::stdout(),
            "capturing on http://{addr}/ into {} (stop with Ctrl-C or SIGTERM)",
            options.out.display()
        );
        serve(listener, proxy.clone(), serve_options(), signal).await;
        Ok::<_, Error>(())
    })?;
    // Downloads still running are dropped with the runtime; their files go with them.
    drop(runtime);
    let summary = Summary {
        references: proxy.lock().entries().len(),
        blobs: proxy.store().count(),
        out: options.out.clone(),
    };
    let _ = std::fs::remove_dir_all(options.out.join("tmp"));
    Ok(summary)
}
