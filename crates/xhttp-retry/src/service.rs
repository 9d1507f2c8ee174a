//! The services: [`Retry`], tower's retry loop over the inner service driven by a
//! [`RetryPolicy`]'s per-call state, and [`EnforceDeadline`], which sets the request's
//! [`Deadline`] and fails the call when it passes.
//!
//! [`RetryPolicy`]: crate::RetryPolicy

use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{BoxError, Service};
use xhttp_core::body::RequestBody;
use xhttp_core::{Deadline, Error, TimeoutScope};

use crate::future::{DeadlineFuture, IntoErrorFuture, ResponseFuture};
use crate::Attempt;

/// The service of [`RetryLayer`](crate::RetryLayer): tower's `Retry` (which polls readiness
/// before every attempt) with the per-call state of a [`RetryPolicy`](crate::RetryPolicy).
/// Its bounds are listed under [Requirements](crate#requirements).
///
/// ```
/// use tower::{service_fn, Layer};
/// use xhttp_core::Error;
/// use xhttp_retry::{Retry, RetryLayer};
///
/// let api = service_fn(|_: http::Request<()>| async { Ok::<_, Error>(http::Response::new(())) });
/// let service: Retry<_> = RetryLayer::default().layer(api);
/// let _api = service.into_inner();
/// ```
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: tower::retry::Retry<Attempt, IntoError<S>>,
}

impl<S> Retry<S> {
    pub(crate) fn new(attempt: Attempt, service: S) -> Retry<S> {
        Retry {
            inner: tower::retry::Retry::new(attempt, IntoError(service)),
        }
    }
}

// The service sits inside tower's `Retry`, inside the error adapter.
xhttp_core::inner_service_accessors! {
    impl<S> Retry<S> {
        type Inner = S;
        fn get_ref(this) { &this.inner.get_ref().0 }
        fn get_mut(this) { &mut this.inner.get_mut().0 }
        fn into_inner(this) { this.inner.into_inner().0 }
    }
}

impl<S, B, T> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>, Response = Response<T>> + Clone,
    S::Error: Into<BoxError>,
    B: RequestBody,
{
    type Response = Response<T>;
    type Error = Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture<S, B> {
        ResponseFuture::new(self.inner.call(request))
    }
}

/// The inner service with its errors made [`Error`]s, so that the policy classifies one
/// error type whatever the service below returns.
#[derive(Debug, Clone)]
pub(crate) struct IntoError<S>(S);

impl<S, R> Service<R> for IntoError<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = IntoErrorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.0
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        IntoErrorFuture::new(self.0.call(request))
    }
}

/// The service of [`DeadlineLayer`](crate::DeadlineLayer): sets the request's [`Deadline`] and
/// fails the call with `Timeout(Total)` when it passes. (Named for what it does: `Deadline`
/// is the request extension it sets.)
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer};
/// use xhttp_core::Error;
/// use xhttp_retry::{DeadlineLayer, EnforceDeadline};
///
/// let api = service_fn(|_: http::Request<()>| async { Ok::<_, Error>("done") });
/// let service: EnforceDeadline<_> = DeadlineLayer::new(Duration::from_secs(30)).layer(api);
/// let _api = service.into_inner();
/// ```
#[derive(Debug, Clone)]
pub struct EnforceDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> EnforceDeadline<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        EnforceDeadline { inner, timeout }
    }
}

xhttp_core::inner_service_accessors! {
    impl<S> EnforceDeadline<S> { inner: S }
}

/// The former name of [`EnforceDeadline`].
#[deprecated(note = "renamed `EnforceDeadline`")]
pub type DeadlineService<S> = EnforceDeadline<S>;

impl<S, B> Service<Request<B>> for EnforceDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let ours = Deadline::after(self.timeout);
        let deadline = match Deadline::of(&request) {
            Some(theirs) if theirs < ours => theirs,
            _ => ours,
        };
        request.extensions_mut().insert(deadline);
        // A gRPC server learns the call's deadline.
        xhttp_core::timeout::write_grpc_timeout(&mut request, deadline.remaining());
        DeadlineFuture::new(self.inner.call(request), deadline.0, TimeoutScope::Total)
    }
}
