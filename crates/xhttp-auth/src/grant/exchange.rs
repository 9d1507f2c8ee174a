//! One token request, as every grant makes it: send once through the grant's own transport,
//! parse the answer, and say what failed.
//!
//! # Why nothing is retried here
//!
//! Whether a failed token call may be sent again is decided in one place, the manager's
//! single flight ([`crate::TokenManager`]), which knows the refresh deadline and the grant's
//! [`RetrySafety`](super::RetrySafety). This function only makes sure the error carries what
//! that decision needs: the status, the server's `Retry-After`, whether the request was
//! never sent, and what failed ([`RefreshFailure`]).

use std::time::SystemTime;

use http::{Method, Request, Uri};
use tokio::time::Instant;
use tower::ServiceExt;
use xhttp_core::error::RefreshFailure;
use xhttp_core::{Body, BodyLimit, Error, ErrorKind};

use super::{parse_token_response, GrantResponse, GrantTransport, TokenResponseFields};

/// The largest token response read: 1 MiB. Real ones are under 10 KiB; the limit keeps a
/// broken or hostile endpoint from filling memory.
pub(super) const TOKEN_RESPONSE_LIMIT: BodyLimit = BodyLimit(1024 * 1024);

/// Secrets shorter than this are not searched for in error texts: they would match by chance.
const MIN_SCRUBBED_SECRET: usize = 4;

/// Sends the request that `build` makes, once, and parses the answer. Errors never contain
/// any of `secrets`, and record one attempt.
pub(super) async fn exchange(
    transport: &GrantTransport,
    build: impl Fn() -> Result<Request<Body>, Error>,
    fields: &TokenResponseFields,
    secrets: &[&str],
) -> Result<GrantResponse, Error> {
    let mut request = build()?;
    request.extensions_mut().insert(TOKEN_RESPONSE_LIMIT);
    let result = match transport.clone().oneshot(request).await {
        Err(err) => Err(transport_failure(err)),
        Ok(response) => {
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| {
                    xhttp_core::retry_after::parse_retry_after(value, SystemTime::now())
                });
            parse_token_response(&response, fields, Instant::now(), SystemTime::now()).map_err(
                |err| match retry_after {
                    Some(wait) if !response.status().is_success() => err.with_retry_after(wait),
                    _ => err,
                },
            )
        }
    };
    result.map_err(|err| scrub(err, secrets).with_attempts(1))
}

/// A failure of the grant's transport, as the manager understands it: transient, with the
/// original as the cause, what failed, and whether it was never sent.
fn transport_failure(err: Error) -> Error {
    if err.kind() == ErrorKind::SessionExpired {
        return err;
    }
    let failure = if err.is_never_sent() {
        RefreshFailure::Unreachable
    } else if err.is_timeout() {
        RefreshFailure::Timeout
    } else if err.kind() == ErrorKind::BodyTooLarge {
        RefreshFailure::Malformed
    } else {
        RefreshFailure::Interrupted
    };
    let mut failed = Error::new(ErrorKind::RefreshFailed)
        .with_refresh_failure(failure)
        .with_source(err.clone());
    if err.is_never_sent() {
        failed = failed.with_never_sent();
    }
    if let Some(status) = err.status() {
        failed = failed.with_status(status);
    }
    failed
}

/// Drops the details of an error whose text would show a credential. Nothing built here
/// quotes one, but a cause from below (a layer that records a URL with a token in its query,
/// a server that quotes the refresh token in its `error_description`) might.
fn scrub(err: Error, secrets: &[&str]) -> Error {
    let shown = format!("{err} {err:?}");
    let leaks = secrets
        .iter()
        .any(|s| s.len() >= MIN_SCRUBBED_SECRET && shown.contains(s));
    if !leaks {
        return err;
    }
    let mut clean =
        Error::new(err.kind()).with_message("details withheld because they contained a credential");
    if let Some(status) = err.status() {
        clean = clean.with_status(status);
    }
    if let Some(failure) = err.refresh_failure() {
        clean = clean.with_refresh_failure(failure);
    }
    if let Some(wait) = err.retry_after() {
        clean = clean.with_retry_after(wait);
    }
    if err.is_never_sent() {
        clean = clean.with_never_sent();
    }
    clean
}

/// The refresh token a refresh grant needs: none (or `""`) means the session is over, and no
/// call is made.
pub(super) fn require_refresh_token(
    refresh_token: Option<&crate::Secret>,
) -> Result<&crate::Secret, Error> {
    refresh_token.filter(|t| !t.is_empty()).ok_or_else(|| {
        Error::new(xhttp_core::ErrorKind::SessionExpired)
            .with_message("there is no refresh token: log in first")
    })
}

/// Parses a token endpoint URL: absolute, `https`, or plain `http` to a loopback address only
/// (RFC 6749 section 3.2: the token endpoint carries credentials and requires TLS). The
/// loopback rule is the workspace's one ([`xhttp_core::origin::is_loopback_address`]): IP
/// literals only, never a name such as `localhost`.
pub(super) fn token_url(url: &str) -> Result<Uri, Error> {
    let uri: Uri = url
        .parse()
        .map_err(|_| Error::invalid_request("the token URL is not a valid URL"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.authority().is_none() {
        return Err(
            Error::invalid_request("the token URL must be an absolute http or https URL")
                .with_method_uri(&Method::POST, &uri),
        );
    }
    let loopback = xhttp_core::Origin::from_uri(&uri).is_some_and(|o| o.is_loopback());
    if uri.scheme_str() == Some("http") && !loopback {
        return Err(Error::new(xhttp_core::ErrorKind::InsecureTransport)
            .with_message(
                "a token endpoint is only called over https, or plain http to a loopback \
                 address such as 127.0.0.1",
            )
            .with_method_uri(&Method::POST, &uri));
    }
    Ok(uri)
}

/// `uri` with `query` (already encoded) appended to its query string.
pub(super) fn with_query(uri: &Uri, query: &str) -> Result<Uri, Error> {
    if query.is_empty() {
        return Ok(uri.clone());
    }
    let separator = match uri.query() {
        Some(existing) if !existing.is_empty() => "&",
        Some(_) => "",
        None => "?",
    };
    format!("{uri}{separator}{query}")
        .parse()
        .map_err(|_| Error::invalid_request("could not build the token request URL"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn token_urls_must_be_absolute_http_or_https() {
        assert!(token_url("https://auth.example.com/oauth/token").is_ok());
        assert!(token_url("http://127.0.0.1:8080/auth/token").is_ok());
        assert!(token_url("http://[::1]:8080/auth/token").is_ok());
        for insecure in [
            "http://auth.example.com/token",
            "http://localhost:8080/auth/token",
            "http://auth.localhost:8080/auth/token",
        ] {
            assert_eq!(
                token_url(insecure).unwrap_err().kind(),
                ErrorKind::InsecureTransport,
                "{insecure}"
            );
        }
        for bad in ["/auth/token", "ftp://example.com/token", "not a url", ""] {
            let err = token_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn queries_are_appended_after_existing_ones() {
        let plain: Uri = "http://h/p".parse().unwrap();
        assert_eq!(with_query(&plain, "a=1").unwrap(), "http://h/p?a=1");
        let with: Uri = "http://h/p?x=2".parse().unwrap();
        assert_eq!(with_query(&with, "a=1").unwrap(), "http://h/p?x=2&a=1");
        assert_eq!(with_query(&with, "").unwrap(), "http://h/p?x=2");
    }

    #[test]
    fn errors_quoting_a_secret_lose_their_details() {
        let err = Error::new(ErrorKind::SessionExpired)
            .with_message("refresh token SECRET-RT-123 is revoked")
            .with_status(StatusCode::BAD_REQUEST);
        let clean = scrub(err, &["SECRET-RT-123"]);
        assert_eq!(clean.kind(), ErrorKind::SessionExpired);
        assert_eq!(clean.status(), Some(StatusCode::BAD_REQUEST));
        assert!(!format!("{clean} {clean:?}").contains("SECRET-RT-123"));

        let harmless = Error::new(ErrorKind::RefreshFailed).with_message("busy");
        assert_eq!(
            scrub(harmless, &["SECRET-RT-123", ""]).message(),
            Some("busy")
        );
    }
}
