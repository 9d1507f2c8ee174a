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
//!   keys `SkipStatus`, `SkipEnvelope`, `SkipAuth`, `SkipRefresh` and `RetryOverride`,
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
//!   [`body_key`](xhttp_core::body::RequestBody::body_key) without consuming the body.
//!   xhttp's `Body`, `http_body_util::Full` (the usual hyper client body) and `Empty`,
//!   `Bytes`, `String` and `()` are keyed by their bytes; a boxed or streaming body has none, so its request is
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
//!
//! [`RequestBody::body_key`]: xhttp_core::body::RequestBody::body_key
//! [`RequestBody`]: xhttp_core::body::RequestBody
//! [`Error`]: xhttp_core::Error
//! [`Error::from_boxed`]: xhttp_core::Error::from_boxed
#![deny(unsafe_code)]

pub mod future;
mod key;
mod layer;
mod scope;
mod service;
mod trips;

pub use future::ResponseFuture;
pub use key::{Identity, CREDENTIAL_HEADERS, DEFAULT_IGNORED_HEADERS};
pub use layer::{
    DedupeLayer, DedupeLayerBuilder, DedupeOverride, DedupePolicy, DedupeStats,
    DEFAULT_LOCK_TIMEOUT, MAX_SUCCESS_WINDOW,
};
pub use scope::CancelScope;
pub use service::Dedupe;
pub use xhttp_core::body::BodyKey;
