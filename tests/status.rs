//! Status errors through the facade's whole stack, over real loopback sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use xhttp::envelope::Envelope;
use xhttp::retry::RetryPolicy;
use xhttp::status::StatusLayer;
use xhttp::{Client, ErrorKind};
use xhttp_testkit::{Route, TestServer};

fn client(server: &TestServer) -> Client {
    Client::builder()
        .base_url(server.base_url())
        .status(StatusLayer::new())
        .envelope(Envelope::vben())
        .retry(RetryPolicy::builder().jitter(|| 0.0).build().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_problem_detail_becomes_a_status_error_with_its_detail_and_no_retry() {
    let server = TestServer::start().await;
    let err = client(&server)
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

#[tokio::test]
async fn a_503_is_retried_as_a_typed_error_and_ends_with_its_attempt_count() {
    let server = TestServer::start().await;
    let err = client(&server)
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

#[tokio::test]
async fn an_html_error_page_gets_the_default_message() {
    let server = TestServer::start().await;
    let err = client(&server)
        .get("/html-error/500")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert!(err.message().is_some_and(|m| !m.contains('<')), "{err}");
}

#[tokio::test]
async fn success_still_unwraps_the_envelope() {
    let server = TestServer::start().await;
    let response = client(&server).get("/public/items/5").send().await.unwrap();
    assert_eq!(response.body(), r#"{"id":5,"name":"item 5"}"#);
}

#[tokio::test]
async fn a_call_retried_four_times_gives_one_notice_and_one_error_log_record() {
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
    let client = Client::builder()
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
