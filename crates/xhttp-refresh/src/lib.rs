//! Refresh on rejection: when the server says the token is no good, refresh it once (for every
//! request that learns it at the same time) and replay the request with the new token.
//!
//! [`RefreshLayer`] sits above `xhttp_auth::AuthLayer` (and above retry, when there is one):
//!
//! 1. Before calling down it puts a [`GenerationSlot`] in the request; the auth layer records
//!    there which token generation the trip was sent with.
//! 2. When the outcome is a rejection it calls
//!    [`TokenManager::refresh_after_rejection`](xhttp_auth::TokenManager::refresh_after_rejection)
//!    with that generation: the late 401 of a request sent with an already-replaced token
//!    replays with the new token and costs no refresh.
//! 3. It replays, marked [`Replayed`]. When the replay's token is rejected too, that token
//!    is dead: the manager is told, and if it hands out a newer token at once (a rejection of
//!    a token some response had accepted is a revocation, and so may be the first rejection
//!    in a row of one no response had), the call replays again, three replays at most, each
//!    with a newer token. Never a loop: a server that rejects every fresh token meets the
//!    manager's back-off after its second such token
//!    ([`TokenManagerBuilder::rejection_backoff`](xhttp_auth::TokenManagerBuilder::rejection_backoff)),
//!    so it costs a call three trips, and the call gets the last rejection as
//!    `ErrorKind::Unauthorized` with the server's challenge.
//!
//! A refresh is not a session switch. When the rejected trip was sent in an older session
//! (a `set_tokens` for another login or user, or a `clear`, came while it was in flight), the
//! manager answers `ErrorKind::SessionChanged` with no token call, and the layer returns that
//! error without replaying: a `DELETE` meant for account A never runs with user B's token.
//!
//! What counts as a rejection ([`Triggers`]): status 401 (with or without a challenge),
//! `WWW-Authenticate: Bearer error="invalid_token"` (in any of the response's challenges,
//! parsed per RFC 9110: the same words inside another scheme's quoted parameter do not
//! count), a business code such as 40009, 409 or 1002 (from an `Error::Business`
//! of the envelope layer, or read from a `Bytes` body's `code` field when no envelope layer
//! runs; both normalised by the core's one rule), and gRPC `grpc-status: 16`
//! (UNAUTHENTICATED). Never 403: `insufficient_scope` is not cured by a new token.
//!
//! Requests marked [`SkipRefresh`] pass untouched. A request whose body cannot be replayed
//! (a boxed stream) still triggers the refresh, so that the next request succeeds, but its
//! own first outcome is returned.
//!
//! # Requirements
//!
//! [`Refresh<S>`](Refresh) serves `Request<B>` when:
//!
//! - **request body** `B: RequestBody + Send + 'static` ([`xhttp_core::body::RequestBody`]): the
//!   request is copied before its first send, and the copy sent only if a replay happens.
//!   xhttp's `Body`, `http_body_util::Full` (the usual hyper client body) and `Empty`,
//!   `Bytes`, `String` and `()` are replayed; a boxed body is not (see above).
//! - **response body** `ResBody: Send + 'static`. Business codes are read from a `Bytes` body
//!   (or from an envelope layer's `Error::Business`); any other body is never parsed.
//! - **inner service** `S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send +
//!   'static`, `S::Future: Send + 'static`; not `Sync`. A call whose body can be copied keeps
//!   a clone of the service for its replay, polled ready only if the replay happens.
//! - **inner error** `S::Error: Into<tower::BoxError>`; it becomes an [`Error`] by
//!   [`Error::from_boxed`], which hands an xhttp error back as it was. The layer's own error
//!   is `xhttp_core::Error`; its future ([`ResponseFuture`]) is `Send`.
//!
//! ```
//! use tower::ServiceBuilder;
//! use xhttp_auth::{AuthLayer, TokenManager};
//! use xhttp_refresh::RefreshLayer;
//!
//! fn stack<S>(manager: TokenManager, origins: Vec<xhttp_core::Origin>, transport: S)
//!     -> impl tower::Service<http::Request<xhttp_core::Body>>
//! where
//!     S: tower::Service<http::Request<xhttp_core::Body>, Response = http::Response<bytes::Bytes>>
//!         + Clone + Send + 'static,
//!     S::Error: Into<tower::BoxError>,
//!     S::Future: Send + 'static,
//! {
//!     ServiceBuilder::new()
//!         .layer(RefreshLayer::new(manager.clone()).business_codes([40009]))
//!         .layer(AuthLayer::new(manager, origins))
//!         .service(transport)
//! }
//! ```
//!
//! [`GenerationSlot`]: xhttp_auth::GenerationSlot
//! [`Error`]: xhttp_core::Error
//! [`Error::from_boxed`]: xhttp_core::Error::from_boxed
#![deny(unsafe_code)]

pub mod future;
mod layer;
mod replay;
mod service;
mod triggers;

pub use future::ResponseFuture;
pub use layer::{RefreshLayer, Replayed, SkipRefresh};
pub use service::Refresh;
pub use triggers::Triggers;
pub use xhttp_core::challenge::{bearer_error, is_invalid_token};
