//! Answering an axum request when the upstream call behind it failed (feature `axum`).
//!
//! A service whose axum handlers call an upstream through a [`Client`](crate::Client) must
//! turn each [`Error`] into a response for *its own* caller. [`UpstreamError`] does it with
//! one mapping, so that every handler answers a failure the same way: a handler returns
//! `Result<_, UpstreamError>` and `?` converts the client's errors.
//!
//! ```
//! use axum::extract::{Path, State};
//! use axum::routing::get;
//! use axum::{Json, Router};
//! use xhttp::axum::UpstreamError;
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! struct Item {
//!     id: u64,
//!     name: String,
//! }
//!
//! /// `GET /items/{id}`, answered from the upstream's `/api/items/{id}`.
//! async fn item(
//!     State(upstream): State<xhttp::Client>,
//!     Path(id): Path<u64>,
//! ) -> Result<Json<Item>, UpstreamError> {
//!     let item: Item = upstream.get(&format!("/api/items/{id}")).send().await?.json()?;
//!     Ok(Json(item))
//! }
//!
//! # fn main() -> Result<(), xhttp::Error> {
//! // One client for every request: it is an `Arc` inside, and its token manager, connection
//! // pool, retry budget and dedupe table are shared by all the handlers' calls.
//! let upstream = xhttp::Client::builder()
//!     .base_url("https://api.example.com")
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/items/{id}", get(item))
//!     .with_state(upstream);
//! # drop(app);
//! # Ok(()) }
//! ```
//!
//! # The mapping
//!
//! The service stands between its caller and the upstream, so the statuses are a gateway's
//! (RFC 9110 section 15.6): a failure of the upstream is `502 Bad Gateway` or
//! `504 Gateway Timeout`, and a `500 Internal Server Error` is kept for what is this
//! service's own fault. [`status_for`] is the mapping, [`kind_name`] the `error` member:
//!
//! | [`ErrorKind`] | status | `error` | why |
//! |---|---|---|---|
//! | `Timeout(_)` | 504 | `timeout` | the upstream did not answer in time |
//! | `Transport` | 502 | `transport` | the upstream could not be reached, or the connection broke |
//! | `Status`, upstream 404 or 410 | the same | `status` | what the caller asked about is not there; saying so is no leak |
//! | `Status`, upstream 429 | 429, with `Retry-After` | `status` | the upstream asks this service to slow down, so its caller must too; the upstream's `Retry-After`, in whole seconds rounded up, is passed on |
//! | `Status`, any other | 502 | `status` | a 5xx is the upstream's failure; another 4xx rejected a request this service made, which its caller cannot mend |
//! | `Business` | 502 | `business` | a failure code in the upstream's envelope; map the codes that mean something to your caller before this |
//! | `Decode` | 502 | `decode` | the upstream's answer was not what it promised |
//! | `BodyTooLarge` | 502 | `body_too_large` | the upstream's answer was over the body limit |
//! | `RefreshFailed` | 504 when the refresh timed out, else 502 | `refresh_failed` | the upstream's token endpoint failed |
//! | `SessionExpired` | 502 | `session_expired` | the service's own session with the upstream is dead |
//! | `Unauthorized` | 502 | `unauthorized` | the upstream refused the service's credentials even after a refresh |
//! | `SessionChanged` | 502 | `session_changed` | the service's upstream session was replaced during the call |
//! | `Superseded` | 409 | `superseded` | a newer identical request replaced this one (dedupe's cancel-previous policy) |
//! | `Duplicate` | 409 | `duplicate` | an identical request is in flight (dedupe's reject-duplicate policy) |
//! | `Cancelled` | 503 | `cancelled` | the call was cancelled on this side (a cancel scope, a shutdown); it may be tried again |
//! | `InvalidRequest` | 500 | `invalid_request` | this service built a request that cannot be sent: a bug here |
//! | `Config` | 500 | `config` | this service's client is misconfigured |
//! | `InsecureTransport` | 500 | `insecure_transport` | this service's client would have sent a credential over plain `http` |
//! | `Internal` | 500 | `internal` | a bug or a panic in the client |
//! | a kind added later | 500 | `unknown` | not yet mapped: treated as this service's own fault |
//!
//! `SessionExpired` and `Unauthorized` are 502, not 401: with one shared client the
//! credentials are the service's, not the caller's, and a 401 would tell the caller to
//! authenticate again, which cannot help. A service that forwards each caller's own session
//! (a backend for a front end) should answer those two with its own 401 and
//! `WWW-Authenticate` before reaching for this mapping.
//!
//! # The body
//!
//! `application/json`, `{"error": <kind name>, "message": <sentence>}`. The sentence is the
//! error's own `Display` without the upstream request: the upstream's method and URL are
//! this service's internals, not its caller's business. Like every text in an [`Error`], it
//! is cleaned, masked and capped when it enters the error, so it never carries a token, a
//! password or a credential from a URL.

use std::fmt;

use ::axum::http::{header, HeaderValue, StatusCode};
use ::axum::response::{IntoResponse, Response};
use ::axum::Json;
use serde::Serialize;
use xhttp_core::error::RefreshFailure;
use xhttp_core::{Error, ErrorKind};

/// An upstream call's [`Error`], as the response of an axum handler: the status of
/// [`status_for`], a `Retry-After` on 429, and the JSON body of the
/// [module documentation](self).
///
/// `From<Error>` lets a handler that returns `Result<_, UpstreamError>` use `?` on the
/// client's calls.
///
/// ```
/// use std::time::Duration;
/// use axum::response::IntoResponse;
/// use http::StatusCode;
/// use xhttp::axum::UpstreamError;
///
/// let limited = xhttp::Error::from_status(StatusCode::TOO_MANY_REQUESTS)
///     .with_retry_after(Duration::from_millis(1500));
/// let response = UpstreamError::from(limited).into_response();
/// assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(response.headers()["retry-after"], "2");
///
/// let timed_out = xhttp::Error::timeout(xhttp::TimeoutScope::Total);
/// assert_eq!(UpstreamError::from(timed_out).status(), StatusCode::GATEWAY_TIMEOUT);
/// ```
pub struct UpstreamError {
    error: Error,
}

impl UpstreamError {
    /// The status this error answers with ([`status_for`]).
    pub fn status(&self) -> StatusCode {
        status_for(&self.error)
    }

    /// The upstream call's error.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// Unwraps the upstream call's error.
    pub fn into_inner(self) -> Error {
        self.error
    }
}

impl From<Error> for UpstreamError {
    fn from(error: Error) -> Self {
        UpstreamError { error }
    }
}

impl fmt::Debug for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The error's Debug masks what it prints.
        f.debug_tuple("UpstreamError").field(&self.error).finish()
    }
}

impl IntoResponse for UpstreamError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: &'static str,
            message: String,
        }
        let status = self.status();
        let body = Body {
            error: kind_name(self.error.kind()),
            message: public_sentence(&self.error),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(wait) = self.error.retry_after() {
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
        }
        response
    }
}

/// The status a service answers its caller with when the upstream call behind the request
/// failed with `err`: the table of the [module documentation](self).
///
/// ```
/// use http::StatusCode;
/// use xhttp::axum::status_for;
///
/// let upstream_down = xhttp::Error::from_status(StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(status_for(&upstream_down), StatusCode::BAD_GATEWAY);
/// let missing = xhttp::Error::from_status(StatusCode::NOT_FOUND);
/// assert_eq!(status_for(&missing), StatusCode::NOT_FOUND);
/// let our_bug = xhttp::Error::invalid_request("URL has no host");
/// assert_eq!(status_for(&our_bug), StatusCode::INTERNAL_SERVER_ERROR);
/// ```
pub fn status_for(err: &Error) -> StatusCode {
    match err.kind() {
        ErrorKind::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Status => match err.status() {
            Some(
                status @ (StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::TOO_MANY_REQUESTS),
            ) => status,
            _ => StatusCode::BAD_GATEWAY,
        },
        ErrorKind::RefreshFailed if err.refresh_failure() == Some(RefreshFailure::Timeout) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        ErrorKind::Transport
        | ErrorKind::Business
        | ErrorKind::Decode
        | ErrorKind::BodyTooLarge
        | ErrorKind::RefreshFailed
        | ErrorKind::SessionExpired
        | ErrorKind::Unauthorized
        | ErrorKind::SessionChanged => StatusCode::BAD_GATEWAY,
        ErrorKind::Superseded | ErrorKind::Duplicate => StatusCode::CONFLICT,
        ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::InvalidRequest
        | ErrorKind::Config
        | ErrorKind::InsecureTransport
        | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The `error` member of the body: the kind in snake case (`timeout` for both scopes,
/// `unknown` for a kind this version does not know).
///
/// ```
/// use xhttp::{axum::kind_name, ErrorKind};
///
/// assert_eq!(kind_name(ErrorKind::BodyTooLarge), "body_too_large");
/// ```
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request",
        ErrorKind::Config => "config",
        ErrorKind::Transport => "transport",
        ErrorKind::Timeout(_) => "timeout",
        ErrorKind::Status => "status",
        ErrorKind::Business => "business",
        ErrorKind::Decode => "decode",
        ErrorKind::BodyTooLarge => "body_too_large",
        ErrorKind::RefreshFailed => "refresh_failed",
        ErrorKind::SessionExpired => "session_expired",
        ErrorKind::Unauthorized => "unauthorized",
        ErrorKind::SessionChanged => "session_changed",
        ErrorKind::InsecureTransport => "insecure_transport",
        ErrorKind::Superseded => "superseded",
        ErrorKind::Duplicate => "duplicate",
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::Internal => "internal",
        _ => "unknown",
    }
}

/// The error's `Display` without the request it belongs to: the same error rebuilt from
/// what its sentence shows (kind, status, business code, limit, message, attempts), less
/// the method and URI.
fn public_sentence(err: &Error) -> String {
    let mut shown = match err.kind() {
        ErrorKind::Status => err
            .status()
            .map_or_else(|| Error::new(ErrorKind::Status), Error::from_status),
        ErrorKind::Business => match err.business_code() {
            Some(code) => Error::business(code.clone(), ""),
            None => Error::new(ErrorKind::Business),
        },
        ErrorKind::BodyTooLarge => err.body_limit().map_or_else(
            || Error::new(ErrorKind::BodyTooLarge),
            Error::body_too_large,
        ),
        kind => Error::new(kind),
    };
    if err.is_never_sent() {
        shown = shown.with_never_sent();
    }
    if let Some(message) = err.message() {
        shown = shown.with_message(message);
    }
    shown.with_attempts(err.attempts()).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ::axum::body::to_bytes;

    use super::*;

    async fn answer(err: Error) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let response = UpstreamError::from(err).into_response();
        let (parts, body) = response.into_parts();
        let body = to_bytes(body, 64 * 1024).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&body).unwrap(),
        )
    }

    #[test]
    fn every_kind_has_its_status_and_name() {
        let expected = [
            (500, "invalid_request"),
            (500, "config"),
            (502, "transport"),
            (504, "timeout"),
            (504, "timeout"),
            (502, "status"),
            (502, "business"),
            (502, "decode"),
            (502, "body_too_large"),
            (502, "refresh_failed"),
            (502, "session_expired"),
            (502, "unauthorized"),
            (502, "session_changed"),
            (500, "insecure_transport"),
            (409, "superseded"),
            (409, "duplicate"),
            (503, "cancelled"),
            (500, "internal"),
        ];
        for (kind, (status, name)) in ErrorKind::ALL.into_iter().zip(expected) {
            assert_eq!(status_for(&Error::new(kind)).as_u16(), status, "{kind:?}");
            assert_eq!(kind_name(kind), name, "{kind:?}");
        }
    }

    #[test]
    fn upstream_statuses_pass_through_only_for_missing_and_rate_limited() {
        for (upstream, ours) in [
            (404, 404),
            (410, 410),
            (429, 429),
            (400, 502),
            (401, 502),
            (403, 502),
            (422, 502),
            (500, 502),
            (503, 502),
            (504, 502),
        ] {
            let err = Error::from_status(StatusCode::from_u16(upstream).unwrap());
            assert_eq!(status_for(&err).as_u16(), ours, "upstream {upstream}");
        }
    }

    #[test]
    fn a_refresh_that_timed_out_is_a_gateway_timeout() {
        let timed_out =
            Error::new(ErrorKind::RefreshFailed).with_refresh_failure(RefreshFailure::Timeout);
        assert_eq!(status_for(&timed_out), StatusCode::GATEWAY_TIMEOUT);
        let endpoint =
            Error::new(ErrorKind::RefreshFailed).with_refresh_failure(RefreshFailure::Endpoint);
        assert_eq!(status_for(&endpoint), StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn rate_limited_passes_retry_after_on_in_whole_seconds() {
        let limited =
            |wait| Error::from_status(StatusCode::TOO_MANY_REQUESTS).with_retry_after(wait);
        let (status, headers, _) = answer(limited(Duration::from_millis(1500))).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "2");
        let (_, headers, _) = answer(limited(Duration::from_secs(3))).await;
        assert_eq!(headers[header::RETRY_AFTER], "3");
        let (_, headers, _) = answer(Error::from_status(StatusCode::TOO_MANY_REQUESTS)).await;
        assert!(headers.get(header::RETRY_AFTER).is_none());
        // Only a 429 tells the caller when to come back.
        let busy = Error::from_status(StatusCode::SERVICE_UNAVAILABLE)
            .with_retry_after(Duration::from_secs(5));
        let (status, headers, _) = answer(busy).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(headers.get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn the_body_names_the_kind_and_leaves_the_upstream_request_out() {
        let request = http::Request::get(
            "http://bob:pa55word@10.0.0.7:8080/api/items/3?access_token=SECRET-AT-1",
        )
        .body(())
        .unwrap();
        let err = Error::from_status(StatusCode::BAD_GATEWAY)
            .with_message("upstream said: token=SECRET-AT-2 is bad")
            .with_request(&request)
            .with_attempts(4);
        let (status, headers, body) = answer(err).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body,
            serde_json::json!({
                "error": "status",
                "message": "server answered 502 Bad Gateway: upstream said: token=REDACTED is bad (4 attempts)",
            })
        );
        let shown = body.to_string();
        for secret in ["SECRET-AT", "pa55word", "10.0.0.7", "/api/items"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[tokio::test]
    async fn the_sentence_is_the_errors_own_for_every_kind() {
        for kind in ErrorKind::ALL {
            let err = Error::new(kind).with_message("m");
            let (_, _, body) = answer(err.clone()).await;
            assert_eq!(body["message"], err.to_string(), "{kind:?}");
        }
        let never_sent = Error::transport("refused").with_never_sent();
        let (_, _, body) = answer(never_sent.clone()).await;
        assert_eq!(body["message"], never_sent.to_string());
        for err in [Error::business(40009, "taken"), Error::body_too_large(16)] {
            let (_, _, body) = answer(err.clone()).await;
            assert_eq!(body["message"], err.to_string());
        }
    }
}
