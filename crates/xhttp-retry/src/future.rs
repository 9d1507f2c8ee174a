//! The response futures of [`Retry`](crate::Retry) and
//! [`EnforceDeadline`](crate::EnforceDeadline).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use pin_project_lite::pin_project;
use tower::retry::Policy;
use tower::{BoxError, Service};
use xhttp_core::Error;

use crate::service::IntoError;
use crate::Attempt;

pin_project! {
    /// The response future of [`Retry`](crate::Retry): tower's retry loop, the attempts'
    /// errors made [`Error`]s.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
        S::Error: Into<BoxError>,
        Attempt: Policy<Request<B>, S::Response, Error>,
    {
        #[pin]
        inner: tower::retry::future::ResponseFuture<Attempt, IntoError<S>, Request<B>>,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    Attempt: Policy<Request<B>, S::Response, Error>,
{
    pub(crate) fn new(
        inner: tower::retry::future::ResponseFuture<Attempt, IntoError<S>, Request<B>>,
    ) -> Self {
        ResponseFuture { inner }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    Attempt: Policy<Request<B>, S::Response, Error>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

pin_project! {
    /// One attempt's future, its error made an [`Error`] ([`Error::from_boxed`] hands an
    /// xhttp error back as it was).
    pub(crate) struct IntoErrorFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> IntoErrorFuture<F> {
    pub(crate) fn new(inner: F) -> Self {
        IntoErrorFuture { inner }
    }
}

impl<F, T, E> Future for IntoErrorFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }
}

/// The response future of [`EnforceDeadline`](crate::EnforceDeadline): the inner future,
/// failed with `Timeout(Total)` when the deadline passes.
pub type DeadlineFuture<F> = xhttp_core::timeout::TimeoutFuture<F>;
