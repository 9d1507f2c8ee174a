//! Every xhttp layer over a raw hyper-util client, composed with `ServiceBuilder` and the
//! public [`Stack`], against the testkit: access tokens that live 300 ms (rotating refresh
//! tokens with reuse detection), 5% of API requests answered 503, and every tenth call a
//! duplicate of its neighbour, often still in flight. It makes at least 2 000 calls, and goes
//! on until the tokens have been refreshed 3 times.
//!
//! ```sh
//! cargo run --example compose_hyper
//! ```
//!
//! It ends by printing one JSON line of what it observed:
//! `{"calls","ok","failed","token_calls","reuse_detected","coalesced","retries"}`, and exits 1
//! when a call failed other than after all its retries on 503s, or a refresh token was reused.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tower::{ServiceBuilder, ServiceExt};
use xhttp::auth::{AuthLayer, OAuth2Refresh, Secret, TokenManager};
use xhttp::dedupe::DedupeLayer;
use xhttp::envelope::Envelope;
use xhttp::refresh::RefreshLayer;
use xhttp::retry::RetryPolicy;
use xhttp::status::StatusLayer;
use xhttp::{Error, ErrorKind, Origin, Stack};
use xhttp_testkit::{Config, Faults, Route, TestServer};

/// At least this many calls, and on until tokens have expired and been refreshed
/// [`REFRESHES`] times (a fast machine makes 2 000 calls within one token's life).
const CALLS: usize = 2_000;
const REFRESHES: u64 = 3;
/// The run stops here whatever happened (a bound, not a target).
const MOST_CALLS: usize = 200_000;
const CONCURRENCY: usize = 32;

#[derive(Deserialize)]
struct Item {
    id: u64,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = TestServer::start_with(Config {
        access_ttl: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let login = server.login();
    let grant = OAuth2Refresh::new(xhttp::grant_transport(), &server.url("/auth/token"))?;
    let manager = TokenManager::builder(grant).build();
    manager
        .set_tokens(
            Secret::new(login.access_token),
            Some(Secret::new(login.refresh_token)),
            Some(Duration::from_millis(300)),
        )
        .await?;
    server.set_faults(
        Route::Items,
        Faults {
            fail_rate: 0.05,
            ..Faults::default()
        },
    );

    // The composition: the user's own hyper client, the whole stack on top.
    let retries = Arc::new(AtomicU64::new(0));
    let counted = retries.clone();
    let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let origin = Origin::parse(&server.base_url())?;
    let stack = Stack::builder()
        .auth(AuthLayer::new(manager.clone(), [origin]).allow_insecure_loopback(true))
        .refresh(RefreshLayer::new(manager))
        .retry(
            RetryPolicy::builder()
                .on_retry(move |_, _, _| {
                    counted.fetch_add(1, Ordering::Relaxed);
                })
                .build()?,
        )
        .dedupe(DedupeLayer::builder())
        .envelope(Envelope::vben())
        .status(StatusLayer::new())
        .build()?;
    let service = ServiceBuilder::new().layer(stack.clone()).service(hyper);

    let server = Arc::new(server);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (service, next, server) = (service.clone(), next.clone(), server.clone());
            let base = server.base_url();
            tokio::spawn(async move {
                let (mut ok, mut failed, mut unexpected) = (0u64, 0u64, Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let refreshed = server.counters().token_calls() >= REFRESHES;
                    if (i >= CALLS && refreshed) || i >= MOST_CALLS {
                        break;
                    }
                    // Every tenth call asks for its neighbour's item: a duplicate in flight.
                    let id = if i % 10 == 9 { i - 1 } else { i } as u64;
                    let request = http::Request::get(format!("{base}/api/items/{id}"))
                        .body(Full::default())
                        .map_err(|e| Error::invalid_request(e.to_string()));
                    let outcome = match request {
                        Ok(request) => service.clone().oneshot(request).await,
                        Err(err) => Err(err),
                    };
                    match outcome.and_then(|response| {
                        serde_json::from_slice::<Item>(response.body())
                            .map_err(|e| Error::decode(e.to_string()))
                    }) {
                        Ok(item) if item.id == id => ok += 1,
                        Ok(item) => unexpected.push(format!("asked {id}, got {}", item.id)),
                        // All attempts met a 503: what the retry policy says may happen.
                        Err(err) if err.kind() == ErrorKind::Status && err.attempts() == 4 => {
                            failed += 1
                        }
                        Err(err) => unexpected.push(err.to_string()),
                    }
                }
                (ok, failed, unexpected)
            })
        })
        .collect();
    let (mut ok, mut failed, mut unexpected) = (0u64, 0u64, Vec::new());
    for worker in workers {
        let (o, f, u) = worker
            .await
            .map_err(|e| Error::new(ErrorKind::Internal).with_message(e.to_string()))?;
        ok += o;
        failed += f;
        unexpected.extend(u);
    }
    let counters = server.counters();
    let calls = ok + failed + unexpected.len() as u64;
    let coalesced = stack.dedupe().map_or(0, |d| d.stats().coalesced);
    println!(
        "{}",
        serde_json::json!({
            "calls": calls,
            "ok": ok,
            "failed": failed + unexpected.len() as u64,
            "token_calls": counters.token_calls(),
            "reuse_detected": counters.reuse_detected(),
            "coalesced": coalesced,
            "retries": retries.load(Ordering::Relaxed),
        })
    );
    for problem in &unexpected {
        eprintln!("compose_hyper: unexpected outcome: {problem}");
    }
    if !unexpected.is_empty() || counters.reuse_detected() > 0 || counters.token_calls() < REFRESHES
    {
        eprintln!("compose_hyper: a check failed");
        std::process::exit(1);
    }
    Ok(())
}
