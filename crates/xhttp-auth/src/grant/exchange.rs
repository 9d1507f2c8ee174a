//! One token request, as every grant makes it: send through the grant's own transport,
//! retry only what is safe to send again, parse the answer.
//!
//! # Why the refresh grants retry so little
//!
//! A rotating refresh token is consumed by the server when it answers. If the server rotated
//! it and then failed (a 502 from a proxy, a timeout while the answer was on its way), a retry
//! would present the consumed token again, and reuse revokes the whole token family (RFC 9700
//! section 4.14.2): one retry logs the user out. So grants that send a refresh token retry
//! only failures that provably never reached the server. Client credentials rotate nothing
//! and may also retry 5xx, 429 and timeouts. Either way the budget is small (two retries,
//! 100 ms then 200 ms): the manager's own refresh timeout bounds the whole exchange.

use std::time::{Duration, SystemTime};

use http::{Method, Request, StatusCode, Uri};
use tokio::time::Instant;
use tower::ServiceExt;
use xhttp_core::{Body, BodyLimit, Error, ErrorKind};

use super::{parse_token_response, GrantResponse, GrantTransport, TokenResponseFields};

/// The largest token response read: 1 MiB. Real ones are under 10 KiB; the limit keeps a
/// broken or hostile endpoint from filling memory.
pub(super) const TOKEN_RESPONSE_LIMIT: BodyLimit = BodyLimit(1024 * 1024);

/// The waits before the first and second retry.
const BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(200)];

/// Secrets shorter than this are not searched for in error texts: they would match by chance.
const MIN_SCRUBBED_SECRET: usize = 4;

/// Which failures a grant sends again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RetryPolicy {
    /// Only failures that provably never reached the server: for grants that present a
    /// rotating refresh token.
    NeverSent,
    /// Also timeouts, broken connections, 408, 429, 500, 502, 503 and 504: for grants whose
    /// request consumes nothing (client credentials).
    Transient,
}

impl RetryPolicy {
    fn retries_error(self, err: &Error) -> bool {
        if err.is_never_sent() {
            return true;
        }
        self == RetryPolicy::Transient
            && matches!(err.kind(), ErrorKind::Transport | ErrorKind::Timeout(_))
    }

    fn retries_status(self, status: StatusCode) -> bool {
        self == RetryPolicy::Transient
            && matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
    }
}

/// Sends the request that `build` makes (once per attempt), retrying as `retry` allows, and
/// parses the answer. Errors never contain any of `secrets`.
pub(super) async fn exchange(
    transport: &GrantTransport,
    build: impl Fn() -> Result<Request<Body>, Error>,
    retry: RetryPolicy,
    fields: &TokenResponseFields,
    secrets: &[&str],
) -> Result<GrantResponse, Error> {
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let mut request = build()?;
        request.extensions_mut().insert(TOKEN_RESPONSE_LIMIT);
        let outcome = transport.clone().oneshot(request).await;
        let retryable = match &outcome {
            Err(err) => retry.retries_error(err),
            Ok(response) => retry.retries_status(response.status()),
        };
        let backoff = usize::try_from(attempts - 1)
            .ok()
            .and_then(|i| BACKOFF.get(i));
        if let (true, Some(&delay)) = (retryable, backoff) {
            match &outcome {
                Err(err) => {
                    tracing::debug!(attempts, ?delay, kind = ?err.kind(), "token request failed, retrying")
                }
                Ok(response) => {
                    tracing::debug!(attempts, ?delay, status = %response.status(), "token request failed, retrying")
                }
            }
            tokio::time::sleep(delay).await;
            continue;
        }
        let result = match outcome {
            Err(err) => Err(transport_failure(err)),
            Ok(response) => {
                parse_token_response(&response, fields, Instant::now(), SystemTime::now())
            }
        };
        return result.map_err(|err| scrub(err, secrets).with_attempts(attempts));
    }
}

/// A failure of the grant's transport, as the manager understands it: transient, with the
/// original as the cause (a body over the limit included).
fn transport_failure(err: Error) -> Error {
    if err.kind() == ErrorKind::SessionExpired {
        return err;
    }
    let status = err.status();
    let mut failed = Error::new(ErrorKind::RefreshFailed).with_source(err);
    if let Some(status) = status {
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

    #[test]
    fn only_never_sent_failures_are_retried_for_rotating_grants() {
        let never_sent = Error::transport("refused").with_never_sent();
        let reset = Error::transport("reset");
        let timeout = Error::timeout(xhttp_core::TimeoutScope::Attempt);
        assert!(RetryPolicy::NeverSent.retries_error(&never_sent));
        assert!(!RetryPolicy::NeverSent.retries_error(&reset));
        assert!(!RetryPolicy::NeverSent.retries_error(&timeout));
        assert!(!RetryPolicy::NeverSent.retries_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(RetryPolicy::Transient.retries_error(&reset));
        assert!(RetryPolicy::Transient.retries_error(&timeout));
        assert!(RetryPolicy::Transient.retries_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!RetryPolicy::Transient.retries_status(StatusCode::NOT_IMPLEMENTED));
        assert!(!RetryPolicy::Transient.retries_status(StatusCode::BAD_REQUEST));
        assert!(!RetryPolicy::Transient.retries_error(&Error::body_too_large(1)));
    }
}
