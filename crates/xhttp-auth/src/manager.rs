//! [`TokenManager`]: one token and one refresh per credential, however many callers.
//!
//! # The problem
//!
//! Every seed wraps axios with a flag and a queue: the first 401 sets `isRefreshing`, starts
//! the refresh, and queues the other requests until it ends. Their peers show where that
//! breaks (see `ANCHORS.md`):
//!
//! - a 401 that arrives *after* the refresh finished, for a request sent with the old token,
//!   starts a second refresh, which presents a refresh token the server already rotated away:
//!   reuse detection revokes the family and logs the user out (axios-auth-refresh #13, #210);
//! - a refresh that fails leaves the queue hanging, or rejects it with a cancellation, and
//!   runs the logout once per queued request;
//! - nothing bounds the refresh, so a hung token endpoint hangs everyone;
//! - the caller that started the refresh can cancel it for all the others.
//!
//! # How the manager works
//!
//! - Each token carries a **generation**. A rejection names the generation its request was
//!   sent with ([`TokenManager::refresh_after_rejection`]): if the manager already holds a
//!   newer one of the same session, that one is returned with no call at all.
//! - A **session** is what one login gives: [`TokenManager::set_tokens`] (a new login, an
//!   account switch) starts one, [`TokenManager::clear`] ends one, refreshes stay in it.
//!   Generations are never reused across sessions, and the manager remembers where the
//!   current session began, so a generation names its session too. A rejection of a request
//!   sent in an older session is **never replayed** with the new session's token (a `DELETE`
//!   meant for account A must not run as user B): it gets
//!   [`ErrorKind::SessionChanged`](xhttp_core::ErrorKind::SessionChanged) with no token call.
//!   A refresh still running when the session changes is disowned: its result is not kept,
//!   and its waiters get `SessionChanged` too. Tokens adopted from a shared store during a
//!   refresh stay in the session when they descend from the same login (another replica's
//!   refresh; the store names the login, [`StoredTokens::session`]); tokens of another
//!   login (a replica that called `set_tokens`) start a new session here too, and the
//!   rejected requests waiting for that refresh get `SessionChanged`, not the other login's
//!   token.
//! - **A fleet shares one refresh** through a store that locks (the `xhttp-redis` crate):
//!   a refresh first reads the store and adopts newer tokens another replica stored, then
//!   takes the store's lease, reads again, and only then calls the grant, storing its
//!   result with a compare-and-swap fenced by the lease (the protocol is in
//!   [`store`](crate::store)). Requests never touch the store: only refreshes do. A store
//!   that fails is skipped: the refresh goes on as this process's own single flight, the
//!   failure is logged and counted ([`TokenManager::store_errors`]), and if the refresh
//!   fails anyway its error says the store was skipped.
//! - At most one refresh runs at a time, as **its own task**, so a dropped caller never
//!   cancels it; it is bounded by one deadline (default 10 s) that covers all of it, retries
//!   included, and a panic in it becomes an error for every waiter. Proactive refreshes
//!   (token about to expire) and reactive ones (a rejection) share that single flight. A
//!   waiter with a deadline of its own ([`TokenManager::current_before`], or a request's
//!   [`Deadline`] through the [`AuthLayer`](crate::AuthLayer)) stops waiting at it with a
//!   `Timeout`; the flight goes on for the others.
//! - **A transient failure is retried inside the flight**, not handed to every waiter: a
//!   token call that never left (connection refused, DNS, connect timeout) or that the
//!   server says it did not process (503, 429, 408) is sent again after an exponential
//!   backoff with jitter (100 ms doubling to 2 s, or the server's `Retry-After`) while the
//!   waiters keep waiting; a retry whose wait would end past the deadline is not made.
//!   Never retried: `invalid_grant` and every other 4xx, an answer that cannot be read,
//!   and, for a grant that presents a rotating refresh token, any failure after which the
//!   server may have consumed it (500, 502, 504, a timeout after sending, a reset
//!   mid-answer): a grant that consumes nothing says so with
//!   [`RetrySafety::Always`](crate::grant::RetrySafety). The decision lives in one place
//!   (`retry.rs`), for every grant.
//! - **A rejected token is dead.** Once the server rejected generation `g`, no caller is
//!   handed `g` again: while the refresh runs they wait for it (pause-while-refreshing), and
//!   after it failed they start the next one, or, within the cool-down, get its error.
//! - A **definitive** failure (`invalid_grant`) clears the tokens, fires
//!   `on_session_expired` once, and every caller, now and later, gets the **same**
//!   `SessionExpired` error at once with no token call, until [`TokenManager::set_tokens`].
//!   When the flight gives up on a **transient** failure its waiters get `RefreshFailed`,
//!   saying what failed ([`Error::refresh_failure`]: timeout, endpoint status, malformed
//!   answer, unreachable) and how many token calls the flight made (`attempts()`); for a
//!   cool-down (default 1 s, counted from the **end** of the failed refresh, so a timeout is
//!   followed by quiet too) callers that need a refresh get that error at once.
//! - **A server that rejects even fresh tokens** does not cost a token call per request:
//!   when the tokens of two rejection-triggered refreshes in a row are rejected before any
//!   response accepted them, within 30 s and the first half of their life (once may be a
//!   revocation that hit a token's first use, and is simply refreshed again), the next
//!   rejection-triggered refresh waits `1 s, 2 s, 4 s, ...` (at most 60 s) after that token
//!   was issued, and callers get `Unauthorized` meanwhile
//!   ([`TokenManagerBuilder::rejection_backoff`]): at most about `log2(60) + 3 + T / 60`
//!   token calls in `T` seconds.
//! - **A server that expires tokens before the client stops using them** (requests slower
//!   than the skew, a slow token endpoint, a clock ahead): when a token some response had
//!   accepted is rejected in its soft window, every later token stops being used earlier, by
//!   one more skew, doubling each time, never more than a quarter of its life. A token
//!   rejected earlier in its life was revoked: that teaches nothing.
//! - In the soft window before expiry, callers get the still-valid token at once and one
//!   background refresh starts; if it fails the valid token stays in service, and the next
//!   background attempt waits a minute. A successful one never delays the next token's:
//!   every token gets its soft-window refresh.
//!
//! # What is refused where
//!
//! - An access token must be visible ASCII with no space (`%x21-7E`, RFC 6750's `b64token`
//!   goes in a header), a refresh token visible ASCII (`%x20-7E`, RFC 6749 `VSCHAR`). A token
//!   breaking that is refused where it enters, before it can break every request:
//!   [`set_tokens`](TokenManager::set_tokens) returns `InvalidRequest`; a grant's answer
//!   (or your own [`RefreshGrant`]'s) is a `RefreshFailed`; a store's is not adopted (the
//!   [`FileStore`](crate::FileStore) itself reports it as `Decode`).
//! - An impossible configuration (a window share that is NaN, negative or above 1, a
//!   duration over ten years, a zero refresh timeout, a timed refresh with no tokio runtime)
//!   is a `Config` error from [`TokenManagerBuilder::try_build`], or, after
//!   [`TokenManagerBuilder::build`], from every call. Nothing panics.
//! - The current access and refresh tokens are registered with the core masker
//!   ([`xhttp_core::mask::KnownSecret`]) for exactly as long as they are current, so no
//!   error, notice or log line can print them, even quoted by a server.
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use xhttp_core::error::RefreshFailure;
use xhttp_core::mask::KnownSecret;
// Every critical section on the manager's mutexes is a few assignments with no call that can
// panic halfway, so a poisoned lock still guards consistent state.
use xhttp_core::sync::lock;
use xhttp_core::{Deadline, Error, ErrorKind, SharedClock, TimeoutScope, TokioClock};

use crate::grant::{GrantResponse, RefreshGrant};
use crate::retry::{self, Backoff};
use crate::store::{Lock, MemoryStore, RefreshLock, StoredTokens, Swap, TokenStore};
use crate::token::{check_access_token, check_duration, check_refresh_token, Token, Windows};
use crate::Secret;

/// The outcome of a refresh, shared by every waiter.
type Outcome = Result<Arc<Token>, Error>;

/// Holds one credential's token and runs its refreshes. A cheap cloneable handle: clients,
/// layers and tasks that share it share one token and one refresh.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use futures_util::future::BoxFuture;
/// use xhttp_auth::{GrantResponse, RefreshGrant, Secret, TokenManager};
/// use xhttp_core::Error;
///
/// #[derive(Debug)]
/// struct Counter(std::sync::atomic::AtomicU64);
///
/// impl RefreshGrant for Counter {
///     fn request<'a>(&'a self, _: Option<&'a Secret>) -> BoxFuture<'a, Result<GrantResponse, Error>> {
///         let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
///         Box::pin(async move {
///             Ok(GrantResponse {
///                 access_token: Secret::new(format!("access-{n}")),
///                 refresh_token: Some(Secret::new(format!("refresh-{n}"))),
///                 expires_in: Some(Duration::from_secs(3600)),
///                 received_at: tokio::time::Instant::now(),
///             })
///         })
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let manager = TokenManager::builder(Counter(Default::default())).build();
/// manager.set_tokens(Secret::new("access-login"), Some(Secret::new("refresh-login")), Some(Duration::from_secs(3600))).await.unwrap();
/// let token = manager.current().await.unwrap();
/// assert_eq!(token.access().expose(), "access-login");
///
/// // The server rejected generation 1: one refresh, and a late rejection of the same
/// // generation gets the new token with no second call.
/// let fresh = manager.refresh_after_rejection(token.generation()).await.unwrap();
/// let again = manager.refresh_after_rejection(token.generation()).await.unwrap();
/// assert_eq!(fresh.access().expose(), "access-0");
/// assert_eq!(again.generation(), fresh.generation());
/// # });
/// ```
#[derive(Clone)]
pub struct TokenManager {
    shared: Arc<Shared>,
}

struct Shared {
    grant: Arc<dyn RefreshGrant>,
    store: Arc<dyn TokenStore>,
    clock: SharedClock,
    config: Config,
    on_session_expired: Option<Arc<dyn Fn() + Send + Sync>>,
    state: Mutex<State>,
    /// Told of every new token, for the timed refresh task (which holds only this and a weak
    /// handle, so that dropping the last manager ends it).
    changed: Arc<Notify>,
    timed_task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Why the configuration is impossible, when `build` was given one: every call fails with
    /// it instead of panicking.
    broken: Option<Error>,
    /// The newest generation a response accepted ([`TokenManager::note_accepted`]): outside
    /// the lock, so that the common path reads it with a load.
    accepted: AtomicU64,
    /// Token store calls that failed and were skipped ([`TokenManager::store_errors`]).
    store_errors: AtomicU64,
}

#[derive(Clone)]
struct Config {
    windows: Windows,
    refresh_timeout: Duration,
    cooldown: Duration,
    soft_interval: Duration,
    /// Between the token calls of one flight.
    backoff: Backoff,
    /// Between rejection-triggered refreshes whose tokens the server rejected at once.
    rejection_base: Duration,
    rejection_cap: Duration,
}

/// A token no response accepted, rejected less than this after a rejection-triggered refresh
/// issued it (and within the first half of its life), counts as "the server rejects even
/// fresh tokens" (the answer to a request sent with it is back within a request's time,
/// seconds; 30 s leaves room for a slow one). A token that some response accepted, or one
/// rejected late in its life, was revoked or expired: that is no sign of churn.
const FRESH_REJECTION: Duration = Duration::from_secs(30);

/// The most [`State::margin`] grows to (a token's quarter of life bounds it first).
const MAX_MARGIN: Duration = Duration::from_secs(300);

#[derive(Default)]
struct State {
    token: Option<Arc<Token>>,
    /// The current tokens registered with the masker; replaced with the token, dropped with it.
    known: Vec<KnownSecret>,
    /// The last generation handed out; tokens count up from 1, across sessions.
    generation: u64,
    /// The first generation of the current session: any lower one belongs to an older one.
    session_floor: u64,
    /// Counts sessions, so that a refresh started in one never lands in the next.
    epoch: u64,
    flight: Option<Flight>,
    /// The newest generation the server rejected: a token of this generation or older is
    /// dead, and is never handed out again (callers wait for, or start, the next refresh).
    dead: u64,
    /// The refresh credential is dead: the one error every caller gets, at once, until new
    /// tokens are set (cloned, so every caller sees the same message and attempt count).
    expired: Option<Error>,
    /// When the last *failed* background refresh in the soft window started (a successful
    /// one clears it, so the next token gets its own soft window).
    soft_attempt: Option<Instant>,
    /// The last failed refresh and when it ended, for the cool-down.
    failed: Option<(Instant, Error)>,
    /// When the current token was installed, and whether a rejection-triggered refresh
    /// issued it.
    issued: Option<(Instant, bool)>,
    /// Tokens from rejection-triggered refreshes that the server rejected at once, in a row.
    churn: u32,
    /// Added to the skew of every new token: learned from a server that expired tokens (ones
    /// it had accepted) in their soft window, before the client stopped using them (requests
    /// slower than the skew, or a token endpoint slower than it). Doubles each time, from one
    /// skew; a token never loses more than a quarter of its life to it.
    margin: Duration,
    /// No rejection-triggered refresh starts before this instant (the churn back-off); the
    /// error callers get meanwhile.
    hold: Option<(Instant, Error)>,
    /// Names the login session: a new one with every `set_tokens` and `clear`, the same across
    /// refreshes. Dedupe keys on it, so that responses never cross sessions.
    session: Option<Arc<str>>,
    /// Names the login the current tokens descend from, in the store, for every process
    /// sharing it ([`StoredTokens::session`]): drawn by `set_tokens`, adopted from the store
    /// otherwise; `None` until either happens.
    login: Option<Arc<str>>,
}

impl State {
    fn new_session(&mut self) {
        // One counter for the process, so that two managers never name a session alike.
        static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.session = Some(Arc::from(format!("session-{n}")));
    }

    /// Ends the current session: generations handed out so far belong to an older one, and
    /// a refresh still running is disowned (its task finds the epoch changed).
    fn end_session(&mut self) {
        self.new_session();
        self.epoch += 1;
        self.session_floor = self.generation + 1;
        self.flight = None;
        self.failed = None;
        self.soft_attempt = None;
        self.issued = None;
        self.churn = 0;
        self.hold = None;
    }

    /// Makes `token` current, with its secrets registered for exactly as long.
    fn install(&mut self, token: Arc<Token>) {
        self.known = token_secrets(&token);
        self.token = Some(token);
    }

    /// Forgets the token and its registered secrets.
    fn forget(&mut self) {
        self.token = None;
        self.known.clear();
    }
}

fn token_secrets(token: &Token) -> Vec<KnownSecret> {
    let mut known = vec![KnownSecret::register(token.access().expose())];
    if let Some(refresh) = token.refresh() {
        known.push(KnownSecret::register(refresh.expose()));
    }
    known
}

#[derive(Clone)]
struct Flight {
    outcome: watch::Receiver<Option<Outcome>>,
}

impl Flight {
    /// Waits for the outcome, or until the caller's deadline, whichever comes first. A
    /// waiter that gives up never cancels the flight: the others still get its outcome.
    async fn wait_until(self, deadline: Option<Deadline>) -> Outcome {
        let Some(deadline) = deadline else {
            return self.wait().await;
        };
        match tokio::time::timeout_at(deadline.0, self.wait()).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => Err(Error::timeout(TimeoutScope::Total)
                .with_message("the call's deadline passed while it waited for the token refresh")),
        }
    }

    async fn wait(mut self) -> Outcome {
        match self.outcome.wait_for(Option::is_some).await {
            Ok(outcome) => match &*outcome {
                Some(outcome) => outcome.clone(),
                None => Err(flight_lost()),
            },
            Err(_) => Err(flight_lost()),
        }
    }

    /// The refresh task ended without telling anyone (its runtime shut down).
    fn is_lost(&self) -> bool {
        self.outcome.has_changed().is_err() && self.outcome.borrow().is_none()
    }
}

fn flight_lost() -> Error {
    Error::new(ErrorKind::RefreshFailed)
        .with_refresh_failure(RefreshFailure::Other)
        .with_message("the token refresh task ended without an outcome")
}

/// What a caller does next, decided under the lock.
enum Next {
    Use(Arc<Token>),
    Wait(Flight),
    Fail(Error),
}

/// Options of a [`TokenManager`].
///
/// ```
/// use std::time::Duration;
/// use xhttp_auth::{RefreshGrant, TokenManager};
///
/// fn build(grant: impl RefreshGrant) -> TokenManager {
///     TokenManager::builder(grant)
///         .refresh_timeout(Duration::from_secs(5))
///         .on_session_expired(|| eprintln!("session expired: show the login page"))
///         .build()
/// }
/// ```
#[must_use]
pub struct TokenManagerBuilder {
    grant: Arc<dyn RefreshGrant>,
    store: Arc<dyn TokenStore>,
    clock: SharedClock,
    config: Config,
    on_session_expired: Option<Arc<dyn Fn() + Send + Sync>>,
    timed: bool,
}

impl TokenManagerBuilder {
    /// Where tokens are kept between calls (default: in memory).
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// The clock (default: tokio's, so tests run on a paused clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The soft and hard windows and the skew. Shares must be in `0.0..=1.0` and lengths at
    /// most ten years ([`Windows::validate`]); others are a `Config` error.
    pub fn windows(mut self, windows: Windows) -> Self {
        self.config.windows = windows;
        self
    }

    /// The refresh deadline: how long one refresh may take, **its retries included**, before
    /// every waiter gets `RefreshFailed` (default 10 s: axios-auth-refresh has none, and a
    /// hung token endpoint hangs every request). Within it the flight retries the token
    /// calls the server did not process (see [`refresh_backoff`](Self::refresh_backoff));
    /// a retry whose wait would end past it is not made, and the last failure is returned
    /// at once. Zero or more than ten years is a `Config` error.
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.config.refresh_timeout = timeout;
        self
    }

    /// The waits between the token calls of one refresh: retry `n` (from 0) waits the
    /// server's `Retry-After` when it sent one, else `min(base * 2^n, cap)` scaled by a random
    /// factor in `[0.5, 1]` (equal jitter, never zero). Default 100 ms and 2 s: a 10 s
    /// refresh deadline holds about eight calls. Which failures are retried is the grant's
    /// [`RetrySafety`](crate::grant::RetrySafety): never `invalid_grant` or another 4xx but
    /// 408 and 429, and never, for a rotating grant, a failure after which the server may
    /// have consumed the refresh token. A zero `base`, a `cap` below it or over ten years is
    /// a `Config` error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xhttp_auth::{RefreshGrant, TokenManager};
    ///
    /// fn build(grant: impl RefreshGrant) -> TokenManager {
    ///     TokenManager::builder(grant)
    ///         .refresh_backoff(Duration::from_millis(200), Duration::from_secs(1))
    ///         .refresh_jitter(|| 1.0) // deterministic: always the full bound
    ///         .build()
    /// }
    /// ```
    pub fn refresh_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.config.backoff.base = base;
        self.config.backoff.cap = cap;
        self
    }

    /// The random source of [`refresh_backoff`](Self::refresh_backoff)'s jitter: a value in
    /// `[0, 1]` (default a fast thread-local generator; NaN or values outside are clamped).
    /// Tests pass a constant to make the waits exact.
    pub fn refresh_jitter(mut self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.config.backoff.jitter = Arc::new(random);
        self
    }

    /// After a failed refresh, how long from **the end** of that refresh (timeouts included)
    /// callers that need a refresh get its error at once instead of a new one (default 1 s;
    /// at most ten years). Counted from the end, a refresh that timed out after 10 s is
    /// followed by a second of quiet, not by a new token call per wave of callers.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.config.cooldown = cooldown;
        self
    }

    /// How a server that rejects even fresh tokens is kept from costing a token call per
    /// request. When the server rejects a token that no response had accepted
    /// ([`TokenManager::note_accepted`]) less than 30 s (and less than half the token's
    /// lifetime) after a rejection-triggered refresh issued it, for the `k`-th time in a
    /// row with `k` at least 2 (the first time may be a revocation that hit a token's first
    /// use: it is refreshed again at once), no rejection-triggered refresh starts
    /// before `min(base * 2^(k-2), cap)` after that token was issued; meanwhile callers with
    /// the dead token get `Unauthorized` at once. Default 1 s and 60 s: over `T` seconds of
    /// such rejections, at most about `log2(cap / base) + 3 + T / cap` token calls (21
    /// sequential calls at one instant cost 2; one a second for 21 s cost 6). A token that
    /// lives longer, one a response accepted, or one a proactive refresh issued, ends the
    /// streak. A zero `base`, a
    /// `cap` below it or over ten years is a `Config` error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xhttp_auth::{RefreshGrant, TokenManager};
    ///
    /// fn build(grant: impl RefreshGrant) -> TokenManager {
    ///     TokenManager::builder(grant)
    ///         .rejection_backoff(Duration::from_secs(2), Duration::from_secs(300))
    ///         .build()
    /// }
    /// ```
    pub fn rejection_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.config.rejection_base = base;
        self.config.rejection_cap = cap;
        self
    }

    /// How often a background refresh may start in the soft window **after a failed one**
    /// (default once a minute, so a failing token endpoint is not called on every request
    /// while the token is valid; at most ten years). A successful background refresh never
    /// delays the next token's: every token gets its soft-window refresh.
    pub fn soft_retry_interval(mut self, interval: Duration) -> Self {
        self.config.soft_interval = interval;
        self
    }

    /// Called once when the session expires (where a front end would clear the token and log out), not
    /// once per failed request.
    pub fn on_session_expired(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_session_expired = Some(Arc::new(hook));
        self
    }

    /// Also refresh on a timer, at the start of each token's soft window, from a background
    /// task that ends when the last handle to the manager is dropped (the timed
    /// refresh). Off by default: refresh on use covers callers that are active. Needs a tokio
    /// runtime when the manager is built.
    pub fn timed_refresh(mut self, enabled: bool) -> Self {
        self.timed = enabled;
        self
    }

    /// Builds the manager, or says why its configuration is impossible (an
    /// [`ErrorKind::Config`] error): a window share that is NaN, negative or above 1, a
    /// duration over ten years, a zero refresh timeout, or a timed refresh outside a tokio
    /// runtime.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xhttp_auth::{RefreshGrant, TokenManager, Windows};
    ///
    /// fn build(grant: impl RefreshGrant) {
    ///     let windows = Windows { soft_share: f64::NAN, ..Windows::default() };
    ///     let err = TokenManager::builder(grant).windows(windows).try_build().unwrap_err();
    ///     assert_eq!(err.kind(), xhttp_core::ErrorKind::Config);
    /// }
    /// ```
    pub fn try_build(self) -> Result<TokenManager, Error> {
        self.check()?;
        Ok(self.build())
    }

    /// Builds the manager. It never panics: with an impossible configuration (see
    /// [`try_build`](Self::try_build), which reports it at once) every call of the manager
    /// fails with that `Config` error instead.
    pub fn build(self) -> TokenManager {
        let broken = self.check().err();
        let timed = self.timed && broken.is_none();
        let shared = Arc::new(Shared {
            grant: self.grant,
            store: self.store,
            clock: self.clock,
            config: self.config,
            on_session_expired: self.on_session_expired,
            state: Mutex::new(State::default()),
            changed: Arc::new(Notify::new()),
            timed_task: Mutex::new(None),
            broken,
            accepted: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
        });
        if timed {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let task = runtime.spawn(timed_refresh(
                    Arc::downgrade(&shared),
                    shared.changed.clone(),
                ));
                *lock(&shared.timed_task) = Some(task.abort_handle());
            }
        }
        TokenManager { shared }
    }

    fn check(&self) -> Result<(), Error> {
        let config = &self.config;
        config.windows.validate()?;
        if config.refresh_timeout.is_zero() {
            return Err(Error::config("the token manager's refresh timeout is zero"));
        }
        check_duration("refresh timeout", config.refresh_timeout)?;
        check_duration("cool-down", config.cooldown)?;
        check_duration("soft retry interval", config.soft_interval)?;
        for (name, base, cap) in [
            ("refresh backoff", config.backoff.base, config.backoff.cap),
            (
                "rejection backoff",
                config.rejection_base,
                config.rejection_cap,
            ),
        ] {
            check_duration(name, cap)?;
            if base.is_zero() || base > cap {
                return Err(Error::config(format!(
                    "the token manager's {name} must start above zero and at most at its cap"
                )));
            }
        }
        if self.timed && tokio::runtime::Handle::try_current().is_err() {
            return Err(no_runtime());
        }
        Ok(())
    }
}

fn no_runtime() -> Error {
    Error::config("the token manager's refresh runs on tokio: call it inside a tokio runtime")
}

impl TokenManager {
    /// Options for a manager that refreshes with `grant`.
    pub fn builder(grant: impl RefreshGrant) -> TokenManagerBuilder {
        TokenManagerBuilder {
            grant: Arc::new(grant),
            store: Arc::new(MemoryStore::new()),
            clock: Arc::new(TokioClock),
            config: Config {
                windows: Windows::default(),
                refresh_timeout: Duration::from_secs(10),
                cooldown: Duration::from_secs(1),
                soft_interval: Duration::from_secs(60),
                backoff: Backoff::new(),
                rejection_base: Duration::from_secs(1),
                rejection_cap: Duration::from_secs(60),
            },
            on_session_expired: None,
            timed: false,
        }
    }

    /// Sets tokens obtained elsewhere (a login, an account switch), ends a session-expired
    /// state, and saves them to the store. Returns the new token.
    ///
    /// This starts a **new session**: a request sent with an older session's token that the
    /// server rejects is never replayed with these tokens (it gets
    /// [`ErrorKind::SessionChanged`]), and a refresh still running for the old session is
    /// disowned.
    ///
    /// Errors: [`ErrorKind::InvalidRequest`] when the access token is empty or not visible
    /// ASCII without spaces, or the refresh token is not visible ASCII (a newline, a NUL):
    /// such a token could never be sent, and nothing changes. A failure to save to the store
    /// is only logged: the tokens are in use.
    ///
    /// ```
    /// # use xhttp_auth::{Secret, TokenManager};
    /// # async fn run(manager: TokenManager) {
    /// let err = manager.set_tokens(Secret::new("a\nb"), None, None).await.unwrap_err();
    /// assert_eq!(err.kind(), xhttp_core::ErrorKind::InvalidRequest);
    /// # }
    /// ```
    pub async fn set_tokens(
        &self,
        access: Secret,
        refresh: Option<Secret>,
        expires_in: Option<Duration>,
    ) -> Result<Arc<Token>, Error> {
        if let Some(err) = &self.shared.broken {
            return Err(err.clone());
        }
        check_access_token(&access).map_err(Error::invalid_request)?;
        if let Some(refresh) = &refresh {
            check_refresh_token(refresh).map_err(Error::invalid_request)?;
        }
        let now = self.shared.clock.now();
        let token = {
            let mut state = lock(&self.shared.state);
            state.end_session();
            state.generation += 1;
            let token = Arc::new(Token::new(
                access,
                refresh,
                now,
                expires_in,
                state.generation,
                &self.shared.config.windows,
                state.margin,
            ));
            state.install(token.clone());
            state.issued = Some((now, false));
            state.expired = None;
            state.login = Some(Arc::from(xhttp_core::random::unique_name("login-")));
            (token, state.login.clone())
        };
        let (token, login) = token;
        self.shared.changed.notify_waiters();
        let mut stored = self.shared.to_stored(&token);
        stored.session = login.map(|login| login.to_string());
        if let Err(err) = self.shared.store.save(&stored).await {
            self.shared
                .store_skipped("could not save the new tokens to the token store", &err);
        }
        Ok(token)
    }

    /// Forgets the tokens (a logout) and ends the session: later calls get `SessionExpired`
    /// until new tokens are set. Does not fire `on_session_expired` (the caller knows).
    pub async fn clear(&self) {
        {
            let mut state = lock(&self.shared.state);
            state.end_session();
            state.forget();
            state.expired = Some(session_expired().with_message("logged out: log in again"));
        }
        if let Err(err) = self.shared.store.clear().await {
            self.shared
                .store_skipped("could not clear the token store", &err);
        }
    }

    /// The token to send now.
    ///
    /// Returns at once with a valid token; in the soft window also starts one background
    /// refresh. In the hard window, after expiry, with no token yet (the store is consulted
    /// first), or when the server rejected the current token (a rejected generation is
    /// dead: it is never handed out again, whether its refresh is running or has failed),
    /// waits for the single refresh, or starts it. Within the cool-down after a failed
    /// refresh, gets that refresh's error at once instead.
    pub async fn current(&self) -> Outcome {
        self.current_until(None).await
    }

    /// [`current`](Self::current), giving up at `deadline` with a `Timeout` error if it has
    /// to wait for a refresh that long. Giving up never cancels the refresh: the other
    /// waiters still get its outcome. The [`AuthLayer`](crate::AuthLayer) passes the
    /// request's [`Deadline`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use xhttp_auth::TokenManager;
    /// # async fn run(manager: TokenManager) {
    /// let deadline = xhttp_core::Deadline::after(Duration::from_secs(2));
    /// match manager.current_before(deadline).await {
    ///     Ok(token) => println!("generation {}", token.generation()),
    ///     Err(err) if err.is_timeout() => println!("no token within 2 s"),
    ///     Err(err) => println!("{err}"),
    /// }
    /// # }
    /// ```
    pub async fn current_before(&self, deadline: Deadline) -> Outcome {
        self.current_until(Some(deadline)).await
    }

    pub(crate) async fn current_until(&self, deadline: Option<Deadline>) -> Outcome {
        match self.shared.next_for_current() {
            Next::Use(token) => Ok(token),
            Next::Fail(err) => Err(err),
            Next::Wait(flight) => flight.wait_until(deadline).await,
        }
    }

    /// The token to send now if it is at hand without waiting (`None`: call
    /// [`current`](TokenManager::current)). Layers use it to skip a boxed future on the
    /// common path. Safe outside a tokio runtime: a refresh that cannot start there is
    /// reported by `current`.
    pub fn current_now(&self) -> Option<Arc<Token>> {
        match self.shared.next_for_current() {
            Next::Use(token) => Some(token),
            _ => None,
        }
    }

    /// Called when the server rejected a request sent with the token of `generation`.
    ///
    /// - `generation` from an older session (a `set_tokens` or `clear` came since): fails
    ///   with [`ErrorKind::SessionChanged`] at once, with no call: the request must not be
    ///   replayed with another session's credentials. (In the session-expired state it is
    ///   `SessionExpired`, as for every call.)
    /// - The manager already holds a newer token of the same session (the late rejection of
    ///   a request that was in flight while another refresh ran): returns it with no call.
    /// - Otherwise the generation is **dead**: it is never handed out again. Starts, or
    ///   joins, the single refresh, and new callers wait for it too. Within the cool-down
    ///   after a failed refresh, fails at once with that refresh's error; while the server
    ///   keeps rejecting the tokens of rejection-triggered refreshes at once, fails at once
    ///   with `Unauthorized` until the back-off allows the next refresh
    ///   ([`TokenManagerBuilder::rejection_backoff`]).
    pub async fn refresh_after_rejection(&self, generation: u64) -> Outcome {
        self.refresh_after_rejection_until(generation, None).await
    }

    /// [`refresh_after_rejection`](Self::refresh_after_rejection), giving up at `deadline`
    /// with a `Timeout` error if the refresh takes that long; the refresh goes on for the
    /// other waiters.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use xhttp_auth::TokenManager;
    /// # async fn run(manager: TokenManager, rejected_generation: u64) {
    /// let deadline = xhttp_core::Deadline::after(Duration::from_secs(2));
    /// let fresh = manager.refresh_after_rejection_before(rejected_generation, deadline).await;
    /// # }
    /// ```
    pub async fn refresh_after_rejection_before(
        &self,
        generation: u64,
        deadline: Deadline,
    ) -> Outcome {
        self.refresh_after_rejection_until(generation, Some(deadline))
            .await
    }

    async fn refresh_after_rejection_until(
        &self,
        generation: u64,
        deadline: Option<Deadline>,
    ) -> Outcome {
        match self.shared.next_after_rejection(generation) {
            Next::Use(token) => Ok(token),
            Next::Fail(err) => Err(err),
            Next::Wait(flight) => {
                let token = flight.wait_until(deadline).await?;
                // The refresh may have adopted another login's tokens from a shared store:
                // a request of this login must not be replayed with them.
                if generation < lock(&self.shared.state).session_floor {
                    return Err(session_changed());
                }
                Ok(token)
            }
        }
    }

    /// Tells the manager that the server rejected the token of `generation`, without waiting
    /// for what follows: the generation is dead (no call is handed it again), and the
    /// refresh it calls for starts as the manager's own task, for the next calls. For a
    /// caller that cannot use the new token itself (a stream whose trailers carried the
    /// rejection, a call out of replays); one that can awaits
    /// [`refresh_after_rejection`](Self::refresh_after_rejection) instead.
    ///
    /// ```
    /// # async fn run(manager: xhttp_auth::TokenManager) -> Result<(), xhttp_core::Error> {
    /// let token = manager.current().await?;
    /// // ... the server answered UNAUTHENTICATED after the answer had begun:
    /// manager.report_rejected(token.generation());
    /// # Ok(()) }
    /// ```
    pub fn report_rejected(&self, generation: u64) {
        // The synchronous part of a rejection-triggered refresh marks the generation dead
        // and starts the flight; its outcome is for the callers that wait on it.
        let _ = self.refresh_after_rejection(generation).now_or_never();
    }

    /// Tells the manager that a response accepted the token of `generation`: the server
    /// took it at least once. The refresh layer of `xhttp-refresh` calls this for
    /// every answer that is not a rejection, and so does anyone who drives the manager by
    /// hand. It tells churn from revocation: a token the server rejects before accepting it,
    /// just after a rejection-triggered refresh issued it, means the server rejects even
    /// fresh tokens, and the next refresh is held back
    /// ([`TokenManagerBuilder::rejection_backoff`]); a token the server accepted and then
    /// rejected was revoked or expired, and is simply refreshed. One atomic load on the
    /// common path.
    ///
    /// ```
    /// # async fn run(manager: xhttp_auth::TokenManager) -> Result<(), xhttp_core::Error> {
    /// let token = manager.current().await?;
    /// // ... the request sent with it came back 200:
    /// manager.note_accepted(token.generation());
    /// # Ok(()) }
    /// ```
    pub fn note_accepted(&self, generation: u64) {
        let accepted = &self.shared.accepted;
        if accepted.load(Ordering::Relaxed) < generation {
            accepted.fetch_max(generation, Ordering::AcqRel);
        }
    }

    /// How many token store calls failed and were skipped since the manager was built: a
    /// lock, a read or a write of the store that returned an error. Each was logged as a
    /// warning; the refresh went on without the store (see [`store`](crate::store)).
    ///
    /// ```
    /// # async fn run(manager: xhttp_auth::TokenManager) {
    /// if manager.store_errors() > 0 {
    ///     eprintln!("the token store failed: replicas may refresh on their own");
    /// }
    /// # }
    /// ```
    pub fn store_errors(&self) -> u64 {
        self.shared.store_errors.load(Ordering::Relaxed)
    }

    /// The generation of the token held now (0: none yet).
    pub fn generation(&self) -> u64 {
        lock(&self.shared.state).generation
    }

    /// A name for the current login session, stable across refreshes and new with every
    /// [`set_tokens`](TokenManager::set_tokens) or [`clear`](TokenManager::clear): callers of
    /// different sessions must never share a response (dedupe keys on it). Never contains a
    /// token.
    ///
    /// ```
    /// # use xhttp_auth::{RefreshGrant, Secret, TokenManager};
    /// # async fn run(manager: TokenManager) {
    /// let before = manager.session_identity();
    /// manager.set_tokens(Secret::new("a"), None, None).await.unwrap();
    /// assert_ne!(before, manager.session_identity());
    /// # }
    /// ```
    pub fn session_identity(&self) -> Arc<str> {
        let mut state = lock(&self.shared.state);
        if state.session.is_none() {
            state.new_session();
        }
        state
            .session
            .clone()
            .unwrap_or_else(|| Arc::from("session"))
    }

    /// Whether the session has expired (the refresh credential is dead).
    pub fn is_session_expired(&self) -> bool {
        lock(&self.shared.state).expired.is_some()
    }
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("TokenManager")
            .field("grant", &self.shared.grant)
            .field("generation", &state.generation)
            .field("refreshing", &state.flight.is_some())
            .field("session_expired", &state.expired.is_some())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn next_for_current(self: &Arc<Self>) -> Next {
        if let Some(err) = &self.broken {
            return Next::Fail(err.clone());
        }
        let now = self.clock.now();
        let mut state = lock(&self.state);
        if let Some(err) = &state.expired {
            return Next::Fail(err.clone());
        }
        if state.flight.as_ref().is_some_and(Flight::is_lost) {
            state.flight = None;
        }
        match state.token.clone() {
            Some(token) if token.generation() <= state.dead => {
                // Rejected by the server: wait for (or start) the next refresh, never send it.
                self.join_or_start(&mut state, now, true)
            }
            Some(token) if !token.in_hard_window(now) => {
                let soft_due = state.soft_attempt.is_none_or(|at| {
                    now.saturating_duration_since(at) >= self.config.soft_interval
                });
                if token.in_soft_window(now) && state.flight.is_none() && soft_due {
                    state.soft_attempt = Some(now);
                    // Without a runtime there is no background refresh: the valid token
                    // serves, and the hard window reports the missing runtime.
                    let _ = self.start_flight(&mut state);
                }
                Next::Use(token)
            }
            _ => self.join_or_start(&mut state, now, false),
        }
    }

    fn next_after_rejection(self: &Arc<Self>, generation: u64) -> Next {
        if let Some(err) = &self.broken {
            return Next::Fail(err.clone());
        }
        let now = self.clock.now();
        let mut state = lock(&self.state);
        if let Some(err) = &state.expired {
            return Next::Fail(err.clone());
        }
        if generation < state.session_floor {
            return Next::Fail(session_changed());
        }
        if state.flight.as_ref().is_some_and(Flight::is_lost) {
            state.flight = None;
        }
        if let Some(token) = state.token.clone() {
            if token.generation() > generation {
                return Next::Use(token);
            }
            if token.generation() > state.dead {
                state.dead = token.generation();
                self.note_rejection(&mut state, &token, now);
                self.learn_margin(&mut state, &token, now);
            }
        }
        self.join_or_start(&mut state, now, true)
    }

    /// The server rejected the current token for the first time: if a rejection-triggered
    /// refresh issued it moments ago and no response has accepted it, the server rejects even
    /// fresh tokens, and the next rejection-triggered refresh is held back, longer each time
    /// in a row.
    fn note_rejection(&self, state: &mut State, token: &Token, now: Instant) {
        let never_accepted = self.accepted.load(Ordering::Acquire) < token.generation();
        let fresh = |at: Instant| {
            let window = token.expires_at().map_or(FRESH_REJECTION, |expiry| {
                (expiry.saturating_duration_since(at) / 2).min(FRESH_REJECTION)
            });
            now.saturating_duration_since(at) < window
        };
        match state.issued {
            Some((at, true)) if never_accepted && fresh(at) => {
                state.churn = state.churn.saturating_add(1);
                if state.churn < 2 {
                    // Once may be a revocation that hit a token's first use: refresh again
                    // at once. Twice in a row is the server rejecting fresh tokens.
                    state.hold = None;
                    return;
                }
                let wait = self
                    .config
                    .rejection_base
                    .checked_mul(2u32.saturating_pow((state.churn - 2).min(31)))
                    .map_or(self.config.rejection_cap, |d| {
                        d.min(self.config.rejection_cap)
                    });
                let until = at.checked_add(wait).unwrap_or(now);
                tracing::warn!(
                    in_a_row = state.churn,
                    ?wait,
                    "the server rejected a token a refresh had just issued: holding back the next refresh"
                );
                let err = Error::new(ErrorKind::Unauthorized)
                    .with_message(
                        "the server rejected the token a refresh had just issued; the next \
                         refresh is held back",
                    )
                    .with_retry_after(until.saturating_duration_since(now));
                state.hold = Some((until, err));
            }
            _ => {
                state.churn = 0;
                state.hold = None;
            }
        }
    }

    /// A token the server had accepted, rejected in its soft window: the server's expiry
    /// came before the client's, so later tokens stop being used earlier.
    fn learn_margin(&self, state: &mut State, token: &Token, now: Instant) {
        let accepted = self.accepted.load(Ordering::Acquire) >= token.generation();
        let late_in_life = token.soft_at().is_some_and(|soft| now >= soft);
        if accepted && late_in_life && !token.skew().is_zero() {
            state.margin = state
                .margin
                .saturating_mul(2)
                .max(token.skew())
                .min(MAX_MARGIN);
            tracing::debug!(
                margin = ?state.margin,
                "the server expired a token before the client stopped using it: later tokens \
                 stop earlier"
            );
        }
    }

    fn join_or_start(self: &Arc<Self>, state: &mut State, now: Instant, rejected: bool) -> Next {
        if let Some(flight) = &state.flight {
            return Next::Wait(flight.clone());
        }
        if let Some((ended, err)) = &state.failed {
            if now.saturating_duration_since(*ended) < self.config.cooldown {
                return Next::Fail(err.clone());
            }
        }
        if rejected {
            if let Some((until, err)) = &state.hold {
                if now < *until {
                    return Next::Fail(err.clone());
                }
            }
        }
        match self.start_flight(state) {
            Ok(flight) => Next::Wait(flight),
            Err(err) => Next::Fail(err),
        }
    }

    /// Starts the refresh task. Called with the state locked, so exactly one starts.
    fn start_flight(self: &Arc<Self>, state: &mut State) -> Result<Flight, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| no_runtime())?;
        let (tell, outcome) = watch::channel(None);
        let flight = Flight { outcome };
        state.flight = Some(flight.clone());
        let held = state.token.clone();
        let login = state.login.clone();
        let epoch = state.epoch;
        let shared = self.clone();
        runtime.spawn(async move {
            let calls = AtomicU32::new(0);
            let timeout = shared.config.refresh_timeout;
            // One deadline for the whole flight: store lock, token calls and the waits
            // between them.
            let deadline = Instant::now() + timeout;
            let skipped = Mutex::new(None);
            let run = AssertUnwindSafe(shared.refresh(held, login, &calls, deadline, &skipped))
                .catch_unwind();
            let result = match tokio::time::timeout_at(deadline, run).await {
                Ok(Ok(result)) => result,
                Ok(Err(_panic)) => {
                    Err(Error::new(ErrorKind::Internal).with_message("the token refresh panicked"))
                }
                Err(_elapsed) => Err(Error::new(ErrorKind::RefreshFailed)
                    .with_refresh_failure(RefreshFailure::Timeout)
                    .with_message(format!(
                        "the token refresh did not finish within {timeout:?}"
                    ))),
            };
            let calls = calls.load(Ordering::SeqCst);
            let skipped = lock(&skipped).take();
            let result = result.map_err(|err| {
                let err = err.with_attempts(calls);
                match skipped {
                    Some(step) => note_store_skipped(err, step),
                    None => err,
                }
            });
            let outcome = shared.finish(result, epoch).await;
            // Nobody waiting is fine: the outcome is in the state already.
            let _ = tell.send(Some(outcome));
        });
        Ok(flight)
    }

    /// One refresh, as the store's protocol says: adopt what another process stored; or
    /// wait for the lock and adopt what its holder stored at its release; or, holding the
    /// lock, call the grant (retrying what may be retried) and compare-and-swap the result
    /// in. A store call that fails is skipped
    /// (`skipped` names the first, for the error of a refresh that fails anyway).
    async fn refresh(
        &self,
        held: Option<Arc<Token>>,
        login: Option<Arc<str>>,
        calls: &AtomicU32,
        deadline: Instant,
        skipped: &Mutex<Option<&'static str>>,
    ) -> Result<TokenData, Error> {
        let skip = |step: &'static str, err: &Error| {
            self.store_skipped(step, err);
            lock(skipped).get_or_insert(step);
        };
        let held_access = held.as_ref().map(|t| t.access().clone());
        let mut stored = self.load_usable(&skip).await?;
        if let Some(adopted) = self.newer_in_store(held_access.as_ref(), &stored) {
            return Ok(adopted);
        }
        let fleet_lock = loop {
            let lease = deadline.saturating_duration_since(Instant::now());
            let lock = match self.store.lock(lease).await {
                Ok(Lock::Unsupported) => break None,
                Ok(Lock::Held(lock)) => Some(lock),
                // Another process finished with the lock while this one waited: what it
                // stored is read now, by every waiter at once.
                Ok(Lock::Released) => None,
                Err(err) => {
                    skip(
                        "could not lock the token store; refreshing without it",
                        &err,
                    );
                    break None;
                }
            };
            // Under the lock too: a holder that released just before may have stored newer
            // tokens.
            stored = self.load_usable(&skip).await?;
            if let Some(adopted) = self.newer_in_store(held_access.as_ref(), &stored) {
                return Ok(adopted);
            }
            if lock.is_some() {
                break lock;
            }
            // Released with nothing newer (its holder's refresh failed): ask again.
        };
        let refresh_token = held
            .as_ref()
            .and_then(|t| t.refresh().cloned())
            .or_else(|| stored.as_ref().and_then(|s| s.refresh_token.clone()));
        // Tokens taken from the store name their login; held ones are of this manager's.
        let login = match (&held, &stored) {
            (None, Some(stored)) => stored.session.as_deref().map(Arc::from).or(login),
            _ => login,
        };
        if self.grant.needs_refresh_token() && refresh_token.is_none() {
            return Err(session_expired().with_message("no refresh token: log in first"));
        }
        let response = match self
            .request_with_retries(refresh_token.as_ref(), calls, deadline)
            .await
        {
            Ok(response) => response,
            Err(err) if err.kind() == ErrorKind::SessionExpired && fleet_lock.is_some() => {
                // Ended for the fleet before the lease goes: the next holder finds it so and
                // makes no token call with the dead refresh token.
                if let Err(clear) = self.store.clear().await {
                    skip("could not clear the token store", &clear);
                }
                return Err(err);
            }
            Err(err) => return Err(err),
        };
        check_access_token(&response.access_token)
            .and_then(|()| {
                response
                    .refresh_token
                    .as_ref()
                    .map_or(Ok(()), check_refresh_token)
            })
            .map_err(|why| {
                Error::new(ErrorKind::RefreshFailed)
                    .with_refresh_failure(RefreshFailure::Malformed)
                    .with_message(why)
            })?;
        let data = TokenData::from_grant(response, refresh_token.clone(), login);
        let new = self.data_to_stored(&data);
        let fence = fleet_lock.as_ref().and_then(RefreshLock::fence);
        let outcome = self.store.swap(refresh_token.as_ref(), &new, fence).await;
        let result = match outcome {
            Ok(Swap::Conflict(None)) if fleet_lock.is_some() => {
                // Under the lease, an empty store lost its tokens (a restart without
                // persistence, an eviction): the new ones seed it again, or every replica
                // would refresh on its own from now on.
                tracing::info!(
                    "the token store was empty under the lease: storing the refreshed tokens"
                );
                if let Err(err) = self.store.save(&new).await {
                    skip(
                        "could not save the refreshed tokens to the token store",
                        &err,
                    );
                }
                Ok(data)
            }
            Ok(Swap::Saved) | Ok(Swap::Conflict(None)) => Ok(data),
            Ok(Swap::Conflict(Some(theirs)))
                if check_stored(&theirs).is_ok()
                    && held_access.as_ref() != Some(&theirs.access_token) =>
            {
                tracing::debug!("another process stored newer tokens during the refresh");
                Ok(self.adopt_stored(theirs))
            }
            Ok(Swap::Conflict(Some(_))) => Ok(data),
            // Another process ended the session (a logout) while this one refreshed.
            Err(err) if err.kind() == ErrorKind::SessionExpired => Err(err),
            Err(err) => {
                skip(
                    "could not save the refreshed tokens to the token store",
                    &err,
                );
                Ok(data)
            }
        };
        drop(fleet_lock);
        result
    }

    /// What the store holds, if it can be sent; a failed read is skipped. A store that says
    /// the session ended (`SessionExpired`: another process logged out, or had its refresh
    /// token refused) ends this refresh with that error.
    async fn load_usable(
        &self,
        skip: &impl Fn(&'static str, &Error),
    ) -> Result<Option<StoredTokens>, Error> {
        match self.store.load().await {
            Ok(stored) => Ok(stored.filter(|stored| match check_stored(stored) {
                Ok(()) => true,
                Err(why) => {
                    tracing::warn!(
                        why,
                        "the token store holds a token that cannot be sent; ignoring it"
                    );
                    false
                }
            })),
            Err(err) if err.kind() == ErrorKind::SessionExpired => Err(err),
            Err(err) => {
                skip("could not read the token store; refreshing anyway", &err);
                Ok(None)
            }
        }
    }

    /// The stored tokens as this refresh's result, when they are not the ones held (another
    /// process stored them) and have not expired.
    fn newer_in_store(
        &self,
        held_access: Option<&Secret>,
        stored: &Option<StoredTokens>,
    ) -> Option<TokenData> {
        let stored = stored.as_ref()?;
        let newer = held_access != Some(&stored.access_token);
        (newer && !self.stored_is_stale(stored)).then(|| self.adopt_stored(stored.clone()))
    }

    /// A store call failed: log it, count it, go on without the store.
    fn store_skipped(&self, what: &'static str, err: &Error) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %err, "{what}");
    }

    /// The grant's call, sent again after the failures [`retry::retries`] allows for this
    /// grant, with [`Backoff`] waits, as long as the wait ends before `deadline`. `calls`
    /// counts the token calls, for the error's `attempts()`.
    async fn request_with_retries(
        &self,
        refresh_token: Option<&Secret>,
        calls: &AtomicU32,
        deadline: Instant,
    ) -> Result<GrantResponse, Error> {
        let safety = self.grant.retry_safety();
        let mut retry: u32 = 0;
        loop {
            calls.fetch_add(1, Ordering::SeqCst);
            let err = match self.grant.request(refresh_token).await {
                Ok(response) => return Ok(response),
                Err(err) => classify(err),
            };
            if !retry::retries(&err, safety) {
                return Err(err);
            }
            let wait = self.config.backoff.delay(retry, &err);
            if Instant::now()
                .checked_add(wait)
                .is_none_or(|at| at >= deadline)
            {
                tracing::debug!(
                    ?wait,
                    "token call failed; a retry would end past the refresh deadline"
                );
                return Err(err);
            }
            tracing::debug!(
                retry,
                ?wait,
                status = ?err.status(),
                failure = ?err.refresh_failure(),
                "token call failed, retrying inside the refresh"
            );
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }

    /// Publishes a refresh's result in the state before any waiter wakes; a result of an
    /// older session (`epoch`) is dropped, and its waiters learn that the session changed.
    async fn finish(&self, result: Result<TokenData, Error>, epoch: u64) -> Outcome {
        let now = self.clock.now();
        let outcome = {
            let mut state = lock(&self.state);
            if state.epoch != epoch {
                tracing::debug!("the session changed during the refresh: its result is dropped");
                return Err(session_changed());
            }
            state.flight = None;
            match result {
                Ok(data) => {
                    let after_rejection = state
                        .token
                        .as_ref()
                        .is_some_and(|t| t.generation() <= state.dead);
                    if let Some(theirs) = &data.login {
                        if state.login.as_ref().is_some_and(|ours| ours != theirs) {
                            // Another replica logged in anew: its tokens start a session
                            // here too, and this session's rejected requests are not
                            // replayed with them.
                            tracing::info!(
                                "the token store holds another login's tokens: a new session \
                                 starts with them"
                            );
                            state.end_session();
                        }
                        state.login = Some(theirs.clone());
                    }
                    state.generation += 1;
                    let token = Arc::new(Token::new(
                        data.access,
                        data.refresh,
                        data.received_at,
                        data.lifetime,
                        state.generation,
                        &self.config.windows,
                        state.margin,
                    ));
                    state.install(token.clone());
                    state.failed = None;
                    // The once-a-minute limit is for failed background attempts: the new
                    // token gets its own soft-window refresh.
                    state.soft_attempt = None;
                    state.issued = Some((now, after_rejection));
                    if !after_rejection {
                        state.churn = 0;
                        state.hold = None;
                    }
                    Ok(token)
                }
                Err(err) if err.kind() == ErrorKind::SessionExpired => {
                    let first = state.expired.is_none();
                    // One error value for every caller, now and later.
                    let err = state.expired.get_or_insert(err).clone();
                    state.forget();
                    Err((err, first))
                }
                Err(err) => {
                    let err = classify(err);
                    state.failed = Some((now, err.clone()));
                    return Err(err);
                }
            }
        };
        match outcome {
            Ok(token) => {
                self.changed.notify_waiters();
                Ok(token)
            }
            Err((err, first)) => {
                if first {
                    if let Err(clear) = self.store.clear().await {
                        self.store_skipped("could not clear the token store", &clear);
                    }
                    tracing::info!("session expired: the refresh credential was rejected");
                    if let Some(hook) = &self.on_session_expired {
                        hook();
                    }
                }
                Err(err)
            }
        }
    }

    fn stored_is_stale(&self, stored: &StoredTokens) -> bool {
        stored
            .expires_at
            .is_some_and(|at| at <= self.clock.system_now())
    }

    fn adopt_stored(&self, stored: StoredTokens) -> TokenData {
        let lifetime = stored.expires_at.map(|at| {
            at.duration_since(self.clock.system_now())
                .unwrap_or(Duration::ZERO)
        });
        TokenData {
            access: stored.access_token,
            refresh: stored.refresh_token,
            received_at: self.clock.now(),
            lifetime,
            login: stored.session.as_deref().map(Arc::from),
        }
    }

    fn data_to_stored(&self, data: &TokenData) -> StoredTokens {
        let elapsed = self.clock.now().saturating_duration_since(data.received_at);
        StoredTokens {
            access_token: data.access.clone(),
            refresh_token: data.refresh.clone(),
            expires_at: data.lifetime.and_then(|lifetime| {
                self.clock
                    .system_now()
                    .checked_add(lifetime.saturating_sub(elapsed))
            }),
            session: data.login.as_deref().map(str::to_owned),
        }
    }

    /// The store's form of `token`: its expiry as the server set it (the skew the manager
    /// takes off is each reader's own), on the wall clock; no login name.
    fn to_stored(&self, token: &Token) -> StoredTokens {
        let now = self.clock.now();
        StoredTokens {
            access_token: token.access().clone(),
            refresh_token: token.refresh().cloned(),
            expires_at: token.expires_at().and_then(|at| {
                let left = at.saturating_duration_since(now) + token.skew();
                self.clock.system_now().checked_add(left)
            }),
            session: None,
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.timed_task).take() {
            task.abort();
        }
    }
}

/// New tokens before they become a [`Token`] with a generation.
struct TokenData {
    access: Secret,
    refresh: Option<Secret>,
    received_at: Instant,
    lifetime: Option<Duration>,
    /// The login they descend from ([`StoredTokens::session`]), when known.
    login: Option<Arc<str>>,
}

impl TokenData {
    fn from_grant(
        response: GrantResponse,
        used_refresh: Option<Secret>,
        login: Option<Arc<str>>,
    ) -> TokenData {
        TokenData {
            access: response.access_token,
            // RFC 6749 section 6: a response without a refresh token keeps the old one.
            refresh: response.refresh_token.or(used_refresh),
            received_at: response.received_at,
            lifetime: response.expires_in,
            login,
        }
    }
}

fn session_expired() -> Error {
    Error::new(ErrorKind::SessionExpired)
}

fn session_changed() -> Error {
    Error::new(ErrorKind::SessionChanged)
}

/// Whether stored tokens could be sent (a store written by hand, or by an older version).
fn check_stored(stored: &StoredTokens) -> Result<(), &'static str> {
    check_access_token(&stored.access_token)?;
    if let Some(session) = &stored.session {
        crate::store::check_session(session)?;
    }
    stored
        .refresh_token
        .as_ref()
        .map_or(Ok(()), check_refresh_token)
}

/// A refresh that failed after skipping the store says so: a replica refreshing on its own
/// is what the reader of the error needs to know.
fn note_store_skipped(err: Error, step: &'static str) -> Error {
    let message = match err.message() {
        Some(message) => format!("{message} (the token store was skipped: {step})"),
        None => format!("the token store was skipped: {step}"),
    };
    err.with_message(message)
}

/// A refresh failure as every waiter sees it: `RefreshFailed` with what failed
/// ([`RefreshFailure`]), the status, `Retry-After` and never-sent mark kept, the original as
/// the cause. `SessionExpired`, `SessionChanged` and `Internal` (a panic: a bug, not a
/// passing failure) stay as they are.
fn classify(err: Error) -> Error {
    match err.kind() {
        ErrorKind::SessionExpired | ErrorKind::SessionChanged | ErrorKind::Internal => err,
        ErrorKind::RefreshFailed if err.refresh_failure().is_some() => err,
        ErrorKind::RefreshFailed => {
            let failure = failure_of(&err);
            err.with_refresh_failure(failure)
        }
        _ => {
            let mut failed = Error::new(ErrorKind::RefreshFailed)
                .with_message("the token endpoint call failed")
                .with_refresh_failure(failure_of(&err))
                .with_source(err.clone());
            if let Some(status) = err.status() {
                failed = failed.with_status(status);
            }
            if let Some(wait) = err.retry_after() {
                failed = failed.with_retry_after(wait);
            }
            if err.is_never_sent() {
                failed = failed.with_never_sent();
            }
            failed
        }
    }
}

/// What failed, read from an error that does not say.
fn failure_of(err: &Error) -> RefreshFailure {
    if err.is_never_sent() {
        return RefreshFailure::Unreachable;
    }
    if err.is_timeout() {
        return RefreshFailure::Timeout;
    }
    match err.kind() {
        ErrorKind::Status | ErrorKind::Business => RefreshFailure::Endpoint,
        ErrorKind::Transport => RefreshFailure::Interrupted,
        ErrorKind::Decode | ErrorKind::BodyTooLarge => RefreshFailure::Malformed,
        _ if err.status().is_some() => RefreshFailure::Endpoint,
        _ => RefreshFailure::Other,
    }
}

/// Wakes at the start of each token's soft window and asks for the token, which starts the
/// background refresh. Holds only a weak handle, so it ends with the manager.
async fn timed_refresh(shared: Weak<Shared>, changed: Arc<Notify>) {
    loop {
        // Registered before reading the token, so a token set meanwhile is not missed.
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wake_at = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let state = lock(&shared.state);
            state.token.as_ref().and_then(|t| t.soft_at())
        };
        let due = match wake_at {
            None => {
                notified.as_mut().await;
                false
            }
            Some(at) => tokio::select! {
                _ = tokio::time::sleep_until(at) => true,
                _ = notified.as_mut() => false,
            },
        };
        if !due {
            continue;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let interval = shared.config.soft_interval;
        let manager = TokenManager { shared };
        if let Err(err) = manager.current().await {
            tracing::debug!(error = %err, "timed token refresh failed");
        }
        drop(manager);
        // The refresh runs in the background: wait for its token, or retry after the soft
        // interval if it failed, so a failing endpoint is not called in a loop.
        tokio::select! {
            _ = notified.as_mut() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
