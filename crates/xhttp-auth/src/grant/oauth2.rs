//! The OAuth 2.0 grants: `refresh_token` (RFC 6749 section 6) and `client_credentials`
//! (section 4.4), form-encoded, with client authentication by HTTP Basic or in the body.
//!
//! Both send `Accept: application/json`, read the answer with
//! [`TokenResponseFields::oauth2`] (or fields of the caller's choice) and refuse a token
//! response over 1 MiB. Each request is one call; the manager's single flight retries, as
//! the grant's [`RetrySafety`] allows: a refresh token may rotate, so [`OAuth2Refresh`] is
//! [`RetrySafety::NotProcessed`], while [`ClientCredentials`] is [`RetrySafety::Always`].

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, Uri};
use xhttp_core::mask::KnownSecret;
use xhttp_core::{Body, Error};

use super::exchange::{exchange, token_url};
use super::{GrantResponse, GrantTransport, RefreshGrant, RetrySafety, TokenResponseFields};
use crate::Secret;

/// The OAuth 2.0 refresh grant (RFC 6749 section 6): POSTs
/// `grant_type=refresh_token&refresh_token=…` to the token endpoint.
///
/// Client authentication (section 2.3.1): with a client secret, HTTP Basic by default
/// (servers must support it; credentials in the body are "not recommended"), or in the body
/// with [`basic_auth(false)`](Self::basic_auth); a public client (an id and no secret) sends
/// its `client_id` in the body.
///
/// A rotating refresh token is consumed when the server processes the call, so the manager
/// resends this grant's request only after failures where the server did not process it
/// (never sent, 503, 429, 408; [`RetrySafety::NotProcessed`]): a retry after a 500, 502, 504
/// or a timeout could present a consumed token, and reuse revokes the whole session (RFC 9700
/// section 4.14.2). Each [`request`](RefreshGrant::request) is one call.
///
/// ```
/// use xhttp_auth::{GrantTransport, OAuth2Refresh, RefreshGrant, Secret};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // A stand-in token endpoint; in a program, the facade's `Client::grant_transport()`.
/// let transport = GrantTransport::new(tower::service_fn(|request: http::Request<xhttp_core::Body>| async move {
///     assert_eq!(request.headers()["authorization"], "Basic bXktYXBwOnMzY3IzdA==");
///     let body = br#"{"access_token":"new-access","refresh_token":"new-refresh","expires_in":900}"#;
///     Ok::<_, xhttp_core::Error>(http::Response::new(bytes::Bytes::from_static(body)))
/// }));
///
/// let grant = OAuth2Refresh::new(transport, "https://auth.example.com/oauth/token")?
///     .client_id("my-app")
///     .client_secret(Secret::new("s3cr3t"))
///     .scope("read write");
/// let tokens = grant.request(Some(&Secret::new("old-refresh"))).await?;
/// assert_eq!(tokens.access_token.expose(), "new-access");
/// assert_eq!(tokens.refresh_token.unwrap().expose(), "new-refresh");
/// assert!(!format!("{grant:?}").contains("s3cr3t"));
/// # Ok::<(), xhttp_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
#[must_use]
pub struct OAuth2Refresh {
    client: OAuthClient,
}

impl OAuth2Refresh {
    /// A refresh grant against `token_url`, sending through `transport`.
    ///
    /// Fails with [`ErrorKind::InvalidRequest`](xhttp_core::ErrorKind::InvalidRequest) when `token_url` is not an absolute `http` or
    /// `https` URL, and with
    /// [`ErrorKind::InsecureTransport`](xhttp_core::ErrorKind::InsecureTransport) for plain
    /// `http` to anything but a loopback address (write `127.0.0.1`: `localhost` is a name).
    ///
    /// ```
    /// # let transport = xhttp_auth::GrantTransport::new(tower::service_fn(|_: http::Request<xhttp_core::Body>| async {
    /// #     Ok::<_, xhttp_core::Error>(http::Response::new(bytes::Bytes::new()))
    /// # }));
    /// use xhttp_auth::OAuth2Refresh;
    /// assert!(OAuth2Refresh::new(transport.clone(), "/oauth/token").is_err());
    /// assert!(OAuth2Refresh::new(transport, "https://auth.example.com/oauth/token").is_ok());
    /// ```
    pub fn new(transport: GrantTransport, token_url: &str) -> Result<OAuth2Refresh, Error> {
        Ok(OAuth2Refresh {
            client: OAuthClient::new(transport, token_url)?,
        })
    }
}

/// The client options both OAuth grants share, written once.
macro_rules! client_options {
    ($grant:ty) => {
        impl $grant {
            /// The client's identifier (RFC 6749 section 2.2).
            pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
                self.client.client_id = Some(client_id.into());
                self
            }

            /// The client's secret; never printed, and registered with the core masker
            /// ([`KnownSecret`](xhttp_core::mask::KnownSecret)) for as long as the grant
            /// lives, so no error or log line shows it, even quoted by a server.
            pub fn client_secret(mut self, client_secret: Secret) -> Self {
                self.client.secret_guard =
                    Some(Arc::new(KnownSecret::register(client_secret.expose())));
                self.client.client_secret = Some(client_secret);
                self
            }

            /// Whether the client id and secret go in an HTTP Basic `Authorization` header (`true`,
            /// the default) or in the form body (`false`).
            pub fn basic_auth(mut self, basic: bool) -> Self {
                self.client.basic_auth = basic;
                self
            }

            /// The `scope` parameter (space-separated scopes, section 3.3).
            pub fn scope(mut self, scope: impl Into<String>) -> Self {
                self.client.scope = Some(scope.into());
                self
            }

            /// An extra form parameter (`audience`, `resource`, ...). Its value is never printed.
            /// (Not registered with the masker: extra parameters are rarely secrets, and a
            /// value such as `api` would be masked in every message.)
            pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
                self.client.params.push((name.into(), value.into()));
                self
            }

            /// Where the fields of the answer sit; default [`TokenResponseFields::oauth2`].
            pub fn response_fields(mut self, fields: TokenResponseFields) -> Self {
                self.client.fields = fields;
                self
            }
        }
    };
}

client_options!(OAuth2Refresh);
client_options!(ClientCredentials);

impl RefreshGrant for OAuth2Refresh {
    fn request<'a>(
        &'a self,
        refresh_token: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        Box::pin(async move {
            let refresh_token = super::exchange::require_refresh_token(refresh_token)?;
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose()),
            ];
            self.client.send(&form, refresh_token.expose()).await
        })
    }
}

impl fmt::Debug for OAuth2Refresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client.debug("OAuth2Refresh", f)
    }
}

/// The OAuth 2.0 client credentials grant (RFC 6749 section 4.4): POSTs
/// `grant_type=client_credentials`, for a service acting on its own behalf. It needs no
/// refresh token (`needs_refresh_token()` is `false`): each refresh asks again.
///
/// Nothing rotates, so a failed request is safe to send again ([`RetrySafety::Always`]): the
/// manager retries failures that never reached the server, timeouts, broken connections,
/// 408, 429, 500, 502, 503 and 504, within its refresh deadline. Each
/// [`request`](RefreshGrant::request) is one call.
///
/// ```
/// use xhttp_auth::{ClientCredentials, GrantTransport, RefreshGrant, Secret};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let transport = GrantTransport::new(tower::service_fn(|request: http::Request<xhttp_core::Body>| async move {
///     let form = request.body().as_bytes().unwrap().clone();
///     assert_eq!(form, "grant_type=client_credentials&scope=reports");
///     let body = br#"{"access_token":"service-token","token_type":"Bearer","expires_in":3600}"#;
///     Ok::<_, xhttp_core::Error>(http::Response::new(bytes::Bytes::from_static(body)))
/// }));
///
/// let grant = ClientCredentials::new(transport, "https://auth.example.com/oauth/token")?
///     .client_id("reporting-service")
///     .client_secret(Secret::new("s3cr3t"))
///     .scope("reports");
/// assert!(!grant.needs_refresh_token());
/// let tokens = grant.request(None).await?;
/// assert_eq!(tokens.access_token.expose(), "service-token");
/// # Ok::<(), xhttp_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
#[must_use]
pub struct ClientCredentials {
    client: OAuthClient,
}

impl ClientCredentials {
    /// A client credentials grant against `token_url`, sending through `transport`.
    ///
    /// Fails with [`ErrorKind::InvalidRequest`](xhttp_core::ErrorKind::InvalidRequest) when `token_url` is not an absolute `http` or
    /// `https` URL, and with
    /// [`ErrorKind::InsecureTransport`](xhttp_core::ErrorKind::InsecureTransport) for plain
    /// `http` to anything but a loopback address (write `127.0.0.1`: `localhost` is a name).
    ///
    /// ```
    /// # let transport = xhttp_auth::GrantTransport::new(tower::service_fn(|_: http::Request<xhttp_core::Body>| async {
    /// #     Ok::<_, xhttp_core::Error>(http::Response::new(bytes::Bytes::new()))
    /// # }));
    /// use xhttp_auth::ClientCredentials;
    /// let err = ClientCredentials::new(transport, "mailto:auth@example.com").unwrap_err();
    /// assert_eq!(err.kind(), xhttp_core::ErrorKind::InvalidRequest);
    /// ```
    pub fn new(transport: GrantTransport, token_url: &str) -> Result<ClientCredentials, Error> {
        Ok(ClientCredentials {
            client: OAuthClient::new(transport, token_url)?,
        })
    }
}

impl RefreshGrant for ClientCredentials {
    fn request<'a>(
        &'a self,
        _refresh_token: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        Box::pin(async move {
            let form = [("grant_type", "client_credentials")];
            self.client.send(&form, "").await
        })
    }

    fn needs_refresh_token(&self) -> bool {
        false
    }

    /// [`RetrySafety::Always`]: the call consumes nothing, so any transient failure may be
    /// sent again.
    fn retry_safety(&self) -> RetrySafety {
        RetrySafety::Always
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client.debug("ClientCredentials", f)
    }
}

/// What both OAuth grants share: the endpoint and the client's credentials.
#[derive(Clone)]
struct OAuthClient {
    transport: GrantTransport,
    token_url: Uri,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    /// Keeps the client secret registered with the masker while any clone of the grant lives.
    secret_guard: Option<Arc<KnownSecret>>,
    basic_auth: bool,
    scope: Option<String>,
    params: Vec<(String, String)>,
    fields: TokenResponseFields,
}

impl OAuthClient {
    fn new(transport: GrantTransport, token_url: &str) -> Result<OAuthClient, Error> {
        Ok(OAuthClient {
            transport,
            token_url: self::token_url(token_url)?,
            client_id: None,
            client_secret: None,
            secret_guard: None,
            basic_auth: true,
            scope: None,
            params: Vec::new(),
            fields: TokenResponseFields::oauth2(),
        })
    }

    async fn send(
        &self,
        grant: &[(&str, &str)],
        refresh_token: &str,
    ) -> Result<GrantResponse, Error> {
        let client_secret = self.client_secret.as_ref().map_or("", Secret::expose);
        exchange(
            &self.transport,
            || self.build(grant),
            &self.fields,
            &[refresh_token, client_secret],
        )
        .await
    }

    /// The form request: the grant's parameters, then scope, client credentials (in the body
    /// unless sent with Basic) and extra parameters.
    fn build(&self, grant: &[(&str, &str)]) -> Result<Request<Body>, Error> {
        let mut form: Vec<(&str, &str)> = grant.to_vec();
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let basic = match (&self.client_id, &self.client_secret) {
            (Some(id), Some(secret)) if self.basic_auth => Some(basic_credentials(id, secret)),
            (Some(id), secret) => {
                form.push(("client_id", id));
                if let Some(secret) = secret {
                    form.push(("client_secret", secret.expose()));
                }
                None
            }
            (None, _) => None,
        };
        for (name, value) in &self.params {
            form.push((name, value));
        }
        let body = serde_urlencoded::to_string(&form)
            .map_err(|_| Error::invalid_request("could not form-encode the token request"))?;
        let mut request = Request::post(self.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Body::from(body))
            .map_err(|_| Error::invalid_request("could not build the token request"))?;
        if let Some(basic) = basic {
            request.headers_mut().insert(AUTHORIZATION, basic?);
        }
        Ok(request)
    }

    fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<&str> = self.params.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct(name)
            .field("token_url", &xhttp_core::redact::uri(&self.token_url))
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("basic_auth", &self.basic_auth)
            .field("scope", &self.scope)
            .field("params", &params)
            .finish_non_exhaustive()
    }
}

/// `Authorization: Basic …` for a client (RFC 6749 section 2.3.1: the id and the secret are
/// form-encoded before Base64), marked sensitive.
fn basic_credentials(client_id: &str, secret: &Secret) -> Result<HeaderValue, Error> {
    let pair = format!(
        "{}:{}",
        form_encode(client_id),
        form_encode(secret.expose())
    );
    let mut value = HeaderValue::try_from(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
    .map_err(|_| Error::invalid_request("could not build the Basic credentials"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `application/x-www-form-urlencoded` encoding of one value (WHATWG URL, as
/// `serde_urlencoded` does for the body).
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fake::{answer, endpoint, refused};
    use super::*;
    use crate::grant::exchange::TOKEN_RESPONSE_LIMIT;
    use xhttp_core::error::RefreshFailure;
    use xhttp_core::ErrorKind;

    const SECRET_RT: &str = "SECRET-RT-123";
    const SECRET_CS: &str = "SECRET-CS-456";
    const URL: &str = "https://auth.example.com/oauth/token";
    const OK: &str = r#"{"access_token":"a2","refresh_token":"r2","expires_in":900}"#;

    fn refresh_token() -> Secret {
        Secret::new(SECRET_RT)
    }

    fn assert_hides_secrets(shown: &str) {
        assert!(!shown.contains(SECRET_RT), "{shown}");
        assert!(!shown.contains(SECRET_CS), "{shown}");
    }

    #[tokio::test]
    async fn refresh_sends_the_rfc_6749_form_with_basic_client_authentication() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = OAuth2Refresh::new(transport, URL)
            .unwrap()
            .client_id("my app")
            .client_secret(Secret::new("p@ss:word"))
            .scope("read write")
            .param("audience", "api");
        let tokens = grant.request(Some(&refresh_token())).await.unwrap();
        assert_eq!(tokens.access_token.expose(), "a2");
        assert_eq!(tokens.refresh_token.unwrap().expose(), "r2");

        let seen = log.last();
        assert_eq!(seen.method, http::Method::POST);
        assert_eq!(seen.uri, URL);
        assert_eq!(
            seen.body,
            "grant_type=refresh_token&refresh_token=SECRET-RT-123&scope=read+write&audience=api"
        );
        assert_eq!(
            seen.headers[CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(seen.headers[ACCEPT], "application/json");
        // base64("my+app:p%40ss%3Aword")
        assert_eq!(
            seen.headers[AUTHORIZATION],
            "Basic bXkrYXBwOnAlNDBzcyUzQXdvcmQ="
        );
        assert!(seen.headers[AUTHORIZATION].is_sensitive());
        assert_eq!(seen.body_limit, Some(TOKEN_RESPONSE_LIMIT));
    }

    #[test]
    fn the_client_secret_is_a_known_secret_while_the_grant_lives() {
        use xhttp_core::mask::server_text;
        let (transport, _log) = endpoint(|_| answer(200, OK));
        let grant = ClientCredentials::new(transport, URL)
            .unwrap()
            .client_id("app")
            .client_secret(Secret::new("SECRET-CS-known-789"));
        let quoted = || server_text("invalid client SECRET-CS-known-789", 200);
        assert!(!quoted().contains("SECRET-CS-known-789"));
        drop(grant);
        assert!(quoted().contains("SECRET-CS-known-789"));
    }

    #[tokio::test]
    async fn client_credentials_can_go_in_the_body() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = OAuth2Refresh::new(transport, URL)
            .unwrap()
            .client_id("app")
            .client_secret(Secret::new(SECRET_CS))
            .basic_auth(false);
        grant.request(Some(&refresh_token())).await.unwrap();
        let seen = log.last();
        assert_eq!(
            seen.body,
            "grant_type=refresh_token&refresh_token=SECRET-RT-123&client_id=app&client_secret=SECRET-CS-456"
        );
        assert!(seen.headers.get(AUTHORIZATION).is_none());
    }

    #[tokio::test]
    async fn a_public_client_sends_its_id_in_the_body_even_with_basic_auth_on() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = OAuth2Refresh::new(transport, URL).unwrap().client_id("spa");
        grant.request(Some(&refresh_token())).await.unwrap();
        let seen = log.last();
        assert_eq!(
            seen.body,
            "grant_type=refresh_token&refresh_token=SECRET-RT-123&client_id=spa"
        );
        assert!(seen.headers.get(AUTHORIZATION).is_none());
    }

    #[tokio::test]
    async fn refresh_without_a_refresh_token_is_session_expired_without_a_call() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = OAuth2Refresh::new(transport, URL).unwrap();
        assert!(grant.needs_refresh_token());
        let err = grant.request(None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        let err = grant.request(Some(&Secret::new(""))).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_eq!(log.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_is_one_call_that_says_unreachable_and_never_sent() {
        let (transport, log) = endpoint(|_| refused());
        let grant = OAuth2Refresh::new(transport, URL).unwrap();
        let err = grant.request(Some(&refresh_token())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        assert_eq!(err.refresh_failure(), Some(RefreshFailure::Unreachable));
        assert!(err.is_never_sent());
        assert_eq!(err.attempts(), 1);
        assert_eq!(
            log.calls(),
            1,
            "retries are the manager's decision, not the grant's"
        );
        // The cause chain keeps the transport's own words (Display prints one level each).
        let mut chain = Vec::new();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        assert!(
            chain.iter().any(|c| c.contains("connection refused")),
            "{chain:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_is_one_call_with_its_status_and_retry_after() {
        let (transport, log) = endpoint(|_| {
            let mut response = answer(503, "")?;
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("3"),
            );
            Ok(response)
        });
        let grant = OAuth2Refresh::new(transport, URL).unwrap();
        let err = grant.request(Some(&refresh_token())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        assert_eq!(err.refresh_failure(), Some(RefreshFailure::Endpoint));
        assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(3)));
        assert_eq!(log.calls(), 1);
        assert_eq!(grant.retry_safety(), RetrySafety::NotProcessed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_or_a_reset_is_one_call_that_says_what_failed() {
        for (failure, what) in [
            (
                Error::timeout(xhttp_core::TimeoutScope::Attempt),
                RefreshFailure::Timeout,
            ),
            (
                Error::transport("connection reset"),
                RefreshFailure::Interrupted,
            ),
        ] {
            let (transport, log) = endpoint(move |_| Err(failure.clone()));
            let grant = OAuth2Refresh::new(transport, URL).unwrap();
            let err = grant.request(Some(&refresh_token())).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::RefreshFailed);
            assert_eq!(err.refresh_failure(), Some(what));
            assert!(!err.is_never_sent());
            assert_eq!(log.calls(), 1);
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refresh_failed() {
        // The collect layer refuses the body and says so with BodyTooLarge.
        let (transport, _) = endpoint(|_| Err(Error::body_too_large(TOKEN_RESPONSE_LIMIT.0)));
        let grant = OAuth2Refresh::new(transport, URL).unwrap();
        let err = grant.request(Some(&refresh_token())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        let source = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<Error>())
            .unwrap();
        assert_eq!(source.kind(), ErrorKind::BodyTooLarge);
    }

    #[tokio::test]
    async fn invalid_grant_is_session_expired() {
        let (transport, _) = endpoint(|_| {
            answer(
                400,
                r#"{"error":"invalid_grant","error_description":"revoked"}"#,
            )
        });
        let grant = OAuth2Refresh::new(transport, URL).unwrap();
        let err = grant.request(Some(&refresh_token())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_eq!(err.message(), Some("invalid_grant: revoked"));
    }

    #[tokio::test]
    async fn a_server_quoting_the_refresh_token_does_not_leak_it() {
        let (transport, _) = endpoint(|_| {
            answer(
                400,
                r#"{"error":"invalid_grant","error_description":"SECRET-RT-123 is revoked"}"#,
            )
        });
        let grant = OAuth2Refresh::new(transport, URL).unwrap();
        let err = grant.request(Some(&refresh_token())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_hides_secrets(&format!("{err} {err:?}"));
    }

    #[tokio::test]
    async fn debug_and_errors_never_show_the_secrets() {
        let (transport, _) = endpoint(|_| refused());
        let grant = OAuth2Refresh::new(
            transport,
            "https://auth.example.com/token?client_secret=SECRET-CS-456",
        )
        .unwrap()
        .client_id("app")
        .client_secret(Secret::new(SECRET_CS))
        .param("client_assertion", SECRET_CS);
        let shown = format!("{grant:?}");
        assert!(
            shown.contains("auth.example.com") && shown.contains("app"),
            "{shown}"
        );
        assert_hides_secrets(&shown);

        let err = grant.request(Some(&refresh_token())).await.unwrap_err();
        assert_hides_secrets(&format!("{err} {err:?}"));

        let (transport, _) = endpoint(|_| refused());
        let cc = ClientCredentials::new(transport, URL)
            .unwrap()
            .client_secret(Secret::new(SECRET_CS));
        assert_hides_secrets(&format!("{cc:?}"));
    }

    #[tokio::test]
    async fn client_credentials_sends_its_grant_with_basic_authentication() {
        let (transport, log) = endpoint(|_| {
            answer(
                200,
                r#"{"access_token":"svc","token_type":"Bearer","expires_in":60}"#,
            )
        });
        let grant = ClientCredentials::new(transport, URL)
            .unwrap()
            .client_id("admin")
            .client_secret(Secret::new("secret"));
        assert!(!grant.needs_refresh_token());
        let tokens = grant.request(None).await.unwrap();
        assert_eq!(tokens.access_token.expose(), "svc");
        assert!(tokens.refresh_token.is_none());
        let seen = log.last();
        assert_eq!(seen.body, "grant_type=client_credentials");
        assert_eq!(seen.headers[AUTHORIZATION], "Basic YWRtaW46c2VjcmV0");
    }

    #[tokio::test(start_paused = true)]
    async fn client_credentials_is_safe_to_retry_and_makes_one_call_per_request() {
        let (transport, log) = endpoint(|_| answer(502, ""));
        let grant = ClientCredentials::new(transport, URL).unwrap();
        assert_eq!(grant.retry_safety(), RetrySafety::Always);
        let err = grant.request(None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        assert_eq!(err.status(), Some(http::StatusCode::BAD_GATEWAY));
        assert_eq!(log.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn client_credentials_never_retries_a_rejection() {
        let (transport, log) = endpoint(|_| answer(401, r#"{"error":"invalid_client"}"#));
        let grant = ClientCredentials::new(transport, URL).unwrap();
        let err = grant.request(None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_eq!(log.calls(), 1);
    }

    #[test]
    fn form_encoding_follows_whatwg() {
        assert_eq!(
            form_encode("a b+c:d@e/é*-._~"),
            "a+b%2Bc%3Ad%40e%2F%C3%A9*-._%7E"
        );
    }
}
