//! The public layers over a raw hyper client, with no xhttp transport: `hyper_util`'s legacy
//! `Client<HttpConnector, Full<Bytes>>`, sending the body hyper users already have. Dedupe,
//! refresh, retry and auth compose over it, with the facade's `CollectLayer` at the bottom
//! to collect the response body and make the client's errors xhttp errors, against the
//! testkit over real loopback sockets.
//!
//! Callers are lined up on the testkit's gate and the dedupe counters; assertions are counts,
//! and the bytes the server answered with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use xhttp::auth::{AuthLayer, OAuth2Refresh, Secret, TokenManager};
use xhttp::dedupe::DedupeLayer;
use xhttp::refresh::RefreshLayer;
use xhttp::retry::{Attempts, RetryLayer, RetryPolicy};
use xhttp::transport::CollectLayer;
use xhttp::Error;
use xhttp_core::Origin;
use xhttp_testkit::{Action, Route, Script, TestServer, TokenPair};

type Raw = Client<HttpConnector, Full<Bytes>>;
type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Response<Bytes>, Error>;

struct Setup {
    server: TestServer,
    manager: TokenManager,
    login: TokenPair,
    dedupe: DedupeLayer,
    /// Dedupe > refresh > retry > auth > collect > the raw client: the facade's order.
    stack: Stack,
}

async fn setup() -> Setup {
    let server = TestServer::start().await;
    let grant = OAuth2Refresh::new(xhttp::grant_transport(), &server.url("/auth/token")).unwrap();
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
    let raw: Raw = Client::builder(TokioExecutor::new()).build_http();
    let origin = Origin::parse(&server.base_url()).unwrap();
    // No jitter: a retry waits its bound (100 ms, the default base) and no longer.
    let policy = RetryPolicy::builder().jitter(|| 0.0).build().unwrap();
    // Followers wait for the trip however slow the machine is (the default 1 s lock timeout
    // would send their own requests, and the counts below would be off).
    let dedupe = DedupeLayer::builder()
        .lock_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(dedupe.clone())
        .layer(RefreshLayer::new(manager.clone()))
        .layer(RetryLayer::new(policy))
        .layer(AuthLayer::new(manager.clone(), [origin]).allow_insecure_loopback(true))
        .layer(CollectLayer::new())
        .service(raw);
    Setup {
        server,
        manager,
        login,
        dedupe,
        stack: BoxCloneSyncService::new(stack),
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

    fn get(&self, path: &str) -> Request<Full<Bytes>> {
        Request::get(self.server.url(path))
            .body(Full::default())
            .unwrap()
    }

    fn post_json(&self, path: &str, json: &'static str) -> Request<Full<Bytes>> {
        Request::post(self.server.url(path))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(json.as_bytes())))
            .unwrap()
    }
}

/// Polls `condition` every millisecond; fails after 10 s.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let wait = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .is_err()
    {
        panic!("timed out waiting for {what}");
    }
}

/// The body `POST /api/items` answers: the JSON it was sent, as the envelope's result.
fn created(json: &str) -> String {
    format!(r#"{{"code":0,"message":"ok","result":{json}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_gets_share_one_trip_that_is_retried_refreshed_and_replayed() {
    let setup = setup().await;
    setup.reject_the_access_token().await;
    // The trip's first request answers 503 before the gate; the retry waits at the gate with
    // the rejected token; after the refresh the replay passes the open gate.
    setup
        .server
        .set_script(Route::Gate, Script::new().on(0, Action::fail(503)));
    let callers: Vec<_> = (0..5)
        .map(|_| tokio::spawn(setup.stack.clone().oneshot(setup.get("/api/gate/7"))))
        .collect();
    setup.server.gate().wait_for_arrivals(1).await;
    until("4 followers", || setup.dedupe.stats().coalesced == 4).await;
    setup.server.gate().open();

    let mut bodies = Vec::new();
    for caller in callers {
        let response = caller.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(response.into_body());
    }
    let item = r#"{"code":0,"message":"ok","result":{"id":7,"name":"item 7"}}"#;
    assert!(bodies.iter().all(|body| body == item), "{bodies:?}");
    let counters = setup.server.counters();
    assert_eq!(counters.hits(Route::Gate), 3, "503, 401, then the replay");
    assert_eq!(counters.scripted_faults(), 1);
    assert_eq!(counters.unauthorized(), 1);
    assert_eq!(counters.token_calls(), 1, "one refresh for five callers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_post_is_replayed_with_its_full_body_after_the_refresh() {
    let setup = setup().await;
    setup.reject_the_access_token().await;
    let json = r#"{"name":"pen","price":7}"#;
    let response = setup
        .stack
        .clone()
        .oneshot(setup.post_json("/api/items", json))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), &created(json));
    let counters = setup.server.counters();
    assert_eq!(counters.hits(Route::Items), 2);
    assert_eq!(counters.unauthorized(), 1);
    assert_eq!(counters.token_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_an_idempotency_key_is_retried_with_its_full_body() {
    let setup = setup().await;
    setup
        .server
        .set_script(Route::Items, Script::new().on(0, Action::fail(503)));
    let json = r#"{"name":"ink"}"#;
    let mut request = setup.post_json("/api/items", json);
    request
        .headers_mut()
        .insert("idempotency-key", "k-7".parse().unwrap());
    let response = setup.stack.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
    assert_eq!(response.body(), &created(json));
    let counters = setup.server.counters();
    assert_eq!(counters.hits(Route::Items), 2);
    assert_eq!(counters.scripted_faults(), 1);
    assert_eq!(counters.token_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_an_xhttp_transport_error() {
    let raw: Raw = Client::builder(TokioExecutor::new()).build_http();
    let policy = RetryPolicy::builder().max_retries(0).build().unwrap();
    let stack = ServiceBuilder::new()
        .layer(DedupeLayer::new())
        .layer(RetryLayer::new(policy))
        .layer(CollectLayer::new())
        .service(raw);
    let url = format!("http://{}/items/1", xhttp_testkit::refused_addr());
    let request = Request::get(url).body(Full::default()).unwrap();
    let err = stack.oneshot(request).await.unwrap_err();
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
