//! Reading a token endpoint's answer, whatever shape it comes in.
//!
//! Token endpoints disagree in small ways that each break a naive client, so every grant reads
//! its answer through [`parse_token_response`], which knows them all:
//!
//! - an OAuth error on HTTP 200 (`{"error": "invalid_grant"}`), which some servers send
//!   instead of the 400 of RFC 6749 section 5.2;
//! - a backend's own envelope (`{"code": 401, "message": ..., "result": null}` on HTTP 200),
//!   read through a code pointer with success and "definitive" codes;
//! - `expires_in` as a number, a float or a string (`"3600"`), or missing altogether; when it
//!   is missing and the access token is a JWT, its `exp` claim is used, measured against the
//!   server's `Date` header so that a client with a wrong wall clock still refreshes on time;
//! - a missing or empty `access_token` (an error) and an empty `refresh_token` (none: the old
//!   one is kept).
//!
//! Where each field sits is a [`TokenResponseFields`]. No error built here quotes the body:
//! a token response carries credentials.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, Response, StatusCode};
use serde_json::Value;
use tokio::time::Instant;
use xhttp_core::error::RefreshFailure;
use xhttp_core::json::{business_code, describe_error, normalize, pointer};
use xhttp_core::{BusinessCode, Error, ErrorKind};

use super::GrantResponse;
use crate::Secret;

/// The longest lifetime believed: ten years. A larger `expires_in` or `exp` is capped, so no
/// instant arithmetic downstream can overflow.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The longest JWT payload decoded (16 KiB): a payload worth reading is a few hundred bytes,
/// and the cap bounds the work done on a hostile token.
const MAX_JWT_PAYLOAD: usize = 16 * 1024;

/// The longest server message copied into an error, in characters (as the status layer's).
const MAX_MESSAGE_CHARS: usize = 256;

/// OAuth error codes that mean "this credential will never work" (RFC 6749 section 5.2).
const DEFINITIVE_OAUTH_ERRORS: [&str; 6] = [
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_request",
];

/// OAuth error codes that say "try later" even on a 400 (RFC 6749 section 4.1.2.1 defines
/// them for the authorization endpoint; some token endpoints reuse them).
const TRANSIENT_OAUTH_ERRORS: [&str; 2] = ["temporarily_unavailable", "server_error"];

/// Where the fields of a token response sit, as JSON pointers (RFC 6901).
///
/// A pointer given without a leading `/` is taken as a top-level field name, so
/// `"access_token"` and `"/access_token"` mean the same.
///
/// Two presets: [`TokenResponseFields::oauth2`] for RFC 6749 token endpoints, and
/// [`TokenResponseFields::envelope`] for the `{code, message, result}` envelope of admin
/// back ends (vue-vben-admin's dialect, and the testkit's `/auth/refresh`).
///
/// ```
/// use xhttp_auth::TokenResponseFields;
///
/// // {"Code": 200, "Msg": "...", "Data": {"token": "...", "refresh": "...", "ttl": 7200}}
/// let fields = TokenResponseFields::new("/Data/token")
///     .refresh_token("/Data/refresh")
///     .expires_in("/Data/ttl")
///     .code("/Code", [200])
///     .definitive_codes([401, 403])
///     .message("/Msg");
/// assert_eq!(fields.access_token_pointer(), "/Data/token");
/// ```
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct TokenResponseFields {
    access_token: Box<str>,
    refresh_token: Option<Box<str>>,
    expires_in: Option<Box<str>>,
    code: Option<Box<str>>,
    success_codes: Vec<BusinessCode>,
    definitive_codes: Vec<BusinessCode>,
    message: Option<Box<str>>,
    error: Option<Box<str>>,
    error_description: Option<Box<str>>,
}

impl TokenResponseFields {
    /// Only an access token at `access_token` (a pointer or a top-level name); add the other
    /// fields with the builder methods.
    ///
    /// ```
    /// use xhttp_auth::TokenResponseFields;
    /// let fields = TokenResponseFields::new("token");
    /// assert_eq!(fields.access_token_pointer(), "/token");
    /// ```
    pub fn new(access_token: &str) -> TokenResponseFields {
        TokenResponseFields {
            access_token: pointer(access_token),
            refresh_token: None,
            expires_in: None,
            code: None,
            success_codes: Vec::new(),
            definitive_codes: Vec::new(),
            message: None,
            error: None,
            error_description: None,
        }
    }

    /// RFC 6749 section 5.1: `/access_token`, `/refresh_token`, `/expires_in`, and the error
    /// response of section 5.2 at `/error` and `/error_description`.
    ///
    /// ```
    /// use xhttp_auth::TokenResponseFields;
    /// let fields = TokenResponseFields::oauth2();
    /// assert_eq!(fields.access_token_pointer(), "/access_token");
    /// ```
    pub fn oauth2() -> TokenResponseFields {
        TokenResponseFields::new("/access_token")
            .refresh_token("/refresh_token")
            .expires_in("/expires_in")
            .oauth_error("/error", "/error_description")
    }

    /// The `{code, message, result}` envelope: `/result/accessToken`, `/result/refreshToken`,
    /// `/result/expiresIn`; code `0` is success, code `401` means the refresh token is dead;
    /// the message at `/message`. This is what the testkit's `/auth/refresh` answers.
    ///
    /// ```
    /// use xhttp_auth::TokenResponseFields;
    /// let fields = TokenResponseFields::envelope();
    /// assert_eq!(fields.access_token_pointer(), "/result/accessToken");
    /// ```
    pub fn envelope() -> TokenResponseFields {
        TokenResponseFields::new("/result/accessToken")
            .refresh_token("/result/refreshToken")
            .expires_in("/result/expiresIn")
            .code("/code", [0])
            .definitive_codes([401])
            .message("/message")
    }

    /// Where the access token sits.
    pub fn access_token(mut self, pointer_or_name: &str) -> Self {
        self.access_token = pointer(pointer_or_name);
        self
    }

    /// Where the refresh token sits (absent or `""` in a response: the old one is kept).
    pub fn refresh_token(mut self, pointer_or_name: &str) -> Self {
        self.refresh_token = Some(pointer(pointer_or_name));
        self
    }

    /// Where the lifetime in seconds sits (a number or a numeric string).
    pub fn expires_in(mut self, pointer_or_name: &str) -> Self {
        self.expires_in = Some(pointer(pointer_or_name));
        self
    }

    /// Where the dialect's result code sits, and which codes mean success. A response whose
    /// code is missing or not a success fails: with
    /// [`SessionExpired`](ErrorKind::SessionExpired) when the code is one of the
    /// [`definitive_codes`](Self::definitive_codes), else with
    /// [`RefreshFailed`](ErrorKind::RefreshFailed). A numeric string (`"0"`) equals the
    /// number.
    pub fn code<C: Into<BusinessCode>>(
        mut self,
        pointer_or_name: &str,
        success: impl IntoIterator<Item = C>,
    ) -> Self {
        self.code = Some(pointer(pointer_or_name));
        self.success_codes = success.into_iter().map(|c| normalize(c.into())).collect();
        self
    }

    /// The dialect's codes that mean the refresh credential is dead (the session is over).
    pub fn definitive_codes<C: Into<BusinessCode>>(
        mut self,
        codes: impl IntoIterator<Item = C>,
    ) -> Self {
        self.definitive_codes = codes.into_iter().map(|c| normalize(c.into())).collect();
        self
    }

    /// Where the dialect's readable message sits, copied into errors.
    pub fn message(mut self, pointer_or_name: &str) -> Self {
        self.message = Some(pointer(pointer_or_name));
        self
    }

    /// Where an OAuth error code and its description sit (RFC 6749 section 5.2). A response
    /// carrying an error code fails even on HTTP 200.
    pub fn oauth_error(mut self, error: &str, error_description: &str) -> Self {
        self.error = Some(pointer(error));
        self.error_description = Some(pointer(error_description));
        self
    }

    /// The JSON pointer of the access token.
    pub fn access_token_pointer(&self) -> &str {
        &self.access_token
    }
}

impl Default for TokenResponseFields {
    /// [`TokenResponseFields::oauth2`].
    fn default() -> Self {
        TokenResponseFields::oauth2()
    }
}

impl fmt::Debug for TokenResponseFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TokenResponseFields");
        d.field("access_token", &self.access_token);
        if let Some(p) = &self.refresh_token {
            d.field("refresh_token", p);
        }
        if let Some(p) = &self.expires_in {
            d.field("expires_in", p);
        }
        if let Some(p) = &self.code {
            d.field("code", p)
                .field("success_codes", &self.success_codes)
                .field("definitive_codes", &self.definitive_codes);
        }
        if let Some(p) = &self.message {
            d.field("message", p);
        }
        if let Some(p) = &self.error {
            d.field("error", p);
        }
        d.finish()
    }
}

/// Parses a token endpoint's response into a [`GrantResponse`].
///
/// `received_at` is when the response arrived, on tokio's clock; `system_now` is the wall
/// clock then, used only to read a JWT's `exp` when the response has no `Date` header.
///
/// Errors:
/// - HTTP 400 or 401: [`SessionExpired`](ErrorKind::SessionExpired), the credential is dead
///   (RFC 6749 section 5.2), unless the body names a transient OAuth error
///   (`temporarily_unavailable`, `server_error`);
/// - any other non-2xx status: [`RefreshFailed`](ErrorKind::RefreshFailed), with the status;
/// - a 2xx whose body is not JSON, has no usable access token, or carries a dialect code that
///   is not a success: `RefreshFailed`, or `SessionExpired` for a definitive code;
/// - a 2xx carrying an OAuth `error`: as if it had come with a 400.
///
/// Never panics, and no error quotes the body.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use xhttp_auth::grant::parse_token_response;
/// use xhttp_auth::TokenResponseFields;
/// use xhttp_core::ErrorKind;
///
/// let now = tokio::time::Instant::now();
/// let ok = http::Response::new(bytes::Bytes::from_static(
///     br#"{"access_token":"at","refresh_token":"rt","expires_in":"3600"}"#,
/// ));
/// let tokens = parse_token_response(&ok, &TokenResponseFields::oauth2(), now, SystemTime::now())?;
/// assert_eq!(tokens.access_token.expose(), "at");
/// assert_eq!(tokens.expires_in, Some(Duration::from_secs(3600)));
///
/// let dead = http::Response::new(bytes::Bytes::from_static(br#"{"error":"invalid_grant"}"#));
/// let err = parse_token_response(&dead, &TokenResponseFields::oauth2(), now, SystemTime::now())
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::SessionExpired);
/// # Ok::<(), xhttp_core::Error>(())
/// ```
pub fn parse_token_response(
    response: &Response<Bytes>,
    fields: &TokenResponseFields,
    received_at: Instant,
    system_now: SystemTime,
) -> Result<GrantResponse, Error> {
    let status = response.status();
    // serde_json keeps the last of duplicate keys; every field below is read from this one
    // value, so no path can disagree with another about which one counts.
    let json: Result<Value, serde_json::Error> = serde_json::from_slice(response.body());

    if !status.is_success() {
        return Err(failure_status(status, json.as_ref().ok(), fields));
    }
    let json = match json {
        Ok(json) => json,
        // serde's message quotes the offending text, which may be a token: category and
        // position only.
        Err(err) => {
            return Err(refresh_failed(&format!(
                "token response is not JSON ({})",
                describe_error(&err)
            ))
            .with_status(status))
        }
    };

    if let Some(error) = oauth_error(&json, fields) {
        return Err(error.with_status(status));
    }
    if let Some(error) = dialect_failure(&json, fields) {
        return Err(error.with_status(status));
    }

    let access_token = match json.pointer(&fields.access_token) {
        Some(Value::String(token)) if !token.is_empty() => token,
        _ => return Err(refresh_failed("token response has no access_token").with_status(status)),
    };
    let access_token_secret = Secret::from(access_token.as_str());
    if let Err(why) = crate::token::check_access_token(&access_token_secret) {
        // An Authorization header could not carry it, so every request would fail.
        return Err(refresh_failed(why).with_status(status));
    }

    let refresh_token = fields
        .refresh_token
        .as_deref()
        .and_then(|p| json.pointer(p))
        .and_then(Value::as_str)
        .filter(|token| !token.is_empty())
        .map(Secret::from);
    if let Some(Err(why)) = refresh_token
        .as_ref()
        .map(crate::token::check_refresh_token)
    {
        return Err(refresh_failed(why).with_status(status));
    }

    let expires_in = fields
        .expires_in
        .as_deref()
        .and_then(|p| json.pointer(p))
        .and_then(lifetime)
        .or_else(|| jwt_lifetime(access_token, server_now(response, system_now)));

    Ok(GrantResponse {
        access_token: access_token_secret,
        refresh_token,
        expires_in,
        received_at,
    })
}

/// The error for a non-2xx answer.
fn failure_status(status: StatusCode, json: Option<&Value>, fields: &TokenResponseFields) -> Error {
    let oauth = json.and_then(|json| oauth_code_and_message(json, fields));
    let message = match (&oauth, json) {
        (Some((_, message)), _) => Some(message.clone()),
        (None, Some(json)) => text_at(json, fields.message.as_deref()),
        (None, None) => None,
    };
    let transient = oauth
        .as_ref()
        .is_some_and(|(code, _)| TRANSIENT_OAUTH_ERRORS.contains(&code.as_str()));
    let kind = if matches!(status.as_u16(), 400 | 401) && !transient {
        ErrorKind::SessionExpired
    } else {
        ErrorKind::RefreshFailed
    };
    let message = message.unwrap_or_else(|| format!("the token endpoint answered {status}"));
    Error::new(kind)
        .with_message(message)
        .with_status(status)
        .with_refresh_failure(RefreshFailure::Endpoint)
}

/// The error for an OAuth `error` field in a 2xx answer, if there is one.
fn oauth_error(json: &Value, fields: &TokenResponseFields) -> Option<Error> {
    let (code, message) = oauth_code_and_message(json, fields)?;
    let kind = if DEFINITIVE_OAUTH_ERRORS.contains(&code.as_str()) {
        ErrorKind::SessionExpired
    } else {
        ErrorKind::RefreshFailed
    };
    Some(
        Error::new(kind)
            .with_message(message)
            .with_refresh_failure(RefreshFailure::Endpoint),
    )
}

/// The OAuth error code and a readable message (`code: description`), when the body has one.
fn oauth_code_and_message(json: &Value, fields: &TokenResponseFields) -> Option<(String, String)> {
    let code = text_at(json, fields.error.as_deref())?;
    let message = match text_at(json, fields.error_description.as_deref()) {
        Some(description) => format!("{code}: {description}"),
        None => code.clone(),
    };
    Some((code, message))
}

/// The error for a dialect code that is not a success, if a code pointer is configured.
fn dialect_failure(json: &Value, fields: &TokenResponseFields) -> Option<Error> {
    let pointer = fields.code.as_deref()?;
    let Some(code) = json.pointer(pointer).and_then(business_code) else {
        return Some(refresh_failed("token response has no result code"));
    };
    if fields.success_codes.contains(&code) {
        return None;
    }
    let kind = if fields.definitive_codes.contains(&code) {
        ErrorKind::SessionExpired
    } else {
        ErrorKind::RefreshFailed
    };
    let message = match text_at(json, fields.message.as_deref()) {
        Some(text) => format!("the token endpoint answered code {code}: {text}"),
        None => format!("the token endpoint answered code {code}"),
    };
    Some(
        Error::new(kind)
            .with_message(message)
            .with_refresh_failure(RefreshFailure::Endpoint),
    )
}

/// A 2xx answer that cannot be read as tokens.
fn refresh_failed(message: &str) -> Error {
    Error::new(ErrorKind::RefreshFailed)
        .with_message(message)
        .with_refresh_failure(RefreshFailure::Malformed)
}

/// A non-empty string at `pointer`, made safe to print by the core masker: known secrets
/// and credential shapes masked, control and invisible characters cleaned, length capped.
fn text_at(json: &Value, pointer: Option<&str>) -> Option<String> {
    let text = json.pointer(pointer?)?.as_str()?;
    xhttp_core::mask::server_message(text, MAX_MESSAGE_CHARS)
}

/// `expires_in` as seconds: a number, a float or a numeric string. Zero, negative, non-finite
/// or non-numeric values are not a lifetime (a server that sends `0` does not mean a token
/// dead on arrival, and believing it would refresh on every request).
fn lifetime(value: &Value) -> Option<Duration> {
    let seconds = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return None;
    }
    capped_seconds(seconds)
}

fn capped_seconds(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds.min(MAX_LIFETIME.as_secs_f64())).ok()
}

/// The server's clock: its `Date` header, else the local wall clock.
fn server_now(response: &Response<Bytes>, system_now: SystemTime) -> SystemTime {
    response
        .headers()
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or(system_now)
}

/// The time left before a JWT's `exp` (RFC 7519 section 4.1.4), counted from `server_now`;
/// zero when `exp` has passed. `None` when the token is not a JWT with a numeric `exp`.
fn jwt_lifetime(token: &str, server_now: SystemTime) -> Option<Duration> {
    let mut segments = token.split('.');
    let (_header, payload, _signature) = (segments.next()?, segments.next()?, segments.next()?);
    if segments.next().is_some() || payload.len() > MAX_JWT_PAYLOAD {
        return None;
    }
    // JWT segments are unpadded base64url (RFC 7515 section 2); padding is refused.
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    if !exp.is_finite() {
        return None;
    }
    let now = match server_now.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    };
    let left = exp - now;
    if left <= 0.0 {
        return Some(Duration::ZERO);
    }
    capped_seconds(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET_AT: &str = "SECRET-AT-123";
    const SECRET_RT: &str = "SECRET-RT-123";

    fn response(status: u16, body: &str) -> Response<Bytes> {
        let mut response = Response::new(Bytes::copy_from_slice(body.as_bytes()));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    }

    fn parse(response: &Response<Bytes>) -> Result<GrantResponse, Error> {
        parse_token_response(
            response,
            &TokenResponseFields::oauth2(),
            Instant::now(),
            SystemTime::now(),
        )
    }

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode(b"signature")
        )
    }

    fn unix(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn assert_no_secret(err: &Error) {
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(SECRET_AT), "{shown}");
        assert!(!shown.contains(SECRET_RT), "{shown}");
    }

    #[test]
    fn rfc_6749_success_is_read_with_every_field() {
        let body = format!(
            r#"{{"access_token":"{SECRET_AT}","refresh_token":"{SECRET_RT}","token_type":"Bearer","expires_in":3600}}"#
        );
        let received_at = Instant::now();
        let tokens = parse_token_response(
            &response(200, &body),
            &TokenResponseFields::oauth2(),
            received_at,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(tokens.access_token.expose(), SECRET_AT);
        assert_eq!(tokens.refresh_token.unwrap().expose(), SECRET_RT);
        assert_eq!(tokens.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(tokens.received_at, received_at);
    }

    #[test]
    fn oauth_error_on_http_200_is_classified_as_if_it_came_with_400() {
        let err = parse(&response(
            200,
            r#"{"error":"invalid_grant","error_description":"refresh token revoked"}"#,
        ))
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_eq!(err.message(), Some("invalid_grant: refresh token revoked"));

        for code in DEFINITIVE_OAUTH_ERRORS {
            let body = format!(r#"{{"error":"{code}"}}"#);
            let err = parse(&response(200, &body)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::SessionExpired, "{code}");
        }
        let err = parse(&response(200, r#"{"error":"mystery_failure"}"#)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    }

    #[test]
    fn http_400_invalid_grant_is_session_expired() {
        let err = parse(&response(
            400,
            r#"{"error":"invalid_grant","error_description":"the refresh token is unknown or revoked"}"#,
        ))
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            err.to_string(),
            "session expired, log in again: invalid_grant: the refresh token is unknown or revoked"
        );
    }

    #[test]
    fn http_401_without_a_body_is_session_expired() {
        let err = parse(&response(401, "")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn http_400_naming_a_transient_error_is_refresh_failed() {
        let err = parse(&response(400, r#"{"error":"temporarily_unavailable"}"#)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    }

    #[test]
    fn http_503_is_refresh_failed_with_the_status() {
        let err = parse(&response(503, "<html>busy</html>")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!err.to_string().contains("html"), "{err}");
    }

    #[test]
    fn body_that_is_not_json_is_refresh_failed_without_echoing_it() {
        let body = format!("access_token={SECRET_AT}&refresh_token={SECRET_RT}");
        let err = parse(&response(200, &body)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        assert_eq!(
            err.message(),
            Some("token response is not JSON (syntax error at line 1, column 1)")
        );
        assert_no_secret(&err);
    }

    #[test]
    fn string_expires_in_is_read_as_seconds() {
        let tokens = parse(&response(
            200,
            r#"{"access_token":"a","expires_in":"3600"}"#,
        ))
        .unwrap();
        assert_eq!(tokens.expires_in, Some(Duration::from_secs(3600)));
        let tokens = parse(&response(
            200,
            r#"{"access_token":"a","expires_in":" 90 "}"#,
        ))
        .unwrap();
        assert_eq!(tokens.expires_in, Some(Duration::from_secs(90)));
    }

    #[test]
    fn float_expires_in_is_read_as_seconds() {
        let tokens = parse(&response(200, r#"{"access_token":"a","expires_in":1.5}"#)).unwrap();
        assert_eq!(tokens.expires_in, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn negative_zero_or_garbage_expires_in_is_unknown() {
        for value in [
            "-5",
            "0",
            r#""soon""#,
            "null",
            "true",
            r#""NaN""#,
            r#""inf""#,
            "[]",
        ] {
            let body = format!(r#"{{"access_token":"a","expires_in":{value}}}"#);
            let tokens = parse(&response(200, &body)).unwrap();
            assert_eq!(tokens.expires_in, None, "{value}");
        }
    }

    #[test]
    fn huge_expires_in_is_capped_at_ten_years() {
        for value in [
            "1e300",
            "18446744073709551615",
            r#""99999999999999999999999""#,
        ] {
            let body = format!(r#"{{"access_token":"a","expires_in":{value}}}"#);
            let tokens = parse(&response(200, &body)).unwrap();
            assert_eq!(tokens.expires_in, Some(MAX_LIFETIME), "{value}");
            // The manager adds it to an instant: that must not panic.
            assert!(Instant::now().checked_add(MAX_LIFETIME).is_some());
        }
    }

    #[test]
    fn missing_access_token_is_refresh_failed() {
        for body in [
            r#"{"token_type":"Bearer","expires_in":3600}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":42}"#,
            r#"{"access_token":null}"#,
            "[]",
            "null",
        ] {
            let err = parse(&response(200, body)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::RefreshFailed, "{body}");
            assert_eq!(err.message(), Some("token response has no access_token"));
        }
    }

    #[test]
    fn access_token_that_cannot_be_a_header_is_refresh_failed() {
        let err = parse(&response(200, r#"{"access_token":"a\nb"}"#)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    }

    #[test]
    fn missing_expires_in_without_a_jwt_is_unknown() {
        let tokens = parse(&response(200, r#"{"access_token":"opaque"}"#)).unwrap();
        assert_eq!(tokens.expires_in, None);
        let tokens = parse(&response(200, r#"{"access_token":"a.b.c"}"#)).unwrap();
        assert_eq!(tokens.expires_in, None);
    }

    #[test]
    fn missing_expires_in_with_a_jwt_uses_its_exp() {
        let token = jwt(r#"{"sub":"admin","exp":1700000600}"#);
        let body = format!(r#"{{"access_token":"{token}"}}"#);
        let tokens = parse_token_response(
            &response(200, &body),
            &TokenResponseFields::oauth2(),
            Instant::now(),
            unix(1_700_000_000),
        )
        .unwrap();
        assert_eq!(tokens.expires_in, Some(Duration::from_secs(600)));
    }

    #[test]
    fn jwt_exp_is_measured_against_the_servers_date_not_the_local_clock() {
        let token = jwt(r#"{"exp":1700000600}"#);
        let body = format!(r#"{{"access_token":"{token}"}}"#);
        let mut response = response(200, &body);
        let server_now = unix(1_700_000_000);
        response.headers_mut().insert(
            header::DATE,
            httpdate::fmt_http_date(server_now).parse().unwrap(),
        );
        // The local clock runs an hour behind: without the Date header the token would seem
        // to live 4200 s, and would be used for an hour after it died.
        let local_now = server_now - Duration::from_secs(3600);
        let tokens = parse_token_response(
            &response,
            &TokenResponseFields::oauth2(),
            Instant::now(),
            local_now,
        )
        .unwrap();
        assert_eq!(tokens.expires_in, Some(Duration::from_secs(600)));
    }

    #[test]
    fn jwt_exp_in_the_past_is_zero() {
        let token = jwt(r#"{"exp":1000}"#);
        let body = format!(r#"{{"access_token":"{token}"}}"#);
        let tokens = parse_token_response(
            &response(200, &body),
            &TokenResponseFields::oauth2(),
            Instant::now(),
            unix(1_700_000_000),
        )
        .unwrap();
        assert_eq!(tokens.expires_in, Some(Duration::ZERO));
    }

    #[test]
    fn jwt_without_numeric_exp_is_unknown() {
        for claims in [
            r#"{"exp":"soon"}"#,
            r#"{"sub":"x"}"#,
            "not json",
            r#"{"exp":1e999}"#,
        ] {
            let token = jwt(claims);
            let body = format!(r#"{{"access_token":"{token}"}}"#);
            let tokens = parse(&response(200, &body)).unwrap();
            assert_eq!(tokens.expires_in, None, "{claims}");
        }
    }

    #[test]
    fn a_jwt_payload_that_is_padded_foreign_or_oversized_is_not_read() {
        let exp = r#"{"exp":1700000600}"#;
        let padded = URL_SAFE_NO_PAD.encode(exp) + "==";
        // The standard alphabet's `/`, unpadded: JSON that decodes, in the wrong alphabet.
        let standard =
            base64::engine::general_purpose::STANDARD.encode(r#"{"exp":1700000600,"n":"??"}"#);
        assert!(
            standard.contains('/') && !standard.ends_with('='),
            "{standard}"
        );
        let oversized = format!(
            r#"{{"exp":1700000600,"pad":"{}"}}"#,
            "x".repeat(MAX_JWT_PAYLOAD)
        );
        for payload in [padded, standard, URL_SAFE_NO_PAD.encode(oversized)] {
            let token = format!("e30.{payload}.c2ln");
            assert_eq!(jwt_lifetime(&token, unix(1_700_000_000)), None, "{payload}");
        }
        let token = format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(exp));
        assert_eq!(
            jwt_lifetime(&token, unix(1_700_000_000)),
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn explicit_expires_in_wins_over_jwt_exp() {
        let token = jwt(r#"{"exp":1700000600}"#);
        let body = format!(r#"{{"access_token":"{token}","expires_in":60}}"#);
        let tokens = parse_token_response(
            &response(200, &body),
            &TokenResponseFields::oauth2(),
            Instant::now(),
            unix(1_700_000_000),
        )
        .unwrap();
        assert_eq!(tokens.expires_in, Some(Duration::from_secs(60)));
    }

    #[test]
    fn missing_or_empty_refresh_token_keeps_the_old_one() {
        for body in [
            r#"{"access_token":"a"}"#,
            r#"{"access_token":"a","refresh_token":""}"#,
            r#"{"access_token":"a","refresh_token":null}"#,
        ] {
            let tokens = parse(&response(200, body)).unwrap();
            assert!(tokens.refresh_token.is_none(), "{body}");
        }
    }

    #[test]
    fn envelope_dialect_success_and_definitive_failure() {
        let fields = TokenResponseFields::envelope();
        let ok = response(
            200,
            r#"{"code":0,"message":"ok","result":{"accessToken":"a","refreshToken":"r","expiresIn":900}}"#,
        );
        let tokens = parse_token_response(&ok, &fields, Instant::now(), SystemTime::now()).unwrap();
        assert_eq!(tokens.access_token.expose(), "a");
        assert_eq!(tokens.refresh_token.unwrap().expose(), "r");
        assert_eq!(tokens.expires_in, Some(Duration::from_secs(900)));

        let dead = response(
            200,
            r#"{"code":401,"message":"invalid refresh token","result":null}"#,
        );
        let err =
            parse_token_response(&dead, &fields, Instant::now(), SystemTime::now()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_eq!(
            err.message(),
            Some("the token endpoint answered code 401: invalid refresh token")
        );

        let busy = response(200, r#"{"code":503,"message":"busy","result":null}"#);
        let err =
            parse_token_response(&busy, &fields, Instant::now(), SystemTime::now()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);

        let no_code = response(200, r#"{"result":{"accessToken":"a"}}"#);
        let err =
            parse_token_response(&no_code, &fields, Instant::now(), SystemTime::now()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    }

    #[test]
    fn dialect_codes_compare_as_numbers_or_strings() {
        let fields = TokenResponseFields::new("token")
            .code("status", ["OK"])
            .definitive_codes(["A0401", "7"]);
        let check = |body: &str| {
            parse_token_response(
                &response(200, body),
                &fields,
                Instant::now(),
                SystemTime::now(),
            )
        };
        assert!(check(r#"{"status":"OK","token":"t"}"#).is_ok());
        assert_eq!(
            check(r#"{"status":"A0401"}"#).unwrap_err().kind(),
            ErrorKind::SessionExpired
        );
        // "7" was configured as a string and arrives as a number.
        assert_eq!(
            check(r#"{"status":7}"#).unwrap_err().kind(),
            ErrorKind::SessionExpired
        );
        assert_eq!(
            check(r#"{"status":"07"}"#).unwrap_err().kind(),
            ErrorKind::RefreshFailed
        );

        let numeric = TokenResponseFields::new("token").code("code", [0]);
        let ok = response(200, r#"{"code":"0","token":"t"}"#);
        assert!(parse_token_response(&ok, &numeric, Instant::now(), SystemTime::now()).is_ok());
    }

    #[test]
    fn duplicate_keys_are_read_as_serde_json_reads_them_the_last_wins() {
        let tokens = parse(&response(
            200,
            r#"{"access_token":"first-token","access_token":"last-token","expires_in":1,"expires_in":60}"#,
        ))
        .unwrap();
        assert_eq!(tokens.access_token.expose(), "last-token");
        assert_eq!(tokens.expires_in, Some(Duration::from_secs(60)));
        let fields = TokenResponseFields::envelope();
        let body = r#"{"code":0,"code":401,"result":{"accessToken":"a"}}"#;
        let err = parse_token_response(
            &response(200, body),
            &fields,
            Instant::now(),
            SystemTime::now(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
    }

    #[test]
    fn dialect_codes_use_the_core_normaliser() {
        let fields = TokenResponseFields::new("token")
            .code("code", [0])
            .definitive_codes(["40009"]);
        let check = |body: &str| {
            parse_token_response(
                &response(200, body),
                &fields,
                Instant::now(),
                SystemTime::now(),
            )
        };
        for ok in [
            r#"{"code":0,"token":"t"}"#,
            r#"{"code":"0","token":"t"}"#,
            r#"{"code":0.0,"token":"t"}"#,
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for dead in [
            r#"{"code":40009}"#,
            r#"{"code":"40009"}"#,
            r#"{"code":40009.0}"#,
            r#"{"code":" 40009 "}"#,
        ] {
            assert_eq!(
                check(dead).unwrap_err().kind(),
                ErrorKind::SessionExpired,
                "{dead}"
            );
        }
    }

    #[test]
    fn a_refresh_token_no_request_can_carry_is_refresh_failed() {
        let body = format!(r#"{{"access_token":"{SECRET_AT}","refresh_token":"{SECRET_RT}\n"}}"#);
        let err = parse(&response(200, &body)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        assert_no_secret(&err);
    }

    #[test]
    fn serde_messages_are_never_quoted() {
        for body in [
            format!(r#"{{"access_token":"{SECRET_AT}""#),
            format!(r#"{{"access_token":"{SECRET_AT}",}}"#),
            SECRET_AT.to_string(),
        ] {
            let err = parse(&response(200, &body)).unwrap_err();
            assert_no_secret(&err);
            assert!(err.message().unwrap().contains("line 1, column"), "{err}");
        }
    }

    #[test]
    fn server_messages_are_cleaned_and_capped() {
        let long = "x".repeat(10_000);
        let body = format!(r#"{{"error":"invalid_grant","error_description":"a\nb{long}"}}"#);
        let err = parse(&response(400, &body)).unwrap_err();
        let message = err.message().unwrap();
        assert!(!message.contains('\n'));
        assert!(message.len() < 300, "{}", message.len());
        // Capped in characters, as the status layer caps, and the cut is shown.
        assert!(message.ends_with('…'), "{message}");
    }

    #[test]
    fn names_without_a_slash_are_top_level_fields() {
        let at = |location| TokenResponseFields::new(location).access_token;
        assert_eq!(&*at("access_token"), "/access_token");
        assert_eq!(&*at("a/b~c"), "/a~1b~0c");
        assert_eq!(&*at("/result/token"), "/result/token");
    }

    #[test]
    fn debug_of_a_parsed_response_hides_the_tokens() {
        let body = format!(r#"{{"access_token":"{SECRET_AT}","refresh_token":"{SECRET_RT}"}}"#);
        let tokens = parse(&response(200, &body)).unwrap();
        let shown = format!("{tokens:?}");
        assert!(
            !shown.contains(SECRET_AT) && !shown.contains(SECRET_RT),
            "{shown}"
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes_and_statuses(
            status in 100u16..1000,
            body in proptest::collection::vec(any::<u8>(), 0..256),
            date in proptest::option::of(".{0,40}"),
            system_now in any::<u64>(),
        ) {
            let mut response = Response::new(Bytes::from(body));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            if let Some(date) = date.and_then(|d| http::HeaderValue::from_str(&d).ok()) {
                response.headers_mut().insert(header::DATE, date);
            }
            let system_now = UNIX_EPOCH.checked_add(Duration::from_millis(system_now)).unwrap_or(UNIX_EPOCH);
            for fields in [TokenResponseFields::oauth2(), TokenResponseFields::envelope()] {
                let _ = parse_token_response(&response, &fields, Instant::now(), system_now);
            }
        }

        #[test]
        fn never_panics_on_arbitrary_json_values(
            expires_in in prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|n| format!("{n:?}")),
                ".{0,20}".prop_map(|s| serde_json::Value::String(s).to_string()),
            ],
            exp in prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|n| format!("{n:?}")),
            ],
            system_now in any::<u64>(),
        ) {
            let token = jwt(&format!(r#"{{"exp":{exp}}}"#));
            for body in [
                format!(r#"{{"access_token":"a","expires_in":{expires_in}}}"#),
                format!(r#"{{"access_token":"{token}","expires_in":{expires_in}}}"#),
                format!(r#"{{"access_token":"{token}"}}"#),
            ] {
                let system_now = UNIX_EPOCH.checked_add(Duration::from_millis(system_now)).unwrap_or(UNIX_EPOCH);
                if let Ok(tokens) = parse_token_response(&response(200, &body), &TokenResponseFields::oauth2(), Instant::now(), system_now) {
                    prop_assert!(tokens.expires_in.is_none_or(|d| d <= MAX_LIFETIME));
                }
            }
        }
    }
}
