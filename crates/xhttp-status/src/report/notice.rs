//! Notices: what a person is told about a call, and how repeats are held back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use xhttp_core::{BusinessCode, ErrorKind};

use super::lock;

/// Per-request option: how a failure of this request is shown (vue-vben-admin's
/// `errorMessageMode`). A request without it gets the layer's default
/// ([`ReportLayerBuilder::default_notice`](super::ReportLayerBuilder::default_notice),
/// itself [`ErrorNotice::Message`] unless configured).
///
/// ```
/// use xhttp_status::ErrorNotice;
///
/// // A background poll whose failures nobody should see a toast for.
/// let poll = http::Request::get("https://api.example.com/health")
///     .extension(ErrorNotice::None)
///     .body(())
///     .unwrap();
/// assert_eq!(poll.extensions().get::<ErrorNotice>(), Some(&ErrorNotice::None));
/// assert_eq!(ErrorNotice::default(), ErrorNotice::Message);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorNotice {
    /// Tell nobody; the failure is still logged and recorded.
    None,
    /// A passing message (a toast).
    #[default]
    Message,
    /// A dialog the user must dismiss.
    Modal,
}

/// Per-request option: tell the user this text when the call succeeds (vben's
/// `successMessageMode`, with the text the caller chose).
///
/// ```
/// use xhttp_status::SuccessNotice;
///
/// let save = http::Request::post("https://api.example.com/items")
///     .extension(SuccessNotice::new("Saved"))
///     .body(())
///     .unwrap();
/// # drop(save);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuccessNotice(pub String);

impl SuccessNotice {
    /// A success notice with `text`.
    pub fn new(text: impl Into<String>) -> Self {
        SuccessNotice(text.into())
    }
}

/// What a [`Notifier`] is asked to show.
///
/// The message never carries a credential: it is the error's message (or, without one, what
/// happened: "server answered 503 Service Unavailable") with
/// [`xhttp_core::mask::server_text`] run over it. It leaves out the URL and the attempts,
/// which change from call to call, so that a burst of one failure is one notice.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// How to show it: [`ErrorNotice::Message`] or [`ErrorNotice::Modal`] (never `None`:
    /// such notices are not given). Success notices are always `Message`.
    pub mode: ErrorNotice,
    /// The text to show.
    pub message: String,
    /// The HTTP status, when there was a response.
    pub status: Option<StatusCode>,
    /// What went wrong; `None` for a success notice.
    pub kind: Option<ErrorKind>,
    /// The envelope's failure code, for business errors.
    pub business_code: Option<BusinessCode>,
    /// Whether this is a success notice.
    pub success: bool,
}

/// Shows notices to a person: a toast, a dialog, a console line.
///
/// Any `Fn(&Notice) + Send + Sync` is a notifier. It is called on the task that polled the
/// caller's future, so it should hand the notice over (a channel, a UI queue) rather than
/// block.
///
/// ```
/// use std::sync::mpsc;
/// use std::sync::Mutex;
/// use xhttp_status::{Notice, ReportLayer};
///
/// let (toasts, shown) = mpsc::channel::<String>();
/// let toasts = Mutex::new(toasts);
/// let layer = ReportLayer::builder()
///     .notifier(move |notice: &Notice| {
///         let _ = toasts.lock().unwrap().send(notice.message.clone());
///     })
///     .build();
/// # drop((layer, shown));
/// ```
pub trait Notifier: Send + Sync {
    /// Shows `notice`.
    fn notify(&self, notice: &Notice);
}

impl<F> Notifier for F
where
    F: Fn(&Notice) + Send + Sync,
{
    fn notify(&self, notice: &Notice) {
        self(notice)
    }
}

/// The default notifier: one `tracing` event per notice (`warn` for a failure, `info` for a
/// success) with the message, status and kind, as a node program prints to the console.
///
/// ```
/// use xhttp_status::{ReportLayer, TracingNotifier};
/// let layer = ReportLayer::builder().notifier(TracingNotifier).build();
/// # drop(layer);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingNotifier;

impl Notifier for TracingNotifier {
    fn notify(&self, notice: &Notice) {
        let status = notice.status.map(|status| status.as_u16());
        if notice.success {
            tracing::info!(target: "xhttp::notice", message = %notice.message, status, "success");
        } else {
            tracing::warn!(
                target: "xhttp::notice",
                message = %notice.message,
                status,
                kind = ?notice.kind,
                mode = ?notice.mode,
                "request failed",
            );
        }
    }
}

/// The default repeat window: 3 s. A burst of failures (a dashboard whose ten widgets all get
/// the same 503) shows one toast, as vben keys its messages by status; a failure after the
/// window is news again.
pub const DEFAULT_REPEAT_WINDOW: Duration = Duration::from_secs(3);

/// Distinct notices remembered before expired ones are swept, and the hard bound after which
/// the memory is dropped (at worst one repeat is shown twice).
const SWEEP_AT: usize = 256;
const MAX_REMEMBERED: usize = 4096;

type RepeatKey = (
    ErrorNotice,
    Option<StatusCode>,
    Option<ErrorKind>,
    Option<BusinessCode>,
    String,
);

/// Holds back a notice identical to one shown less than a window ago.
pub(crate) struct Repeats {
    window: Duration,
    shown: Mutex<HashMap<RepeatKey, Instant>>,
    suppressed: AtomicU64,
}

impl Repeats {
    pub(crate) fn new(window: Duration) -> Self {
        Repeats {
            window,
            shown: Mutex::new(HashMap::new()),
            suppressed: AtomicU64::new(0),
        }
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }

    /// Whether `notice` should be shown now; counts it as suppressed if not. The window runs
    /// from the last time the notice was shown, so a steady stream shows once a window.
    pub(crate) fn admit(&self, notice: &Notice, now: Instant) -> bool {
        if self.window.is_zero() {
            return true;
        }
        let key = (
            notice.mode,
            notice.status,
            notice.kind,
            notice.business_code.clone(),
            notice.message.clone(),
        );
        let window = self.window;
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < window;
        let mut shown = lock(&self.shown);
        if shown.get(&key).is_some_and(fresh) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if shown.len() >= SWEEP_AT {
            shown.retain(|_, at| fresh(at));
            if shown.len() >= MAX_REMEMBERED {
                shown.clear();
            }
        }
        shown.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(message: &str) -> Notice {
        Notice {
            mode: ErrorNotice::Message,
            message: message.into(),
            status: Some(StatusCode::BAD_GATEWAY),
            kind: Some(ErrorKind::Status),
            business_code: None,
            success: false,
        }
    }

    #[test]
    fn a_zero_window_admits_everything() {
        let repeats = Repeats::new(Duration::ZERO);
        let now = Instant::now();
        assert!(repeats.admit(&notice("a"), now));
        assert!(repeats.admit(&notice("a"), now));
        assert_eq!(repeats.suppressed(), 0);
    }

    #[test]
    fn different_messages_or_modes_are_different_notices() {
        let repeats = Repeats::new(DEFAULT_REPEAT_WINDOW);
        let now = Instant::now();
        assert!(repeats.admit(&notice("a"), now));
        assert!(repeats.admit(&notice("b"), now));
        let mut modal = notice("a");
        modal.mode = ErrorNotice::Modal;
        assert!(repeats.admit(&modal, now));
        assert!(!repeats.admit(&notice("a"), now));
        assert_eq!(repeats.suppressed(), 1);
    }

    #[test]
    fn memory_stays_bounded() {
        let repeats = Repeats::new(Duration::from_secs(3600));
        let now = Instant::now();
        for i in 0..(MAX_REMEMBERED + 10) {
            assert!(repeats.admit(&notice(&i.to_string()), now));
        }
        assert!(lock(&repeats.shown).len() <= MAX_REMEMBERED);
    }
}
