//! The response body of every server of ours: nothing, bytes in memory, chunks from a
//! producer task through a channel, or any other stream of bytes (the stub's blobs served
//! from the mapped installer).
//!
//! A channel or stream that yields an `Err` aborts the response: the client sees a truncated
//! body, never a complete wrong one.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::mpsc;

/// A stream of bytes that can be a [`Body`].
pub type DynBody = Pin<Box<dyn HttpBody<Data = Bytes, Error = io::Error> + Send>>;

/// A response body.
pub struct Body(Kind);

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<io::Result<Bytes>>),
    Stream(DynBody),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Channel(_) => "channel",
            Kind::Stream(_) => "stream",
        };
        f.debug_tuple("Body")
            .field(&kind)
            .field(&self.size_hint())
            .finish()
    }
}

impl Body {
    /// No content.
    pub fn empty() -> Self {
        Body(Kind::Empty)
    }

    /// Content held in memory.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::empty()
        } else {
            Body(Kind::Full(Some(bytes)))
        }
    }

    /// Content held in memory for a GET, nothing for a HEAD (`head`).
    pub fn full_unless_head(bytes: impl Into<Bytes>, head: bool) -> Self {
        if head {
            Body::empty()
        } else {
            Body::full(bytes)
        }
    }

    /// Chunks from a producer task (its length unknown to the body; set `Content-Length`).
    pub fn channel(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Body(Kind::Channel(rx))
    }

    /// Any body of bytes; its size hint and end are its own.
    pub fn stream(body: impl HttpBody<Data = Bytes, Error = io::Error> + Send + 'static) -> Self {
        Body(Kind::Stream(Box::pin(body)))
    }

    /// Reads the whole body into memory (tests, small answers).
    pub async fn read_all(mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await
        {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().0 {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Channel(rx) => rx.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data))),
            Kind::Stream(s) => s.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Channel(_) => false,
            Kind::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Channel(_) => SizeHint::default(),
            Kind::Stream(s) => s.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn every_kind_of_body_yields_its_bytes() {
        assert!(Body::empty().is_end_stream());
        assert!(Body::full("").is_end_stream());
        assert!(Body::full_unless_head("abc", true).is_end_stream());
        assert!(!Body::full_unless_head("abc", false).is_end_stream());
        let full = Body::full("abc");
        assert_eq!(full.size_hint().exact(), Some(3));
        assert_eq!(full.read_all().await.unwrap(), b"abc");

        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            tx.send(Ok(Bytes::from_static(b"ab"))).await.unwrap();
            tx.send(Ok(Bytes::from_static(b"cd"))).await.unwrap();
        });
        assert_eq!(Body::channel(rx).read_all().await.unwrap(), b"abcd");

        let inner = http_body_util::Full::new(Bytes::from_static(b"xyz"))
            .map_err(|never: std::convert::Infallible| match never {});
        let s = Body::stream(inner);
        assert_eq!(s.size_hint().exact(), Some(3));
        assert_eq!(s.read_all().await.unwrap(), b"xyz");
    }

    #[tokio::test]
    async fn an_error_chunk_aborts_the_body() {
        let (tx, rx) = mpsc::channel(2);
        tx.send(Ok(Bytes::from_static(b"ab"))).await.unwrap();
        tx.send(Err(io::Error::other("digest mismatch")))
            .await
            .unwrap();
        let err = Body::channel(rx).read_all().await.unwrap_err();
        assert!(err.to_string().contains("digest mismatch"));
    }
}
