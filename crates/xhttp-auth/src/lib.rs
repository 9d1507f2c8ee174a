//! Bearer tokens for HTTP clients: one token and one refresh per credential, however many
//! requests are waiting.
//!
//! - [`TokenManager`]: holds the token, refreshes it (single flight, as its own task, with a
//!   timeout), before expiry in the background and after a rejection on demand, and ends the
//!   session cleanly when the refresh credential is dead. See its module docs for the failure
//!   modes of the axios wrappers it replaces.
//! - Grants ([`OAuth2Refresh`], [`ClientCredentials`], [`JsonGrant`], or your own
//!   [`RefreshGrant`]): how new tokens are obtained, through their own small stack.
//! - Stores ([`MemoryStore`], [`FileStore`], or your own [`TokenStore`]): where tokens live,
//!   shaped so that a fleet of processes sharing one rotating refresh token refreshes once.
//! - [`AuthLayer`]: the tower layer that puts the token on requests to the configured origins
//!   ([`AuthLayer::for_channel`] over a tonic `Channel`, whose request URIs carry only a
//!   path); a request it cannot place is a typed error, never a request without its token.
//!   Its partner, `xhttp_refresh::RefreshLayer`, refreshes and replays on a rejection.
//!
//! The rules, in short (each is stated where it applies):
//!
//! - **A session switch is not a refresh.** A generation names a token within a session;
//!   [`TokenManager::set_tokens`] and [`TokenManager::clear`] start a new session, and a
//!   rejection of a request sent in an older one is never replayed with the new session's
//!   token: it is `ErrorKind::SessionChanged`, with no token call.
//! - **Loopback is an address.** A bearer goes over plain `http` only to `127.0.0.0/8` or
//!   `[::1]` (and only when allowed); a token endpoint URL must be `https` or such an
//!   address. Names, `localhost` included, are refused with `InsecureTransport`: write
//!   `127.0.0.1`.
//! - **A token that cannot be sent is refused where it enters**: `set_tokens` with
//!   `InvalidRequest`, a grant's answer with `RefreshFailed`, a token file with `Decode`.
//! - **A token over on arrival** (`expires_in: 0`, a JWT `exp` in the past) has no known
//!   expiry: it is used until rejected, with one warning, instead of a refresh per call.
//! - **Impossible configuration is a `Config` error**, never a panic
//!   ([`TokenManagerBuilder::try_build`]).
//! - **A failed token call does not fail the waiters.** The single flight retries, within its
//!   refresh deadline (10 s), what the server did not process (never sent, 503, 429, 408),
//!   with backoff and `Retry-After`; never `invalid_grant` or another 4xx, and never what may
//!   have consumed a rotating refresh token unless the grant is [`RetrySafety::Always`].
//!   A refresh error says what failed (`Error::refresh_failure`).
//! - **A rejected token is dead**: no request is sent with it again, whether its refresh is
//!   running or has failed; the cool-down after a failure counts from its end.
//! - **Credentials are known secrets**: the current tokens, OAuth client secrets and the
//!   field values of a [`JsonGrant`] are registered with the core masker while in use, so no
//!   error or log line shows them.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use xhttp_auth::{AuthLayer, ClientCredentials, GrantTransport, Secret, TokenManager};
//! use xhttp_core::{Error, Origin};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // A fake token endpoint for the example; use the facade's transport in real code.
//! let endpoint = GrantTransport::new(service_fn(|_req| async {
//!     let body = r#"{"access_token":"t-1","token_type":"Bearer","expires_in":3600}"#;
//!     Ok::<_, Error>(http::Response::new(bytes::Bytes::from_static(body.as_bytes())))
//! }));
//! let grant = ClientCredentials::new(endpoint, "https://auth.example.com/token")
//!     .unwrap()
//!     .client_id("reports")
//!     .client_secret(Secret::new("s3cr3t"));
//! let manager = TokenManager::builder(grant).build();
//!
//! let api = service_fn(|req: http::Request<()>| async move {
//!     let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
//!     Ok::<_, Error>(http::Response::new(auth))
//! });
//! let service = AuthLayer::new(manager, [Origin::parse("https://api.example.com").unwrap()])
//!     .layer(api);
//! let request = http::Request::get("https://api.example.com/v1/me").body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.body(), "Bearer t-1");
//! # });
//! ```
#![deny(unsafe_code)]

pub mod future;
pub mod grant;
mod layer;
mod manager;
mod retry;
mod secret;
mod service;
mod slot;
pub mod store;
mod token;

pub use future::ResponseFuture;
pub use grant::{
    ClientCredentials, GrantResponse, GrantTransport, JsonGrant, OAuth2Refresh, RefreshGrant,
    RetrySafety, TokenResponseFields,
};
pub use layer::{AuthLayer, SkipAuth};
pub use manager::{TokenManager, TokenManagerBuilder};
pub use secret::Secret;
pub use service::Auth;
pub use slot::GenerationSlot;
pub use store::{FileStore, Lock, MemoryStore, RefreshLock, StoredTokens, Swap, TokenStore};
pub use token::{Token, Windows};
