//! A tower service that enforces the readiness contract, for testing layers.

use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{BoxError, Service};

/// Answers every call with a clone of one response, but only after `poll_ready`: a `call`
/// without it fails with an error naming the bug. A clone starts not ready, as tower
/// requires (a ready service's permit does not travel with a clone).
///
/// A layer under test wraps a probe; `oneshot` through the layer then proves that the layer
/// passes readiness down before it calls.
///
/// ```
/// use tower::{Service, ServiceExt};
/// use xhttp_testkit::ReadinessProbe;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let probe = ReadinessProbe::new("pong");
/// assert_eq!(probe.clone().oneshot(()).await.unwrap(), "pong");
/// let mut not_ready = probe.clone();
/// assert!(not_ready.call(()).await.is_err());
/// assert_eq!(probe.calls(), 1);
/// # });
/// ```
#[derive(Debug)]
pub struct ReadinessProbe<T> {
    response: T,
    ready: bool,
    calls: Arc<AtomicUsize>,
}

impl<T> ReadinessProbe<T> {
    /// A probe answering `response`.
    pub fn new(response: T) -> Self {
        ReadinessProbe {
            response,
            ready: false,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Calls that were made after `poll_ready`, over this probe and all its clones.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<T: Clone> Clone for ReadinessProbe<T> {
    fn clone(&self) -> Self {
        ReadinessProbe {
            response: self.response.clone(),
            ready: false,
            calls: self.calls.clone(),
        }
    }
}

impl<Request, T: Clone> Service<Request> for ReadinessProbe<T> {
    type Response = T;
    type Error = BoxError;
    type Future = Ready<Result<T, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request) -> Self::Future {
        if !std::mem::take(&mut self.ready) {
            return ready(Err(
                "readiness contract broken: call without poll_ready".into()
            ));
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        ready(Ok(self.response.clone()))
    }
}
