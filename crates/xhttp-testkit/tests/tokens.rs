//! Token endpoints, rotation, reuse detection and expiry, through real sockets.

mod common;

use std::time::Duration;

use common::TestClient;
use serde_json::json;
use xhttp_testkit::{Config, ExpiryMode, TestServer};

const HOUR: Duration = Duration::from_secs(3600);

fn refresh_form(refresh_token: &str) -> String {
    format!("grant_type=refresh_token&refresh_token={refresh_token}")
}

#[tokio::test]
async fn login_issues_a_bearer_pair_and_counts_one_token_call() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let reply = client
        .post_json(
            &server.url("/auth/login"),
            json!({"username": "admin", "password": "secret"}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let access = body["access_token"].as_str().unwrap();
    assert_ne!(Some(access), body["refresh_token"].as_str());

    let me = client.get_with_token(&server.url("/api/me"), access).await;
    assert_eq!(
        me.json(),
        json!({"code": 0, "message": "ok", "result": {"user": "admin"}})
    );
    assert_eq!(server.counters().token_calls(), 1);
    assert_eq!(server.counters().refresh_calls(), 0);
}

#[tokio::test]
async fn login_with_wrong_credentials_is_invalid_client() {
    let server = TestServer::start().await;
    let reply = TestClient::http1()
        .post_json(
            &server.url("/auth/login"),
            json!({"username": "admin", "password": "wrong"}),
        )
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "invalid_client");
    assert_eq!(server.counters().token_calls(), 1);
    assert_eq!(server.counters().unauthorized(), 1);
}

#[tokio::test]
async fn refresh_token_grant_rotates_the_refresh_token() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let first = server.login();
    let reply = client
        .post_form(
            &server.url("/auth/token"),
            &refresh_form(&first.refresh_token),
        )
        .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    let second_refresh = body["refresh_token"].as_str().unwrap();
    assert_ne!(second_refresh, first.refresh_token);
    assert_ne!(body["access_token"], first.access_token.as_str());

    // The rotated token works once more; no reuse so far.
    let third = client
        .post_form(&server.url("/auth/token"), &refresh_form(second_refresh))
        .await;
    assert_eq!(third.status, 200);
    assert_eq!(server.counters().refresh_calls(), 2);
    assert_eq!(server.counters().token_calls(), 2);
    assert_eq!(server.counters().reuse_detected(), 0);
}

#[tokio::test]
async fn refresh_token_used_twice_revokes_its_whole_family() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let bystander = server.login();
    let first = server.login();
    let token_url = server.url("/auth/token");

    let rotated = client
        .post_form(&token_url, &refresh_form(&first.refresh_token))
        .await
        .json();
    let newest_access = rotated["access_token"].as_str().unwrap();
    let newest_refresh = rotated["refresh_token"].as_str().unwrap();
    let me = server.url("/api/me");
    assert_eq!(client.get_with_token(&me, newest_access).await.status, 200);

    // A second use of the retired token: reuse.
    let reuse = client
        .post_form(&token_url, &refresh_form(&first.refresh_token))
        .await;
    assert_eq!(reuse.status, 400);
    assert_eq!(reuse.json()["error"], "invalid_grant");
    assert_eq!(server.counters().reuse_detected(), 1);

    // The newest tokens of that family are dead too.
    let rejected = client.get_with_token(&me, newest_access).await;
    assert_eq!(rejected.status, 401);
    assert!(rejected
        .header("www-authenticate")
        .unwrap()
        .contains(r#"error="invalid_token""#));
    let newest = client
        .post_form(&token_url, &refresh_form(newest_refresh))
        .await;
    assert_eq!(newest.status, 400);
    assert_eq!(newest.json()["error"], "invalid_grant");
    assert_eq!(server.counters().reuse_detected(), 1);

    // Another session is untouched.
    let other = client.get_with_token(&me, &bystander.access_token).await;
    assert_eq!(other.status, 200);
}

#[tokio::test]
async fn unknown_refresh_token_is_invalid_grant_without_reuse() {
    let server = TestServer::start().await;
    let reply = TestClient::http1()
        .post_form(&server.url("/auth/token"), &refresh_form("nope"))
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "invalid_grant");
    assert_eq!(server.counters().reuse_detected(), 0);
}

#[tokio::test]
async fn token_endpoint_rejects_bad_requests() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let url = server.url("/auth/token");
    let unsupported = client.post_form(&url, "grant_type=password").await;
    assert_eq!(unsupported.status, 400);
    assert_eq!(unsupported.json()["error"], "unsupported_grant_type");
    let missing = client.post_form(&url, "grant_type=refresh_token").await;
    assert_eq!(missing.json()["error"], "invalid_request");
    let json_body = client.post_json(&url, json!({"grant_type": "x"})).await;
    assert_eq!(json_body.status, 400);
    assert_eq!(json_body.json()["error"], "invalid_request");
    assert_eq!(server.counters().token_calls(), 3);
}

#[tokio::test]
async fn client_credentials_grant_issues_an_access_token_only() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let url = server.url("/auth/token");

    let reply = client
        .post_form(
            &url,
            "grant_type=client_credentials&client_id=admin&client_secret=secret",
        )
        .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none());
    let access = body["access_token"].as_str().unwrap();
    let me = client.get_with_token(&server.url("/api/me"), access).await;
    assert_eq!(me.status, 200);

    // HTTP Basic client authentication (RFC 6749 section 2.3.1): admin:secret.
    let basic = http::Request::post(&url)
        .header("authorization", "Basic YWRtaW46c2VjcmV0")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"grant_type=client_credentials",
        )))
        .unwrap();
    assert_eq!(client.send(basic).await.unwrap().status, 200);

    let wrong = client
        .post_form(
            &url,
            "grant_type=client_credentials&client_id=admin&client_secret=guess",
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "invalid_client");
    assert_eq!(server.counters().token_calls(), 3);
    assert_eq!(server.counters().refresh_calls(), 0);
}

#[tokio::test]
async fn custom_json_refresh_dialect_rotates_inside_an_envelope() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let url = server.url("/auth/refresh");
    let first = server.login();

    let reply = client
        .post_json(&url, json!({"refreshToken": first.refresh_token}))
        .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["code"], 0);
    assert_eq!(body["message"], "ok");
    let result = &body["result"];
    assert_eq!(result["expiresIn"], 900);
    let access = result["accessToken"].as_str().unwrap();
    assert_ne!(result["refreshToken"], first.refresh_token.as_str());
    let me = client.get_with_token(&server.url("/api/me"), access).await;
    assert_eq!(me.status, 200);

    let invalid = client
        .post_json(&url, json!({"refreshToken": "nope"}))
        .await;
    assert_eq!(invalid.status, 200);
    assert_eq!(
        invalid.json(),
        json!({"code": 401, "message": "invalid refresh token", "result": null})
    );

    // The dialect shares rotation and reuse detection with the OAuth endpoint.
    let reused = client
        .post_json(&url, json!({"refreshToken": first.refresh_token}))
        .await;
    assert_eq!(reused.json()["code"], 401);
    assert_eq!(server.counters().reuse_detected(), 1);
    assert_eq!(server.counters().refresh_calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn access_token_expires_on_the_paused_clock_with_a_401_challenge() {
    let server = TestServer::start_with(Config {
        access_ttl: HOUR,
        ..Config::default()
    })
    .await;
    let client = TestClient::http1();
    let tokens = server.login();
    let url = server.url("/api/items/7");

    let fresh = client.get_with_token(&url, &tokens.access_token).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(
        fresh.json(),
        json!({"code": 0, "message": "ok", "result": {"id": 7, "name": "item 7"}})
    );

    tokio::time::advance(HOUR).await;
    let expired = client.get_with_token(&url, &tokens.access_token).await;
    assert_eq!(expired.status, 401);
    let challenge = expired.header("www-authenticate").unwrap();
    assert!(challenge.starts_with(r#"Bearer error="invalid_token""#));
    assert!(expired.json()["error"]["message"].is_string());
    assert_eq!(server.counters().unauthorized(), 1);
    assert_eq!(server.counters().requests_with_stale_token(), 1);
}

#[tokio::test(start_paused = true)]
async fn expired_token_in_business_code_mode_answers_200_with_40009() {
    let server = TestServer::start_with(Config {
        access_ttl: HOUR,
        expiry_mode: ExpiryMode::BusinessCode,
        ..Config::default()
    })
    .await;
    let client = TestClient::http1();
    let tokens = server.login();
    let url = server.url("/api/me");
    assert_eq!(
        client
            .get_with_token(&url, &tokens.access_token)
            .await
            .json()["code"],
        0
    );

    tokio::time::advance(HOUR).await;
    let expired = client.get_with_token(&url, &tokens.access_token).await;
    assert_eq!(expired.status, 200);
    assert_eq!(
        expired.json(),
        json!({"code": 40009, "message": "token expired", "result": null})
    );
    assert_eq!(server.counters().unauthorized(), 1);
}

#[tokio::test]
async fn missing_or_unknown_token_gets_the_right_challenge() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let url = server.url("/api/items/1");

    let missing = client.get(&url).await;
    assert_eq!(missing.status, 401);
    let challenge = missing.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer") && !challenge.contains("error="));

    let unknown = client.get_with_token(&url, "made-up").await;
    assert_eq!(unknown.status, 401);
    assert!(unknown
        .header("www-authenticate")
        .unwrap()
        .contains(r#"error="invalid_token""#));
    // Never valid, so not stale.
    assert_eq!(server.counters().requests_with_stale_token(), 0);
    assert_eq!(server.counters().unauthorized(), 2);
}

#[tokio::test]
async fn superseded_token_is_counted_as_stale_and_rejected_only_when_configured() {
    for reject_superseded in [false, true] {
        let server = TestServer::start_with(Config {
            reject_superseded,
            ..Config::default()
        })
        .await;
        let client = TestClient::http1();
        let old = server.login();
        let refreshed = client
            .post_form(
                &server.url("/auth/token"),
                &refresh_form(&old.refresh_token),
            )
            .await
            .json();
        let me = server.url("/api/me");
        let with_old = client.get_with_token(&me, &old.access_token).await;
        let expected = if reject_superseded { 401 } else { 200 };
        assert_eq!(with_old.status, expected);
        let new_access = refreshed["access_token"].as_str().unwrap();
        assert_eq!(client.get_with_token(&me, new_access).await.status, 200);
        assert_eq!(server.counters().requests_with_stale_token(), 1);
    }
}

#[tokio::test]
async fn revoke_all_invalidates_every_access_and_refresh_token() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let tokens = server.login();
    server.revoke_all();
    let me = client
        .get_with_token(&server.url("/api/me"), &tokens.access_token)
        .await;
    assert_eq!(me.status, 401);
    let refresh = client
        .post_form(
            &server.url("/auth/token"),
            &refresh_form(&tokens.refresh_token),
        )
        .await;
    assert_eq!(refresh.json()["error"], "invalid_grant");
    // Revocation is not reuse.
    assert_eq!(server.counters().reuse_detected(), 0);
    // New logins work again.
    let fresh = server.login();
    let me = client
        .get_with_token(&server.url("/api/me"), &fresh.access_token)
        .await;
    assert_eq!(me.status, 200);
}

#[tokio::test]
async fn token_ttl_can_change_at_runtime() {
    let server = TestServer::start().await;
    server.set_token_ttl(Duration::from_secs(5));
    assert_eq!(server.login().expires_in, 5);
    server.set_token_ttl(Duration::from_millis(10));
    assert_eq!(server.login().expires_in, 1);
}

#[tokio::test]
async fn create_item_echoes_the_json_body_in_the_envelope() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let tokens = server.login();
    let request = http::Request::post(server.url("/api/items"))
        .header("authorization", format!("Bearer {}", tokens.access_token))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"name": "  spaced  ", "n": 1.50}"#,
        )))
        .unwrap();
    let reply = client.send(request).await.unwrap();
    assert_eq!(reply.status, 200);
    // Byte for byte: nothing trimmed or renormalised.
    assert_eq!(
        reply.body,
        r#"{"code":0,"message":"ok","result":{"name": "  spaced  ", "n": 1.50}}"#
    );
}

#[tokio::test]
async fn same_seed_issues_the_same_tokens() {
    let config = Config {
        seed: 99,
        ..Config::default()
    };
    let a = TestServer::start_with(config.clone()).await.login();
    let b = TestServer::start_with(config).await.login();
    let c = TestServer::start().await.login();
    assert_eq!(a, b);
    assert_ne!(a.access_token, c.access_token);
}
