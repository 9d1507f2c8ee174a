//! Collecting a response body into [`Bytes`] under a limit.
//!
//! Every layer above the transport sees `Response<Bytes>`: retry covers the body download,
//! dedupe shares one buffer by reference count, the envelope slices without copying. The price
//! is that a body is held in memory, so it is collected under a limit (default 16 MiB, per
//! request [`BodyLimit`]). A `Content-Length` above the limit fails before a byte is read; a
//! body without one fails as soon as the bytes read pass the limit, so memory never grows past
//! the limit plus one frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use tower::BoxError;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    let limit = limit.0;
    let hint = body.size_hint();
    if hint.lower() > limit {
        return Err(Error::body_too_large(limit));
    }
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::from_boxed(e.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers carry nothing the stack reads
        };
        let n = data.remaining();
        len = len.saturating_add(n as u64);
        if len > limit {
            return Err(Error::body_too_large(limit));
        }
        match (&mut first, &mut rest) {
            (None, _) => first = Some(data.copy_to_bytes(n)),
            (Some(head), None) => {
                // A second frame: start one buffer, sized by the hint but never past the limit.
                let expected = hint.upper().unwrap_or(hint.lower()).min(limit);
                let capacity = (expected as usize).max(head.len() + n);
                let mut buf = BytesMut::with_capacity(capacity);
                buf.put_slice(head);
                buf.put(data);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.put(data),
        }
    }
    Ok(match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    })
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
        assert_eq!(collect(chunks(10, 10), BodyLimit(100)).await.unwrap().len(), 100);
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
