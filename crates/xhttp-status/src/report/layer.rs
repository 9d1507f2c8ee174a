//! The policy: what is reported about a finished call, and to whom.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, Uri};
use tokio::time::Instant;
use tower::Layer;
use xhttp_core::{Error, ErrorKind, SharedClock, TokioClock};

use super::notice::{Repeats, DEFAULT_REPEAT_WINDOW};
use super::{
    ErrorLog, ErrorNotice, ErrorRecord, Notice, Notifier, Report, RingLog, SuccessNotice,
    TracingNotifier,
};
use xhttp_core::error::MAX_TEXT_LEN;
use xhttp_core::mask::server_text;

/// The most bytes of a URL an error record keeps (2 KiB): a URL longer than that is a query
/// dump, and the ring's byte budget is better spent on records.
const MAX_RECORD_URL_LEN: usize = 2048;

type UnauthorizedHook = Box<dyn Fn(&Error) + Send + Sync>;

/// Reports each caller's failure once: a notice, an error log record, a tracing event and
/// the `on_unauthorized` hook. See the [module docs](super).
///
/// Cheap to clone: the notifier, the log, the repeat memory and the counters live in one
/// `Arc` shared by every clone and every service the layer builds.
///
/// ```
/// use xhttp_status::{ErrorNotice, ReportLayer};
/// use std::time::Duration;
///
/// let layer = ReportLayer::new();
/// assert_eq!(layer.error_log().unwrap().capacity(), 200);
///
/// let layer = ReportLayer::builder()
///     .default_notice(ErrorNotice::Modal)
///     .repeat_window(Duration::from_secs(10))
///     .on_unauthorized(|_err| { /* send the user to the login page */ })
///     .build();
/// assert_eq!(layer.suppressed_repeats(), 0);
/// ```
#[derive(Clone)]
#[must_use]
pub struct ReportLayer {
    shared: Arc<Shared>,
}

/// Builds a [`ReportLayer`]; every setting has a default.
///
/// ```
/// use std::sync::Arc;
/// use xhttp_status::{ReportLayer, RingLog, TracingNotifier};
///
/// // A larger ring, kept by the caller as well.
/// let ring = Arc::new(RingLog::new(1_000));
/// let layer = ReportLayer::builder()
///     .notifier(TracingNotifier)
///     .error_log(ring.clone())
///     .build();
/// assert_eq!(ring.capacity(), 1_000);
/// # drop(layer);
/// ```
#[must_use]
pub struct ReportLayerBuilder {
    notifier: Box<dyn Notifier>,
    log: Option<Box<dyn ErrorLog>>,
    default_notice: ErrorNotice,
    repeat_window: Duration,
    on_unauthorized: Option<UnauthorizedHook>,
    clock: SharedClock,
}

pub(crate) struct Shared {
    notifier: Box<dyn Notifier>,
    log: Box<dyn ErrorLog>,
    /// The default log, kept for [`ReportLayer::error_log`].
    ring: Option<Arc<RingLog>>,
    default_notice: ErrorNotice,
    repeats: Repeats,
    on_unauthorized: Option<UnauthorizedHook>,
    clock: SharedClock,
}

impl ReportLayer {
    /// A report layer with the defaults: notices through [`TracingNotifier`], mode
    /// [`ErrorNotice::Message`], repeats held back for 3 s, records in a [`RingLog`] of 200,
    /// no `on_unauthorized` hook.
    pub fn new() -> Self {
        ReportLayer::builder().build()
    }

    /// A builder starting from the defaults of [`ReportLayer::new`].
    pub fn builder() -> ReportLayerBuilder {
        ReportLayerBuilder {
            notifier: Box::new(TracingNotifier),
            log: None,
            default_notice: ErrorNotice::default(),
            repeat_window: DEFAULT_REPEAT_WINDOW,
            on_unauthorized: None,
            clock: Arc::new(TokioClock),
        }
    }

    /// The default error log, when no other was configured.
    pub fn error_log(&self) -> Option<Arc<RingLog>> {
        self.shared.ring.clone()
    }

    /// Notices held back as repeats so far, over every clone of the layer.
    pub fn suppressed_repeats(&self) -> u64 {
        self.shared.repeats.suppressed()
    }
}

impl Default for ReportLayer {
    fn default() -> Self {
        ReportLayer::new()
    }
}

impl fmt::Debug for ReportLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportLayer")
            .field("default_notice", &self.shared.default_notice)
            .field("repeat_window", &self.shared.repeats.window())
            .field("suppressed_repeats", &self.suppressed_repeats())
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ReportLayer {
    type Service = Report<S>;

    fn layer(&self, inner: S) -> Report<S> {
        Report::new(inner, self.shared.clone())
    }
}

impl ReportLayerBuilder {
    /// Who shows notices (default [`TracingNotifier`]). Any `Fn(&Notice) + Send + Sync` will
    /// do.
    pub fn notifier(mut self, notifier: impl Notifier + 'static) -> Self {
        self.notifier = Box::new(notifier);
        self
    }

    /// Where error records go (default a [`RingLog`] of 200, reachable through
    /// [`ReportLayer::error_log`]). Pass an `Arc` to keep a handle yourself.
    pub fn error_log(mut self, log: impl ErrorLog + 'static) -> Self {
        self.log = Some(Box::new(log));
        self
    }

    /// The notice mode of a request without an [`ErrorNotice`] extension (default
    /// [`ErrorNotice::Message`], vben's default `errorMessageMode`).
    pub fn default_notice(mut self, mode: ErrorNotice) -> Self {
        self.default_notice = mode;
        self
    }

    /// How long an identical notice is held back after it was shown (default 3 s; zero
    /// shows every notice).
    pub fn repeat_window(mut self, window: Duration) -> Self {
        self.repeat_window = window;
        self
    }

    /// Called once for every caller whose call ends `Unauthorized` or `SessionExpired`: log
    /// the user out, open the login page. (`TokenManager::on_session_expired` fires once per
    /// session; this fires per failed caller that reached the top.)
    pub fn on_unauthorized(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.on_unauthorized = Some(Box::new(hook));
        self
    }

    /// The clock measuring durations and repeat windows, and stamping records (default
    /// tokio's and the system's).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The layer.
    pub fn build(self) -> ReportLayer {
        let (log, ring) = match self.log {
            Some(log) => (log, None),
            None => {
                let ring = Arc::new(RingLog::default());
                (Box::new(ring.clone()) as Box<dyn ErrorLog>, Some(ring))
            }
        };
        ReportLayer {
            shared: Arc::new(Shared {
                notifier: self.notifier,
                log,
                ring,
                default_notice: self.default_notice,
                repeats: Repeats::new(self.repeat_window),
                on_unauthorized: self.on_unauthorized,
                clock: self.clock,
            }),
        }
    }
}

impl fmt::Debug for ReportLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportLayerBuilder")
            .field("default_notice", &self.default_notice)
            .field("repeat_window", &self.repeat_window)
            .finish_non_exhaustive()
    }
}

/// What a call keeps to report its outcome.
pub(crate) struct Call {
    shared: Arc<Shared>,
    method: Method,
    // Redacted only when a failure is reported: a success pays for a clone and nothing else.
    uri: Uri,
    notice: ErrorNotice,
    success: Option<SuccessNotice>,
    start: Instant,
}

impl Call {
    pub(crate) fn new<B>(shared: Arc<Shared>, request: &Request<B>) -> Self {
        let extensions = request.extensions();
        Call {
            method: request.method().clone(),
            uri: request.uri().clone(),
            notice: extensions
                .get::<ErrorNotice>()
                .copied()
                .unwrap_or(shared.default_notice),
            success: extensions.get::<SuccessNotice>().cloned(),
            start: shared.clock.now(),
            shared,
        }
    }

    pub(crate) fn succeeded<T>(self, response: &Response<T>) {
        if let Some(SuccessNotice(message)) = self.success {
            self.shared.notifier.notify(&Notice {
                mode: ErrorNotice::Message,
                message,
                status: Some(response.status()),
                kind: None,
                business_code: None,
                success: true,
            });
        }
    }

    pub(crate) fn failed(self, err: &Error) {
        let shared = &*self.shared;
        let now = shared.clock.now();
        // The error's message was masked when it entered the error; it is masked again here
        // so that this layer vouches for what it hands on, whoever built the error.
        let message = server_text(
            err.message()
                .map_or_else(|| phrase(err), str::to_owned)
                .as_str(),
            MAX_TEXT_LEN,
        );
        let record = ErrorRecord {
            method: self.method,
            url: server_text(&xhttp_core::redact::uri(&self.uri), MAX_RECORD_URL_LEN),
            status: err.status(),
            kind: err.kind(),
            business_code: err.business_code().cloned(),
            message,
            attempts: err.attempts(),
            duration: now.saturating_duration_since(self.start),
            time: shared.clock.system_now(),
        };
        tracing::warn!(
            target: "xhttp::report",
            method = %record.method,
            url = %record.url,
            status = record.status.map(|status| status.as_u16()),
            kind = ?record.kind,
            business_code = record.business_code.as_ref().map(tracing::field::display),
            message = %record.message,
            attempts = record.attempts,
            duration = ?record.duration,
            // The whole sentence, then its causes (`Display` prints one level): the error's
            // text prints no secret, and everything is masked once more.
            error = %server_text(&err.to_string(), MAX_TEXT_LEN),
            cause = causes(err).as_deref(),
            "call failed",
        );

        if self.notice != ErrorNotice::None {
            let notice = Notice {
                mode: self.notice,
                message: record.message.clone(),
                status: record.status,
                kind: Some(record.kind),
                business_code: record.business_code.clone(),
                success: false,
            };
            if shared.repeats.admit(&notice, now) {
                shared.notifier.notify(&notice);
            }
        }
        shared.log.record(record);

        if matches!(
            err.kind(),
            ErrorKind::Unauthorized | ErrorKind::SessionExpired
        ) {
            if let Some(hook) = &shared.on_unauthorized {
                hook(err);
            }
        }
    }
}

/// The error's causes, outermost first, masked and joined by `: `; `None` without any.
fn causes(err: &Error) -> Option<String> {
    let mut chain = Vec::new();
    let mut next = std::error::Error::source(err);
    while let Some(cause) = next {
        chain.push(server_text(&cause.to_string(), MAX_TEXT_LEN));
        next = cause.source();
    }
    (!chain.is_empty()).then(|| chain.join(": "))
}

/// What happened, without the parts that change from call to call (the URL, the attempts,
/// the cause), so that a burst of the same failure is one notice: "server answered 503
/// Service Unavailable", "attempt timed out".
fn phrase(err: &Error) -> String {
    let bare = match (err.kind(), err.status(), err.body_limit()) {
        (ErrorKind::Status, Some(status), _) => Error::from_status(status),
        (ErrorKind::BodyTooLarge, _, Some(limit)) => Error::body_too_large(limit),
        (kind, _, _) => Error::new(kind),
    };
    let bare = if err.is_never_sent() {
        bare.with_never_sent()
    } else {
        bare
    };
    bare.to_string()
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn the_phrase_leaves_out_what_changes_between_calls() {
        let request = Request::get("https://a.example/items/7").body(()).unwrap();
        let err = Error::from_status(StatusCode::BAD_GATEWAY)
            .with_request(&request)
            .with_attempts(3)
            .with_source("reset");
        assert_eq!(phrase(&err), "server answered 502 Bad Gateway");
        let err = Error::transport("refused").with_never_sent();
        assert_eq!(
            phrase(&err),
            "connection failed before the request was sent"
        );
        assert_eq!(
            phrase(&Error::timeout(xhttp_core::TimeoutScope::Total)),
            "deadline exceeded"
        );
    }
}
