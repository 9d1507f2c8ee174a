//! Dedupe through the facade, over real loopback sockets against the testkit: what reaches
//! the server when identical calls coalesce, when every caller leaves, when the shared
//! outcome is a failure, under the per-request policies, and when a cancel scope ends.
//!
//! Callers are lined up on the testkit's gate (`GET /gate/{id}`) and the dedupe counters,
//! never by sleeping; assertions are counts, order and kinds. Exact timing (the success
//! window) is proven on the paused clock in `crates/xhttp-dedupe/tests/layer.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::task::JoinHandle;
use xhttp::dedupe::{CancelScope, DedupeOverride, DedupePolicy};
use xhttp::{Client, ErrorKind, Response};
use xhttp_testkit::{Faults, Route, TestServer};

fn client(server: &TestServer) -> Client {
    Client::builder()
        .base_url(server.base_url())
        .build()
        .unwrap()
}

fn spawn_get(client: &Client, path: &str) -> JoinHandle<Result<Response, xhttp::Error>> {
    let call = client.get(path).send();
    tokio::spawn(call)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_identical_gets_send_one_request_and_share_one_body() {
    let server = TestServer::start().await;
    let client = client(&server);

    let callers: Vec<_> = (0..1000).map(|_| spawn_get(&client, "/gate/1")).collect();
    server.gate().wait_for_arrivals(1).await;
    until("999 followers", || client.dedupe_stats().coalesced == 999).await;
    assert_eq!(server.gate().arrived(), 1);
    server.gate().open();

    let mut bodies = Vec::with_capacity(callers.len());
    for caller in callers {
        let response = caller.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(response.bytes());
    }
    assert_eq!(server.counters().hits(Route::Gate), 1);
    assert_eq!(server.counters().total(), 1);
    let first = &bodies[0];
    assert_eq!(first, r#"{"code":0,"message":"ok","result":{"id":1}}"#);
    for body in &bodies {
        assert_eq!(body, first);
        assert_eq!(body.as_ptr(), first.as_ptr(), "one shared buffer");
    }
}

/// The server counts a request in flight until its handler's future ends. Here the gate is
/// never opened, so the held request can only end because the client closed its connection
/// (hyper drops the handler of a request whose connection reached EOF): `in_flight` back at
/// 0 with the gate closed is the server's view of the request being abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_caller_leaves_the_held_request_is_abandoned_on_the_wire() {
    let server = TestServer::start().await;
    let client = client(&server);

    let callers: Vec<_> = (0..5).map(|_| spawn_get(&client, "/gate/2")).collect();
    server.gate().wait_for_arrivals(1).await;
    until("4 followers", || client.dedupe_stats().coalesced == 4).await;
    assert_eq!(server.counters().in_flight(), 1);

    for caller in callers {
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
    }
    until("the server to see the request end", || {
        server.counters().in_flight() == 0
    })
    .await;
    assert_eq!(server.gate().arrived(), 1);
    assert_eq!(server.counters().hits(Route::Gate), 1);

    // Nothing was kept: the same call now makes a new request, which the open gate answers.
    server.gate().open();
    let response = client.get("/gate/2").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.gate().arrived(), 2);
    assert_eq!(server.counters().hits(Route::Gate), 2);
}

/// `/status/{code}` has no gate, so the server holds the first request with a fault delay;
/// the callers are still counted in, not timed in, and the test checks that the request was
/// still held when the last caller joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_503_reaches_twenty_callers_from_one_request_and_is_not_kept() {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Status,
        Faults {
            delay: Some(Duration::from_secs(1)),
            ..Faults::default()
        },
    );
    // Retries would send the 503 again; this test counts trips, not attempts.
    let client = Client::builder()
        .base_url(server.base_url())
        .no_retry()
        .build()
        .unwrap();

    let callers: Vec<_> = (0..20).map(|_| spawn_get(&client, "/status/503")).collect();
    until("19 followers", || client.dedupe_stats().coalesced == 19).await;
    assert_eq!(
        server.counters().in_flight(),
        1,
        "the request was answered before every caller joined"
    );

    for caller in callers {
        // No status layer in the facade yet: a 503 arrives as a response.
        let response = caller.await.unwrap().unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.body(), r#"{"error":{"message":"status 503"}}"#);
    }
    assert_eq!(server.counters().hits(Route::Status), 1);

    server.set_faults(Route::Status, Faults::default());
    let response = client.get("/status/503").send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.counters().hits(Route::Status), 2);
    assert_eq!(client.dedupe_stats().coalesced, 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_error_reaches_every_caller_from_one_request_and_is_not_kept() {
    let server = TestServer::start().await;
    let client = client(&server);
    // The gate's answer is longer than 8 bytes: every caller's call fails with BodyTooLarge,
    // which is never retried.
    let get = || client.get("/gate/3").body_limit(8).send();

    let callers: Vec<_> = (0..20).map(|_| tokio::spawn(get())).collect();
    server.gate().wait_for_arrivals(1).await;
    until("19 followers", || client.dedupe_stats().coalesced == 19).await;
    server.gate().open();

    for caller in callers {
        let err = caller.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyTooLarge, "{err}");
    }
    assert_eq!(server.counters().hits(Route::Gate), 1);

    let err = get().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTooLarge);
    assert_eq!(server.counters().hits(Route::Gate), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_previous_supersedes_the_held_request_and_the_newer_one_is_answered() {
    let server = TestServer::start().await;
    let client = client(&server);
    let search = || {
        client
            .get("/gate/5")
            .extension(DedupeOverride(DedupePolicy::CancelPrevious))
            .send()
    };

    let older = tokio::spawn(search());
    server.gate().wait_for_arrivals(1).await;
    let newer = tokio::spawn(search());

    let err = older.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Superseded);
    server.gate().wait_for_arrivals(2).await;
    // The older request's connection is closed: only the newer one is still held.
    until("the older request to end on the server", || {
        server.counters().in_flight() == 1
    })
    .await;
    server.gate().open();

    let response = newer.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.body(),
        r#"{"code":0,"message":"ok","result":{"id":5}}"#
    );
    assert_eq!(server.counters().hits(Route::Gate), 2);
    assert_eq!(client.dedupe_stats().superseded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_duplicate_refuses_a_second_submit_without_a_request_and_accepts_after() {
    let server = TestServer::start().await;
    let client = client(&server);
    let submit = || {
        client
            .get("/gate/6")
            .extension(DedupeOverride(DedupePolicy::RejectDuplicate))
            .send()
    };

    let first = tokio::spawn(submit());
    server.gate().wait_for_arrivals(1).await;

    let err = submit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Duplicate);
    assert!(!first.is_finished());
    assert_eq!(server.counters().hits(Route::Gate), 1);
    server.gate().open();

    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    let again = submit().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(server.counters().hits(Route::Gate), 2);
    assert_eq!(client.dedupe_stats().rejected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_scope_cancels_a_hundred_held_requests() {
    let server = TestServer::start().await;
    let client = client(&server);
    let page = CancelScope::new();

    let callers: Vec<_> = (0..100)
        .map(|i| {
            let call = client
                .get(&format!("/gate/{i}"))
                .extension(page.clone())
                .send();
            tokio::spawn(call)
        })
        .collect();
    server.gate().wait_for_arrivals(100).await;
    assert_eq!(server.counters().in_flight(), 100);

    page.cancel();
    for caller in callers {
        let err = caller.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
    }
    assert_eq!(client.dedupe_stats().cancelled, 100);
    // Every connection was closed, so the server let go of every held request.
    until("the server to see 100 requests end", || {
        server.counters().in_flight() == 0
    })
    .await;
    assert_eq!(server.counters().hits(Route::Gate), 100);
}
