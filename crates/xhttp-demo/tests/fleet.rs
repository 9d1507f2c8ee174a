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
//! 4. `redis_restart`: Redis restarts empty under a running fleet; the next refreshes
//!    reconnect without an error, one token call seeds the store again, and a replica started
//!    after takes its tokens from it.
//! 5. `fleet_logout`: one replica logs out; the others' next refresh ends their session
//!    with no token call.
//! 6. `session_death`: the server revokes the login; 3 replicas refreshing at once make
//!    exactly 1 token call between them, and all end their session.
//!
//! `harness = false`: the same binary is the parent and the replicas, which libtest's
//! runner would not let it be.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use xhttp_demo::fleet::{self, Replica, ReplicaConfig, Report};
use xhttp_redis::RedisStore;
use xhttp_testkit::{Action, Config, RedisServer, Route, Script, TestServer};

fn main() {
    if fleet::replica_if_asked() {
        return;
    }
    if std::env::args().any(|arg| arg == "--list") {
        // `cargo test -- --list` asks a harness for its tests: these are one.
        println!("fleet: test");
        return;
    }
    let scenarios: [(&str, fn()); 6] = [
        ("shared_refresh", shared_refresh),
        ("killed_refresher", killed_refresher),
        ("unreachable_redis", unreachable_redis),
        ("redis_restart", redis_restart),
        ("fleet_logout", fleet_logout),
        ("session_death", session_death),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let (mut failed, mut passed, mut filtered) = (0, 0, 0);
    let all = Instant::now();
    for (name, scenario) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            filtered += 1;
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
        passed += usize::from(outcome.is_ok());
    }
    // The summary line libtest prints, so that whatever counts tests counts these.
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; \
         {filtered} filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        all.elapsed().as_secs_f64()
    );
    if failed > 0 {
        eprintln!("{failed} fleet scenario(s) failed");
        std::process::exit(1);
    }
}

/// A replica of this test binary.
fn spawn(config: &ReplicaConfig) -> Replica {
    let program = std::env::current_exe().expect("the test binary");
    Replica::spawn(&program, &[], config).expect("a replica")
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
    fn seed(&self, store: &RedisStore, claimed: Duration) {
        let login = self.server.login();
        self.runtime
            .block_on(fleet::seed(
                store,
                &login.access_token,
                &login.refresh_token,
                claimed,
                "fleet-login-1",
            ))
            .expect("seeding the store");
    }
}

fn replica_config(redis: String, api: &Api, key: &str, callers: usize) -> ReplicaConfig {
    ReplicaConfig::new(redis, key, api.server.base_url(), callers)
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
    // The burst's refresh issues a token of 1.5 s, so that no replay of a slow machine meets
    // its soft window (about 1.15 s); the run's tokens expire every 400 ms.
    api.server.set_token_ttl(Duration::from_millis(1_500));
    let ttl = Duration::from_millis(400);

    let config = replica_config(redis.url(), &api, "shared", CALLERS);
    let mut fleet: Vec<Replica> = (0..PROCESSES).map(|_| spawn(&config)).collect();
    for replica in &fleet {
        replica.expect("ready", PHASE).unwrap();
    }
    assert_eq!(
        api.server.counters().token_calls(),
        0,
        "the replicas adopted the login"
    );

    // The burst's token call takes a second, so that every other process is waiting for the
    // lease when its holder releases it.
    api.server.set_script(
        Route::Token,
        Script::new().on(0, Action::Delay(Duration::from_secs(1))),
    );
    // Every caller of every process holds the login's token at the gate; it expires there.
    for replica in &mut fleet {
        replica.send("gate").unwrap();
    }
    api.runtime
        .block_on(api.server.gate().wait_for_arrivals(PROCESSES * CALLERS));
    std::thread::sleep(
        (seeded_at + login_ttl + Duration::from_millis(100))
            .saturating_duration_since(Instant::now()),
    );
    api.server.gate().open();
    let reports: Vec<Report> = fleet.iter().map(|r| r.report(PHASE).unwrap()).collect();
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
    assert_eq!(reports.iter().map(|r| r.grant.calls).sum::<u64>(), 1);
    // The waiting processes were woken by the release and read the new tokens: none took
    // the lease only to find them.
    assert_eq!(
        reports.iter().map(|r| r.leases_taken).sum::<u64>(),
        1,
        "{reports:?}"
    );
    api.server.set_script(Route::Token, Script::new());
    assert_eq!(
        reports.iter().map(|r| r.failed).sum::<u64>(),
        0,
        "{reports:?}"
    );
    assert_eq!(counters.reuse_detected(), 0);

    // Tokens expire over and over: one token call per token life, not one per process (the
    // burst's token serves the run's first second or so).
    api.server.set_token_ttl(ttl);
    let run = Duration::from_secs(4);
    for replica in &mut fleet {
        replica.send(&format!("run {}", run.as_secs_f64())).unwrap();
    }
    let reports: Vec<Report> = fleet.iter().map(|r| r.report(PHASE).unwrap()).collect();
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
        reports.iter().map(|r| r.grant.calls).sum::<u64>(),
        counters.token_calls(),
        "the replicas made every token call"
    );
    // A token is refreshed once, in its soft window (its last 20 %, after the skew): about
    // one call per 70 % of a life, less the burst token's longer first life. Processes
    // refreshing on their own would make 4 times as many (and reuse). At least half: the
    // tokens did expire over and over.
    assert!(
        (lives / 2..=2 * lives).contains(&calls),
        "{calls} token calls for {lives} token lives"
    );
    assert!(
        reports.iter().filter(|r| r.grant.calls > 0).count() >= 1,
        "{reports:?}"
    );
}

fn killed_refresher() {
    let redis = RedisServer::start().expect("redis-server");
    let api = Api::start(Duration::from_secs(3600));
    api.seed(&store_for(&redis, "killed"), Duration::from_secs(3600));
    // The doomed replica's lease: its refresh deadline (2 s) plus the grace (1 s).
    let mut doomed = spawn(&ReplicaConfig {
        refresh_timeout_ms: 2_000,
        stall_in_grant: true,
        ..replica_config(redis.url(), &api, "killed", 1)
    });
    doomed.expect("ready", PHASE).unwrap();
    doomed.send("refresh").unwrap();
    doomed.expect("in-grant", PHASE).unwrap();
    // Killed holding the lease, before its token call reached the server.
    doomed.kill();
    assert_eq!(api.server.counters().token_calls(), 0);

    let config = replica_config(redis.url(), &api, "killed", 1);
    let mut survivors: Vec<Replica> = (0..2).map(|_| spawn(&config)).collect();
    for survivor in &mut survivors {
        survivor.expect("ready", PHASE).unwrap();
        survivor.send("refresh").unwrap();
    }
    let reports: Vec<Report> = survivors.iter().map(|r| r.report(PHASE).unwrap()).collect();
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

    // With a valid token, requests make no store call at all: 0 round trips to Redis.
    for survivor in &mut survivors {
        survivor.send("run 0.5").unwrap();
    }
    for (survivor, before) in survivors.iter().zip(&reports) {
        let after = survivor.report(PHASE).unwrap();
        assert!(after.ok > before.ok + 100, "{after:?}");
        assert_eq!(after.store_calls(), before.store_calls(), "{after:?}");
        assert_eq!(after.failed, 0, "{after:?}");
    }
}

fn unreachable_redis() {
    let api = Api::start(Duration::from_secs(1));
    let seeded_at = Instant::now();
    let login = api.server.login();
    api.server.set_token_ttl(Duration::from_secs(3600));
    let refused = format!("redis://{}", xhttp_testkit::refused_addr());
    let mut replica = spawn(&ReplicaConfig {
        login: Some((login.access_token, login.refresh_token)),
        ..replica_config(refused, &api, "unreachable", CALLERS)
    });
    replica.expect("ready", PHASE).unwrap();
    replica.send("gate").unwrap();
    api.runtime
        .block_on(api.server.gate().wait_for_arrivals(CALLERS));
    std::thread::sleep(
        (seeded_at + Duration::from_millis(1_100)).saturating_duration_since(Instant::now()),
    );
    api.server.gate().open();
    let report = replica.report(PHASE).unwrap();
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

fn redis_restart() {
    let mut redis = RedisServer::start().expect("redis-server");
    let api = Api::start(Duration::from_secs(3600));
    api.seed(&store_for(&redis, "restart"), Duration::from_secs(3600));
    let config = replica_config(redis.url(), &api, "restart", 1);
    let mut fleet: Vec<Replica> = (0..3).map(|_| spawn(&config)).collect();
    for replica in &fleet {
        replica.expect("ready", PHASE).unwrap();
    }
    // Every replica's connections now lead to a server that is gone, and the new one is empty.
    redis.restart().expect("redis-server again");
    for replica in &mut fleet {
        replica.send("refresh").unwrap();
    }
    let reports: Vec<Report> = fleet.iter().map(|r| r.report(PHASE).unwrap()).collect();
    let counters = api.server.counters();
    assert_eq!(
        counters.token_calls(),
        1,
        "one refresh, under the lease: {reports:?}"
    );
    assert_eq!(counters.reuse_detected(), 0);
    assert_eq!(
        reports.iter().map(|r| r.failed).sum::<u64>(),
        0,
        "{reports:?}"
    );
    assert_eq!(
        reports.iter().map(|r| r.store_errors).sum::<u64>(),
        0,
        "the restart cost no store error: {reports:?}"
    );
    // The refresh seeded the empty store: a replica started now takes its tokens from it.
    let mut late = spawn(&config);
    late.expect("ready", PHASE).unwrap();
    late.send("run 0.3").unwrap();
    let report = late.report(PHASE).unwrap();
    assert!(report.ok > 0 && report.failed == 0, "{report:?}");
    assert_eq!(report.grant.calls, 0, "{report:?}");
    assert_eq!(counters.token_calls(), 1);
}

/// Every replica's failures were `SessionExpired`, `failed` of them in all.
fn assert_session_ended(reports: &[Report], failed: u64) {
    assert_eq!(
        reports.iter().map(|r| r.failed).sum::<u64>(),
        failed,
        "{reports:?}"
    );
    for report in reports {
        let first = report.first_error.as_deref().unwrap_or_default();
        assert!(first.starts_with("session expired"), "{report:?}");
    }
}

fn fleet_logout() {
    let redis = RedisServer::start().expect("redis-server");
    let api = Api::start(Duration::from_secs(3600));
    api.seed(&store_for(&redis, "logout"), Duration::from_secs(3600));
    let config = replica_config(redis.url(), &api, "logout", 1);
    let mut fleet: Vec<Replica> = (0..3).map(|_| spawn(&config)).collect();
    for replica in &fleet {
        replica.expect("ready", PHASE).unwrap();
    }
    fleet[0].send("logout").unwrap();
    fleet[0].report(PHASE).unwrap();
    // The others are rejected, and find the session ended instead of refreshing.
    for replica in &mut fleet[1..] {
        replica.send("refresh").unwrap();
    }
    let reports: Vec<Report> = fleet[1..]
        .iter()
        .map(|r| r.report(PHASE).unwrap())
        .collect();
    // Each: the refresh, then the call after it.
    assert_session_ended(&reports, 4);
    assert_eq!(api.server.counters().token_calls(), 0, "{reports:?}");
}

fn session_death() {
    let redis = RedisServer::start().expect("redis-server");
    let api = Api::start(Duration::from_secs(3600));
    api.seed(&store_for(&redis, "death"), Duration::from_secs(3600));
    let config = replica_config(redis.url(), &api, "death", 1);
    let mut fleet: Vec<Replica> = (0..3).map(|_| spawn(&config)).collect();
    for replica in &fleet {
        replica.expect("ready", PHASE).unwrap();
    }
    // The server logs the session out: its refresh token is refused from now on.
    api.server.revoke_all();
    for replica in &mut fleet {
        replica.send("refresh").unwrap();
    }
    let reports: Vec<Report> = fleet.iter().map(|r| r.report(PHASE).unwrap()).collect();
    assert_session_ended(&reports, 6);
    let counters = api.server.counters();
    assert_eq!(
        counters.token_calls(),
        1,
        "one replica learned it; the others read it: {reports:?}"
    );
    assert_eq!(counters.reuse_detected(), 0);
}
