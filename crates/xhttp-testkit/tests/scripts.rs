//! Scripted faults and the dead-token counter, through real sockets.

mod common;

use std::time::Duration;

use common::TestClient;
use xhttp_testkit::{Action, Config, Route, Script, TestServer};

#[tokio::test]
async fn a_script_fails_exactly_the_named_token_calls() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let pair = server.login();
    server.set_script(
        Route::Token,
        Script::new().on(1, Action::fail(503)).on(
            3,
            Action::Fail {
                status: 429,
                retry_after: Some("2".into()),
            },
        ),
    );
    let url = server.url("/auth/token");
    let mut refresh = pair.refresh_token.clone();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let reply = client
            .post_form(
                &url,
                &format!("grant_type=refresh_token&refresh_token={refresh}"),
            )
            .await;
        statuses.push(reply.status.as_u16());
        if reply.status == 200 {
            refresh = reply.json()["refresh_token"].as_str().unwrap().to_owned();
        } else if reply.status == 429 {
            assert_eq!(reply.header("retry-after"), Some("2"));
        }
    }
    assert_eq!(statuses, [200, 503, 200, 429, 200]);
    assert_eq!(server.counters().scripted_faults(), 2);
    assert_eq!(
        server.counters().token_calls(),
        3,
        "scripted calls never reach the handler"
    );
    assert_eq!(server.counters().reuse_detected(), 0);
}

#[tokio::test]
async fn a_hung_request_loses_its_connection_and_a_slow_body_arrives_whole() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    server.set_script(
        Route::Public,
        Script::new()
            .on(0, Action::Hang(Duration::from_millis(200)))
            .on(1, Action::SlowBody(Duration::from_millis(100)))
            .on(2, Action::Drop),
    );
    let url = server.url("/public/items/4");
    assert!(client.try_get(&url).await.is_err(), "hung, then dropped");
    let slow = client.get(&url).await;
    assert_eq!(slow.status, 200);
    assert_eq!(slow.json()["result"]["id"], 4);
    assert!(client.try_get(&url).await.is_err(), "dropped");
    assert_eq!(client.get(&url).await.status, 200, "the script is over");
    assert_eq!(server.counters().scripted_faults(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_token_is_dead_once_the_server_rejected_it() {
    let server = TestServer::start_with(Config {
        access_ttl: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    let client = TestClient::http1();
    let pair = server.login();
    let url = server.url("/api/me");
    assert_eq!(
        client.get_with_token(&url, &pair.access_token).await.status,
        200
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    // Expired but never rejected yet: not a dead-token request.
    assert_eq!(
        client.get_with_token(&url, &pair.access_token).await.status,
        401
    );
    assert_eq!(server.counters().rejected_token_arrivals(), 0);
    // Sent again after the 401: dead-token requests.
    assert_eq!(
        client.get_with_token(&url, &pair.access_token).await.status,
        401
    );
    assert_eq!(
        client.get_with_token(&url, &pair.access_token).await.status,
        401
    );
    assert_eq!(server.counters().rejected_token_arrivals(), 2);
    let fresh = server.login();
    assert_eq!(
        client
            .get_with_token(&url, &fresh.access_token)
            .await
            .status,
        200
    );
    assert_eq!(server.counters().rejected_token_arrivals(), 2);
}

#[tokio::test]
async fn a_revoked_access_token_is_dead_while_its_refresh_token_lives() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let pair = server.login();
    server.set_script(Route::Items, Script::new().on(1, Action::Revoke));
    let url = server.url("/api/items/1");
    let get = |token: String| {
        let (client, url) = (&client, &url);
        async move { client.get_with_token(url, &token).await.status }
    };
    assert_eq!(get(pair.access_token.clone()).await, 200);
    assert_eq!(get(pair.access_token.clone()).await, 401, "revoked");
    assert_eq!(get(pair.access_token.clone()).await, 401, "and stays dead");
    assert_eq!(server.counters().rejected_token_arrivals(), 1);
    assert_eq!(server.counters().revoked_tokens(), 1);
    let reply = client
        .post_form(
            &server.url("/auth/token"),
            &format!(
                "grant_type=refresh_token&refresh_token={}",
                pair.refresh_token
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "the refresh token is still valid");
    let fresh = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(get(fresh).await, 200);
    assert_eq!(server.counters().reuse_detected(), 0);
}
