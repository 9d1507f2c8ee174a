//! The service: readiness passes through; `call` notes the request for the error and lets
//! the future judge the response.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::{BoxError, Service};
use xhttp_core::Error;

use crate::future::{Check, ResponseFuture};
use crate::layer::Config;
use crate::SkipStatus;

/// The service of [`StatusLayer`](crate::StatusLayer): a failure status becomes an
/// [`Error`] of kind `Status`.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower::{service_fn, Layer};
/// use xhttp_status::{Status, StatusLayer};
///
/// let upstream = service_fn(|_request: Request<()>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(Bytes::new()))
/// });
/// let service: Status<_> = StatusLayer::new().layer(upstream);
/// let _upstream = service.into_inner();
/// ```
#[derive(Clone)]
pub struct Status<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Status<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Status { inner, config }
    }
}

xhttp_core::inner_service_accessors! {
    impl<S> Status<S> { inner: S }
}

impl<S: fmt::Debug> fmt::Debug for Status<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Status")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for Status<S>
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
        let check = match request.extensions().get::<SkipStatus>() {
            Some(SkipStatus) => None,
            // The method and URI are kept for the error; the URI is redacted only if it
            // is ever shown, so a success pays for two clones and nothing else.
            None => Some(Check {
                config: self.config.clone(),
                method: request.method().clone(),
                uri: request.uri().clone(),
            }),
        };
        ResponseFuture::new(self.inner.call(request), check)
    }
}
