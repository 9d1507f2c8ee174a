//! Envelope unwrapping over real loopback sockets, each test through the facade and through
//! the public stack over a raw hyper-util client (`common`). The testkit's `POST /reflect`
//! answers with the request's body and the content type it is asked for, so every dialect
//! (and every broken body) comes from a real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{both, TestClient, Via};
use serde::Deserialize;
use xhttp::envelope::{Envelope, RawResponse};
use xhttp::{BusinessCode, ErrorKind};
use xhttp_testkit::TestServer;

fn client(via: Via, server: &TestServer, envelope: Envelope) -> TestClient {
    via.client()
        .base_url(server.base_url())
        .envelope(envelope)
        .build()
        .unwrap()
}

async fn reflect(
    client: &TestClient,
    content_type: &str,
    body: impl Into<xhttp::Body>,
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

both!(current_thread, each_preset_unwraps_to_its_data);
async fn each_preset_unwraps_to_its_data(via: Via) {
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
        let client = client(via, &server, envelope);
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

both!(
    current_thread,
    the_testkit_items_unwrap_with_the_vben_preset
);
async fn the_testkit_items_unwrap_with_the_vben_preset(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server, Envelope::vben());
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

both!(current_thread, a_failure_code_in_a_200_is_a_business_error);
async fn a_failure_code_in_a_200_is_a_business_error(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server, Envelope::vben());
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

both!(current_thread, non_json_and_non_envelopes_pass_through);
async fn non_json_and_non_envelopes_pass_through(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server, Envelope::vben());
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

both!(
    current_thread,
    a_body_that_claims_json_and_is_broken_is_a_redacted_decode_error
);
async fn a_body_that_claims_json_and_is_broken_is_a_redacted_decode_error(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server, Envelope::vben());
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

both!(current_thread, raw_response_returns_the_whole_envelope);
async fn raw_response_returns_the_whole_envelope(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server, Envelope::vben());
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

/// Test secrets that must appear in no `Display`, `Debug` or `message()` of an error.
const SECRETS: [&str; 3] = ["SECRET-AT-xyz123", "SECRET-RT-xyz123", "SECRET-CS-xyz123"];

fn assert_no_secret(err: &xhttp::Error) {
    let shown = format!("{err} | {err:?} | {:?}", err.message());
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

both!(
    current_thread,
    a_form_encoded_broken_body_never_reaches_the_error
);
async fn a_form_encoded_broken_body_never_reaches_the_error(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server, Envelope::vben());
    let err = reflect(
        &client,
        "application/json",
        "access_token=SECRET-AT-xyz123&refresh_token=SECRET-RT-xyz123&token_type=bearer\
         &client_secret=SECRET-CS-xyz123",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_no_secret(&err);
    let message = err.message().unwrap();
    assert!(
        message.contains("access_token=REDACTED&refresh_token=REDACTED&token_type=bearer"),
        "the excerpt keeps the shape: {message}"
    );
}

both!(
    current_thread,
    a_token_in_a_url_or_a_truncated_json_string_never_reaches_the_error
);
async fn a_token_in_a_url_or_a_truncated_json_string_never_reaches_the_error(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server, Envelope::vben());
    for body in [
        "<html>see https://app.example.com/cb?access_token=SECRET-AT-xyz123&x=1</html>",
        "https://app.example.com/cb#access_token=SECRET-AT-xyz123&state=s",
        r#"{"code":0,"result":{"access_token":"SECRET-AT-xyz123"#,
        r#"{"code":0,"result":{"accessToken":  'SECRET-AT-xyz123', "refreshToken": SECRET-RT-xyz123"#,
        r#"{"code":0,"result":{"password": 12345678, "clientSecret":"SECRET-CS-xyz123""#,
        r#"{"code":0,"result":"Authorization: Bearer SECRET-AT-xyz123"#,
    ] {
        let err = reflect(&client, "application/json", body)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{body}");
        assert_no_secret(&err);
        assert!(!err.message().unwrap().contains("12345678"), "{err}");
    }
}

both!(current_thread, serde_message_text_is_never_quoted);
async fn serde_message_text_is_never_quoted(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server, Envelope::vben());
    // The auth crate registers every live credential; this one stands for them.
    let _known = xhttp_core::mask::KnownSecret::register("SECRET-AT-xyz123");
    // A JSON string followed by garbage: serde says `invalid type: string "SECRET-AT-xyz123",
    // expected a JSON object`.
    let err = reflect(
        &client,
        "application/json",
        r#""SECRET-AT-xyz123" and more"#,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_no_secret(&err);
    let message = err.message().unwrap();
    assert!(
        message.contains("(invalid data at line 1, column 18)"),
        "category and position are kept: {message}"
    );
    assert!(
        !message.contains("invalid type") && !message.contains("expected"),
        "{message}"
    );

    // Invalid UTF-8: the position, never the bytes.
    let err = reflect(
        &client,
        "application/json",
        b"{\"a\":\"\xff\xfe\"}".to_vec(),
    )
    .await
    .unwrap_err();
    assert!(
        err.message().unwrap().contains("invalid UTF-8 at byte 6"),
        "{err}"
    );
}

both!(
    current_thread,
    a_business_message_is_cleaned_masked_and_capped
);
async fn a_business_message_is_cleaned_masked_and_capped(via: Via) {
    let server = TestServer::start().await;
    let client = client(via, &server, Envelope::vben());
    let message = format!(
        "token SECRET-AT-xyz123 expired\n2026-12-01 ERROR forged line\u{202e}\u{200b}\u{061c} \
         refresh_token=SECRET-RT-xyz123 {}",
        // 1.5 MB: under the testkit's 2 MB request limit, far over any cap.
        "padding ".repeat(190_000)
    );
    let body = serde_json::json!({ "code": 40009, "message": message, "result": null });
    let err = reflect(&client, "application/json", body.to_string())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Business);
    assert_eq!(err.business_code(), Some(&BusinessCode::Int(40009)));
    assert_no_secret(&err);
    let shown = err.message().unwrap();
    assert!(
        shown.starts_with(
            "token REDACTED expired 2026-12-01 ERROR forged line refresh_token=REDACTED padding"
        ),
        "{shown}"
    );
    assert!(
        shown.len() <= xhttp_core::error::MAX_TEXT_LEN,
        "{}",
        shown.len()
    );
    let display = err.to_string();
    assert!(
        !display
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{202e}' | '\u{200b}' | '\u{061c}')),
        "{display:?}"
    );
}
