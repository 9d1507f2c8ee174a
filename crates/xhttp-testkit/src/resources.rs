//! The resources: protected and public items (plain and gzip-compressed), echo, bodies of
//! every shape, the gate, arbitrary statuses, slowness and redirects.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde::{Deserialize, Serialize};
use tower_http::compression::predicate::SizeAbove;
use tower_http::compression::CompressionLayer;

use crate::bodies::{Paused, Repeat};
use crate::connection::ConnectionHandle;
use crate::responses;
use crate::server::Shared;

#[derive(Debug, Serialize)]
struct Item {
    id: u64,
    name: String,
}

/// `GET /api/items/{id}` and `GET /public/items/{id}`.
pub(crate) async fn item(Path(id): Path<u64>) -> Response {
    responses::success(Item {
        id,
        name: format!("item {id}"),
    })
}

/// `GET /public/gzip/{id}`: [`item`], gzip-compressed when the request accepts gzip.
///
/// tower-http's compression reads `Accept-Encoding` (quality values included, so
/// `gzip;q=0` is a refusal) and adds `Vary: accept-encoding`; every answer is compressed
/// whatever its size, so that a client sees gzip on each call that asked for it.
pub(crate) fn gzip_item(shared: Arc<Shared>) -> MethodRouter<Arc<Shared>> {
    let compression = CompressionLayer::new()
        .gzip(true)
        .compress_when(SizeAbove::new(0));
    get(item)
        .layer(compression)
        .layer(middleware::from_fn_with_state(shared, count_gzip))
}

/// Counts the answers that left compressed.
async fn count_gzip(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.headers().get(header::CONTENT_ENCODING) == Some(&HeaderValue::from_static("gzip")) {
        shared.counters.gzipped();
    }
    response
}

/// `GET /api/me`.
pub(crate) async fn me(State(shared): State<Arc<Shared>>) -> Response {
    #[derive(Serialize)]
    struct Me<'a> {
        user: &'a str,
    }
    responses::success(Me {
        user: &shared.config.credentials.0,
    })
}

/// `POST /api/items`: the JSON body, byte for byte, as the envelope's result.
pub(crate) async fn create_item(body: Bytes) -> Response {
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return responses::error(StatusCode::BAD_REQUEST, "the body must be JSON");
    }
    let mut envelope = Vec::with_capacity(body.len() + 40);
    envelope.extend_from_slice(br#"{"code":0,"message":"ok","result":"#);
    envelope.extend_from_slice(&body);
    envelope.push(b'}');
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        envelope,
    )
        .into_response()
}

/// `/echo` and `/echo/{*rest}`: the request as the server saw it.
pub(crate) async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut seen = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<_> = headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()))
            .collect();
        seen.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    axum::Json(serde_json::json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query().unwrap_or_default(),
        "headers": seen,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

/// `POST /reflect`: answers with the request's body as it is, under the content type named
/// by the request's `x-reflect-content-type` header (default `application/json`) and the
/// status named by `x-reflect-status` (default 200), so a test can make the server answer any
/// envelope dialect, any broken body, or any failure body.
pub(crate) async fn reflect(headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get("x-reflect-content-type")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    let status = headers
        .get("x-reflect-status")
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .and_then(final_status)
        .unwrap_or(StatusCode::OK);
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `POST /upload`: reads the body as it comes, without keeping it, and tells its length.
pub(crate) async fn upload(body: Body) -> Response {
    use http_body::Body as _;

    let mut body = body;
    let mut received = 0u64;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => received += frame.data_ref().map_or(0, |data| data.len() as u64),
            Err(_) => return responses::error(StatusCode::BAD_REQUEST, "the upload broke off"),
        }
    }
    #[derive(Serialize)]
    struct Received {
        bytes: u64,
    }
    responses::success(Received { bytes: received })
}

/// `GET /bytes/{n}`: `n` bytes of `x` with a `content-length`.
pub(crate) async fn bytes_sized(State(shared): State<Arc<Shared>>, Path(n): Path<u64>) -> Response {
    let body = Repeat::new(n, true, shared.counters.clone());
    (
        [
            (header::CONTENT_LENGTH, HeaderValue::from(n)),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
        ],
        Body::new(body),
    )
        .into_response()
}

/// `GET /bytes-chunked/{n}`: `n` bytes of `x` of undeclared length.
pub(crate) async fn bytes_chunked(
    State(shared): State<Arc<Shared>>,
    Path(n): Path<u64>,
) -> Response {
    let body = Repeat::new(n, false, shared.counters.clone());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        Body::new(body),
    )
        .into_response()
}

/// `GET /close-mid-body`: promises 1000 bytes, sends 10, then breaks the connection.
pub(crate) async fn close_mid_body() -> Response {
    let body = Paused::broken(Bytes::from_static(b"xxxxxxxxxx"));
    (
        [(header::CONTENT_LENGTH, HeaderValue::from(1000u64))],
        Body::new(body),
    )
        .into_response()
}

/// `GET /gate/{id}`: waits for [`Gate::open`](crate::Gate::open).
pub(crate) async fn gate(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    ConnectInfo(connection): ConnectInfo<ConnectionHandle>,
) -> Response {
    #[derive(Serialize)]
    struct Passed {
        id: u64,
    }
    tokio::select! {
        () = shared.gate.pass() => responses::success(Passed { id }),
        // A held request must not keep a dropped server's connection alive.
        () = shared.stopped() => {
            connection.drop_connection();
            responses::never_sent()
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct StatusQuery {
    retry_after: Option<String>,
}

/// The final status `code` names, if it names one.
fn final_status(code: u16) -> Option<StatusCode> {
    StatusCode::from_u16(code)
        .ok()
        .filter(|status| (200..600).contains(&status.as_u16()))
}

fn not_a_final_status() -> Response {
    responses::error(StatusCode::BAD_REQUEST, "the status must be in 200..=599")
}

/// `/status/{code}`: that status, with `Retry-After` when `?retry_after=` is given.
pub(crate) async fn status(
    Path(code): Path<u16>,
    Query(query): Query<StatusQuery>,
    body: axum::body::Body,
) -> Response {
    // The request body is read to its end first, as a server that parses its input does:
    // answering before an upload is in, and closing, races the client's writes, and the
    // client would see a broken connection instead of the status.
    let _ = axum::body::to_bytes(body, STATUS_BODY_LIMIT).await;
    let Some(status) = final_status(code) else {
        return not_a_final_status();
    };
    responses::error_with_retry_after(
        status,
        &format!("status {code}"),
        query.retry_after.as_deref(),
    )
}

/// The most of a request body `/status/{code}` reads before answering.
const STATUS_BODY_LIMIT: usize = 1024 * 1024;

/// `GET /problem/{code}`: that status with an RFC 9457 problem whose `status` member says 400
/// whatever the HTTP status, so that a client can show that the HTTP status wins.
pub(crate) async fn problem(Path(code): Path<u16>) -> Response {
    let Some(status) = final_status(code) else {
        return not_a_final_status();
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )],
        r#"{"type":"https://example.com/probs/x","title":"Unprocessable","status":400,"detail":"name must not be empty"}"#,
    )
        .into_response()
}

/// `GET /html-error/{code}`: that status with an HTML error page, as a proxy or a web server
/// in front of an API answers.
pub(crate) async fn html_error(Path(code): Path<u16>) -> Response {
    let Some(status) = final_status(code) else {
        return not_a_final_status();
    };
    let page = format!(
        "<!DOCTYPE html>\n<html><head><title>{status}</title></head>\n\
         <body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>\n"
    );
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page,
    )
        .into_response()
}

/// `GET /envelope-error/{code}`: that status with the envelope
/// `{"code":<code>,"message":"envelope says <code>","result":null}`.
pub(crate) async fn envelope_error(Path(code): Path<u16>) -> Response {
    let Some(status) = final_status(code) else {
        return not_a_final_status();
    };
    let mut response =
        responses::business_failure(i64::from(code), &format!("envelope says {code}"));
    *response.status_mut() = status;
    response
}

#[derive(Debug, Serialize)]
struct Slept {
    ms: u64,
}

/// `GET /slow/{ms}`: answers after `ms` milliseconds on tokio's clock.
pub(crate) async fn slow(Path(ms): Path<u64>) -> Response {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    responses::success(Slept { ms })
}

/// `GET /slow-body/{ms}`: sends the head and half the body at once, the rest after `ms`.
pub(crate) async fn slow_body(Path(ms): Path<u64>) -> Response {
    let mut body = serde_json::to_vec(&serde_json::json!({
        "code": 0, "message": "ok", "result": Slept { ms },
    }))
    .unwrap_or_default();
    let rest = Bytes::from(body.split_off(body.len() / 2));
    let body = Paused::slow(Bytes::from(body), Duration::from_millis(ms), rest);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::new(body),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct RedirectQuery {
    to: String,
    status: Option<u16>,
}

/// `/redirect?to=<url>&status=<3xx>`: a redirect (default 302) to any URL, another origin
/// included, for tests of credentials across redirects.
pub(crate) async fn redirect(Query(query): Query<RedirectQuery>) -> Response {
    let status = StatusCode::from_u16(query.status.unwrap_or(302))
        .ok()
        .filter(StatusCode::is_redirection);
    let location = HeaderValue::try_from(query.to).ok();
    match (status, location) {
        (Some(status), Some(location)) => (status, [(header::LOCATION, location)]).into_response(),
        _ => responses::error(
            StatusCode::BAD_REQUEST,
            "`to` must be a header value and `status` a 3xx status",
        ),
    }
}
