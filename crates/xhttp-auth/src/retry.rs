//! Which failed token calls the single flight sends again, and how long it waits: the one
//! place where this is decided, for every grant.
//!
//! A token call that fails while a thousand requests wait for it should not fail them all
//! when the endpoint only hiccupped. So the refresh retries, inside its own deadline, the
//! failures where the server says it **did not process** the call (503, 429, 408) or where
//! the request **never left** (connection refused, DNS, connect timeout); the waiters keep
//! waiting. It never retries a failure after which the server may have consumed a rotating
//! refresh token (500, 502, 504, a timeout after sending, a reset mid-answer) unless the grant
//! says that is harmless ([`RetrySafety::Always`]), and never a rejection (`invalid_grant`,
//! any other 4xx), nor an answer it could not read.

use std::sync::Arc;
use std::time::Duration;

use xhttp_core::error::RefreshFailure;
use xhttp_core::{Error, ErrorKind};

use crate::grant::RetrySafety;

/// Whether the flight may send the token call again after `err`.
pub(crate) fn retries(err: &Error, safety: RetrySafety) -> bool {
    if err.kind() != ErrorKind::RefreshFailed {
        // SessionExpired (a dead credential), Internal (a panic), SessionChanged: final.
        return false;
    }
    if err.is_never_sent() {
        return true;
    }
    let always = safety == RetrySafety::Always;
    match err.refresh_failure() {
        Some(RefreshFailure::Endpoint) => match err.status().map(|s| s.as_u16()) {
            // RFC 9110 15.6.4 and 15.5.9, RFC 6585 4: the server did not process the call.
            Some(408 | 429 | 503) => true,
            Some(500 | 502 | 504) => always,
            _ => false,
        },
        Some(RefreshFailure::Unreachable) => true,
        Some(RefreshFailure::Timeout | RefreshFailure::Interrupted) => always,
        _ => false,
    }
}

/// The random source of the jitter: a value in `[0, 1]`.
pub(crate) type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Exponential backoff with equal jitter between the token calls of one flight.
#[derive(Clone)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
    pub(crate) jitter: Jitter,
}

impl Backoff {
    /// The default: 100 ms, doubling, at most 2 s, so a 10 s refresh deadline holds about
    /// eight calls against an endpoint that keeps refusing connections.
    pub(crate) fn new() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            jitter: Arc::new(xhttp_core::random::unit),
        }
    }

    /// The wait before retry `n` (from 0): the server's `Retry-After` when it sent one, else
    /// `bound * (1 + random) / 2` with `bound = min(base * 2^n, cap)`: never zero, so a
    /// failure that comes back at once cannot spin.
    pub(crate) fn delay(&self, n: u32, err: &Error) -> Duration {
        if let Some(wait) = err.retry_after() {
            return wait;
        }
        let bound = self
            .base
            .checked_mul(2u32.saturating_pow(n.min(31)))
            .map_or(self.cap, |d| d.min(self.cap));
        let random = (self.jitter)();
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        bound.mul_f64(0.5 + random / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn endpoint(status: u16) -> Error {
        Error::new(ErrorKind::RefreshFailed)
            .with_refresh_failure(RefreshFailure::Endpoint)
            .with_status(StatusCode::from_u16(status).unwrap())
    }

    fn failed(failure: RefreshFailure) -> Error {
        Error::new(ErrorKind::RefreshFailed).with_refresh_failure(failure)
    }

    #[test]
    fn a_rotating_grant_retries_only_calls_the_server_did_not_process() {
        let rotating = RetrySafety::NotProcessed;
        for status in [408, 429, 503] {
            assert!(retries(&endpoint(status), rotating), "{status}");
        }
        for status in [400, 401, 403, 404, 500, 501, 502, 504] {
            assert!(!retries(&endpoint(status), rotating), "{status}");
        }
        let refused = failed(RefreshFailure::Unreachable).with_never_sent();
        assert!(retries(&refused, rotating));
        assert!(!retries(&failed(RefreshFailure::Timeout), rotating));
        assert!(!retries(&failed(RefreshFailure::Interrupted), rotating));
        assert!(!retries(&failed(RefreshFailure::Malformed), rotating));
        assert!(!retries(&Error::new(ErrorKind::SessionExpired), rotating));
        assert!(!retries(&Error::new(ErrorKind::Internal), rotating));
        // An unclassified failure (a custom grant's own error) is not retried.
        assert!(!retries(&Error::new(ErrorKind::RefreshFailed), rotating));
    }

    #[test]
    fn a_grant_that_consumes_nothing_also_retries_what_may_have_been_processed() {
        let always = RetrySafety::Always;
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(retries(&endpoint(status), always), "{status}");
        }
        assert!(retries(&failed(RefreshFailure::Timeout), always));
        assert!(retries(&failed(RefreshFailure::Interrupted), always));
        assert!(!retries(&endpoint(400), always));
        assert!(!retries(&failed(RefreshFailure::Malformed), always));
        assert!(!retries(&Error::new(ErrorKind::SessionExpired), always));
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_equal_jitter_and_honours_retry_after() {
        let mut backoff = Backoff::new();
        let err = endpoint(503);
        backoff.jitter = Arc::new(|| 1.0);
        let full: Vec<_> = (0..7).map(|n| backoff.delay(n, &err)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            full,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(2000),
                ms(2000)
            ]
        );
        assert_eq!(backoff.delay(u32::MAX, &err), ms(2000));
        backoff.jitter = Arc::new(|| 0.0);
        assert_eq!(backoff.delay(0, &err), ms(50), "never zero");
        backoff.jitter = Arc::new(|| f64::NAN);
        assert_eq!(backoff.delay(1, &err), ms(100));
        let asked = err.with_retry_after(Duration::from_secs(3));
        assert_eq!(backoff.delay(0, &asked), Duration::from_secs(3));
        for _ in 0..1000 {
            let d = Backoff::new().delay(2, &endpoint(503));
            assert!(d >= ms(200) && d <= ms(400), "{d:?}");
        }
    }
}
