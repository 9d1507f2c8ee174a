//! [`JsonGrant`]: refresh against a backend's own JSON dialect.
//!
//! Admin back ends rarely speak RFC 6749. A typical admin back end's refresh call is
//! `POST /auth/refresh {"refreshToken": "..."}` answered by
//! `{"code": 0, "message": "ok", "result": {"accessToken": ..., "refreshToken": ..., "expiresIn": ...}}`
//! (or `instance.get(url, params)` with the token in the query, or the refresh token sent as
//! a bearer). Rather than one preset per back end, the grant maps fields: where the refresh
//! token goes in the request, and where each field sits in the answer
//! ([`TokenResponseFields`]), including the dialect's result code and which codes mean the
//! session is over.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use serde_json::{Map, Value};
use xhttp_core::mask::KnownSecret;
use xhttp_core::{Body, Error, ErrorKind};

use super::exchange::{exchange, token_url, with_query};
use super::{GrantResponse, GrantTransport, RefreshGrant, TokenResponseFields};
use crate::Secret;

/// A refresh grant for a backend's own JSON dialect.
///
/// Defaults, matching common admin back ends and the testkit's `/auth/refresh`: `POST` with the JSON body
/// `{"refreshToken": "<refresh token>"}`, and the answer read with
/// [`TokenResponseFields::envelope`] (`/result/accessToken`, `/result/refreshToken`,
/// `/result/expiresIn`; code `0` is success, code `401` means the refresh token is dead).
///
/// Where the refresh token goes: [`body_field`](Self::body_field) (with `GET`, the field goes
/// in the query instead, as `instance.get(url, { params })` does),
/// [`query_param`](Self::query_param) or [`header`](Self::header). Like
/// [`OAuth2Refresh`](super::OAuth2Refresh), it resends only requests that provably never
/// reached the server, because the refresh token may rotate.
///
/// ```
/// use xhttp_auth::{GrantTransport, JsonGrant, RefreshGrant, Secret};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // What the testkit's `/auth/refresh` does, in miniature.
/// let transport = GrantTransport::new(tower::service_fn(|request: http::Request<xhttp_core::Body>| async move {
///     assert_eq!(request.body().as_bytes().unwrap(), r#"{"refreshToken":"r1"}"#);
///     let body = br#"{"code":0,"message":"ok","result":{"accessToken":"a2","refreshToken":"r2","expiresIn":900}}"#;
///     Ok::<_, xhttp_core::Error>(http::Response::new(bytes::Bytes::from_static(body)))
/// }));
///
/// let grant = JsonGrant::new(transport, "http://127.0.0.1:8080/auth/refresh")?;
/// let tokens = grant.request(Some(&Secret::new("r1"))).await?;
/// assert_eq!(tokens.access_token.expose(), "a2");
/// assert_eq!(tokens.refresh_token.unwrap().expose(), "r2");
/// # Ok::<(), xhttp_core::Error>(())
/// # }).unwrap();
/// ```
///
/// Another dialect: `GET /token/refresh?rt=…` answered by `{"Code":200,"Msg":"…","Data":{"token":"…"}}`:
///
/// ```
/// use http::Method;
/// use xhttp_auth::{GrantTransport, JsonGrant, TokenResponseFields};
///
/// # let transport = GrantTransport::new(tower::service_fn(|_: http::Request<xhttp_core::Body>| async {
/// #     Ok::<_, xhttp_core::Error>(http::Response::new(bytes::Bytes::new()))
/// # }));
/// let grant = JsonGrant::new(transport, "https://api.example.com/token/refresh")?
///     .method(Method::GET)
///     .body_field("rt")
///     .field("client", "admin-web")
///     .response_fields(
///         TokenResponseFields::new("/Data/token")
///             .code("/Code", [200])
///             .definitive_codes([401])
///             .message("/Msg"),
///     );
/// # Ok::<(), xhttp_core::Error>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct JsonGrant {
    transport: GrantTransport,
    url: Uri,
    method: Method,
    placement: Placement,
    fields: Map<String, Value>,
    /// Every configured field's values, registered with the masker while the grant lives.
    known: Vec<(String, Arc<[KnownSecret]>)>,
    response: TokenResponseFields,
}

/// Where the refresh token goes in the request.
#[derive(Clone)]
enum Placement {
    /// A field of the JSON body (a query parameter for `GET`).
    BodyField(String),
    /// A query parameter.
    QueryParam(String),
    /// A header: `name: prefix token`.
    Header { name: HeaderName, prefix: String },
}

impl JsonGrant {
    /// A grant against `url` with the defaults above, sending through `transport`.
    ///
    /// Fails with [`ErrorKind::InvalidRequest`] when `url` is not an absolute `http` or
    /// `https` URL, and with
    /// [`ErrorKind::InsecureTransport`](xhttp_core::ErrorKind::InsecureTransport) for plain
    /// `http` to anything but a loopback address (write `127.0.0.1`: `localhost` is a name).
    ///
    /// ```
    /// # let transport = xhttp_auth::GrantTransport::new(tower::service_fn(|_: http::Request<xhttp_core::Body>| async {
    /// #     Ok::<_, xhttp_core::Error>(http::Response::new(bytes::Bytes::new()))
    /// # }));
    /// assert!(xhttp_auth::JsonGrant::new(transport, "auth/refresh").is_err());
    /// ```
    pub fn new(transport: GrantTransport, url: &str) -> Result<JsonGrant, Error> {
        Ok(JsonGrant {
            transport,
            url: token_url(url)?,
            method: Method::POST,
            placement: Placement::BodyField("refreshToken".to_owned()),
            fields: Map::new(),
            known: Vec::new(),
            response: TokenResponseFields::envelope(),
        })
    }

    /// The request method; default `POST`. With `GET` (or `HEAD`) there is no body: body
    /// fields, the refresh token's included, go in the query.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Sends the refresh token as the body field `name` (the default, `"refreshToken"`).
    pub fn body_field(mut self, name: impl Into<String>) -> Self {
        self.placement = Placement::BodyField(name.into());
        self
    }

    /// Sends the refresh token as the query parameter `name`.
    ///
    /// A URL is logged far more often than a body: prefer a body field or a header where the
    /// back end allows it. Errors from this grant never show the token either way.
    pub fn query_param(mut self, name: impl Into<String>) -> Self {
        self.placement = Placement::QueryParam(name.into());
        self
    }

    /// Sends the refresh token in the header `name`, after `prefix` and a space when the
    /// prefix is not empty: `header(AUTHORIZATION, "Bearer")` sends
    /// `Authorization: Bearer <refresh token>`. The header is marked sensitive.
    pub fn header(mut self, name: HeaderName, prefix: impl Into<String>) -> Self {
        self.placement = Placement::Header {
            name,
            prefix: prefix.into(),
        };
        self
    }

    /// A static field sent with every request (in the body, or the query for `GET`).
    ///
    /// Such fields are often credentials (`username`, `password`, a client key), so every
    /// value in it (each string and number, nested ones included) is registered with the core
    /// masker ([`KnownSecret`]) for as long as the grant lives: no error or log line shows it,
    /// even quoted back by the server. `Debug` prints the field names only.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        let value = value.into();
        let mut guards = Vec::new();
        register_values(&value, &mut guards);
        self.known.retain(|(known, _)| *known != name);
        self.known.push((name.clone(), Arc::from(guards)));
        self.fields.insert(name, value);
        self
    }

    /// Where the fields of the answer sit; default [`TokenResponseFields::envelope`].
    pub fn response_fields(mut self, fields: TokenResponseFields) -> Self {
        self.response = fields;
        self
    }

    fn has_body(&self) -> bool {
        !matches!(self.method, Method::GET | Method::HEAD)
    }

    fn build(&self, refresh_token: &Secret) -> Result<Request<Body>, Error> {
        let mut body = self.fields.clone();
        let mut query: Vec<(String, String)> = Vec::new();
        let mut header = None;
        match &self.placement {
            Placement::BodyField(name) => {
                body.insert(name.clone(), Value::from(refresh_token.expose()));
            }
            Placement::QueryParam(name) => {
                query.push((name.clone(), refresh_token.expose().to_owned()));
            }
            Placement::Header { name, prefix } => {
                let value = match prefix.trim_end() {
                    "" => refresh_token.expose().to_owned(),
                    prefix => format!("{prefix} {}", refresh_token.expose()),
                };
                let mut value = HeaderValue::try_from(value).map_err(|_| {
                    // No request can ever carry this token: the session cannot be refreshed.
                    Error::new(ErrorKind::SessionExpired)
                        .with_message("the refresh token cannot be sent in a header")
                })?;
                value.set_sensitive(true);
                header = Some((name.clone(), value));
            }
        }
        if !self.has_body() {
            // The body's fields travel in the query, before a query placement's token.
            let mut fields: Vec<(String, String)> = body
                .into_iter()
                .map(|(name, value)| (name, query_text(value)))
                .collect();
            fields.append(&mut query);
            query = fields;
            body = Map::new();
        }
        let query = serde_urlencoded::to_string(&query)
            .map_err(|_| Error::invalid_request("could not encode the token request query"))?;
        let uri = with_query(&self.url, &query)?;

        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(uri)
            .header(ACCEPT, "application/json");
        let payload = if self.has_body() {
            builder = builder.header(CONTENT_TYPE, "application/json");
            let bytes = serde_json::to_vec(&Value::Object(body))
                .map_err(|_| Error::invalid_request("could not encode the token request body"))?;
            Body::from(bytes)
        } else {
            Body::empty()
        };
        let mut request = builder
            .body(payload)
            .map_err(|_| Error::invalid_request("could not build the token request"))?;
        if let Some((name, value)) = header {
            request.headers_mut().insert(name, value);
        }
        Ok(request)
    }
}

/// Registers every string and number inside `value` with the masker.
fn register_values(value: &Value, guards: &mut Vec<KnownSecret>) {
    match value {
        Value::String(text) => guards.push(KnownSecret::register(text)),
        Value::Number(number) => guards.push(KnownSecret::register(&number.to_string())),
        Value::Array(items) => items.iter().for_each(|item| register_values(item, guards)),
        Value::Object(map) => map.values().for_each(|item| register_values(item, guards)),
        Value::Null | Value::Bool(_) => {}
    }
}

/// A JSON value as a query parameter: strings as they are, `null` as nothing, anything else
/// as its JSON text.
fn query_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl RefreshGrant for JsonGrant {
    fn request<'a>(
        &'a self,
        refresh_token: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        Box::pin(async move {
            let refresh_token = super::exchange::require_refresh_token(refresh_token)?;
            exchange(
                &self.transport,
                || self.build(refresh_token),
                &self.response,
                &[refresh_token.expose()],
            )
            .await
        })
    }
}

impl fmt::Debug for JsonGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let placement = match &self.placement {
            Placement::BodyField(name) if self.has_body() => format!("body field {name:?}"),
            Placement::BodyField(name) | Placement::QueryParam(name) => {
                format!("query parameter {name:?}")
            }
            Placement::Header { name, .. } => format!("header {name}"),
        };
        let fields: Vec<&str> = self.fields.keys().map(String::as_str).collect();
        f.debug_struct("JsonGrant")
            .field("method", &self.method)
            .field("url", &xhttp_core::redact::uri(&self.url))
            .field("refresh_token", &format_args!("{placement}"))
            .field("fields", &fields)
            .field("response", &self.response)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{answer, endpoint, refused};
    use super::*;
    use http::header::AUTHORIZATION;

    const SECRET_RT: &str = "SECRET-RT-123";
    const URL: &str = "https://api.example.com/auth/refresh";
    const OK: &str = r#"{"code":0,"message":"ok","result":{"accessToken":"a2","refreshToken":"r2","expiresIn":"900"}}"#;

    fn refresh_token() -> Secret {
        Secret::new(SECRET_RT)
    }

    #[tokio::test]
    async fn field_values_are_known_secrets_while_the_grant_lives() {
        use xhttp_core::mask::server_text;
        let (transport, _log) = endpoint(|_| answer(200, OK));
        let grant = JsonGrant::new(transport, URL)
            .unwrap()
            .field("username", "SECRET-user-json")
            .field(
                "credentials",
                serde_json::json!({"password": "SECRET-pass-json", "pin": 9876543}),
            );
        let quoted = |value: &str| server_text(&format!("bad login {value}"), 200);
        for value in ["SECRET-user-json", "SECRET-pass-json", "9876543"] {
            assert!(!quoted(value).contains(value), "{value}");
        }
        assert!(!format!("{grant:?}").contains("SECRET"));
        let clone = grant.clone();
        drop(grant);
        assert!(
            !quoted("SECRET-pass-json").contains("SECRET-pass-json"),
            "clones keep them"
        );
        drop(clone);
        assert!(
            quoted("SECRET-pass-json").contains("SECRET-pass-json"),
            "forgotten with the grant"
        );
    }

    #[tokio::test]
    async fn default_posts_refresh_token_as_json_and_reads_the_envelope() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = JsonGrant::new(transport, URL).unwrap();
        let tokens = grant.request(Some(&refresh_token())).await.unwrap();
        assert_eq!(tokens.access_token.expose(), "a2");
        assert_eq!(tokens.refresh_token.unwrap().expose(), "r2");
        assert_eq!(tokens.expires_in, Some(std::time::Duration::from_secs(900)));

        let seen = log.last();
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.uri, URL);
        assert_eq!(seen.body, r#"{"refreshToken":"SECRET-RT-123"}"#);
        assert_eq!(seen.headers[CONTENT_TYPE], "application/json");
        assert_eq!(seen.headers[ACCEPT], "application/json");
        assert_eq!(
            seen.body_limit,
            Some(crate::grant::exchange::TOKEN_RESPONSE_LIMIT)
        );
    }

    #[tokio::test]
    async fn extra_fields_join_the_body() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = JsonGrant::new(transport, URL)
            .unwrap()
            .body_field("refresh_token")
            .field("clientId", "admin-web")
            .field("remember", true);
        grant.request(Some(&refresh_token())).await.unwrap();
        let body: Value = serde_json::from_slice(&log.last().body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"clientId": "admin-web", "remember": true, "refresh_token": SECRET_RT})
        );
    }

    #[tokio::test]
    async fn get_puts_the_refresh_token_and_fields_in_the_query() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = JsonGrant::new(transport, "https://api.example.com/auth/refresh?v=2")
            .unwrap()
            .method(Method::GET)
            .field("client", "admin web");
        grant.request(Some(&refresh_token())).await.unwrap();
        let seen = log.last();
        assert_eq!(seen.method, Method::GET);
        assert_eq!(
            seen.uri,
            "https://api.example.com/auth/refresh?v=2&client=admin+web&refreshToken=SECRET-RT-123"
        );
        assert!(seen.body.is_empty());
        assert!(seen.headers.get(CONTENT_TYPE).is_none());
    }

    #[tokio::test]
    async fn query_param_with_post_keeps_fields_in_the_body() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = JsonGrant::new(transport, URL)
            .unwrap()
            .query_param("rt")
            .field("app", "x");
        grant.request(Some(&refresh_token())).await.unwrap();
        let seen = log.last();
        assert_eq!(seen.uri, format!("{URL}?rt=SECRET-RT-123"));
        assert_eq!(seen.body, r#"{"app":"x"}"#);
    }

    #[tokio::test]
    async fn header_placement_sends_a_sensitive_bearer() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = JsonGrant::new(transport, URL)
            .unwrap()
            .header(AUTHORIZATION, "Bearer");
        grant.request(Some(&refresh_token())).await.unwrap();
        let seen = log.last();
        assert_eq!(seen.headers[AUTHORIZATION], "Bearer SECRET-RT-123");
        assert!(seen.headers[AUTHORIZATION].is_sensitive());
        assert_eq!(seen.body, "{}");

        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = JsonGrant::new(transport, URL)
            .unwrap()
            .header(HeaderName::from_static("x-refresh-token"), "");
        grant.request(Some(&refresh_token())).await.unwrap();
        assert_eq!(log.last().headers["x-refresh-token"], SECRET_RT);
    }

    #[tokio::test]
    async fn a_refresh_token_no_header_can_carry_is_session_expired_without_a_call() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = JsonGrant::new(transport, URL)
            .unwrap()
            .header(AUTHORIZATION, "Bearer");
        let err = grant
            .request(Some(&Secret::new("bad\ntoken")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert!(!err.to_string().contains("bad"));
        assert_eq!(log.calls(), 0);
    }

    #[tokio::test]
    async fn definitive_dialect_code_is_session_expired() {
        let (transport, _) = endpoint(|_| {
            answer(
                200,
                r#"{"code":401,"message":"invalid refresh token","result":null}"#,
            )
        });
        let grant = JsonGrant::new(transport, URL).unwrap();
        let err = grant.request(Some(&refresh_token())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_eq!(
            err.message(),
            Some("the token endpoint answered code 401: invalid refresh token")
        );
    }

    #[tokio::test]
    async fn missing_refresh_token_is_session_expired_without_a_call() {
        let (transport, log) = endpoint(|_| answer(200, OK));
        let grant = JsonGrant::new(transport, URL).unwrap();
        assert!(grant.needs_refresh_token());
        assert_eq!(
            grant.request(None).await.unwrap_err().kind(),
            ErrorKind::SessionExpired
        );
        assert_eq!(log.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_is_one_call_and_a_rotating_grant_retries_only_unprocessed_calls() {
        let (transport, log) = endpoint(|_| refused());
        let grant = JsonGrant::new(transport, URL).unwrap();
        let err = grant.request(Some(&refresh_token())).await.unwrap_err();
        assert!(err.is_never_sent());
        assert_eq!(log.calls(), 1);
        assert_eq!(
            grant.retry_safety(),
            crate::grant::RetrySafety::NotProcessed
        );

        let (transport, log) = endpoint(|_| answer(503, ""));
        let grant = JsonGrant::new(transport, URL).unwrap();
        let err = grant.request(Some(&refresh_token())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        assert_eq!(log.calls(), 1);
    }

    #[tokio::test]
    async fn debug_and_errors_never_show_the_refresh_token() {
        // A query parameter whose name does not look secret, and a cause that records the
        // request URL: the error still hides the token.
        let (transport, _) = endpoint(|_| {
            let uri: Uri = format!("{URL}?rt={SECRET_RT}").parse().unwrap();
            Err(Error::transport("reset").with_method_uri(&Method::GET, &uri))
        });
        let grant = JsonGrant::new(transport, URL)
            .unwrap()
            .method(Method::GET)
            .query_param("rt");
        let shown = format!("{grant:?}");
        assert!(shown.contains("query parameter \"rt\""), "{shown}");
        let err = grant.request(Some(&refresh_token())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(SECRET_RT), "{shown}");
    }
}
