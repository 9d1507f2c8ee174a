//! One run of the demo: the server, the client, the workers, the summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use xhttp::auth::{OAuth2Refresh, Secret, SkipAuth, TokenManager};
use xhttp::envelope::Envelope;
use xhttp::retry::RetryPolicy;
use xhttp::status::StatusLayer;
use xhttp::{Client, Error};
use xhttp_testkit::{ChaosPlan, Config, Faults, Route, StartLog, TestServer, TokenProbe};

/// The facade's default deadline (30 s) plus a 2 s margin: a request not ended by then hung.
const HUNG_AFTER: Duration = Duration::from_secs(32);

/// Retries of the facade's default policy: a failure it allows made this many attempts.
const FULL_ATTEMPTS: u32 = 4;

impl Summary {
    /// The rules of the `--chaos` run that this run broke; empty when it kept them all.
    ///
    /// No hung call; failures only of the kinds the retry policy gives up with after all
    /// its attempts on an upstream fault (`Status`, `Transport`, `Timeout`), so never
    /// `RefreshFailed`, `Unauthorized`, `SessionExpired` or `Internal`; no refresh-token
    /// reuse; no dead-token request; no stalled second.
    pub(crate) fn chaos_breaches(&self) -> Vec<String> {
        let mut breaches = Vec::new();
        if self.hung_calls > 0 {
            breaches.push(format!("{} calls hung", self.hung_calls));
        }
        for (kind, n) in &self.failed_by_kind {
            let allowed = kind == "Status" || kind == "Transport" || kind.starts_with("Timeout");
            if !allowed {
                breaches.push(format!("{n} calls failed with {kind}"));
            }
        }
        let short: u64 = self
            .failed_by_attempts
            .iter()
            .filter(|(attempts, _)| **attempts < FULL_ATTEMPTS)
            .map(|(_, n)| n)
            .sum();
        if short > 0 {
            breaches.push(format!(
                "{short} failed calls made fewer than {FULL_ATTEMPTS} attempts"
            ));
        }
        if self.reuse_detected > 0 {
            breaches.push(format!("{} refresh tokens reused", self.reuse_detected));
        }
        if self.dead_token_requests > 0 {
            breaches.push(format!(
                "{} requests sent with a token the client had seen rejected",
                self.dead_token_requests
            ));
        }
        if self.stalled_seconds > 0 {
            breaches.push(format!("{} stalled seconds", self.stalled_seconds));
        }
        breaches
    }
}

/// A stalled second has fewer call starts than this share of the median second.
const STALL_SHARE: f64 = 0.1;

use crate::args::Args;

/// What the run measured; `--json` prints exactly this object.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// Logical requests made.
    pub(crate) requests: usize,
    /// Requests that ended in a 2xx response with a success envelope.
    pub(crate) ok: u64,
    /// Requests that ended in an error.
    pub(crate) failed: u64,
    /// Failed requests by error kind.
    pub(crate) failed_by_kind: BTreeMap<String, u64>,
    /// Failed requests by the number of attempts each made.
    pub(crate) failed_by_attempts: BTreeMap<u32, u64>,
    /// Calls that reached the server's token endpoints (login and refresh).
    pub(crate) token_calls: u64,
    /// Refresh tokens presented twice, as the server detected them.
    pub(crate) reuse_detected: u64,
    /// Token refreshes the client's token manager made (proactive and after a rejection).
    pub(crate) refreshes: u64,
    /// Requests the server rejected for their token (each one was refreshed and replayed).
    pub(crate) rejected_tokens: u64,
    /// Attempts beyond the first, made by the retry layer.
    pub(crate) retries: u64,
    /// Requests that shared another caller's trip instead of making their own.
    pub(crate) coalesced: u64,
    /// Requests that reached the server's API route.
    pub(crate) upstream_requests: u64,
    /// Faults the server injected.
    pub(crate) faults_injected: u64,
    /// Trips the client sent with an access token after a 401 for that token had come back
    /// to it (`TokenProbe` at the transport end): the client's defects, 0 when it keeps the
    /// dead-token rule.
    pub(crate) dead_token_requests: u64,
    /// API requests that arrived bearing an access token the server had already rejected:
    /// `dead_token_requests` plus the requests already on the wire when a rejection went
    /// out, which no client can recall.
    pub(crate) rejected_token_arrivals: u64,
    /// Live access tokens the server revoked (the `--chaos` run's scripted revocations).
    pub(crate) revoked_tokens: u64,
    /// Seconds of the request phase in which fewer calls started than 10% of the median
    /// second (see `StartLog::stalled_seconds`).
    pub(crate) stalled_seconds: u64,
    /// Requests that had not ended 2 s after the facade's 30 s deadline (each also counted
    /// in `failed_by_kind` as `Hung`): the library bounds every call, so this stays 0.
    pub(crate) hung_calls: u64,
    /// Most API requests the server held at once.
    pub(crate) peak_concurrency: u64,
    /// Median latency of a logical request, microseconds.
    pub(crate) p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub(crate) p99_us: u64,
    /// Wall time of the request phase, milliseconds.
    pub(crate) elapsed_ms: u64,
    /// Logical requests per second.
    pub(crate) throughput_rps: u64,
}

#[derive(Deserialize)]
struct Login {
    access_token: String,
    refresh_token: String,
    expires_in: f64,
}

#[derive(Deserialize)]
struct Item {
    id: u64,
}

pub(crate) async fn run(args: &Args) -> Result<Summary, Error> {
    let plan = args
        .chaos
        .then(|| ChaosPlan::scaled(args.seed, args.requests as u64));
    let server = match &plan {
        Some(plan) => TestServer::start_with(plan.config()).await,
        None => {
            let server = TestServer::start_with(Config {
                access_ttl: args.token_ttl,
                seed: args.seed,
                ..Config::default()
            })
            .await;
            server.set_faults(
                Route::Items,
                Faults {
                    fail_rate: args.fail_rate,
                    ..Faults::default()
                },
            );
            server
        }
    };

    let builder = || {
        let builder = Client::builder()
            .base_url(server.base_url())
            .pool_max_idle_per_host(args.concurrency);
        if args.http2 {
            builder.http2_prior_knowledge()
        } else {
            builder
        }
    };
    // The whole stack: the token manager refreshes through the OAuth 2.0 token endpoint with
    // rotating refresh tokens; the client sends its token and refreshes on a 401.
    let grant = OAuth2Refresh::new(xhttp::grant_transport(), &server.url("/auth/token"))?;
    let manager = TokenManager::builder(grant).build();
    let retries = Arc::new(AtomicU64::new(0));
    let policy = RetryPolicy::builder()
        .on_retry({
            let retries = retries.clone();
            move |_, _, _| {
                retries.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()?;
    // The probe sees every trip as sent: it counts those that carry a token already seen
    // rejected.
    let probe = TokenProbe::new();
    let client = builder()
        .transport_layer(probe.clone())
        .status(StatusLayer::new())
        .envelope(Envelope::vben())
        .retry(policy)
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
    let lifetime = Duration::try_from_secs_f64(login.expires_in).ok();
    manager
        .set_tokens(
            Secret::new(login.access_token),
            Some(Secret::new(login.refresh_token)),
            lifetime,
        )
        .await?;
    let first_generation = manager.generation();
    // The faults start with the calls, so the login above is never scripted.
    if let Some(plan) = &plan {
        plan.apply(&server);
    }

    let ids = Arc::new(request_ids(args));
    let next = Arc::new(AtomicUsize::new(0));
    let progress = progress_bar(args);
    let started = Instant::now();
    let starts = StartLog::new();
    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency.min(args.requests.max(1)) {
        let (client, ids, next, progress, starts) = (
            client.clone(),
            ids.clone(),
            next.clone(),
            progress.clone(),
            starts.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                let start = Instant::now();
                starts.record();
                match tokio::time::timeout(HUNG_AFTER, call(&client, *id)).await {
                    Ok(outcome) => tally.record(start.elapsed(), outcome),
                    Err(_) => tally.hung(start.elapsed()),
                }
                progress.inc(1);
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for worker in workers {
        match worker.await {
            Ok(part) => tally.merge(part),
            Err(err) => {
                return Err(Error::new(xhttp::ErrorKind::Internal)
                    .with_message(format!("a demo worker failed: {err}")))
            }
        }
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let counters = server.counters();
    tally.latencies_us.sort_unstable();
    if args.chaos {
        for (kind, message) in &tally.first_errors {
            eprintln!("xhttp-demo: first {kind} failure: {message}");
        }
    }
    Ok(Summary {
        requests: args.requests,
        ok: tally.ok,
        failed: tally.failed_by_kind.values().sum(),
        failed_by_kind: tally.failed_by_kind,
        failed_by_attempts: tally.failed_by_attempts,
        token_calls: counters.token_calls(),
        reuse_detected: counters.reuse_detected(),
        refreshes: manager.generation() - first_generation,
        rejected_tokens: counters.unauthorized(),
        retries: retries.load(Ordering::Relaxed),
        coalesced: client.dedupe_stats().coalesced,
        upstream_requests: counters.hits(Route::Items),
        faults_injected: counters.faults_injected(),
        dead_token_requests: probe.dead_token_requests(),
        rejected_token_arrivals: counters.rejected_token_arrivals(),
        revoked_tokens: counters.revoked_tokens(),
        stalled_seconds: starts.stalled_seconds(STALL_SHARE),
        hung_calls: tally.hung,
        peak_concurrency: counters.peak_concurrency(),
        p50_us: percentile(&tally.latencies_us, 0.50),
        p99_us: percentile(&tally.latencies_us, 0.99),
        elapsed_ms: elapsed.as_millis() as u64,
        throughput_rps: (args.requests as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
    })
}

/// One logical request; the error when it failed. The status and envelope layers turn a
/// failure status or a business code into a typed error with the attempt count; a success's
/// body is the envelope's data.
async fn call(client: &Client, id: u64) -> Result<(), Error> {
    let response = client.get(&format!("/api/items/{id}")).send().await?;
    let item: Item = response.json()?;
    if item.id == id {
        Ok(())
    } else {
        Err(Error::decode(format!(
            "asked for item {id}, got item {}",
            item.id
        )))
    }
}

fn kind_name(err: &Error) -> String {
    format!("{:?}", err.kind())
}

/// The id each request asks for; a duplicate repeats the id of one of the requests started
/// just before it, which is still in flight at the configured concurrency.
fn request_ids(args: &Args) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let draw = mix(args.seed, i as u64);
        let duplicate = i > 0 && unit(draw) < args.duplicate_rate;
        let id = if duplicate {
            let window = i.min(args.concurrency.saturating_sub(1).max(1));
            ids[i - 1 - (mix(draw, 1) as usize % window)]
        } else {
            i as u64
        };
        ids.push(id);
    }
    ids
}

/// SplitMix64's finaliser over (seed, index): a deterministic draw per request.
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(word: u64) -> f64 {
    (word >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Default)]
struct Tally {
    ok: u64,
    hung: u64,
    failed_by_kind: BTreeMap<String, u64>,
    failed_by_attempts: BTreeMap<u32, u64>,
    latencies_us: Vec<u64>,
    /// The first error of each kind, as it displays (masked), for the report on stderr.
    first_errors: BTreeMap<String, String>,
}

impl Tally {
    fn record(&mut self, latency: Duration, outcome: Result<(), Error>) {
        self.latencies_us.push(latency.as_micros() as u64);
        match outcome {
            Ok(()) => self.ok += 1,
            Err(err) => {
                self.first_errors
                    .entry(kind_name(&err))
                    .or_insert_with(|| err.to_string());
                *self.failed_by_kind.entry(kind_name(&err)).or_default() += 1;
                *self
                    .failed_by_attempts
                    .entry(err.attempts().max(1))
                    .or_default() += 1;
            }
        }
    }

    /// A request that had not ended after [`HUNG_AFTER`]: counted as the kind `Hung`.
    fn hung(&mut self, latency: Duration) {
        self.latencies_us.push(latency.as_micros() as u64);
        self.hung += 1;
        *self.failed_by_kind.entry("Hung".to_owned()).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.hung += other.hung;
        for (kind, n) in other.failed_by_kind {
            *self.failed_by_kind.entry(kind).or_default() += n;
        }
        for (attempts, n) in other.failed_by_attempts {
            *self.failed_by_attempts.entry(attempts).or_default() += n;
        }
        self.latencies_us.extend(other.latencies_us);
        for (kind, message) in other.first_errors {
            self.first_errors.entry(kind).or_insert(message);
        }
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn progress_bar(args: &Args) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(args.requests as u64),
        ProgressDrawTarget::stderr_with_hz(10),
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {bar:40} {pos}/{len} requests  {per_sec}  eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

impl Summary {
    /// The human-readable table.
    pub(crate) fn table(&self, args: &Args) -> String {
        let mut out = String::new();
        let row = |out: &mut String, name: &str, value: String| {
            let _ = writeln!(out, "  {name:<22} {value:>14}");
        };
        let _ = writeln!(
            out,
            "xhttp demo{}: {} requests, concurrency {}, token ttl {} ms, fail rate {}, duplicate rate {}, seed {}{}",
            if args.chaos { " (chaos)" } else { "" },
            args.requests,
            args.concurrency,
            args.token_ttl.as_millis(),
            args.fail_rate,
            args.duplicate_rate,
            args.seed,
            if args.http2 { ", HTTP/2" } else { "" }
        );
        row(&mut out, "ok", self.ok.to_string());
        row(&mut out, "failed", self.failed.to_string());
        for (kind, n) in &self.failed_by_kind {
            row(&mut out, &format!("  {kind}"), n.to_string());
        }
        for (attempts, n) in &self.failed_by_attempts {
            row(
                &mut out,
                &format!("  after {attempts} attempts"),
                n.to_string(),
            );
        }
        row(&mut out, "token calls", self.token_calls.to_string());
        row(&mut out, "reuse detected", self.reuse_detected.to_string());
        row(&mut out, "refreshes", self.refreshes.to_string());
        row(
            &mut out,
            "rejected tokens",
            self.rejected_tokens.to_string(),
        );
        row(&mut out, "retries", self.retries.to_string());
        row(&mut out, "coalesced", self.coalesced.to_string());
        row(
            &mut out,
            "upstream requests",
            self.upstream_requests.to_string(),
        );
        row(
            &mut out,
            "faults injected",
            self.faults_injected.to_string(),
        );
        row(
            &mut out,
            "dead-token requests",
            self.dead_token_requests.to_string(),
        );
        row(
            &mut out,
            "rejected-token arrivals",
            format!(
                "{} (of {} revoked tokens)",
                self.rejected_token_arrivals, self.revoked_tokens
            ),
        );
        row(
            &mut out,
            "stalled seconds",
            self.stalled_seconds.to_string(),
        );
        row(&mut out, "hung calls", self.hung_calls.to_string());
        row(
            &mut out,
            "peak concurrency",
            self.peak_concurrency.to_string(),
        );
        row(&mut out, "p50", format!("{} us", self.p50_us));
        row(&mut out, "p99", format!("{} us", self.p99_us));
        row(&mut out, "elapsed", format!("{} ms", self.elapsed_ms));
        row(
            &mut out,
            "throughput",
            format!("{} req/s", self.throughput_rps),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_repeat_recent_ids_at_the_requested_rate() {
        let args = Args {
            requests: 10_000,
            duplicate_rate: 0.25,
            ..Args::default()
        };
        let ids = request_ids(&args);
        let repeats = ids
            .iter()
            .enumerate()
            .filter(|(i, id)| **id != *i as u64)
            .count();
        assert!((2_200..2_800).contains(&repeats), "{repeats}");
        for (i, id) in ids.iter().enumerate() {
            assert!(*id as usize <= i && i - *id as usize <= 64 * 64, "{i} {id}");
        }
        assert_eq!(request_ids(&args), ids, "same seed, same mix");
    }

    #[test]
    fn percentiles_of_small_sets() {
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[5], 0.99), 5);
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(percentile(&(1..=100).collect::<Vec<_>>(), 0.99), 99);
    }
}
