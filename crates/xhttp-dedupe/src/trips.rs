//! The map of trips: who leads a coalesced trip, who follows it, who owns a key, and the
//! guards that take every entry out again whatever happens to its callers (the mechanics).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{Request, Response};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{BoxError, Service};
// Every critical section is a handful of map operations that cannot panic halfway, so a
// poisoned lock still guards a consistent map.
use xhttp_core::sync::lock;
use xhttp_core::{Error, ErrorKind};

use crate::future::ResponseFuture;
use crate::key::{IdentityFn, Key, KeyMap, KeyRules};
use crate::DedupePolicy;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) coalesced: AtomicU64,
    pub(crate) windowed: AtomicU64,
    pub(crate) superseded: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) overflowed: AtomicU64,
    pub(crate) bypassed: AtomicU64,
    pub(crate) lock_timeouts: AtomicU64,
}

/// What every clone of a layer, and every service it built, shares: the options and the map.
pub(crate) struct Shared<T> {
    pub(crate) get_head: DedupePolicy,
    pub(crate) other: DedupePolicy,
    pub(crate) rules: KeyRules,
    pub(crate) max_entries: usize,
    pub(crate) window: Option<Duration>,
    pub(crate) lock_timeout: Duration,
    pub(crate) identity: Option<Arc<IdentityFn>>,
    map: Mutex<KeyMap<Entry<T>>>,
    /// Successes kept by the window, oldest first (the window is fixed, so expiry order is
    /// insertion order): swept on every coalesced call, so kept responses never outlive their
    /// window by more than one call. Locked after `map`, never before.
    kept: Mutex<std::collections::VecDeque<(Instant, Key, u64)>>,
    pub(crate) random: std::hash::RandomState,
    next_id: AtomicU64,
    pub(crate) counters: Counters,
}

enum Entry<T> {
    /// A coalesced trip in flight. Everything about it lives here, changed only with the map
    /// locked: no allocation beyond the map slot unless someone joins.
    Trip {
        id: u64,
        /// Callers waiting for it, the leader included.
        waiters: usize,
        /// Created by the first follower; the leader sends the outcome through it.
        outcome: Option<watch::Sender<Option<Outcome<T>>>>,
        /// The task that drives the trip after its leader left, if it did.
        task: Option<tokio::task::AbortHandle>,
    },
    /// A finished success, served until `until` (the optional window).
    Done {
        id: u64,
        response: Response<T>,
        until: Instant,
    },
    /// One caller owns the key (cancel-previous and reject-duplicate).
    Exclusive { id: u64, cancel: CancellationToken },
}

impl<T> Entry<T> {
    fn id(&self) -> u64 {
        match self {
            Entry::Trip { id, .. } | Entry::Done { id, .. } | Entry::Exclusive { id, .. } => *id,
        }
    }
}

type Outcome<T> = Result<Response<T>, Error>;

impl<T> Shared<T> {
    /// A fresh map for options known to be valid.
    pub(crate) fn new(
        get_head: DedupePolicy,
        other: DedupePolicy,
        rules: KeyRules,
        max_entries: usize,
        window: Option<Duration>,
        lock_timeout: Duration,
        identity: Option<Arc<IdentityFn>>,
    ) -> Self {
        Shared {
            get_head,
            other,
            rules,
            max_entries,
            window,
            lock_timeout,
            identity,
            map: Mutex::new(KeyMap::default()),
            kept: Mutex::new(std::collections::VecDeque::new()),
            random: std::hash::RandomState::new(),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
        }
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

/// A call passed straight through, its error made an [`Error`].
pub(crate) fn direct<S, B, T>(inner: &mut S, request: Request<B>) -> ResponseFuture<T>
where
    S: Service<Request<B>, Response = Response<T>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let future = inner.call(request);
    Box::pin(async move { future.await.map_err(|e| Error::from_boxed(e.into())) })
}

impl<T> Shared<T>
where
    T: Clone + Send + Sync + 'static,
{
    pub(crate) fn coalesce<S, B>(
        self: &Arc<Self>,
        inner: &mut S,
        request: Request<B>,
        key: Key,
    ) -> ResponseFuture<T>
    where
        S: Service<Request<B>, Response = Response<T>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        let mut map = lock(&self.map);
        self.sweep(&mut map);
        match map.get_mut(&key) {
            Some(Entry::Done {
                response, until, ..
            }) if *until > Instant::now() => {
                self.counters.windowed.fetch_add(1, Ordering::Relaxed);
                let response = response.clone();
                return Box::pin(std::future::ready(Ok(response)));
            }
            Some(Entry::Done { .. }) => {
                map.remove(&key);
            }
            Some(Entry::Trip {
                id,
                waiters,
                outcome,
                ..
            }) => {
                *waiters += 1;
                let receiver = outcome
                    .get_or_insert_with(|| watch::channel(None).0)
                    .subscribe();
                let interest = Interest {
                    shared: self.clone(),
                    key,
                    id: *id,
                };
                drop(map);
                self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                // A clone, not the polled service: the follower calls it only if it gives up,
                // and polls it ready then. Moving the polled service in (tower's
                // clone-and-replace) would hold its readiness, a concurrency permit say, for
                // the whole wait.
                let own = Own {
                    service: inner.clone(),
                    request,
                };
                return Box::pin(interest.follow(receiver, self.lock_timeout, own));
            }
            // Another policy owns this key (a per-request override): stay out of its way.
            Some(Entry::Exclusive { .. }) => {
                drop(map);
                return direct(inner, request);
            }
            None => {}
        }
        if self.full(&mut map) {
            drop(map);
            self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
            return direct(inner, request);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        map.insert(
            key.clone(),
            Entry::Trip {
                id,
                waiters: 1,
                outcome: None,
                task: None,
            },
        );
        drop(map);
        // The leader drives the trip in its own future: no task unless it leaves early while
        // others wait (see `Lead`'s `Drop`). A panic below becomes `Internal` for everyone.
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request)));
        let future: BoxFuture<'static, Outcome<T>> = match called {
            Ok(future) => Box::pin(AssertUnwindSafe(future).catch_unwind().map(
                |result| match result {
                    Ok(result) => result.map_err(|e| Error::from_boxed(e.into())),
                    Err(_panic) => Err(
                        Error::new(ErrorKind::Internal).with_message("the shared request panicked"),
                    ),
                },
            )),
            Err(_panic) => Box::pin(std::future::ready(Err(
                Error::new(ErrorKind::Internal).with_message("the shared request panicked")
            ))),
        };
        Box::pin(Lead {
            shared: self.clone(),
            key: Some(key),
            id,
            future: Some(future),
        })
    }

    /// Whether the map holds `max_entries` keys, not counting successes whose window has
    /// ended: those are otherwise removed only when their own key comes again, and would fill
    /// the bound and turn deduplication off for every new key.
    /// Drops the window's expired successes, oldest first.
    fn sweep(&self, map: &mut KeyMap<Entry<T>>) {
        if self.window.is_none() {
            return;
        }
        let now = Instant::now();
        let mut kept = lock(&self.kept);
        while kept.front().is_some_and(|(until, _, _)| *until <= now) {
            let Some((_, key, id)) = kept.pop_front() else {
                break;
            };
            if matches!(map.get(&key), Some(Entry::Done { id: held, .. }) if *held == id) {
                map.remove(&key);
            }
        }
    }

    fn full(&self, map: &mut KeyMap<Entry<T>>) -> bool {
        if map.len() >= self.max_entries && self.window.is_some() {
            let now = Instant::now();
            map.retain(|_, entry| !matches!(entry, Entry::Done { until, .. } if *until <= now));
        }
        map.len() >= self.max_entries
    }

    /// A trip is over: its entry goes (or, for a success with a window, stays until the window
    /// ends; errors are never kept), and the outcome goes to whoever joined.
    fn finish(&self, key: &Key, id: u64, result: &Outcome<T>) {
        let sender = {
            let mut map = lock(&self.map);
            let sender = match map.get_mut(key) {
                Some(Entry::Trip {
                    id: held, outcome, ..
                }) if *held == id => outcome.take(),
                _ => None,
            };
            self.settle(&mut map, key, id, result);
            sender
        };
        if let Some(sender) = sender {
            sender.send_replace(Some(result.clone()));
        }
    }

    fn settle(&self, map: &mut KeyMap<Entry<T>>, key: &Key, id: u64, result: &Outcome<T>) {
        if map.get(key).map(Entry::id) != Some(id) {
            return;
        }
        match (result, self.window) {
            (Ok(response), Some(window)) => {
                // The window is at most an hour (checked at build), so this only fails on a
                // clock near its end: then nothing is kept.
                let Some(until) = Instant::now().checked_add(window) else {
                    map.remove(key);
                    return;
                };
                map.insert(
                    key.clone(),
                    Entry::Done {
                        id,
                        response: response.clone(),
                        until,
                    },
                );
                lock(&self.kept).push_back((until, key.clone(), id));
            }
            _ => {
                map.remove(key);
            }
        }
    }

    pub(crate) fn exclusive<S, B>(
        self: &Arc<Self>,
        inner: &mut S,
        request: Request<B>,
        key: Key,
        cancel_previous: bool,
    ) -> ResponseFuture<T>
    where
        S: Service<Request<B>, Response = Response<T>>,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let mut map = lock(&self.map);
        match map.get(&key) {
            Some(Entry::Exclusive { cancel, .. }) if cancel_previous => {
                cancel.cancel();
                self.counters.superseded.fetch_add(1, Ordering::Relaxed);
            }
            Some(Entry::Done { .. }) | None => {}
            Some(_) if cancel_previous => {
                // A coalesced trip holds the key: run alongside it, untracked.
                drop(map);
                return direct(inner, request);
            }
            Some(_) => {
                drop(map);
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Box::pin(std::future::ready(Err(Error::new(ErrorKind::Duplicate))));
            }
        }
        if !map.contains_key(&key) && self.full(&mut map) {
            drop(map);
            self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
            return direct(inner, request);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        map.insert(
            key.clone(),
            Entry::Exclusive {
                id,
                cancel: cancel.clone(),
            },
        );
        drop(map);
        let owner = Owner {
            shared: self.clone(),
            key,
            id,
        };
        let future = inner.call(request);
        Box::pin(async move {
            let _owner = owner;
            tokio::select! {
                biased;
                () = cancel.cancelled() => Err(Error::new(ErrorKind::Superseded)),
                result = future => result.map_err(|e| Error::from_boxed(e.into())),
            }
        })
    }
}

/// The caller that started a coalesced trip, driving it. If it leaves before the trip ends
/// while others still wait, the trip moves to a task of its own and goes on for them.
struct Lead<T: Clone + Send + Sync + 'static> {
    shared: Arc<Shared<T>>,
    key: Option<Key>,
    id: u64,
    future: Option<BoxFuture<'static, Outcome<T>>>,
}

impl<T: Clone + Send + Sync + 'static> std::future::Future for Lead<T> {
    type Output = Outcome<T>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Ready(Err(lost()));
        };
        let result = futures_util::ready!(future.as_mut().poll(cx));
        self.future = None;
        if let Some(key) = self.key.take() {
            self.shared.finish(&key, self.id, &result);
        }
        Poll::Ready(result)
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for Lead<T> {
    fn drop(&mut self) {
        let (Some(future), Some(key)) = (self.future.take(), self.key.take()) else {
            return;
        };
        let mut map = lock(&self.shared.map);
        let Some(Entry::Trip {
            id, waiters, task, ..
        }) = map.get_mut(&key)
        else {
            return;
        };
        if *id != self.id {
            return;
        }
        *waiters -= 1;
        if *waiters == 0 {
            // Nobody else waits: dropping the future cancels the request.
            map.remove(&key);
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to hand the trip to (dropped on a thread of its own): it ends here.
            // Removing the entry drops its sender, so the followers get `lost()` instead of
            // waiting forever, and the key is free for the next call.
            map.remove(&key);
            return;
        };
        let (shared, id) = (self.shared.clone(), self.id);
        let handoff = runtime.spawn(async move {
            let result = future.await;
            shared.finish(&key, id, &result);
        });
        // Recorded with the map locked, so the last follower to leave finds it.
        *task = Some(handoff.abort_handle());
    }
}

/// A caller waiting on a coalesced trip. When the last caller leaves before the trip ends,
/// the trip is cancelled.
struct Interest<T> {
    shared: Arc<Shared<T>>,
    key: Key,
    id: u64,
}

impl<T: Clone + Send + Sync + 'static> Interest<T> {
    /// Waits for the shared outcome for at most `limit`, then leaves the trip (it goes on for
    /// whoever still waits) and sends the follower's own request. The follower's own deadline
    /// bounds both: the trip runs under the leader's.
    async fn follow<S, B>(
        self,
        mut outcome: watch::Receiver<Option<Outcome<T>>>,
        limit: Duration,
        own: Own<S, B>,
    ) -> Outcome<T>
    where
        S: Service<Request<B>, Response = Response<T>> + Send,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Send,
    {
        let deadline = xhttp_core::Deadline::of(&own.request);
        let call = async move {
            let shared = async {
                match outcome.wait_for(Option::is_some).await {
                    Ok(value) => value.clone().unwrap_or_else(|| Err(lost())),
                    Err(_) => Err(lost()),
                }
            };
            // `timeout` takes any `Duration`: one past the clock's end waits forever.
            if let Ok(result) = tokio::time::timeout(limit, shared).await {
                return result;
            }
            self.shared
                .counters
                .lock_timeouts
                .fetch_add(1, Ordering::Relaxed);
            drop(self);
            tracing::debug!(
                ?limit,
                "the shared trip did not answer within the lock timeout: sending our own request"
            );
            own.send().await
        };
        match deadline {
            None => call.await,
            Some(deadline) => tokio::time::timeout_at(deadline.0, call)
                .await
                .unwrap_or_else(|_| Err(Error::timeout(xhttp_core::TimeoutScope::Total))),
        }
    }
}

/// What a follower keeps to send its own request if it gives up on the shared trip: its
/// request, and a clone of the inner service, polled ready only then.
struct Own<S, B> {
    service: S,
    request: Request<B>,
}

impl<S, B, T> Own<S, B>
where
    S: Service<Request<B>, Response = Response<T>>,
    S::Error: Into<BoxError>,
{
    async fn send(self) -> Outcome<T> {
        let Own {
            mut service,
            request,
        } = self;
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(|e| Error::from_boxed(e.into()))?;
        service
            .call(request)
            .await
            .map_err(|e| Error::from_boxed(e.into()))
    }
}

fn lost() -> Error {
    Error::new(ErrorKind::Internal).with_message("the shared request ended without an outcome")
}

impl<T> Drop for Interest<T> {
    fn drop(&mut self) {
        let mut map = lock(&self.shared.map);
        let Some(Entry::Trip {
            id, waiters, task, ..
        }) = map.get_mut(&self.key)
        else {
            // The trip is over (its outcome was sent) or gone.
            return;
        };
        if *id != self.id {
            return;
        }
        *waiters -= 1;
        if *waiters > 0 {
            return;
        }
        // Every caller has gone before the trip ended: cancel it, forget it.
        if let Some(task) = task.take() {
            task.abort();
        }
        map.remove(&self.key);
    }
}

/// The caller that owns a key under cancel-previous or reject-duplicate.
struct Owner<T> {
    shared: Arc<Shared<T>>,
    key: Key,
    id: u64,
}

impl<T> Drop for Owner<T> {
    fn drop(&mut self) {
        let mut map = lock(&self.shared.map);
        if map.get(&self.key).map(Entry::id) == Some(self.id) {
            map.remove(&self.key);
        }
    }
}
