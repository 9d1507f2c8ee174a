//! The chaos run, bounded for CI: an adversarial upstream (rotating refresh
//! tokens with reuse detection, 300 ms access tokens, a token endpoint that fails 5 times,
//! 503 bursts, resets, hangs, slow bodies) against the whole facade stack at concurrency 64.
//!
//! Every fault is seeded ([`ChaosPlan`]): the same positions fail in every run, whatever the
//! timing. The run makes at least [`CALLS`] calls and goes on until the token endpoint has met
//! its whole script (so all 5 token failures fire), bounded by [`RUN_LIMIT`].
//!
//! The rules, all checked and reported together:
//!
//! - **no hung call**: every call ends within its deadline (10 s) plus [`HUNG_MARGIN`];
//! - **typed failures only where the policy allows**: a failed call is `Status`, `Transport`
//!   or `Timeout` after all 4 attempts (an upstream fault met on every attempt); never
//!   `RefreshFailed` (each token failure is a single 503 that one retry of the refresh
//!   overcomes), `Unauthorized`, `SessionExpired` or `Internal`;
//! - **no refresh-token reuse** (the server's reuse detection);
//! - **no dead-token request**: once a 401 for an access token has come back to the client,
//!   no trip is sent with that token ([`TokenProbe`] at the transport end counts them; the
//!   server revokes live tokens at seeded requests, so the rule is met often). The run is on
//!   one thread, where the probe's count is exact. The server's own count of requests that
//!   arrive with a rejected token is reported too: it includes the requests already on the
//!   wire when a rejection went out, which no client can recall;
//! - **no stalled second**: a call *starts* when a worker hands it to the client; the 64
//!   workers are a closed loop; a whole wall-clock second before the last start is stalled
//!   when fewer calls start in it than [`STALL_SHARE`] of the median second. The demo uses
//!   10%; this test uses 2%, generous because a loaded 2-core CI machine can slow a second
//!   several-fold without anything being stuck, while a stuck client starts no call at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use xhttp::auth::{OAuth2Refresh, Secret, SkipAuth, TokenManager};
use xhttp::envelope::Envelope;
use xhttp::status::StatusLayer;
use xhttp::Client;
use xhttp_testkit::{ChaosPlan, Config, Route, StartLog, TestServer, TokenProbe};

const SEED: u64 = 10;
const CALLS: usize = 3_000;
const CONCURRENCY: usize = 64;
const DEADLINE: Duration = Duration::from_secs(10);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
const HUNG_MARGIN: Duration = Duration::from_secs(5);
const RUN_LIMIT: Duration = Duration::from_secs(90);
const STALL_SHARE: f64 = 0.02;
/// The facade's default policy: 3 retries, so a failure the policy allows made 4 attempts.
const FULL_ATTEMPTS: u32 = 4;

#[derive(Deserialize)]
struct Login {
    access_token: String,
    refresh_token: String,
    expires_in: f64,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    hung: u64,
    failed: BTreeMap<String, u64>,
    short_failures: u64,
    max_latency: Duration,
}

#[tokio::test(flavor = "current_thread")]
async fn chaos_run_keeps_every_rule() {
    let plan = ChaosPlan {
        access_ttl: Duration::from_millis(300),
        ..ChaosPlan::scaled(SEED, CALLS as u64)
    };
    let server = TestServer::start_with(plan.config()).await;
    let grant = OAuth2Refresh::new(xhttp::grant_transport(), &server.url("/auth/token")).unwrap();
    let manager = TokenManager::builder(grant).build();
    let probe = TokenProbe::new();
    let client = Client::builder()
        .transport_layer(probe.clone())
        .base_url(server.base_url())
        .pool_max_idle_per_host(CONCURRENCY)
        .deadline(DEADLINE)
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .status(StatusLayer::new())
        .envelope(Envelope::vben())
        .auth(manager.clone())
        .allow_insecure_loopback()
        .build()
        .unwrap();
    let (user, password) = Config::default().credentials;
    let login: Login = client
        .post("/auth/login")
        .extension(SkipAuth)
        .json(&serde_json::json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    let _ = manager
        .set_tokens(
            Secret::new(login.access_token),
            Some(Secret::new(login.refresh_token)),
            Duration::try_from_secs_f64(login.expires_in).ok(),
        )
        .await;
    plan.apply(&server);
    server.counters().reset();

    let token_script_end = plan.token_script().last_position().unwrap();
    let server = Arc::new(server);
    let next = Arc::new(AtomicUsize::new(0));
    let starts = StartLog::new();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, next, starts, server) =
            (client.clone(), next.clone(), starts.clone(), server.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let script_met = server.counters().hits(Route::Token) > token_script_end;
                if i >= CALLS && script_met {
                    break;
                }
                // Every 20th call repeats its neighbour's id, so dedupe followers meet the
                // faults too.
                let id = if i % 20 == 19 { i - 1 } else { i };
                starts.record();
                let started = std::time::Instant::now();
                let call = async {
                    let response = client.get(&format!("/api/items/{id}")).send().await?;
                    response.json::<serde_json::Value>()
                };
                match tokio::time::timeout(DEADLINE + HUNG_MARGIN, call).await {
                    Ok(Ok(_)) => tally.ok += 1,
                    Ok(Err(err)) => {
                        let kind = format!("{:?}", err.kind());
                        *tally.failed.entry(kind).or_default() += 1;
                        if err.attempts() < FULL_ATTEMPTS {
                            tally.short_failures += 1;
                        }
                    }
                    Err(_) => tally.hung += 1,
                }
                tally.max_latency = tally.max_latency.max(started.elapsed());
            }
            tally
        }));
    }
    let all = async {
        let mut total = Tally::default();
        for worker in workers {
            let part = worker.await.unwrap();
            total.ok += part.ok;
            total.hung += part.hung;
            total.short_failures += part.short_failures;
            total.max_latency = total.max_latency.max(part.max_latency);
            for (kind, n) in part.failed {
                *total.failed.entry(kind).or_default() += n;
            }
        }
        total
    };
    let tally = tokio::time::timeout(RUN_LIMIT, all)
        .await
        .expect("the chaos run did not end within its bounded time: calls hang");

    let counters = server.counters();
    let stalled = starts.stalled_seconds(STALL_SHARE);
    let revoked = counters.revoked_tokens();
    let figures = format!(
        "calls {} ok {} failed {:?} short-failures {} hung {} max-latency {:?} token-calls {} \
         token-hits {} reuse {} revoked {} rejections-seen {} dead-token {} rejected-arrivals {} \
         stalled {} of {:?} scripted {} faults {}",
        starts.starts(),
        tally.ok,
        tally.failed,
        tally.short_failures,
        tally.hung,
        tally.max_latency,
        counters.token_calls(),
        counters.hits(Route::Token),
        counters.reuse_detected(),
        revoked,
        probe.rejections_seen(),
        probe.dead_token_requests(),
        counters.rejected_token_arrivals(),
        stalled,
        starts.per_second(),
        counters.scripted_faults(),
        counters.faults_injected(),
    );
    eprintln!("chaos: {figures}");

    let mut breaches = Vec::new();
    if counters.hits(Route::Token) <= token_script_end {
        breaches.push("not every scripted token failure fired".to_owned());
    }
    if tally.hung > 0 {
        breaches.push(format!("{} calls hung", tally.hung));
    }
    for (kind, n) in &tally.failed {
        let allowed = kind == "Status" || kind == "Transport" || kind.starts_with("Timeout");
        if !allowed {
            breaches.push(format!("{n} calls failed with {kind}"));
        }
    }
    if tally.short_failures > 0 {
        breaches.push(format!(
            "{} failed calls made fewer than {FULL_ATTEMPTS} attempts",
            tally.short_failures
        ));
    }
    if counters.reuse_detected() > 0 {
        breaches.push(format!(
            "{} refresh tokens reused",
            counters.reuse_detected()
        ));
    }
    if revoked == 0 || probe.rejections_seen() < revoked {
        breaches.push(format!(
            "the server revoked {revoked} live tokens but the client saw {} rejections",
            probe.rejections_seen()
        ));
    }
    if probe.dead_token_requests() > 0 {
        breaches.push(format!(
            "{} requests sent with a token the client had seen rejected",
            probe.dead_token_requests()
        ));
    }
    if stalled > 0 {
        breaches.push(format!("{stalled} stalled seconds"));
    }
    assert!(
        breaches.is_empty(),
        "chaos rules broken: {breaches:?}\n{figures}"
    );
}
