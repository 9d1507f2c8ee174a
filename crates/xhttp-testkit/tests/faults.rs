//! Seeded fault injection, through real sockets.

mod common;

use std::time::Duration;

use common::{has_hyper_error, has_io_error, TestClient};
use serde_json::json;
use xhttp_testkit::{fault_pattern, Config, FaultDecision, Faults, Route, TestServer};

const REQUESTS: usize = 200;

fn mixed_faults() -> Faults {
    Faults {
        fail_rate: 0.2,
        drop_rate: 0.1,
        malformed_json_rate: 0.1,
        ..Faults::default()
    }
}

/// What a client observed for one request, in the vocabulary of [`FaultDecision`].
async fn observe(client: &TestClient, url: &str) -> FaultDecision {
    match client.try_get(url).await {
        Err(_) => FaultDecision::Drop,
        Ok(reply) if reply.status == 503 => FaultDecision::Fail,
        Ok(reply) if serde_json::from_slice::<serde_json::Value>(&reply.body).is_err() => {
            FaultDecision::Malformed
        }
        Ok(reply) => {
            assert_eq!(reply.status, 200);
            FaultDecision::Pass
        }
    }
}

async fn run_sequence(seed: u64, faults: &Faults) -> Vec<FaultDecision> {
    let server = TestServer::start_with(Config {
        seed,
        ..Config::default()
    })
    .await;
    server.set_faults(Route::Public, faults.clone());
    let client = TestClient::http1();
    let url = server.url("/public/items/1");
    let mut seen = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        seen.push(observe(&client, &url).await);
    }
    let injected = seen.iter().filter(|d| **d != FaultDecision::Pass).count();
    assert_eq!(server.counters().faults_injected(), injected as u64);
    assert_eq!(server.counters().hits(Route::Public), REQUESTS as u64);
    seen
}

#[tokio::test]
async fn same_seed_gives_the_same_fault_sequence_and_follows_fault_pattern() {
    let faults = mixed_faults();
    let first = run_sequence(11, &faults).await;
    let second = run_sequence(11, &faults).await;
    assert_eq!(first, second);
    assert_eq!(first, fault_pattern(11, Route::Public, &faults, REQUESTS));
    for decision in [
        FaultDecision::Pass,
        FaultDecision::Fail,
        FaultDecision::Drop,
        FaultDecision::Malformed,
    ] {
        assert!(first.contains(&decision), "{decision:?} never happened");
    }
}

#[tokio::test]
async fn a_different_seed_gives_a_different_fault_sequence() {
    let faults = mixed_faults();
    let a = run_sequence(1, &faults).await;
    let b = run_sequence(2, &faults).await;
    assert_ne!(a, b);
    assert_eq!(b, fault_pattern(2, Route::Public, &faults, REQUESTS));
}

#[test]
fn fault_rates_are_roughly_right_over_ten_thousand_draws() {
    for rate in [0.01, 0.1, 0.5, 0.9] {
        let faults = Faults {
            fail_rate: rate,
            ..Faults::default()
        };
        let pattern = fault_pattern(3, Route::Items, &faults, 10_000);
        let failed = pattern
            .iter()
            .filter(|d| **d == FaultDecision::Fail)
            .count();
        let share = failed as f64 / 10_000.0;
        // Four standard deviations of a binomial share at n = 10,000 stay below 0.02.
        assert!((share - rate).abs() < 0.02, "rate {rate}: got {share}");
    }
    // Routes draw from different streams.
    let half = Faults {
        fail_rate: 0.5,
        ..Faults::default()
    };
    assert_ne!(
        fault_pattern(3, Route::Items, &half, 100),
        fault_pattern(3, Route::Me, &half, 100)
    );
}

#[tokio::test]
async fn injected_failures_carry_the_status_and_retry_after() {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Echo,
        Faults {
            fail_rate: 1.0,
            status: 429,
            retry_after: Some("3".to_owned()),
            ..Faults::default()
        },
    );
    let reply = TestClient::http1().get(&server.url("/echo")).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("3"));
    assert_eq!(reply.json()["error"]["message"], "injected fault");

    // Turning faults off restores the route.
    server.set_faults(Route::Echo, Faults::default());
    let reply = TestClient::http1().get(&server.url("/echo")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(server.counters().faults_injected(), 1);
}

#[tokio::test]
async fn dropped_connection_gives_the_client_an_error_without_a_response() {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Public,
        Faults {
            drop_rate: 1.0,
            ..Faults::default()
        },
    );
    // HTTP/1.1 sees the connection end before a response; HTTP/2 sees the stream die.
    let error = TestClient::http1()
        .try_get(&server.url("/public/items/1"))
        .await
        .unwrap_err();
    assert!(
        has_hyper_error(&error, hyper::Error::is_incomplete_message),
        "{error:?}"
    );
    let error = TestClient::http2()
        .try_get(&server.url("/public/items/1"))
        .await
        .unwrap_err();
    assert!(
        has_io_error(&error, std::io::ErrorKind::BrokenPipe)
            || has_io_error(&error, std::io::ErrorKind::ConnectionReset),
        "{error:?}"
    );
    assert_eq!(server.counters().faults_injected(), 2);
    // The server keeps serving other connections.
    server.set_faults(Route::Public, Faults::default());
    let reply = TestClient::http1()
        .get(&server.url("/public/items/1"))
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn malformed_json_claims_json_but_does_not_parse() {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Public,
        Faults {
            malformed_json_rate: 1.0,
            ..Faults::default()
        },
    );
    let reply = TestClient::http1()
        .get(&server.url("/public/items/1"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(serde_json::from_slice::<serde_json::Value>(&reply.body).is_err());
}

#[tokio::test(start_paused = true)]
async fn hang_never_answers_until_the_server_is_dropped() {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Public,
        Faults {
            hang: true,
            ..Faults::default()
        },
    );
    let client = TestClient::http1();
    let url = server.url("/public/items/1");
    // The paused clock jumps to the timeout as soon as everything waits.
    let waited = tokio::time::timeout(Duration::from_secs(3600), client.try_get(&url)).await;
    assert!(waited.is_err(), "a hung route answered");

    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.try_get(&url).await }
    });
    while server.counters().hits(Route::Public) < 2 {
        tokio::task::yield_now().await;
    }
    drop(server);
    assert!(pending.await.unwrap().is_err());
}

#[tokio::test(start_paused = true)]
async fn delay_holds_each_request_on_tokios_clock() {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Public,
        Faults {
            delay: Some(Duration::from_secs(30)),
            ..Faults::default()
        },
    );
    let started = tokio::time::Instant::now();
    let reply = TestClient::http1()
        .get(&server.url("/public/items/2"))
        .await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert_eq!(server.counters().faults_injected(), 0);
}

#[tokio::test]
async fn faulted_token_calls_never_reach_the_handler() {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Login,
        Faults {
            fail_rate: 1.0,
            ..Faults::default()
        },
    );
    let reply = TestClient::http1()
        .post_json(
            &server.url("/auth/login"),
            json!({"username": "admin", "password": "secret"}),
        )
        .await;
    assert_eq!(reply.status, 503);
    assert_eq!(server.counters().hits(Route::Login), 1);
    assert_eq!(server.counters().token_calls(), 0);
}

#[tokio::test]
async fn any_sets_faults_on_every_route() {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Any,
        Faults {
            fail_rate: 1.0,
            status: 500,
            ..Faults::default()
        },
    );
    let client = TestClient::http1();
    for path in ["/echo", "/public/items/1", "/status/204", "/slow/0"] {
        assert_eq!(client.get(&server.url(path)).await.status, 500, "{path}");
    }
    assert_eq!(server.counters().hits(Route::Any), 4);
    assert_eq!(server.counters().faults_injected(), 4);
}
