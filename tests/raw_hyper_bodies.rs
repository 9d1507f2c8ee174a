//! Dedupe, refresh, retry and auth composed over a raw hyper client, with no xhttp transport:
//! the stack variant (`common`) is the public `Stack<Full<Bytes>>` over hyper-util's legacy
//! `Client<HttpConnector, Full<Bytes>>`, so these layers replay and key the body hyper users
//! already have; the facade variant runs the same calls over the facade's own transport.
//! Against the testkit over real loopback sockets.
//!
//! Callers are lined up on the testkit's gate and the dedupe counters; assertions are counts,
//! and the bytes the server answered with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{both, until, TestClient, Via};
use xhttp::auth::{OAuth2Refresh, Secret, TokenManager};
use xhttp::dedupe::DedupeLayer;
use xhttp::retry::{Attempts, RetryPolicy};
use xhttp_testkit::{Action, Route, Script, TestServer, TokenPair};

struct Setup {
    server: TestServer,
    manager: TokenManager,
    login: TokenPair,
    client: TestClient,
}

async fn setup(via: Via) -> Setup {
    let server = TestServer::start().await;
    let grant = OAuth2Refresh::new(via.grant_transport(), &server.url("/auth/token")).unwrap();
    let manager = TokenManager::builder(grant).build();
    let login = server.login();
    manager
        .set_tokens(
            Secret::new(login.access_token.clone()),
            Some(Secret::new(login.refresh_token.clone())),
            None,
        )
        .await
        .unwrap();
    // No jitter: a retry waits its bound (100 ms, the default base) and no longer.
    let policy = RetryPolicy::builder().jitter(|| 0.0).build().unwrap();
    // Followers wait for the trip however slow the machine is (the default 1 s lock timeout
    // would send their own requests, and the counts below would be off).
    let dedupe = DedupeLayer::builder().lock_timeout(Duration::from_secs(30));
    let client = via
        .client()
        .base_url(server.base_url())
        .auth(manager.clone())
        .allow_insecure_loopback()
        .retry(policy)
        .dedupe(dedupe)
        .build()
        .unwrap();
    Setup {
        server,
        manager,
        login,
        client,
    }
}

impl Setup {
    /// Replaces the access token with one the server never issued, keeping the valid
    /// refresh token: the next protected call is rejected with a 401 and refreshes.
    async fn reject_the_access_token(&self) {
        self.manager
            .set_tokens(
                Secret::new("never-issued"),
                Some(Secret::new(self.login.refresh_token.clone())),
                None,
            )
            .await
            .unwrap();
    }

    fn post_json(&self, path: &str, json: &'static str) -> xhttp::RequestBuilder {
        self.client
            .post(path)
            .header("content-type", "application/json")
            .body(json)
    }
}

/// The body `POST /api/items` answers: the JSON it was sent, as the envelope's result.
fn created(json: &str) -> String {
    format!(r#"{{"code":0,"message":"ok","result":{json}}}"#)
}

both!(
    multi_thread,
    identical_gets_share_one_trip_that_is_retried_refreshed_and_replayed
);
async fn identical_gets_share_one_trip_that_is_retried_refreshed_and_replayed(via: Via) {
    let setup = setup(via).await;
    setup.reject_the_access_token().await;
    // The trip's first request answers 503 before the gate; the retry waits at the gate with
    // the rejected token; after the refresh the replay passes the open gate.
    setup
        .server
        .set_script(Route::Gate, Script::new().on(0, Action::fail(503)));
    let callers: Vec<_> = (0..5)
        .map(|_| tokio::spawn(setup.client.get("/api/gate/7").send()))
        .collect();
    setup.server.gate().wait_for_arrivals(1).await;
    until("4 followers", || setup.client.dedupe_stats().coalesced == 4).await;
    setup.server.gate().open();

    let mut bodies = Vec::new();
    for caller in callers {
        let response = caller.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(response.bytes());
    }
    let item = r#"{"code":0,"message":"ok","result":{"id":7,"name":"item 7"}}"#;
    assert!(bodies.iter().all(|body| body == item), "{bodies:?}");
    let counters = setup.server.counters();
    assert_eq!(counters.hits(Route::Gate), 3, "503, 401, then the replay");
    assert_eq!(counters.scripted_faults(), 1);
    assert_eq!(counters.unauthorized(), 1);
    assert_eq!(counters.token_calls(), 1, "one refresh for five callers");
}

both!(
    multi_thread,
    a_rejected_post_is_replayed_with_its_full_body_after_the_refresh
);
async fn a_rejected_post_is_replayed_with_its_full_body_after_the_refresh(via: Via) {
    let setup = setup(via).await;
    setup.reject_the_access_token().await;
    let json = r#"{"name":"pen","price":7}"#;
    let response = setup.post_json("/api/items", json).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), &created(json));
    let counters = setup.server.counters();
    assert_eq!(counters.hits(Route::Items), 2);
    assert_eq!(counters.unauthorized(), 1);
    assert_eq!(counters.token_calls(), 1);
}

both!(
    multi_thread,
    a_post_with_an_idempotency_key_is_retried_with_its_full_body
);
async fn a_post_with_an_idempotency_key_is_retried_with_its_full_body(via: Via) {
    let setup = setup(via).await;
    setup
        .server
        .set_script(Route::Items, Script::new().on(0, Action::fail(503)));
    let json = r#"{"name":"ink"}"#;
    let response = setup
        .post_json("/api/items", json)
        .header("idempotency-key", "k-7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
    assert_eq!(response.body(), &created(json));
    let counters = setup.server.counters();
    assert_eq!(counters.hits(Route::Items), 2);
    assert_eq!(counters.scripted_faults(), 1);
    assert_eq!(counters.token_calls(), 0);
}

both!(
    multi_thread,
    a_refused_connection_is_an_xhttp_transport_error
);
async fn a_refused_connection_is_an_xhttp_transport_error(via: Via) {
    let client = via
        .client()
        .retry(RetryPolicy::builder().max_retries(0).build().unwrap())
        .build()
        .unwrap();
    let url = format!("http://{}/items/1", xhttp_testkit::refused_addr());
    let err = client.get(&url).send().await.unwrap_err();
    assert_eq!(err.kind(), xhttp::ErrorKind::Transport, "{err}");
    assert_eq!(err.attempts(), 1);
    let source = std::error::Error::source(&err).expect("the client's error is the source");
    assert!(
        source
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect),
        "{source:?}"
    );
}
