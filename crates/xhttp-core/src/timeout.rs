//! [`TimeoutFuture`]: a future bounded by a timer, failing with a [`Timeout`] of a given
//! scope. The attempt timeout and the deadline are the same mechanics with different scopes.
//!
//! A tokio timer cannot be made outside a tokio runtime (tokio panics). A `TimeoutFuture`
//! created there resolves to a [`Config`](crate::ErrorKind::Config) error instead, without
//! polling the future it bounds, so a client driven by the wrong executor fails with a
//! sentence, not a panic.
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
        // `None` outside a tokio runtime, where no timer can exist.
        #[pin]
        sleep: Option<Sleep>,
        scope: TimeoutScope,
    }
}

impl<F> TimeoutFuture<F> {
    /// `inner`, bounded by `deadline`. Outside a tokio runtime the future fails with
    /// `ErrorKind::Config` on its first poll.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xhttp_core::timeout::TimeoutFuture;
    /// use xhttp_core::{Error, ErrorKind, TimeoutScope};
    ///
    /// // No runtime here: no timer, and a typed error instead of tokio's panic.
    /// let ready = std::future::ready(Ok::<_, Error>(()));
    /// let future = TimeoutFuture::new(ready, tokio::time::Instant::now(), TimeoutScope::Attempt);
    /// let err = futures_util::FutureExt::now_or_never(future).unwrap().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Config);
    /// ```
    pub fn new(inner: F, deadline: Instant, scope: TimeoutScope) -> Self {
        let sleep = tokio::runtime::Handle::try_current()
            .is_ok()
            .then(|| tokio::time::sleep_until(deadline));
        TimeoutFuture {
            inner,
            sleep,
            scope,
        }
    }
}

/// The error of a timer asked for outside a tokio runtime (the retry layer's backoff uses it
/// too).
///
/// ```
/// let err = xhttp_core::timeout::no_runtime_error();
/// assert_eq!(err.kind(), xhttp_core::ErrorKind::Config);
/// ```
pub fn no_runtime_error() -> Error {
    Error::config(
        "no tokio runtime: xhttp's timeouts need one (with its time driver enabled); \
         drive the client from inside a tokio runtime",
    )
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(sleep) = this.sleep.as_pin_mut() else {
            return Poll::Ready(Err(no_runtime_error()));
        };
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(|e| Error::from_boxed(e.into())));
        }
        match sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::timeout(*this.scope))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn outside_a_runtime_it_is_a_config_error_and_the_inner_future_is_not_polled() {
        let polled = AtomicBool::new(false);
        let inner = std::future::poll_fn(|_| {
            polled.store(true, Ordering::SeqCst);
            Poll::Ready(Ok::<_, Error>(()))
        });
        let future = TimeoutFuture::new(inner, Instant::now(), TimeoutScope::Total);
        let err = futures_util::FutureExt::now_or_never(future)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(err.to_string().contains("tokio runtime"), "{err}");
        assert!(!polled.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn inside_a_runtime_the_timer_fires() {
        let never = std::future::pending::<Result<(), Error>>();
        let deadline = Instant::now() + Duration::from_secs(3);
        let err = TimeoutFuture::new(never, deadline, TimeoutScope::Attempt)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Timeout(TimeoutScope::Attempt));
    }
}
