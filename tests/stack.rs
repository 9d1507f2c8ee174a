//! The public [`Stack`] over a raw hyper-util client (`Client<HttpConnector, Full<Bytes>>`),
//! composed with `ServiceBuilder` as the README shows, against the testkit over loopback:
//! the canonical order, the identity wiring and the hyper error mapping hold without the
//! facade.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use xhttp::auth::{AuthLayer, OAuth2Refresh, Secret, TokenManager};
use xhttp::dedupe::DedupeLayer;
use xhttp::refresh::RefreshLayer;
use xhttp::retry::RetryPolicy;
use xhttp::status::StatusLayer;
use xhttp::{BoxStack, ErrorKind, Origin, Stack};
use xhttp_testkit::{Action, Route, Script, TestServer};

/// Secrets of this file's tokens never appear in an error.
const KNOWN_SECRETS: [&str; 1] = ["never-issued-secret-5e1f"];

struct Setup {
    server: TestServer,
    manager: TokenManager,
    stack: Stack<Full<Bytes>>,
    service: BoxStack<Full<Bytes>>,
}

async fn setup(
    options: impl FnOnce(xhttp::StackBuilder<Full<Bytes>>) -> xhttp::StackBuilder<Full<Bytes>>,
) -> Setup {
    let server = TestServer::start().await;
    let grant = OAuth2Refresh::new(xhttp::grant_transport(), &server.url("/auth/token")).unwrap();
    let manager = TokenManager::builder(grant).build();
    let login = server.login();
    manager
        .set_tokens(
            Secret::new(login.access_token),
            Some(Secret::new(login.refresh_token)),
            None,
        )
        .await
        .unwrap();
    let origin = Origin::parse(&server.base_url()).unwrap();
    let hyper: HyperClient<HttpConnector, Full<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build_http();
    // The README's composition.
    let stack = options(
        Stack::builder()
            .auth(AuthLayer::new(manager.clone(), [origin]).allow_insecure_loopback(true))
            .refresh(RefreshLayer::new(manager.clone()))
            .retry(RetryPolicy::builder().jitter(|| 0.0).build().unwrap())
            .status(StatusLayer::new())
            .dedupe(DedupeLayer::builder().lock_timeout(Duration::from_secs(30))),
    )
    .build()
    .unwrap();
    let service = ServiceBuilder::new().layer(stack.clone()).service(hyper);
    Setup {
        server,
        manager,
        stack,
        service,
    }
}

fn get(server: &TestServer, path: &str) -> Request<Full<Bytes>> {
    Request::get(server.url(path))
        .body(Full::default())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rejected_callers_cost_one_refresh_over_a_raw_hyper_client() {
    let setup = setup(|stack| stack).await;
    setup
        .manager
        .set_tokens(
            Secret::new(KNOWN_SECRETS[0]),
            Some(Secret::new(setup.server.login().refresh_token)),
            None,
        )
        .await
        .unwrap();
    let gate = setup.server.gate();
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let (service, request) = (
                setup.service.clone(),
                get(&setup.server, &format!("/api/gate/{i}")),
            );
            tokio::spawn(async move { service.oneshot(request).await })
        })
        .collect();
    gate.wait_for_arrivals(1000).await;
    gate.open();
    for call in calls {
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let counters = setup.server.counters();
    assert_eq!(counters.token_calls(), 1, "one refresh for 1000 rejections");
    assert_eq!(counters.unauthorized(), 1000);
    assert_eq!(
        counters.hits(Route::Gate),
        2000,
        "1000 firsts + 1000 replays"
    );
    assert_eq!(counters.reuse_detected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_is_keyed_on_the_session_and_retry_and_status_run_in_order() {
    let setup = setup(|stack| stack).await;
    // The shared trip meets a 503 first: retry (below dedupe) resends it once for all.
    setup
        .server
        .set_script(Route::Gate, Script::new().on(0, Action::fail(503)));
    let gate = setup.server.gate();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (service, request) = (setup.service.clone(), get(&setup.server, "/api/gate/7"));
            tokio::spawn(async move { service.oneshot(request).await })
        })
        .collect();
    gate.wait_for_arrivals(1).await;
    let dedupe = setup.stack.dedupe().unwrap().clone();
    while dedupe.stats().coalesced < 19 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gate.open();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        setup.server.counters().hits(Route::Gate),
        2,
        "one trip, one retry"
    );
    assert_eq!(dedupe.stats().coalesced, 19);
    // Another session never joins a trip of the first one: session A's trip is held at the
    // gate, and the same GET in session B makes its own trip.
    gate.close();
    let held = tokio::spawn({
        let (service, request) = (setup.service.clone(), get(&setup.server, "/api/gate/9"));
        async move { service.oneshot(request).await }
    });
    gate.wait_for_arrivals(2).await;
    let login = setup.server.login();
    setup
        .manager
        .set_tokens(
            Secret::new(login.access_token),
            Some(Secret::new(login.refresh_token)),
            None,
        )
        .await
        .unwrap();
    let other = tokio::spawn({
        let (service, request) = (setup.service.clone(), get(&setup.server, "/api/gate/9"));
        async move { service.oneshot(request).await }
    });
    tokio::time::timeout(Duration::from_secs(10), gate.wait_for_arrivals(3))
        .await
        .expect("the other session's call made its own trip");
    gate.open();
    assert_eq!(other.await.unwrap().unwrap().status(), StatusCode::OK);
    // A's trip was sent in the older session: it is answered, never replayed with B's token.
    let _ = held.await.unwrap();
    assert_eq!(dedupe.stats().coalesced, 19);
}

#[tokio::test]
async fn a_refused_connect_is_never_sent_so_a_post_is_retried() {
    let setup = setup(|stack| stack.deadline(Duration::from_secs(10))).await;
    let refused = xhttp_testkit::refused_addr();
    let request = Request::post(format!("http://{refused}/api/orders"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let err = setup.service.clone().oneshot(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.is_never_sent(), "{err:?}");
    assert_eq!(
        err.attempts(),
        4,
        "a POST that was never sent is retried like any method"
    );
    let shown = format!("{err} {err:?}");
    assert!(
        KNOWN_SECRETS.iter().all(|secret| !shown.contains(secret)),
        "{shown}"
    );
}

#[tokio::test]
async fn failure_statuses_are_typed_errors_over_the_raw_client() {
    let setup = setup(|stack| stack).await;
    setup.server.set_script(
        Route::Items,
        Script::new().on_range(0..4, Action::fail(503)),
    );
    let err = setup
        .service
        .clone()
        .oneshot(get(&setup.server, "/api/items/3"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status, "{err}");
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.attempts(), 4);
    assert_eq!(setup.server.counters().hits(Route::Items), 4);
}

#[test]
fn refresh_without_auth_is_a_config_error() {
    let grant =
        OAuth2Refresh::new(xhttp::grant_transport(), "https://auth.example.com/token").unwrap();
    let manager = TokenManager::builder(grant).build();
    let err = Stack::<Full<Bytes>>::builder()
        .refresh(RefreshLayer::new(manager))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn the_outer_hook_sees_a_call_once_and_the_transport_hook_every_trip() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let server = TestServer::start().await;
    server.set_script(
        Route::Public,
        Script::new().on_range(0..2, Action::fail(503)),
    );
    let (calls, trips) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, t) = (calls.clone(), trips.clone());
    let client = xhttp::Client::builder()
        .base_url(server.base_url())
        .retry(RetryPolicy::builder().jitter(|| 0.0).build().unwrap())
        .layer(tower::util::MapRequestLayer::new(
            move |request: Request<xhttp::Body>| {
                c.fetch_add(1, Ordering::SeqCst);
                request
            },
        ))
        .transport_layer(tower::util::MapRequestLayer::new(
            move |request: Request<xhttp::Body>| {
                t.fetch_add(1, Ordering::SeqCst);
                request
            },
        ))
        .build()
        .unwrap();
    let response = client.get("/public/items/1").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "above the stack: once per call"
    );
    assert_eq!(
        trips.load(Ordering::SeqCst),
        3,
        "at the transport end: every trip"
    );
}
