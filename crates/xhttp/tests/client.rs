//! The facade over real loopback sockets against the testkit server.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use xhttp::{Client, ErrorKind, TimeoutScope};
use xhttp_testkit::{RawServer, TestServer};

#[derive(Serialize)]
struct NewItem<'a> {
    name: &'a str,
    tags: Vec<&'a str>,
}

#[derive(Deserialize)]
struct Echo {
    method: String,
    path: String,
    query: Option<String>,
    headers: serde_json::Map<String, Value>,
    body: String,
}

fn client_for(server: &TestServer) -> Client {
    Client::builder()
        .base_url(server.base_url())
        .default_header("user-agent", "xhttp-tests/1")
        .build()
        .unwrap()
}

#[tokio::test]
async fn get_round_trip_reads_status_headers_bytes_and_json() {
    let server = TestServer::start().await;
    let client = client_for(&server);
    let response = client
        .get("/echo/some/path")
        .query(&[("q", "rust lang"), ("page", "2")])
        .header("x-trace", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("content-type"));
    let echo: Echo = response.json().unwrap();
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.path, "/echo/some/path");
    assert_eq!(echo.query.as_deref(), Some("q=rust+lang&page=2"));
    assert_eq!(echo.headers["x-trace"], "abc");
    assert_eq!(echo.headers["user-agent"], "xhttp-tests/1");
    assert!(!response.bytes().is_empty());
}

#[tokio::test]
async fn post_json_round_trip() {
    let server = TestServer::start().await;
    let client = client_for(&server);
    let echo: Echo = client
        .post("echo")
        .json(&NewItem {
            name: "pen",
            tags: vec!["a", "b"],
        })
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.headers["content-type"], "application/json");
    let sent: Value = serde_json::from_str(&echo.body).unwrap();
    assert_eq!(sent, serde_json::json!({"name": "pen", "tags": ["a", "b"]}));
}

#[tokio::test]
async fn form_bodies_and_absolute_urls() {
    let server = TestServer::start().await;
    let client = Client::new();
    let echo: Echo = client
        .put(&server.url("/echo"))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(echo.method, "PUT");
    assert_eq!(echo.body, "grant_type=refresh_token");
    assert_eq!(
        echo.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
}

#[tokio::test]
async fn base_url_prefix_is_kept() {
    let server = TestServer::start().await;
    let client = Client::builder()
        .base_url(format!("{}/echo/api/", server.base_url()))
        .build()
        .unwrap();
    let echo: Echo = client.get("/users").send().await.unwrap().json().unwrap();
    assert_eq!(echo.path, "/echo/api/users");
}

#[tokio::test]
async fn http2_prior_knowledge_speaks_http2() {
    let server = TestServer::start().await;
    let client = Client::builder()
        .base_url(server.base_url())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut calls = Vec::new();
    for i in 0..20 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            client.get(&format!("/public/items/{i}")).send().await
        }));
    }
    for call in calls {
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn connect_refused_is_a_never_sent_transport_error() {
    let addr = xhttp_testkit::refused_addr();
    let err = Client::new()
        .get(&format!("http://{addr}/x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(err.is_never_sent());
    assert_eq!(err.method(), Some(&http::Method::GET));
    assert!(
        err.to_string().contains("before the request was sent"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_attempt_timeout() {
    let server = RawServer::hang().await;
    let client = Client::builder()
        .base_url(server.base_url())
        .attempt_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = client.get("/").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutScope::Attempt));
    assert!(!err.is_never_sent());
    // A GET is idempotent: the default policy tried it 4 times, each on a new connection.
    assert_eq!(err.attempts(), 4);
    assert_eq!(server.accepted(), 4);
}

#[tokio::test]
async fn garbage_and_resets_are_transport_errors_not_hangs() {
    for server in [
        RawServer::garbage().await,
        RawServer::reset_before_headers().await,
    ] {
        let client = Client::builder()
            .base_url(server.base_url())
            .attempt_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let err = client.get("/").send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    }
}

#[tokio::test]
async fn close_mid_body_is_a_transport_error() {
    let server = TestServer::start().await;
    let err = client_for(&server)
        .get("/close-mid-body")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
}

#[tokio::test]
async fn body_one_byte_over_the_limit_is_too_large() {
    let server = TestServer::start().await;
    let client = client_for(&server);
    for route in ["bytes", "bytes-chunked"] {
        let ok = client
            .get(&format!("/{route}/1000"))
            .body_limit(1000)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.body().len(), 1000);
        let err = client
            .get(&format!("/{route}/1001"))
            .body_limit(1000)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyTooLarge, "{route}: {err}");
        assert_eq!(err.body_limit(), Some(1000));
    }
}

#[tokio::test]
async fn bad_input_is_a_typed_error_at_the_call() {
    let server = TestServer::start().await;
    let client = client_for(&server);
    let cases = [
        client.get("http://exa mple.com/"),
        client.get("ftp://example.com/file"),
        client.get("http:///no-host"),
        client.get("/path with spaces"),
        client.get("/ok").header("x-bad", "line\nbreak"),
        client.get("/ok").header("bad header", "v"),
        Client::new().get("/relative-without-base"),
    ];
    for case in cases {
        let err = case.send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    }
    for base in ["not a url", "ftp://host", "http://host/?q=1"] {
        let err = Client::builder().base_url(base).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{base}: {err}");
    }
    let err = Client::builder()
        .default_header("x-token", "bad\rvalue-secret")
        .build()
        .unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test]
async fn non_json_body_is_a_decode_error_without_its_content() {
    let server = TestServer::start().await;
    let response = client_for(&server).get("/bytes/10").send().await.unwrap();
    let err = response.json::<Value>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert!(!err.to_string().contains("xxxxxxxxxx"), "{err}");
    assert_eq!(err.status(), Some(http::StatusCode::OK));
}

#[tokio::test]
async fn errors_never_print_a_token_in_the_url() {
    let addr = xhttp_testkit::refused_addr();
    let err = Client::new()
        .get(&format!("http://{addr}/cb?access_token=SEKRIT-123&state=s"))
        .header("authorization", "Bearer SEKRIT-123")
        .send()
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("SEKRIT-123"), "{shown}");
    assert!(shown.contains("state=s"), "{shown}");
}

// ---------------------------------------------------------------------------------------
// Impossible configurations: typed errors, never panics.

#[test]
fn timeouts_of_duration_max_are_config_errors_at_build() {
    let builders = [
        Client::builder().deadline(Duration::MAX),
        Client::builder()
            .attempt_timeout(Duration::MAX)
            .deadline(Duration::MAX),
        Client::builder().connect_timeout(Duration::MAX),
        Client::builder().pool_idle_timeout(Duration::MAX),
    ];
    for builder in builders {
        let err = builder.build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("at most a year"), "{err}");
    }
    // A year is the longest accepted.
    let year = xhttp::transport::LONGEST_TIMEOUT;
    Client::builder()
        .attempt_timeout(year)
        .deadline(year)
        .connect_timeout(year)
        .pool_idle_timeout(year)
        .build()
        .unwrap();
}

#[tokio::test]
async fn a_per_request_timeout_of_duration_max_or_zero_is_a_config_error_at_send() {
    let server = TestServer::start().await;
    let client = client_for(&server);
    for timeout in [Duration::MAX, Duration::ZERO] {
        let err = client
            .get("/echo")
            .timeout(timeout)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    assert_eq!(server.counters().hits(xhttp_testkit::Route::Echo), 0);
    // A year works.
    let response = client
        .get("/echo")
        .timeout(xhttp::transport::LONGEST_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_per_request_timeout_bounds_the_whole_call() {
    let server = RawServer::hang().await;
    let client = Client::builder()
        .base_url(server.base_url())
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    let err = client
        .get("/")
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutScope::Total), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_request_sent_outside_a_tokio_runtime_is_a_config_error_not_a_panic() {
    let client = Client::builder()
        .base_url("http://127.0.0.1:1")
        .build()
        .unwrap();
    let future = client.get("/x").send();
    let err = futures_util::FutureExt::now_or_never(future)
        .expect("fails at once")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Debug output never prints a credential.

/// A server that answers one request with `reply`, byte for byte.
async fn one_reply_server(reply: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(reply).await;
    });
    addr
}

#[tokio::test]
async fn response_debug_prints_no_body_and_no_set_cookie_value() {
    let addr = one_reply_server(
        b"HTTP/1.1 200 OK\r\nset-cookie: sid=SESSION-SECRET-1; HttpOnly\r\n\
          content-type: application/json\r\ncontent-length: 25\r\n\r\n\
          {\"token\":\"BODY-SECRET-2\"}",
    )
    .await;
    let response = Client::new()
        .get(&format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.body().len(), 25);
    let shown = format!("{response:?} {response:#?}");
    for expected in [
        "200",
        "HTTP/1.1",
        "set-cookie",
        "content-type",
        "body_len: 25",
    ] {
        assert!(shown.contains(expected), "{expected} missing from {shown}");
    }
    assert!(!shown.contains("SESSION-SECRET-1"), "{shown}");
    assert!(!shown.contains("BODY-SECRET-2"), "{shown}");
}

#[test]
fn client_builder_debug_prints_no_user_info_and_no_header_values() {
    let builder = Client::builder()
        .base_url("https://bob:hunter2@api.example.com/v1")
        .default_header("authorization", "Bearer HEADER-SECRET-3")
        .default_header("cookie", "sid=COOKIE-SECRET-4")
        .default_header("x-app", "admin-console");
    let shown = format!("{builder:?} {builder:#?}");
    for expected in ["api.example.com/v1", "authorization", "cookie", "x-app"] {
        assert!(shown.contains(expected), "{expected} missing from {shown}");
    }
    for secret in [
        "hunter2",
        "bob",
        "HEADER-SECRET-3",
        "COOKIE-SECRET-4",
        "admin-console",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    // A malformed base URL is not echoed either: it may hold the password.
    let shown = format!(
        "{:?}",
        Client::builder().base_url("https://bob:hunter2@ bad")
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}
