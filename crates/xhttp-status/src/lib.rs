//! Failure statuses as typed errors with a message a person can read.
//!
//! Admin front ends built on axios have a `checkStatus(status,
//! msg)`: a 4xx or 5xx becomes a message, the server's own when its body has one, else a
//! sentence per status (vue-vben-admin keys its messages by status, in Chinese and English).
//! [`StatusLayer`] is that function as a tower layer, so that every layer above it (retry,
//! refresh, report) sees a typed [`Error`](xhttp_core::Error) of kind
//! [`Status`](xhttp_core::ErrorKind::Status) instead of re-reading response bodies:
//!
//! - which statuses fail is a predicate ([`StatusLayerBuilder::success_if`]); by default
//!   4xx and 5xx do and everything else passes (see [`default_success`] for why 1xx and 3xx
//!   are not failures);
//! - the message comes from the body, first match wins: an RFC 9457 problem's `detail`, else
//!   `title` (under `application/problem+json`; the HTTP status wins over the problem's
//!   `status` member), the envelope's `message`, `msg` or `Msg` (or the JSON pointers you
//!   configure), `error.message`, `error_description`, a string `error`;
//! - a body without one (an HTML page from a proxy, an empty body) gets the default message
//!   of the status in the configured [`Language`];
//! - the message goes through core's one masker
//!   ([`xhttp_core::mask::server_message`]): flattened to one line, stripped of control, bidi and
//!   invisible characters, anything in it that looks like a credential masked, then capped at
//!   [`MAX_MESSAGE_CHARS`] characters: the error is logged and shown, the server's text is not
//!   vetted;
//! - `Retry-After` (delay-seconds or an HTTP-date, measured on the injectable
//!   [`Clock`](xhttp_core::Clock)'s wall time) and `WWW-Authenticate` are kept on the error
//!   for retry and refresh above;
//! - the error records the request's method and redacted URI, but not the body: errors are
//!   cloned to every caller of a shared outcome and stay small.
//!
//! A request carrying [`SkipStatus`] gets failure responses back as responses, for a
//! caller that reads a 404 itself. Errors of the inner service pass through as they are (an
//! inner [`Error`](xhttp_core::Error) is not wrapped again).
//!
//! The layer works on collected responses (`Response<Bytes>`), as the facade's stack hands
//! them up. Readiness is the inner service's: `poll_ready` passes through (mapping its error
//! into an `Error`), and `call` calls the inner service that `poll_ready` made ready, never a
//! clone of it. [`Status`] is `Send + Sync` when its inner
//! service is, and [`ResponseFuture`] `Send` when the inner future is.
//!
//! The crate also holds [`ReportLayer`] ([`report`]), the outermost layer, which turns the
//! final error of each caller into a notice, an error log record and a tracing event, and
//! [`hooks`], which shows where each hook of an axios wrapper goes in a tower stack.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//! use xhttp_core::ErrorKind;
//! use xhttp_status::StatusLayer;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let upstream = service_fn(|_request: Request<()>| async {
//!     let body = r#"{"code":503,"message":"system busy","result":null}"#;
//!     let mut response = Response::new(Bytes::from_static(body.as_bytes()));
//!     *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!     response.headers_mut().insert("retry-after", "3".parse().unwrap());
//!     Ok::<_, std::convert::Infallible>(response)
//! });
//! let service = StatusLayer::new().layer(upstream);
//!
//! let err = service
//!     .oneshot(Request::get("https://api.example.com/items?token=secret").body(()).unwrap())
//!     .await
//!     .unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Status);
//! assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
//! assert_eq!(err.message(), Some("system busy"));
//! assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(3)));
//! assert_eq!(
//!     err.to_string(),
//!     "server answered 503 Service Unavailable: system busy \
//!      (GET https://api.example.com/items?token=REDACTED)"
//! );
//! # });
//! ```
#![deny(unsafe_code)]

pub mod future;
pub mod hooks;
mod language;
mod layer;
mod message;
pub mod report;
mod service;

pub use future::ResponseFuture;
pub use language::{Language, STATUSES_WITH_DEFAULTS};
pub use layer::{default_success, SkipStatus, StatusLayer, StatusLayerBuilder};
pub use message::{MAX_MESSAGE_CHARS, MAX_SEARCHED_BODY};
pub use report::{
    ErrorLog, ErrorNotice, ErrorRecord, Notice, Notifier, Report, ReportLayer, ReportLayerBuilder,
    RingLog, SuccessNotice, TracingNotifier,
};
pub use service::Status;

/// The former name of [`SkipStatus`] (the same type).
pub use layer::SkipStatus as StatusPassthrough;

/// Core's one masker ([`xhttp_core::mask::mask`]) under the name this crate first exported it
/// by; new code can call `xhttp_core::mask` directly.
///
/// ```
/// use xhttp_status::mask_tokens;
///
/// assert_eq!(mask_tokens("Bearer abc.def.ghi expired"), "Bearer REDACTED expired");
/// assert_eq!(mask_tokens(r#"{"accessToken":"abc"}"#), r#"{"accessToken":"REDACTED"}"#);
/// ```
pub use xhttp_core::mask::mask as mask_tokens;

// Compile-time: the layer, the service and the future can cross threads.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<StatusLayer>();
    assert_send_sync::<StatusLayerBuilder>();
    assert_send_sync::<Status<()>>();
    assert_send::<
        ResponseFuture<std::future::Ready<Result<http::Response<bytes::Bytes>, xhttp_core::Error>>>,
    >();
};
