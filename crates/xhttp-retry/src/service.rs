//! [`Retry`]: tower's retry loop over the inner service, driven by a [`RetryPolicy`]'s
//! per-call state.
//!
//! [`RetryPolicy`]: crate::RetryPolicy

use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{BoxError, Service};
use xhttp_core::body::RequestBody;
use xhttp_core::Error;

use crate::future::{IntoErrorFuture, ResponseFuture};
use crate::Attempt;

/// The service of [`RetryLayer`](crate::RetryLayer): tower's `Retry` (which polls readiness
/// before every attempt) with the per-call state of a [`RetryPolicy`](crate::RetryPolicy).
/// Its bounds are listed under [Requirements](crate#requirements).
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

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner.get_ref().0
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner.get_mut().0
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner().0
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
