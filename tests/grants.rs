//! The grants of xhttp-auth against the testkit's token endpoints, through real sockets:
//! what each grant sends is what a real server accepts, rotation and reuse detection behave
//! as RFC 9700 says, and a failing endpoint costs exactly the calls the retry rule allows.
//!
//! Each test runs twice (`common`): over the facade's grant transport
//! (`xhttp::grant_transport()`: transport, collect, attempt timeout) and over the public
//! stack with no optional layer on a raw hyper-util client.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tower::ServiceExt;

use common::{both, Via};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xhttp_auth::{ClientCredentials, JsonGrant, OAuth2Refresh, RefreshGrant, Secret, TokenManager};
use xhttp_core::error::RefreshFailure;
use xhttp_core::{Body, Error, ErrorKind};
use xhttp_testkit::{refused_addr, Faults, Route, TestServer};

/// Whether `access_token` opens a protected route.
async fn works(via: Via, server: &TestServer, access_token: &Secret) -> bool {
    let request = http::Request::get(server.url("/api/me"))
        .header("authorization", format!("Bearer {}", access_token.expose()))
        .body(Body::empty())
        .unwrap();
    let response = via.grant_transport().oneshot(request).await.unwrap();
    response.status() == 200
}

fn error_text(err: &Error) -> String {
    format!("{err} {err:?}")
}

const SECRET_AT: &str = "SECRET-AT-scripted-login";
const SECRET_RT: &str = "SECRET-RT-scripted-login";
const TOKENS: &str = r#"{"access_token":"SECRET-AT-scripted","refresh_token":"SECRET-RT-scripted","expires_in":3600}"#;

/// No known secret of these tests in `shown`.
fn assert_hidden(shown: &str) {
    for secret in [
        SECRET_AT,
        SECRET_RT,
        "SECRET-AT-scripted",
        "SECRET-RT-scripted",
        "SECRET-CS-grants",
    ] {
        assert!(!shown.contains(secret), "a secret is shown: {shown}");
    }
}

/// A token endpoint on a real socket that answers its n-th request with `script[n]`
/// (status, body, `Retry-After`), the last entry repeating; one connection per request.
struct Scripted {
    url: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start(script: Vec<(u16, &'static str, Option<&'static str>)>) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (counter, script) = (counter.clone(), script.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // The head, then as many body bytes as Content-Length says.
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&request).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let (status, body, retry_after) = script[n.min(script.len() - 1)];
                    let retry_after = retry_after
                        .map(|v| format!("retry-after: {v}\r\n"))
                        .unwrap_or_default();
                    let response = format!(
                        "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n{retry_after}\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Scripted { url, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A manager with the rotating OAuth 2.0 refresh grant against `endpoint`, logged in.
async fn rotating_manager(via: Via, endpoint: &Scripted) -> TokenManager {
    let grant = OAuth2Refresh::new(via.grant_transport(), &endpoint.url).unwrap();
    let manager = TokenManager::builder(grant).refresh_jitter(|| 0.0).build();
    manager
        .set_tokens(Secret::new(SECRET_AT), Some(Secret::new(SECRET_RT)), None)
        .await
        .unwrap();
    manager
}

both!(
    current_thread,
    oauth2_refresh_rotates_with_one_token_call_per_refresh
);
async fn oauth2_refresh_rotates_with_one_token_call_per_refresh(via: Via) {
    let server = TestServer::start().await;
    let grant = OAuth2Refresh::new(via.grant_transport(), &server.url("/auth/token")).unwrap();
    let mut refresh_token = Secret::new(server.login().refresh_token);

    for round in 1..=3 {
        let tokens = grant.request(Some(&refresh_token)).await.unwrap();
        assert_eq!(server.counters().token_calls(), round);
        assert_eq!(server.counters().refresh_calls(), round);
        assert!(tokens.expires_in.is_some_and(|d| d > Duration::ZERO));
        assert!(works(via, &server, &tokens.access_token).await);
        let rotated = tokens.refresh_token.unwrap();
        assert_ne!(rotated, refresh_token);
        refresh_token = rotated;
    }
    assert_eq!(server.counters().reuse_detected(), 0);
}

both!(
    current_thread,
    reusing_a_rotated_refresh_token_is_session_expired_and_revokes_the_family
);
async fn reusing_a_rotated_refresh_token_is_session_expired_and_revokes_the_family(via: Via) {
    let server = TestServer::start().await;
    let grant = OAuth2Refresh::new(via.grant_transport(), &server.url("/auth/token")).unwrap();
    let first = Secret::new(server.login().refresh_token);
    let second = grant
        .request(Some(&first))
        .await
        .unwrap()
        .refresh_token
        .unwrap();

    let err = grant.request(Some(&first)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(err.status(), Some(http::StatusCode::BAD_REQUEST));
    assert!(err.message().unwrap().starts_with("invalid_grant"), "{err}");
    assert_eq!(server.counters().reuse_detected(), 1);
    assert!(!error_text(&err).contains(first.expose()));

    // The reuse revoked the whole family: the newest refresh token is dead too.
    let err = grant.request(Some(&second)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(server.counters().token_calls(), 3);
}

both!(
    current_thread,
    client_credentials_gets_a_token_with_basic_or_body_authentication
);
async fn client_credentials_gets_a_token_with_basic_or_body_authentication(via: Via) {
    let server = TestServer::start().await;
    let (id, secret) = server.config().credentials.clone();
    for basic in [true, false] {
        let grant = ClientCredentials::new(via.grant_transport(), &server.url("/auth/token"))
            .unwrap()
            .client_id(id.clone())
            .client_secret(Secret::new(secret.clone()))
            .basic_auth(basic);
        let tokens = grant.request(None).await.unwrap();
        assert!(tokens.refresh_token.is_none());
        assert!(tokens.expires_in.is_some());
        assert!(works(via, &server, &tokens.access_token).await);
    }
    assert_eq!(server.counters().token_calls(), 2);
    assert_eq!(server.counters().refresh_calls(), 0);
}

both!(
    current_thread,
    client_credentials_with_a_wrong_secret_is_session_expired_after_one_call
);
async fn client_credentials_with_a_wrong_secret_is_session_expired_after_one_call(via: Via) {
    let server = TestServer::start().await;
    let grant = ClientCredentials::new(via.grant_transport(), &server.url("/auth/token"))
        .unwrap()
        .client_id("admin")
        .client_secret(Secret::new("SECRET-CS-WRONG"));
    let err = grant.request(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert!(!error_text(&err).contains("SECRET-CS-WRONG"));
    assert_eq!(server.counters().token_calls(), 1);
}

both!(
    current_thread,
    json_grant_refreshes_against_the_custom_dialect
);
async fn json_grant_refreshes_against_the_custom_dialect(via: Via) {
    let server = TestServer::start().await;
    let grant = JsonGrant::new(via.grant_transport(), &server.url("/auth/refresh")).unwrap();
    let first = Secret::new(server.login().refresh_token);

    let tokens = grant.request(Some(&first)).await.unwrap();
    assert!(works(via, &server, &tokens.access_token).await);
    assert!(tokens.expires_in.is_some());
    let second = tokens.refresh_token.unwrap();
    assert_ne!(second, first);
    let tokens = grant.request(Some(&second)).await.unwrap();
    assert!(tokens.refresh_token.is_some());
    assert_eq!(server.counters().refresh_calls(), 2);
    assert_eq!(server.counters().reuse_detected(), 0);
}

both!(
    current_thread,
    json_grant_with_an_invalid_refresh_token_is_session_expired
);
async fn json_grant_with_an_invalid_refresh_token_is_session_expired(via: Via) {
    let server = TestServer::start().await;
    let grant = JsonGrant::new(via.grant_transport(), &server.url("/auth/refresh")).unwrap();
    let err = grant
        .request(Some(&Secret::new("SECRET-RT-UNKNOWN")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(
        err.message(),
        Some("the token endpoint answered code 401: invalid refresh token")
    );
    assert!(!error_text(&err).contains("SECRET-RT-UNKNOWN"));
    assert_eq!(server.counters().token_calls(), 1);
}

both!(
    current_thread,
    a_failing_refresh_endpoint_is_refresh_failed_after_exactly_one_call
);
async fn a_failing_refresh_endpoint_is_refresh_failed_after_exactly_one_call(via: Via) {
    let server = TestServer::start().await;
    let failing = Faults {
        fail_rate: 1.0,
        ..Faults::default()
    };
    server.set_faults(Route::Token, failing.clone());
    server.set_faults(Route::CustomRefresh, failing);
    let refresh_token = Secret::new(server.login().refresh_token);

    let oauth = OAuth2Refresh::new(via.grant_transport(), &server.url("/auth/token")).unwrap();
    let err = oauth.request(Some(&refresh_token)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(server.counters().hits(Route::Token), 1);

    let json = JsonGrant::new(via.grant_transport(), &server.url("/auth/refresh")).unwrap();
    let err = json.request(Some(&refresh_token)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert_eq!(server.counters().hits(Route::CustomRefresh), 1);

    // Nothing was consumed: the refresh token still works once the endpoint recovers.
    assert_eq!(server.counters().token_calls(), 0);
    server.set_faults(Route::Token, Faults::default());
    oauth.request(Some(&refresh_token)).await.unwrap();
    assert_eq!(server.counters().reuse_detected(), 0);
}

both!(
    current_thread,
    the_manager_retries_a_502_for_client_credentials_but_not_for_a_rotating_grant
);
async fn the_manager_retries_a_502_for_client_credentials_but_not_for_a_rotating_grant(via: Via) {
    let endpoint = Scripted::start(vec![(502, "", None), (200, TOKENS, None)]).await;
    let grant = ClientCredentials::new(via.grant_transport(), &endpoint.url)
        .unwrap()
        .client_id("admin")
        .client_secret(Secret::new("SECRET-CS-grants"));
    let manager = TokenManager::builder(grant).refresh_jitter(|| 0.0).build();
    let token = manager.current().await.unwrap();
    assert_eq!(token.access().expose(), "SECRET-AT-scripted");
    assert_eq!(endpoint.hits(), 2, "nothing rotates: the 502 is sent again");

    let endpoint = Scripted::start(vec![(502, "", None), (200, TOKENS, None)]).await;
    let manager = rotating_manager(via, &endpoint).await;
    let err = manager.refresh_after_rejection(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert_eq!(err.status(), Some(http::StatusCode::BAD_GATEWAY));
    assert_eq!(
        endpoint.hits(),
        1,
        "the 502 may have consumed the refresh token"
    );
    assert_hidden(&error_text(&err));
}

both!(
    current_thread,
    a_refused_connection_is_retried_within_the_refresh_deadline
);
async fn a_refused_connection_is_retried_within_the_refresh_deadline(via: Via) {
    let url = format!("http://{}/auth/token", refused_addr());
    let grant = OAuth2Refresh::new(via.grant_transport(), &url).unwrap();
    // One call per request: the grant itself never retries.
    let err = grant
        .request(Some(&Secret::new(SECRET_RT)))
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert!(err.is_never_sent());
    // The manager sends it again after 100, 200 and 400 ms; the next wait (800 ms) would
    // end past the 1 s deadline, so it stops after 4 calls.
    let manager = TokenManager::builder(grant)
        .refresh_timeout(Duration::from_secs(1))
        .refresh_jitter(|| 1.0)
        .build();
    manager
        .set_tokens(Secret::new(SECRET_AT), Some(Secret::new(SECRET_RT)), None)
        .await
        .unwrap();
    let err = manager.refresh_after_rejection(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert_eq!(err.refresh_failure(), Some(RefreshFailure::Unreachable));
    assert_eq!(err.attempts(), 4);
    assert_hidden(&error_text(&err));
}

both!(
    multi_thread,
    a_token_endpoint_503_503_200_costs_three_calls_and_no_failed_waiter
);
async fn a_token_endpoint_503_503_200_costs_three_calls_and_no_failed_waiter(via: Via) {
    let endpoint =
        Scripted::start(vec![(503, "", None), (503, "", None), (200, TOKENS, None)]).await;
    let manager = rotating_manager(via, &endpoint).await;
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.refresh_after_rejection(1).await })
        })
        .collect();
    for waiter in waiters {
        let token = waiter.await.unwrap().unwrap();
        assert_eq!(token.generation(), 2);
        assert_eq!(token.access().expose(), "SECRET-AT-scripted");
    }
    assert_eq!(endpoint.hits(), 3);
}

both!(
    current_thread,
    retry_after_on_the_token_endpoint_is_honoured_within_the_refresh_deadline
);
async fn retry_after_on_the_token_endpoint_is_honoured_within_the_refresh_deadline(via: Via) {
    let endpoint = Scripted::start(vec![(429, "", Some("1")), (200, TOKENS, None)]).await;
    let manager = rotating_manager(via, &endpoint).await;
    let started = std::time::Instant::now();
    manager.refresh_after_rejection(1).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited the server's 1 s"
    );
    assert_eq!(endpoint.hits(), 2);

    // Past the deadline: one call, the error at once, the server's wait readable.
    let endpoint = Scripted::start(vec![(503, "", Some("120"))]).await;
    let manager = rotating_manager(via, &endpoint).await;
    let err = manager.refresh_after_rejection(1).await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(endpoint.hits(), 1);
}

both!(current_thread, a_500_from_a_rotating_grant_is_not_retried);
async fn a_500_from_a_rotating_grant_is_not_retried(via: Via) {
    let endpoint = Scripted::start(vec![(500, "", None), (200, TOKENS, None)]).await;
    let manager = rotating_manager(via, &endpoint).await;
    let err = manager.refresh_after_rejection(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert_eq!(err.refresh_failure(), Some(RefreshFailure::Endpoint));
    assert_eq!(err.status(), Some(http::StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(err.attempts(), 1);
    assert_eq!(endpoint.hits(), 1);
}

both!(
    multi_thread,
    invalid_grant_is_never_retried_and_every_waiter_gets_the_same_error
);
async fn invalid_grant_is_never_retried_and_every_waiter_gets_the_same_error(via: Via) {
    let body =
        r#"{"error":"invalid_grant","error_description":"SECRET-RT-scripted-login is revoked"}"#;
    let endpoint = Scripted::start(vec![(400, body, None), (200, TOKENS, None)]).await;
    let manager = rotating_manager(via, &endpoint).await;
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.refresh_after_rejection(1).await })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for waiter in waiters {
        let err = waiter.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_hidden(&error_text(&err));
        seen.insert(error_text(&err));
    }
    let later = manager.current().await.unwrap_err();
    seen.insert(error_text(&later));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(endpoint.hits(), 1);
}

both!(
    current_thread,
    a_token_response_over_one_mebibyte_is_refresh_failed
);
async fn a_token_response_over_one_mebibyte_is_refresh_failed(via: Via) {
    let server = TestServer::start().await;
    // `/bytes/{n}` answers GET with n bytes: a token endpoint gone mad.
    let grant = JsonGrant::new(via.grant_transport(), &server.url("/bytes/2000000"))
        .unwrap()
        .method(http::Method::GET);
    let err = grant
        .request(Some(&Secret::new("SECRET-RT-123")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    let cause = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<Error>())
        .unwrap();
    assert_eq!(cause.kind(), ErrorKind::BodyTooLarge);
    assert_eq!(server.counters().hits(Route::Bytes), 1);
}

both!(
    current_thread,
    a_token_endpoint_is_called_over_plain_http_only_at_a_loopback_address
);
async fn a_token_endpoint_is_called_over_plain_http_only_at_a_loopback_address(via: Via) {
    let server = TestServer::start().await;
    let port = server.addr().port();
    for url in [
        format!("http://localhost:{port}/auth/token"),
        format!("http://auth.localhost:{port}/auth/token"),
        format!("http://[::ffff:10.0.0.1]:{port}/auth/token"),
    ] {
        let err = OAuth2Refresh::new(via.grant_transport(), &url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{url}");
        let err = ClientCredentials::new(via.grant_transport(), &url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{url}");
        let err = JsonGrant::new(via.grant_transport(), &url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{url}");
    }
    // The address works: 127.0.0.1 is where the testkit listens.
    let grant = OAuth2Refresh::new(via.grant_transport(), &server.url("/auth/token")).unwrap();
    let tokens = grant
        .request(Some(&Secret::new(server.login().refresh_token)))
        .await
        .unwrap();
    assert!(works(via, &server, &tokens.access_token).await);
}

both!(
    current_thread,
    a_json_grants_field_values_never_appear_in_its_errors
);
async fn a_json_grants_field_values_never_appear_in_its_errors(via: Via) {
    let server = TestServer::start().await;
    let grant = JsonGrant::new(via.grant_transport(), &server.url("/auth/refresh"))
        .unwrap()
        .field("password", "SECRET-PW-json-grant");
    let err = grant
        .request(Some(&Secret::new("SECRET-RT-json-grant")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    let shown = format!("{err} {err:?} {grant:?}");
    assert!(!shown.contains("SECRET-PW-json-grant"), "{shown}");
    assert!(!shown.contains("SECRET-RT-json-grant"), "{shown}");
}
