//! [`Dedupe`]: the service of [`DedupeLayer`](crate::DedupeLayer). `call` decides the
//! request's policy and key, then hands it to the map of trips.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use tower::{BoxError, Service};
use xhttp_core::body::RequestBody;
use xhttp_core::{Error, ErrorKind};

use crate::future::ResponseFuture;
use crate::key::{Key, NoKey};
use crate::trips::{direct, Shared};
use crate::{CancelScope, DedupeOverride, DedupePolicy};

/// The service of [`DedupeLayer`](crate::DedupeLayer); its bounds are listed under
/// [Requirements](crate#requirements).
///
/// ```
/// use bytes::Bytes;
/// use tower::{service_fn, Layer};
/// use xhttp_core::Error;
/// use xhttp_dedupe::{Dedupe, DedupeLayer};
///
/// let api = service_fn(|_: http::Request<()>| async {
///     Ok::<_, Error>(http::Response::new(Bytes::new()))
/// });
/// let service: Dedupe<_> = DedupeLayer::new().layer(api);
/// let _api = service.into_inner();
/// ```
pub struct Dedupe<S, T = Bytes> {
    inner: S,
    shared: Arc<Shared<T>>,
}

impl<S: Clone, T> Clone for Dedupe<S, T> {
    fn clone(&self) -> Self {
        Dedupe {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for Dedupe<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedupe")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, T> Dedupe<S, T> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<T>>) -> Self {
        Dedupe { inner, shared }
    }
}

xhttp_core::inner_service_accessors! {
    impl<S, T> Dedupe<S, T> { inner: S }
}

impl<S, B, T> Service<Request<B>> for Dedupe<S, T>
where
    S: Service<Request<B>, Response = Response<T>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: RequestBody + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    type Response = Response<T>;
    type Error = Error;
    type Future = ResponseFuture<T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let scope = request.extensions().get::<CancelScope>().cloned();
        let policy = match request.extensions().get::<DedupeOverride>() {
            Some(DedupeOverride(policy)) => *policy,
            None if matches!(*request.method(), Method::GET | Method::HEAD) => self.shared.get_head,
            None => self.shared.other,
        };
        let key = match policy {
            DedupePolicy::Off => None,
            _ => match Key::of(
                &request,
                &self.shared.rules,
                self.shared.identity.as_deref(),
                &self.shared.random,
                policy == DedupePolicy::Coalesce,
            ) {
                Ok(key) => Some(key),
                Err(NoKey::Body | NoKey::UnknownExtension) => {
                    self.shared
                        .counters
                        .bypassed
                        .fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
        };
        // The inner service is ready (poll_ready); it is called right here when a trip starts,
        // and not at all when the caller joins another's trip or is refused.
        let inner = &mut self.inner;
        let future = match key {
            None => direct(inner, request),
            Some(key) => match policy {
                DedupePolicy::Coalesce => self.shared.coalesce(inner, request, key),
                DedupePolicy::CancelPrevious => self.shared.exclusive(inner, request, key, true),
                DedupePolicy::RejectDuplicate => self.shared.exclusive(inner, request, key, false),
                DedupePolicy::Off => direct(inner, request),
            },
        };
        match scope {
            None => future,
            Some(scope) => {
                let shared = self.shared.clone();
                Box::pin(async move {
                    tokio::select! {
                        biased;
                        () = scope.cancelled() => {
                            shared.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                            Err(Error::new(ErrorKind::Cancelled).with_message("the request's cancel scope was cancelled"))
                        }
                        result = future => result,
                    }
                })
            }
        }
    }
}
