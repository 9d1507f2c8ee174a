//! [`DedupeLayer`], its builder and its per-request option: which requests are deduplicated,
//! how, and what makes two requests the same (the policy).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;
use tower::Layer;
use xhttp_core::Error;

use crate::key::{self, ExtensionRule, IdentityFn, KeyRules};
use crate::trips::Shared;
use crate::{Dedupe, Identity, CREDENTIAL_HEADERS};

/// What to do with a request identical to one in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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

/// Deduplicates identical requests; see the [crate docs](crate). Generic over the response
/// body `T`, which coalesced callers share by `Clone` (`Bytes`: a reference count).
#[must_use]
pub struct DedupeLayer<T = Bytes> {
    shared: Arc<Shared<T>>,
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
#[must_use]
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
    /// [`DEFAULT_IGNORED_HEADERS`](crate::DEFAULT_IGNORED_HEADERS). A credential header ([`CREDENTIAL_HEADERS`]) cannot be
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
            shared: Arc::new(Shared::new(
                self.get_head,
                self.other,
                self.rules,
                self.max_entries,
                self.window.filter(|window| !window.is_zero()),
                self.lock_timeout,
                self.identity,
            )),
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
        self.shared.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S, T> Layer<S> for DedupeLayer<T> {
    type Service = Dedupe<S, T>;

    fn layer(&self, inner: S) -> Dedupe<S, T> {
        Dedupe::new(inner, self.shared.clone())
    }
}
