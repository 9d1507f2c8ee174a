//! Duplicate requests, handled on purpose.
//!
//! Admin front ends ignore duplicate requests; vue-vben-admin cancels the older of two
//! duplicates but keys on method and URL without the query, so different searches cancel
//! each other (#167), and its pending map is never cleared on error. [`DedupeLayer`] keys on
//! identity, compares keys by value, and cleans up on every outcome.
//!
//! Three policies ([`DedupePolicy`]), chosen per method and overridable per request
//! ([`DedupeOverride`]):
//!
//! - **`Coalesce`** (default for GET and HEAD): identical concurrent calls share one trip
//!   through the layers below. The trip runs as its own task while any caller still waits and
//!   is cancelled when every caller has gone; each caller gets its own `Response` (the body
//!   bytes shared by reference count) or a clone of the error. Nothing is kept after the trip
//!   ends unless a success window is configured. A follower waits at most the
//!   [lock timeout](DedupeLayerBuilder::lock_timeout) (1 s by default, nginx's
//!   `proxy_cache_lock_timeout` in spirit), then sends its own request, uncoalesced, so a
//!   hung trip does not stall every caller behind it.
//! - **`CancelPrevious`** (search-as-you-type): a new identical request wins; the older caller
//!   gets `Superseded` and its request is cancelled.
//! - **`RejectDuplicate`** (a form submitted twice): a new identical request gets `Duplicate` at
//!   once; the first proceeds.
//!
//! # The key
//!
//! Two requests are the same request when their keys are equal, compared by value (the hash,
//! SipHash with the layer's random keys, is only the map's shortcut). The key holds:
//!
//! - the method and the full URI, query included;
//! - the body bytes ([`RequestBody::body_key`]), up to a cap (64 KiB by default); a larger,
//!   streaming or boxed body has no key, and its request is sent on its own;
//! - **every request header, by value**, except the few that never change a response
//!   ([`DEFAULT_IGNORED_HEADERS`]: request ids and trace context such as `traceparent`,
//!   `x-request-id`, `b3`), to which a layer may add names of its own
//!   ([`ignore_header`](DedupeLayerBuilder::ignore_header)). The order of header *names* does
//!   not matter; the order of several values of one name does. Credential headers
//!   ([`CREDENTIAL_HEADERS`]: `Authorization`, `Proxy-Authorization`, `Cookie`, `X-Api-Key`,
//!   ...) and any value marked sensitive can never be ignored: the builder refuses them;
//! - the caller's [`Identity`]: the request's own, or the one the layer names from the
//!   request's extensions ([`identity`](DedupeLayerBuilder::identity)). The facade names the
//!   token manager's session there, because its auth layer sits below dedupe and the header it
//!   writes is not on the request yet. Two identities never share a response;
//! - the per-request options that change the outcome: [`xhttp_core::BodyLimit`], and every
//!   extension declared with [`key_extension`](DedupeLayerBuilder::key_extension) (the facade
//!   keys `StatusPassthrough`, `RawResponse`, `SkipAuth`, `SkipRefresh` and `RetryOverride`,
//!   and declares the report layer's `ErrorNotice` and `SuccessNotice` neutral).
//!
//! **Extensions.** A request extension can change what a layer below does with the request,
//! and this layer cannot know what an extension type it has never heard of means. So a
//! request is deduplicated only if *every* extension it carries is accounted for: its own
//! ([`Identity`], [`DedupeOverride`], [`CancelScope`]), core's ([`xhttp_core::BodyLimit`],
//! keyed; [`xhttp_core::Deadline`], neutral: a follower stops waiting at its own deadline,
//! while the shared trip runs under its leader's, a timeout included), and
//! those declared on the builder, keyed ([`key_extension`](DedupeLayerBuilder::key_extension))
//! or neutral ([`neutral_extension`](DedupeLayerBuilder::neutral_extension)). A request with
//! any other extension is never coalesced: it is sent on its own and counted in
//! [`DedupeStats::bypassed`]. (`CancelPrevious` and `RejectDuplicate` share no response, so
//! they key such a request as if the unknown extension were not there.)
//!
//! The map is bounded (10,000 keys by default): past the bound new keys pass through
//! undeduplicated.
//!
//! [`CancelScope`] cancels every pending request started under it (vben's `removeAllPending`
//! on a route change); those callers get `Cancelled`.
//!
//! # Requirements
//!
//! [`Dedupe<S, T>`](Dedupe) serves `Request<B>` when:
//!
//! - **request body** `B: RequestBody + Send + 'static` ([`RequestBody`]): the key reads
//!   [`body_key`](RequestBody::body_key) without consuming the body. xhttp's `Body`,
//!   `http_body_util::Full` (the usual hyper client body) and `Empty`, `Bytes`, `String` and
//!   `()` are keyed by their bytes; a boxed or streaming body has none, so its request is
//!   never coalesced.
//! - **response body** `T: Clone + Send + Sync + 'static` (default `Bytes`: collect the body
//!   below this layer): each coalesced caller gets a clone of the one shared outcome, which
//!   they all read, hence `Sync`.
//! - **inner service** `S: Service<Request<B>, Response = Response<T>> + Clone + Send +
//!   'static`, `S::Future: Send + 'static`; not `Sync`. A follower that gives up on a shared
//!   trip sends its own request through a clone.
//! - **inner error** `S::Error: Into<tower::BoxError>`; it becomes an [`Error`] by
//!   [`Error::from_boxed`], which hands an xhttp error back as it was. The layer's own error
//!   is `xhttp_core::Error`; its future ([`ResponseFuture`]) is `Send`.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, Layer, ServiceExt};
//! use xhttp_dedupe::DedupeLayer;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counter = calls.clone();
//! let upstream = service_fn(move |_: http::Request<Full<Bytes>>| {
//!     counter.fetch_add(1, Ordering::SeqCst);
//!     async {
//!         tokio::task::yield_now().await;
//!         // Any error type that converts into `tower::BoxError` will do.
//!         Ok::<_, std::io::Error>(http::Response::new(Bytes::from_static(b"item")))
//!     }
//! });
//! let service = DedupeLayer::new().layer(upstream);
//! let get = || http::Request::get("https://api.example.com/items/7").body(Full::default()).unwrap();
//! let (a, b) = tokio::join!(service.clone().oneshot(get()), service.clone().oneshot(get()));
//! assert_eq!(a.unwrap().body(), b.unwrap().body());
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! # });
//! ```
#![deny(unsafe_code)]

mod key;
mod scope;

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{HeaderName, Method, Request, Response};
use key::{ExtensionRule, KeyRules, NoKey};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{BoxError, Layer, Service};
use xhttp_core::body::RequestBody;
use xhttp_core::{Error, ErrorKind};

pub use key::{Identity, CREDENTIAL_HEADERS, DEFAULT_IGNORED_HEADERS};
pub use scope::CancelScope;
pub use xhttp_core::body::BodyKey;

use key::{IdentityFn, Key, KeyMap};

/// What to do with a request identical to one in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupePolicy {
    /// Share the in-flight trip's outcome.
    Coalesce,
    /// Cancel the older request; its caller gets `Superseded`.
    CancelPrevious,
    /// Refuse the newer request with `Duplicate`.
    RejectDuplicate,
    /// No deduplication.
    Off,
}

/// Per-request option: this request's policy, whatever its method.
///
/// ```
/// use xhttp_dedupe::{DedupeOverride, DedupePolicy};
/// let search = http::Request::get("https://api.example.com/search?q=ru")
///     .extension(DedupeOverride(DedupePolicy::CancelPrevious))
///     .body(())
///     .unwrap();
/// # drop(search);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupeOverride(pub DedupePolicy);

/// What the layer has done so far, summed over all its clones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupeStats {
    /// Calls that shared another caller's trip instead of making their own.
    pub coalesced: u64,
    /// Calls answered from the success window.
    pub windowed: u64,
    /// Older calls cancelled by a newer identical one.
    pub superseded: u64,
    /// Calls refused as duplicates.
    pub rejected: u64,
    /// Calls cancelled by their cancel scope.
    pub cancelled: u64,
    /// Calls passed through because the map was full.
    pub overflowed: u64,
    /// Calls sent on their own although their policy would deduplicate them, because they
    /// have no key: a streaming body, a body over the cap, or (when coalescing) a request
    /// extension the layer does not account for (see the [crate docs](crate#the-key)).
    pub bypassed: u64,
    /// Followers that waited the [lock timeout](DedupeLayerBuilder::lock_timeout) for a
    /// shared trip, then sent a request of their own.
    pub lock_timeouts: u64,
}

#[derive(Default)]
struct Counters {
    coalesced: AtomicU64,
    windowed: AtomicU64,
    superseded: AtomicU64,
    rejected: AtomicU64,
    cancelled: AtomicU64,
    overflowed: AtomicU64,
    bypassed: AtomicU64,
    lock_timeouts: AtomicU64,
}

/// Deduplicates identical requests; see the [crate docs](crate). Generic over the response
/// body `T`, which coalesced callers share by `Clone` (`Bytes`: a reference count).
pub struct DedupeLayer<T = Bytes> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    get_head: DedupePolicy,
    other: DedupePolicy,
    rules: KeyRules,
    max_entries: usize,
    window: Option<Duration>,
    lock_timeout: Duration,
    identity: Option<Arc<IdentityFn>>,
    map: Mutex<KeyMap<Entry<T>>>,
    /// Successes kept by the window, oldest first (the window is fixed, so expiry order is
    /// insertion order): swept on every coalesced call, so kept responses never outlive their
    /// window by more than one call. Locked after `map`, never before.
    kept: Mutex<std::collections::VecDeque<(Instant, Key, u64)>>,
    random: std::hash::RandomState,
    next_id: AtomicU64,
    counters: Counters,
}

enum Entry<T> {
    /// A coalesced trip in flight. Everything about it lives here, changed only with the map
    /// locked: no allocation beyond the map slot unless someone joins.
    Trip {
        id: u64,
        /// Callers waiting for it, the leader included.
        waiters: usize,
        /// Created by the first follower; the leader sends the outcome through it.
        outcome: Option<watch::Sender<Option<Outcome<T>>>>,
        /// The task that drives the trip after its leader left, if it did.
        task: Option<tokio::task::AbortHandle>,
    },
    /// A finished success, served until `until` (the optional window).
    Done {
        id: u64,
        response: Response<T>,
        until: Instant,
    },
    /// One caller owns the key (cancel-previous and reject-duplicate).
    Exclusive { id: u64, cancel: CancellationToken },
}

impl<T> Entry<T> {
    fn id(&self) -> u64 {
        match self {
            Entry::Trip { id, .. } | Entry::Done { id, .. } | Entry::Exclusive { id, .. } => *id,
        }
    }
}

type Outcome<T> = Result<Response<T>, Error>;

fn lock<M>(mutex: &Mutex<M>) -> MutexGuard<'_, M> {
    // Every critical section is a handful of map operations that cannot panic halfway.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl<T> Clone for DedupeLayer<T> {
    fn clone(&self) -> Self {
        DedupeLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for DedupeLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = &self.shared.rules;
        f.debug_struct("DedupeLayer")
            .field("get_head", &self.shared.get_head)
            .field("other", &self.shared.other)
            .field("ignored_headers", &rules.ignored)
            .field("extensions", &ExtensionNames(&rules.extensions))
            .field("body_cap", &rules.body_cap)
            .field("max_entries", &self.shared.max_entries)
            .field("window", &self.shared.window)
            .field("lock_timeout", &self.shared.lock_timeout)
            .finish()
    }
}

impl<T> Default for DedupeLayer<T> {
    fn default() -> Self {
        DedupeLayer::new()
    }
}

/// The longest success window: a window covers the burst of identical calls one page load or
/// one fan-out makes; anything longer is a cache, which belongs to an HTTP cache that honours
/// `Cache-Control`. It also keeps `Instant + window` far from overflowing.
///
/// ```
/// assert_eq!(xhttp_dedupe::MAX_SUCCESS_WINDOW, std::time::Duration::from_secs(3600));
/// ```
pub const MAX_SUCCESS_WINDOW: Duration = Duration::from_secs(3600);

/// How long a follower waits for a shared trip by default before it sends its own request:
/// 1 s.
///
/// nginx's `proxy_cache_lock_timeout` (5 s) is the anchor, but a cache lock guards a miss
/// that fills a cache for everyone, while an API call is answered in tens to hundreds of
/// milliseconds. A trip that has not answered in 1 s is most likely stuck (a dead
/// connection, a lost packet), and 1 s is a tenth of the default attempt timeout (10 s), so a
/// follower behind a hung trip loses a tenth of what its leader loses instead of all of it;
/// a call that is merely slow under 1 s still coalesces, so a burst of identical calls does
/// not multiply the load. Followers that give up send their own request, uncoalesced.
///
/// ```
/// assert_eq!(xhttp_dedupe::DEFAULT_LOCK_TIMEOUT, std::time::Duration::from_secs(1));
/// ```
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// Options of a [`DedupeLayer`]. Every option is checked by [`build`](Self::build), which
/// returns the first mistake as an `ErrorKind::Config` error.
///
/// ```
/// use std::time::Duration;
/// use xhttp_dedupe::{DedupeLayer, DedupePolicy};
///
/// #[derive(Clone, PartialEq, Eq, Hash)]
/// struct Region(&'static str); // a per-request option of one of your layers
///
/// let layer: DedupeLayer = DedupeLayer::builder()
///     .other_methods(DedupePolicy::RejectDuplicate) // a double-submitted form gets Duplicate
///     .ignore_header(http::HeaderName::from_static("x-client-sent-at"))
///     .key_extension::<Region>()
///     .success_window(Duration::from_millis(200))
///     .build()?;
/// # drop(layer);
/// # Ok::<(), xhttp_core::Error>(())
/// ```
#[derive(Clone)]
pub struct DedupeLayerBuilder {
    get_head: DedupePolicy,
    other: DedupePolicy,
    rules: KeyRules,
    max_entries: usize,
    window: Option<Duration>,
    lock_timeout: Duration,
    identity: Option<Arc<IdentityFn>>,
    /// The first mistake, returned by `build`.
    error: Option<Error>,
}

/// Prints the declared extension types by name.
struct ExtensionNames<'a>(&'a [ExtensionRule]);

impl fmt::Debug for ExtensionNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|rule| {
                let kind = match rule.kind {
                    key::RuleKind::Neutral(_) => "neutral",
                    key::RuleKind::Keyed(_) => "keyed",
                };
                (rule.type_name, kind)
            }))
            .finish()
    }
}

impl fmt::Debug for DedupeLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupeLayerBuilder")
            .field("get_head", &self.get_head)
            .field("other", &self.other)
            .field("ignored_headers", &self.rules.ignored)
            .field("extensions", &ExtensionNames(&self.rules.extensions))
            .field("body_cap", &self.rules.body_cap)
            .field("max_entries", &self.max_entries)
            .field("window", &self.window)
            .field("lock_timeout", &self.lock_timeout)
            .field("identity", &self.identity.is_some())
            .field("error", &self.error)
            .finish()
    }
}

impl DedupeLayerBuilder {
    /// Names the caller of a request that carries no [`Identity`] of its own, from its
    /// extensions: requests of different callers never share a response. The facade names
    /// the token manager's session here (and `SkipAuth` requests as anonymous), because its
    /// auth layer sits below dedupe and `Authorization` is not on the request yet.
    ///
    /// ```
    /// use xhttp_dedupe::{DedupeLayer, Identity};
    /// let layer: DedupeLayer = DedupeLayer::builder()
    ///     .identity(|_extensions| Some(Identity("service-account".into())))
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn identity(
        mut self,
        name: impl Fn(&http::Extensions) -> Option<Identity> + Send + Sync + 'static,
    ) -> Self {
        self.identity = Some(Arc::new(name));
        self
    }

    /// The policy for GET and HEAD (default `Coalesce`).
    ///
    /// ```
    /// use xhttp_dedupe::{DedupeLayer, DedupePolicy};
    /// let layer: DedupeLayer = DedupeLayer::builder()
    ///     .safe_methods(DedupePolicy::CancelPrevious)
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn safe_methods(mut self, policy: DedupePolicy) -> Self {
        self.get_head = policy;
        self
    }

    /// The policy for every other method (default `Off`: a POST is never coalesced, its side
    /// effect belongs to its caller).
    ///
    /// ```
    /// use xhttp_dedupe::{DedupeLayer, DedupePolicy};
    /// let layer: DedupeLayer = DedupeLayer::builder()
    ///     .other_methods(DedupePolicy::RejectDuplicate)
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn other_methods(mut self, policy: DedupePolicy) -> Self {
        self.other = policy;
        self
    }

    /// Leaves `name` out of the key: a header that differs from call to call without changing
    /// the response (a client timestamp, a request id of your own). Added to
    /// [`DEFAULT_IGNORED_HEADERS`]. A credential header ([`CREDENTIAL_HEADERS`]) cannot be
    /// ignored: [`build`](Self::build) fails with `ErrorKind::Config`.
    ///
    /// ```
    /// use http::HeaderName;
    /// use xhttp_dedupe::DedupeLayer;
    ///
    /// let layer = DedupeLayer::builder()
    ///     .ignore_header(HeaderName::from_static("x-client-sent-at"))
    ///     .build::<bytes::Bytes>();
    /// assert!(layer.is_ok());
    ///
    /// let refused = DedupeLayer::builder()
    ///     .ignore_header(HeaderName::from_static("x-api-key"))
    ///     .build::<bytes::Bytes>();
    /// assert_eq!(refused.unwrap_err().kind(), xhttp_core::ErrorKind::Config);
    /// ```
    pub fn ignore_header(mut self, name: HeaderName) -> Self {
        if CREDENTIAL_HEADERS.contains(&name.as_str()) {
            self.fail(Error::config(format!(
                "the `{name}` header carries credentials and is always part of the dedupe key; \
                 it cannot be ignored"
            )));
        } else if !self.rules.ignored.contains(&name) {
            self.rules.ignored.push(name);
        }
        self
    }

    /// Keeps `name` in the key. Every header is in the key already unless ignored, so this
    /// only matters for a name on the ignore list: a trace header your upstream does answer
    /// by, say.
    ///
    /// ```
    /// use xhttp_dedupe::DedupeLayer;
    /// let layer: DedupeLayer = DedupeLayer::builder()
    ///     .key_header(http::HeaderName::from_static("x-request-id"))
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn key_header(mut self, name: HeaderName) -> Self {
        self.rules.ignored.retain(|ignored| *ignored != name);
        self
    }

    /// Declares the request extension type `T` neutral: it never changes a response (a
    /// per-caller notice read above this layer, a label for logs), so requests carrying it
    /// still coalesce, whatever its value. Without a declaration, a request with an extension
    /// the layer does not know is never coalesced.
    ///
    /// ```
    /// use xhttp_dedupe::DedupeLayer;
    ///
    /// #[derive(Clone)]
    /// struct LogLabel(&'static str);
    ///
    /// let layer: DedupeLayer = DedupeLayer::builder()
    ///     .neutral_extension::<LogLabel>()
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn neutral_extension<T: Send + Sync + 'static>(self) -> Self {
        self.declare(ExtensionRule::neutral::<T>())
    }

    /// Declares the request extension type `T` part of the key by value: requests carrying
    /// equal values (or none) may share a trip; different values never do.
    ///
    /// ```
    /// use xhttp_dedupe::DedupeLayer;
    ///
    /// #[derive(Clone, PartialEq, Eq, Hash)]
    /// struct Region(&'static str);
    ///
    /// let layer: DedupeLayer = DedupeLayer::builder()
    ///     .key_extension::<Region>()
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn key_extension<T>(self) -> Self
    where
        T: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
    {
        self.declare(ExtensionRule::keyed(|value: &T| value.clone()))
    }

    /// Declares the request extension type `T` part of the key through `project`: what of it
    /// changes the response. A marker type without `Hash` is keyed on its presence with
    /// `|_: &T| ()`.
    ///
    /// ```
    /// use xhttp_dedupe::DedupeLayer;
    ///
    /// #[derive(Clone)]
    /// struct Passthrough; // a marker of one of your layers, without `Hash`
    ///
    /// let layer: DedupeLayer = DedupeLayer::builder()
    ///     .key_extension_with(|_: &Passthrough| ())
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn key_extension_with<T, K>(self, project: impl Fn(&T) -> K + Send + Sync + 'static) -> Self
    where
        T: Send + Sync + 'static,
        K: Eq + std::hash::Hash + Send + Sync + 'static,
    {
        self.declare(ExtensionRule::keyed(project))
    }

    /// Records `rule`, replacing an earlier declaration of its type; the layer's own types
    /// cannot be redeclared.
    fn declare(mut self, rule: ExtensionRule) -> Self {
        if key::is_built_in(rule.type_id) {
            self.fail(Error::config(format!(
                "`{}` is accounted for by the dedupe layer itself and cannot be redeclared",
                rule.type_name
            )));
            return self;
        }
        let rules = &mut self.rules.extensions;
        match rules.iter_mut().find(|held| held.type_id == rule.type_id) {
            Some(held) => *held = rule,
            None => rules.push(rule),
        }
        self
    }

    fn fail(&mut self, error: Error) {
        self.error.get_or_insert(error);
    }

    /// The largest body that takes part in the key (default 64 KiB); larger bodies are never
    /// deduplicated.
    ///
    /// ```
    /// let layer: xhttp_dedupe::DedupeLayer =
    ///     xhttp_dedupe::DedupeLayer::builder().body_cap(4096).build()?;
    /// # drop(layer);
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn body_cap(mut self, bytes: usize) -> Self {
        self.rules.body_cap = bytes;
        self
    }

    /// The most keys held at once (default 10,000); past it, new keys pass through.
    ///
    /// ```
    /// let layer: xhttp_dedupe::DedupeLayer =
    ///     xhttp_dedupe::DedupeLayer::builder().max_entries(100).build()?;
    /// # drop(layer);
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn max_entries(mut self, entries: usize) -> Self {
        self.max_entries = entries;
        self
    }

    /// Keep a finished success for identical coalesced requests that arrive within `window`
    /// (off by default: a response is shared only while its trip runs). Zero keeps nothing;
    /// over [`MAX_SUCCESS_WINDOW`] (one hour) [`build`](Self::build) fails with
    /// `ErrorKind::Config`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xhttp_dedupe::DedupeLayer;
    ///
    /// assert!(DedupeLayer::builder().success_window(Duration::from_millis(200)).build::<bytes::Bytes>().is_ok());
    /// let err = DedupeLayer::builder().success_window(Duration::MAX).build::<bytes::Bytes>().unwrap_err();
    /// assert_eq!(err.kind(), xhttp_core::ErrorKind::Config);
    /// ```
    pub fn success_window(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }

    /// How long a follower waits for the shared trip it joined before it gives up and sends
    /// its own request, uncoalesced, through the layers below (default
    /// [`DEFAULT_LOCK_TIMEOUT`], 1 s; nginx's `proxy_cache_lock_timeout`). The shared trip
    /// goes on for whoever still waits. Followers that give up are counted in
    /// [`DedupeStats::lock_timeouts`]. A follower's own [`xhttp_core::Deadline`] still bounds
    /// its whole call, the wait and its own request.
    ///
    /// Zero sends every follower's own request at once (no coalescing). A limit too long
    /// for the clock (`Duration::MAX`) never panics: the follower then waits for as long as
    /// the trip runs.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xhttp_dedupe::DedupeLayer;
    ///
    /// let layer: DedupeLayer = DedupeLayer::builder()
    ///     .lock_timeout(Duration::from_millis(250))
    ///     .build()?;
    /// # drop(layer);
    /// assert!(DedupeLayer::builder().lock_timeout(Duration::MAX).build::<bytes::Bytes>().is_ok());
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn lock_timeout(mut self, limit: Duration) -> Self {
        self.lock_timeout = limit;
        self
    }

    /// Checks the options and builds the layer; every service it makes shares one map. The
    /// first mistake (an ignored credential header, a redeclared built-in extension, a
    /// window over [`MAX_SUCCESS_WINDOW`]) is an `ErrorKind::Config` error.
    ///
    /// ```
    /// let layer: xhttp_dedupe::DedupeLayer = xhttp_dedupe::DedupeLayer::builder().build()?;
    /// # drop(layer);
    /// # Ok::<(), xhttp_core::Error>(())
    /// ```
    pub fn build<T>(self) -> Result<DedupeLayer<T>, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if let Some(window) = self.window.filter(|window| *window > MAX_SUCCESS_WINDOW) {
            return Err(Error::config(format!(
                "the dedupe success window ({window:?}) is over the most allowed ({MAX_SUCCESS_WINDOW:?}); \
                 keeping responses longer is a cache's job"
            )));
        }
        Ok(self.build_checked())
    }

    /// Builds from options known to be valid (the defaults, or checked by `build`).
    fn build_checked<T>(self) -> DedupeLayer<T> {
        DedupeLayer {
            shared: Arc::new(Shared {
                get_head: self.get_head,
                other: self.other,
                rules: self.rules,
                max_entries: self.max_entries,
                window: self.window.filter(|window| !window.is_zero()),
                lock_timeout: self.lock_timeout,
                identity: self.identity,
                map: Mutex::new(KeyMap::default()),
                kept: Mutex::new(std::collections::VecDeque::new()),
                random: std::hash::RandomState::new(),
                next_id: AtomicU64::new(1),
                counters: Counters::default(),
            }),
        }
    }
}

impl Default for DedupeLayerBuilder {
    fn default() -> Self {
        DedupeLayerBuilder {
            get_head: DedupePolicy::Coalesce,
            other: DedupePolicy::Off,
            rules: KeyRules::default(),
            max_entries: 10_000,
            window: None,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            identity: None,
            error: None,
        }
    }
}

impl DedupeLayer {
    /// Options for a layer (of `Bytes` responses; `DedupeLayerBuilder::default()` for others).
    pub fn builder() -> DedupeLayerBuilder {
        DedupeLayerBuilder::default()
    }
}

impl<T> DedupeLayer<T> {
    /// The defaults: coalesce GET and HEAD, leave other methods alone.
    pub fn new() -> Self {
        DedupeLayerBuilder::default().build_checked()
    }

    /// What the layer has done so far.
    pub fn stats(&self) -> DedupeStats {
        let c = &self.shared.counters;
        DedupeStats {
            coalesced: c.coalesced.load(Ordering::Relaxed),
            windowed: c.windowed.load(Ordering::Relaxed),
            superseded: c.superseded.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            overflowed: c.overflowed.load(Ordering::Relaxed),
            bypassed: c.bypassed.load(Ordering::Relaxed),
            lock_timeouts: c.lock_timeouts.load(Ordering::Relaxed),
        }
    }

    /// Keys held now (in flight, or kept by the success window). Zero when idle without a
    /// window: every outcome removes its entry.
    pub fn len(&self) -> usize {
        lock(&self.shared.map).len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S, T> Layer<S> for DedupeLayer<T> {
    type Service = Dedupe<S, T>;

    fn layer(&self, inner: S) -> Dedupe<S, T> {
        Dedupe {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`DedupeLayer`].
pub struct Dedupe<S, T = Bytes> {
    inner: S,
    shared: Arc<Shared<T>>,
}

impl<S: Clone, T> Clone for Dedupe<S, T> {
    fn clone(&self) -> Self {
        Dedupe {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for Dedupe<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedupe")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, T> Dedupe<S, T> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The response future of [`Dedupe`].
pub type ResponseFuture<T> = BoxFuture<'static, Result<Response<T>, Error>>;

impl<S, B, T> Service<Request<B>> for Dedupe<S, T>
where
    S: Service<Request<B>, Response = Response<T>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: RequestBody + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    type Response = Response<T>;
    type Error = Error;
    type Future = ResponseFuture<T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let scope = request.extensions().get::<CancelScope>().cloned();
        let policy = match request.extensions().get::<DedupeOverride>() {
            Some(DedupeOverride(policy)) => *policy,
            None if matches!(*request.method(), Method::GET | Method::HEAD) => self.shared.get_head,
            None => self.shared.other,
        };
        let key = match policy {
            DedupePolicy::Off => None,
            _ => match Key::of(
                &request,
                &self.shared.rules,
                self.shared.identity.as_deref(),
                &self.shared.random,
                policy == DedupePolicy::Coalesce,
            ) {
                Ok(key) => Some(key),
                Err(NoKey::Body | NoKey::UnknownExtension) => {
                    self.shared
                        .counters
                        .bypassed
                        .fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
        };
        // The inner service is ready (poll_ready); it is called right here when a trip starts,
        // and not at all when the caller joins another's trip or is refused.
        let inner = &mut self.inner;
        let future = match key {
            None => direct(inner, request),
            Some(key) => match policy {
                DedupePolicy::Coalesce => self.shared.coalesce(inner, request, key),
                DedupePolicy::CancelPrevious => self.shared.exclusive(inner, request, key, true),
                DedupePolicy::RejectDuplicate => self.shared.exclusive(inner, request, key, false),
                DedupePolicy::Off => direct(inner, request),
            },
        };
        match scope {
            None => future,
            Some(scope) => {
                let shared = self.shared.clone();
                Box::pin(async move {
                    tokio::select! {
                        biased;
                        () = scope.cancelled() => {
                            shared.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                            Err(Error::new(ErrorKind::Cancelled).with_message("the request's cancel scope was cancelled"))
                        }
                        result = future => result,
                    }
                })
            }
        }
    }
}

fn direct<S, B, T>(inner: &mut S, request: Request<B>) -> ResponseFuture<T>
where
    S: Service<Request<B>, Response = Response<T>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let future = inner.call(request);
    Box::pin(async move { future.await.map_err(|e| Error::from_boxed(e.into())) })
}

impl<T> Shared<T>
where
    T: Clone + Send + Sync + 'static,
{
    fn coalesce<S, B>(
        self: &Arc<Self>,
        inner: &mut S,
        request: Request<B>,
        key: Key,
    ) -> ResponseFuture<T>
    where
        S: Service<Request<B>, Response = Response<T>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        let mut map = lock(&self.map);
        self.sweep(&mut map);
        match map.get_mut(&key) {
            Some(Entry::Done {
                response, until, ..
            }) if *until > Instant::now() => {
                self.counters.windowed.fetch_add(1, Ordering::Relaxed);
                let response = response.clone();
                return Box::pin(std::future::ready(Ok(response)));
            }
            Some(Entry::Done { .. }) => {
                map.remove(&key);
            }
            Some(Entry::Trip {
                id,
                waiters,
                outcome,
                ..
            }) => {
                *waiters += 1;
                let receiver = outcome
                    .get_or_insert_with(|| watch::channel(None).0)
                    .subscribe();
                let interest = Interest {
                    shared: self.clone(),
                    key,
                    id: *id,
                };
                drop(map);
                self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                // A clone, not the polled service: the follower calls it only if it gives up,
                // and polls it ready then. Moving the polled service in (tower's
                // clone-and-replace) would hold its readiness, a concurrency permit say, for
                // the whole wait.
                let own = Own {
                    service: inner.clone(),
                    request,
                };
                return Box::pin(interest.follow(receiver, self.lock_timeout, own));
            }
            // Another policy owns this key (a per-request override): stay out of its way.
            Some(Entry::Exclusive { .. }) => {
                drop(map);
                return direct(inner, request);
            }
            None => {}
        }
        if self.full(&mut map) {
            drop(map);
            self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
            return direct(inner, request);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        map.insert(
            key.clone(),
            Entry::Trip {
                id,
                waiters: 1,
                outcome: None,
                task: None,
            },
        );
        drop(map);
        // The leader drives the trip in its own future: no task unless it leaves early while
        // others wait (see `Lead`'s `Drop`). A panic below becomes `Internal` for everyone.
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request)));
        let future: BoxFuture<'static, Outcome<T>> = match called {
            Ok(future) => Box::pin(AssertUnwindSafe(future).catch_unwind().map(
                |result| match result {
                    Ok(result) => result.map_err(|e| Error::from_boxed(e.into())),
                    Err(_panic) => Err(
                        Error::new(ErrorKind::Internal).with_message("the shared request panicked"),
                    ),
                },
            )),
            Err(_panic) => Box::pin(std::future::ready(Err(
                Error::new(ErrorKind::Internal).with_message("the shared request panicked")
            ))),
        };
        Box::pin(Lead {
            shared: self.clone(),
            key: Some(key),
            id,
            future: Some(future),
        })
    }

    /// Whether the map holds `max_entries` keys, not counting successes whose window has
    /// ended: those are otherwise removed only when their own key comes again, and would fill
    /// the bound and turn deduplication off for every new key.
    /// Drops the window's expired successes, oldest first.
    fn sweep(&self, map: &mut KeyMap<Entry<T>>) {
        if self.window.is_none() {
            return;
        }
        let now = Instant::now();
        let mut kept = lock(&self.kept);
        while kept.front().is_some_and(|(until, _, _)| *until <= now) {
            let Some((_, key, id)) = kept.pop_front() else {
                break;
            };
            if matches!(map.get(&key), Some(Entry::Done { id: held, .. }) if *held == id) {
                map.remove(&key);
            }
        }
    }

    fn full(&self, map: &mut KeyMap<Entry<T>>) -> bool {
        if map.len() >= self.max_entries && self.window.is_some() {
            let now = Instant::now();
            map.retain(|_, entry| !matches!(entry, Entry::Done { until, .. } if *until <= now));
        }
        map.len() >= self.max_entries
    }

    /// A trip is over: its entry goes (or, for a success with a window, stays until the window
    /// ends; errors are never kept), and the outcome goes to whoever joined.
    fn finish(&self, key: &Key, id: u64, result: &Outcome<T>) {
        let sender = {
            let mut map = lock(&self.map);
            let sender = match map.get_mut(key) {
                Some(Entry::Trip {
                    id: held, outcome, ..
                }) if *held == id => outcome.take(),
                _ => None,
            };
            self.settle(&mut map, key, id, result);
            sender
        };
        if let Some(sender) = sender {
            sender.send_replace(Some(result.clone()));
        }
    }

    fn settle(&self, map: &mut KeyMap<Entry<T>>, key: &Key, id: u64, result: &Outcome<T>) {
        if map.get(key).map(Entry::id) != Some(id) {
            return;
        }
        match (result, self.window) {
            (Ok(response), Some(window)) => {
                // The window is at most an hour (checked at build), so this only fails on a
                // clock near its end: then nothing is kept.
                let Some(until) = Instant::now().checked_add(window) else {
                    map.remove(key);
                    return;
                };
                map.insert(
                    key.clone(),
                    Entry::Done {
                        id,
                        response: response.clone(),
                        until,
                    },
                );
                lock(&self.kept).push_back((until, key.clone(), id));
            }
            _ => {
                map.remove(key);
            }
        }
    }

    fn exclusive<S, B>(
        self: &Arc<Self>,
        inner: &mut S,
        request: Request<B>,
        key: Key,
        cancel_previous: bool,
    ) -> ResponseFuture<T>
    where
        S: Service<Request<B>, Response = Response<T>>,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let mut map = lock(&self.map);
        match map.get(&key) {
            Some(Entry::Exclusive { cancel, .. }) if cancel_previous => {
                cancel.cancel();
                self.counters.superseded.fetch_add(1, Ordering::Relaxed);
            }
            Some(Entry::Done { .. }) | None => {}
            Some(_) if cancel_previous => {
                // A coalesced trip holds the key: run alongside it, untracked.
                drop(map);
                return direct(inner, request);
            }
            Some(_) => {
                drop(map);
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Box::pin(std::future::ready(Err(Error::new(ErrorKind::Duplicate))));
            }
        }
        if !map.contains_key(&key) && self.full(&mut map) {
            drop(map);
            self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
            return direct(inner, request);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        map.insert(
            key.clone(),
            Entry::Exclusive {
                id,
                cancel: cancel.clone(),
            },
        );
        drop(map);
        let owner = Owner {
            shared: self.clone(),
            key,
            id,
        };
        let future = inner.call(request);
        Box::pin(async move {
            let _owner = owner;
            tokio::select! {
                biased;
                () = cancel.cancelled() => Err(Error::new(ErrorKind::Superseded)),
                result = future => result.map_err(|e| Error::from_boxed(e.into())),
            }
        })
    }
}

/// The caller that started a coalesced trip, driving it. If it leaves before the trip ends
/// while others still wait, the trip moves to a task of its own and goes on for them.
struct Lead<T: Clone + Send + Sync + 'static> {
    shared: Arc<Shared<T>>,
    key: Option<Key>,
    id: u64,
    future: Option<BoxFuture<'static, Outcome<T>>>,
}

impl<T: Clone + Send + Sync + 'static> std::future::Future for Lead<T> {
    type Output = Outcome<T>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Ready(Err(lost()));
        };
        let result = futures_util::ready!(future.as_mut().poll(cx));
        self.future = None;
        if let Some(key) = self.key.take() {
            self.shared.finish(&key, self.id, &result);
        }
        Poll::Ready(result)
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for Lead<T> {
    fn drop(&mut self) {
        let (Some(future), Some(key)) = (self.future.take(), self.key.take()) else {
            return;
        };
        let mut map = lock(&self.shared.map);
        let Some(Entry::Trip {
            id, waiters, task, ..
        }) = map.get_mut(&key)
        else {
            return;
        };
        if *id != self.id {
            return;
        }
        *waiters -= 1;
        if *waiters == 0 {
            // Nobody else waits: dropping the future cancels the request.
            map.remove(&key);
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to hand the trip to (dropped on a thread of its own): it ends here.
            // Removing the entry drops its sender, so the followers get `lost()` instead of
            // waiting forever, and the key is free for the next call.
            map.remove(&key);
            return;
        };
        let (shared, id) = (self.shared.clone(), self.id);
        let handoff = runtime.spawn(async move {
            let result = future.await;
            shared.finish(&key, id, &result);
        });
        // Recorded with the map locked, so the last follower to leave finds it.
        *task = Some(handoff.abort_handle());
    }
}

/// A caller waiting on a coalesced trip. When the last caller leaves before the trip ends,
/// the trip is cancelled.
struct Interest<T> {
    shared: Arc<Shared<T>>,
    key: Key,
    id: u64,
}

impl<T: Clone + Send + Sync + 'static> Interest<T> {
    /// Waits for the shared outcome for at most `limit`, then leaves the trip (it goes on for
    /// whoever still waits) and sends the follower's own request. The follower's own deadline
    /// bounds both: the trip runs under the leader's.
    async fn follow<S, B>(
        self,
        mut outcome: watch::Receiver<Option<Outcome<T>>>,
        limit: Duration,
        own: Own<S, B>,
    ) -> Outcome<T>
    where
        S: Service<Request<B>, Response = Response<T>> + Send,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Send,
    {
        let deadline = xhttp_core::Deadline::of(&own.request);
        let call = async move {
            let shared = async {
                match outcome.wait_for(Option::is_some).await {
                    Ok(value) => value.clone().unwrap_or_else(|| Err(lost())),
                    Err(_) => Err(lost()),
                }
            };
            // `timeout` takes any `Duration`: one past the clock's end waits forever.
            if let Ok(result) = tokio::time::timeout(limit, shared).await {
                return result;
            }
            self.shared
                .counters
                .lock_timeouts
                .fetch_add(1, Ordering::Relaxed);
            drop(self);
            tracing::debug!(
                ?limit,
                "the shared trip did not answer within the lock timeout: sending our own request"
            );
            own.send().await
        };
        match deadline {
            None => call.await,
            Some(deadline) => tokio::time::timeout_at(deadline.0, call)
                .await
                .unwrap_or_else(|_| Err(Error::timeout(xhttp_core::TimeoutScope::Total))),
        }
    }
}

/// What a follower keeps to send its own request if it gives up on the shared trip: its
/// request, and a clone of the inner service, polled ready only then.
struct Own<S, B> {
    service: S,
    request: Request<B>,
}

impl<S, B, T> Own<S, B>
where
    S: Service<Request<B>, Response = Response<T>>,
    S::Error: Into<BoxError>,
{
    async fn send(self) -> Outcome<T> {
        let Own {
            mut service,
            request,
        } = self;
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(|e| Error::from_boxed(e.into()))?;
        service
            .call(request)
            .await
            .map_err(|e| Error::from_boxed(e.into()))
    }
}

fn lost() -> Error {
    Error::new(ErrorKind::Internal).with_message("the shared request ended without an outcome")
}

impl<T> Drop for Interest<T> {
    fn drop(&mut self) {
        let mut map = lock(&self.shared.map);
        let Some(Entry::Trip {
            id, waiters, task, ..
        }) = map.get_mut(&self.key)
        else {
            // The trip is over (its outcome was sent) or gone.
            return;
        };
        if *id != self.id {
            return;
        }
        *waiters -= 1;
        if *waiters > 0 {
            return;
        }
        // Every caller has gone before the trip ended: cancel it, forget it.
        if let Some(task) = task.take() {
            task.abort();
        }
        map.remove(&self.key);
    }
}

/// The caller that owns a key under cancel-previous or reject-duplicate.
struct Owner<T> {
    shared: Arc<Shared<T>>,
    key: Key,
    id: u64,
}

impl<T> Drop for Owner<T> {
    fn drop(&mut self) {
        let mut map = lock(&self.shared.map);
        if map.get(&self.key).map(Entry::id) == Some(self.id) {
            map.remove(&self.key);
        }
    }
}
