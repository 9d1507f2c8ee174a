//! Reporting a failed call once per caller: a notice, an error log record, a tracing event.
//!
//! Axios wrappers do this in their response interceptor's catch: `checkStatus` shows a message
//! (vben's `createMessage.error`, or a modal when `errorMessageMode` says so), the error goes
//! to the error-log store (`addAjaxErrorInfo`), and a 401 logs the user out. Done at the
//! bottom of a stack, it runs once per attempt: four retries are four toasts and four log
//! lines, and ten deduplicated callers of one trip are one. [`ReportLayer`] sits at the top
//! (the outermost layer of the canonical order) so that it sees what each caller sees, once,
//! whatever happened below:
//!
//! 1. a [`Notice`] to a [`Notifier`] in the request's [`ErrorNotice`] mode (the layer's
//!    default when the request has none; `ErrorNotice::None` tells nobody). An identical
//!    notice (mode, status, kind, business code, message) shown less than the repeat window
//!    ago (3 s by default) is held back and counted ([`ReportLayer::suppressed_repeats`]),
//!    as vben keys its messages by status. The default notifier writes a tracing event.
//! 2. an [`ErrorRecord`] to an [`ErrorLog`]: method, URL, status, kind, business code,
//!    message, attempts, duration and time. The default log is a [`RingLog`] of the newest
//!    200 records ([`ReportLayer::error_log`]).
//! 3. one `tracing` event (`warn`, target `xhttp::report`) with the record's fields, the
//!    error's `Display` (one level) and its causes (`cause`, from `source()`), masked.
//! 4. the `on_unauthorized` hook, when the error is `Unauthorized` or `SessionExpired`.
//!
//! A request carrying a [`SuccessNotice`] has it shown when the call succeeds.
//!
//! Nothing reported is a secret: the URL is redacted by [`xhttp_core::redact::uri`] and both
//! it and the message go through core's one masker, [`xhttp_core::mask::server_text`]; headers
//! are never read.
//! A caller that drops its future is told nothing and leaves no record: there is nobody to
//! report to, and the layers below did not fail. Readiness is the inner service's, and
//! responses pass unchanged; inner errors become [`Error`](xhttp_core::Error) (an inner
//! `Error` is kept as it is).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//! use xhttp_core::{Error, ErrorKind};
//! use xhttp_status::{ErrorNotice, Notice, ReportLayer};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let upstream = service_fn(|_request: Request<()>| async {
//!     Err::<Response<Bytes>, _>(
//!         Error::from_status(StatusCode::SERVICE_UNAVAILABLE)
//!             .with_message("system busy")
//!             .with_attempts(3),
//!     )
//! });
//! let toasts = Arc::new(Mutex::new(Vec::new()));
//! let shown = toasts.clone();
//! let layer = ReportLayer::builder()
//!     .notifier(move |notice: &Notice| shown.lock().unwrap().push(notice.message.clone()))
//!     .build();
//! let service = layer.layer(upstream);
//!
//! let request = Request::get("https://api.example.com/items?access_token=s3cr3t")
//!     .body(())
//!     .unwrap();
//! let err = service.clone().oneshot(request).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Status);
//! assert_eq!(*toasts.lock().unwrap(), ["system busy"]);
//!
//! let records = layer.error_log().unwrap().records();
//! assert_eq!(records[0].url, "https://api.example.com/items?access_token=REDACTED");
//! assert_eq!(records[0].attempts, 3);
//!
//! // A background request: recorded, not shown.
//! let quiet = Request::get("https://api.example.com/health")
//!     .extension(ErrorNotice::None)
//!     .body(())
//!     .unwrap();
//! service.oneshot(quiet).await.unwrap_err();
//! assert_eq!(toasts.lock().unwrap().len(), 1);
//! assert_eq!(layer.error_log().unwrap().len(), 2);
//! # });
//! ```

pub mod future;
mod layer;
mod log;
mod notice;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::{ReportLayer, ReportLayerBuilder};
pub use self::log::{ErrorLog, ErrorRecord, RingLog, DEFAULT_RING_BYTES, DEFAULT_RING_CAPACITY};
pub use self::notice::{
    ErrorNotice, Notice, Notifier, SuccessNotice, TracingNotifier, DEFAULT_REPEAT_WINDOW,
};
pub use self::service::Report;

// Every critical section of the report's mutexes is a few collection operations that cannot
// panic halfway, so a poisoned lock still guards consistent data.
use xhttp_core::sync::lock;

// Compile-time: the layer, its builder, the service and the future can cross threads.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<ReportLayer>();
    assert_send::<ReportLayerBuilder>();
    assert_send_sync::<Report<()>>();
    assert_send_sync::<RingLog>();
    assert_send::<
        ResponseFuture<std::future::Ready<Result<http::Response<bytes::Bytes>, xhttp_core::Error>>>,
    >();
};
