//! StatusLayer over a real hyper client against the testkit server: problem details, HTML
//! error pages, envelopes and `Retry-After` through real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use xhttp_core::ErrorKind;
use xhttp_status::{Language, SkipStatus, StatusLayer};
use xhttp_testkit::{Route, TestServer};

/// A hyper client whose responses are collected into `Bytes`, as the facade's collect layer
/// hands them to the status layer.
fn transport(
) -> impl Service<Request<Empty<Bytes>>, Response = Response<Bytes>, Error = BoxError> + Clone {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    service_fn(move |request: Request<Empty<Bytes>>| {
        let client = client.clone();
        async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(Response::from_parts(parts, body))
        }
    })
}

fn get(url: String) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

#[tokio::test]
async fn a_problem_document_gives_its_detail_under_the_http_status() {
    let server = TestServer::start().await;
    let service = StatusLayer::new().layer(transport());
    let err = service
        .oneshot(get(server.url("/problem/422")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(err.message(), Some("name must not be empty"));
    assert_eq!(err.uri(), Some(server.url("/problem/422").as_str()));
}

#[tokio::test]
async fn an_html_error_page_gets_the_default_message_in_either_language() {
    let server = TestServer::start().await;
    let err = StatusLayer::new()
        .layer(transport())
        .oneshot(get(server.url("/html-error/500")))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(
        err.message(),
        Some("Internal server error: please contact the administrator.")
    );

    let chinese = StatusLayer::builder().language(Language::Chinese).build();
    let err = chinese
        .layer(transport())
        .oneshot(get(server.url("/html-error/502")))
        .await
        .unwrap_err();
    assert_eq!(err.message(), Some("网络错误!"));
}

#[tokio::test]
async fn an_envelope_on_a_failure_status_gives_its_message() {
    let server = TestServer::start().await;
    let err = StatusLayer::new()
        .layer(transport())
        .oneshot(get(server.url("/envelope-error/503")))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.message(), Some("envelope says 503"));
}

#[tokio::test]
async fn retry_after_and_the_error_message_come_through() {
    let server = TestServer::start().await;
    let err = StatusLayer::new()
        .layer(transport())
        .oneshot(get(server.url("/status/429?retry_after=3")))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(err.message(), Some("status 429"));
}

#[tokio::test]
async fn success_and_skip_status_return_responses() {
    let server = TestServer::start().await;
    let service = StatusLayer::new().layer(transport());
    let ok = service
        .clone()
        .oneshot(get(server.url("/status/200")))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.body(), r#"{"error":{"message":"status 200"}}"#);

    let mut request = get(server.url("/problem/404"));
    request.extensions_mut().insert(SkipStatus);
    let not_found = service.oneshot(request).await.unwrap();
    assert_eq!(not_found.status(), 404);
    assert!(not_found.body().starts_with(b"{\"type\""));
    assert_eq!(server.counters().hits(Route::Status), 2);
}

#[tokio::test]
async fn a_refused_connection_stays_a_transport_error() {
    let addr = xhttp_testkit::refused_addr();
    let err = StatusLayer::new()
        .layer(transport())
        .oneshot(get(format!("http://{addr}/status/500")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
}
