//! [`Refresh`]: the service of [`RefreshLayer`](crate::RefreshLayer). Each call takes a copy
//! of its request (when its body can be copied) and a slot for the generation the auth layer
//! below records; the future decides after the first outcome.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{BoxError, Service};
use xhttp_auth::GenerationSlot;
use xhttp_core::body::{copy_for_replay, RequestBody};
use xhttp_core::Error;

use crate::future::ResponseFuture;
use crate::layer::Config;
use crate::replay::{Replay, Resend};
use crate::SkipRefresh;

/// The service of [`RefreshLayer`](crate::RefreshLayer); its bounds are listed under
/// [Requirements](crate#requirements).
#[derive(Clone)]
pub struct Refresh<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Refresh<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Refresh { inner, config }
    }
}

xhttp_core::inner_service_accessors! {
    impl<S> Refresh<S> { inner: S }
}

impl<S: fmt::Debug> fmt::Debug for Refresh<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresh")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Refresh<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqBody: RequestBody + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if request.extensions().get::<SkipRefresh>().is_some() {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        // Cloned before the slot goes in: a request with no extensions of its own clones
        // without allocating a map; the replay gets a slot of its own anyway.
        // Whether the copy can be sent is decided when the replay would happen. The ready
        // service sends the first trip; the replay, if any, goes through a clone made ready
        // then (a clone per call, as tower's `Retry` does, so the service need not be `Sync`).
        let resend = copy_for_replay(&request).map(|request| {
            Box::new(Resend {
                service: self.inner.clone(),
                request,
            })
        });
        let slot = GenerationSlot::new();
        request.extensions_mut().insert(slot.clone());
        let future = self.inner.call(request);
        ResponseFuture::first(
            future,
            Replay {
                resend,
                slot,
                config: self.config.clone(),
            },
        )
    }
}
