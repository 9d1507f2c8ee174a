//! Response shapes shared by the routes.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

/// The `{code, message, result}` envelope of vue-vben-admin's back ends.
#[derive(Debug, Serialize)]
pub(crate) struct Envelope<'a, T> {
    pub(crate) code: i64,
    pub(crate) message: &'a str,
    pub(crate) result: T,
}

/// 200 with `{"code":0,"message":"ok","result":<result>}`.
pub(crate) fn success<T: Serialize>(result: T) -> Response {
    Json(Envelope {
        code: 0,
        message: "ok",
        result,
    })
    .into_response()
}

/// 200 with a business failure: `{"code":<code>,"message":<message>,"result":null}`.
pub(crate) fn business_failure(code: i64, message: &str) -> Response {
    Json(Envelope {
        code,
        message,
        result: (),
    })
    .into_response()
}

/// `status` with `{"error":{"message":<message>}}`, a shape status layers can read.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    #[derive(Serialize)]
    struct Detail<'a> {
        message: &'a str,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        error: Detail<'a>,
    }
    let body = Body {
        error: Detail { message },
    };
    (status, Json(body)).into_response()
}

/// [`error`] with a `Retry-After` header when `retry_after` is a valid header value.
pub(crate) fn error_with_retry_after(
    status: StatusCode,
    message: &str,
    retry_after: Option<&str>,
) -> Response {
    let mut response = error(status, message);
    if let Some(value) = retry_after.and_then(|value| HeaderValue::from_str(value).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// 200 claiming JSON, with a body cut in the middle of an object.
pub(crate) fn malformed_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r#"{"code":0,"message":"ok","result":{"id":"#,
    )
        .into_response()
}

/// What a handler returns after dropping its connection; hyper never writes it.
pub(crate) fn never_sent() -> Response {
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}
