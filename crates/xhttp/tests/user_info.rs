//! User-info in a URL (`http://bob:hunter2@host/`) over real loopback sockets: the server
//! sees `Authorization: Basic` and a URI without user-info, the password reaches no tracing
//! event of hyper or hyper-util (which log the pool key, authority included, at DEBUG and
//! TRACE), and credentials are never sent twice nor dropped silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use xhttp::{Client, ErrorKind};
use xhttp_testkit::{Route, TestServer, TraceLog};

const PASSWORD: &str = "hunter2";
/// `base64("bob:hunter2")`.
const BASIC: &str = "Basic Ym9iOmh1bnRlcjI=";

/// Everything every test's tracing events wrote, at TRACE, hyper's and hyper-util's included.
fn log() -> &'static TraceLog {
    TraceLog::global()
}

fn logged() -> String {
    log().text()
}

fn with_user_info(base_url: &str) -> String {
    base_url.replacen("http://", &format!("http://bob:{PASSWORD}@"), 1)
}

async fn echo_headers(client: &Client, url: &str) -> serde_json::Map<String, Value> {
    let echo: Value = client.get(url).send().await.unwrap().json().unwrap();
    echo["headers"].as_object().unwrap().clone()
}

#[tokio::test]
async fn user_info_is_sent_as_basic_auth_and_no_tracing_event_holds_the_password() {
    log();
    let server = TestServer::start().await;
    // In an absolute URL, over HTTP/1.1.
    let client = Client::new();
    let url = with_user_info(&server.url("/echo/abs"));
    let headers = echo_headers(&client, &url).await;
    assert_eq!(headers["authorization"], BASIC);
    assert_eq!(headers["host"], server.addr().to_string());
    // In the base URL, over HTTP/2, where the authority travels as `:authority`.
    let client = Client::builder()
        .base_url(with_user_info(&server.base_url()))
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client.get("/echo/base").send().await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let echo: Value = response.json().unwrap();
    assert_eq!(echo["headers"]["authorization"], BASIC);
    assert_eq!(echo["path"], "/echo/base");

    let text = logged();
    // The capture is not vacuous: hyper-util logged its connections, pool keys included.
    assert!(text.contains("hyper_util"), "no hyper-util event captured");
    assert!(
        text.contains(&server.addr().to_string()),
        "the pool key is logged"
    );
    assert!(
        !text.contains(PASSWORD),
        "the password reached a tracing event"
    );
    assert!(
        !text.contains("bob:"),
        "the user-info reached a tracing event"
    );
    assert!(
        !text.contains(&BASIC[6..]),
        "the credential reached a tracing event"
    );
}

#[tokio::test]
async fn the_request_on_the_wire_has_no_user_info() {
    log();
    // A raw server, to read the request head byte for byte.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before a whole head");
            head.extend_from_slice(&buf[..n]);
        }
        let reply = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        stream.write_all(reply).await.unwrap();
        String::from_utf8(head).unwrap()
    });
    let url = format!("http://b%40b:{PASSWORD}@{addr}/wire?x=1");
    let response = Client::new().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let head = server.await.unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("get /wire?x=1 http/1.1\r\n"), "{head}");
    assert!(lower.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
    // base64("b@b:hunter2"): the user was percent-decoded.
    assert!(
        head.contains("\r\nauthorization: Basic YkBiOmh1bnRlcjI=\r\n"),
        "{head}"
    );
    assert!(
        !head.contains(PASSWORD) && !head.contains("b%40b"),
        "{head}"
    );
}

#[tokio::test]
async fn user_info_beside_an_authorization_header_is_refused_before_sending() {
    let server = TestServer::start().await;
    let url = with_user_info(&server.url("/echo"));
    let refused = [
        Client::new()
            .get(&url)
            .header("authorization", "Bearer other")
            .send()
            .await,
        Client::builder()
            .default_header("authorization", "Bearer other")
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await,
    ];
    for result in refused {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        assert!(err.to_string().contains("Authorization header"), "{err}");
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains(PASSWORD) && !shown.contains("other"),
            "{shown}"
        );
    }
    assert_eq!(server.counters().hits(Route::Echo), 0, "nothing was sent");
}

#[tokio::test]
async fn user_info_to_an_origin_the_auth_covers_is_refused_unless_auth_is_skipped() {
    let server = TestServer::start().await;
    let grant = xhttp::auth::OAuth2Refresh::new(
        xhttp::grant_transport(),
        "https://auth.example.com/oauth/token",
    )
    .unwrap();
    let manager = xhttp::auth::TokenManager::builder(grant).build();
    let client = Client::builder()
        .base_url(server.base_url())
        .auth(manager)
        .allow_insecure_loopback()
        .build()
        .unwrap();
    let url = with_user_info(&server.url("/echo"));
    let err = client.get(&url).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.to_string().contains("auth"), "{err}");
    assert!(!format!("{err} {err:?}").contains(PASSWORD));
    assert_eq!(server.counters().hits(Route::Echo), 0);
    // With SkipAuth the token is not sent, so the URL's credentials are the only ones.
    let echo: Value = client
        .get(&url)
        .extension(xhttp::auth::SkipAuth)
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(echo["headers"]["authorization"], BASIC);
}

#[tokio::test]
async fn a_built_request_already_carries_the_header_and_not_the_user_info() {
    let client = Client::builder()
        .base_url(format!("http://bob:{PASSWORD}@127.0.0.1:1/api"))
        .build()
        .unwrap();
    let request = client.get("/me").build().unwrap();
    assert_eq!(request.uri(), "http://127.0.0.1:1/api/me");
    assert_eq!(request.headers()["authorization"], BASIC);
    assert!(request.headers()["authorization"].is_sensitive());
    assert!(!format!("{client:?}").contains(PASSWORD));
}
