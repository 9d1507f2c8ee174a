//! The grants of xhttp-auth against the testkit's token endpoints, through real sockets:
//! what each grant sends is what a real server accepts, rotation and reuse detection behave
//! as RFC 9700 says, and a failing endpoint costs exactly the calls the retry rule allows.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tower::{Layer, ServiceExt};
use xhttp::transport::{AttemptTimeoutLayer, CollectLayer, HttpTransport};
use xhttp_auth::{
    ClientCredentials, GrantTransport, JsonGrant, OAuth2Refresh, RefreshGrant, Secret,
};
use xhttp_core::{Body, Error, ErrorKind};
use xhttp_testkit::{refused_addr, Faults, Route, TestServer};

/// The grant's own small stack: transport, collect, attempt timeout.
fn transport() -> GrantTransport {
    tower::util::BoxCloneSyncService::new(
        AttemptTimeoutLayer::new(Duration::from_secs(10))
            .layer(CollectLayer::new().layer(HttpTransport::default())),
    )
}

/// Whether `access_token` opens a protected route.
async fn works(server: &TestServer, access_token: &Secret) -> bool {
    let request = http::Request::get(server.url("/api/me"))
        .header("authorization", format!("Bearer {}", access_token.expose()))
        .body(Body::empty())
        .unwrap();
    let response = transport().oneshot(request).await.unwrap();
    response.status() == 200
}

fn error_text(err: &Error) -> String {
    format!("{err} {err:?}")
}

#[tokio::test]
async fn oauth2_refresh_rotates_with_one_token_call_per_refresh() {
    let server = TestServer::start().await;
    let grant = OAuth2Refresh::new(transport(), &server.url("/auth/token")).unwrap();
    let mut refresh_token = Secret::new(server.login().refresh_token);

    for round in 1..=3 {
        let tokens = grant.request(Some(&refresh_token)).await.unwrap();
        assert_eq!(server.counters().token_calls(), round);
        assert_eq!(server.counters().refresh_calls(), round);
        assert!(tokens.expires_in.is_some_and(|d| d > Duration::ZERO));
        assert!(works(&server, &tokens.access_token).await);
        let rotated = tokens.refresh_token.unwrap();
        assert_ne!(rotated, refresh_token);
        refresh_token = rotated;
    }
    assert_eq!(server.counters().reuse_detected(), 0);
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_is_session_expired_and_revokes_the_family() {
    let server = TestServer::start().await;
    let grant = OAuth2Refresh::new(transport(), &server.url("/auth/token")).unwrap();
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

#[tokio::test]
async fn client_credentials_gets_a_token_with_basic_or_body_authentication() {
    let server = TestServer::start().await;
    let (id, secret) = server.config().credentials.clone();
    for basic in [true, false] {
        let grant = ClientCredentials::new(transport(), &server.url("/auth/token"))
            .unwrap()
            .client_id(id.clone())
            .client_secret(Secret::new(secret.clone()))
            .basic_auth(basic);
        let tokens = grant.request(None).await.unwrap();
        assert!(tokens.refresh_token.is_none());
        assert!(tokens.expires_in.is_some());
        assert!(works(&server, &tokens.access_token).await);
    }
    assert_eq!(server.counters().token_calls(), 2);
    assert_eq!(server.counters().refresh_calls(), 0);
}

#[tokio::test]
async fn client_credentials_with_a_wrong_secret_is_session_expired_after_one_call() {
    let server = TestServer::start().await;
    let grant = ClientCredentials::new(transport(), &server.url("/auth/token"))
        .unwrap()
        .client_id("admin")
        .client_secret(Secret::new("SECRET-CS-WRONG"));
    let err = grant.request(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert!(!error_text(&err).contains("SECRET-CS-WRONG"));
    assert_eq!(server.counters().token_calls(), 1);
}

#[tokio::test]
async fn json_grant_refreshes_against_the_custom_dialect() {
    let server = TestServer::start().await;
    let grant = JsonGrant::new(transport(), &server.url("/auth/refresh")).unwrap();
    let first = Secret::new(server.login().refresh_token);

    let tokens = grant.request(Some(&first)).await.unwrap();
    assert!(works(&server, &tokens.access_token).await);
    assert!(tokens.expires_in.is_some());
    let second = tokens.refresh_token.unwrap();
    assert_ne!(second, first);
    let tokens = grant.request(Some(&second)).await.unwrap();
    assert!(tokens.refresh_token.is_some());
    assert_eq!(server.counters().refresh_calls(), 2);
    assert_eq!(server.counters().reuse_detected(), 0);
}

#[tokio::test]
async fn json_grant_with_an_invalid_refresh_token_is_session_expired() {
    let server = TestServer::start().await;
    let grant = JsonGrant::new(transport(), &server.url("/auth/refresh")).unwrap();
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

#[tokio::test]
async fn a_failing_refresh_endpoint_is_refresh_failed_after_exactly_one_call() {
    let server = TestServer::start().await;
    let failing = Faults {
        fail_rate: 1.0,
        ..Faults::default()
    };
    server.set_faults(Route::Token, failing.clone());
    server.set_faults(Route::CustomRefresh, failing);
    let refresh_token = Secret::new(server.login().refresh_token);

    let oauth = OAuth2Refresh::new(transport(), &server.url("/auth/token")).unwrap();
    let err = oauth.request(Some(&refresh_token)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(server.counters().hits(Route::Token), 1);

    let json = JsonGrant::new(transport(), &server.url("/auth/refresh")).unwrap();
    let err = json.request(Some(&refresh_token)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert_eq!(server.counters().hits(Route::CustomRefresh), 1);

    // Nothing was consumed: the refresh token still works once the endpoint recovers.
    assert_eq!(server.counters().token_calls(), 0);
    server.set_faults(Route::Token, Faults::default());
    oauth.request(Some(&refresh_token)).await.unwrap();
    assert_eq!(server.counters().reuse_detected(), 0);
}

#[tokio::test]
async fn client_credentials_retries_a_failing_endpoint_twice() {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Token,
        Faults {
            fail_rate: 1.0,
            ..Faults::default()
        },
    );
    let grant = ClientCredentials::new(transport(), &server.url("/auth/token"))
        .unwrap()
        .client_id("admin")
        .client_secret(Secret::new("secret"));
    let err = grant.request(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert_eq!(err.attempts(), 3);
    assert_eq!(server.counters().hits(Route::Token), 3);
}

#[tokio::test]
async fn a_refused_connection_is_retried_twice_then_refresh_failed() {
    let url = format!("http://{}/auth/token", refused_addr());
    let grant = OAuth2Refresh::new(transport(), &url).unwrap();
    let err = grant
        .request(Some(&Secret::new("SECRET-RT-123")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert_eq!(err.attempts(), 3);
    assert!(!error_text(&err).contains("SECRET-RT-123"));
}

#[tokio::test]
async fn a_token_response_over_one_mebibyte_is_refresh_failed() {
    let server = TestServer::start().await;
    // `/bytes/{n}` answers GET with n bytes: a token endpoint gone mad.
    let grant = JsonGrant::new(transport(), &server.url("/bytes/2000000"))
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

#[tokio::test]
async fn a_token_endpoint_is_called_over_plain_http_only_at_a_loopback_address() {
    let server = TestServer::start().await;
    let port = server.addr().port();
    for url in [
        format!("http://localhost:{port}/auth/token"),
        format!("http://auth.localhost:{port}/auth/token"),
        format!("http://[::ffff:10.0.0.1]:{port}/auth/token"),
    ] {
        let err = OAuth2Refresh::new(transport(), &url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{url}");
        let err = ClientCredentials::new(transport(), &url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{url}");
        let err = JsonGrant::new(transport(), &url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{url}");
    }
    // The address works: 127.0.0.1 is where the testkit listens.
    let grant = OAuth2Refresh::new(transport(), &server.url("/auth/token")).unwrap();
    let tokens = grant
        .request(Some(&Secret::new(server.login().refresh_token)))
        .await
        .unwrap();
    assert!(works(&server, &tokens.access_token).await);
}

#[tokio::test]
async fn a_json_grants_field_values_never_appear_in_its_errors() {
    let server = TestServer::start().await;
    let grant = JsonGrant::new(transport(), &server.url("/auth/refresh"))
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
