//! Server configuration and the token pair handed to tests.

use std::time::Duration;

/// How a protected route reports a missing, unknown, expired or revoked access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiryMode {
    /// HTTP 401 with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 section
    /// 3.1; a request without a token gets the challenge without an error code).
    #[default]
    Http401,
    /// HTTP 200 with the envelope
    /// `{"code": <business_expired_code>, "message": "token expired", "result": null}`,
    /// as many admin back ends do.
    BusinessCode,
}

/// Configuration of a [`TestServer`](crate::TestServer).
///
/// ```
/// use std::time::Duration;
/// use xhttp_testkit::{Config, ExpiryMode};
///
/// let config = Config {
///     access_ttl: Duration::from_secs(60),
///     expiry_mode: ExpiryMode::BusinessCode,
///     ..Config::default()
/// };
/// assert_eq!(config.business_expired_code, 40009);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Lifetime of access tokens, on tokio's clock. Default 15 minutes, a common lifetime
    /// of short-lived bearer tokens.
    pub access_ttl: Duration,
    /// Seed of tokens and fault decisions. Default 0. The same seed gives the same tokens
    /// and the same fault pattern for the same sequence of requests.
    pub seed: u64,
    /// Username and password of `/auth/login`, also the `client_id` and `client_secret`
    /// of the client-credentials grant. Default `("admin", "secret")`.
    pub credentials: (String, String),
    /// How protected routes reject tokens. Default [`ExpiryMode::Http401`].
    pub expiry_mode: ExpiryMode,
    /// The business code of [`ExpiryMode::BusinessCode`]. Default 40009, a code many
    /// admin back ends use.
    pub business_expired_code: i64,
    /// Whether an access token is rejected as soon as a refresh of its family issues a newer
    /// one. Default `false`: RFC 6749 leaves an access token valid until it expires, and
    /// such requests are only counted in
    /// [`Counters::requests_with_stale_token`](crate::Counters::requests_with_stale_token).
    pub reject_superseded: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            seed: 0,
            credentials: ("admin".to_owned(), "secret".to_owned()),
            expiry_mode: ExpiryMode::Http401,
            business_expired_code: 40009,
            reject_superseded: false,
        }
    }
}

/// An access token and its refresh token, as issued by a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    /// The bearer token for protected routes.
    pub access_token: String,
    /// The rotating refresh token.
    pub refresh_token: String,
    /// Lifetime of the access token in whole seconds, at least 1.
    pub expires_in: u64,
}
