//! Counters under concurrency, through real sockets.

mod common;

use common::TestClient;
use xhttp_testkit::{Route, TestServer};

const CALLERS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_are_exact_under_a_thousand_requests_held_on_the_gate() {
    let server = TestServer::start().await;
    // HTTP/1.1: one connection per request, so no stream limit caps the concurrency.
    let client = TestClient::http1();
    let callers: Vec<_> = (0..CALLERS)
        .map(|id| {
            let client = client.clone();
            let url = server.url(&format!("/gate/{id}"));
            tokio::spawn(async move { client.get(&url).await })
        })
        .collect();

    server.gate().wait_for_arrivals(CALLERS).await;
    let counters = server.counters();
    assert_eq!(counters.in_flight(), CALLERS as u64);
    assert_eq!(counters.peak_concurrency(), CALLERS as u64);
    server.gate().open();

    for (id, caller) in callers.into_iter().enumerate() {
        let reply = caller.await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["result"]["id"], id);
    }
    assert_eq!(counters.hits(Route::Gate), CALLERS as u64);
    assert_eq!(counters.total(), CALLERS as u64);
    assert_eq!(counters.peak_concurrency(), CALLERS as u64);
    assert_eq!(counters.in_flight(), 0);
    assert_eq!(server.gate().arrived(), CALLERS);

    counters.reset();
    assert_eq!(counters.total(), 0);
    assert_eq!(counters.peak_concurrency(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_one_token_rotate_once_and_detect_the_rest_as_reuse() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let tokens = server.login();
    let racers: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            let url = server.url("/auth/token");
            let form = format!(
                "grant_type=refresh_token&refresh_token={}",
                tokens.refresh_token
            );
            tokio::spawn(async move { client.post_form(&url, &form).await.status })
        })
        .collect();
    let mut ok = 0;
    for racer in racers {
        if racer.await.unwrap() == 200 {
            ok += 1;
        }
    }
    // Exactly the double refresh that RFC 9700 reuse detection punishes.
    assert_eq!(ok, 1);
    assert_eq!(server.counters().reuse_detected(), 49);
    assert_eq!(server.counters().refresh_calls(), 50);
}
