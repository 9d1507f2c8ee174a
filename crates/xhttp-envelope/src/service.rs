//! [`UnwrapEnvelope`]: the service of [`EnvelopeLayer`](crate::EnvelopeLayer). `call` notes
//! what the response needs (the dialect, the request's method and URI for an error); the
//! future unwraps.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::{BoxError, Service};
use xhttp_core::Error;

use crate::future::{ResponseFuture, Target};
use crate::{Envelope, SkipEnvelope};

/// The service of [`EnvelopeLayer`](crate::EnvelopeLayer): unwraps each response's envelope.
/// (Named for what it does: [`Envelope`] is the dialect it reads.)
///
/// ```
/// use bytes::Bytes;
/// use tower::{service_fn, Layer};
/// use xhttp_core::Error;
/// use xhttp_envelope::{Envelope, EnvelopeLayer, UnwrapEnvelope};
///
/// let api = service_fn(|_: http::Request<()>| async {
///     Ok::<_, Error>(http::Response::new(Bytes::new()))
/// });
/// let service: UnwrapEnvelope<_> = EnvelopeLayer::new(Envelope::vben()).layer(api);
/// let _api = service.into_inner();
/// ```
#[derive(Debug, Clone)]
pub struct UnwrapEnvelope<S> {
    inner: S,
    envelope: Arc<Envelope>,
}

impl<S> UnwrapEnvelope<S> {
    pub(crate) fn new(inner: S, envelope: Arc<Envelope>) -> Self {
        UnwrapEnvelope { inner, envelope }
    }
}

xhttp_core::inner_service_accessors! {
    impl<S> UnwrapEnvelope<S> { inner: S }
}

/// The former name of [`UnwrapEnvelope`].
#[deprecated(note = "renamed `UnwrapEnvelope`")]
pub type EnvelopeService<S> = UnwrapEnvelope<S>;

impl<S, B> Service<Request<B>> for UnwrapEnvelope<S>
where
    S: Service<Request<B>, Response = Response<Bytes>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let unwrap = request
            .extensions()
            .get::<SkipEnvelope>()
            .is_none()
            .then(|| Target {
                envelope: self.envelope.clone(),
                method: request.method().clone(),
                uri: request.uri().clone(),
            });
        ResponseFuture::new(self.inner.call(request), unwrap)
    }
}

#[cfg(test)]
mod tests {
    use tower::{service_fn, Layer, ServiceExt};

    use super::*;
    use crate::EnvelopeLayer;

    fn api() -> impl Service<Request<()>, Response = Response<Bytes>, Error = Error> + Clone {
        service_fn(|_: Request<()>| async {
            let mut response = Response::new(Bytes::from_static(br#"{"code":0,"result":7}"#));
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, Error>(response)
        })
    }

    #[tokio::test]
    async fn skip_envelope_and_its_former_name_return_the_whole_body() {
        let service = EnvelopeLayer::new(Envelope::vben()).layer(api());
        let unwrapped = service.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(unwrapped.body(), "7");
        for skipped in [
            Request::builder().extension(SkipEnvelope),
            Request::builder().extension(crate::RawResponse),
        ] {
            let response = service
                .clone()
                .oneshot(skipped.body(()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.body(), r#"{"code":0,"result":7}"#);
        }
    }

    #[test]
    #[allow(deprecated)]
    fn the_former_name_envelope_service_names_unwrap_envelope() {
        let service: crate::EnvelopeService<_> = EnvelopeLayer::new(Envelope::vben()).layer(api());
        let _: UnwrapEnvelope<_> = service;
    }
}
