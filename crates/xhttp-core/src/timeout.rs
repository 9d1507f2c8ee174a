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
use std::time::Duration;

use http::Request;
use tower::{Layer, Service};

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

/// Writes `timeout` as the `grpc-timeout` header of a gRPC request (`content-type:
/// application/grpc...`), so the server stops working on a call its client has given up on;
/// other requests are left alone. A smaller `grpc-timeout` the caller set is kept. The value
/// is whole milliseconds (`4999m`), rounded down, so the server never waits longer than the
/// client; seconds past what eight digits of milliseconds can say (about 27 hours).
///
/// ```
/// use std::time::Duration;
/// use xhttp_core::timeout::write_grpc_timeout;
///
/// let mut call = http::Request::post("/grpc.health.v1.Health/Check")
///     .header("content-type", "application/grpc")
///     .body(())
///     .unwrap();
/// write_grpc_timeout(&mut call, Duration::from_millis(4_999_900));
/// assert_eq!(call.headers()["grpc-timeout"], "4999900m");
/// // A smaller timeout the caller set stays.
/// call.headers_mut().insert("grpc-timeout", http::HeaderValue::from_static("2S"));
/// write_grpc_timeout(&mut call, Duration::from_secs(5));
/// assert_eq!(call.headers()["grpc-timeout"], "2S");
///
/// let mut rest = http::Request::get("https://api.example.com/").body(()).unwrap();
/// write_grpc_timeout(&mut rest, Duration::from_secs(5));
/// assert!(rest.headers().get("grpc-timeout").is_none());
/// ```
pub fn write_grpc_timeout<B>(request: &mut Request<B>, timeout: Duration) {
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if !is_grpc {
        return;
    }
    let theirs = request
        .headers()
        .get(GRPC_TIMEOUT)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    if theirs.is_some_and(|theirs| theirs <= timeout) {
        return;
    }
    const MOST: u128 = 99_999_999;
    let millis = timeout.as_millis();
    let text = if millis <= MOST {
        format!("{millis}m")
    } else {
        format!("{}S", u128::from(timeout.as_secs()).min(MOST))
    };
    if let Ok(value) = http::HeaderValue::try_from(text) {
        request.headers_mut().insert(GRPC_TIMEOUT, value);
    }
}

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// A `grpc-timeout` value: one to eight digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.checked_mul(3600)?),
        'M' => Duration::from_secs(n.checked_mul(60)?),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Layer of [`AttemptTimeout`]: bounds one trip, head and body.
///
/// Default 10 s, as Polly's standard resilience pipeline; the deadline of the whole call
/// (retries and backoff included) is another layer's.
#[derive(Clone, Copy, Debug)]
pub struct AttemptTimeoutLayer {
    timeout: Duration,
}

impl AttemptTimeoutLayer {
    /// An attempt timeout of `timeout`. A timeout above a year (`Duration::MAX` included)
    /// counts as a year, the cap of [`Deadline::after`](crate::Deadline::after): no timeout
    /// worth the name, and no overflow of the clock when a call is made.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use xhttp_core::timeout::AttemptTimeoutLayer;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let ok = service_fn(|_: http::Request<()>| async { Ok::<_, xhttp_core::Error>("done") });
    /// let service = AttemptTimeoutLayer::new(Duration::MAX).layer(ok);
    /// assert_eq!(service.oneshot(http::Request::new(())).await.unwrap(), "done");
    /// # });
    /// ```
    pub fn new(timeout: Duration) -> Self {
        AttemptTimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> AttemptTimeout<S> {
        AttemptTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Fails a trip with `Timeout(Attempt)` when it takes longer than its timeout. Put it above
/// [`Collect`](crate::collect::Collect) so that the body download is covered too (tower's `Timeout` covers only what
/// its inner future covers).
#[derive(Clone, Debug)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: Duration,
}

crate::inner_service_accessors! {
    impl<S> AttemptTimeout<S> { inner: S }
}

impl<S, B> Service<Request<B>> for AttemptTimeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = AttemptTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Each attempt gets min(attempt timeout, time left before the call's deadline); when
        // the deadline is the nearer, its expiry is reported as the total timeout.
        let (timeout, scope) = match crate::Deadline::of(&request) {
            Some(deadline) if deadline.remaining() < self.timeout => {
                (deadline.remaining(), TimeoutScope::Total)
            }
            _ => (self.timeout, TimeoutScope::Attempt),
        };
        // A gRPC server learns how long this attempt may take.
        write_grpc_timeout(&mut request, timeout);
        // `Deadline::after` caps the instant at a year from now instead of overflowing.
        let deadline = crate::Deadline::after(timeout).0;
        AttemptTimeoutFuture::new(self.inner.call(request), deadline, scope)
    }
}

/// The response future of [`AttemptTimeout`].
pub type AttemptTimeoutFuture<F> = TimeoutFuture<F>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn each_grpc_attempt_carries_the_smaller_of_its_timeout_and_the_deadline() {
        use tower::ServiceExt;
        let echo = tower::service_fn(|request: Request<()>| async move {
            Ok::<_, Error>(
                request
                    .headers()
                    .get("grpc-timeout")
                    .map(|v| v.to_str().unwrap_or_default().to_owned()),
            )
        });
        let service = AttemptTimeoutLayer::new(Duration::from_secs(10)).layer(echo);
        let call = |deadline: Option<Duration>, content_type: &'static str| {
            let mut request = Request::post("/pkg.Svc/Call")
                .header("content-type", content_type)
                .body(())
                .unwrap_or_default();
            if let Some(left) = deadline {
                request
                    .extensions_mut()
                    .insert(crate::Deadline::after(left));
            }
            service.clone().oneshot(request)
        };
        let sent = call(None, "application/grpc+proto").await.ok().flatten();
        assert_eq!(sent.as_deref(), Some("10000m"));
        let sent = call(Some(Duration::from_secs(3)), "application/grpc")
            .await
            .ok()
            .flatten();
        assert_eq!(sent.as_deref(), Some("3000m"), "the deadline is nearer");
        let sent = call(Some(Duration::from_secs(3)), "application/json")
            .await
            .ok()
            .flatten();
        assert_eq!(sent, None, "not a gRPC call");
    }

    #[test]
    fn grpc_timeout_values_parse_by_their_unit_and_refuse_junk() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for junk in ["", "S", "123456789m", "1x", "-1S", "1.5S", "é"] {
            assert_eq!(parse_grpc_timeout(junk), None, "{junk:?}");
        }
    }

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
