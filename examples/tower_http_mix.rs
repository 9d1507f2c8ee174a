//! tower-http inside an `xhttp::Client`: gzip decompression at the transport end.
//!
//! tower-http's `DecompressionLayer` goes in with `ClientBuilder::transport_layer`, below
//! collect: it asks for gzip on every trip and decodes the body as it streams from the wire,
//! so collect, the body limit and `Response::json` see the plain JSON. A second, inner
//! transport layer marks each response that arrived gzip-encoded, before decoding removes
//! `Content-Encoding`, so every call can tell how its answer travelled.
//!
//! The upstream is the testkit's `GET /public/gzip/{id}`, which compresses when asked and
//! counts its compressed answers. The example makes 200 calls, 40 one after another and 160
//! at once, checks that each body decodes to the item it asked for, and prints one JSON line:
//!
//! ```text
//! {"calls":200,"ok":200,"decompressed":200}
//! ```
//!
//! `decompressed` is the server's count of gzip answers; the run fails (exit code 1) unless
//! every call is ok, each one's answer came gzip-encoded and was decoded, and the server's
//! count equals the calls'.
//!
//! Run it with `cargo run --example tower_http_mix`.

use std::process::ExitCode;

use http::header::CONTENT_ENCODING;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tower::layer::layer_fn;
use tower::ServiceExt as _;
use tower_http::decompression::DecompressionLayer;
use xhttp::{BoxTransport, Client, TransportBody};
use xhttp_testkit::{Route, TestServer};

const CALLS: u64 = 200;
/// Calls made one after another (on one pooled connection) before the rest start at once.
const SEQUENTIAL: u64 = 40;

/// Marks a response whose body came gzip-encoded from the wire.
#[derive(Debug, Clone, Copy)]
struct GzipOnTheWire;

#[derive(Deserialize)]
struct Envelope {
    code: i64,
    result: Item,
}

#[derive(Deserialize)]
struct Item {
    id: u64,
    name: String,
}

/// The figures of the run, printed as one JSON line in this order.
#[derive(Serialize)]
struct Figures {
    calls: u64,
    ok: u64,
    decompressed: u64,
}

/// What one call saw: whether its answer came gzip-encoded, or why it failed.
type Outcome = Result<bool, String>;

#[tokio::main]
async fn main() -> ExitCode {
    let server = TestServer::start().await;
    let client = match client(&server) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("tower_http_mix: the client did not build: {err}");
            return ExitCode::FAILURE;
        }
    };

    let mut outcomes = Vec::with_capacity(CALLS as usize);
    for id in 0..SEQUENTIAL {
        outcomes.push(call(&client, id).await);
    }
    // Every id is distinct, so dedupe never coalesces two calls into one trip: each call is
    // one request the server answers, and the counts can be compared one for one.
    let mut at_once = JoinSet::new();
    for id in SEQUENTIAL..CALLS {
        let client = client.clone();
        at_once.spawn(async move { call(&client, id).await });
    }
    while let Some(joined) = at_once.join_next().await {
        outcomes.push(joined.unwrap_or_else(|err| Err(format!("the call's task failed: {err}"))));
    }

    let ok = outcomes.iter().filter(|outcome| outcome.is_ok()).count() as u64;
    let gzip_seen = outcomes
        .iter()
        .filter(|outcome| **outcome == Ok(true))
        .count() as u64;
    let counters = server.counters();
    let figures = Figures {
        calls: outcomes.len() as u64,
        ok,
        decompressed: counters.gzip_responses(),
    };

    let mut failures = Vec::new();
    if let Some(Err(first)) = outcomes.iter().find(|outcome| outcome.is_err()) {
        failures.push(format!("{} calls failed, the first: {first}", CALLS - ok));
    }
    if figures.calls != CALLS {
        failures.push(format!("{} calls made, not {CALLS}", figures.calls));
    }
    if gzip_seen != ok {
        failures.push(format!(
            "{gzip_seen} of {ok} ok calls had their answer gzip-encoded on the wire"
        ));
    }
    if figures.decompressed != gzip_seen {
        failures.push(format!(
            "the server compressed {} answers, the client decoded {gzip_seen}",
            figures.decompressed
        ));
    }
    let trips = counters.hits(Route::Gzip);
    if trips != CALLS {
        failures.push(format!(
            "{trips} requests reached the server for {CALLS} calls"
        ));
    }

    match serde_json::to_string(&figures) {
        Ok(line) => println!("{line}"),
        Err(err) => failures.push(format!("the figures did not serialise: {err}")),
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for failure in failures {
            eprintln!("tower_http_mix: {failure}");
        }
        ExitCode::FAILURE
    }
}

/// The facade's default stack with gzip decompression at the transport end.
fn client(server: &TestServer) -> Result<Client, xhttp::Error> {
    // Inner to the decompression layer: it sees the response as it left the server.
    let mark_gzip = layer_fn(|inner: BoxTransport| {
        inner.map_response(|mut response: http::Response<TransportBody>| {
            if response
                .headers()
                .get(CONTENT_ENCODING)
                .is_some_and(|coding| coding == "gzip")
            {
                response.extensions_mut().insert(GzipOnTheWire);
            }
            response
        })
    });
    Client::builder()
        .base_url(server.base_url())
        // The first layer added is the outermost: decompression wraps the marker.
        .transport_layer(DecompressionLayer::new())
        .transport_layer(mark_gzip)
        .build()
}

/// One call of `GET /public/gzip/{id}`: the body must be the plain JSON of item `id`.
async fn call(client: &Client, id: u64) -> Outcome {
    let response = client
        .get(&format!("/public/gzip/{id}"))
        .send()
        .await
        .map_err(|err| err.to_string())?;
    if !response.status().is_success() {
        return Err(format!("item {id}: status {}", response.status()));
    }
    if let Some(coding) = response.headers().get(CONTENT_ENCODING) {
        return Err(format!("item {id}: still encoded as {coding:?}"));
    }
    let envelope: Envelope = response.json().map_err(|err| format!("item {id}: {err}"))?;
    let item = envelope.result;
    if envelope.code != 0 || item.id != id || item.name != format!("item {id}") {
        return Err(format!(
            "asked for item {id}, got code {} and item {} named {:?}",
            envelope.code, item.id, item.name
        ));
    }
    Ok(response.extensions().get::<GzipOnTheWire>().is_some())
}
