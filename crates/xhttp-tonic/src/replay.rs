//! [`ReplayableLayer`] and [`IntoTonicBodyLayer`]: a tonic call's body made replayable above
//! the xhttp layers, and handed back to the channel as tonic's body below them.

use std::task::{Context, Poll};

use http::Request;
use tower::{BoxError, Layer, Service};
use xhttp_core::body::DEFAULT_REPLAY_CAP;
use xhttp_core::Body;

/// Turns every request body (tonic's `tonic::body::Body` included) into an xhttp [`Body`]
/// that can be sent again up to `cap` bytes, so that the refresh layer can replay a call
/// after a rejection and the retry layer can resend it. A body larger than its cap is sent
/// once and never replayed (the first outcome is returned, marked). Put it above the xhttp
/// layers, and [`IntoTonicBodyLayer`] below them, over the channel.
///
/// ```
/// use tower::ServiceBuilder;
/// use xhttp_auth::{AuthLayer, TokenManager};
/// use xhttp_core::Origin;
/// use xhttp_refresh::RefreshLayer;
/// use xhttp_tonic::{IntoTonicBodyLayer, ReplayableLayer};
///
/// # fn build<S>(manager: TokenManager, channel: S) {
/// let origin = Origin::parse("https://grpc.example.com").unwrap();
/// let stack = ServiceBuilder::new()
///     .layer(ReplayableLayer::new())
///     .layer(RefreshLayer::new(manager.clone()))
///     .layer(AuthLayer::for_channel(manager, origin))
///     .layer(IntoTonicBodyLayer)
///     .service(channel);
/// # drop(stack);
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct ReplayableLayer {
    cap: usize,
}

impl ReplayableLayer {
    /// Bodies replayable up to the library's default cap
    /// ([`DEFAULT_REPLAY_CAP`](xhttp_core::body::DEFAULT_REPLAY_CAP), 64 KiB).
    pub fn new() -> Self {
        ReplayableLayer {
            cap: DEFAULT_REPLAY_CAP,
        }
    }

    /// Bodies replayable up to `cap` bytes.
    pub fn with_cap(cap: usize) -> Self {
        ReplayableLayer { cap }
    }
}

impl Default for ReplayableLayer {
    fn default() -> Self {
        ReplayableLayer::new()
    }
}

impl<S> Layer<S> for ReplayableLayer {
    type Service = Replayable<S>;

    fn layer(&self, inner: S) -> Replayable<S> {
        Replayable {
            inner,
            cap: self.cap,
        }
    }
}

/// The service of [`ReplayableLayer`].
#[derive(Clone, Debug)]
pub struct Replayable<S> {
    inner: S,
    cap: usize,
}

xhttp_core::inner_service_accessors! {
    impl<S> Replayable<S> { inner: S }
}

impl<S, B> Service<Request<B>> for Replayable<S>
where
    S: Service<Request<Body>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        let cap = self.cap;
        self.inner
            .call(request.map(|body| Body::replayable(body, cap)))
    }
}

/// Hands an xhttp [`Body`] to a tonic `Channel` as `tonic::body::Body`, at the bottom of a
/// stack whose top is [`ReplayableLayer`].
#[derive(Clone, Copy, Debug, Default)]
#[must_use]
pub struct IntoTonicBodyLayer;

impl<S> Layer<S> for IntoTonicBodyLayer {
    type Service = IntoTonicBody<S>;

    fn layer(&self, inner: S) -> IntoTonicBody<S> {
        IntoTonicBody { inner }
    }
}

/// The service of [`IntoTonicBodyLayer`].
#[derive(Clone, Debug)]
pub struct IntoTonicBody<S> {
    inner: S,
}

xhttp_core::inner_service_accessors! {
    impl<S> IntoTonicBody<S> { inner: S }
}

impl<S> Service<Request<Body>> for IntoTonicBody<S>
where
    S: Service<Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> S::Future {
        self.inner.call(request.map(tonic::body::Body::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn a_body_within_its_cap_can_be_sent_again_and_a_larger_one_cannot() {
        let seen = service_fn(|request: Request<Body>| async move {
            Ok::<_, std::convert::Infallible>(request.body().is_replayable())
        });
        let service = ReplayableLayer::with_cap(8).layer(seen);
        let small = Request::new(Full::new(Bytes::from_static(b"1234")));
        assert_eq!(service.clone().oneshot(small).await.ok(), Some(true));
        let large = Request::new(Full::new(Bytes::from_static(b"123456789")));
        assert_eq!(service.oneshot(large).await.ok(), Some(false));
    }
}
