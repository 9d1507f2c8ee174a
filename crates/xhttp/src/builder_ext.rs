//! [`ServiceBuilderExt`]: the whole stack, and each layer by name, on tower's
//! `ServiceBuilder`.

use std::time::Duration;

use tower::layer::util::Stack as Layered;
use tower::ServiceBuilder;
use xhttp_auth::AuthLayer;
use xhttp_dedupe::DedupeLayer;
use xhttp_envelope::{Envelope, EnvelopeLayer};
use xhttp_refresh::RefreshLayer;
use xhttp_retry::{DeadlineLayer, RetryLayer, RetryPolicy};
use xhttp_status::{ReportLayer, StatusLayer};

use crate::transport::{AttemptTimeoutLayer, CollectLayer};
use crate::Stack;

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Adds xhttp's layers to a `tower::ServiceBuilder` by name: [`xhttp`](Self::xhttp) for the
/// whole [`Stack`] in its canonical order, or one layer at a time for a stack of one's own
/// order (then the order is the caller's to get right; the [`Stack`] docs say why each layer
/// sits where it does). Implemented for `ServiceBuilder` only.
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use xhttp::{ServiceBuilderExt, Stack};
/// use xhttp::retry::RetryPolicy;
/// use xhttp::status::StatusLayer;
///
/// let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
///     .build_http::<http_body_util::Full<bytes::Bytes>>();
/// // The whole stack:
/// let whole = ServiceBuilder::new()
///     .xhttp(Stack::builder().status(StatusLayer::new()).build().unwrap())
///     .service(hyper.clone());
/// // Or layer by layer (deadline, retry, status, attempt timeout, collect):
/// let by_hand = ServiceBuilder::new()
///     .deadline(Duration::from_secs(20))
///     .retry(RetryPolicy::default())
///     .status(StatusLayer::new())
///     .attempt_timeout(Duration::from_secs(5))
///     .collect()
///     .service(hyper);
/// # drop((whole, by_hand));
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// The whole stack, in its canonical order.
    fn xhttp<B>(self, stack: Stack<B>) -> ServiceBuilder<Layered<Stack<B>, L>>;
    /// Sends the token of the layer's manager.
    fn auth(self, layer: AuthLayer) -> ServiceBuilder<Layered<AuthLayer, L>>;
    /// Refreshes and replays on a rejection (above auth).
    fn refresh(self, layer: RefreshLayer) -> ServiceBuilder<Layered<RefreshLayer, L>>;
    /// Retries transient failures under `policy`.
    fn retry(self, policy: RetryPolicy) -> ServiceBuilder<Layered<RetryLayer, L>>;
    /// Bounds the whole call, retries and refresh included.
    fn deadline(self, timeout: Duration) -> ServiceBuilder<Layered<DeadlineLayer, L>>;
    /// Coalesces identical calls in flight.
    fn dedupe(self, layer: DedupeLayer) -> ServiceBuilder<Layered<DedupeLayer, L>>;
    /// Unwraps business envelopes.
    fn envelope(self, envelope: Envelope) -> ServiceBuilder<Layered<EnvelopeLayer, L>>;
    /// Turns failure statuses into typed errors.
    fn status(self, layer: StatusLayer) -> ServiceBuilder<Layered<StatusLayer, L>>;
    /// Reports outcomes once per caller.
    fn report(self, layer: ReportLayer) -> ServiceBuilder<Layered<ReportLayer, L>>;
    /// Bounds one trip, head and body, within the deadline.
    fn attempt_timeout(self, timeout: Duration) -> ServiceBuilder<Layered<AttemptTimeoutLayer, L>>;
    /// Collects response bodies into `Bytes` under the default limit (16 MiB).
    fn collect(self) -> ServiceBuilder<Layered<CollectLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn xhttp<B>(self, stack: Stack<B>) -> ServiceBuilder<Layered<Stack<B>, L>> {
        self.layer(stack)
    }

    fn auth(self, layer: AuthLayer) -> ServiceBuilder<Layered<AuthLayer, L>> {
        self.layer(layer)
    }

    fn refresh(self, layer: RefreshLayer) -> ServiceBuilder<Layered<RefreshLayer, L>> {
        self.layer(layer)
    }

    fn retry(self, policy: RetryPolicy) -> ServiceBuilder<Layered<RetryLayer, L>> {
        self.layer(RetryLayer::new(policy))
    }

    fn deadline(self, timeout: Duration) -> ServiceBuilder<Layered<DeadlineLayer, L>> {
        self.layer(DeadlineLayer::new(timeout))
    }

    fn dedupe(self, layer: DedupeLayer) -> ServiceBuilder<Layered<DedupeLayer, L>> {
        self.layer(layer)
    }

    fn envelope(self, envelope: Envelope) -> ServiceBuilder<Layered<EnvelopeLayer, L>> {
        self.layer(EnvelopeLayer::new(envelope))
    }

    fn status(self, layer: StatusLayer) -> ServiceBuilder<Layered<StatusLayer, L>> {
        self.layer(layer)
    }

    fn report(self, layer: ReportLayer) -> ServiceBuilder<Layered<ReportLayer, L>> {
        self.layer(layer)
    }

    fn attempt_timeout(self, timeout: Duration) -> ServiceBuilder<Layered<AttemptTimeoutLayer, L>> {
        self.layer(AttemptTimeoutLayer::new(timeout))
    }

    fn collect(self) -> ServiceBuilder<Layered<CollectLayer, L>> {
        self.layer(CollectLayer::new())
    }
}
