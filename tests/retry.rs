//! Retry over real loopback sockets against the testkit, each test through the facade and
//! through the public stack over a raw hyper-util client (`common`): which outcomes are
//! retried for which methods, connections that fail below HTTP, `Idempotency-Key`, and a
//! `Retry-After` that cannot fit the deadline.
//!
//! Socket tests assert counts, order and kinds; the exact schedules (backoff, `Retry-After`,
//! the deadline) are proven on the paused clock in `crates/xhttp-retry/tests/policy.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{both, TestClient, Via};
use serde_json::Value;
use xhttp::retry::{Attempts, RetryPolicy};
use xhttp::ErrorKind;
use xhttp_testkit::{
    fault_pattern, refused_addr, Config, FaultDecision, Faults, RawServer, Route, TestServer,
};

/// The default policy with the random source pinned at zero: every backoff is 0, so a test
/// with four attempts takes no longer than four round trips.
fn no_wait() -> RetryPolicy {
    RetryPolicy::builder().jitter(|| 0.0).build().unwrap()
}

fn client(via: Via, base_url: &str) -> TestClient {
    via.client()
        .base_url(base_url)
        .retry(no_wait())
        .build()
        .unwrap()
}

fn attempts(response: &xhttp::Response) -> Option<Attempts> {
    response.extensions().get::<Attempts>().copied()
}

both!(
    multi_thread,
    get_retries_408_429_and_5xx_except_501_and_no_other_status
);
async fn get_retries_408_429_and_5xx_except_501_and_no_other_status(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server.base_url());
    for (code, expected) in [
        (500, 4),
        (502, 4),
        (503, 4),
        (504, 4),
        (408, 4),
        (429, 4),
        (400, 1),
        (401, 1),
        (403, 1),
        (404, 1),
        (409, 1),
        (422, 1),
        (501, 1),
    ] {
        let before = server.counters().hits(Route::Status);
        // No status layer yet: the final non-2xx comes back as a response.
        let response = client.get(&format!("/status/{code}")).send().await.unwrap();
        let hits = server.counters().hits(Route::Status) - before;
        assert_eq!(response.status(), code, "{code}");
        assert_eq!(hits, expected, "{code}");
        assert_eq!(
            attempts(&response),
            Some(Attempts(expected as u32)),
            "{code}"
        );
    }
}

both!(
    multi_thread,
    a_reset_before_the_headers_is_retried_for_get_only
);
async fn a_reset_before_the_headers_is_retried_for_get_only(via: Via) {
    let raw = RawServer::reset_before_headers().await;
    let client = client(via, &raw.base_url());

    let err = client.get("/items").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(
        !err.is_never_sent(),
        "the request may have reached the server"
    );
    assert_eq!(err.attempts(), 4);
    assert_eq!(raw.accepted(), 4);

    // The server read the whole request before the reset: a POST is not sent again.
    let err = client.post("/items").body("{}").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert_eq!(err.attempts(), 1);
    assert_eq!(raw.accepted(), 4 + 1);
}

both!(
    multi_thread,
    a_refused_connection_is_retried_for_get_and_post
);
async fn a_refused_connection_is_retried_for_get_and_post(via: Via) {
    let client = client(via, &format!("http://{}", refused_addr()));
    for request in [client.get("/items"), client.post("/items").body("{}")] {
        let err = request.send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport);
        assert!(err.is_never_sent(), "{err}");
        assert_eq!(err.attempts(), 4, "{err}");
    }
}

both!(multi_thread, post_503_is_not_retried_but_put_and_delete_are);
async fn post_503_is_not_retried_but_put_and_delete_are(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server.base_url());
    for (request, expected) in [
        (client.post("/status/503").body("{}"), 1),
        (client.put("/status/503").body("{}"), 4),
        (client.delete("/status/503"), 4),
        (client.patch("/status/503").body("{}"), 1),
    ] {
        let before = server.counters().hits(Route::Status);
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(server.counters().hits(Route::Status) - before, expected);
        assert_eq!(attempts(&response), Some(Attempts(expected as u32)));
    }
}

both!(multi_thread, post_with_an_idempotency_key_is_retried);
async fn post_with_an_idempotency_key_is_retried(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server.base_url());
    let response = client
        .post("/status/503")
        .header("idempotency-key", "k-1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.counters().hits(Route::Status), 4);
    assert_eq!(attempts(&response), Some(Attempts(4)));
}

both!(
    multi_thread,
    a_retried_post_arrives_with_its_idempotency_key_and_body
);
async fn a_retried_post_arrives_with_its_idempotency_key_and_body(via: Via) {
    // A seed whose first requests on /echo fail twice, then pass: the third attempt is
    // echoed back, so we see what a retry sent.
    let faults = Faults {
        fail_rate: 0.5,
        ..Faults::default()
    };
    let pass_on_third = [
        FaultDecision::Fail,
        FaultDecision::Fail,
        FaultDecision::Pass,
    ];
    let seed = (0..10_000)
        .find(|&seed| fault_pattern(seed, Route::Echo, &faults, 3) == pass_on_third)
        .expect("a seed with two failures then a pass");
    let server = TestServer::start_with(Config {
        seed,
        ..Config::default()
    })
    .await;
    server.set_faults(Route::Echo, faults);
    let client = client(via, &server.base_url());

    let response = client
        .post("/echo")
        .header("idempotency-key", "k-1")
        .body(r#"{"amount":7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(attempts(&response), Some(Attempts(3)));
    assert_eq!(server.counters().hits(Route::Echo), 3);
    assert_eq!(server.counters().faults_injected(), 2);
    let echo: Value = response.json().unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["headers"]["idempotency-key"], "k-1");
    assert_eq!(echo["body"], r#"{"amount":7}"#);
}

both!(
    multi_thread,
    a_retry_after_that_cannot_fit_the_deadline_returns_after_one_call
);
async fn a_retry_after_that_cannot_fit_the_deadline_returns_after_one_call(via: Via) {
    let server = TestServer::start().await;
    let client = via
        .client()
        .base_url(server.base_url())
        .retry(no_wait())
        .attempt_timeout(Duration::from_millis(500))
        .deadline(Duration::from_millis(500))
        .build()
        .unwrap();
    let response = client
        .get("/status/503?retry_after=1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(attempts(&response), Some(Attempts(1)));
    assert_eq!(server.counters().hits(Route::Status), 1);
}

both!(
    multi_thread,
    a_retry_after_within_the_deadline_is_waited_for_and_retried
);
async fn a_retry_after_within_the_deadline_is_waited_for_and_retried(via: Via) {
    // The counterpart of the test above: the same answer with room in the deadline is
    // retried, so the single call there is the deadline's doing.
    let server = TestServer::start().await;
    server.set_faults(
        Route::Status,
        Faults {
            fail_rate: 1.0,
            retry_after: Some("0".into()),
            ..Faults::default()
        },
    );
    let client = client(via, &server.base_url());
    let response = client.get("/status/200").send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "0");
    assert_eq!(attempts(&response), Some(Attempts(4)));
    assert_eq!(server.counters().hits(Route::Status), 4);
}

both!(
    multi_thread,
    unlimited_retries_are_bounded_by_the_budget_and_counted_as_before
);
async fn unlimited_retries_are_bounded_by_the_budget_and_counted_as_before(via: Via) {
    // `max_retries(u32::MAX)` is valid; the budget (10 a second over 10 s, plus 20% of the one
    // request) ends it: 100 retries, 101 attempts, all counted on the final response.
    let server = TestServer::start().await;
    let policy = RetryPolicy::builder()
        .max_retries(u32::MAX)
        .jitter(|| 0.0)
        .build()
        .unwrap();
    let client = via
        .client()
        .base_url(server.base_url())
        .retry(policy)
        .build()
        .unwrap();
    let response = client.get("/status/503").send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.counters().hits(Route::Status), 101);
    assert_eq!(attempts(&response), Some(Attempts(101)));
}

both!(
    multi_thread,
    impossible_retry_and_timeout_settings_are_config_errors_not_panics
);
async fn impossible_retry_and_timeout_settings_are_config_errors_not_panics(via: Via) {
    let budget = RetryPolicy::builder()
        .budget(Duration::from_secs(10), u32::MAX, 0.2)
        .build()
        .unwrap_err();
    assert_eq!(budget.kind(), ErrorKind::Config);
    let backoff = RetryPolicy::builder()
        .backoff(Duration::MAX, 2.0, Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(backoff.kind(), ErrorKind::Config);
    let deadline = via.client().deadline(Duration::MAX).build().unwrap_err();
    assert_eq!(deadline.kind(), ErrorKind::Config);
    // Per request, the error comes from `send`, and nothing reaches the server.
    let server = TestServer::start().await;
    let err = client(via, &server.base_url())
        .get("/status/200")
        .timeout(Duration::MAX)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(server.counters().hits(Route::Status), 0);
}

/// A streaming upload of `chunks` 64 KiB frames, its length known up front as a file's is.
struct Upload {
    chunks: usize,
}

impl hyper::body::Body for Upload {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.chunks == 0 {
            return std::task::Poll::Ready(None);
        }
        self.chunks -= 1;
        let frame = hyper::body::Frame::data(bytes::Bytes::from(vec![b'u'; 64 * 1024]));
        std::task::Poll::Ready(Some(Ok(frame)))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.chunks as u64 * 64 * 1024)
    }
}

// Facade only: a streaming body does not cross to the raw client's `Full<Bytes>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_put_over_its_replay_cap_returns_its_first_503_after_one_request() {
    use xhttp_core::body::{NotReplayed, DEFAULT_REPLAY_CAP};
    let server = TestServer::start().await;
    let client = client(Via::Facade, &server.base_url());

    let large = xhttp::Body::replayable(Upload { chunks: 2 }, DEFAULT_REPLAY_CAP);
    let response = client.put("/status/503").body(large).send().await.unwrap();
    assert_eq!(response.status(), 503, "the first outcome");
    assert!(response.extensions().get::<NotReplayed>().is_some());
    assert_eq!(attempts(&response), Some(Attempts(1)));
    assert_eq!(server.counters().hits(Route::Status), 1, "sent once");

    // Within its cap the same upload is replayed like known bytes: four requests.
    let small = xhttp::Body::replayable(Upload { chunks: 1 }, DEFAULT_REPLAY_CAP);
    let response = client.put("/status/503").body(small).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.extensions().get::<NotReplayed>().is_none());
    assert_eq!(attempts(&response), Some(Attempts(4)));
    assert_eq!(server.counters().hits(Route::Status), 5);
}
