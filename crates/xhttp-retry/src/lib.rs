//! Retries with timeouts for HTTP clients, right where axios-retry, ky and retryablehttp go
//! wrong: POST is not retried after it may have reached the server, `Retry-After` is capped
//! and never sleeps past the deadline, retries share a budget, and the caller learns how many
//! attempts were made.
//!
//! - [`RetryLayer`] with a [`RetryPolicy`]: tower's `Retry` (which polls readiness before every
//!   attempt) driven by our policy. Classification: a connection that provably never carried
//!   the request is retried for any method; timeouts, resets and 408, 429, 500, 502, 503, 504
//!   only for idempotent methods (RFC 9110 section 9.2.2) or a request with an
//!   `Idempotency-Key` (sent again with the same key); never 501, other 4xx, decode errors,
//!   body limits or auth errors. A predicate can add cases (a "system busy" business code).
//! - [`DeadlineLayer`]: the total time of a call (default 30 s), backoff included; it sets the
//!   request's [`Deadline`](xhttp_core::Deadline), which the attempt timeout and retry read.
//! - [`RetryOverride`] per request, [`Attempts`] on the final response, `Error::attempts` on
//!   the final error, [`parse_retry_after`] for all of RFC 9110's forms.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use xhttp_core::Error;
//! use xhttp_retry::{DeadlineLayer, RetryLayer, RetryPolicy};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counter = calls.clone();
//! let flaky = service_fn(move |_: http::Request<String>| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let status = if n < 2 { 503 } else { 200 };
//!         let mut response = http::Response::new(());
//!         *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
//!         Ok::<_, Error>(response)
//!     }
//! });
//! let service = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(30)))
//!     .layer(RetryLayer::new(RetryPolicy::default()))
//!     .service(flaky);
//! let response = service.oneshot(http::Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.extensions().get::<xhttp_retry::Attempts>(), Some(&xhttp_retry::Attempts(3)));
//! # });
//! ```
//!
//! # Requirements
//!
//! [`Retry<S>`](Retry) serves `Request<B>` when:
//!
//! - **request body** `B: RequestBody` ([`xhttp_core::body::RequestBody`]): the request is copied
//!   before every attempt, and the copy sent only if the policy retries. xhttp's `Body`,
//!   `http_body_util::Full` (the usual hyper client body) and `Empty`, `Bytes`, `String` and
//!   `()` are replayed; a boxed body is sent once and its first outcome returned.
//! - **response body**: any `T` in `Response<T>`; the policy reads the status and
//!   `Retry-After`.
//! - **inner service** `S: Service<Request<B>, Response = Response<T>> + Clone` (tower's
//!   `Retry` clones it for each call); neither `Send` nor `Sync` is asked of it. The service
//!   is `Send` and `Sync` when `S` is; its [`ResponseFuture`] is `Send` when `S`, its future
//!   and `B` are.
//! - **inner error** `S::Error: Into<tower::BoxError>`; it becomes an [`xhttp_core::Error`]
//!   by [`Error::from_boxed`](xhttp_core::Error::from_boxed) before the policy sees it. An
//!   xhttp error comes back as it was, so its kind (never sent, attempt timeout, status)
//!   decides; any other error is `Transport`, a failure that may have reached the server,
//!   retried only for idempotent requests. The layer's own error is `xhttp_core::Error`.
//!
//! [`EnforceDeadline<S>`](EnforceDeadline) serves any `Request<B>` and any response; it asks
//! only `S::Error: Into<tower::BoxError>`, made an `xhttp_core::Error` the same way.
#![deny(unsafe_code)]

pub mod future;
mod layer;
mod policy;
mod service;

pub use future::{DeadlineFuture, ResponseFuture};
pub use layer::{DeadlineLayer, RetryLayer};
pub use policy::{
    Attempt, Attempts, Outcome, RetryOverride, RetryPolicy, RetryPolicyBuilder, RetryReason,
    IDEMPOTENCY_KEY,
};
#[allow(deprecated)]
pub use service::DeadlineService;
pub use service::{EnforceDeadline, Retry};
pub use xhttp_core::retry_after::parse_retry_after;
