//! [`CancelScope`]: cancel a group of pending requests at once.

use tokio_util::sync::CancellationToken;

/// A group of requests that can be cancelled together: put a clone on each request as an
/// extension, call [`cancel`](CancelScope::cancel) when their results are no longer wanted (a
/// route change in an admin UI; a worker shutting down). Pending callers get `Cancelled`; their
/// requests are dropped, which cancels them below.
///
/// The [`Dedupe`](crate::Dedupe) service is what reads the scope: in a stack without
/// [`DedupeLayer`](crate::DedupeLayer) a scope cancels nothing (drop a call's future to cancel
/// it there).
///
/// ```
/// use xhttp_dedupe::CancelScope;
///
/// let page = CancelScope::new();
/// let request = http::Request::get("https://api.example.com/dashboard")
///     .extension(page.clone())
///     .body(())
///     .unwrap();
/// // ... the user navigates away:
/// page.cancel();
/// assert!(page.is_cancelled());
/// # drop(request);
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelScope {
    token: CancellationToken,
}

impl CancelScope {
    /// A new scope.
    pub fn new() -> Self {
        CancelScope::default()
    }

    /// A scope cancelled with this one (and on its own): a page inside an app.
    pub fn child(&self) -> CancelScope {
        CancelScope {
            token: self.token.child_token(),
        }
    }

    /// Cancels every pending request of the scope, and every later one.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Whether the scope was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(crate) async fn cancelled(&self) {
        self.token.cancelled().await;
    }
}
