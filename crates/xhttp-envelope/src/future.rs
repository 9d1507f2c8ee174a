//! The response future of [`UnwrapEnvelope`](crate::UnwrapEnvelope).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Method, Response, Uri};
use pin_project_lite::pin_project;
use tower::BoxError;
use xhttp_core::Error;

use crate::{unwrap, Envelope};

/// What a call needs to unwrap its response and to name itself in an error.
pub(crate) struct Target {
    pub(crate) envelope: Arc<Envelope>,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
}

pin_project! {
    /// The response future of [`UnwrapEnvelope`](crate::UnwrapEnvelope): the inner future's
    /// response, unwrapped (unless the request carried [`SkipEnvelope`](crate::SkipEnvelope)).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        unwrap: Option<Target>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, unwrap: Option<Target>) -> Self {
        ResponseFuture { inner, unwrap }
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
        let response = ready!(this.inner.poll(cx)).map_err(|e| Error::from_boxed(e.into()))?;
        Poll::Ready(match this.unwrap.take() {
            Some(target) => unwrap(response, &target.envelope)
                .map_err(|err| err.with_method_uri(&target.method, &target.uri)),
            None => Ok(response),
        })
    }
}
