//! [`TimeoutFuture`]: a future bounded by a timer, failing with a [`Timeout`] of a given
//! scope. The attempt timeout and the deadline are the same mechanics with different scopes.
//!
//! [`Timeout`]: crate::ErrorKind::Timeout

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::BoxError;

use crate::{Error, TimeoutScope};

pin_project! {
    /// Resolves to the inner future's output (its error converted into [`Error`]), or to
    /// `Timeout(scope)` once the timer fires first.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xhttp_core::timeout::TimeoutFuture;
    /// use xhttp_core::{Error, ErrorKind, TimeoutScope};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
    /// let never = std::future::pending::<Result<(), Error>>();
    /// let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    /// let err = TimeoutFuture::new(never, deadline, TimeoutScope::Total).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutScope::Total));
    /// # });
    /// ```
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        scope: TimeoutScope,
    }
}

impl<F> TimeoutFuture<F> {
    /// `inner`, bounded by `deadline`.
    pub fn new(inner: F, deadline: Instant, scope: TimeoutScope) -> Self {
        TimeoutFuture {
            inner,
            sleep: tokio::time::sleep_until(deadline),
            scope,
        }
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(|e| Error::from_boxed(e.into())));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::timeout(*this.scope))),
            Poll::Pending => Poll::Pending,
        }
    }
}
