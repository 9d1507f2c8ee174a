//! The manager's side of the store protocol, on tokio's paused clock: managers sharing a
//! store that locks (replicas, here in one process) make one token call between them, adopt
//! each other's tokens, never replay one login's request with another's tokens, and skip a
//! store that fails without failing a call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use xhttp_auth::{
    GrantResponse, Lock, MemoryStore, RefreshGrant, RefreshLock, Secret, StoredTokens, Swap,
    TokenManager, TokenStore,
};
use xhttp_core::{Error, ErrorKind};

/// A token endpoint in memory with rotating refresh tokens and reuse detection.
#[derive(Debug, Default)]
struct Endpoint {
    calls: AtomicUsize,
    reuse: AtomicUsize,
    retired: Mutex<HashSet<String>>,
    /// Answers every call with this status instead, when set.
    failing: Mutex<Option<Error>>,
    /// Holds every call until a permit is added, when set.
    gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// How many of the first calls fail (after the gate), with an error not retried.
    fail_first: AtomicUsize,
}

#[derive(Debug, Clone)]
struct Grant(Arc<Endpoint>);

impl RefreshGrant for Grant {
    fn request<'a>(
        &'a self,
        refresh_token: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        Box::pin(async move {
            let n = self.0.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let gate = self.0.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            if n <= self.0.fail_first.load(Ordering::SeqCst) {
                return Err(Error::new(ErrorKind::Decode)
                    .with_message("the token endpoint answered garbage"));
            }
            if let Some(err) = self.0.failing.lock().unwrap().clone() {
                return Err(err);
            }
            let presented = refresh_token.map(|t| t.expose().to_owned()).unwrap();
            if !self.0.retired.lock().unwrap().insert(presented) {
                self.0.reuse.fetch_add(1, Ordering::SeqCst);
                return Err(Error::new(ErrorKind::SessionExpired).with_message("reused"));
            }
            Ok(GrantResponse {
                access_token: Secret::new(format!("SECRET-AT-{n}")),
                refresh_token: Some(Secret::new(format!("SECRET-RT-{n}"))),
                expires_in: Some(Duration::from_secs(3600)),
                received_at: tokio::time::Instant::now(),
            })
        })
    }
}

/// A store that locks as a Redis store does: the lock is taken only when free (`SET NX`),
/// and its release wakes every waiter (the release message), who then reads rather than
/// taking the lock. Fenced.
#[derive(Debug, Default)]
struct LockingStore {
    tokens: MemoryStore,
    lease: Arc<Lease>,
    fences: AtomicU64,
    /// The fence each swap was handed.
    swapped_with: Mutex<Vec<Option<u64>>>,
    locks: AtomicUsize,
    /// Callers waiting for the lock now.
    waiting: AtomicUsize,
    /// Waits that ended with the holder's release.
    released: AtomicUsize,
}

#[derive(Debug, Default)]
struct Lease {
    held: Mutex<bool>,
    released: tokio::sync::Notify,
}

/// Frees the lease and announces it, when dropped.
struct Held(Arc<Lease>);

impl Drop for Held {
    fn drop(&mut self) {
        *self.0.held.lock().unwrap() = false;
        self.0.released.notify_waiters();
    }
}

impl TokenStore for LockingStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredTokens>, Error>> {
        self.tokens.load()
    }

    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), Error>> {
        self.tokens.save(tokens)
    }

    fn swap<'a>(
        &'a self,
        expected: Option<&'a Secret>,
        new: &'a StoredTokens,
        fence: Option<u64>,
    ) -> BoxFuture<'a, Result<Swap, Error>> {
        self.swapped_with.lock().unwrap().push(fence);
        self.tokens.swap(expected, new, fence)
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.tokens.clear()
    }

    fn lock(&self, _lease: Duration) -> BoxFuture<'_, Result<Lock, Error>> {
        Box::pin(async move {
            // Registered before the attempt, so that a release right after it is seen.
            let released = self.lease.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let was_held = std::mem::replace(&mut *self.lease.held.lock().unwrap(), true);
            if !was_held {
                self.locks.fetch_add(1, Ordering::SeqCst);
                let fence = self.fences.fetch_add(1, Ordering::SeqCst) + 1;
                let held = Held(self.lease.clone());
                return Ok(Lock::Held(RefreshLock::fenced(held, fence)));
            }
            self.waiting.fetch_add(1, Ordering::SeqCst);
            released.await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.released.fetch_add(1, Ordering::SeqCst);
            Ok(Lock::Released)
        })
    }
}

/// A store whose every call fails, as a Redis that is down.
#[derive(Debug, Default)]
struct DownStore {
    calls: AtomicUsize,
}

impl DownStore {
    fn down<T: Send + 'static>(&self) -> BoxFuture<'_, Result<T, Error>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Err(Error::new(ErrorKind::Transport)
            .with_message(
                "the store at 10.0.0.9:6379 refused the connection",
            ))))
    }
}

impl TokenStore for DownStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredTokens>, Error>> {
        self.down()
    }

    fn save<'a>(&'a self, _: &'a StoredTokens) -> BoxFuture<'a, Result<(), Error>> {
        self.down()
    }

    fn swap<'a>(
        &'a self,
        _: Option<&'a Secret>,
        _: &'a StoredTokens,
        _: Option<u64>,
    ) -> BoxFuture<'a, Result<Swap, Error>> {
        self.down()
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.down()
    }

    fn lock(&self, _: Duration) -> BoxFuture<'_, Result<Lock, Error>> {
        self.down()
    }
}

fn manager(endpoint: &Arc<Endpoint>, store: impl TokenStore) -> TokenManager {
    TokenManager::builder(Grant(endpoint.clone()))
        .store(store)
        .build()
}

/// Two replicas on one locking store, the first logged in (`SECRET-AT-0`, `SECRET-RT-0`).
async fn two_replicas() -> (
    Arc<Endpoint>,
    Arc<LockingStore>,
    TokenManager,
    TokenManager,
    Arc<xhttp_auth::Token>,
) {
    let endpoint = Arc::new(Endpoint::default());
    let store = Arc::new(LockingStore::default());
    let a = manager(&endpoint, store.clone());
    let b = manager(&endpoint, store.clone());
    let login = log_in(&a).await;
    (endpoint, store, a, b, login)
}

/// The login every test starts from: `SECRET-AT-0`, `SECRET-RT-0`.
async fn log_in(manager: &TokenManager) -> Arc<xhttp_auth::Token> {
    manager
        .set_tokens(
            Secret::new("SECRET-AT-0"),
            Some(Secret::new("SECRET-RT-0")),
            None,
        )
        .await
        .unwrap()
}

fn assert_no_secret(shown: &str) {
    assert!(!shown.contains("SECRET"), "a secret was shown: {shown}");
}

#[tokio::test(start_paused = true)]
async fn two_replicas_sharing_a_locking_store_make_one_token_call_for_a_thousand_rejections() {
    let (endpoint, store, a, b, login) = two_replicas().await;
    // The other replica starts from the store.
    let adopted = b.current().await.unwrap();
    assert_eq!(adopted.access().expose(), "SECRET-AT-0");
    assert_eq!(endpoint.calls(), 0);

    let mut waiters = Vec::new();
    for i in 0..1000 {
        let (manager, generation) = if i % 2 == 0 {
            (a.clone(), login.generation())
        } else {
            (b.clone(), adopted.generation())
        };
        waiters.push(tokio::spawn(async move {
            manager.refresh_after_rejection(generation).await
        }));
    }
    let mut fresh = HashSet::new();
    for waiter in waiters {
        fresh.insert(waiter.await.unwrap().unwrap().access().expose().to_owned());
    }
    assert_eq!(endpoint.calls(), 1, "one token call for both replicas");
    assert_eq!(endpoint.reuse.load(Ordering::SeqCst), 0);
    assert_eq!(fresh, HashSet::from(["SECRET-AT-1".to_owned()]));
    // The replica that called the grant swapped with its lease's fence; the other adopted,
    // with no swap: from its first read, or from its read under the lease after it.
    assert_eq!(*store.swapped_with.lock().unwrap(), vec![Some(1)]);
    assert!(store.locks.load(Ordering::SeqCst) <= 2);
    assert_eq!(a.store_errors() + b.store_errors(), 0);
}

impl Endpoint {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

const REPLICAS: usize = 50;

/// `REPLICAS` replicas on one locking store, logged in, each with a rejection of its token
/// refreshing, held while one of them makes its token call and every other one waits for the
/// lock; then the token call goes on. The replicas' results, in order.
async fn replicas_waiting_for_one(
    endpoint: &Arc<Endpoint>,
    store: &Arc<LockingStore>,
) -> Vec<Result<Arc<xhttp_auth::Token>, Error>> {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *endpoint.gate.lock().unwrap() = Some(gate.clone());
    let managers: Vec<TokenManager> = (0..REPLICAS)
        .map(|_| manager(endpoint, store.clone()))
        .collect();
    log_in(&managers[0]).await;
    let mut waiters = Vec::new();
    for manager in &managers {
        let held = manager.current().await.unwrap();
        assert_eq!(held.access().expose(), "SECRET-AT-0");
        let manager = manager.clone();
        waiters.push(tokio::spawn(async move {
            manager.refresh_after_rejection(held.generation()).await
        }));
    }
    while store.waiting.load(Ordering::SeqCst) < REPLICAS - 1 {
        tokio::task::yield_now().await;
    }
    assert_eq!(endpoint.calls(), 1, "one replica is in its token call");
    gate.add_permits(REPLICAS);
    let mut results = Vec::new();
    for waiter in waiters {
        results.push(waiter.await.unwrap());
    }
    results
}

/// Replicas that wait while one refreshes are all woken by its release and read its tokens at
/// once: the lock is taken once in all, not once per replica in turn.
#[tokio::test(start_paused = true)]
async fn replicas_waiting_for_the_lock_adopt_at_its_release_without_taking_it() {
    let endpoint = Arc::new(Endpoint::default());
    let store = Arc::new(LockingStore::default());
    for result in replicas_waiting_for_one(&endpoint, &store).await {
        assert_eq!(result.unwrap().access().expose(), "SECRET-AT-1");
    }
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(endpoint.reuse.load(Ordering::SeqCst), 0);
    assert_eq!(
        store.locks.load(Ordering::SeqCst),
        1,
        "the lock was taken once"
    );
    assert_eq!(store.released.load(Ordering::SeqCst), REPLICAS - 1);
    assert_eq!(*store.swapped_with.lock().unwrap(), vec![Some(1)]);
}

/// A holder whose token call fails releases the lock with nothing new stored: the woken
/// replicas find nothing newer and ask for the lock again; one takes it and refreshes, and the
/// rest adopt its tokens. Only the failed holder's caller fails.
#[tokio::test(start_paused = true)]
async fn a_holder_that_fails_hands_the_refresh_to_one_of_the_waiters() {
    let endpoint = Arc::new(Endpoint::default());
    endpoint.fail_first.store(1, Ordering::SeqCst);
    let store = Arc::new(LockingStore::default());
    let results = replicas_waiting_for_one(&endpoint, &store).await;
    let failed: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_no_secret(&format!("{} {:?}", failed[0], failed[0]));
    for fresh in results.iter().filter_map(|r| r.as_ref().ok()) {
        assert_eq!(fresh.access().expose(), "SECRET-AT-2");
    }
    assert_eq!(endpoint.calls(), 2, "the failed call and one more");
    assert_eq!(endpoint.reuse.load(Ordering::SeqCst), 0);
    assert_eq!(store.locks.load(Ordering::SeqCst), 2);
    // Every waiter was woken by the failed holder's release. Those that asked again while the
    // new holder refreshed were woken by its release too; the others found its tokens first.
    let released = store.released.load(Ordering::SeqCst);
    assert!(
        (REPLICAS - 1..=2 * REPLICAS - 3).contains(&released),
        "{released}"
    );
    assert_eq!(*store.swapped_with.lock().unwrap(), vec![Some(2)]);
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_finds_newer_tokens_adopts_them_without_the_lock() {
    let (endpoint, store, a, b, login) = two_replicas().await;
    let held = b.current().await.unwrap();
    a.refresh_after_rejection(login.generation()).await.unwrap();
    assert_eq!(store.locks.load(Ordering::SeqCst), 1);
    // B's token is rejected later: the store already holds A's newer one.
    let fresh = b.refresh_after_rejection(held.generation()).await.unwrap();
    assert_eq!(fresh.access().expose(), "SECRET-AT-1");
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(store.locks.load(Ordering::SeqCst), 1, "one read, no lock");
}

#[tokio::test(start_paused = true)]
async fn another_replicas_new_login_is_never_used_to_replay_this_logins_request() {
    let endpoint = Arc::new(Endpoint::default());
    let store = Arc::new(LockingStore::default());
    let a = manager(&endpoint, store.clone());
    let b = manager(&endpoint, store.clone());
    a.set_tokens(
        Secret::new("SECRET-AT-USER-1"),
        Some(Secret::new("SECRET-RT-USER-1")),
        None,
    )
    .await
    .unwrap();
    let user1 = b.current().await.unwrap();
    let session_before = b.session_identity();
    // Replica A logs in as someone else (an account switch), writing the shared store.
    a.set_tokens(
        Secret::new("SECRET-AT-USER-2"),
        Some(Secret::new("SECRET-RT-USER-2")),
        None,
    )
    .await
    .unwrap();
    // B's request, sent as user 1, is rejected: it must not be replayed as user 2.
    let err = b
        .refresh_after_rejection(user1.generation())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionChanged, "{err:?}");
    assert_no_secret(&format!("{err} {err:?}"));
    // B's new calls go out as user 2, in a new session: no response of user 1 is shared.
    let now = b.current().await.unwrap();
    assert_eq!(now.access().expose(), "SECRET-AT-USER-2");
    assert_ne!(b.session_identity(), session_before);
    assert_eq!(
        endpoint.calls(),
        0,
        "no token call: the store had the tokens"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_that_is_down_is_skipped_counted_and_named_in_a_failed_refresh() {
    let endpoint = Arc::new(Endpoint::default());
    let store = Arc::new(DownStore::default());
    let manager = manager(&endpoint, store.clone());
    let login = log_in(&manager).await;
    assert_eq!(manager.store_errors(), 1, "the login's save");
    let generation = login.generation();
    // 200 rejections: the local single flight makes one call, and nobody fails.
    let waiters: Vec<_> = (0..200)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.refresh_after_rejection(generation).await })
        })
        .collect();
    for waiter in waiters {
        waiter.await.unwrap().unwrap();
    }
    assert_eq!(endpoint.calls(), 1);
    // The refresh's read, lease and write were each skipped.
    assert_eq!(manager.store_errors(), 4);
    assert_eq!(store.calls.load(Ordering::SeqCst), 4);

    // When the token call fails too, the error says the store was skipped.
    *endpoint.failing.lock().unwrap() =
        Some(Error::from_status(http::StatusCode::BAD_REQUEST).with_message("invalid_request"));
    let current = manager.current().await.unwrap();
    let err = manager
        .refresh_after_rejection(current.generation())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed, "{err:?}");
    let shown = format!("{err}");
    assert!(shown.contains("the token store was skipped"), "{shown}");
    assert_no_secret(&format!("{err} {err:?}"));
}

/// A store in which another process ended the session.
#[derive(Debug, Default)]
struct EndedStore;

impl EndedStore {
    fn ended<T: Send + 'static>() -> BoxFuture<'static, Result<T, Error>> {
        Box::pin(std::future::ready(Err(Error::new(
            ErrorKind::SessionExpired,
        )
        .with_message("the session was ended by another process"))))
    }
}

impl TokenStore for EndedStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredTokens>, Error>> {
        Self::ended()
    }

    fn save<'a>(&'a self, _: &'a StoredTokens) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn swap<'a>(
        &'a self,
        _: Option<&'a Secret>,
        _: &'a StoredTokens,
        _: Option<u64>,
    ) -> BoxFuture<'a, Result<Swap, Error>> {
        Self::ended()
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_that_says_the_session_ended_ends_it_here_with_no_token_call() {
    let endpoint = Arc::new(Endpoint::default());
    let expired = Arc::new(AtomicUsize::new(0));
    let manager = TokenManager::builder(Grant(endpoint.clone()))
        .store(EndedStore)
        .on_session_expired({
            let expired = expired.clone();
            move || {
                expired.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build();
    let login = log_in(&manager).await;
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let manager = manager.clone();
            let generation = login.generation();
            tokio::spawn(async move { manager.refresh_after_rejection(generation).await })
        })
        .collect();
    for waiter in waiters {
        let err = waiter.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired, "{err:?}");
    }
    assert_eq!(
        endpoint.calls(),
        0,
        "no token call with a refresh token the fleet gave up"
    );
    assert_eq!(expired.load(Ordering::SeqCst), 1, "the hook fired once");
    assert!(manager.is_session_expired());
    assert_eq!(
        manager.store_errors(),
        0,
        "an ended session is not a store failure"
    );
}
