//! Response bodies produced lazily: huge, slow, or broken in the middle.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use crate::Counters;

/// Size of the frames of a [`Repeat`] body.
const CHUNK_LEN: usize = 64 * 1024;

/// The one buffer every [`Repeat`] frame borrows from, so no frame allocates.
static CHUNK: [u8; CHUNK_LEN] = [b'x'; CHUNK_LEN];

/// `len` bytes of `b'x'` in 64 KiB frames, produced only as the connection asks for them,
/// so a body of a terabyte costs the server one static buffer.
#[derive(Debug)]
pub(crate) struct Repeat {
    remaining: u64,
    /// Whether the length is announced (`content-length`) or left to chunked encoding.
    sized: bool,
    counters: Arc<Counters>,
}

impl Repeat {
    pub(crate) fn new(len: u64, sized: bool, counters: Arc<Counters>) -> Self {
        Self {
            remaining: len,
            sized,
            counters,
        }
    }
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = this.remaining.min(CHUNK_LEN as u64) as usize;
        this.remaining -= len as u64;
        this.counters.streamed(len as u64);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..len])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// A first chunk, a pause, then either a last chunk or an error.
///
/// The pause matters for the error case too: hyper flushes what it has buffered when the
/// body is pending, so the client receives the first chunk before the connection breaks.
#[derive(Debug)]
pub(crate) struct Paused {
    first: Option<Bytes>,
    pause: Pin<Box<Sleep>>,
    then: Option<Result<Bytes, io::Error>>,
}

impl Paused {
    /// `first`, then after `pause`, `rest`.
    pub(crate) fn slow(first: Bytes, pause: Duration, rest: Bytes) -> Self {
        Self {
            first: Some(first),
            pause: Box::pin(tokio::time::sleep(pause)),
            then: Some(Ok(rest)),
        }
    }

    /// `first`, then shortly after, an error that makes hyper abort the connection.
    pub(crate) fn broken(first: Bytes) -> Self {
        Self {
            first: Some(first),
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(10))),
            then: Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "body broken on purpose",
            ))),
        }
    }
}

impl http_body::Body for Paused {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.then.is_none() {
            return Poll::Ready(None);
        }
        if this.pause.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(this.then.take().map(|then| then.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.then.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use std::future::poll_fn;

    async fn next(body: &mut (impl http_body::Body<Data = Bytes> + Unpin)) -> Option<Bytes> {
        let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        frame.ok()?.into_data().ok()
    }

    #[tokio::test]
    async fn repeat_frames_cover_the_length_exactly() {
        let counters = Arc::new(Counters::default());
        let len = 2 * CHUNK_LEN as u64 + 5;
        let mut body = Repeat::new(len, true, counters.clone());
        assert_eq!(body.size_hint().exact(), Some(len));
        let mut seen = Vec::new();
        while let Some(chunk) = next(&mut body).await {
            assert!(chunk.iter().all(|b| *b == b'x'));
            seen.push(chunk.len());
        }
        assert_eq!(seen, [CHUNK_LEN, CHUNK_LEN, 5]);
        assert!(body.is_end_stream());
        assert_eq!(counters.bytes_streamed(), len);
    }

    #[test]
    fn unsized_repeat_has_no_exact_length() {
        let body = Repeat::new(10, false, Arc::default());
        assert_eq!(body.size_hint().exact(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn paused_body_waits_between_chunks() {
        let mut body = Paused::slow(
            Bytes::from_static(b"a"),
            Duration::from_secs(5),
            Bytes::from_static(b"b"),
        );
        let start = tokio::time::Instant::now();
        assert_eq!(next(&mut body).await.as_deref(), Some(&b"a"[..]));
        assert_eq!(next(&mut body).await.as_deref(), Some(&b"b"[..]));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn broken_body_fails_after_its_first_chunk() {
        let mut body = Paused::broken(Bytes::from_static(b"0123456789"));
        assert_eq!(next(&mut body).await.map(|b| b.len()), Some(10));
        let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(matches!(frame, Some(Err(_))));
    }
}
