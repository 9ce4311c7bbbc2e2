//! One HTTP/1.1 server loop for every OCI server of ours: hyper does the protocol, tokio the
//! I/O, and the caller only says how a request is answered ([`serve`]'s handler).
//!
//! Limits for hostile or broken clients: request heads larger than
//! [`ServeOptions::max_buf_size`] get `431` and a closed connection (from hyper, or from
//! [`head_len`] for a head that hyper's buffer limit let through); a head not complete
//! within [`ServeOptions::header_read_timeout`] closes the connection; at most
//! [`ServeOptions::max_connections`] connections are served at once (more wait in the
//! listen backlog). Every request is logged at debug level when its answer is complete or
//! abandoned (method, path, status, bytes, duration). When `shutdown` completes (see
//! [`shutdown_signal`] for SIGTERM/SIGINT), the listener closes, idle connections close,
//! requests in flight finish (for at most [`ServeOptions::grace`]) and [`serve`] returns.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::body::Body;
use crate::error::{echo, error_response, RequestError};
use crate::headers::{API_VERSION, API_VERSION_VALUE};

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
            max_connections: 1024,
            grace: Duration::from_secs(30),
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` completes, then drains connections (see
/// the module documentation) and returns. `handler` answers every request whose head is
/// within the limit; it should not panic on client input.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let limits = AcceptLimits {
        max_connections: opts.max_connections,
        grace: opts.grace,
    };
    accept_loop(listener, limits, shutdown, move |stream, peer, mut stop| {
        let handler = handler.clone();
        let opts = opts.clone();
        async move {
            let max_head = opts.max_buf_size;
            let service = service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(logged(handler, req, max_head).await) }
            });
            let result = serve_connection(TokioIo::new(stream), service, &opts, &mut stop).await;
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        }
    })
    .await;
}

/// Serves HTTP/1.1 requests on one connection `io` with `service`, under the head limits of
/// `opts` ([`ServeOptions::header_read_timeout`], [`ServeOptions::max_buf_size`]); when
/// `stop` changes, the connection closes gracefully (requests in flight finish). Used by
/// [`serve`] and by servers whose connections arrive some other way (a TLS tunnel).
pub async fn serve_connection<I, S, B>(
    io: I,
    service: S,
    opts: &ServeOptions,
    stop: &mut watch::Receiver<()>,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: HttpBody + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_buf_size)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// How many connections [`accept_loop`] serves at once, and how long they get to finish
/// once shutdown begins.
#[derive(Debug, Clone, Copy)]
pub struct AcceptLimits {
    /// Connections served at once (more wait in the listen backlog).
    pub max_connections: usize,
    /// How long connections in flight may take to finish after shutdown begins.
    pub grace: Duration,
}

/// The accept loop under every server of ours ([`serve`], and the stub's pull proxy, whose
/// connections are not plain HTTP): accepts connections on `listener`, at most
/// [`AcceptLimits::max_connections`] at once, and runs `conn(stream, peer, stop)` for each
/// on its own task. When `shutdown` completes, the listener closes, `stop` changes (start a
/// graceful close), connections get [`AcceptLimits::grace`] to finish, and the rest are
/// aborted.
pub async fn accept_loop<C, F>(
    listener: TcpListener,
    limits: AcceptLimits,
    shutdown: impl Future<Output = ()>,
    conn: C,
) where
    C: Fn(TcpStream, SocketAddr, watch::Receiver<()>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        let task = conn(stream, peer, stop_rx.clone());
        conns.spawn(async move {
            let _slot = slot;
            task.await;
        });
    }
    drop(listener);
    tracing::debug!(
        connections = conns.len(),
        "shutting down: no new connections"
    );
    drop(stop_tx);
    let drained = tokio::time::timeout(limits.grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "connections still open after {:?}; closing them",
            limits.grace
        );
        conns.shutdown().await;
    }
}

/// A future that completes on the first SIGINT or SIGTERM. The handlers are installed
/// now, so a signal that arrives before the future is polled is not lost. Call inside a
/// tokio runtime.
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

/// About how many bytes the head of `req` took on the wire: request line and header lines.
/// hyper enforces its buffer limit only while a head is incomplete, so a head that arrives
/// in one large read passes with up to about twice [`ServeOptions::max_buf_size`].
pub fn head_len<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    line + headers + 2
}

/// Answers `req` through `handler` (with `431` when its head is over `max_head` bytes)
/// with a body that logs one line when it is dropped, that is when the response is
/// complete or abandoned.
async fn logged<H, F>(handler: H, req: Request<Incoming>, max_head: usize) -> Response<LoggedBody>
where
    H: Fn(Request<Incoming>) -> F,
    F: Future<Output = Response<Body>>,
{
    let start = Instant::now();
    let size = head_len(&req);
    let method = req.method().clone();
    let path = echo(req.uri().path_and_query().map_or("", |p| p.as_str()));
    let resp = if size > max_head {
        let err = RequestError::HeadTooLarge {
            size,
            limit: max_head,
        };
        let mut r = error_response(&err, method == Method::HEAD);
        r.headers_mut()
            .insert(API_VERSION, HeaderValue::from_static(API_VERSION_VALUE));
        r
    } else {
        handler(req).await
    };
    let status = resp.status();
    resp.map(|inner| LoggedBody {
        inner,
        method,
        path,
        status,
        sent: 0,
        start,
    })
}

/// A response body that counts what it sends and logs the request when dropped.
struct LoggedBody {
    inner: Body,
    method: Method,
    path: String,
    status: StatusCode,
    sent: u64,
    start: Instant,
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        tracing::debug!(
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            bytes = self.sent,
            ms = self.start.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_len_counts_request_line_and_headers() {
        let req = Request::builder()
            .uri("/v2/")
            .header("host", "x")
            .body(())
            .unwrap();
        // "GET /v2/ HTTP/1.1\r\n" + "host: x\r\n" + "\r\n"
        assert_eq!(head_len(&req), 19 + 9 + 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_refuses_hostile_requests_then_shuts_down_on_its_future() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let opts = ServeOptions {
            header_read_timeout: Duration::from_millis(500),
            grace: Duration::from_secs(5),
            ..ServeOptions::default()
        };
        let handler = |_req: Request<Incoming>| async {
            let mut r = crate::json_response(StatusCode::OK, &serde_json::json!({}), false);
            r.headers_mut()
                .insert(API_VERSION, HeaderValue::from_static(API_VERSION_VALUE));
            r
        };
        let task = tokio::spawn(serve(listener, handler, opts, async {
            let _ = rx.await;
        }));
        crate::testutil::assert_refuses_hostile_requests(addr, Duration::from_millis(500)).await;
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still accepting"
        );
    }
}
