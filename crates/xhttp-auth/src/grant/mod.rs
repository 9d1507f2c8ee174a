//! Grants: how a [`TokenManager`](crate::TokenManager) obtains new tokens.
//!
//! A grant makes its calls through its own small stack, a [`GrantTransport`] (transport,
//! collect, attempt timeout: no auth, no refresh, no dedupe), so a refresh can never wait on
//! itself, the loop that axios-auth-refresh broke twice (#163, #221).
//!
//! Three grants come with the crate:
//! - [`OAuth2Refresh`]: RFC 6749 section 6, `grant_type=refresh_token`, form-encoded;
//! - [`ClientCredentials`]: RFC 6749 section 4.4, for service accounts (no refresh token);
//! - [`JsonGrant`]: a backend's own JSON dialect, with request and response field mapping
//!   (the admin back-end dialect `{"refreshToken": ...}` -> `{"code":0,"result":{"accessToken":...}}`).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use xhttp_core::{Body, Error};

use crate::Secret;

mod exchange;
#[cfg(test)]
mod fake;
mod json;
mod oauth2;
mod response;

pub use json::JsonGrant;
pub use oauth2::{ClientCredentials, OAuth2Refresh};

pub use response::{parse_token_response, TokenResponseFields};

/// The stack a grant sends its requests through: any tower service from `Request<Body>` to
/// `Response<Bytes>`. The facade builds one from its transport
/// (`xhttp::Client::grant_transport`); tests may pass a `tower::service_fn`.
pub type GrantTransport = BoxCloneSyncService<Request<Body>, Response<Bytes>, Error>;

/// What a token endpoint answered, parsed.
#[derive(Debug, Clone)]
pub struct GrantResponse {
    /// The new access token.
    pub access_token: Secret,
    /// The new refresh token, when the server rotated it; `None` keeps the old one (RFC 6749
    /// section 6 allows the server to omit it).
    pub refresh_token: Option<Secret>,
    /// How long the access token lives, counted from `received_at`: the server's
    /// `expires_in`, or a JWT's `exp` corrected by the server's `Date`. `None` when the server
    /// said neither: the token is then refreshed only on rejection.
    pub expires_in: Option<Duration>,
    /// When the response arrived, on tokio's clock.
    pub received_at: Instant,
}

/// A way to obtain new tokens.
///
/// Errors: [`ErrorKind::SessionExpired`](xhttp_core::ErrorKind::SessionExpired) when the
/// credential is dead (`invalid_grant`, a 400 or 401 from the token endpoint): the manager then
/// clears the tokens and fails every caller until new ones are set. Any other error is
/// transient and ends as [`ErrorKind::RefreshFailed`](xhttp_core::ErrorKind::RefreshFailed).
///
/// ```
/// use futures_util::future::BoxFuture;
/// use xhttp_auth::{GrantResponse, RefreshGrant, Secret};
/// use xhttp_core::Error;
///
/// /// A grant that asks a vault instead of an HTTP endpoint.
/// #[derive(Debug)]
/// struct Vault;
///
/// impl RefreshGrant for Vault {
///     fn request<'a>(&'a self, _: Option<&'a Secret>) -> BoxFuture<'a, Result<GrantResponse, Error>> {
///         Box::pin(async {
///             Ok(GrantResponse {
///                 access_token: Secret::new("from-the-vault"),
///                 refresh_token: None,
///                 expires_in: Some(std::time::Duration::from_secs(3600)),
///                 received_at: tokio::time::Instant::now(),
///             })
///         })
///     }
///
///     fn needs_refresh_token(&self) -> bool {
///         false
///     }
/// }
/// ```
pub trait RefreshGrant: Send + Sync + fmt::Debug + 'static {
    /// Obtains new tokens; `refresh_token` is the current refresh token, if there is one.
    fn request<'a>(
        &'a self,
        refresh_token: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<GrantResponse, Error>>;

    /// Whether the grant needs a refresh token to work (client credentials does not). With no
    /// refresh token and a grant that needs one, the session is expired: log in first.
    fn needs_refresh_token(&self) -> bool {
        true
    }

    /// Which failed calls the manager may send again within the refresh (see
    /// [`RetrySafety`]). The default, [`RetrySafety::NotProcessed`], is right for any grant
    /// that presents a rotating refresh token; a grant whose call consumes nothing (client
    /// credentials, a vault read) may answer [`RetrySafety::Always`].
    fn retry_safety(&self) -> RetrySafety {
        RetrySafety::NotProcessed
    }
}

/// Which failed token calls may be sent again inside the refresh.
///
/// A rotating refresh token is consumed when the server processes the call. If the server
/// rotated it and then failed (a 502 from a proxy, a timeout while the answer was on its way,
/// a reset mid-response), a retry would present the consumed token again, and reuse revokes
/// the whole token family (RFC 9700 section 4.14.2): one retry logs the user out.
///
/// ```
/// use xhttp_auth::grant::RetrySafety;
/// assert_eq!(RetrySafety::default(), RetrySafety::NotProcessed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetrySafety {
    /// Only failures where the server did not process the call: never sent (connection
    /// refused, DNS, connect timeout), or answered 503, 429 or 408, which say so (RFC 9110
    /// sections 15.6.4, 15.5.9; RFC 6585 section 4).
    #[default]
    NotProcessed,
    /// Also failures after which the server may have processed the call: 500, 502, 504, a
    /// timeout after sending, a connection broken mid-answer. For grants that consume nothing.
    Always,
}
