//! [`Stack`]: every xhttp layer in its canonical order, as one tower [`Layer`] over any HTTP
//! service: a hyper-util client, a tower-http stack, a `tower::service_fn`.
//!
//! The order, outermost first, and why (this is the one place it is written down):
//!
//! | layer | why here |
//! |---|---|
//! | report | sees every outcome a caller gets, followers of a shared trip included, once per caller |
//! | dedupe | one trip for identical calls in flight; below report, above everything that makes trips |
//! | deadline | one budget for the whole call: refresh, retries and backoff all spend it |
//! | refresh | a rejection refreshes the token once for everyone, then replays the request |
//! | retry | resends transient failures; below refresh, so a replay is retried too, and above auth, so each attempt carries the newest token |
//! | status | turns failure statuses into typed errors that retry and refresh classify |
//! | envelope | unwraps `{code, message, result}`; a business code becomes an error below retry |
//! | auth | writes the token per attempt, so a retry after a refresh sends the new one |
//! | attempt timeout | bounds one trip, head and body, within what is left of the deadline |
//! | collect | reads the body under its limit into `Bytes`; everything above sees whole responses |
//!
//! Optional layers that are not set cost nothing (they join through `Either`). When both
//! dedupe and auth are set, dedupe keys every call on the session of auth's token manager,
//! so a trip is never shared across sessions, and it accounts for every per-request option
//! of the layers in the stack (the pass-through and skip markers are keyed; the report's
//! notices are neutral).
//!
//! ```
//! use std::time::Duration;
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::ServiceBuilder;
//! use xhttp::{Stack, retry::RetryPolicy, status::StatusLayer};
//!
//! let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//!     .build_http::<Full<Bytes>>();
//! let stack = Stack::builder()
//!     .retry(RetryPolicy::default())
//!     .status(StatusLayer::new())
//!     .deadline(Duration::from_secs(20))
//!     .build()
//!     .unwrap();
//! let client = ServiceBuilder::new().layer(stack).service(hyper);
//! # drop(client);
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use xhttp_auth::{AuthLayer, SkipAuth};
use xhttp_core::body::RequestBody;
use xhttp_core::{BodyLimit, Error};
use xhttp_dedupe::{DedupeLayer, DedupeLayerBuilder, Identity};
use xhttp_envelope::{Envelope, EnvelopeLayer};
use xhttp_refresh::RefreshLayer;
use xhttp_retry::{DeadlineLayer, RetryLayer, RetryPolicy};
use xhttp_status::{ReportLayer, StatusLayer};

use crate::transport::{from_hyper_util, AttemptTimeoutLayer, CollectLayer, LONGEST_TIMEOUT};

/// The composed stack over a service taking `Request<B>`: a boxed, cloneable, `Send + Sync`
/// tower service answering `Response<Bytes>` or an [`Error`].
pub type BoxStack<B> = BoxCloneSyncService<Request<B>, Response<Bytes>, Error>;

/// The default timeout of one trip: 10 s.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default deadline of one call, retries and refresh included: 30 s.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Every xhttp layer in the canonical order (see the [module docs](self)), as one
/// [`Layer`]. Built by [`Stack::builder`]; cheap to clone; applied to as many services as
/// needed.
///
/// `B` is the request body of the service below (hyper-util's client over
/// `Full<Bytes>`: `Stack<Full<Bytes>>`; the facade's: [`Body`](crate::Body)). What the
/// service below must meet, in one place:
///
/// - it is `Service<Request<B>, Response = Response<ResB>>`, `Clone + Send + Sync +
///   'static`, with a `Send` future;
/// - its error is any `Into<BoxError>`: an `xhttp::Error` passes unchanged, a hyper-util
///   client error becomes a `Transport` error marked never-sent when the connection was
///   never made ([`from_hyper_util`]), any other a `Transport` error;
/// - `ResB` is an `http_body::Body<Data = Bytes>` whose error is `Into<BoxError>`, `Send`;
/// - `B` is a [`RequestBody`] (`Full`, `Empty`, `Bytes`, `String`, `()`, xhttp's `Body`...),
///   `Send + 'static`, so that refresh and retry can send it again and dedupe can key it.
#[derive(Clone)]
#[must_use]
pub struct Stack<B = crate::Body> {
    layers: Layers,
    attempt_timeout: Duration,
    deadline: Duration,
    body_limit: BodyLimit,
    _body: PhantomData<fn(B)>,
}

/// The optional layers of a stack.
#[derive(Clone, Default)]
struct Layers {
    report: Option<ReportLayer>,
    dedupe: Option<DedupeLayer>,
    refresh: Option<RefreshLayer>,
    retry: Option<RetryLayer>,
    status: Option<StatusLayer>,
    envelope: Option<EnvelopeLayer>,
    auth: Option<AuthLayer>,
}

impl<B> fmt::Debug for Stack<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |present: bool, name: &'static str| present.then_some(name);
        let layers: Vec<&str> = [
            set(self.layers.report.is_some(), "report"),
            set(self.layers.dedupe.is_some(), "dedupe"),
            Some("deadline"),
            set(self.layers.refresh.is_some(), "refresh"),
            set(self.layers.retry.is_some(), "retry"),
            set(self.layers.status.is_some(), "status"),
            set(self.layers.envelope.is_some(), "envelope"),
            set(self.layers.auth.is_some(), "auth"),
            Some("attempt timeout"),
            Some("collect"),
        ]
        .into_iter()
        .flatten()
        .collect();
        f.debug_struct("Stack")
            .field("layers", &layers)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

impl<B> Stack<B> {
    /// A builder with no optional layer, the default timeouts (10 s a trip, 30 s a call) and
    /// the default body limit (16 MiB).
    pub fn builder() -> StackBuilder<B> {
        StackBuilder {
            layers: Layers::default(),
            dedupe: None,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            body_limit: BodyLimit::DEFAULT,
            _body: PhantomData,
        }
    }

    /// The dedupe layer of the stack, for its statistics.
    pub fn dedupe(&self) -> Option<&DedupeLayer> {
        self.layers.dedupe.as_ref()
    }
}

impl<S, B, ResB> Layer<S> for Stack<B>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
    B: RequestBody + Send + 'static,
{
    type Service = BoxStack<B>;

    fn layer(&self, inner: S) -> BoxStack<B> {
        let bottom = inner.map_err(|err: S::Error| from_boxed_transport(err.into()));
        let layers = self.layers.clone();
        let service = ServiceBuilder::new()
            .option_layer(layers.report)
            .option_layer(layers.dedupe)
            .layer(DeadlineLayer::new(self.deadline))
            .option_layer(layers.refresh)
            .option_layer(layers.retry)
            .option_layer(layers.status)
            .option_layer(layers.envelope)
            .option_layer(layers.auth)
            .layer(AttemptTimeoutLayer::new(self.attempt_timeout))
            .layer(CollectLayer::with_limit(self.body_limit))
            .service(bottom);
        BoxStack::new(service)
    }
}

/// An error of the service below the stack: an `xhttp::Error` as it is, a hyper-util client
/// error classified by [`from_hyper_util`], any other a `Transport` error.
fn from_boxed_transport(err: BoxError) -> Error {
    match err.downcast::<hyper_util::client::legacy::Error>() {
        Ok(hyper) => from_hyper_util(*hyper),
        Err(other) => Error::from_boxed(other),
    }
}

/// Options of a [`Stack`]: each layer as a layer value, set at most once (a second call
/// replaces the first).
///
/// ```
/// use std::time::Duration;
/// use xhttp::auth::{AuthLayer, OAuth2Refresh, TokenManager};
/// use xhttp::refresh::RefreshLayer;
/// use xhttp::{Origin, Stack};
///
/// let grant = OAuth2Refresh::new(xhttp::grant_transport(), "https://auth.example.com/token")
///     .unwrap();
/// let manager = TokenManager::builder(grant).build();
/// let origin = Origin::parse("https://api.example.com").unwrap();
/// // A backend that wants `access_token: <token>`: the auth layer's own options.
/// let auth = AuthLayer::new(manager.clone(), [origin])
///     .header(http::HeaderName::from_static("access_token"))
///     .scheme("");
/// let stack: Stack = Stack::builder()
///     .auth(auth)
///     .refresh(RefreshLayer::new(manager))
///     .attempt_timeout(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// # drop(stack);
/// ```
#[must_use]
pub struct StackBuilder<B = crate::Body> {
    layers: Layers,
    dedupe: Option<DedupeLayerBuilder>,
    attempt_timeout: Duration,
    deadline: Duration,
    body_limit: BodyLimit,
    _body: PhantomData<fn(B)>,
}

impl<B> fmt::Debug for StackBuilder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBuilder")
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl<B> StackBuilder<B> {
    /// Sends the token of the layer's manager, with the layer's header, scheme and origins.
    pub fn auth(mut self, layer: AuthLayer) -> Self {
        self.layers.auth = Some(layer);
        self
    }

    /// Refreshes and replays on a rejection. Needs [`auth`](Self::auth) in the same stack.
    pub fn refresh(mut self, layer: RefreshLayer) -> Self {
        self.layers.refresh = Some(layer);
        self
    }

    /// Retries transient failures under `policy`.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.layers.retry = Some(RetryLayer::new(policy));
        self
    }

    /// Coalesces identical calls in flight, with these options (the stack adds the session
    /// identity and its layers' per-request options when it builds).
    pub fn dedupe(mut self, options: DedupeLayerBuilder) -> Self {
        self.dedupe = Some(options);
        self
    }

    /// Unwraps business envelopes.
    pub fn envelope(mut self, envelope: Envelope) -> Self {
        self.layers.envelope = Some(EnvelopeLayer::new(envelope));
        self
    }

    /// Turns failure statuses into typed errors.
    pub fn status(mut self, layer: StatusLayer) -> Self {
        self.layers.status = Some(layer);
        self
    }

    /// Reports outcomes (error and success notices, logging, the session-expired hook).
    pub fn report(mut self, layer: ReportLayer) -> Self {
        self.layers.report = Some(layer);
        self
    }

    /// The timeout of one trip, head and body; default 10 s.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The deadline of one call, retries, backoff and refresh included; default 30 s.
    pub fn deadline(mut self, timeout: Duration) -> Self {
        self.deadline = timeout;
        self
    }

    /// The largest response body held in memory; default 16 MiB. A request may set its own
    /// with a [`BodyLimit`] extension.
    pub fn body_limit(mut self, bytes: u64) -> Self {
        self.body_limit = BodyLimit(bytes);
        self
    }

    /// The stack; a zero timeout, one above a year, an attempt timeout above the deadline,
    /// refresh without auth, or impossible dedupe options are a `Config` error.
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = xhttp::Stack::<xhttp::Body>::builder()
    ///     .attempt_timeout(Duration::from_secs(60))
    ///     .deadline(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), xhttp::ErrorKind::Config);
    /// ```
    pub fn build(self) -> Result<Stack<B>, Error> {
        check_timeouts(self.attempt_timeout, self.deadline)?;
        let mut layers = self.layers;
        if layers.refresh.is_some() && layers.auth.is_none() {
            return Err(Error::config(
                "refresh needs auth in the same stack: it replays with the token auth writes",
            ));
        }
        layers.dedupe = self
            .dedupe
            .map(|options| wire_dedupe(options, layers.auth.as_ref()))
            .transpose()?;
        Ok(Stack {
            layers,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
            body_limit: self.body_limit,
            _body: PhantomData,
        })
    }
}

/// The timeout rules of the stack and the facade.
pub(crate) fn check_timeouts(attempt: Duration, deadline: Duration) -> Result<(), Error> {
    if attempt.is_zero() || deadline.is_zero() {
        return Err(Error::config("timeouts must be above zero"));
    }
    if attempt > LONGEST_TIMEOUT || deadline > LONGEST_TIMEOUT {
        return Err(Error::config(
            "the attempt timeout and the deadline must be at most a year",
        ));
    }
    if attempt > deadline {
        return Err(Error::config(format!(
            "the attempt timeout ({attempt:?}) cannot exceed the deadline ({deadline:?})"
        )));
    }
    Ok(())
}

/// Dedupe accounts for the per-request options of every layer: the notices are read by
/// report, above dedupe, per caller; the others change the outcome, and are keyed. With auth,
/// every call is keyed on the session of its token (or as anonymous with `SkipAuth`).
fn wire_dedupe(
    options: DedupeLayerBuilder,
    auth: Option<&AuthLayer>,
) -> Result<DedupeLayer, Error> {
    let options = options
        .neutral_extension::<xhttp_status::ErrorNotice>()
        .neutral_extension::<xhttp_status::SuccessNotice>()
        .key_extension_with(|_: &xhttp_status::SkipStatus| ())
        .key_extension_with(|_: &xhttp_envelope::SkipEnvelope| ())
        .key_extension_with(|_: &SkipAuth| ())
        .key_extension_with(|_: &xhttp_refresh::SkipRefresh| ())
        .key_extension_with(|o: &xhttp_retry::RetryOverride| match o {
            xhttp_retry::RetryOverride::Off => None,
            xhttp_retry::RetryOverride::Retries(n) => Some(*n),
        });
    match auth {
        Some(auth) => {
            let manager = auth.manager().clone();
            let anonymous = Identity("anonymous".into());
            options
                .identity(move |extensions| {
                    Some(match extensions.get::<SkipAuth>() {
                        Some(_) => anonymous.clone(),
                        None => Identity(manager.session_identity()),
                    })
                })
                .build()
        }
        None => options.build(),
    }
}
