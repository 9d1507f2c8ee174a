//! The fleet: several processes sharing one rotating refresh token, each a replica of one
//! service with its own [`TokenManager`] and callers, all refreshing through one token store.
//!
//! A replica is this program (the demo, or a test binary) started again with
//! [`REPLICA_ENV`] set to its [`ReplicaConfig`]; [`replica_if_asked`] runs it. The parent
//! drives it with one command per line on its stdin and reads one line per phase on its
//! stdout:
//!
//! | parent says | replica does | then says |
//! |---|---|---|
//! | (start) | builds its store, manager and client, takes the tokens | `ready` |
//! | `gate` | one call per caller to `/api/gate/{pid}-{i}` (held at the server's gate) | `done <report>` |
//! | `run <seconds>` | every caller calls `/api/me` in a loop for that long | `done <report>` |
//! | `refresh` | a refresh as if the server rejected the token held, then one call | `done <report>` |
//! | `logout` | `TokenManager::clear`: the session ends, for the fleet | `done <report>` |
//! | (stdin closed) | exits | |
//!
//! Reports count from the replica's start ([`Report`]). The store is timed per operation, so
//! the parent can tell what the fleet's store adds to a refresh, and that requests make no
//! store call at all.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use xhttp::auth::{
    GrantResponse, Lock, MemoryStore, OAuth2Refresh, RefreshGrant, RetrySafety, Secret,
    StoredTokens, Swap, TokenManager, TokenStore, Windows,
};
use xhttp::{Client, Error};
use xhttp_redis::RedisStore;

/// The environment variable that makes a process a replica: its [`ReplicaConfig`] as JSON.
pub const REPLICA_ENV: &str = "XHTTP_FLEET_REPLICA";

/// What a replica is told at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaConfig {
    /// The store's URL (`redis://…`), or `memory` for a store of the replica's own.
    pub store: String,
    /// The key of the credential in the store.
    pub key: String,
    /// The testkit API server's base URL.
    pub api: String,
    /// Concurrent callers.
    pub callers: usize,
    /// The manager's refresh deadline, ms.
    pub refresh_timeout_ms: u64,
    /// The store's lease grace, ms.
    pub lease_grace_ms: u64,
    /// Tokens to start with (access, refresh), when the store cannot give them: a store of
    /// its own, or one that is down. Secrets of the test server only.
    pub login: Option<(String, String)>,
    /// The grant never answers, after saying `in-grant`: the replica dies in its token call.
    pub stall_in_grant: bool,
}

impl ReplicaConfig {
    /// A replica of `callers` on the API at `api`, with the store at `store` (a URL or
    /// `memory`), a 10 s refresh deadline and a 1 s lease grace.
    pub fn new(store: impl Into<String>, key: &str, api: String, callers: usize) -> Self {
        ReplicaConfig {
            store: store.into(),
            key: key.to_owned(),
            api,
            callers,
            refresh_timeout_ms: 10_000,
            lease_grace_ms: 1_000,
            login: None,
            stall_in_grant: false,
        }
    }
}

/// One timed kind of store call.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Timed {
    /// Calls made.
    pub calls: u64,
    /// Their total duration, microseconds.
    pub total_us: u64,
}

impl Timed {
    /// The mean duration, microseconds (0 with no call).
    pub fn mean_us(&self) -> u64 {
        self.total_us.checked_div(self.calls).unwrap_or(0)
    }

    fn add(&mut self, other: &Timed) {
        self.calls += other.calls;
        self.total_us += other.total_us;
    }
}

/// What a replica counted since it started.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed.
    pub failed: u64,
    /// The first failure, as its `Display` (which never holds a secret).
    pub first_error: Option<String>,
    /// Token calls this replica's grant made, and how long they took.
    pub grant: Timed,
    /// Tokens the manager installed (its generation): its own refreshes, the tokens it
    /// adopted from the store, and the first one.
    pub tokens_installed: u64,
    /// Store calls that failed and were skipped (`TokenManager::store_errors`).
    pub store_errors: u64,
    /// Store reads, lease takes (the wait for another replica's lease included), and swaps.
    pub store_load: Timed,
    /// See [`store_load`](Self::store_load).
    pub store_lock: Timed,
    /// See [`store_load`](Self::store_load).
    pub store_swap: Timed,
    /// Unconditional saves (a login).
    pub store_save: Timed,
    /// Leases this replica took: lock calls that got the lease, not woken by another
    /// replica's release to read what it stored.
    pub leases_taken: u64,
}

impl Report {
    /// Adds another replica's counts to these (the first error kept is the first found).
    pub fn merge(&mut self, other: &Report) {
        self.ok += other.ok;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.grant.add(&other.grant);
        self.tokens_installed += other.tokens_installed;
        self.store_errors += other.store_errors;
        self.store_load.add(&other.store_load);
        self.store_lock.add(&other.store_lock);
        self.store_swap.add(&other.store_swap);
        self.store_save.add(&other.store_save);
        self.leases_taken += other.leases_taken;
    }

    /// Store calls of every kind.
    pub fn store_calls(&self) -> u64 {
        self.store_load.calls
            + self.store_lock.calls
            + self.store_swap.calls
            + self.store_save.calls
    }
}

/// Runs the replica and returns `true` when [`REPLICA_ENV`] asks this process to be one;
/// returns `false` at once otherwise. A config that cannot be read ends the process with
/// status 2.
pub fn replica_if_asked() -> bool {
    let Ok(config) = std::env::var(REPLICA_ENV) else {
        return false;
    };
    let config: ReplicaConfig = match serde_json::from_str(&config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("replica: {REPLICA_ENV} is not a replica config: {err}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => {
            if let Err(err) = runtime.block_on(replica(config)) {
                eprintln!("replica: {err}");
                std::process::exit(1);
            }
        }
        Err(err) => {
            eprintln!("replica: no runtime: {err}");
            std::process::exit(1);
        }
    }
    true
}

/// Counts and times the token calls of this process, and can stall in one forever.
struct CountingGrant {
    inner: OAuth2Refresh,
    timed: Arc<Mutex<Timed>>,
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
            say("in-grant");
            return Box::pin(std::future::pending());
        }
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.request(refresh_token).await;
            record_time(&self.timed, started);
            result
        })
    }

    fn needs_refresh_token(&self) -> bool {
        self.inner.needs_refresh_token()
    }

    fn retry_safety(&self) -> RetrySafety {
        self.inner.retry_safety()
    }
}

fn record_time(timed: &Mutex<Timed>, started: Instant) {
    let mut timed = xhttp_core::sync::lock(timed);
    timed.calls += 1;
    timed.total_us += started.elapsed().as_micros() as u64;
}

/// A store that times each of its calls.
#[derive(Debug)]
struct TimedStore {
    inner: Box<dyn TokenStore>,
    load: Arc<Mutex<Timed>>,
    lock: Arc<Mutex<Timed>>,
    swap: Arc<Mutex<Timed>>,
    save: Arc<Mutex<Timed>>,
    leases: Arc<AtomicU64>,
}

impl TimedStore {
    fn timed<'a, T: Send + 'a>(
        timed: &'a Mutex<Timed>,
        call: BoxFuture<'a, Result<T, Error>>,
    ) -> BoxFuture<'a, Result<T, Error>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = call.await;
            record_time(timed, started);
            result
        })
    }
}

impl TokenStore for TimedStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredTokens>, Error>> {
        Self::timed(&self.load, self.inner.load())
    }

    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), Error>> {
        Self::timed(&self.save, self.inner.save(tokens))
    }

    fn swap<'a>(
        &'a self,
        expected: Option<&'a Secret>,
        new: &'a StoredTokens,
        fence: Option<u64>,
    ) -> BoxFuture<'a, Result<Swap, Error>> {
        Self::timed(&self.swap, self.inner.swap(expected, new, fence))
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.inner.clear()
    }

    fn lock(&self, lease: Duration) -> BoxFuture<'_, Result<Lock, Error>> {
        Self::timed(
            &self.lock,
            Box::pin(async move {
                let lock = self.inner.lock(lease).await;
                if let Ok(Lock::Held(_)) = &lock {
                    self.leases.fetch_add(1, Ordering::Relaxed);
                }
                lock
            }),
        )
    }
}

/// Windows for tokens of a few hundred milliseconds: the defaults (10 s of skew, a hard
/// window of 10 s) are meant for tokens of minutes.
pub fn short_token_windows() -> Windows {
    Windows {
        skew: Duration::from_millis(40),
        ..Windows::default()
    }
}

async fn replica(config: ReplicaConfig) -> Result<(), Error> {
    let inner: Box<dyn TokenStore> = if config.store == "memory" {
        Box::new(MemoryStore::new())
    } else {
        Box::new(
            RedisStore::builder(&config.store)
                .key(&config.key)
                .op_timeout(Duration::from_millis(500))
                .lease_grace(Duration::from_millis(config.lease_grace_ms))
                .build()?,
        )
    };
    let timed = |_: ()| Arc::new(Mutex::new(Timed::default()));
    let store = TimedStore {
        inner,
        load: timed(()),
        lock: timed(()),
        swap: timed(()),
        save: timed(()),
        leases: Arc::new(AtomicU64::new(0)),
    };
    let (load, lock, swap, save, leases) = (
        store.load.clone(),
        store.lock.clone(),
        store.swap.clone(),
        store.save.clone(),
        store.leases.clone(),
    );
    let grant_time = Arc::new(Mutex::new(Timed::default()));
    let grant = CountingGrant {
        inner: OAuth2Refresh::new(
            xhttp::grant_transport(),
            &format!("{}/auth/token", config.api),
        )?,
        timed: grant_time.clone(),
        stall: config.stall_in_grant,
    };
    let manager = TokenManager::builder(grant)
        .store(store)
        .refresh_timeout(Duration::from_millis(config.refresh_timeout_ms))
        .windows(short_token_windows())
        .try_build()?;
    match &config.login {
        Some((access, refresh)) => {
            manager
                .set_tokens(
                    Secret::new(access.clone()),
                    Some(Secret::new(refresh.clone())),
                    Some(Duration::from_secs(3600)),
                )
                .await?;
        }
        // The first token comes from the store: another process logged in.
        None => drop(manager.current().await?),
    }
    let client = Client::builder()
        .base_url(&config.api)
        .auth(manager.clone())
        .allow_insecure_loopback()
        .pool_max_idle_per_host(config.callers)
        .build()?;
    let tally = Arc::new(Mutex::new(Report::default()));
    say("ready");
    let mut commands = std::io::stdin().lock().lines();
    while let Some(Ok(command)) = commands.next() {
        let mut words = command.split_whitespace();
        match words.next() {
            Some("gate") => {
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
                    record(&tally, flatten(call.await));
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
                    let _ = caller.await;
                }
            }
            Some("logout") => manager.clear().await,
            Some("refresh") => {
                let rejected = manager.generation();
                record(
                    &tally,
                    manager.refresh_after_rejection(rejected).await.map(drop),
                );
                record(&tally, client.get("/api/me").send().await.map(drop));
            }
            _ => break,
        }
        let mut report = xhttp_core::sync::lock(&tally).clone();
        report.grant = *xhttp_core::sync::lock(&grant_time);
        report.tokens_installed = manager.generation();
        report.store_errors = manager.store_errors();
        report.store_load = *xhttp_core::sync::lock(&load);
        report.store_lock = *xhttp_core::sync::lock(&lock);
        report.store_swap = *xhttp_core::sync::lock(&swap);
        report.store_save = *xhttp_core::sync::lock(&save);
        report.leases_taken = leases.load(Ordering::Relaxed);
        let line = serde_json::to_string(&report)
            .map_err(|err| Error::decode(format!("the report: {err}")))?;
        say(&format!("done {line}"));
    }
    Ok(())
}

/// A spawned call's outcome; a caller task that panicked counts as failed.
fn flatten(
    joined: Result<Result<xhttp::Response, Error>, tokio::task::JoinError>,
) -> Result<(), Error> {
    match joined {
        Ok(outcome) => outcome.map(drop),
        Err(_) => Err(Error::new(xhttp::ErrorKind::Internal).with_message("a caller panicked")),
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

/// A replica process, seen from its parent.
///
/// ```no_run
/// use std::time::Duration;
/// use xhttp_demo::fleet::{Replica, ReplicaConfig};
///
/// let config = ReplicaConfig::new("redis://127.0.0.1:6379", "demo", "http://127.0.0.1:8080".into(), 64);
/// let mut replica = Replica::spawn(&std::env::current_exe().unwrap(), &[], &config).unwrap();
/// replica.expect("ready", Duration::from_secs(30)).unwrap();
/// replica.send("run 2").unwrap();
/// let report = replica.report(Duration::from_secs(30)).unwrap();
/// println!("{} ok", report.ok);
/// ```
pub struct Replica {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Replica {
    /// Starts `program args…` as a replica with `config`.
    pub fn spawn(program: &Path, args: &[&str], config: &ReplicaConfig) -> Result<Replica, String> {
        let config = serde_json::to_string(config).map_err(|err| err.to_string())?;
        let mut child = Command::new(program)
            .args(args)
            .env(REPLICA_ENV, config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|err| format!("cannot start a replica: {err}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tell, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tell.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Replica {
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    /// Sends one command line.
    pub fn send(&mut self, command: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("the replica's stdin is closed")?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|err| format!("the replica is gone: {err}"))
    }

    /// What follows `word` on the next line that starts with it, within `within`.
    pub fn expect(&self, word: &str, within: Duration) -> Result<String, String> {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(word) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(err) => {
                    return Err(format!(
                        "the replica said no {word:?} within {within:?}: {err}"
                    ))
                }
            }
        }
    }

    /// The next phase's report.
    pub fn report(&self, within: Duration) -> Result<Report, String> {
        let line = self.expect("done", within)?;
        serde_json::from_str(&line).map_err(|err| format!("a report that is not one: {err}"))
    }

    /// Kills the process at once (`SIGKILL`): nothing it holds is released.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Closing stdin ends a replica's command loop; one that does not end is killed.
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

/// Seeds `store` with a login from the testkit server, as a replica's `set_tokens` would
/// store it, claiming `claimed` of life on the wall clock, named `login`.
pub async fn seed(
    store: &impl TokenStore,
    access: &str,
    refresh: &str,
    claimed: Duration,
    login: &str,
) -> Result<(), Error> {
    let mut tokens = StoredTokens::new(Secret::new(access), Some(Secret::new(refresh)));
    tokens.expires_at = Some(std::time::SystemTime::now() + claimed);
    tokens.session = Some(login.to_owned());
    store.save(&tokens).await
}
