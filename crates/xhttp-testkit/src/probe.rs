//! [`TokenProbe`]: the client-side witness of the dead-token rule.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::auth::bearer_token;

/// A tower layer for the transport end of a client stack that counts the requests sent
/// with a bearer token the client had already seen rejected.
///
/// The server alone cannot tell a defect from a race: a request already on the wire when the
/// first 401 for its token went out arrives after the rejection through no fault of the
/// client ([`Counters::rejected_token_arrivals`](crate::Counters::rejected_token_arrivals)
/// counts both). The probe sits where the client hands each trip to the wire, after its
/// token was written. It records a token as rejected when a 401 answer bearing it has been
/// read to its end (the moment the layers above can see it), and counts every later trip
/// that still carries that token: [`dead_token_requests`](Self::dead_token_requests).
///
/// On a current-thread runtime the count is exact: the layers above learn of the 401 in the
/// same poll in which the probe records it, so no other call runs in between. On a
/// multi-thread runtime a call on another thread may slip into that instant; the probe then
/// counts it.
///
/// Tokens are kept as hashes, never as text.
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use xhttp_testkit::TokenProbe;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let probe = TokenProbe::new();
/// let service = probe.layer(service_fn(|_request: http::Request<()>| async {
///     let response = http::Response::builder().status(401).body(String::new()).unwrap();
///     Ok::<_, std::convert::Infallible>(response)
/// }));
/// let request = || {
///     http::Request::get("http://127.0.0.1/api/me")
///         .header("authorization", "Bearer tok-1")
///         .body(())
///         .unwrap()
/// };
/// let response = service.clone().oneshot(request()).await.unwrap();
/// drop(response); // the body is done: the rejection is seen
/// service.oneshot(request()).await.unwrap();
/// assert_eq!(probe.rejections_seen(), 2);
/// assert_eq!(probe.dead_token_requests(), 1);
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct TokenProbe {
    shared: Arc<ProbeState>,
}

#[derive(Debug, Default)]
struct ProbeState {
    rejected: Mutex<HashSet<u64>>,
    requests: AtomicU64,
    dead: AtomicU64,
    rejections: AtomicU64,
}

impl ProbeState {
    fn rejected(&self) -> MutexGuard<'_, HashSet<u64>> {
        // A set of hashes is consistent after every insert, so a poisoned lock still holds
        // usable data.
        self.rejected
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl TokenProbe {
    /// A probe that has seen nothing.
    pub fn new() -> TokenProbe {
        TokenProbe::default()
    }

    /// Trips the probe has seen (every attempt, replays included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// 401 answers the probe has seen for a request with a bearer token.
    pub fn rejections_seen(&self) -> u64 {
        self.shared.rejections.load(Ordering::SeqCst)
    }

    /// Trips sent with a bearer token after a 401 for that token had come back through the
    /// probe: the requests a client that keeps the dead-token rule never sends.
    pub fn dead_token_requests(&self) -> u64 {
        self.shared.dead.load(Ordering::SeqCst)
    }

    fn note_sent(&self, token: Option<u64>) {
        self.shared.requests.fetch_add(1, Ordering::SeqCst);
        if token.is_some_and(|t| self.shared.rejected().contains(&t)) {
            self.shared.dead.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn note_rejected(&self, token: u64) {
        self.shared.rejections.fetch_add(1, Ordering::SeqCst);
        self.shared.rejected().insert(token);
    }
}

fn token_hash(token: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

impl<S> Layer<S> for TokenProbe {
    type Service = Probed<S>;

    fn layer(&self, inner: S) -> Probed<S> {
        Probed {
            inner,
            probe: self.clone(),
        }
    }
}

/// The service of [`TokenProbe`].
#[derive(Clone, Debug)]
pub struct Probed<S> {
    inner: S,
    probe: TokenProbe,
}

impl<S, B, ResB> Service<Request<B>> for Probed<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: Body,
{
    type Response = Response<ProbedBody<ResB>>;
    type Error = S::Error;
    type Future = ProbedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let token = bearer_token(request.headers()).map(token_hash);
        self.probe.note_sent(token);
        ProbedFuture {
            inner: self.inner.call(request),
            watch: token.map(|token| (self.probe.clone(), token)),
        }
    }
}

pin_project! {
    /// The response future of [`Probed`].
    pub struct ProbedFuture<F> {
        #[pin]
        inner: F,
        watch: Option<(TokenProbe, u64)>,
    }
}

impl<F, ResB, E> Future for ProbedFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ProbedBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let watch = this
            .watch
            .take()
            .filter(|_| response.status() == StatusCode::UNAUTHORIZED);
        Poll::Ready(Ok(response.map(|inner| ProbedBody {
            inner,
            on_end: watch.map(|(probe, token)| OnEnd { probe, token }),
        })))
    }
}

/// Records the rejection once, when the 401's body ends or is dropped.
#[derive(Debug)]
struct OnEnd {
    probe: TokenProbe,
    token: u64,
}

impl OnEnd {
    fn fire(self) {
        self.probe.note_rejected(self.token);
    }
}

pin_project! {
    /// The response body of [`Probed`]: the inner body, unchanged.
    pub struct ProbedBody<B> {
        #[pin]
        inner: B,
        on_end: Option<OnEnd>,
    }

    impl<B> PinnedDrop for ProbedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(on_end) = this.project().on_end.take() {
                on_end.fire();
            }
        }
    }
}

impl<B: Body> Body for ProbedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            if let Some(on_end) = this.on_end.take() {
                on_end.fire();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    fn with_token(token: &str) -> Request<()> {
        Request::get("http://127.0.0.1/")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_rejection_counts_only_once_its_body_is_read() {
        let probe = TokenProbe::new();
        let service = probe.layer(service_fn(|request: Request<()>| async move {
            let status = if bearer_token(request.headers()) == Some("old") {
                401
            } else {
                200
            };
            let response = Response::builder()
                .status(status)
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
                .unwrap_or_default();
            Ok::<_, Infallible>(response)
        }));
        let Ok(rejected) = service.clone().oneshot(with_token("old")).await;
        // Sent while the 401's body is unread: the client cannot know yet.
        let Ok(racing) = service.clone().oneshot(with_token("old")).await;
        assert_eq!(probe.dead_token_requests(), 0);
        assert_eq!(probe.rejections_seen(), 0);
        let mut body = rejected.into_body();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            assert!(frame.is_ok());
        }
        assert_eq!(probe.rejections_seen(), 1);
        let _ = service.clone().oneshot(with_token("old")).await;
        let _ = service.clone().oneshot(with_token("new")).await;
        assert_eq!(probe.dead_token_requests(), 1);
        assert_eq!(probe.requests(), 4);
        // A 401 dropped unread counts as seen when it is dropped.
        assert_eq!(probe.rejections_seen(), 2);
        drop(racing);
        assert_eq!(probe.rejections_seen(), 3);
    }
}
