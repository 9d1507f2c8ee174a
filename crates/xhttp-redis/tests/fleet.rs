//! A fleet of real processes sharing one rotating refresh token through a real
//! `redis-server`: this test binary re-executes itself as the replicas.
//!
//! The parent runs the testkit API server (its token endpoint counts the calls of every
//! process, rotates refresh tokens and counts a retired one presented again) and a
//! `redis-server` on free loopback ports, seeds the store with a login, and drives the
//! replicas over their stdin and stdout, lining them up on the server's gate instead of
//! sleeping. Scenarios:
//!
//! 1. `shared_refresh`: 4 processes x 64 callers, all holding one token, meet its expiry at
//!    once (256 rejections): exactly 1 token call fleet-wide; then tokens of 400 ms expire
//!    over and over for 4 s: a token call per token life, not per process, 0 reuse, 0
//!    failed calls.
//! 2. `killed_refresher`: a replica takes the lease and dies in its token call; its lease
//!    runs out and exactly one survivor refreshes, the other adopts: 1 token call, 0 reuse.
//! 3. `unreachable_redis`: the store refuses connections; 64 rejections still cost one
//!    token call, no call fails, and the skipped store is counted.
//!
//! `harness = false`: the same binary is the parent and the replicas, which libtest's
//! runner would not let it be.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use xhttp::auth::{
    GrantResponse, OAuth2Refresh, RefreshGrant, Secret, StoredTokens, TokenManager, TokenStore,
    Windows,
};
use xhttp::{Client, Error};
use xhttp_redis::RedisStore;
use xhttp_testkit::{Config, RedisServer, TestServer};

/// Names the replica's settings in its environment; its absence makes the parent.
const REPLICA_ENV: &str = "XHTTP_FLEET_REPLICA";

/// What a replica is told at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReplicaConfig {
    redis: String,
    api: String,
    key: String,
    callers: usize,
    refresh_timeout_ms: u64,
    lease_grace_ms: u64,
    /// Tokens to start with when the store cannot give them (the unreachable case); secrets
    /// of the test server only.
    login: Option<(String, String)>,
    /// The grant never answers: the replica dies in its token call.
    stall_in_grant: bool,
}

/// What a replica reports after each phase, counted since it started.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Report {
    ok: u64,
    failed: u64,
    grant_calls: u64,
    store_errors: u64,
    first_error: Option<String>,
}

fn main() {
    if let Ok(config) = std::env::var(REPLICA_ENV) {
        let config: ReplicaConfig = serde_json::from_str(&config).expect("replica config");
        replica(config);
        return;
    }
    if std::env::args().any(|arg| arg == "--list") {
        // `cargo test -- --list` asks a harness for its tests: these are one.
        println!("fleet: test");
        return;
    }
    let scenarios: [(&str, fn()); 3] = [
        ("shared_refresh", shared_refresh),
        ("killed_refresher", killed_refresher),
        ("unreachable_redis", unreachable_redis),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let mut failed = 0;
    for (name, scenario) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(scenario);
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        println!(
            "test fleet::{name} ... {verdict} ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        failed += usize::from(outcome.is_err());
    }
    if failed > 0 {
        eprintln!("{failed} fleet scenario(s) failed");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// The replica: one process of the fleet.

/// Counts the token calls of this process, and can stall in one forever.
struct CountingGrant {
    inner: OAuth2Refresh,
    calls: Arc<AtomicU64>,
    stall: bool,
}

impl std::fmt::Debug for CountingGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingGrant").finish_non_exhaustive()
    }
}

impl RefreshGrant for CountingGrant {
    fn request<'a>(
        &'a self,
        refresh_token: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        if self.stall {
            // Holding the lease, in its token call: the parent kills this process now.
            println!("in-grant");
            let _ = std::io::stdout().flush();
            return Box::pin(std::future::pending());
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.request(refresh_token)
    }

    fn needs_refresh_token(&self) -> bool {
        self.inner.needs_refresh_token()
    }

    fn retry_safety(&self) -> xhttp::auth::RetrySafety {
        self.inner.retry_safety()
    }
}

fn replica(config: ReplicaConfig) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run_replica(config));
}

async fn run_replica(config: ReplicaConfig) {
    let store = RedisStore::builder(&config.redis)
        .key(&config.key)
        .op_timeout(Duration::from_millis(500))
        .lease_grace(Duration::from_millis(config.lease_grace_ms))
        .build()
        .expect("store");
    let calls = Arc::new(AtomicU64::new(0));
    let grant = CountingGrant {
        inner: OAuth2Refresh::new(
            xhttp::grant_transport(),
            &format!("{}/auth/token", config.api),
        )
        .expect("grant"),
        calls: calls.clone(),
        stall: config.stall_in_grant,
    };
    let manager = TokenManager::builder(grant)
        .store(store)
        .refresh_timeout(Duration::from_millis(config.refresh_timeout_ms))
        .windows(short_token_windows())
        .build();
    if let Some((access, refresh)) = &config.login {
        manager
            .set_tokens(
                Secret::new(access.clone()),
                Some(Secret::new(refresh.clone())),
                Some(Duration::from_secs(3600)),
            )
            .await
            .expect("login tokens");
    } else {
        // The first token comes from the store: another process logged in.
        manager.current().await.expect("tokens from the store");
    }
    let client = Client::builder()
        .base_url(&config.api)
        .auth(manager.clone())
        .allow_insecure_loopback()
        .pool_max_idle_per_host(config.callers)
        .build()
        .expect("client");
    let tally = Arc::new(Mutex::new(Report::default()));
    say("ready");
    let mut commands = std::io::stdin().lock().lines();
    while let Some(Ok(command)) = commands.next() {
        let mut words = command.split_whitespace();
        match words.next() {
            Some("gate") => {
                // One call per caller through the server's gate: all of them in flight with
                // the token the parent lets expire before it opens the gate.
                let pid = std::process::id();
                let calls: Vec<_> = (0..config.callers)
                    .map(|i| {
                        let client = client.clone();
                        tokio::spawn(async move {
                            client.get(&format!("/api/gate/{pid}-{i}")).send().await
                        })
                    })
                    .collect();
                for call in calls {
                    record(&tally, call.await.expect("caller").map(drop));
                }
            }
            Some("run") => {
                let seconds: f64 = words.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
                let until = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
                let callers: Vec<_> = (0..config.callers)
                    .map(|_| {
                        let (client, tally) = (client.clone(), tally.clone());
                        tokio::spawn(async move {
                            while tokio::time::Instant::now() < until {
                                record(&tally, client.get("/api/me").send().await.map(drop));
                            }
                        })
                    })
                    .collect();
                for caller in callers {
                    caller.await.expect("caller");
                }
            }
            Some("refresh") => {
                // As if the server had rejected the token held now.
                let result = manager.refresh_after_rejection(manager.generation()).await;
                record(&tally, result.map(drop));
                record(&tally, client.get("/api/me").send().await.map(drop));
            }
            _ => break,
        }
        let mut report = xhttp_core::sync::lock(&tally).clone();
        report.grant_calls = calls.load(Ordering::SeqCst);
        report.store_errors = manager.store_errors();
        say(&format!(
            "done {}",
            serde_json::to_string(&report).expect("json")
        ));
    }
}

/// Windows for tokens of a few hundred milliseconds: the defaults (10 s of skew, 10 s of
/// hard window) are meant for tokens of minutes.
fn short_token_windows() -> Windows {
    Windows {
        skew: Duration::from_millis(40),
        ..Windows::default()
    }
}

fn record(tally: &Mutex<Report>, outcome: Result<(), Error>) {
    let mut tally = xhttp_core::sync::lock(tally);
    match outcome {
        Ok(()) => tally.ok += 1,
        Err(err) => {
            tally.failed += 1;
            tally.first_error.get_or_insert_with(|| format!("{err}"));
        }
    }
}

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

// ---------------------------------------------------------------------------------------
// The parent: the servers, the replicas' handles, the scenarios.

/// A replica process and its lines.
struct Replica {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Replica {
    fn spawn(config: &ReplicaConfig) -> Replica {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .env(REPLICA_ENV, serde_json::to_string(config).expect("json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("a replica process");
        let stdout = child.stdout.take().expect("stdout");
        let (tell, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tell.send(line).is_err() {
                    break;
                }
            }
        });
        Replica {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").expect("replica alive");
        stdin.flush().expect("replica alive");
    }

    /// The next line starting with `word`, within `within`.
    fn expect(&self, word: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(word) => {
                    return line[word.len()..].trim().to_owned();
                }
                Ok(_) => continue,
                Err(err) => panic!("replica said no {word:?} within {within:?}: {err}"),
            }
        }
    }

    fn report(&self, within: Duration) -> Report {
        serde_json::from_str(&self.expect("done", within)).expect("report json")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Closing stdin ends a replica's command loop; a stuck one is killed.
        self.stdin.take();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

/// The API server and its runtime, which must outlive the scenario.
struct Api {
    server: TestServer,
    runtime: tokio::runtime::Runtime,
}

impl Api {
    fn start(access_ttl: Duration) -> Api {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime.block_on(TestServer::start_with(Config {
            access_ttl,
            ..Config::default()
        }));
        Api { server, runtime }
    }

    /// A login, stored as a replica's manager would store it, claiming `claimed` of life
    /// (the server's may be shorter: the scenario lets it expire under the replicas).
    fn seed(&self, store: &RedisStore, claimed: Duration) -> (String, String) {
        let login = self.server.login();
        let mut tokens = StoredTokens::new(
            Secret::new(login.access_token.clone()),
            Some(Secret::new(login.refresh_token.clone())),
        );
        tokens.expires_at = Some(SystemTime::now() + claimed);
        tokens.session = Some("fleet-login-1".to_owned());
        self.runtime
            .block_on(store.save(&tokens))
            .expect("seeding the store");
        (login.access_token, login.refresh_token)
    }
}

fn replica_config(redis: String, api: &Api, key: &str, callers: usize) -> ReplicaConfig {
    ReplicaConfig {
        redis,
        api: api.server.base_url(),
        key: key.to_owned(),
        callers,
        refresh_timeout_ms: 10_000,
        lease_grace_ms: 1_000,
        login: None,
        stall_in_grant: false,
    }
}

fn store_for(redis: &RedisServer, key: &str) -> RedisStore {
    RedisStore::builder(redis.url())
        .key(key)
        .build()
        .expect("store")
}

const PROCESSES: usize = 4;
const CALLERS: usize = 64;
const PHASE: Duration = Duration::from_secs(60);

fn shared_refresh() {
    let redis = RedisServer::start().expect("redis-server");
    // The login's token lives 1 s on the server; the replicas believe it lives an hour.
    let login_ttl = Duration::from_secs(1);
    let api = Api::start(login_ttl);
    let seeded_at = Instant::now();
    api.seed(&store_for(&redis, "shared"), Duration::from_secs(3600));
    // Tokens the refreshes issue expire every 400 ms.
    let ttl = Duration::from_millis(400);
    api.server.set_token_ttl(ttl);

    let config = replica_config(redis.url(), &api, "shared", CALLERS);
    let mut fleet: Vec<Replica> = (0..PROCESSES).map(|_| Replica::spawn(&config)).collect();
    for replica in &fleet {
        replica.expect("ready", PHASE);
    }
    assert_eq!(
        api.server.counters().token_calls(),
        0,
        "the replicas adopted the login"
    );

    // Every caller of every process holds the login's token at the gate; it expires there.
    for replica in &mut fleet {
        replica.send("gate");
    }
    api.runtime
        .block_on(api.server.gate().wait_for_arrivals(PROCESSES * CALLERS));
    std::thread::sleep(
        (seeded_at + login_ttl + Duration::from_millis(100))
            .saturating_duration_since(Instant::now()),
    );
    api.server.gate().open();
    let reports: Vec<Report> = fleet.iter().map(|r| r.report(PHASE)).collect();
    let counters = api.server.counters();
    assert_eq!(
        counters.unauthorized(),
        (PROCESSES * CALLERS) as u64,
        "every call met the expired token"
    );
    assert_eq!(
        counters.token_calls(),
        1,
        "one refresh for the whole fleet: {reports:?}"
    );
    assert_eq!(reports.iter().map(|r| r.grant_calls).sum::<u64>(), 1);
    assert_eq!(
        reports.iter().map(|r| r.failed).sum::<u64>(),
        0,
        "{reports:?}"
    );
    assert_eq!(counters.reuse_detected(), 0);

    // Tokens expire over and over: one token call per token life, not one per process.
    let run = Duration::from_secs(4);
    for replica in &mut fleet {
        replica.send(&format!("run {}", run.as_secs_f64()));
    }
    let reports: Vec<Report> = fleet.iter().map(|r| r.report(PHASE)).collect();
    let calls = counters.token_calls() - 1;
    let lives = (run.as_millis() / ttl.as_millis()) as u64;
    println!(
        "shared_refresh: {PROCESSES} processes x {CALLERS} callers, {} ok calls, {calls} token \
         calls in {run:?} of {ttl:?} tokens ({lives} lives), reuse {}",
        reports.iter().map(|r| r.ok).sum::<u64>(),
        counters.reuse_detected()
    );
    assert_eq!(
        counters.reuse_detected(),
        0,
        "no refresh token presented twice"
    );
    assert_eq!(
        reports.iter().map(|r| r.failed).sum::<u64>(),
        0,
        "{reports:?}"
    );
    assert_eq!(reports.iter().map(|r| r.store_errors).sum::<u64>(), 0);
    assert_eq!(
        reports.iter().map(|r| r.grant_calls).sum::<u64>(),
        counters.token_calls(),
        "the replicas made every token call"
    );
    // A token is refreshed once, in its soft window (its last 20 %, after the skew): about
    // one call per 70 % of a life. Processes refreshing on their own would make 4 times as
    // many (and reuse).
    assert!(
        (lives - 2..=2 * lives).contains(&calls),
        "{calls} token calls for {lives} token lives"
    );
    assert!(
        reports.iter().filter(|r| r.grant_calls > 0).count() >= 1,
        "{reports:?}"
    );
}

fn killed_refresher() {
    let redis = RedisServer::start().expect("redis-server");
    let api = Api::start(Duration::from_secs(3600));
    api.seed(&store_for(&redis, "killed"), Duration::from_secs(3600));
    // The doomed replica's lease: its refresh deadline (2 s) plus the grace (1 s).
    let mut doomed = Replica::spawn(&ReplicaConfig {
        refresh_timeout_ms: 2_000,
        stall_in_grant: true,
        ..replica_config(redis.url(), &api, "killed", 1)
    });
    doomed.expect("ready", PHASE);
    doomed.send("refresh");
    doomed.expect("in-grant", PHASE);
    // Killed holding the lease, before its token call reached the server.
    doomed.kill();
    assert_eq!(api.server.counters().token_calls(), 0);

    let config = replica_config(redis.url(), &api, "killed", 1);
    let mut survivors: Vec<Replica> = (0..2).map(|_| Replica::spawn(&config)).collect();
    for survivor in &mut survivors {
        survivor.expect("ready", PHASE);
        survivor.send("refresh");
    }
    let reports: Vec<Report> = survivors.iter().map(|r| r.report(PHASE)).collect();
    let counters = api.server.counters();
    assert_eq!(
        counters.token_calls(),
        1,
        "one survivor refreshed: {reports:?}"
    );
    assert_eq!(counters.reuse_detected(), 0);
    assert_eq!(
        reports.iter().map(|r| r.failed).sum::<u64>(),
        0,
        "{reports:?}"
    );
    assert_eq!(reports.iter().map(|r| r.ok).sum::<u64>(), 4);
}

fn unreachable_redis() {
    let api = Api::start(Duration::from_secs(1));
    let seeded_at = Instant::now();
    let login = api.server.login();
    api.server.set_token_ttl(Duration::from_secs(3600));
    let refused = format!("redis://{}", xhttp_testkit::refused_addr());
    let mut replica = Replica::spawn(&ReplicaConfig {
        login: Some((login.access_token, login.refresh_token)),
        ..replica_config(refused, &api, "unreachable", CALLERS)
    });
    replica.expect("ready", PHASE);
    replica.send("gate");
    api.runtime
        .block_on(api.server.gate().wait_for_arrivals(CALLERS));
    std::thread::sleep(
        (seeded_at + Duration::from_millis(1_100)).saturating_duration_since(Instant::now()),
    );
    api.server.gate().open();
    let report = replica.report(PHASE);
    let counters = api.server.counters();
    assert_eq!(counters.unauthorized(), CALLERS as u64);
    assert_eq!(
        counters.token_calls(),
        1,
        "the local single flight still holds: {report:?}"
    );
    assert_eq!(report.failed, 0, "{report:?}");
    // The login's save, and the refresh's read, lease and write: each skipped, each counted.
    assert_eq!(report.store_errors, 4, "{report:?}");
    assert_eq!(counters.reuse_detected(), 0);
}
