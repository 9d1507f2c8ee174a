//! The response future of [`Status`](crate::Status).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Method, Response, Uri};
use pin_project_lite::pin_project;
use tower::BoxError;
use xhttp_core::Error;

use crate::layer::Config;

/// What a call keeps to judge its response.
pub(crate) struct Check {
    pub(crate) config: Arc<Config>,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
}

pin_project! {
    /// The response future of [`Status`](crate::Status): the inner future's response, or the
    /// error a failure status becomes.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        // `None` under `SkipStatus`.
        check: Option<Check>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, check: Option<Check>) -> Self {
        ResponseFuture { future, check }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Bytes>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Bytes>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx)).map_err(|e| Error::from_boxed(e.into()))?;
        match this.check.take() {
            Some(check) if !check.config.is_success(response.status()) => Poll::Ready(Err(check
                .config
                .error(&response, &check.method, &check.uri))),
            _ => Poll::Ready(Ok(response)),
        }
    }
}
