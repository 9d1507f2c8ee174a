//! The token endpoints and the bearer check of protected routes.
//!
//! Three ways to get tokens, as the peers' back ends offer them: a JSON login, the OAuth 2.0
//! token endpoint (RFC 6749 sections 4.4 and 6, form-encoded) and a custom JSON refresh
//! dialect answering in the `{code, message, result}` envelope.

use std::sync::Arc;

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::responses;
use crate::server::Shared;
use crate::tokens::{AccessCheck, Issued, RefreshOutcome};
use crate::ExpiryMode;

/// Marks a 200 answer that rejects a token with the business "token expired" code, so the
/// counters can count it with the 401s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BusinessRejection;

#[derive(Debug, Deserialize)]
pub(crate) struct LoginBody {
    username: String,
    password: String,
}

/// `POST /auth/login`: JSON credentials in, a token response out.
pub(crate) async fn login(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Response {
    shared.counters.token_call(false);
    let Ok(Json(body)) = body else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be JSON with username and password",
        );
    };
    if !shared.credentials_match(&body.username, &body.password) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "wrong username or password",
        );
    }
    token_response(shared.tokens.issue(true))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// `POST /auth/token`: the OAuth 2.0 token endpoint, for the `refresh_token` and
/// `client_credentials` grants.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let form = form.ok().map(|Form(form)| form);
    let grant_type = form.as_ref().and_then(|form| form.grant_type.as_deref());
    shared
        .counters
        .token_call(grant_type == Some("refresh_token"));
    let Some(form) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    };
    match form.grant_type.as_deref() {
        Some("refresh_token") => {
            let Some(refresh_token) = form.refresh_token.as_deref() else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is missing",
                );
            };
            match rotate(&shared, refresh_token) {
                Ok(issued) => token_response(issued),
                Err(description) => {
                    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
                }
            }
        }
        Some("client_credentials") => {
            let from_header = basic_credentials(&headers);
            let from_body = form.client_id.zip(form.client_secret);
            let accepted = from_header
                .as_ref()
                .or(from_body.as_ref())
                .is_some_and(|(id, secret)| shared.credentials_match(id, secret));
            if accepted {
                return token_response(shared.tokens.issue(false));
            }
            let mut response = oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "wrong client_id or client_secret",
            );
            // RFC 6749 section 5.2: a client that tried HTTP Basic gets its challenge back.
            if from_header.is_some() {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"xhttp-testkit\""),
                );
            }
            response
        }
        Some(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be refresh_token or client_credentials",
        ),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CustomRefreshBody {
    refresh_token: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CustomTokens {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: serde_json::Value,
}

/// `POST /auth/refresh`: `{"refreshToken"}` in, the tokens in an envelope out. Failures are
/// business failures on HTTP 200, as many admin back ends do.
pub(crate) async fn custom_refresh(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<CustomRefreshBody>, JsonRejection>,
) -> Response {
    shared.counters.token_call(true);
    let rotated = match body {
        Ok(Json(body)) => rotate(&shared, &body.refresh_token).ok(),
        Err(_) => None,
    };
    match rotated {
        Some(issued) => responses::success(CustomTokens {
            expires_in: issued.wire_expires_in(),
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
        }),
        None => responses::business_failure(401, "invalid refresh token"),
    }
}

/// Rotates a refresh token; on failure, the `error_description` of the `invalid_grant`.
fn rotate(shared: &Shared, refresh_token: &str) -> Result<Issued, &'static str> {
    match shared.tokens.refresh(refresh_token) {
        RefreshOutcome::Rotated(issued) => Ok(issued),
        RefreshOutcome::Invalid => Err("the refresh token is unknown or revoked"),
        RefreshOutcome::Reused => {
            shared.counters.reuse();
            Err("the refresh token was used before: every token of its session is revoked")
        }
    }
}

/// The successful token response of RFC 6749 section 5.1.
fn token_response(issued: Issued) -> Response {
    #[derive(Serialize)]
    struct Body {
        access_token: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        refresh_token: Option<String>,
        token_type: &'static str,
        expires_in: serde_json::Value,
    }
    let body = Body {
        expires_in: issued.wire_expires_in(),
        access_token: issued.access_token,
        refresh_token: issued.refresh_token,
        token_type: "Bearer",
    };
    (no_store(), Json(body)).into_response()
}

/// The error response of RFC 6749 section 5.2.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        error_description: &'a str,
    }
    let body = Body {
        error,
        error_description: description,
    };
    (status, no_store(), Json(body)).into_response()
}

/// Token responses must not be cached (RFC 6749 section 5.1).
fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// Client credentials sent with HTTP Basic (RFC 6749 section 2.3.1).
///
/// The RFC form-encodes the id and secret before Base64; this server's credentials are
/// plain words, so the form-decoding step is left out.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(decode_base64(encoded.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Decodes standard Base64 (RFC 4648 section 4), padding optional.
fn decode_base64(input: &str) -> Option<Vec<u8>> {
    let mut decoded = Vec::with_capacity(input.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in input.trim_end_matches('=').bytes() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            decoded.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(decoded)
}

/// Why a protected request is turned away.
enum Rejection {
    /// No bearer token at all: RFC 6750 section 3.1 sends the challenge without an error.
    Missing,
    /// A token that is not (or no longer) valid.
    InvalidToken(&'static str),
}

/// Middleware of protected routes: lets a request through only with a valid bearer token.
pub(crate) async fn require_bearer(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let token = bearer_token(request.headers());
    if token.is_some_and(|t| shared.tokens.was_rejected(t)) {
        shared.counters.rejected_token_arrival();
    }
    let rejection = match token.map(|t| shared.tokens.check(t)) {
        None => Rejection::Missing,
        Some(AccessCheck::Current) => return next.run(request).await,
        Some(AccessCheck::Superseded) => {
            shared.counters.stale_token();
            if !shared.config.reject_superseded {
                return next.run(request).await;
            }
            Rejection::InvalidToken("the access token was replaced by a refresh")
        }
        Some(AccessCheck::Dead) => {
            shared.counters.stale_token();
            Rejection::InvalidToken("the access token expired or was revoked")
        }
        Some(AccessCheck::Unknown) => Rejection::InvalidToken("unknown access token"),
    };
    if let Some(token) = token {
        shared.tokens.note_rejected(token);
    }
    reject(&shared, rejection)
}

pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn reject(shared: &Shared, rejection: Rejection) -> Response {
    match shared.config.expiry_mode {
        ExpiryMode::Http401 => {
            let (challenge, message) = match rejection {
                Rejection::Missing => (
                    "Bearer realm=\"xhttp-testkit\"".to_owned(),
                    "a bearer token is required",
                ),
                Rejection::InvalidToken(description) => (
                    format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
                    description,
                ),
            };
            let mut response = responses::error(StatusCode::UNAUTHORIZED, message);
            if let Ok(challenge) = HeaderValue::try_from(challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            response
        }
        ExpiryMode::BusinessCode => {
            let mut response =
                responses::business_failure(shared.config.business_expired_code, "token expired");
            response.extensions_mut().insert(BusinessRejection);
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64_with_and_without_padding() {
        assert_eq!(decode_base64("YWRtaW46c2VjcmV0").unwrap(), b"admin:secret");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert_eq!(decode_base64("YQ").unwrap(), b"a");
        assert!(decode_base64("Y*Q").is_none());
    }

    #[test]
    fn reads_basic_and_bearer_credentials() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWRtaW46c2VjcmV0"),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(("admin".to_owned(), "secret".to_owned()))
        );
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
    }
}
