//! Status errors through the whole stack over real loopback sockets, each test through the
//! facade and through the public stack over a raw hyper-util client (`common`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{both, TestClient, Via};
use xhttp::envelope::Envelope;
use xhttp::retry::RetryPolicy;
use xhttp::status::StatusLayer;
use xhttp::ErrorKind;
use xhttp_testkit::{Route, TestServer};

fn client(via: Via, server: &TestServer) -> TestClient {
    via.client()
        .base_url(server.base_url())
        .status(StatusLayer::new())
        .envelope(Envelope::vben())
        .retry(RetryPolicy::builder().jitter(|| 0.0).build().unwrap())
        .build()
        .unwrap()
}

both!(
    current_thread,
    a_problem_detail_becomes_a_status_error_with_its_detail_and_no_retry
);
async fn a_problem_detail_becomes_a_status_error_with_its_detail_and_no_retry(via: Via) {
    let server = TestServer::start().await;
    let err = client(via, &server)
        .get("/problem/422")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(http::StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(err.message(), Some("name must not be empty"));
    assert_eq!(err.attempts(), 1, "422 is not retried");
    assert_eq!(server.counters().hits(Route::Status), 1);
}

both!(
    current_thread,
    a_503_is_retried_as_a_typed_error_and_ends_with_its_attempt_count
);
async fn a_503_is_retried_as_a_typed_error_and_ends_with_its_attempt_count(via: Via) {
    let server = TestServer::start().await;
    let err = client(via, &server)
        .get("/envelope-error/503")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.message(), Some("envelope says 503"));
    assert_eq!(err.attempts(), 4);
    assert_eq!(server.counters().hits(Route::Status), 4);
}

both!(current_thread, an_html_error_page_gets_the_default_message);
async fn an_html_error_page_gets_the_default_message(via: Via) {
    let server = TestServer::start().await;
    let err = client(via, &server)
        .get("/html-error/500")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert!(err.message().is_some_and(|m| !m.contains('<')), "{err}");
}

both!(current_thread, success_still_unwraps_the_envelope);
async fn success_still_unwraps_the_envelope(via: Via) {
    let server = TestServer::start().await;
    let response = client(via, &server)
        .get("/public/items/5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.body(), r#"{"id":5,"name":"item 5"}"#);
}

both!(
    current_thread,
    a_call_retried_four_times_gives_one_notice_and_one_error_log_record
);
async fn a_call_retried_four_times_gives_one_notice_and_one_error_log_record(via: Via) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use xhttp::status::{ErrorNotice, Notice, ReportLayer};

    let server = TestServer::start().await;
    let notices = Arc::new(AtomicUsize::new(0));
    let counter = notices.clone();
    let report = ReportLayer::builder()
        .notifier(move |_: &Notice| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let client = via
        .client()
        .base_url(server.base_url())
        .report(report.clone())
        .status(StatusLayer::new())
        .retry(RetryPolicy::builder().jitter(|| 0.0).build().unwrap())
        .build()
        .unwrap();

    let err = client
        .get("/status/503?access_token=SECRET-XYZ")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 4);
    assert_eq!(server.counters().hits(Route::Status), 4);
    assert_eq!(
        notices.load(Ordering::SeqCst),
        1,
        "one notice for four attempts"
    );
    let log = report.error_log().unwrap();
    assert_eq!(log.len(), 1, "one record for four attempts");
    let record = &log.records()[0];
    assert_eq!(record.attempts, 4);
    assert!(!record.url.contains("SECRET-XYZ"), "{}", record.url);

    // A request that asks for no notice still gets its record.
    let err = client
        .get("/status/500")
        .extension(ErrorNotice::None)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 4);
    assert_eq!(notices.load(Ordering::SeqCst), 1);
    assert_eq!(log.len(), 2);
}

/// Test secrets that must appear in no `Display`, `Debug` or `message()` of an error.
const SECRETS: [&str; 2] = ["SECRET-AT-xyz123", "SECRET-RT-xyz123"];

fn assert_no_secret(err: &xhttp::Error) {
    let shown = format!("{err} | {err:?} | {:?}", err.message());
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

/// The testkit's `POST /reflect` answering `status` with `body` as JSON.
async fn reflect(client: &TestClient, status: u16, body: String) -> xhttp::Error {
    client
        .post("/reflect")
        .header("x-reflect-status", status.to_string())
        .header("x-reflect-content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_err()
}

both!(
    current_thread,
    a_status_message_is_cleaned_masked_and_capped
);
async fn a_status_message_is_cleaned_masked_and_capped(via: Via) {
    let server = TestServer::start().await;
    let description = format!(
        "The token SECRET-AT-xyz123 expired\n\u{202e}2026-12-01 forged\u{200b}; \
         Authorization: Bearer SECRET-RT-xyz123 {}",
        "x".repeat(10_000)
    );
    let body = serde_json::json!({ "error": "invalid_token", "error_description": description });
    let err = reflect(&client(via, &server), 401, body.to_string()).await;
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert_no_secret(&err);
    let message = err.message().unwrap();
    assert!(
        message.starts_with(
            "The token REDACTED expired 2026-12-01 forged; Authorization: Bearer REDACTED xxx"
        ),
        "{message}"
    );
    assert_eq!(message.chars().count(), xhttp::status::MAX_MESSAGE_CHARS);
    assert!(message.ends_with('…'), "{message}");
    assert!(
        !err.to_string()
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{202e}' | '\u{200b}')),
        "{err}"
    );
}

both!(
    current_thread,
    huge_failure_messages_leave_the_report_ring_within_its_byte_budget
);
async fn huge_failure_messages_leave_the_report_ring_within_its_byte_budget(via: Via) {
    use std::sync::Arc;
    use xhttp::status::{ErrorNotice, ReportLayer, RingLog};

    let server = TestServer::start().await;
    let ring = Arc::new(RingLog::new(1_000).with_max_bytes(32 * 1024));
    let report = ReportLayer::builder().error_log(ring.clone()).build();
    let client = via
        .client()
        .base_url(server.base_url())
        .report(report)
        .status(StatusLayer::new())
        .envelope(Envelope::vben())
        .build()
        .unwrap();
    for i in 0..24 {
        // A business failure (HTTP 200) and a status failure, each with a 1 MB message.
        let message = format!("call {i} token=SECRET-AT-xyz123 {}", "y ".repeat(500_000));
        let business = serde_json::json!({ "code": 1003, "message": message, "result": null });
        let status = serde_json::json!({ "message": message });
        for (code, body) in [(200, business), (503, status)] {
            let err = client
                .post("/reflect")
                .header("x-reflect-status", code.to_string())
                .header("x-reflect-content-type", "application/json")
                .extension(ErrorNotice::None)
                .body(body.to_string())
                .send()
                .await
                .unwrap_err();
            assert_no_secret(&err);
            assert!(err.message().unwrap().len() <= xhttp_core::error::MAX_TEXT_LEN);
        }
        assert!(ring.bytes() <= ring.max_bytes(), "{}", ring.bytes());
    }
    let records = ring.records();
    assert!(records.len() < 48, "the budget evicted the oldest");
    assert!(records
        .last()
        .unwrap()
        .message
        .starts_with("call 23 token=REDACTED"));
    for record in &records {
        assert!(!record.message.contains("SECRET-AT"), "{}", record.message);
    }
}

both!(current_thread, one_trip_without_retries_reports_one_attempt);
async fn one_trip_without_retries_reports_one_attempt(via: Via) {
    let server = TestServer::start().await;
    // No retry layer in the client.
    let without_retry = via
        .client()
        .base_url(server.base_url())
        .status(StatusLayer::new())
        .without_retry()
        .build()
        .unwrap();
    let err = without_retry.get("/status/503").send().await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.attempts(), 1);

    // Retries off for one request through the retry layer's override.
    let err = client(via, &server)
        .get("/status/503")
        .extension(xhttp::retry::RetryOverride::Off)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert_eq!(server.counters().hits(Route::Status), 2, "one trip each");

    // A connection that never carried the request was still one attempt.
    let refused = via
        .client()
        .base_url(format!("http://{}", xhttp_testkit::refused_addr()))
        .without_retry()
        .build()
        .unwrap();
    let err = refused.get("/x").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert_eq!(err.attempts(), 1);
}

both!(
    current_thread,
    a_problem_document_is_kept_on_the_error_over_a_socket
);
async fn a_problem_document_is_kept_on_the_error_over_a_socket(via: Via) {
    let server = TestServer::start().await;
    let err = client(via, &server)
        .get("/problem/422")
        .send()
        .await
        .unwrap_err();
    let problem = err.problem().expect("the problem document");
    assert_eq!(problem.problem_type(), Some("https://example.com/probs/x"));
    assert_eq!(problem.title(), Some("Unprocessable"));
    assert_eq!(problem.detail(), Some("name must not be empty"));
    assert_eq!(problem.status(), Some(400), "the document's own member");
    assert_eq!(err.status(), Some(http::StatusCode::UNPROCESSABLE_ENTITY));
}
