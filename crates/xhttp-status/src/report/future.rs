//! The response future of [`Report`](super::Report).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tower::BoxError;
use xhttp_core::Error;

use super::layer::Call;

pin_project! {
    /// The response future of [`Report`](super::Report): the inner outcome, unchanged but for
    /// the error type, reported once when it is ready. A future dropped before then reports
    /// nothing.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        // Taken when the outcome is reported, so a future polled after completion cannot
        // report twice.
        call: Option<Call>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, call: Call) -> Self {
        ResponseFuture {
            future,
            call: Some(call),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<T>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<T>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = ready!(this.future.poll(cx)).map_err(|e| Error::from_boxed(e.into()));
        if let Some(call) = this.call.take() {
            match &outcome {
                Ok(response) => call.succeeded(response),
                Err(err) => call.failed(err),
            }
        }
        Poll::Ready(outcome)
    }
}
