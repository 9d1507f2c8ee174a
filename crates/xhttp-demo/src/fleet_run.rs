//! `--processes N`: the fleet run. N replicas of this program share one login through a
//! token store while their tokens expire over and over; the API server (in this process)
//! counts every token call of every replica and every refresh token presented twice.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;
use xhttp_demo::fleet::{self, Replica, ReplicaConfig, Report};
use xhttp_redis::RedisStore;
use xhttp_testkit::{Config, RedisServer, TestServer};

use crate::args::Args;

/// How long a replica may take to start, or to report after its phase should have ended.
const PATIENCE: Duration = Duration::from_secs(60);

/// What the fleet run measured; `--json` prints exactly this object.
#[derive(Debug, Serialize)]
pub(crate) struct FleetSummary {
    /// Always `fleet`.
    pub(crate) mode: &'static str,
    /// `redis-local`, `memory`, or the Redis URL's host and port.
    pub(crate) store: String,
    pub(crate) processes: usize,
    pub(crate) callers_per_process: usize,
    /// The server's access-token lifetime, ms.
    pub(crate) token_ttl_ms: u64,
    /// Token lifetimes in the run: its length over the lifetime.
    pub(crate) token_lives: u64,
    /// Length of the request phase, ms.
    pub(crate) elapsed_ms: u64,
    /// Calls made by every caller of every replica.
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// The first failure a replica saw (never holds a secret).
    pub(crate) first_error: Option<String>,
    /// Calls that reached the server's token endpoint, from every replica.
    pub(crate) token_calls: u64,
    /// Token calls per token lifetime, fleet-wide (about 1.4: a token is replaced in its
    /// soft window, at about 70 % of its life; N processes refreshing on their own would
    /// make N times that, and reuse).
    pub(crate) token_calls_per_life: f64,
    /// Token calls made by each replica.
    pub(crate) token_calls_by_process: Vec<u64>,
    /// Tokens the replicas took from the store instead of calling the token endpoint.
    pub(crate) adoptions: u64,
    /// Refresh tokens presented twice, as the server detected them (each revokes the
    /// family: every replica logged out).
    pub(crate) reuse_detected: u64,
    /// Store calls that failed and were skipped, fleet-wide.
    pub(crate) store_errors: u64,
    /// Store calls of every kind, fleet-wide: only refreshes make them.
    pub(crate) store_calls: u64,
    /// Store calls per request: 0 on the request path, so this is refreshes' share only.
    pub(crate) store_calls_per_request: f64,
    /// Leases taken fleet-wide: a refresher's, and a replica's that asked when the lease
    /// was free and found the tokens already refreshed; replicas waiting for a lease are
    /// woken by its release and read, and take none.
    pub(crate) leases_taken: u64,
    /// Mean duration of a store read, a lease take (the wait for another replica's lease
    /// included) and a swap, microseconds.
    pub(crate) store_load_us: u64,
    pub(crate) store_lock_us: u64,
    pub(crate) store_swap_us: u64,
    /// Mean duration of a token call, microseconds.
    pub(crate) token_call_us: u64,
    /// API requests the server rejected for their token.
    pub(crate) unauthorized: u64,
}

impl FleetSummary {
    /// What the run broke of "one refresh per expiry, fleet-wide": refresh-token reuse,
    /// failed calls, skipped store calls, more than two token calls per token life.
    pub(crate) fn breaches(&self) -> Vec<String> {
        let mut breaches = Vec::new();
        if self.reuse_detected > 0 {
            breaches.push(format!("{} refresh tokens reused", self.reuse_detected));
        }
        if self.failed > 0 {
            breaches.push(format!(
                "{} calls failed, the first with: {}",
                self.failed,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        if self.store_errors > 0 {
            breaches.push(format!("{} store calls failed", self.store_errors));
        }
        if self.token_calls > 2 * self.token_lives + 2 {
            breaches.push(format!(
                "{} token calls for {} token lives",
                self.token_calls, self.token_lives
            ));
        }
        breaches
    }

    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "xhttp demo (fleet): {} processes x {} callers, store {}, token ttl {} ms, {} token lives",
            self.processes, self.callers_per_process, self.store, self.token_ttl_ms, self.token_lives
        );
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "  {name:<26} {value:>14}");
        };
        row("requests", self.requests.to_string());
        row("ok", self.ok.to_string());
        row("failed", self.failed.to_string());
        row("token calls", self.token_calls.to_string());
        row(
            "token calls per life",
            format!("{:.2}", self.token_calls_per_life),
        );
        row(
            "token calls by process",
            format!("{:?}", self.token_calls_by_process),
        );
        row("adoptions", self.adoptions.to_string());
        row("reuse detected", self.reuse_detected.to_string());
        row("store errors", self.store_errors.to_string());
        row("store calls", self.store_calls.to_string());
        row(
            "store calls per request",
            format!("{:.5}", self.store_calls_per_request),
        );
        row("leases taken", self.leases_taken.to_string());
        row("store read, mean", format!("{} us", self.store_load_us));
        row("store lease, mean", format!("{} us", self.store_lock_us));
        row("store swap, mean", format!("{} us", self.store_swap_us));
        row("token call, mean", format!("{} us", self.token_call_us));
        row("unauthorized", self.unauthorized.to_string());
        row("elapsed", format!("{} ms", self.elapsed_ms));
        out
    }
}

pub(crate) fn run(args: &Args) -> Result<FleetSummary, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| format!("no runtime: {err}"))?;
    let ttl = args.token_ttl;
    let server = runtime.block_on(TestServer::start_with(Config {
        access_ttl: ttl,
        seed: args.seed,
        ..Config::default()
    }));
    // `redis-local` lives as long as the run.
    let mut local = None;
    let (url, shown) = match args.store.as_str() {
        "memory" => ("memory".to_owned(), "memory".to_owned()),
        "redis-local" => {
            let redis = RedisServer::start()?;
            let url = redis.url();
            local = Some(redis);
            (url, "redis-local".to_owned())
        }
        url => (url.to_owned(), url.to_owned()),
    };
    let key = xhttp_core::random::unique_name("demo-");
    let login = server.login();
    let mut config = ReplicaConfig::new(url.clone(), &key, server.base_url(), args.concurrency);
    if url == "memory" {
        // No shared store: each replica starts from the login on its own.
        config.login = Some((login.access_token.clone(), login.refresh_token.clone()));
    } else {
        let store = RedisStore::builder(&url)
            .key(&key)
            .build()
            .map_err(|err| err.to_string())?;
        runtime
            .block_on(fleet::seed(
                &store,
                &login.access_token,
                &login.refresh_token,
                ttl,
                "demo-login",
            ))
            .map_err(|err| format!("cannot seed the store: {err}"))?;
    }
    let program = std::env::current_exe().map_err(|err| err.to_string())?;
    let mut replicas = (0..args.processes)
        .map(|_| Replica::spawn(&program, &[], &config))
        .collect::<Result<Vec<_>, _>>()?;
    for replica in &replicas {
        replica.expect("ready", PATIENCE)?;
    }
    let seconds = ttl.as_secs_f64() * args.expiries as f64;
    let started = Instant::now();
    for replica in &mut replicas {
        replica.send(&format!("run {seconds}"))?;
    }
    let reports = replicas
        .iter()
        .map(|replica| replica.report(PATIENCE + Duration::from_secs_f64(seconds)))
        .collect::<Result<Vec<_>, _>>()?;
    let elapsed = started.elapsed();
    drop(replicas);
    drop(local);
    let mut fleet = Report::default();
    for report in &reports {
        fleet.merge(report);
    }
    let counters = server.counters();
    let requests = fleet.ok + fleet.failed;
    let token_calls = counters.token_calls();
    let token_lives = args.expiries;
    Ok(FleetSummary {
        mode: "fleet",
        // A URL is shown by host only: it may hold a password.
        store: if shown.contains("://") {
            host_of(&shown)
        } else {
            shown
        },
        processes: args.processes,
        callers_per_process: args.concurrency,
        token_ttl_ms: ttl.as_millis() as u64,
        token_lives,
        elapsed_ms: elapsed.as_millis() as u64,
        requests,
        ok: fleet.ok,
        failed: fleet.failed,
        first_error: fleet.first_error.clone(),
        token_calls,
        token_calls_per_life: token_calls as f64 / token_lives.max(1) as f64,
        token_calls_by_process: reports.iter().map(|r| r.grant.calls).collect(),
        // Each replica's first token and each later one came from a token call or the store.
        adoptions: fleet.tokens_installed.saturating_sub(fleet.grant.calls),
        reuse_detected: counters.reuse_detected(),
        store_errors: fleet.store_errors,
        store_calls: fleet.store_calls(),
        store_calls_per_request: fleet.store_calls() as f64 / requests.max(1) as f64,
        leases_taken: fleet.leases_taken,
        store_load_us: fleet.store_load.mean_us(),
        store_lock_us: fleet.store_lock.mean_us(),
        store_swap_us: fleet.store_swap.mean_us(),
        token_call_us: fleet.grant.mean_us(),
        unauthorized: counters.unauthorized(),
    })
}

/// `host:port` of a Redis URL, without its user and password.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_url_is_shown_by_host_only() {
        assert_eq!(host_of("redis://:SECRET@10.0.0.5:6379/2"), "10.0.0.5:6379");
        assert_eq!(host_of("rediss://user:SECRET@cache:6380"), "cache:6380");
        assert_eq!(host_of("redis://127.0.0.1:6379"), "127.0.0.1:6379");
    }
}
