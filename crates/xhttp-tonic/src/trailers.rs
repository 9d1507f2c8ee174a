//! [`RefreshOnTrailersLayer`]: a streamed gRPC answer whose trailers say UNAUTHENTICATED
//! refreshes the token for the next call.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use xhttp_auth::{GenerationSlot, TokenManager};

/// `grpc-status` of UNAUTHENTICATED.
const UNAUTHENTICATED: &[u8] = b"16";

/// Watches the trailers of every gRPC answer: when a stream ends with `grpc-status: 16`
/// (UNAUTHENTICATED), the token that call was sent with is reported rejected to the token
/// manager, which marks it dead and refreshes it once for every caller, so the next call
/// goes out with a fresh token. The call itself has already streamed part of its answer and
/// cannot be replayed: its caller gets the `Unauthenticated` status tonic reads from the
/// trailers.
///
/// A rejection in the answer's headers (a Trailers-Only answer, the usual shape of a unary
/// failure) is the refresh layer's: it refreshes and replays. Put this layer between
/// `RefreshLayer` and `AuthLayer`, where it can read the generation the auth layer wrote; on
/// its own (no refresh layer above) it brings its own slot.
///
/// ```
/// use tower::ServiceBuilder;
/// use xhttp_auth::{AuthLayer, OAuth2Refresh, TokenManager};
/// use xhttp_core::Origin;
/// use xhttp_refresh::RefreshLayer;
/// use xhttp_tonic::RefreshOnTrailersLayer;
///
/// # fn build<S>(manager: TokenManager, channel: S) {
/// let origin = Origin::parse("https://grpc.example.com").unwrap();
/// let stack = ServiceBuilder::new()
///     .layer(RefreshLayer::new(manager.clone()))
///     .layer(RefreshOnTrailersLayer::new(manager.clone()))
///     .layer(AuthLayer::for_channel(manager, origin))
///     .service(channel);
/// # drop(stack);
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RefreshOnTrailersLayer {
    manager: TokenManager,
}

impl RefreshOnTrailersLayer {
    /// A layer reporting trailer rejections to `manager`.
    pub fn new(manager: TokenManager) -> Self {
        RefreshOnTrailersLayer { manager }
    }
}

impl<S> Layer<S> for RefreshOnTrailersLayer {
    type Service = RefreshOnTrailers<S>;

    fn layer(&self, inner: S) -> RefreshOnTrailers<S> {
        RefreshOnTrailers {
            inner,
            manager: self.manager.clone(),
        }
    }
}

/// The service of [`RefreshOnTrailersLayer`].
#[derive(Clone, Debug)]
pub struct RefreshOnTrailers<S> {
    inner: S,
    manager: TokenManager,
}

xhttp_core::inner_service_accessors! {
    impl<S> RefreshOnTrailers<S> { inner: S }
}

impl<S, B, ResB> Service<Request<B>> for RefreshOnTrailers<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: Body,
{
    type Response = Response<WatchTrailers<ResB>>;
    type Error = S::Error;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let slot = match request.extensions().get::<GenerationSlot>() {
            Some(slot) => slot.clone(),
            None => {
                let slot = GenerationSlot::new();
                request.extensions_mut().insert(slot.clone());
                slot
            }
        };
        future::ResponseFuture {
            inner: self.inner.call(request),
            watch: Some(Watch {
                manager: self.manager.clone(),
                slot,
            }),
        }
    }
}

/// What a watched answer reports to, and with which generation.
#[derive(Debug)]
struct Watch {
    manager: TokenManager,
    slot: GenerationSlot,
}

impl Watch {
    fn rejected(self) {
        let Some(generation) = self.slot.get() else {
            return;
        };
        tracing::debug!(
            generation,
            "UNAUTHENTICATED in a stream's trailers: the token is dead, refreshing for the next call"
        );
        self.manager.report_rejected(generation);
    }
}

/// The response future of [`RefreshOnTrailers`].
pub mod future {
    use std::future::Future;

    use super::*;

    pin_project! {
        /// The response future of [`RefreshOnTrailers`](super::RefreshOnTrailers).
        pub struct ResponseFuture<F> {
            #[pin]
            pub(super) inner: F,
            pub(super) watch: Option<Watch>,
        }
    }

    impl<F, ResB, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<Response<ResB>, E>>,
    {
        type Output = Result<Response<WatchTrailers<ResB>>, E>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            let response = ready!(this.inner.poll(cx))?;
            let watch = this.watch.take();
            Poll::Ready(Ok(response.map(|inner| WatchTrailers { inner, watch })))
        }
    }
}

pin_project! {
    /// The response body of [`RefreshOnTrailers`]: the inner body, unchanged, watched for
    /// `grpc-status: 16` in its trailers.
    pub struct WatchTrailers<B> {
        #[pin]
        inner: B,
        watch: Option<Watch>,
    }
}

impl<B: Body> Body for WatchTrailers<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            let unauthenticated = frame
                .trailers_ref()
                .and_then(|trailers| trailers.get("grpc-status"))
                .is_some_and(|code| code.as_bytes() == UNAUTHENTICATED);
            if unauthenticated {
                if let Some(watch) = this.watch.take() {
                    watch.rejected();
                }
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
