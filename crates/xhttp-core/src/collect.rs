//! Collecting a response body into [`Bytes`] under a limit.
//!
//! Every layer above the transport sees `Response<Bytes>`: retry covers the body download,
//! dedupe shares one buffer by reference count, the envelope slices without copying. The price
//! is that a body is held in memory, so it is collected under a limit (default 16 MiB, per
//! request [`BodyLimit`]). A `Content-Length` above the limit fails before a byte is read; a
//! body without one fails as soon as the bytes read pass the limit, so memory never grows past
//! the limit plus one frame.
//!
//! A declared length below the limit is a claim, not a promise: a server may announce
//! `content-length: 1000000000000000000` and send 4 KB. So the buffer is sized from what
//! arrives, not from what was announced: the first reservation is at most
//! [`Collector::FIRST_RESERVATION`] (64 KiB), and it doubles as bytes arrive, never past the
//! limit. An honest large body costs a few reallocations (amortised O(n)); a lying one costs
//! no more than the bytes it really sent.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::{BoxError, Layer, Service};

use crate::Error;

/// The largest response body collected into memory, as a request extension.
///
/// ```
/// use xhttp_core::BodyLimit;
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(BodyLimit(1024));
/// assert_eq!(BodyLimit::of(&request), BodyLimit(1024));
/// assert_eq!(BodyLimit::of(&http::Request::new(())), BodyLimit::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodyLimit(pub u64);

impl BodyLimit {
    /// 16 MiB: far above any API payload, far below what hurts a service that holds many.
    pub const DEFAULT: BodyLimit = BodyLimit(16 * 1024 * 1024);

    /// The limit a request asks for, or the default.
    pub fn of<B>(request: &http::Request<B>) -> BodyLimit {
        request
            .extensions()
            .get::<BodyLimit>()
            .copied()
            .unwrap_or_default()
    }
}

impl Default for BodyLimit {
    fn default() -> Self {
        BodyLimit::DEFAULT
    }
}

/// Reads a whole body into one `Bytes`, failing with
/// [`ErrorKind::BodyTooLarge`](crate::ErrorKind::BodyTooLarge) past `limit` bytes.
///
/// A body of a single frame is returned without a copy.
///
/// ```
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use xhttp_core::{collect, BodyLimit, ErrorKind};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let ok = collect(Full::new(Bytes::from_static(b"12345")), BodyLimit(5)).await.unwrap();
/// assert_eq!(ok, "12345");
/// let err = collect(Full::new(Bytes::from_static(b"123456")), BodyLimit(5)).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::BodyTooLarge);
/// # });
/// ```
pub async fn collect<B>(body: B, limit: BodyLimit) -> Result<Bytes, Error>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let mut collector = Collector::new(limit, &body.size_hint())?;
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::from_boxed(e.into()))?;
        if let Ok(data) = frame.into_data() {
            collector.push(data)?;
        }
    }
    Ok(collector.finish())
}

/// The bookkeeping of [`collect()`], for a hand-written future that polls the body itself
/// (the facade's collect layer does, to stay free of boxed futures).
///
/// ```
/// use xhttp_core::collect::Collector;
/// use xhttp_core::BodyLimit;
/// use http_body::SizeHint;
///
/// let mut c = Collector::new(BodyLimit(8), &SizeHint::default()).unwrap();
/// c.push(bytes::Bytes::from_static(b"abcd")).unwrap();
/// c.push(bytes::Bytes::from_static(b"efgh")).unwrap();
/// assert!(c.push(bytes::Bytes::from_static(b"!")).is_err());
/// ```
#[derive(Debug)]
pub struct Collector {
    limit: u64,
    /// What the body announced, capped by the limit: a hint for the first reservation only.
    expected: u64,
    len: u64,
    first: Option<Bytes>,
    /// From the second frame on; grown by hand so that its capacity never passes the limit
    /// (`Vec`'s own doubling could reserve twice the limit).
    rest: Option<Vec<u8>>,
}

impl Collector {
    /// The most reserved before bytes arrive, whatever the body declares: 64 KiB, a few
    /// network reads. Past it the buffer doubles with what arrives.
    pub const FIRST_RESERVATION: usize = 64 * 1024;

    /// Starts collecting a body with the given size hint; fails at once when the body's
    /// declared length is over the limit.
    pub fn new(limit: BodyLimit, hint: &http_body::SizeHint) -> Result<Collector, Error> {
        let limit = limit.0;
        if hint.lower() > limit {
            return Err(Error::body_too_large(limit));
        }
        Ok(Collector {
            limit,
            expected: hint.upper().unwrap_or(hint.lower()).min(limit),
            len: 0,
            first: None,
            rest: None,
        })
    }

    /// Adds a data frame; fails once the total passes the limit.
    pub fn push(&mut self, mut data: impl Buf) -> Result<(), Error> {
        let n = data.remaining();
        self.len = self.len.saturating_add(n as u64);
        if self.len > self.limit {
            return Err(Error::body_too_large(self.limit));
        }
        let buf = match (&self.first, &mut self.rest) {
            (None, _) => {
                self.first = Some(data.copy_to_bytes(n));
                return Ok(());
            }
            (Some(head), rest) => rest.get_or_insert_with(|| {
                // The declared length is only trusted up to one bounded reservation; what
                // really arrives (the head and this frame) is always reserved.
                let declared = usize::try_from(self.expected).unwrap_or(usize::MAX);
                let first = declared.min(Self::FIRST_RESERVATION);
                let mut buf = Vec::with_capacity(first.max(head.len() + n));
                buf.extend_from_slice(head);
                buf
            }),
        };
        let needed = buf.len() + n;
        if needed > buf.capacity() {
            // Amortised doubling, capped at the limit: `len <= limit` was checked above, so
            // `needed <= limit` and the cap never cuts below what is needed.
            let grown = needed.max(buf.capacity().saturating_mul(2));
            let capped = grown.min(usize::try_from(self.limit).unwrap_or(usize::MAX));
            buf.reserve_exact(capped.max(needed) - buf.len());
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            buf.extend_from_slice(chunk);
            let advanced = chunk.len();
            data.advance(advanced);
        }
        Ok(())
    }

    /// The collected bytes; a body of one frame comes back without a copy.
    pub fn finish(self) -> Bytes {
        match (self.first, self.rest) {
            (_, Some(buf)) => Bytes::from(buf),
            (Some(head), None) => head,
            (None, None) => Bytes::new(),
        }
    }
}

/// Layer of [`Collect`]: collects each response body into `Bytes` under a limit.
///
/// The limit is the request's [`BodyLimit`] extension, else the layer's default (16 MiB).
#[derive(Clone, Copy, Debug, Default)]
pub struct CollectLayer {
    limit: Option<BodyLimit>,
}

impl CollectLayer {
    /// A collect layer with the default limit of 16 MiB.
    pub fn new() -> Self {
        CollectLayer { limit: None }
    }

    /// A collect layer with another default limit.
    pub fn with_limit(limit: BodyLimit) -> Self {
        CollectLayer { limit: Some(limit) }
    }
}

impl<S> Layer<S> for CollectLayer {
    type Service = Collect<S>;

    fn layer(&self, inner: S) -> Collect<S> {
        Collect {
            inner,
            limit: self.limit.unwrap_or_default(),
        }
    }
}

/// Turns `Response<B>` into `Response<Bytes>`, failing with `BodyTooLarge` past the limit and
/// never buffering past it.
#[derive(Clone, Debug)]
pub struct Collect<S> {
    inner: S,
    limit: BodyLimit,
}

crate::inner_service_accessors! {
    impl<S> Collect<S> { inner: S }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Collect<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: HttpBody,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = CollectFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .copied()
            .unwrap_or(self.limit);
        CollectFuture {
            state: CollectState::Head {
                future: self.inner.call(request),
                limit,
            },
        }
    }
}

pin_project! {
    /// The response future of [`Collect`].
    pub struct CollectFuture<F, B> {
        #[pin]
        state: CollectState<F, B>,
    }
}

pin_project! {
    #[project = CollectStateProj]
    enum CollectState<F, B> {
        Head { #[pin] future: F, limit: BodyLimit },
        Body { #[pin] body: B, parts: Option<http::response::Parts>, collector: Option<Collector> },
    }
}

impl<F, B, E> Future for CollectFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: HttpBody,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Bytes>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                CollectStateProj::Head { future, limit } => {
                    let response =
                        ready!(future.poll(cx)).map_err(|e| Error::from_boxed(e.into()))?;
                    let (parts, body) = response.into_parts();
                    let collector = Collector::new(*limit, &body.size_hint())
                        .map_err(|e| e.with_status(parts.status))?;
                    state.set(CollectState::Body {
                        body,
                        parts: Some(parts),
                        collector: Some(collector),
                    });
                }
                CollectStateProj::Body {
                    mut body,
                    parts,
                    collector,
                } => {
                    while let Some(frame) = ready!(body.as_mut().poll_frame(cx)) {
                        let frame = frame.map_err(|e| body_error(e.into()))?;
                        if let (Ok(data), Some(collector)) = (frame.into_data(), collector.as_mut())
                        {
                            collector.push(data)?;
                        }
                    }
                    // Both are taken once, on the poll that completes the future.
                    let (Some(parts), Some(collector)) = (parts.take(), collector.take()) else {
                        return Poll::Ready(Err(Error::new(crate::ErrorKind::Internal)
                            .with_message("collect future polled after completion")));
                    };
                    return Poll::Ready(Ok(Response::from_parts(parts, collector.finish())));
                }
            }
        }
    }
}

/// A failure while reading the body: the head arrived, so the request reached the server.
fn body_error(err: BoxError) -> Error {
    let err = Error::from_boxed(err);
    if err.kind() == crate::ErrorKind::Transport {
        // Name the usual cause plainly instead of hyper's internal wording only.
        let hyper_error = err.source().and_then(|s| s.downcast_ref::<hyper::Error>());
        let incomplete = hyper_error.is_some_and(|e| e.is_incomplete_message())
            // A body shorter than its `Content-Length`: hyper reports an `UnexpectedEof`.
            || hyper_error
                .and_then(StdError::source)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof);
        if incomplete {
            return err.with_message("connection closed before the body was complete");
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn chunks(n: usize, size: usize) -> impl http_body::Body<Data = Bytes, Error = Error> {
        let frames = (0..n).map(move |_| Ok::<_, Error>(Frame::data(Bytes::from(vec![1u8; size]))));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn one_byte_over_the_limit_is_too_large() {
        assert_eq!(
            collect(chunks(10, 10), BodyLimit(100)).await.unwrap().len(),
            100
        );
        let err = collect(chunks(101, 1), BodyLimit(100)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyTooLarge);
        assert_eq!(err.body_limit(), Some(100));
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_fails_before_reading() {
        let body = http_body_util::Full::new(Bytes::from(vec![0u8; 11]));
        let err = collect(body, BodyLimit(10)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyTooLarge);
    }

    #[tokio::test]
    async fn a_single_frame_is_not_copied() {
        let bytes = Bytes::from(vec![9u8; 1000]);
        let ptr = bytes.as_ptr();
        let out = collect(http_body_util::Full::new(bytes), BodyLimit::DEFAULT)
            .await
            .unwrap();
        assert_eq!(out.as_ptr(), ptr);
    }

    fn capacity(collector: &Collector) -> usize {
        collector.rest.as_ref().map_or(0, Vec::capacity)
    }

    #[test]
    fn a_huge_declared_length_reserves_one_bounded_chunk() {
        // `content-length: 10^18` under an unlimited limit used to reserve 10^18 bytes on the
        // second frame: an allocation failure, which aborts the process.
        let hint = http_body::SizeHint::with_exact(1_000_000_000_000_000_000);
        let mut c = Collector::new(BodyLimit(u64::MAX), &hint).unwrap();
        c.push(Bytes::from(vec![1u8; 2048])).unwrap();
        c.push(Bytes::from(vec![2u8; 2048])).unwrap();
        assert!(
            capacity(&c) <= Collector::FIRST_RESERVATION,
            "{}",
            capacity(&c)
        );
        assert_eq!(c.finish().len(), 4096);
    }

    #[test]
    fn the_buffer_doubles_with_what_arrives_and_never_passes_the_limit() {
        let limit = 1_000_000u64;
        let hint = http_body::SizeHint::with_exact(limit);
        let mut c = Collector::new(BodyLimit(limit), &hint).unwrap();
        let mut capacities = Vec::new();
        for _ in 0..(limit / 10_000) {
            c.push(Bytes::from(vec![7u8; 10_000])).unwrap();
            if capacities.last() != Some(&capacity(&c)) {
                capacities.push(capacity(&c));
            }
        }
        assert!(capacities[0] <= Collector::FIRST_RESERVATION);
        assert_eq!(*capacities.last().unwrap(), limit as usize);
        // Doubling: a handful of reallocations for a megabyte, not one per frame.
        assert!(capacities.len() <= 6, "{capacities:?}");
        assert!(c.push(Bytes::from_static(b"!")).is_err());
    }

    #[test]
    fn a_frame_larger_than_the_first_reservation_is_reserved_whole() {
        let mut c = Collector::new(BodyLimit::DEFAULT, &http_body::SizeHint::default()).unwrap();
        c.push(Bytes::from_static(b"a")).unwrap();
        c.push(Bytes::from(vec![0u8; 200_000])).unwrap();
        assert!(capacity(&c) >= 200_001);
        assert_eq!(c.finish().len(), 200_001);
    }

    #[tokio::test]
    async fn body_errors_keep_their_kind() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err(Error::timeout(crate::TimeoutScope::Attempt)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let err = collect(body, BodyLimit::DEFAULT).await.unwrap_err();
        assert!(err.is_timeout());
    }
}
