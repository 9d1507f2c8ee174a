//! Envelope unwrapping through the facade, over real loopback sockets. The testkit's
//! `POST /reflect` answers with the request's body and the content type it is asked for, so
//! every dialect (and every broken body) comes from a real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::Deserialize;
use xhttp::envelope::{Envelope, RawResponse};
use xhttp::{BusinessCode, Client, ErrorKind};
use xhttp_testkit::TestServer;

fn client(server: &TestServer, envelope: Envelope) -> Client {
    Client::builder()
        .base_url(server.base_url())
        .envelope(envelope)
        .build()
        .unwrap()
}

async fn reflect(
    client: &Client,
    content_type: &str,
    body: &'static str,
) -> Result<xhttp::Response, xhttp::Error> {
    client
        .post("/reflect")
        .header("x-reflect-content-type", content_type)
        .body(body)
        .send()
        .await
}

#[derive(Deserialize, Debug, PartialEq)]
struct Item {
    id: u64,
    name: String,
}

#[tokio::test]
async fn each_preset_unwraps_to_its_data() {
    let server = TestServer::start().await;
    let cases = [
        (
            Envelope::vben(),
            r#"{"code":0,"message":"ok","result":{"id":7,"name":"pen"}}"#,
        ),
        (
            Envelope::pascal(),
            r#"{"Code":200,"Msg":"ok","Data":{"id":7,"name":"pen"}}"#,
        ),
        (
            Envelope::msg_data(),
            r#"{"code":200,"msg":"ok","data":{"id":7,"name":"pen"}}"#,
        ),
    ];
    for (envelope, body) in cases {
        let client = client(&server, envelope);
        let response = reflect(&client, "application/json", body).await.unwrap();
        assert_eq!(response.body(), r#"{"id":7,"name":"pen"}"#, "{body}");
        assert_eq!(response.envelope().unwrap().message.as_deref(), Some("ok"));
        let item: Item = response.json().unwrap();
        assert_eq!(
            item,
            Item {
                id: 7,
                name: "pen".into()
            }
        );
    }
}

#[tokio::test]
async fn the_testkit_items_unwrap_with_the_vben_preset() {
    let server = TestServer::start().await;
    let client = client(&server, Envelope::vben());
    let item: Item = client
        .get("/public/items/3")
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        item,
        Item {
            id: 3,
            name: "item 3".into()
        }
    );
}

#[tokio::test]
async fn a_failure_code_in_a_200_is_a_business_error() {
    let server = TestServer::start().await;
    let client = client(&server, Envelope::vben());
    let err = reflect(
        &client,
        "application/json",
        r#"{"code":1003,"message":"system busy","result":null}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Business);
    assert_eq!(err.business_code(), Some(&BusinessCode::Int(1003)));
    assert_eq!(err.message(), Some("system busy"));
    assert_eq!(err.status(), Some(http::StatusCode::OK));
    // A POST: not retried by default.
    assert_eq!(err.attempts(), 1);
}

#[tokio::test]
async fn non_json_and_non_envelopes_pass_through() {
    let server = TestServer::start().await;
    let client = client(&server, Envelope::vben());
    let html = reflect(&client, "text/html", "<h1>hello</h1>")
        .await
        .unwrap();
    assert_eq!(html.body(), "<h1>hello</h1>");
    let plain_json = reflect(&client, "application/json", r#"[1,2,3]"#)
        .await
        .unwrap();
    assert_eq!(plain_json.body(), "[1,2,3]");
    let no_code = reflect(&client, "application/json", r#"{"id":1}"#)
        .await
        .unwrap();
    assert_eq!(no_code.body(), r#"{"id":1}"#);
    assert!(no_code.envelope().is_none());
}

#[tokio::test]
async fn a_body_that_claims_json_and_is_broken_is_a_redacted_decode_error() {
    let server = TestServer::start().await;
    let client = client(&server, Envelope::vben());
    let err = reflect(
        &client,
        "application/json; charset=utf-8",
        r#"{"code":0,"access_token":"SECRET-TOKEN-1","result":{"#,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_eq!(err.status(), Some(http::StatusCode::OK));
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("application/json"), "{shown}");
    assert!(
        shown.contains(r#""code":0"#),
        "the excerpt is there: {shown}"
    );
    assert!(!shown.contains("SECRET-TOKEN-1"), "{shown}");
}

#[tokio::test]
async fn raw_response_returns_the_whole_envelope() {
    let server = TestServer::start().await;
    let client = client(&server, Envelope::vben());
    let body = r#"{"code":1003,"message":"system busy","result":null}"#;
    let response = client
        .post("/reflect")
        .header("x-reflect-content-type", "application/json")
        .extension(RawResponse)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.body(), body);
}
