//! Protocols, bodies and broken transports, through real sockets.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{has_hyper_error, has_io_error, TestClient};
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use xhttp_testkit::{refused_addr, RawServer, Route, TestServer};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[tokio::test]
async fn serves_http1_and_http2_prior_knowledge() {
    let server = TestServer::start().await;
    let url = server.url("/public/items/3");
    let one = TestClient::http1().get(&url).await;
    assert_eq!(one.version, Version::HTTP_11);
    let two = TestClient::http2().get(&url).await;
    assert_eq!(two.version, Version::HTTP_2);
    assert_eq!(one.body, two.body);
    assert_eq!(
        two.json(),
        json!({"code": 0, "message": "ok", "result": {"id": 3, "name": "item 3"}})
    );
}

#[tokio::test]
async fn a_gibibyte_body_is_streamed_as_the_client_reads() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let request = Request::get(server.url(&format!("/bytes/{GIB}")))
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = client.inner.request(request).await.unwrap();
    assert_eq!(
        response.headers()["content-length"],
        GIB.to_string().as_str()
    );

    let mut body = response.into_body();
    let mut read = 0u64;
    while read < 4 * MIB {
        let frame = body.frame().await.unwrap().unwrap();
        let data = frame.into_data().unwrap();
        assert!(data.iter().all(|b| *b == b'x'));
        read += data.len() as u64;
    }
    drop(body);
    // The server produced what socket buffers could hold, not the whole gibibyte.
    let streamed = server.counters().bytes_streamed();
    assert!(streamed >= read, "{streamed} < {read}");
    assert!(
        streamed < 128 * MIB,
        "{streamed} bytes produced for {read} read"
    );
}

#[tokio::test]
async fn sized_and_chunked_bytes_have_the_requested_length() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let sized = client.get(&server.url("/bytes/200000")).await;
    assert_eq!(sized.header("content-length"), Some("200000"));
    assert_eq!(sized.body.len(), 200_000);

    let chunked = client.get(&server.url("/bytes-chunked/200000")).await;
    assert_eq!(chunked.header("content-length"), None);
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!(chunked.body.len(), 200_000);
    assert!(chunked.body.iter().all(|b| *b == b'x'));
    assert_eq!(server.counters().hits(Route::Bytes), 2);
}

#[tokio::test]
async fn close_mid_body_gives_a_body_error_after_the_head() {
    let server = TestServer::start().await;
    for client in [TestClient::http1(), TestClient::http2()] {
        let request = Request::get(server.url("/close-mid-body"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = client.inner.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-length"], "1000");
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), 10);
        let rest = body.collect().await;
        assert!(rest.is_err(), "the body ended cleanly: {rest:?}");
    }
}

#[tokio::test]
async fn garbage_server_gives_a_parse_error() {
    let raw = RawServer::garbage().await;
    let error = TestClient::http1()
        .try_get(&format!("{}/anything", raw.base_url()))
        .await
        .unwrap_err();
    assert!(has_hyper_error(&error, hyper::Error::is_parse), "{error:?}");
    assert_eq!(raw.accepted(), 1);
}

#[tokio::test(start_paused = true)]
async fn hanging_raw_server_accepts_and_never_answers() {
    let raw = RawServer::hang().await;
    let client = TestClient::http1();
    let waited = tokio::time::timeout(
        Duration::from_secs(3600),
        client.try_get(&format!("{}/x", raw.base_url())),
    )
    .await;
    assert!(waited.is_err());
    assert_eq!(raw.accepted(), 1);
}

#[tokio::test]
async fn reset_before_headers_gives_an_error_without_a_response() {
    let raw = RawServer::reset_before_headers().await;
    let error = TestClient::http1()
        .try_get(&format!("{}/x", raw.base_url()))
        .await
        .unwrap_err();
    assert!(
        has_io_error(&error, std::io::ErrorKind::ConnectionReset),
        "{error:?}"
    );
    assert_eq!(raw.accepted(), 1);
}

#[tokio::test]
async fn refused_addr_gives_a_connect_error() {
    let addr = refused_addr();
    assert!(addr.ip().is_loopback());
    let request = Request::get(format!("http://{addr}/"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let error = TestClient::http1()
        .inner
        .request(request)
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn echo_reflects_the_request() {
    let server = TestServer::start().await;
    let request = Request::put(server.url("/echo/a/b?x=1&y=two"))
        .header("X-Custom", "Value")
        .header("accept", "text/plain")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let reply = TestClient::http1().send(request).await.unwrap();
    let echoed = reply.json();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["path"], "/echo/a/b");
    assert_eq!(echoed["query"], "x=1&y=two");
    assert_eq!(echoed["body"], "hello");
    assert_eq!(echoed["headers"]["x-custom"], "Value");
    assert_eq!(echoed["headers"]["accept"], "text/plain, application/json");
    assert_eq!(echoed["headers"]["content-length"], "5");
    assert!(echoed["headers"]["host"].is_string());
    assert_eq!(server.counters().hits(Route::Echo), 1);
}

#[tokio::test]
async fn status_route_answers_any_status_with_a_message() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let reply = client.get(&server.url("/status/502")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json(), json!({"error": {"message": "status 502"}}));
    let limited = client.get(&server.url("/status/429?retry_after=7")).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(client.get(&server.url("/status/99")).await.status, 400);
}

#[tokio::test]
async fn error_body_routes_answer_problem_html_and_envelope_shapes() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let problem = client.get(&server.url("/problem/422")).await;
    assert_eq!(problem.status, 422);
    assert_eq!(
        problem.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        problem.json(),
        json!({
            "type": "https://example.com/probs/x",
            "title": "Unprocessable",
            "status": 400,
            "detail": "name must not be empty",
        })
    );

    let html = client.get(&server.url("/html-error/500")).await;
    assert_eq!(html.status, 500);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(html.body.starts_with(b"<!DOCTYPE html>"), "{:?}", html.body);

    let envelope = client.get(&server.url("/envelope-error/503")).await;
    assert_eq!(envelope.status, 503);
    assert_eq!(
        envelope.json(),
        json!({"code": 503, "message": "envelope says 503", "result": null})
    );

    for path in ["/problem/99", "/html-error/600", "/envelope-error/100"] {
        assert_eq!(client.get(&server.url(path)).await.status, 400, "{path}");
    }
    assert_eq!(server.counters().hits(Route::Status), 6);
}

#[tokio::test(start_paused = true)]
async fn slow_routes_wait_on_tokios_clock() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let started = tokio::time::Instant::now();
    let reply = client.get(&server.url("/slow/20000")).await;
    assert_eq!(reply.json()["result"]["ms"], 20000);
    assert!(started.elapsed() >= Duration::from_secs(20));

    let request = Request::get(server.url("/slow-body/5000"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let head_at = tokio::time::Instant::now();
    let response = client.inner.request(request).await.unwrap();
    assert!(head_at.elapsed() < Duration::from_secs(5));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(head_at.elapsed() >= Duration::from_secs(5));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["result"]["ms"], 5000);
}

#[tokio::test]
async fn redirect_points_anywhere() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let other = "http://127.0.0.2:1/elsewhere";
    let reply = client
        .get(&server.url(&format!("/redirect?to={other}&status=307")))
        .await;
    assert_eq!(reply.status, 307);
    assert_eq!(reply.header("location"), Some(other));
    let default = client.get(&server.url("/redirect?to=/echo")).await;
    assert_eq!(default.status, 302);
    assert_eq!(
        client
            .get(&server.url("/redirect?to=/echo&status=200"))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn upload_counts_a_large_body_without_a_limit() {
    let server = TestServer::start().await;
    let body = Bytes::from(vec![b'u'; 5 * MIB as usize]);
    let request = Request::post(server.url("/upload"))
        .body(Full::new(body))
        .unwrap();
    let reply = TestClient::http1().send(request).await.unwrap();
    assert_eq!(reply.json()["result"]["bytes"], 5 * MIB);
}

#[tokio::test]
async fn dropping_the_server_releases_requests_held_on_the_gate() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let url = server.url("/gate/1");
    let held = tokio::spawn(async move { client.try_get(&url).await });
    server.gate().wait_for_arrivals(1).await;
    drop(server);
    assert!(held.await.unwrap().is_err());
}

#[tokio::test]
async fn unknown_paths_are_404_and_still_counted() {
    let server = TestServer::start().await;
    let reply = TestClient::http1().get(&server.url("/nope")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(server.counters().total(), 1);
    assert_eq!(server.counters().hits(Route::Any), 1);
}
