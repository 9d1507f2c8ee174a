//! `GET /public/gzip/{id}`: compressed when the client accepts gzip, plain otherwise, and
//! counted, through real sockets.

mod common;

use std::io::Read;

use bytes::Bytes;
use common::{Reply, TestClient};
use flate2::read::GzDecoder;
use http::{header, Request};
use http_body_util::Full;
use serde_json::json;
use xhttp_testkit::{Route, TestServer};

async fn get(client: &TestClient, url: &str, accept_encoding: Option<&str>) -> Reply {
    let mut request = Request::get(url);
    if let Some(value) = accept_encoding {
        request = request.header(header::ACCEPT_ENCODING, value);
    }
    let request = request
        .body(Full::<Bytes>::default())
        .expect("valid request");
    client.send(request).await.expect("request failed")
}

fn gunzip(body: &[u8]) -> serde_json::Value {
    assert_eq!(body.get(..2), Some(&[0x1f, 0x8b][..]), "gzip magic");
    let mut plain = Vec::new();
    GzDecoder::new(body)
        .read_to_end(&mut plain)
        .expect("a whole gzip stream");
    serde_json::from_slice(&plain).expect("JSON inside")
}

fn item(id: u64) -> serde_json::Value {
    json!({"code": 0, "message": "ok", "result": {"id": id, "name": format!("item {id}")}})
}

#[tokio::test]
async fn accepted_gzip_is_compressed_and_counted() {
    let server = TestServer::start().await;
    for client in [TestClient::http1(), TestClient::http2()] {
        let reply = get(&client, &server.url("/public/gzip/7"), Some("gzip")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), Some("gzip"));
        assert_eq!(reply.header("vary"), Some("accept-encoding"));
        assert_eq!(gunzip(&reply.body), item(7));
    }
    // Another coding listed first, gzip with a lower quality: gzip is still acceptable.
    let reply = get(
        &TestClient::http1(),
        &server.url("/public/gzip/8"),
        Some("br, gzip;q=0.5"),
    )
    .await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&reply.body), item(8));

    assert_eq!(server.counters().gzip_responses(), 3);
    assert_eq!(server.counters().hits(Route::Gzip), 3);
}

#[tokio::test]
async fn without_gzip_in_accept_encoding_the_answer_is_plain_and_uncounted() {
    let server = TestServer::start().await;
    let client = TestClient::http1();
    let url = server.url("/public/gzip/9");
    for accept_encoding in [None, Some("identity"), Some("br"), Some("gzip;q=0")] {
        let reply = get(&client, &url, accept_encoding).await;
        assert_eq!(reply.status, 200, "{accept_encoding:?}");
        assert_eq!(
            reply.header("content-encoding"),
            None,
            "{accept_encoding:?}"
        );
        assert_eq!(reply.json(), item(9), "{accept_encoding:?}");
    }
    assert_eq!(server.counters().gzip_responses(), 0);
    assert_eq!(server.counters().hits(Route::Gzip), 4);
}

#[tokio::test]
async fn a_faulted_gzip_request_is_not_counted_as_compressed() {
    let server = TestServer::start().await;
    server.set_faults(
        Route::Gzip,
        xhttp_testkit::Faults {
            fail_rate: 1.0,
            ..xhttp_testkit::Faults::default()
        },
    );
    let reply = get(
        &TestClient::http1(),
        &server.url("/public/gzip/1"),
        Some("gzip"),
    )
    .await;
    assert_eq!(reply.status, 503);
    assert_eq!(server.counters().gzip_responses(), 0);
    assert_eq!(server.counters().faults_injected(), 1);
}
