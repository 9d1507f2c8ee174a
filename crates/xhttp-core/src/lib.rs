//! Shared vocabulary of the xhttp layers.
//!
//! Every xhttp layer speaks in the types of this crate, so that a user matches on one error
//! type and every layer hands bodies and clocks to the next without conversions:
//!
//! - [`Error`] and [`ErrorKind`]: one opaque, cheaply cloneable error for the whole stack, in the
//!   manner of hyper's. It converts into tower's and tonic's `BoxError` and back by downcast.
//! - [`Body`]: the request body, backed by [`bytes::Bytes`], cheap to clone and replayable by
//!   construction; a streaming body can be wrapped in a capped replay buffer.
//! - [`collect()`](collect::collect) and [`BodyLimit`]: a response body collected into `Bytes`
//!   under a limit, never buffering past it.
//! - [`Clock`]: time on tokio's [`Instant`](tokio::time::Instant), so tests run on a paused clock.
//! - [`Origin`], [`is_idempotent`] and [`redact`]: small helpers several layers need.
//!
//! ```
//! use xhttp_core::{Body, Error, ErrorKind};
//! use http::StatusCode;
//!
//! let body = Body::from("hello");
//! let replay = body.clone(); // a cheap clone that replays the same bytes
//! assert_eq!(body.content_length(), replay.content_length());
//!
//! let err = Error::from_status(StatusCode::SERVICE_UNAVAILABLE).with_attempts(4);
//! assert_eq!(err.kind(), ErrorKind::Status);
//! assert_eq!(err.attempts(), 4);
//! // Errors go through tower's BoxError and come back intact.
//! let boxed: tower::BoxError = err.clone().into();
//! assert_eq!(Error::from_boxed(boxed).attempts(), 4);
//! ```
#![deny(unsafe_code)]

pub mod body;
pub mod challenge;
pub mod clock;
pub mod collect;
pub mod error;
pub mod json;
mod macros;
pub mod mask;
pub mod origin;
pub mod problem;
pub mod random;
pub mod redact;
pub mod retry_after;
pub mod sync;
pub mod timeout;

pub use body::{Body, BodyKey, RequestBody};
pub use clock::{Clock, SharedClock, TokioClock};
pub use collect::{collect, BodyLimit, Collector};
pub use error::{BusinessCode, Error, ErrorKind, TimeoutScope};
pub use origin::Origin;

/// Whether a request method is idempotent (RFC 9110 section 9.2.2): GET, HEAD, OPTIONS, TRACE,
/// PUT and DELETE.
///
/// Retry uses this to decide whether a request that may have reached the server can be sent
/// again.
///
/// ```
/// use http::Method;
/// assert!(xhttp_core::is_idempotent(&Method::PUT));
/// assert!(!xhttp_core::is_idempotent(&Method::POST));
/// ```
pub fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use http::Method;

    #[test]
    fn idempotent_methods_follow_rfc_9110() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(
                super::is_idempotent(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(
                !super::is_idempotent(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
    }
}

/// The instant by which a logical call must be done (retries and backoff included), as a
/// request extension: the deadline layer sets it, and retry and the attempt timeout read it,
/// so that each attempt gets `min(attempt timeout, time left)` and no backoff sleeps past it.
///
/// ```
/// use std::time::Duration;
/// use xhttp_core::Deadline;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Deadline::after(Duration::from_secs(30)));
/// let left = Deadline::of(&request).unwrap().remaining();
/// assert!(left <= Duration::from_secs(30));
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(pub tokio::time::Instant);

impl Deadline {
    /// The deadline `timeout` from now (tokio's clock).
    pub fn after(timeout: std::time::Duration) -> Deadline {
        let now = tokio::time::Instant::now();
        // A timeout too long for the clock means no deadline worth the name: cap at a year.
        Deadline(
            now.checked_add(timeout)
                .unwrap_or_else(|| now + std::time::Duration::from_secs(365 * 24 * 3600)),
        )
    }

    /// The deadline a request carries, if any.
    pub fn of<B>(request: &http::Request<B>) -> Option<Deadline> {
        request.extensions().get::<Deadline>().copied()
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> std::time::Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }
}
