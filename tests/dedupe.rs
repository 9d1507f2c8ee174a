//! Dedupe over real loopback sockets against the testkit, each test through the facade and
//! through the public stack over a raw hyper-util client (`common`): what reaches the server
//! when identical calls coalesce, when every caller leaves, when the shared outcome is a
//! failure, under the per-request policies, and when a cancel scope ends; and which callers
//! never share a trip: another credential or tenant header, another per-request option
//! (status passthrough, raw response, body limit), an unknown extension.
//!
//! Callers are lined up on the testkit's gate (`GET /gate/{id}`) and the dedupe counters,
//! never by sleeping; assertions are counts, order and kinds. Exact timing (the success
//! window) is proven on the paused clock in `crates/xhttp-dedupe/tests/layer.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{both, until, TestClient, Via};
use tokio::task::JoinHandle;
use xhttp::dedupe::{CancelScope, DedupeLayer, DedupeOverride, DedupePolicy};
use xhttp::{ErrorKind, Response};
use xhttp_testkit::{Faults, Route, TestServer};

fn client(via: Via, server: &TestServer) -> TestClient {
    via.client().base_url(server.base_url()).build().unwrap()
}

fn spawn_get(client: &TestClient, path: &str) -> JoinHandle<Result<Response, xhttp::Error>> {
    let call = client.get(path).send();
    tokio::spawn(call)
}

both!(
    multi_thread,
    a_thousand_identical_gets_send_one_request_and_share_one_body
);
async fn a_thousand_identical_gets_send_one_request_and_share_one_body(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server);

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

both!(
    multi_thread,
    when_every_caller_leaves_the_held_request_is_abandoned_on_the_wire
);
/// The server counts a request in flight until its handler's future ends. Here the gate is
/// never opened, so the held request can only end because the client closed its connection
/// (hyper drops the handler of a request whose connection reached EOF): `in_flight` back at
/// 0 with the gate closed is the server's view of the request being abandoned.
async fn when_every_caller_leaves_the_held_request_is_abandoned_on_the_wire(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server);

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

both!(
    multi_thread,
    a_shared_503_reaches_twenty_callers_from_one_request_and_is_not_kept
);
/// `/status/{code}` has no gate, so the server holds the first request with a fault delay;
/// the callers are still counted in, not timed in, and the test checks that the request was
/// still held when the last caller joined.
async fn a_shared_503_reaches_twenty_callers_from_one_request_and_is_not_kept(via: Via) {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Status,
        Faults {
            delay: Some(Duration::from_secs(1)),
            ..Faults::default()
        },
    );
    // Retries would send the 503 again; this test counts trips, not attempts. The followers
    // must outwait the 1 s fault delay, so their lock timeout is longer than the default.
    let client = via
        .client()
        .base_url(server.base_url())
        .without_retry()
        .dedupe(DedupeLayer::builder().lock_timeout(Duration::from_secs(60)))
        .build()
        .unwrap();

    let callers: Vec<_> = (0..20).map(|_| spawn_get(&client, "/status/503")).collect();
    // Followers can join before the leader's request has reached the server: wait for both.
    until("19 followers behind the held request", || {
        client.dedupe_stats().coalesced == 19 && server.counters().in_flight() == 1
    })
    .await;

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

both!(
    multi_thread,
    a_shared_error_reaches_every_caller_from_one_request_and_is_not_kept
);
async fn a_shared_error_reaches_every_caller_from_one_request_and_is_not_kept(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server);
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

both!(
    multi_thread,
    cancel_previous_supersedes_the_held_request_and_the_newer_one_is_answered
);
async fn cancel_previous_supersedes_the_held_request_and_the_newer_one_is_answered(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server);
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

both!(
    multi_thread,
    reject_duplicate_refuses_a_second_submit_without_a_request_and_accepts_after
);
async fn reject_duplicate_refuses_a_second_submit_without_a_request_and_accepts_after(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server);
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

both!(
    multi_thread,
    cancelling_a_scope_cancels_a_hundred_held_requests
);
async fn cancelling_a_scope_cancels_a_hundred_held_requests(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server);
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

/// What the echo saw for `name`, from a `/gate-echo` response.
fn echoed(response: Response, name: &str) -> String {
    let seen: serde_json::Value = response.json().unwrap();
    seen["headers"][name]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

both!(
    multi_thread,
    concurrent_gets_differing_only_in_x_api_key_never_share_a_trip
);
async fn concurrent_gets_differing_only_in_x_api_key_never_share_a_trip(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server);
    let names = [
        "x-api-key",
        "proxy-authorization",
        "x-auth-token",
        "x-tenant",
    ];
    let tenants = ["SECRET-KEY-tenantA", "SECRET-KEY-tenantB"];

    // Two identical callers for each header and tenant: one trip each, never one for both.
    let mut callers = Vec::new();
    for name in names {
        for tenant in tenants {
            for _ in 0..2 {
                let call = client.get("/gate-echo/report").header(name, tenant).send();
                callers.push((name, tenant, tokio::spawn(call)));
            }
        }
    }
    let trips = names.len() * tenants.len();
    server.gate().wait_for_arrivals(trips).await;
    until("a follower behind each trip", || {
        client.dedupe_stats().coalesced == trips as u64
    })
    .await;
    assert_eq!(server.gate().arrived(), trips);
    server.gate().open();

    for (name, tenant, caller) in callers {
        let response = caller.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(echoed(response, name), tenant, "{name}");
    }
    assert_eq!(server.counters().hits(Route::Gate), trips as u64);
    assert_eq!(server.counters().total(), trips as u64);
    let stats = client.dedupe_stats();
    assert_eq!(stats.coalesced, trips as u64);
    assert_eq!(stats.bypassed, 0);
    let printed = format!("{client:?} {stats:?}");
    assert!(!printed.contains("SECRET"), "{printed}");
}

both!(
    multi_thread,
    trace_context_headers_do_not_split_a_coalesced_trip
);
async fn trace_context_headers_do_not_split_a_coalesced_trip(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server);

    let callers: Vec<_> = (0..20u32)
        .map(|i| {
            let call = client
                .get("/gate-echo/report")
                .header(
                    "traceparent",
                    format!("00-4bf92f3577b34da6a3ce929d0e0e{i:04}-00f067aa0ba902b7-01"),
                )
                .header("tracestate", format!("vendor=span{i}"))
                .header("x-request-id", format!("req-{i}"))
                .header("x-correlation-id", format!("corr-{i}"))
                .header(
                    "b3",
                    format!("80f198ee56343ba864fe8b2a57d3{i:04}-e457b5a2e4d86bd1-1"),
                )
                .header(
                    "sentry-trace",
                    format!("771a43a4192642f0b136d5159a50{i:04}"),
                )
                .send();
            tokio::spawn(call)
        })
        .collect();
    server.gate().wait_for_arrivals(1).await;
    until("19 followers", || client.dedupe_stats().coalesced == 19).await;
    assert_eq!(server.gate().arrived(), 1);
    server.gate().open();

    let mut bodies = Vec::new();
    for caller in callers {
        let response = caller.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(response.bytes());
    }
    assert!(bodies.iter().all(|body| body == &bodies[0]));
    assert_eq!(server.counters().hits(Route::Gate), 1);
}

both!(
    multi_thread,
    a_passthrough_caller_never_leads_a_plain_caller
);
async fn a_passthrough_caller_never_leads_a_plain_caller(via: Via) {
    use xhttp::status::{StatusLayer, StatusPassthrough};
    let server = TestServer::start().await;
    let client = via
        .client()
        .base_url(server.base_url())
        .status(StatusLayer::new())
        .build()
        .unwrap();
    let get = |passthrough: bool| {
        let request = client.get("/gate-status/404");
        let request = match passthrough {
            true => request.extension(StatusPassthrough),
            false => request,
        };
        tokio::spawn(request.send())
    };

    // The passthrough callers lead; the plain ones come after and must make their own trip.
    let passthrough = [get(true), get(true)];
    server.gate().wait_for_arrivals(1).await;
    until("a passthrough follower", || {
        client.dedupe_stats().coalesced == 1
    })
    .await;
    let plain = [get(false), get(false)];
    server.gate().wait_for_arrivals(2).await;
    until("a plain follower", || client.dedupe_stats().coalesced == 2).await;
    assert_eq!(server.gate().arrived(), 2);
    server.gate().open();

    for caller in passthrough {
        let response = caller.await.unwrap().unwrap();
        assert_eq!(response.status(), 404);
    }
    for caller in plain {
        let err = caller.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Status, "{err}");
        assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND));
    }
    assert_eq!(server.counters().hits(Route::Gate), 2);
}

both!(
    multi_thread,
    raw_response_and_body_limit_callers_never_share
);
async fn raw_response_and_body_limit_callers_never_share(via: Via) {
    use xhttp::envelope::{Envelope, RawResponse};
    let server = TestServer::start().await;
    let client = via
        .client()
        .base_url(server.base_url())
        .envelope(Envelope::vben())
        .build()
        .unwrap();
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Caller {
        Plain,
        Raw,
        Limit8,
        Limit1024,
    }
    let get = |caller: Caller| {
        let request = client.get("/gate/9");
        let request = match caller {
            Caller::Plain => request,
            Caller::Raw => request.extension(RawResponse),
            Caller::Limit8 => request.body_limit(8),
            Caller::Limit1024 => request.body_limit(1024),
        };
        (caller, tokio::spawn(request.send()))
    };
    let kinds = [
        Caller::Plain,
        Caller::Raw,
        Caller::Limit8,
        Caller::Limit1024,
    ];
    let callers: Vec<_> = kinds.iter().flat_map(|&c| [get(c), get(c)]).collect();
    server.gate().wait_for_arrivals(kinds.len()).await;
    until("a follower for each kind", || {
        client.dedupe_stats().coalesced == kinds.len() as u64
    })
    .await;
    assert_eq!(server.gate().arrived(), kinds.len());
    server.gate().open();

    let envelope = r#"{"code":0,"message":"ok","result":{"id":9}}"#;
    for (caller, handle) in callers {
        let outcome = handle.await.unwrap();
        match caller {
            Caller::Plain | Caller::Limit1024 => {
                assert_eq!(outcome.unwrap().body(), r#"{"id":9}"#, "{caller:?}")
            }
            Caller::Raw => assert_eq!(outcome.unwrap().body(), envelope),
            Caller::Limit8 => {
                assert_eq!(outcome.unwrap_err().kind(), ErrorKind::BodyTooLarge)
            }
        }
    }
    assert_eq!(server.counters().hits(Route::Gate), kinds.len() as u64);
}

both!(multi_thread, an_unknown_extension_is_never_coalesced);
async fn an_unknown_extension_is_never_coalesced(via: Via) {
    use xhttp::status::ErrorNotice;
    #[derive(Clone)]
    struct Unknown;
    let server = TestServer::start().await;
    let client = client(via, &server);

    let unknown: Vec<_> = (0..3)
        .map(|_| tokio::spawn(client.get("/gate/20").extension(Unknown).send()))
        .collect();
    // The facade declares its own options: a notice mode does not stop coalescing.
    let noticed: Vec<_> = (0..3)
        .map(|_| {
            let call = client.get("/gate/21").extension(ErrorNotice::None).send();
            tokio::spawn(call)
        })
        .collect();
    server.gate().wait_for_arrivals(4).await;
    until("two notice followers", || {
        client.dedupe_stats().coalesced == 2
    })
    .await;
    assert_eq!(server.gate().arrived(), 4);
    assert_eq!(client.dedupe_stats().bypassed, 3);
    server.gate().open();

    for caller in unknown.into_iter().chain(noticed) {
        assert_eq!(caller.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(server.counters().hits(Route::Gate), 4);
}

both!(
    multi_thread,
    followers_of_a_held_request_send_their_own_after_the_lock_timeout
);
/// The first request is held at the gate and never answered while the followers wait: past
/// their lock timeout each sends its own request, which reaches the server while the first is
/// still held. Counted by the gate's arrivals, never timed.
async fn followers_of_a_held_request_send_their_own_after_the_lock_timeout(via: Via) {
    let server = TestServer::start().await;
    let client = via
        .client()
        .base_url(server.base_url())
        .without_retry()
        .dedupe(DedupeLayer::builder().lock_timeout(Duration::from_millis(50)))
        .build()
        .unwrap();
    let leader = spawn_get(&client, "/gate-echo/held");
    server.gate().wait_for_arrivals(1).await;

    let followers: Vec<_> = (0..3)
        .map(|_| spawn_get(&client, "/gate-echo/held"))
        .collect();
    // Each follower joined the held trip, then gave up and sent its own request: four
    // requests at the gate, the first still held, before anything is answered.
    server.gate().wait_for_arrivals(4).await;
    let stats = client.dedupe_stats();
    assert_eq!((stats.coalesced, stats.lock_timeouts), (3, 3));
    assert_eq!(server.gate().arrived(), 4);
    assert!(!leader.is_finished());
    assert!(followers.iter().all(|follower| !follower.is_finished()));

    server.gate().open();
    for caller in followers.into_iter().chain([leader]) {
        assert_eq!(caller.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(server.counters().hits(Route::Gate), 4);
    assert_eq!(client.dedupe_stats().lock_timeouts, 3);
}
