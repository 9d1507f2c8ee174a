//! An axum service that answers from an upstream API through one shared `xhttp::Client`.
//!
//! The upstream is the testkit server: `/api/items/{id}` behind bearer tokens that live
//! 300 ms, refresh tokens that rotate, and reuse detection that revokes a whole session when
//! a retired refresh token comes back. The service logs in once and keeps one client, with
//! the token manager inside, in axum `State`; its handler calls the upstream and answers a
//! failure through `xhttp::axum::UpstreamError`, the facade's documented mapping of
//! `xhttp::Error` to a gateway's statuses.
//!
//! A driver (an `xhttp::Client` without auth, retry or dedupe, so that every call is one
//! request and every failure shows) makes 500 calls in 4 waves of 125, 32 at a time, and
//! sleeps past the token lifetime between waves: each wave after the first starts on an
//! expired token with 32 calls at once, which one single-flight refresh must serve. It then
//! checks that an upstream failure comes back as the mapping says (an upstream 404 is a 404
//! with `{"error":"status",...}`) and prints one JSON line:
//!
//! ```text
//! {"calls":500,"ok":500,"failed":0,"token_calls":4,"reuse_detected":0}
//! ```
//!
//! `token_calls` (the login and every refresh) and `reuse_detected` are the upstream's own
//! counts. The run fails (exit code 1) unless no call failed, no refresh token was reused and
//! the tokens were refreshed during the run (`token_calls` at least 2).
//!
//! Run it with `cargo run --example axum_upstream`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use xhttp::auth::{OAuth2Refresh, Secret, SkipAuth, TokenManager};
use xhttp::axum::UpstreamError;
use xhttp::envelope::Envelope;
use xhttp::status::StatusLayer;
use xhttp::Client;
use xhttp_testkit::{Config, TestServer};

const WAVES: usize = 4;
const CALLS_PER_WAVE: usize = 125;
const CONCURRENCY: usize = 32;
const ACCESS_TTL: Duration = Duration::from_millis(300);
/// The pause between waves: past the token lifetime, so each wave meets an expired token.
const PAUSE: Duration = Duration::from_millis(350);

#[derive(Debug, Deserialize, Serialize)]
struct Item {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct Login {
    access_token: String,
    refresh_token: String,
    expires_in: f64,
}

/// The figures of the run, printed as one JSON line in this order.
#[derive(Serialize)]
struct Figures {
    calls: usize,
    ok: usize,
    failed: usize,
    token_calls: u64,
    reuse_detected: u64,
}

/// The service's `GET /items/{id}`: the upstream's item, or the mapped failure.
async fn item(
    State(upstream): State<Client>,
    Path(id): Path<u64>,
) -> Result<Json<Item>, UpstreamError> {
    let item: Item = upstream
        .get(&format!("/api/items/{id}"))
        .send()
        .await?
        .json()?;
    if item.id != id {
        let mixed_up = format!("asked the upstream for item {id}, got item {}", item.id);
        return Err(xhttp::Error::decode(mixed_up).into());
    }
    Ok(Json(item))
}

/// The service's `GET /upstream-status/{code}`: the upstream's `/status/{code}` passed
/// through the mapping, to show a failure's answer.
async fn upstream_status(
    State(upstream): State<Client>,
    Path(code): Path<u16>,
) -> Result<String, UpstreamError> {
    let response = upstream.get(&format!("/status/{code}")).send().await?;
    Ok(response.text()?)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("axum_upstream: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The whole run; `Ok(false)` when a check failed (each failure is on stderr).
async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let upstream_server = TestServer::start_with(Config {
        access_ttl: ACCESS_TTL,
        ..Config::default()
    })
    .await;
    let upstream = upstream_client(&upstream_server).await?;

    let app = Router::new()
        .route("/items/{id}", get(item))
        .route("/upstream-status/{code}", get(upstream_status))
        .with_state(upstream);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Without auth, retry or dedupe: every call is one request to the service, and a
    // failure of the service is seen as it is.
    let driver = Client::builder()
        .base_url(app_url)
        .without_retry()
        .without_dedupe()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;

    let mut outcomes = Vec::with_capacity(WAVES * CALLS_PER_WAVE);
    for wave in 0..WAVES {
        if wave > 0 {
            tokio::time::sleep(PAUSE).await;
        }
        let ids = (wave * CALLS_PER_WAVE..(wave + 1) * CALLS_PER_WAVE).map(|id| id as u64);
        outcomes.extend(drive(&driver, ids.collect()).await);
    }

    let mut failures = Vec::new();
    if let Err(failure) = mapped_failure(&driver).await {
        failures.push(failure);
    }

    let ok = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let counters = upstream_server.counters();
    let figures = Figures {
        calls: outcomes.len(),
        ok,
        failed: outcomes.len() - ok,
        token_calls: counters.token_calls(),
        reuse_detected: counters.reuse_detected(),
    };
    if let Some(Err(first)) = outcomes.iter().find(|outcome| outcome.is_err()) {
        failures.push(format!(
            "{} calls failed, the first: {first}",
            figures.failed
        ));
    }
    if figures.calls != WAVES * CALLS_PER_WAVE {
        failures.push(format!("{} calls made", figures.calls));
    }
    if figures.reuse_detected != 0 {
        failures.push(format!(
            "the upstream saw {} retired refresh tokens presented",
            figures.reuse_detected
        ));
    }
    if figures.token_calls < 2 {
        failures.push(format!(
            "{} token calls: the tokens were never refreshed",
            figures.token_calls
        ));
    }

    println!("{}", serde_json::to_string(&figures)?);
    for failure in &failures {
        eprintln!("axum_upstream: {failure}");
    }
    Ok(failures.is_empty())
}

/// The service's upstream client: the facade's stack with status errors, the envelope
/// unwrapped, and bearer tokens from a manager that refreshes through the OAuth 2.0 token
/// endpoint; logged in once.
async fn upstream_client(server: &TestServer) -> Result<Client, xhttp::Error> {
    let grant = OAuth2Refresh::new(xhttp::grant_transport(), &server.url("/auth/token"))?;
    let manager = TokenManager::builder(grant).build();
    let client = Client::builder()
        .base_url(server.base_url())
        .pool_max_idle_per_host(CONCURRENCY)
        .status(StatusLayer::new())
        .envelope(Envelope::vben())
        .auth(manager.clone())
        .allow_insecure_loopback()
        .build()?;
    let (user, password) = Config::default().credentials;
    let login: Login = client
        .post("/auth/login")
        .extension(SkipAuth)
        .json(&serde_json::json!({ "username": user, "password": password }))
        .send()
        .await?
        .json()?;
    manager
        .set_tokens(
            Secret::new(login.access_token),
            Some(Secret::new(login.refresh_token)),
            Duration::try_from_secs_f64(login.expires_in).ok(),
        )
        .await?;
    Ok(client)
}

/// Calls the service's `/items/{id}` for each id, [`CONCURRENCY`] at a time; each outcome
/// is `Ok` when the service answered 200 with item `id`.
async fn drive(driver: &Client, ids: Vec<u64>) -> Vec<Result<(), String>> {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        let (driver, ids, next) = (driver.clone(), ids.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while let Some(&id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                outcomes.push(call(&driver, id).await);
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::with_capacity(ids.len());
    for worker in workers {
        match worker.await {
            Ok(part) => outcomes.extend(part),
            Err(err) => outcomes.push(Err(format!("a driver task failed: {err}"))),
        }
    }
    outcomes
}

async fn call(driver: &Client, id: u64) -> Result<(), String> {
    let response = driver
        .get(&format!("/items/{id}"))
        .send()
        .await
        .map_err(|err| format!("item {id}: {err}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().unwrap_or_default();
        return Err(format!("item {id}: the service answered {status} {body}"));
    }
    let item: Item = response.json().map_err(|err| format!("item {id}: {err}"))?;
    if item.id != id || item.name != format!("item {id}") {
        return Err(format!("asked for item {id}, got {item:?}"));
    }
    Ok(())
}

/// An upstream 404 must come back from the service as a 404 with the mapping's JSON body.
async fn mapped_failure(driver: &Client) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Failure {
        error: String,
        message: String,
    }
    let response = driver
        .get("/upstream-status/404")
        .send()
        .await
        .map_err(|err| format!("the mapped failure: {err}"))?;
    let status = response.status();
    let failure: Failure = response
        .json()
        .map_err(|err| format!("the mapped failure's body: {err}"))?;
    if status != 404 || failure.error != "status" || !failure.message.contains("404") {
        return Err(format!(
            "an upstream 404 came back as {status} {{error: {:?}, message: {:?}}}",
            failure.error, failure.message
        ));
    }
    Ok(())
}
