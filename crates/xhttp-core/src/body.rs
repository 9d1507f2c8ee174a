//! The request body: cheap to clone, sent in chunks, replayable by construction.
//!
//! Retry and refresh send a request again; tower's retry asks the policy to clone the request
//! for that (tower#682 is the long story of bodies that cannot be cloned). xhttp makes the
//! body itself replayable:
//!
//! - A body of known bytes ([`Body::from`] a `Bytes`, `Vec<u8>`, `String`, ...) is backed by
//!   [`Bytes`]: a clone costs a reference count and replays the same bytes from the start.
//!   It is emitted in chunks (default 64 KiB) so that upload progress and a bandwidth limit
//!   have something to count.
//! - A streaming body of unknown size ([`Body::replayable`]) is wrapped in a replay buffer with
//!   a byte cap, as linkerd2-proxy's `ReplayBody` does: what the first send reads from the
//!   stream is kept, up to the cap, for a clone to send again. Past the cap the first send goes
//!   on to the end, but the buffer is dropped and [`Body::is_replayable`] turns false, so retry
//!   and refresh return the first outcome instead of sending half a body.
//!
//! Whether a body can be sent again is decided when the replay would happen, not when the
//! request is copied before its first send (linkerd2-proxy's rule): retry and refresh take a
//! copy with [`copy_for_replay`] before the first send and ask [`can_replay`] when they are
//! about to send it. A replay refused for its body returns the first outcome marked: the
//! error answers [`Error::is_body_not_replayable`], a response carries [`NotReplayed`].
//!
//! The layers that send a request again or compare requests (retry, refresh, dedupe) take any
//! body that implements [`RequestBody`]: xhttp's [`Body`], `http_body_util`'s `Full` and
//! `Empty` (what a hyper client usually sends), plain bytes and strings. A boxed body is sent
//! once and never coalesced.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tower::BoxError;

use crate::Error;

/// How many bytes a body of known bytes emits per frame by default.
pub const DEFAULT_CHUNK_SIZE: usize = 64 * 1024;

/// How many bytes of a streaming body are kept for a replay by default (linkerd2-proxy keeps
/// 64 KiB too: enough for any API payload, small enough to hold for every request in flight).
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// An HTTP request body.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::BodyExt;
/// use xhttp_core::Body;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let body = Body::from(vec![7u8; 100_000]); // emitted as 64 KiB + 34,464 bytes
/// let again = body.clone();
/// let first = body.collect().await.unwrap().to_bytes();
/// let second = again.collect().await.unwrap().to_bytes();
/// assert_eq!(first, second);
/// # });
/// ```
pub struct Body {
    kind: Kind,
}

enum Kind {
    Full {
        bytes: Bytes,
        /// How much of `bytes` this copy has emitted.
        offset: usize,
        chunk: usize,
    },
    Replay(Replay),
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Body {
        Body::from(Bytes::new())
    }

    /// Wraps a streaming body in a replay buffer that keeps up to `cap` bytes for a resend
    /// ([`DEFAULT_REPLAY_CAP`], 64 KiB, is the usual cap).
    ///
    /// A body whose size hint already says it is larger than `cap` (its lower bound, or its
    /// exact size) is refused up front, without a typed error: the body is still sent once,
    /// it keeps nothing, and it is not replayable from the start, so retry and refresh return
    /// its first outcome marked [`NotReplayed`]. (An error here would make a large upload
    /// fail before its first send, which a retry policy has no business doing.)
    ///
    /// ```
    /// use xhttp_core::body::DEFAULT_REPLAY_CAP;
    /// use xhttp_core::Body;
    /// use http_body_util::Full;
    /// use bytes::Bytes;
    ///
    /// let body = Body::replayable(Full::new(Bytes::from_static(b"stream")), DEFAULT_REPLAY_CAP);
    /// assert!(body.is_replayable());
    ///
    /// // 128 KiB announced by its size hint: sent once, never replayed.
    /// let large = Body::replayable(Full::new(Bytes::from(vec![0u8; 128 * 1024])), DEFAULT_REPLAY_CAP);
    /// assert!(!large.is_replayable());
    /// ```
    pub fn replayable<B>(body: B, cap: usize) -> Body
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let hint = body.size_hint();
        // Over the cap by its own account: keep nothing, replay never.
        let capped = hint.lower() > cap as u64;
        let inner = body
            .map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
            .map_err(Into::into);
        let state = ReplayState {
            inner: Some(Box::pin(inner)),
            chunks: Vec::new(),
            buffered: 0,
            seen: 0,
            capped,
            trailers: None,
            failed: None,
        };
        Body {
            kind: Kind::Replay(Replay {
                shared: Arc::new(Shared {
                    state: Mutex::new(state),
                    cap,
                    hint,
                }),
                pos: 0,
                trailers_sent: false,
            }),
        }
    }

    /// Sets how many bytes a body of known bytes emits per frame (at least 1). A streaming
    /// body keeps the framing of its stream.
    pub fn with_chunk_size(mut self, size: usize) -> Body {
        if let Kind::Full { chunk, .. } = &mut self.kind {
            *chunk = size.max(1);
        }
        self
    }

    /// The whole body, when its bytes are known up front (not for a streaming body).
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Full { bytes, .. } => Some(bytes),
            Kind::Replay(_) => None,
        }
    }

    /// The body's length in bytes, when known up front.
    pub fn content_length(&self) -> Option<u64> {
        match &self.kind {
            Kind::Full { bytes, .. } => Some(bytes.len() as u64),
            Kind::Replay(replay) => replay.shared.hint.exact(),
        }
    }

    /// Whether a clone of this body can still be sent in full: always for known bytes; for a
    /// streaming body, until more than its cap has been read.
    pub fn is_replayable(&self) -> bool {
        match &self.kind {
            Kind::Full { .. } => true,
            Kind::Replay(replay) => !replay.shared.lock().capped,
        }
    }

    /// A clone that replays the body from its start, or `None` when the body cannot be
    /// replayed any more (a streaming body past its cap).
    pub fn try_clone(&self) -> Option<Body> {
        self.is_replayable().then(|| self.clone())
    }
}

impl Clone for Body {
    /// A copy that starts from the first byte. For a streaming body past its replay cap the
    /// copy fails when polled; use [`Body::try_clone`] to ask first.
    fn clone(&self) -> Body {
        let kind = match &self.kind {
            Kind::Full { bytes, chunk, .. } => Kind::Full {
                bytes: bytes.clone(),
                offset: 0,
                chunk: *chunk,
            },
            Kind::Replay(replay) => Kind::Replay(Replay {
                shared: replay.shared.clone(),
                pos: 0,
                trailers_sent: false,
            }),
        };
        Body { kind }
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    /// Never prints the bytes: a body may carry a password or a refresh token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full { bytes, .. } => f.debug_struct("Body").field("len", &bytes.len()).finish(),
            Kind::Replay(replay) => f
                .debug_struct("Body")
                .field("streaming", &true)
                .field("replay_cap", &replay.shared.cap)
                .finish(),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body {
            kind: Kind::Full {
                bytes,
                offset: 0,
                chunk: DEFAULT_CHUNK_SIZE,
            },
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Body {
        Body::from(Bytes::from(bytes))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Body {
        Body::from(Bytes::from(text))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Body {
        Body::from(Bytes::from_static(text.as_bytes()))
    }
}

impl From<&'static [u8]> for Body {
    fn from(bytes: &'static [u8]) -> Body {
        Body::from(Bytes::from_static(bytes))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match &mut self.kind {
            Kind::Full {
                bytes,
                offset,
                chunk,
            } => {
                if *offset >= bytes.len() {
                    return Poll::Ready(None);
                }
                let end = bytes.len().min(offset.saturating_add(*chunk));
                let frame = bytes.slice(*offset..end);
                *offset = end;
                Poll::Ready(Some(Ok(Frame::data(frame))))
            }
            Kind::Replay(replay) => replay.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { bytes, offset, .. } => *offset >= bytes.len(),
            Kind::Replay(replay) => replay.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { bytes, offset, .. } => {
                SizeHint::with_exact(bytes.len().saturating_sub(*offset) as u64)
            }
            Kind::Replay(replay) if replay.pos == 0 => replay.shared.hint,
            Kind::Replay(_) => SizeHint::default(),
        }
    }
}

type Stream = Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send>>;

/// One copy of a replayable streaming body; all copies share the stream and the buffer.
struct Replay {
    shared: Arc<Shared>,
    /// How many of the stream's data frames this copy has emitted.
    pos: usize,
    trailers_sent: bool,
}

struct Shared {
    state: Mutex<ReplayState>,
    cap: usize,
    hint: SizeHint,
}

struct ReplayState {
    /// The stream, until it ends or fails.
    inner: Option<Stream>,
    /// Every data frame read so far, while the total stays within the cap.
    chunks: Vec<Bytes>,
    buffered: usize,
    /// How many data frames have been read from the stream.
    seen: usize,
    /// More than `cap` bytes were read: `chunks` was dropped and no copy can start over.
    capped: bool,
    trailers: Option<HeaderMap>,
    failed: Option<Error>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ReplayState> {
        // A panic while the lock was held cannot leave the state half-written: every update
        // below is a single assignment or push. So a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Replay {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let shared = self.shared.clone();
        let mut state = shared.lock();
        if self.pos < state.seen {
            if state.capped {
                return Poll::Ready(Some(Err(Error::invalid_request(format!(
                    "a streaming body larger than its {} byte replay buffer cannot be sent again",
                    shared.cap
                ))
                .with_body_not_replayable())));
            }
            let chunk = state.chunks[self.pos].clone();
            self.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(err) = &state.failed {
            return Poll::Ready(Some(Err(err.clone())));
        }
        let Some(inner) = state.inner.as_mut() else {
            return Poll::Ready(self.take_trailers(&state));
        };
        match ready!(inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    state.seen += 1;
                    self.pos += 1;
                    if !state.capped {
                        state.buffered += data.len();
                        if state.buffered > shared.cap {
                            state.capped = true;
                            state.chunks = Vec::new();
                        } else {
                            state.chunks.push(data.clone());
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    // Trailers end the stream.
                    state.trailers = frame.into_trailers().ok();
                    state.inner = None;
                    Poll::Ready(self.take_trailers(&state))
                }
            },
            Some(Err(err)) => {
                let err = Error::from_boxed(err);
                state.failed = Some(err.clone());
                state.inner = None;
                Poll::Ready(Some(Err(err)))
            }
            None => {
                state.inner = None;
                Poll::Ready(None)
            }
        }
    }

    fn take_trailers(&mut self, state: &ReplayState) -> Option<Result<Frame<Bytes>, Error>> {
        match &state.trailers {
            Some(trailers) if !self.trailers_sent => {
                self.trailers_sent = true;
                Some(Ok(Frame::trailers(trailers.clone())))
            }
            _ => None,
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = self.shared.lock();
        state.inner.is_none()
            && state.failed.is_none()
            && self.pos >= state.seen
            && (state.trailers.is_none() || self.trailers_sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn stream_of(chunks: &[&'static [u8]]) -> impl http_body::Body<Data = Bytes, Error = Error> {
        let frames: Vec<Result<Frame<Bytes>, Error>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn bytes_of(body: Body) -> Result<Bytes, Error> {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn clones_of_known_bytes_replay_identical_bytes_in_chunks() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let body = Body::from(data.clone()).with_chunk_size(1000);
        let copy = body.clone();
        let mut frames = 0;
        let mut polled = body;
        while let Some(frame) = polled.frame().await {
            assert!(frame.unwrap().into_data().unwrap().len() <= 1000);
            frames += 1;
        }
        assert_eq!(frames, 200);
        // A clone taken from a half-sent body still starts at byte 0.
        assert_eq!(
            bytes_of(copy.clone()).await.unwrap(),
            Bytes::from(data.clone())
        );
        assert_eq!(bytes_of(copy).await.unwrap(), Bytes::from(data));
    }

    #[tokio::test]
    async fn streaming_body_within_cap_replays_identically() {
        let body = Body::replayable(stream_of(&[b"ab", b"cd", b"ef"]), 6);
        let copy = body.try_clone().unwrap();
        assert_eq!(bytes_of(body).await.unwrap(), "abcdef");
        assert!(copy.is_replayable());
        assert_eq!(bytes_of(copy).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn replay_past_cap_is_refused_while_the_first_send_completes() {
        let body = Body::replayable(stream_of(&[b"abc", b"def", b"ghi"]), 4);
        let copy = body.clone();
        // The first send goes to the end although it passes the cap.
        assert_eq!(bytes_of(body).await.unwrap(), "abcdefghi");
        assert!(!copy.is_replayable());
        assert!(copy.try_clone().is_none());
        let err = bytes_of(copy).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidRequest);
        assert!(err.to_string().contains("4 byte replay buffer"), "{err}");
    }

    #[tokio::test]
    async fn a_copy_can_follow_the_first_send_concurrently() {
        let mut first = Body::replayable(stream_of(&[b"a", b"b", b"c"]), 64);
        let second = first.clone();
        let head = first.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(head, "a");
        // The copy replays "a" from the buffer, then reads on from the shared stream.
        assert_eq!(bytes_of(second).await.unwrap(), "abc");
        // The first copy then sees the rest from the buffer.
        assert_eq!(bytes_of(first).await.unwrap(), "bc");
    }

    #[tokio::test]
    async fn stream_errors_reach_every_copy() {
        let frames: Vec<Result<Frame<Bytes>, Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Err(Error::decode("broken stream")),
        ];
        let body = Body::replayable(StreamBody::new(futures_util::stream::iter(frames)), 64);
        let copy = body.clone();
        assert_eq!(
            bytes_of(body).await.unwrap_err().kind(),
            crate::ErrorKind::Decode
        );
        assert_eq!(
            bytes_of(copy).await.unwrap_err().kind(),
            crate::ErrorKind::Decode
        );
    }

    #[test]
    fn debug_never_prints_bytes() {
        let body = Body::from("password=hunter2");
        assert_eq!(format!("{body:?}"), "Body { len: 16 }");
    }

    #[test]
    fn full_bodies_are_copied_and_keyed_by_their_bytes() {
        let full = http_body_util::Full::new(Bytes::from_static(b"q=1"));
        assert_eq!(full.body_key(), BodyKey::Bytes(Bytes::from_static(b"q=1")));
        // Keying reads a clone: the body still sends its bytes.
        assert_eq!(full.body_key(), full.try_clone_body().unwrap().body_key());
        // Data other than `Bytes` is copied into the key.
        let slice = http_body_util::Full::new(&b"q=1"[..]);
        assert_eq!(slice.body_key(), full.body_key());
        let none = http_body_util::Full::new(Bytes::new());
        assert_eq!(none.body_key(), BodyKey::Empty);
        assert_eq!(
            http_body_util::Empty::<Bytes>::new().body_key(),
            BodyKey::Empty
        );
    }

    #[tokio::test]
    async fn a_copy_of_a_full_body_sends_the_same_bytes() {
        let full = http_body_util::Full::new(Bytes::from_static(b"{\"name\":\"pen\"}"));
        let copy = full.copy_for_replay().unwrap();
        assert!(copy.can_replay());
        let first = full.collect().await.unwrap().to_bytes();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), first);
    }

    #[test]
    fn box_bodies_are_never_copied_nor_keyed() {
        let full = http_body_util::Full::new(Bytes::from_static(b"x"));
        let boxed = full.clone().map_err(|never| match never {}).boxed();
        assert!(boxed.try_clone_body().is_none());
        assert_eq!(boxed.body_key(), BodyKey::Unknown);
        let unsync: http_body_util::combinators::UnsyncBoxBody<Bytes, Error> =
            full.map_err(|never| match never {}).boxed_unsync();
        assert!(unsync.copy_for_replay().is_none());
        assert_eq!(unsync.body_key(), BodyKey::Unknown);
    }

    #[test]
    fn byte_bodies_key_as_their_bytes_and_no_bytes_as_empty() {
        let expected = BodyKey::Bytes(Bytes::from_static(b"abc"));
        assert_eq!(Bytes::from_static(b"abc").body_key(), expected);
        assert_eq!(String::from("abc").body_key(), expected);
        assert_eq!(b"abc".to_vec().body_key(), expected);
        assert_eq!("abc".body_key(), expected);
        assert_eq!((b"abc" as &'static [u8]).body_key(), expected);
        assert_eq!(Body::from("abc").body_key(), expected);
        for empty in [
            String::new().body_key(),
            Bytes::new().body_key(),
            ().body_key(),
            Body::empty().body_key(),
        ] {
            assert_eq!(empty, BodyKey::Empty);
        }
        let stream = Body::replayable(http_body_util::Full::new(Bytes::from_static(b"x")), 10);
        assert_eq!(stream.body_key(), BodyKey::Unknown);
    }

    #[test]
    fn body_is_send_sync_unpin() {
        fn assert_traits<T: Send + Sync + Unpin + 'static>() {}
        assert_traits::<Body>();
    }
}

/// The request body as the dedupe key sees it ([`RequestBody::body_key`]).
///
/// Its `Debug` prints the length of the bytes, never the bytes: a body may carry a password or
/// a refresh token.
///
/// ```
/// use bytes::Bytes;
/// use xhttp_core::body::BodyKey;
///
/// assert_eq!(BodyKey::from(Bytes::new()), BodyKey::Empty);
/// assert_eq!(format!("{:?}", BodyKey::from(Bytes::from("pin=1234"))), "Bytes { len: 8 }");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyKey {
    /// No body, or an empty one.
    Empty,
    /// All the body's bytes, known up front (dedupe keys them only under its body cap).
    Bytes(Bytes),
    /// A streaming or boxed body: such a request is never deduplicated.
    Unknown,
}

impl From<Bytes> for BodyKey {
    /// The key of a body of known bytes: `Empty` when there are none.
    fn from(bytes: Bytes) -> BodyKey {
        if bytes.is_empty() {
            BodyKey::Empty
        } else {
            BodyKey::Bytes(bytes)
        }
    }
}

impl fmt::Debug for BodyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyKey::Empty => f.write_str("Empty"),
            BodyKey::Bytes(bytes) => f.debug_struct("Bytes").field("len", &bytes.len()).finish(),
            BodyKey::Unknown => f.write_str("Unknown"),
        }
    }
}

/// A request body the xhttp layers can work with: retry and refresh copy it to send the
/// request again, dedupe reads its bytes to tell identical requests apart.
///
/// A layer that needs neither accepts any body. Retry and refresh copy the request before
/// the first send ([`copy_for_replay`](Self::copy_for_replay)) and ask, right before the
/// replay, whether the copy can still be sent in full ([`can_replay`](Self::can_replay));
/// dedupe keys a request on [`body_key`](Self::body_key) without consuming the body.
///
/// | body | copy for a replay | dedupe key |
/// |---|---|---|
/// | [`Body`] of known bytes | a clone from the first byte | its bytes |
/// | [`Body::replayable`] stream | a copy; sent only while within its replay cap | `Unknown` |
/// | `http_body_util::Full<D>` (the usual hyper client body) | a clone | its bytes |
/// | `http_body_util::Empty<D>`, `()` | a new empty body | `Empty` |
/// | `Bytes`, `String`, `Vec<u8>`, `&'static str`, `&'static [u8]` | a clone | their bytes |
/// | `BoxBody`, `UnsyncBoxBody` (tonic, proxies) | none: never replayed | `Unknown`: never coalesced |
///
/// A key of no bytes is `Empty`. A request whose body cannot be copied is sent once: retry
/// returns its first outcome, refresh still refreshes (so the next call succeeds) and returns
/// the first outcome, marked [`NotReplayed`].
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use xhttp_core::body::{BodyKey, RequestBody};
///
/// let body = Full::new(Bytes::from_static(br#"{"q":"pen"}"#));
/// assert!(body.try_clone_body().is_some());
/// assert_eq!(body.body_key(), BodyKey::Bytes(Bytes::from_static(br#"{"q":"pen"}"#)));
///
/// // A boxed body can be neither copied nor keyed.
/// let boxed = body.map_err(|never| match never {}).boxed();
/// assert!(boxed.try_clone_body().is_none());
/// assert_eq!(boxed.body_key(), BodyKey::Unknown);
/// ```
///
/// A body type of your own takes two methods:
///
/// ```
/// use bytes::Bytes;
/// use xhttp_core::body::{BodyKey, RequestBody};
///
/// #[derive(Clone)]
/// struct Json(Bytes);
///
/// impl RequestBody for Json {
///     fn try_clone_body(&self) -> Option<Self> {
///         Some(self.clone())
///     }
///
///     fn body_key(&self) -> BodyKey {
///         BodyKey::from(self.0.clone())
///     }
/// }
///
/// assert_eq!(Json(Bytes::new()).body_key(), BodyKey::Empty);
/// ```
pub trait RequestBody: Sized {
    /// A copy that sends the same bytes from the start, or `None` when that is impossible.
    fn try_clone_body(&self) -> Option<Self>;

    /// A copy taken before the first send, for a replay that may or may not happen; whether
    /// it can be sent is asked later, with [`can_replay`](Self::can_replay). The default is
    /// [`try_clone_body`](Self::try_clone_body); xhttp's streaming [`Body`] always hands out
    /// a copy, because whether it outgrows its cap is known only once it has been sent.
    fn copy_for_replay(&self) -> Option<Self> {
        self.try_clone_body()
    }

    /// Whether this copy can be sent in full now, asked right before a replay (default
    /// `true`: a body that could be copied sends all its bytes). A streaming [`Body`] answers
    /// `false` once a send read past its replay cap.
    fn can_replay(&self) -> bool {
        true
    }

    /// The body for the dedupe key, read without consuming it: its bytes when they are known
    /// up front, [`BodyKey::Unknown`] when they are not (then the request is never
    /// deduplicated).
    fn body_key(&self) -> BodyKey;
}

impl RequestBody for Body {
    fn try_clone_body(&self) -> Option<Self> {
        self.try_clone()
    }

    fn copy_for_replay(&self) -> Option<Self> {
        Some(self.clone())
    }

    fn can_replay(&self) -> bool {
        self.is_replayable()
    }

    fn body_key(&self) -> BodyKey {
        match self.as_bytes() {
            Some(bytes) => BodyKey::from(bytes.clone()),
            None => BodyKey::Unknown,
        }
    }
}

impl<D: Buf + Clone> RequestBody for http_body_util::Full<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }

    fn body_key(&self) -> BodyKey {
        // `Full` keeps its one chunk until it is polled; a clone hands it over. For `Bytes`
        // data the copy below is a reference count.
        match self.clone().into_inner() {
            Some(mut data) => BodyKey::from(data.copy_to_bytes(data.remaining())),
            None => BodyKey::Empty,
        }
    }
}

impl<D: Buf> RequestBody for http_body_util::Empty<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }

    fn body_key(&self) -> BodyKey {
        BodyKey::Empty
    }
}

impl<D, E> RequestBody for http_body_util::combinators::BoxBody<D, E> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }

    fn body_key(&self) -> BodyKey {
        BodyKey::Unknown
    }
}

impl<D, E> RequestBody for http_body_util::combinators::UnsyncBoxBody<D, E> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }

    fn body_key(&self) -> BodyKey {
        BodyKey::Unknown
    }
}

impl RequestBody for () {
    fn try_clone_body(&self) -> Option<Self> {
        Some(())
    }

    fn body_key(&self) -> BodyKey {
        BodyKey::Empty
    }
}

/// Bodies that are their own bytes: a clone replays them, and `$bytes` (with the body bound
/// to `$body`) is their key.
macro_rules! byte_bodies {
    ($($ty:ty => |$body:ident| $bytes:expr;)*) => {$(
        impl RequestBody for $ty {
            fn try_clone_body(&self) -> Option<Self> {
                Some(self.clone())
            }

            fn body_key(&self) -> BodyKey {
                let $body = self;
                BodyKey::from($bytes)
            }
        }
    )*};
}

byte_bodies! {
    Bytes => |body| body.clone();
    String => |body| Bytes::copy_from_slice(body.as_bytes());
    Vec<u8> => |body| Bytes::copy_from_slice(body);
    &'static str => |body| Bytes::from_static(body.as_bytes());
    &'static [u8] => |body| Bytes::from_static(body);
}

/// Clones a request for a replay: method, URI, version, headers, extensions and the body,
/// when the body can be replayed.
///
/// ```
/// let request = http::Request::post("https://api.example.com/items")
///     .header("content-type", "application/json")
///     .body(xhttp_core::Body::from(r#"{"name":"pen"}"#))
///     .unwrap();
/// let copy = xhttp_core::body::try_clone_request(&request).unwrap();
/// assert_eq!(copy.uri(), request.uri());
/// assert_eq!(copy.headers(), request.headers());
/// ```
pub fn try_clone_request<B: RequestBody>(request: &http::Request<B>) -> Option<http::Request<B>> {
    let body = request.body().try_clone_body()?;
    let mut copy = http::Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

/// Copies a request before its first send, for a replay that retry or refresh may make: method,
/// URI, version, headers, extensions and a copy of the body ([`RequestBody::copy_for_replay`];
/// `None` when the body cannot be copied at all). Unlike [`try_clone_request`], it does not
/// decide whether the copy can be sent: ask [`can_replay`] right before sending it.
///
/// ```
/// use bytes::Bytes;
/// use http_body::Frame;
/// use http_body_util::{BodyExt, StreamBody};
/// use xhttp_core::body::{can_replay, copy_for_replay};
/// use xhttp_core::Body;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // A stream of unknown size: nothing says up front that it is over the cap.
/// let frames = ["01234", "56789"].map(|c| Ok::<_, xhttp_core::Error>(Frame::data(Bytes::from(c))));
/// let stream = Body::replayable(StreamBody::new(futures_util::stream::iter(frames)), 4);
/// let request = http::Request::put("https://api.example.com/blob").body(stream).unwrap();
/// let copy = copy_for_replay(&request).unwrap();
/// assert!(can_replay(&copy)); // nothing sent yet
/// request.into_body().collect().await.unwrap(); // the first send reads 10 bytes, over the cap
/// assert!(!can_replay(&copy)); // decided now, when the replay would happen
/// # });
/// ```
pub fn copy_for_replay<B: RequestBody>(request: &http::Request<B>) -> Option<http::Request<B>> {
    let body = request.body().copy_for_replay()?;
    let mut copy = http::Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

/// Whether a copy from [`copy_for_replay`] can be sent in full now
/// ([`RequestBody::can_replay`]).
///
/// ```
/// let request = http::Request::new(xhttp_core::Body::from("known bytes"));
/// assert!(xhttp_core::body::can_replay(&request));
/// ```
pub fn can_replay<B: RequestBody>(request: &http::Request<B>) -> bool {
    request.body().can_replay()
}

/// Response extension: the request was not sent again because its body could not be replayed
/// (a streaming body past its replay cap, a body that cannot be copied), so this is the first
/// outcome, returned as it was. Errors say the same with [`Error::is_body_not_replayable`].
///
/// ```
/// use xhttp_core::body::{mark_not_replayed, NotReplayed};
///
/// let mut outcome: Result<http::Response<()>, xhttp_core::Error> = Ok(http::Response::new(()));
/// mark_not_replayed(&mut outcome);
/// assert!(outcome.unwrap().extensions().get::<NotReplayed>().is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotReplayed;

/// Marks a first outcome returned because its request's body could not be replayed: a
/// response gets [`NotReplayed`], an error [`Error::with_body_not_replayable`].
///
/// ```
/// use xhttp_core::{body::mark_not_replayed, Error};
///
/// let mut outcome: Result<http::Response<()>, Error> =
///     Err(Error::from_status(http::StatusCode::SERVICE_UNAVAILABLE));
/// mark_not_replayed(&mut outcome);
/// assert!(outcome.unwrap_err().is_body_not_replayable());
/// ```
pub fn mark_not_replayed<T>(outcome: &mut Result<http::Response<T>, Error>) {
    match outcome {
        Ok(response) => {
            response.extensions_mut().insert(NotReplayed);
        }
        Err(err) => *err = err.clone().with_body_not_replayable(),
    }
}
