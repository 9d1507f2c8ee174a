//! A Redis token store for xhttp: **one token refresh per expiry across a fleet** of
//! processes that share one upstream credential with a rotating refresh token.
//!
//! Each process's [`TokenManager`](xhttp_auth::TokenManager) already runs one refresh at a
//! time. Replicas need more: two of them refreshing with the same refresh token is what a
//! server with reuse detection (RFC 9700 section 4.14.2) takes for theft, and it revokes the
//! whole family, logging every replica out. [`RedisStore`] gives the managers of a fleet
//! one store to share, with a lease lock, so that exactly one of them calls the token
//! endpoint per expiry and the others adopt its tokens.
//!
//! ```no_run
//! use xhttp_auth::{OAuth2Refresh, TokenManager};
//! use xhttp_redis::RedisStore;
//!
//! # fn run(grant: OAuth2Refresh) -> Result<(), xhttp_core::Error> {
//! let store = RedisStore::builder("redis://:password@10.0.0.5:6379/0")
//!     .key("billing-api")
//!     .build()?;
//! let manager = TokenManager::builder(grant).store(store).build();
//! # let _ = manager; Ok(()) }
//! ```
//!
//! # The protocol
//!
//! Keys share one hash tag, `<prefix>{<key>}` (default prefix `xhttp:`), so a cluster keeps
//! them together:
//!
//! | key | what |
//! |---|---|
//! | `…:tokens` | a hash: access token, refresh token, wall-clock expiry, login name |
//! | `…:lock` | the lease: a random owner id, with a time to live |
//! | `…:fence` | a counter, increased with every lease granted |
//! | `…:released` | the channel on which a released lease is announced |
//!
//! A refresh ([`xhttp_auth::store`] has the manager's side):
//! 1. reads the tokens: newer ones than the replica holds are adopted, with no lock and no
//!    token call;
//! 2. takes the lease: `SET NX PX` with a random owner id and a time to live of the
//!    refresh's deadline plus a grace ([`RedisStoreBuilder::lease_grace`]), and a new fence
//!    from the counter, in one script. A replica that finds the lease taken waits for the
//!    release message on the channel ([`Lock::Released`]: it reads the tokens then, as
//!    every waiting replica does at the same moment, and adopts them, or asks for the lease
//!    again if nothing newer is there), or for the lease to run out (then it takes it),
//!    whichever comes first (while the subscription is up it looks again only every 5 s, a
//!    net for a lost message; every 50 ms while it is not);
//! 3. once it holds the lease, reads the tokens again and adopts them if a holder that
//!    released just before stored new ones;
//! 4. calls the token endpoint, then stores the result with a script that compares the
//!    stored refresh token with the one it used **and** the fence counter with its own
//!    fence: a refresher whose lease ran out while another was granted cannot overwrite
//!    the newer tokens;
//! 5. releases the lease with a compare-and-delete script (only its own owner id), which
//!    publishes the release.
//!
//! Requests never reach Redis: a replica sends the token it holds, and only its refreshes
//! (one per token lifetime) cost round trips: one read when another replica refreshed
//! (a read, a wait on the lease and a read when it waited for that replica), five (read,
//! lease, read, swap, release) when it refreshes itself.
//!
//! # Failures
//!
//! - **Redis unreachable or failing**: each call fails within
//!   [`RedisStoreBuilder::op_timeout`] and the manager skips the store: its own single
//!   flight still makes one refresh per process, the failure is a warning and a count
//!   ([`TokenManager::store_errors`](xhttp_auth::TokenManager::store_errors)), and a refresh
//!   that fails says the store was skipped. The trade-off: while Redis is down, replicas may
//!   each refresh, which a server with reuse detection can punish.
//! - **A refresher killed while holding the lease**: the lease runs out (the refresh's
//!   deadline plus the grace) and the next replica refreshes with the same refresh token,
//!   which the dead one never got to present. A token call that reached the server before
//!   the kill consumed it, and no lease can save that: keep the grace short.
//! - **A slow Redis**: every call is bounded by the operation timeout, and the whole refresh
//!   by the manager's refresh deadline.
//!
//! The store talks to one Redis (a primary, or a proxy in front of a cluster or a Sentinel
//! group): it follows no `MOVED` redirect and asks no Sentinel.
//!
//! Redis 6 or later and Valkey both run the scripts (`EVAL`, `SET NX PX`, `PUBLISH`). TLS
//! (`rediss://`, with the `rustls` feature, on by default) and `AUTH` (user and password)
//! come from the URL; the password is never shown ([`RedisStore`]'s `Debug` prints the host
//! and key only) and is registered with the core masker, so no error can print it. The
//! tokens are stored in the clear: protect the Redis with TLS, ACLs and a network boundary.

mod codec;
mod scripts;

use crate::scripts::Lua;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, Value};
use tokio::sync::Notify;
use xhttp_auth::{Lock, RefreshLock, Secret, StoredTokens, Swap, TokenStore};
use xhttp_core::mask::KnownSecret;
use xhttp_core::{Error, ErrorKind, TimeoutScope};

/// The longest credential key: a key is a name, not data.
pub const MAX_KEY_LEN: usize = 128;

/// How long a waiter sleeps between looks at a taken lease while the release channel is not
/// subscribed (at start, or after the subscription broke).
const POLL_UNSUBSCRIBED: Duration = Duration::from_millis(50);

/// The longest a waiter sleeps between looks at a taken lease even while subscribed (it is
/// woken by the release message, or when the subscription starts again): a message lost to a
/// connection that died silently costs at most this.
const POLL_SUBSCRIBED: Duration = Duration::from_secs(5);

/// Options of a [`RedisStore`].
///
/// ```
/// use std::time::Duration;
/// use xhttp_redis::RedisStore;
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .key("billing-api")
///     .prefix("myapp:")
///     .op_timeout(Duration::from_millis(500))
///     .lease_grace(Duration::from_secs(1))
///     .build()
///     .unwrap();
/// assert!(format!("{store:?}").contains("myapp:{billing-api}"));
/// ```
#[must_use]
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    url: Secret,
    key: String,
    prefix: String,
    op_timeout: Duration,
    lease_grace: Duration,
    #[cfg(feature = "rustls")]
    root_certificates: Option<Vec<u8>>,
}

impl RedisStoreBuilder {
    /// The credential this store keeps tokens for: one key per upstream credential shared by
    /// the fleet (default `default`). 1 to [`MAX_KEY_LEN`] visible ASCII characters without
    /// `{` or `}`; others are a `Config` error from [`build`](Self::build).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// What every key of this store begins with (default `xhttp:`); at most
    /// [`MAX_KEY_LEN`] visible ASCII characters without `{` or `}`, may be empty.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one call to Redis may take, connecting included, before it fails and the
    /// manager skips the store (default 2 s; between 1 ms and 1 minute).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// How long a lease outlives the deadline of the refresh that took it (default 2 s, at
    /// most 1 minute): the margin for a holder's clock and its last calls. A holder that
    /// died blocks the fleet's refreshes for its deadline plus this.
    pub fn lease_grace(mut self, grace: Duration) -> Self {
        self.lease_grace = grace;
        self
    }

    /// For `rediss://`: trust only the CA certificates in `pem` (PEM text), instead of the
    /// system's roots: a private CA, or a test's.
    ///
    /// ```
    /// let ca = b"-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n".to_vec();
    /// let builder = xhttp_redis::RedisStore::builder("rediss://cache.internal:6380").root_certificates(ca);
    /// # let _ = builder;
    /// ```
    #[cfg(feature = "rustls")]
    pub fn root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates = Some(pem.into());
        self
    }

    /// The store, or a `Config` error: a URL that is not `redis://`, `rediss://` (with the
    /// `rustls` feature) or `redis+unix://`, a bad key or prefix, a timeout out of range.
    /// Nothing connects until the first call: a Redis that is down when the process starts
    /// is a skipped store, not a failed start.
    pub fn build(self) -> Result<RedisStore, Error> {
        check_name("key", &self.key, false)?;
        check_name("prefix", &self.prefix, true)?;
        let minute = Duration::from_secs(60);
        if self.op_timeout < Duration::from_millis(1) || self.op_timeout > minute {
            return Err(Error::config(
                "the Redis token store's operation timeout must be between 1 ms and 1 minute",
            ));
        }
        if self.lease_grace > minute {
            return Err(Error::config(
                "the Redis token store's lease grace must be at most 1 minute",
            ));
        }
        #[cfg(not(feature = "rustls"))]
        if self.url.expose().starts_with("rediss://") {
            return Err(Error::config(
                "a rediss:// URL needs TLS: build xhttp-redis with its `rustls` feature",
            ));
        }
        let info = self.url.expose().into_connection_info().map_err(|err| {
            // The parser's message may quote the URL, password included.
            Error::config(format!(
                "the Redis token store's URL is not a Redis URL ({:?} error)",
                err.kind()
            ))
        })?;
        let password = info.redis_settings().password().map(KnownSecret::register);
        let address = info.addr().to_string();
        let address = match info.redis_settings().db() {
            0 => address,
            db => format!("{address}/{db}"),
        };
        #[cfg(feature = "rustls")]
        install_ring_provider();
        #[cfg(feature = "rustls")]
        let client = match self.root_certificates {
            Some(root_cert) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            None => Client::open(info),
        };
        #[cfg(not(feature = "rustls"))]
        let client = Client::open(info);
        let client = client.map_err(|err| {
            Error::config(format!(
                "the Redis token store cannot use this URL: {}",
                xhttp_core::mask::server_text(&err.to_string(), 256)
            ))
        })?;
        let base = format!("{}{{{}}}", self.prefix, self.key);
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                keys: [
                    format!("{base}:tokens"),
                    format!("{base}:fence"),
                    format!("{base}:lock"),
                    format!("{base}:released"),
                ],
                base,
                address,
                op_timeout: self.op_timeout,
                lease_grace: self.lease_grace,
                connection: tokio::sync::Mutex::new(None),
                channel: Arc::new(Channel::default()),
                listener: Mutex::new(None),
                _password: password,
            }),
        })
    }
}

/// A key part: visible ASCII without the hash-tag braces, bounded.
fn check_name(what: &str, name: &str, may_be_empty: bool) -> Result<(), Error> {
    let fits = (may_be_empty || !name.is_empty())
        && name.len() <= MAX_KEY_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
    if fits {
        Ok(())
    } else {
        Err(Error::config(format!(
            "the Redis token store's {what} must be up to {MAX_KEY_LEN} visible ASCII \
             characters without braces"
        )))
    }
}

/// rustls picks a crypto provider at the first TLS connection and panics when it cannot
/// tell which: install ring, this workspace's provider, unless the process chose one.
#[cfg(feature = "rustls")]
fn install_ring_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another installer is fine: a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Tokens in Redis, shared by every process that opens the same key: a
/// [`TokenStore`] with a fleet-wide lease lock, a fenced compare-and-swap and release
/// messages. See the [crate docs](crate) for the protocol and its failure modes.
///
/// A cheap cloneable handle: clones share one connection.
///
/// ```no_run
/// use xhttp_auth::{Secret, StoredTokens, TokenStore};
/// use xhttp_redis::RedisStore;
///
/// # async fn run() -> Result<(), xhttp_core::Error> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379").key("billing-api").build()?;
/// store.save(&StoredTokens::new(Secret::new("access-1"), Some(Secret::new("refresh-1")))).await?;
/// let stored = store.load().await?.expect("just saved");
/// assert_eq!(stored.access_token.expose(), "access-1");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// Tokens, fence, lock, channel: the order the scripts take them in.
    keys: [String; 4],
    base: String,
    /// Host and port (and database), never the password.
    address: String,
    op_timeout: Duration,
    lease_grace: Duration,
    /// One multiplexed connection, made at the first call and again after it broke.
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// What the release channel has said, shared with its listener.
    channel: Arc<Channel>,
    /// The task that listens on the release channel, started by the first read or lock.
    listener: Mutex<Option<tokio::task::AbortHandle>>,
    /// Keeps the password out of every error and log line for as long as the store lives.
    _password: Option<KnownSecret>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = xhttp_core::sync::lock(&self.listener).take() {
            task.abort();
        }
    }
}

impl RedisStore {
    /// Options for a store on the Redis at `url`: `redis://[user][:password@]host[:port][/db]`,
    /// `rediss://…` for TLS, `redis+unix:///path`.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: Secret::new(url.into()),
            key: "default".to_owned(),
            prefix: "xhttp:".to_owned(),
            op_timeout: Duration::from_secs(2),
            lease_grace: Duration::from_secs(2),
            #[cfg(feature = "rustls")]
            root_certificates: None,
        }
    }

    /// The keys' common part, `<prefix>{<key>}`.
    ///
    /// ```
    /// let store = xhttp_redis::RedisStore::builder("redis://127.0.0.1").key("crm").build().unwrap();
    /// assert_eq!(store.key_base(), "xhttp:{crm}");
    /// ```
    pub fn key_base(&self) -> &str {
        &self.inner.base
    }

    /// Whether release messages reach this store now. The store subscribes at its first
    /// read or lease; while it is subscribed, a replica waiting for the lease is woken by
    /// the holder's release, and otherwise it looks again every 50 ms. A health check can
    /// report it.
    ///
    /// ```
    /// let store = xhttp_redis::RedisStore::builder("redis://127.0.0.1").build().unwrap();
    /// assert!(!store.is_subscribed(), "nothing subscribes before the first call");
    /// ```
    pub fn is_subscribed(&self) -> bool {
        self.inner.channel.subscribed.load(Ordering::Acquire)
    }
}

impl Inner {
    /// The shared connection, connecting first when there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, Error> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = &*slot {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(self.op_timeout));
        let connection = tokio::time::timeout(
            self.op_timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| self.timed_out("connecting"))?
        .map_err(|err| self.failed("connecting", &err))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Sends `command` within the operation timeout. A failure other than the server's
    /// own error answer drops the connection, so that the next call connects anew; a
    /// connection found broken (a Redis restarted, a proxy that closed it) is re-made and
    /// the command sent once more, which every command of this store allows: reads, the
    /// scripts that check their owner or their compare, and deletes repeat harmlessly. A
    /// timeout is not repeated: a frozen Redis would cost twice the wait.
    async fn query(
        &self,
        what: &'static str,
        command: &redis::Cmd,
    ) -> Result<redis::RedisResult<Value>, Error> {
        let mut retried = false;
        loop {
            let mut connection = self.connection().await?;
            let result =
                tokio::time::timeout(self.op_timeout, command.query_async(&mut connection)).await;
            match result {
                Ok(Ok(value)) => return Ok(Ok(value)),
                Ok(Err(err)) if matches!(err.kind(), redis::ErrorKind::Server(_)) => {
                    return Ok(Err(err))
                }
                Ok(Err(err)) => {
                    *self.connection.lock().await = None;
                    let broken = err.is_connection_dropped() || err.is_io_error();
                    if broken && !err.is_timeout() && !retried {
                        retried = true;
                        continue;
                    }
                    return Ok(Err(err));
                }
                Err(_elapsed) => {
                    *self.connection.lock().await = None;
                    return Err(self.timed_out(what));
                }
            }
        }
    }

    /// [`query`](Self::query) that turns the server's error answer into an error too.
    async fn command(&self, what: &'static str, command: &redis::Cmd) -> Result<Value, Error> {
        self.query(what, command)
            .await?
            .map_err(|err| self.failed(what, &err))
    }

    /// Runs `lua` with this store's four keys and `args`: `EVALSHA`, then `EVAL` when the
    /// server does not have the script yet (a restart, a failover, the first call).
    async fn script(&self, what: &'static str, lua: &Lua, args: &[&str]) -> Result<Value, Error> {
        let invoke = |verb: &str, body: &str| {
            let mut command = redis::cmd(verb);
            command.arg(body).arg(self.keys.len()).arg(&self.keys[..]);
            for arg in args {
                command.arg(*arg);
            }
            command
        };
        match self.query(what, &invoke("EVALSHA", &lua.hash)).await? {
            Ok(value) => Ok(value),
            Err(err) if err.code() == Some("NOSCRIPT") => {
                self.command(what, &invoke("EVAL", lua.code)).await
            }
            Err(err) => Err(self.failed(what, &err)),
        }
    }

    fn failed(&self, what: &str, err: &redis::RedisError) -> Error {
        if err.is_timeout() {
            return self.timed_out(what);
        }
        let kind = match err.kind() {
            // A password or a setting of the URL the server refuses: fixed in the config.
            redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig => {
                ErrorKind::Config
            }
            _ if err.is_io_error() || err.is_connection_dropped() => ErrorKind::Transport,
            _ => ErrorKind::Internal,
        };
        let mut error = Error::new(kind).with_message(format!(
            // The cause before the step: "tokens: <cause>" would read as a secret's value
            // to the masker.
            "the Redis token store at {} failed with \"{}\" {what}",
            self.address,
            xhttp_core::mask::server_text(&err.to_string(), 256)
        ));
        if err.is_connection_refusal() {
            error = error.with_never_sent();
        }
        error
    }

    fn timed_out(&self, what: &str) -> Error {
        Error::timeout(TimeoutScope::Attempt).with_message(format!(
            "the Redis token store at {} did not answer within {:?} {what}",
            self.address, self.op_timeout
        ))
    }

    /// Starts the task that turns release messages into wake-ups, unless it runs: once, or
    /// again when the runtime it ran on has shut down.
    fn listen(self: &Arc<Self>) {
        let mut listener = xhttp_core::sync::lock(&self.listener);
        if listener.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = runtime.spawn(listen(
            self.client.clone(),
            self.keys[3].clone(),
            self.op_timeout,
            self.channel.clone(),
        ));
        *listener = Some(task.abort_handle());
    }
}

/// The release channel as the waiters see it.
#[derive(Debug, Default)]
struct Channel {
    /// Woken by every message, and when the subscription (re)starts.
    wake: Notify,
    /// How many release messages came: a waiter woken with this unchanged was woken by a
    /// new subscription, and asks for the lease again rather than reading.
    releases: AtomicU64,
    /// Whether the channel is subscribed now.
    subscribed: AtomicBool,
}

/// Subscribes to the release channel and wakes the waiters at every message, reconnecting
/// with a back-off when the subscription breaks. Holds no handle on the store: the store
/// aborts it when dropped.
async fn listen(client: Client, name: String, op_timeout: Duration, channel: Arc<Channel>) {
    /// Says the channel is not subscribed when the task ends, aborted or with its runtime.
    struct Unsubscribed(Arc<Channel>);
    impl Drop for Unsubscribed {
        fn drop(&mut self) {
            self.0.subscribed.store(false, Ordering::Release);
        }
    }
    let _unsubscribed = Unsubscribed(channel.clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&name).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(op_timeout, connect).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                // A release may have come while the channel was not subscribed. The waiters
                // are woken before the store says it is subscribed, so that a waiter that
                // starts after that is woken only by a message.
                channel.wake.notify_waiters();
                channel.subscribed.store(true, Ordering::Release);
                let mut messages = pubsub.into_on_message();
                while messages.next().await.is_some() {
                    channel.releases.fetch_add(1, Ordering::AcqRel);
                    channel.wake.notify_waiters();
                }
                channel.subscribed.store(false, Ordering::Release);
                tracing::debug!("the Redis token store's release subscription ended");
            }
            Ok(Err(err)) => {
                tracing::debug!(
                    error = %xhttp_core::mask::server_text(&err.to_string(), 256),
                    "could not subscribe to the Redis token store's release channel"
                );
            }
            Err(_) => {
                tracing::debug!("subscribing to the Redis token store's release channel timed out");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Releases the lease when the manager drops the lock: a compare-and-delete on the owner id,
/// run as a task, since a drop cannot wait.
struct Release {
    inner: Arc<Inner>,
    owner: String,
    runtime: tokio::runtime::Handle,
}

impl Drop for Release {
    fn drop(&mut self) {
        let inner = self.inner.clone();
        let owner = std::mem::take(&mut self.owner);
        self.runtime.spawn(async move {
            if let Err(err) = inner
                .script("releasing the lease", &scripts::RELEASE, &[&owner])
                .await
            {
                // The lease runs out on its own.
                tracing::warn!(error = %err, "could not release the Redis token store's lease");
            }
        });
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.inner.address)
            .field("keys", &self.inner.base)
            .field("op_timeout", &self.inner.op_timeout)
            .field("lease_grace", &self.inner.lease_grace)
            .finish_non_exhaustive()
    }
}

/// The outcome of the acquire script: a fence, or how long the other owner's lease has left.
fn acquired(value: &Value) -> Result<Result<u64, Duration>, Error> {
    match value {
        Value::Int(fence) if *fence > 0 => Ok(Ok(*fence as u64)),
        Value::Int(left) => Ok(Err(Duration::from_millis(left.unsigned_abs()))),
        _ => Err(Error::new(ErrorKind::Internal).with_message(
            "the Redis token store's lease script answered something else than a number",
        )),
    }
}

/// The outcome of the swap script: `{1}`, or `{0, <hash>}`.
fn swapped(value: Value) -> Result<Swap, Error> {
    let unexpected = || {
        Error::new(ErrorKind::Internal)
            .with_message("the Redis token store's swap script answered something unexpected")
    };
    let Value::Array(mut items) = value else {
        return Err(unexpected());
    };
    match items.first() {
        Some(Value::Int(1)) => Ok(Swap::Saved),
        Some(Value::Int(0)) if items.len() == 2 => {
            let stored = items.pop().ok_or_else(unexpected)?;
            Ok(Swap::Conflict(codec::decode(stored)?))
        }
        _ => Err(unexpected()),
    }
}

impl TokenStore for RedisStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredTokens>, Error>> {
        Box::pin(async move {
            // Subscribed before the first lease is asked for: a release that ends the first
            // wait is not missed while the subscription is being made.
            self.inner.listen();
            let command = redis::cmd("HGETALL").arg(&self.inner.keys[0]).clone();
            codec::decode(self.inner.command("reading the tokens", &command).await?)
        })
    }

    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let [a, r, e, s] = codec::fields(tokens);
            self.inner
                .script(
                    "saving the tokens",
                    &scripts::SAVE,
                    &["", "", &a, &r, &e, &s],
                )
                .await
                .map(drop)
        })
    }

    fn swap<'a>(
        &'a self,
        expected: Option<&'a Secret>,
        new: &'a StoredTokens,
        fence: Option<u64>,
    ) -> BoxFuture<'a, Result<Swap, Error>> {
        Box::pin(async move {
            let [a, r, e, s] = codec::fields(new);
            let expected = expected.map(Secret::expose).unwrap_or_default();
            let fence = fence.map(|f| f.to_string()).unwrap_or_default();
            let answer = self
                .inner
                .script(
                    "swapping the tokens",
                    &scripts::SWAP,
                    &[expected, &fence, &a, &r, &e, &s],
                )
                .await?;
            swapped(answer)
        })
    }

    /// Ends the session for every process sharing the key: the tokens are replaced by a
    /// mark that makes [`load`](TokenStore::load) and [`swap`](TokenStore::swap) answer
    /// `SessionExpired` until the next [`save`](TokenStore::save) (a new login).
    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.inner
                .script("ending the session", &scripts::END, &[])
                .await
                .map(drop)
        })
    }

    fn lock(&self, lease: Duration) -> BoxFuture<'_, Result<Lock, Error>> {
        Box::pin(async move {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                Error::config("the Redis token store runs on tokio: call it inside a tokio runtime")
            })?;
            self.inner.listen();
            let owner = xhttp_core::random::unique_name("owner-");
            let ttl = lease
                .saturating_add(self.inner.lease_grace)
                .as_millis()
                .clamp(1, u128::from(u32::MAX))
                .to_string();
            loop {
                // Registered before the attempt, so a release right after it is not missed.
                let woken = self.inner.channel.wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let releases = self.inner.channel.releases.load(Ordering::Acquire);
                let answer = self
                    .inner
                    .script("taking the lease", &scripts::ACQUIRE, &[&owner, &ttl])
                    .await?;
                let left = match acquired(&answer)? {
                    Ok(fence) => {
                        let release = Release {
                            inner: self.inner.clone(),
                            owner,
                            runtime,
                        };
                        return Ok(Lock::Held(RefreshLock::fenced(release, fence)));
                    }
                    Err(left) => left,
                };
                let cap = if self.inner.channel.subscribed.load(Ordering::Acquire) {
                    POLL_SUBSCRIBED
                } else {
                    POLL_UNSUBSCRIBED
                };
                let wait = left.clamp(Duration::from_millis(1), cap);
                tokio::select! {
                    () = woken => {
                        // Every waiter reads the holder's tokens now; none takes the lease
                        // only to find them.
                        if self.inner.channel.releases.load(Ordering::Acquire) != releases {
                            return Ok(Lock::Released);
                        }
                        // A new subscription: a release may have been missed, ask again.
                    }
                    // The lease ran out (its holder died) or a message was lost: ask again.
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "rustls"))]
    #[test]
    fn a_tls_url_without_tls_built_is_a_config_error_that_says_so() {
        let err = RedisStore::builder("rediss://:SECRET-PW@cache:6380")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("rustls"), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn the_keys_share_one_hash_tag() {
        let store = RedisStore::builder("redis://127.0.0.1")
            .key("crm")
            .prefix("app:")
            .build()
            .unwrap();
        assert_eq!(
            store.inner.keys,
            [
                "app:{crm}:tokens",
                "app:{crm}:fence",
                "app:{crm}:lock",
                "app:{crm}:released"
            ]
        );
    }
}
