//! [`Report`]: the service of [`ReportLayer`](super::ReportLayer). `call` notes what the
//! report needs; the future reports when the outcome is ready.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{BoxError, Service};
use xhttp_core::Error;

use super::future::ResponseFuture;
use super::layer::{Call, Shared};

/// The service of [`ReportLayer`](super::ReportLayer): the inner service's outcome, reported
/// once per call.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower::{service_fn, Layer};
/// use xhttp_status::{Report, ReportLayer};
///
/// let upstream = service_fn(|_request: Request<()>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(Bytes::new()))
/// });
/// let service: Report<_> = ReportLayer::new().layer(upstream);
/// let _upstream = service.into_inner();
/// ```
#[derive(Clone)]
pub struct Report<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Report<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Report { inner, shared }
    }
}

xhttp_core::inner_service_accessors! {
    impl<S> Report<S> { inner: S }
}

impl<S: fmt::Debug> fmt::Debug for Report<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, T> Service<Request<B>> for Report<S>
where
    S: Service<Request<B>, Response = Response<T>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<T>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call = Call::new(self.shared.clone(), &request);
        ResponseFuture::new(self.inner.call(request), call)
    }
}
