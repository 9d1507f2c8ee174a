//! StatusLayer over in-process services (`tower::service_fn`): message sources and their
//! order, default messages, headers kept on the error, passthrough, masking, the readiness
//! contract.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer, Service, ServiceExt};
use xhttp_core::{Clock, Error, ErrorKind};
use xhttp_status::{
    Language, SkipStatus, Status, StatusLayer, MAX_MESSAGE_CHARS, STATUSES_WITH_DEFAULTS,
};

/// A response of `status` with `headers` and `body`.
fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::copy_from_slice(body.as_bytes()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        response.headers_mut().append(name, value.parse().unwrap());
    }
    response
}

/// An upstream answering every request with a clone of `answer`.
fn upstream(
    answer: Response<Bytes>,
) -> impl Service<Request<()>, Response = Response<Bytes>, Error = Infallible, Future: Send> + Clone
{
    service_fn(move |_request: Request<()>| {
        let answer = answer.clone();
        async move { Ok::<_, Infallible>(answer) }
    })
}

fn get() -> Request<()> {
    Request::get("https://api.example.com/v1/items/7?access_token=SECRET-AT&page=2")
        .body(())
        .unwrap()
}

async fn fail_with(layer: &StatusLayer, answer: Response<Bytes>) -> Error {
    layer
        .layer(upstream(answer))
        .oneshot(get())
        .await
        .unwrap_err()
}

async fn message_of(answer: Response<Bytes>) -> String {
    let err = fail_with(&StatusLayer::new(), answer).await;
    err.message().unwrap().to_owned()
}

#[tokio::test]
async fn problem_details_give_the_detail_and_the_http_status_wins() {
    let body = r#"{"type":"https://example.com/probs/x","title":"Unprocessable","status":400,"detail":"name must not be empty"}"#;
    let err = fail_with(
        &StatusLayer::new(),
        response(422, &[("content-type", "application/problem+json")], body),
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(err.message(), Some("name must not be empty"));
}

#[tokio::test]
async fn every_message_source_in_order_of_precedence() {
    let problem = [("content-type", "application/problem+json")];
    let json = [("content-type", "application/json")];
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: Vec<(Headers<'_>, &str, &str)> = vec![
        (&problem, r#"{"title":"t","detail":"d","message":"m"}"#, "d"),
        (&problem, r#"{"title":"t","message":"m"}"#, "t"),
        (&problem, r#"{"message":"m","error":"e"}"#, "m"),
        (&json, r#"{"title":"t","detail":"d","message":"m"}"#, "m"),
        (
            &json,
            r#"{"msg":"g","Msg":"G","error":{"message":"e"}}"#,
            "g",
        ),
        (&json, r#"{"Msg":"G","error":{"message":"e"}}"#, "G"),
        (
            &json,
            r#"{"error":{"message":"e"},"error_description":"ed"}"#,
            "e",
        ),
        (
            &json,
            r#"{"error":"invalid_grant","error_description":"ed"}"#,
            "ed",
        ),
        (&json, r#"{"error":"invalid_grant"}"#, "invalid_grant"),
        (
            &[],
            r#"{"message":"no content type is fine"}"#,
            "no content type is fine",
        ),
    ];
    for (headers, body, expected) in cases {
        assert_eq!(
            message_of(response(400, headers, body)).await,
            expected,
            "{body}"
        );
    }
}

#[tokio::test]
async fn configured_pointers_are_read_after_the_envelope_members() {
    let layer = StatusLayer::builder()
        .message_pointer("/data/errMsg")
        .build();
    let body = r#"{"code":1,"data":{"errMsg":"nested"},"error":"e"}"#;
    let err = fail_with(&layer, response(500, &[], body)).await;
    assert_eq!(err.message(), Some("nested"));

    let replaced = StatusLayer::builder().message_pointers(["reason"]).build();
    let body = r#"{"message":"not read","reason":"read"}"#;
    let err = fail_with(&replaced, response(500, &[], body)).await;
    assert_eq!(err.message(), Some("read"));
}

#[tokio::test]
async fn an_html_error_page_gets_the_default_english_message() {
    let page = "<!DOCTYPE html><html><body><h1>500 Internal Server Error</h1></body></html>";
    let err = fail_with(
        &StatusLayer::new(),
        response(500, &[("content-type", "text/html")], page),
    )
    .await;
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(
        err.message(),
        Some("Internal server error: please contact the administrator.")
    );
}

#[tokio::test]
async fn the_chinese_table_is_selectable() {
    let layer = StatusLayer::builder().language(Language::Chinese).build();
    let err = fail_with(&layer, response(401, &[], "")).await;
    assert_eq!(
        err.message(),
        Some("用户没有权限（令牌、用户名、密码错误）!")
    );
    let err = fail_with(&layer, response(404, &[], "")).await;
    assert_eq!(err.message(), Some("网络请求错误,未找到该资源!"));
    // The server's own message still wins over the table.
    let err = fail_with(&layer, response(404, &[], r#"{"message":"没有这个用户"}"#)).await;
    assert_eq!(err.message(), Some("没有这个用户"));
}

#[tokio::test]
async fn each_default_status_has_a_message_in_both_languages() {
    for language in [Language::English, Language::Chinese] {
        let layer = StatusLayer::builder().language(language).build();
        for code in STATUSES_WITH_DEFAULTS {
            let status = StatusCode::from_u16(code).unwrap();
            let err = fail_with(&layer, response(code, &[], "")).await;
            assert_eq!(err.status(), Some(status));
            assert_eq!(
                err.message(),
                Some(language.default_message(status)),
                "{code} {language:?}"
            );
        }
    }
    let err = fail_with(&StatusLayer::new(), response(418, &[], "")).await;
    assert_eq!(err.message(), Some("The server rejected the request."));
}

#[tokio::test]
async fn success_responses_pass_untouched() {
    for code in [200, 201, 204, 301, 304] {
        let answer = response(code, &[("x-trace", "t-1")], r#"{"message":"fine"}"#);
        let passed = StatusLayer::new()
            .layer(upstream(answer.clone()))
            .oneshot(get())
            .await
            .unwrap();
        assert_eq!(passed.status(), answer.status());
        assert_eq!(passed.headers(), answer.headers());
        assert_eq!(passed.body(), answer.body());
    }
}

#[tokio::test]
async fn the_success_predicate_is_configurable() {
    let layer = StatusLayer::builder()
        .success_if(|status| status.is_success() || status == StatusCode::NOT_FOUND)
        .build();
    let found = layer.layer(upstream(response(404, &[], ""))).oneshot(get());
    assert_eq!(found.await.unwrap().status(), 404);
    let err = fail_with(&layer, response(304, &[], "")).await;
    assert_eq!(err.status(), Some(StatusCode::NOT_MODIFIED));
}

/// A wall clock stopped at 1994-11-06 08:49:32 GMT.
#[derive(Debug)]
struct Stopped;

impl Clock for Stopped {
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
    fn system_now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_772)
    }
}

#[tokio::test]
async fn retry_after_in_both_forms_and_the_challenge_are_kept() {
    let layer = StatusLayer::builder().clock(Arc::new(Stopped)).build();
    let err = fail_with(&layer, response(429, &[("retry-after", "7")], "")).await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    let date = [("retry-after", "Sun, 06 Nov 1994 08:50:02 GMT")];
    let err = fail_with(&layer, response(503, &date, "")).await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));

    let garbage = [("retry-after", "later")];
    let err = fail_with(&layer, response(503, &garbage, "")).await;
    assert_eq!(err.retry_after(), None);

    let challenge = r#"Bearer realm="api", error="invalid_token""#;
    let err = fail_with(
        &layer,
        response(401, &[("www-authenticate", challenge)], ""),
    )
    .await;
    assert_eq!(err.challenge(), Some(challenge));
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn the_error_records_the_request_with_secrets_masked() {
    let err = fail_with(&StatusLayer::new(), response(404, &[], "")).await;
    assert_eq!(err.method(), Some(&http::Method::GET));
    assert_eq!(
        err.uri(),
        Some("https://api.example.com/v1/items/7?access_token=REDACTED&page=2")
    );
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("SECRET-AT"), "{shown}");
}

#[tokio::test]
async fn skip_status_returns_failures_as_responses() {
    let answer = response(404, &[], r#"{"message":"no such item"}"#);
    let mut request = get();
    request.extensions_mut().insert(SkipStatus);
    let passed = StatusLayer::new()
        .layer(upstream(answer.clone()))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(passed.status(), 404);
    assert_eq!(passed.body(), answer.body());
}

#[tokio::test]
async fn the_former_name_status_passthrough_is_the_same_marker() {
    let answer = response(404, &[], r#"{"message":"no such item"}"#);
    let mut request = get();
    request
        .extensions_mut()
        .insert(xhttp_status::StatusPassthrough);
    assert!(request.extensions().get::<SkipStatus>().is_some());
    let passed = StatusLayer::new()
        .layer(upstream(answer))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(passed.status(), 404);
}

#[tokio::test]
async fn errors_of_the_inner_service_pass_as_they_are() {
    let inner = service_fn(|_request: Request<()>| async {
        Err::<Response<Bytes>, _>(Error::business(40009, "token expired"))
    });
    let err = StatusLayer::new()
        .layer(inner)
        .oneshot(get())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Business);
    assert_eq!(err.message(), Some("token expired"));

    let inner = service_fn(|_request: Request<()>| async {
        Err::<Response<Bytes>, std::io::Error>(std::io::ErrorKind::ConnectionReset.into())
    });
    let err = StatusLayer::new()
        .layer(inner)
        .oneshot(get())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
}

#[tokio::test]
async fn tokens_in_a_message_are_masked() {
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    let body = format!(r#"{{"message":"token {jwt} is expired"}}"#);
    let err = fail_with(&StatusLayer::new(), response(401, &[], &body)).await;
    assert_eq!(err.message(), Some("token REDACTED is expired"));

    let body = r#"{"error":{"message":"Authorization: Bearer abc.def.ghi was rejected"}}"#;
    let err = fail_with(&StatusLayer::new(), response(401, &[], body)).await;
    assert_eq!(
        err.message(),
        Some("Authorization: Bearer REDACTED was rejected")
    );
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("abc.def.ghi") && !shown.contains("SflKxw"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_huge_message_is_capped_and_flattened() {
    let body = serde_json::json!({ "message": format!("first\nline {}", "x".repeat(100_000)) });
    let message = message_of(response(500, &[], &body.to_string())).await;
    assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
    assert!(message.starts_with("first line xxx"), "{message}");
    assert!(message.ends_with('…'));
}

#[tokio::test]
async fn layers_keep_the_readiness_contract() {
    let probe = xhttp_testkit::ReadinessProbe::new(response(503, &[], r#"{"msg":"busy"}"#));
    let service = StatusLayer::new().layer(probe.clone());
    let err = service.clone().oneshot(get()).await.unwrap_err();
    assert_eq!(err.message(), Some("busy"));
    let mut not_ready = service.clone();
    let err = not_ready.call(get()).await.unwrap_err();
    assert!(format!("{err:?}").contains("readiness contract"), "{err:?}");
    assert_eq!(probe.calls(), 1);
}

proptest::proptest! {
    #[test]
    fn any_body_under_any_status_never_panics(
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        code in 100u16..1000,
        problem in proptest::bool::ANY,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut answer = Response::new(Bytes::from(body));
        *answer.status_mut() = StatusCode::from_u16(code).unwrap();
        if problem {
            answer.headers_mut().insert("content-type", "application/problem+json".parse().unwrap());
        }
        let outcome = runtime.block_on(StatusLayer::new().layer(upstream(answer)).oneshot(get()));
        match outcome {
            Ok(response) => proptest::prop_assert!(response.status().as_u16() < 400),
            Err(err) => {
                proptest::prop_assert!(code >= 400);
                let message = err.message().unwrap();
                proptest::prop_assert!(!message.is_empty());
                proptest::prop_assert!(message.chars().count() <= MAX_MESSAGE_CHARS);
            }
        }
    }
}

#[test]
fn services_and_futures_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    type Inner = tower::util::BoxCloneSyncService<Request<()>, Response<Bytes>, Error>;
    assert_send_sync::<StatusLayer>();
    assert_send_sync::<Status<Inner>>();
    assert_send::<xhttp_status::ResponseFuture<<Inner as Service<Request<()>>>::Future>>();
}

#[tokio::test]
async fn a_problem_keeps_its_members_and_extensions_masked_and_bounded() {
    let body = r#"{
        "type": "https://example.com/probs/out-of-credit",
        "title": "You do not have enough credit.",
        "status": 400,
        "detail": "Your current balance is 30, but that costs 50.",
        "instance": "/account/12345/msgs/abc",
        "balance": 30,
        "accounts": ["/account/12345"],
        "refresh_token": "SECRET-RT-1234567890",
        "note": "access_token=SECRET-AT-1234567890"
    }"#;
    let err = fail_with(
        &StatusLayer::new(),
        response(
            403,
            &[("content-type", "application/problem+json; charset=utf-8")],
            body,
        ),
    )
    .await;
    assert_eq!(
        err.status(),
        Some(StatusCode::FORBIDDEN),
        "the HTTP status wins"
    );
    let problem = err.problem().expect("a problem document");
    assert_eq!(
        problem.problem_type(),
        Some("https://example.com/probs/out-of-credit")
    );
    assert_eq!(problem.title(), Some("You do not have enough credit."));
    assert_eq!(
        problem.detail(),
        Some("Your current balance is 30, but that costs 50.")
    );
    assert_eq!(problem.instance(), Some("/account/12345/msgs/abc"));
    assert_eq!(problem.status(), Some(400));
    assert_eq!(problem.extension("balance"), Some("30"));
    assert_eq!(problem.extension("accounts"), Some(r#"["/account/12345"]"#));
    assert_eq!(problem.extension("refresh_token"), Some(r#""REDACTED""#));
    for printed in [format!("{err}"), format!("{err:?}")] {
        assert!(!printed.contains("SECRET"), "{printed}");
    }

    // Without the problem media type, a body with the same members is no problem document.
    let plain = fail_with(
        &StatusLayer::new(),
        response(403, &[("content-type", "application/json")], body),
    )
    .await;
    assert!(plain.problem().is_none());

    // A document with hundreds of extension members keeps a bounded few.
    let members: Vec<String> = (0..500).map(|i| format!(r#""m{i:03}":{i}"#)).collect();
    let many = format!("{{{}}}", members.join(","));
    let err = fail_with(
        &StatusLayer::new(),
        response(400, &[("content-type", "application/problem+json")], &many),
    )
    .await;
    let problem = err.problem().unwrap();
    assert_eq!(
        problem.extensions().count(),
        xhttp_core::problem::MAX_EXTENSIONS
    );
    assert_eq!(
        problem.dropped_extensions(),
        500 - xhttp_core::problem::MAX_EXTENSIONS
    );
}

#[tokio::test]
async fn a_403_insufficient_scope_challenge_exposes_the_required_scope() {
    let err = fail_with(
        &StatusLayer::new(),
        response(
            403,
            &[(
                "www-authenticate",
                r#"Bearer realm="api", error="insufficient_scope", scope="a b""#,
            )],
            "",
        ),
    )
    .await;
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert_eq!(err.required_scope(), Some("a b"));

    // Across header lines, after another scheme, as RFC 9110 allows.
    let err = fail_with(
        &StatusLayer::new(),
        response(
            403,
            &[
                ("www-authenticate", r#"Basic realm="x""#),
                (
                    "www-authenticate",
                    r#"Bearer error=insufficient_scope, scope="orders:write""#,
                ),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(err.required_scope(), Some("orders:write"));

    // Another error, or the words inside another scheme's quoted parameter, are no scope.
    for challenge in [
        r#"Bearer error="invalid_token", scope="a""#,
        r#"Basic realm="error=insufficient_scope, scope=a""#,
    ] {
        let err = fail_with(
            &StatusLayer::new(),
            response(403, &[("www-authenticate", challenge)], ""),
        )
        .await;
        assert_eq!(err.required_scope(), None, "{challenge}");
    }
}
