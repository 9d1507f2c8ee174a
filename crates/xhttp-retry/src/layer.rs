//! The layers: [`RetryLayer`] (how often, after what, how long to wait: its [`RetryPolicy`])
//! and [`DeadlineLayer`] (how long a whole call may take).

use std::time::Duration;

use tower::Layer;

use crate::{EnforceDeadline, Retry, RetryPolicy};

/// Retries a service's calls as its [`RetryPolicy`] says. All services built from one layer
/// share the policy's retry budget.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// A retry layer with `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer { policy }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(self.policy.per_request(), inner)
    }
}

/// Bounds a whole call (default 30 s, as Polly's standard pipeline): sets the request's
/// [`Deadline`](xhttp_core::Deadline) for the layers below (retry does not sleep past it, each
/// attempt gets the time left) and fails the call with `Timeout(Total)` when it passes. A
/// request that already carries an earlier `Deadline` keeps it.
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
#[must_use]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// A deadline `timeout` after each call starts. A timeout above a year (`Duration::MAX`
    /// included) counts as a year, [`Deadline::after`](xhttp_core::Deadline::after)'s cap: no
    /// deadline worth the name, and no overflow of the clock.
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
    type Service = EnforceDeadline<S>;

    fn layer(&self, inner: S) -> EnforceDeadline<S> {
        EnforceDeadline::new(inner, self.timeout)
    }
}
