//! HTTP/1.1 over TCP for a [`Proxy`]: hyper does the protocol, tokio the I/O.
//!
//! Request heads larger than [`ServeOptions::max_buf_size`] get `431`; a head not complete
//! within [`ServeOptions::header_read_timeout`] closes the connection; at most
//! [`ServeOptions::max_connections`] connections are served at once. When `shutdown`
//! completes, the listener closes, idle connections close, and requests in flight get
//! [`ServeOptions::grace`] to finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::proxy::Proxy;

/// Limits and timeouts of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Largest request head (hyper's read buffer); larger ones get `431`.
    pub max_buf_size: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long requests in flight may take to finish after shutdown begins.
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            max_buf_size: 64 << 10,
            max_connections: 512,
            grace: Duration::from_secs(10),
        }
    }
}

/// Serves `proxy` on `listener` until `shutdown` completes, then drains connections.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(());
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("failed to accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let mut stop = stop_rx.clone();
        let opts = opts.clone();
        conns.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move {
                    let resp = proxy.handle(&req).await;
                    tracing::debug!(
                        method = %req.method(),
                        uri = %req.uri(),
                        status = resp.status().as_u16(),
                        "request"
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(opts.header_read_timeout)
                .max_buf_size(opts.max_buf_size)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    drop(stop_tx);
    let drained = tokio::time::timeout(opts.grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "requests still running after {:?}; closing them",
            opts.grace
        );
        conns.shutdown().await;
    }
}

/// A future that completes on the first SIGINT or SIGTERM; the handlers are installed now,
/// so a signal that arrives before the future is polled is not lost.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::debug!("SIGTERM received"),
            _ = int.recv() => tracing::debug!("SIGINT received"),
        }
    })
}
