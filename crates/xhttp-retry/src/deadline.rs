//! [`DeadlineLayer`]: the total time a logical call may take, retries and backoff included.

use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tower::{BoxError, Layer, Service};
use xhttp_core::{Deadline, Error, TimeoutScope};

/// Bounds a whole call (default 30 s, as Polly's standard pipeline): sets the request's
/// [`Deadline`] for the layers below (retry does not sleep past it, each attempt gets the time
/// left) and fails the call with `Timeout(Total)` when it passes. A request that already
/// carries an earlier `Deadline` keeps it.
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use xhttp_core::{Error, ErrorKind, TimeoutScope};
/// use xhttp_retry::DeadlineLayer;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let never = service_fn(|_: http::Request<()>| std::future::pending::<Result<(), Error>>());
/// let service = DeadlineLayer::new(Duration::from_secs(30)).layer(never);
/// let err = service.oneshot(http::Request::new(())).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutScope::Total));
/// # });
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// A deadline `timeout` after each call starts. A timeout above a year (`Duration::MAX`
    /// included) counts as a year, [`Deadline::after`]'s cap: no deadline worth the name, and
    /// no overflow of the clock.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use xhttp_core::Error;
    /// use xhttp_retry::DeadlineLayer;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Error>("done") });
    /// let service = DeadlineLayer::new(Duration::MAX).layer(ok);
    /// assert_eq!(service.oneshot(http::Request::new(())).await.unwrap(), "done");
    /// # });
    /// ```
    pub fn new(timeout: Duration) -> Self {
        DeadlineLayer { timeout }
    }
}

impl Default for DeadlineLayer {
    fn default() -> Self {
        DeadlineLayer::new(Duration::from_secs(30))
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> DeadlineService<S> {
        DeadlineService {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    timeout: Duration,
}

impl<S> DeadlineService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for DeadlineService<S>
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
        DeadlineFuture::new(self.inner.call(request), deadline.0, TimeoutScope::Total)
    }
}

/// The response future of [`DeadlineService`].
pub type DeadlineFuture<F> = xhttp_core::timeout::TimeoutFuture<F>;
