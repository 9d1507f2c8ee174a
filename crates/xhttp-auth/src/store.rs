//! Token stores: where tokens live between calls (what `localStorage` is to a front end).
//!
//! # Why the trait has this shape
//!
//! One process needs only `load` and `save`: its [`TokenManager`](crate::TokenManager) already
//! runs one refresh at a time. A *fleet* of replicas sharing one rotating refresh token needs
//! more, because two replicas refreshing with the same refresh token is exactly the reuse that
//! RFC 9700 section 4.14.2 punishes by revoking the whole family, logging every replica out.
//! So a refresh runs, in every manager, as:
//!
//! 1. [`TokenStore::load`]: if another replica already stored newer tokens, adopt them and
//!    make no token call (no lock taken: one read);
//! 2. [`TokenStore::lock`]: take the fleet-wide refresh lock, a lease that outlives the
//!    refresh's deadline (a no-op for a local store). When another replica holds it, the
//!    store waits for its release and answers [`Lock::Released`]: the manager reads again
//!    and adopts what the holder stored, or asks for the lock again if nothing newer is
//!    there. So every replica that waited reads once when the holder finishes, at the same
//!    time, instead of taking the lock one after another;
//! 3. when a lock was taken, [`TokenStore::load`] again: a replica that held the lock may
//!    have stored newer tokens just before; adopt them and make no token call;
//! 4. call the grant with the refresh token this manager holds;
//! 5. [`TokenStore::swap`]: store the new tokens only if the stored refresh token is still the
//!    one used and, for a fencing store, no newer lease was granted since this one
//!    ([`RefreshLock::fence`]); on a conflict, adopt what is stored;
//! 6. drop the lock.
//!
//! A swap that finds the store **empty** under a lock (a store that lost its tokens: a
//! restart without persistence, an eviction) stores the new tokens with
//! [`TokenStore::save`], so the fleet shares them again.
//!
//! With the lock, step 5 never conflicts; without one (a store that cannot lock), steps 1 and
//! 3 and the compare-and-swap still keep replicas from overwriting each other's newer tokens.
//! The fence covers what the compare-and-swap cannot: a grant whose refresh token does not
//! rotate, where a refresher whose lease ran out would otherwise overwrite a newer access
//! token with its older one. The `xhttp-redis` crate's store implements all of it.
//!
//! A store that fails is **skipped**, never fatal: the manager's own single flight still
//! runs one refresh per process, the failure is logged and counted
//! ([`TokenManager::store_errors`](crate::TokenManager::store_errors)), and a refresh that
//! fails says the store was skipped. The trade-off: while the store is down, replicas may
//! each refresh on their own.
//!
//! Expiry is stored as wall-clock time ([`SystemTime`]), the only time two processes share;
//! the manager turns it back into tokio's clock when it loads. The login is stored too
//! ([`StoredTokens::session`]), so that a replica never takes another login's tokens for a
//! refresh of its own.

use std::fmt;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use xhttp_core::Error;

use crate::Secret;

mod file;
mod memory;

pub use file::FileStore;
pub use memory::MemoryStore;

/// Tokens as a store keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTokens {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token, if the grant has one.
    pub refresh_token: Option<Secret>,
    /// When the access token expires, on the wall clock; `None` when unknown.
    pub expires_at: Option<SystemTime>,
    /// Names the login these tokens descend from: new with every
    /// [`TokenManager::set_tokens`](crate::TokenManager::set_tokens), kept by every refresh.
    /// A replica that finds another login's tokens in the store starts a new session with
    /// them instead of replaying a request of its own login with them. `None` (a store
    /// written without it) counts as the same login. Not a secret, and never a token.
    pub session: Option<String>,
}

impl StoredTokens {
    /// Tokens with no expiry and no login name, for the fields to be set after.
    ///
    /// ```
    /// use xhttp_auth::{Secret, StoredTokens};
    ///
    /// let tokens = StoredTokens::new(Secret::new("a1"), Some(Secret::new("r1")));
    /// assert_eq!(tokens.expires_at, None);
    /// assert_eq!(tokens.session, None);
    /// ```
    pub fn new(access_token: Secret, refresh_token: Option<Secret>) -> StoredTokens {
        StoredTokens {
            access_token,
            refresh_token,
            expires_at: None,
            session: None,
        }
    }
}

/// The longest [`StoredTokens::session`] a store accepts.
pub const MAX_SESSION_LEN: usize = 128;

/// Whether `session` can name a login in a store: 1 to [`MAX_SESSION_LEN`] visible ASCII
/// characters (stores refuse others as corrupt).
pub(crate) fn check_session(session: &str) -> Result<(), &'static str> {
    if session.is_empty() || session.len() > MAX_SESSION_LEN {
        return Err("its session name is empty or longer than 128 characters");
    }
    if !session.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("its session name is not visible ASCII");
    }
    Ok(())
}

/// The outcome of [`TokenStore::swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Swap {
    /// The new tokens were stored.
    Saved,
    /// The stored refresh token was not the expected one; this is what is stored instead
    /// (`None`: nothing is stored, someone cleared it).
    Conflict(Option<StoredTokens>),
}

/// What [`TokenStore::lock`] got.
///
/// ```
/// use std::time::Duration;
/// use xhttp_auth::{Lock, MemoryStore, RefreshLock, TokenStore};
///
/// let lock = Lock::Held(RefreshLock::fenced((), 7));
/// assert!(matches!(&lock, Lock::Held(held) if held.fence() == Some(7)));
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // A store of one process takes no fleet-wide lock.
/// let local = MemoryStore::new().lock(Duration::from_secs(10)).await.unwrap();
/// assert!(matches!(local, Lock::Unsupported));
/// # });
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Lock {
    /// The fleet-wide lock, held until this value drops.
    Held(RefreshLock),
    /// The store takes no fleet-wide lock (a store of one process).
    Unsupported,
    /// Another process held the lock and released it while this one waited: it may have
    /// stored newer tokens. Read the store again, and ask for the lock again only if they
    /// are not newer. A store answers this only after a wait, never at once.
    Released,
}

/// A fleet-wide refresh lock, released when dropped.
///
/// ```
/// use xhttp_auth::RefreshLock;
///
/// struct Release;
/// impl Drop for Release {
///     fn drop(&mut self) { /* delete the lock key if it is still ours */ }
/// }
/// let lock = RefreshLock::fenced(Release, 42);
/// assert_eq!(lock.fence(), Some(42));
/// assert_eq!(RefreshLock::new(Release).fence(), None);
/// ```
pub struct RefreshLock {
    /// Never read: dropping it releases the lock.
    _release: Box<dyn Send + Sync>,
    fence: Option<u64>,
}

impl RefreshLock {
    /// Wraps whatever releases the lock on drop (a guard, a task handle, a channel).
    pub fn new(release_on_drop: impl Send + Sync + 'static) -> RefreshLock {
        RefreshLock {
            _release: Box::new(release_on_drop),
            fence: None,
        }
    }

    /// A lock with a fencing token: a number the store increases with every lease it grants,
    /// handed back to [`TokenStore::swap`] so the store can refuse the write of a refresher
    /// whose lease ran out while a newer one was granted.
    pub fn fenced(release_on_drop: impl Send + Sync + 'static, fence: u64) -> RefreshLock {
        RefreshLock {
            _release: Box::new(release_on_drop),
            fence: Some(fence),
        }
    }

    /// The fencing token, for a store that grants them.
    pub fn fence(&self) -> Option<u64> {
        self.fence
    }
}

impl fmt::Debug for RefreshLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshLock")
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

/// Where tokens live between calls. See the [module docs](self) for the protocol.
///
/// ```
/// use xhttp_auth::{MemoryStore, Secret, StoredTokens, Swap, TokenStore};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let first = StoredTokens::new(Secret::new("a1"), Some(Secret::new("r1")));
/// store.save(&first).await.unwrap();
/// let second = StoredTokens::new(Secret::new("a2"), Some(Secret::new("r2")));
/// // Another replica already rotated r1 away: the swap expecting r0 conflicts.
/// let stale = Secret::new("r0");
/// assert_eq!(store.swap(Some(&stale), &second, None).await.unwrap(), Swap::Conflict(Some(first.clone())));
/// assert_eq!(store.swap(first.refresh_token.as_ref(), &second, None).await.unwrap(), Swap::Saved);
/// # });
/// ```
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// The stored tokens, if any. A shared store that remembers an ended session (see
    /// [`clear`](Self::clear)) answers [`ErrorKind::SessionExpired`](xhttp_core::ErrorKind)
    /// until new tokens are saved: the manager then ends its own session too, with no token
    /// call. Any other error is a failure of the store, which the manager skips.
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredTokens>, Error>>;

    /// Stores `tokens` unconditionally (a login, `set_tokens`).
    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), Error>>;

    /// Stores `new` only if the stored refresh token equals `expected` (compare-and-swap;
    /// an empty store and stored tokens without a refresh token both count as `None`) and,
    /// when `fence` is given and the store grants fences, no lease newer than the one with
    /// that fence was granted since ([`RefreshLock::fence`]). A store that remembers an
    /// ended session refuses with `SessionExpired`.
    fn swap<'a>(
        &'a self,
        expected: Option<&'a Secret>,
        new: &'a StoredTokens,
        fence: Option<u64>,
    ) -> BoxFuture<'a, Result<Swap, Error>>;

    /// Removes the tokens: the session is over (a logout, or a refresh token the server
    /// refused). A store shared by processes should remember that the session ended, so
    /// that [`load`](Self::load) and [`swap`](Self::swap) answer `SessionExpired` until the
    /// next [`save`](Self::save); otherwise another process refreshes with its own copy of
    /// the dead refresh token, or stores its tokens again.
    fn clear(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// Takes the fleet-wide refresh lock ([`Lock::Held`]). While another process holds it,
    /// waits: for the holder's release ([`Lock::Released`], without taking the lock, so that
    /// every waiter reads the holder's tokens at once), or for its lease to run out (then
    /// takes it). `lease` is the longest the refresh can hold it (its deadline from now): a
    /// store with leases lets the lock expire a little after that, so a process that died
    /// holding it does not block the fleet. The manager bounds the wait by the refresh's
    /// deadline. The default, for stores of one process, takes none
    /// ([`Lock::Unsupported`]).
    fn lock(&self, lease: Duration) -> BoxFuture<'_, Result<Lock, Error>> {
        let _ = lease;
        Box::pin(std::future::ready(Ok(Lock::Unsupported)))
    }
}

/// A shared store is a store: managers of one process that share a credential can share
/// one store value.
///
/// ```
/// use std::sync::Arc;
/// use xhttp_auth::{MemoryStore, TokenStore};
///
/// fn takes(store: impl TokenStore) {}
/// let shared = Arc::new(MemoryStore::new());
/// takes(shared.clone());
/// takes(shared);
/// ```
impl<T: TokenStore + ?Sized> TokenStore for std::sync::Arc<T> {
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredTokens>, Error>> {
        (**self).load()
    }

    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), Error>> {
        (**self).save(tokens)
    }

    fn swap<'a>(
        &'a self,
        expected: Option<&'a Secret>,
        new: &'a StoredTokens,
        fence: Option<u64>,
    ) -> BoxFuture<'a, Result<Swap, Error>> {
        (**self).swap(expected, new, fence)
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        (**self).clear()
    }

    fn lock(&self, lease: Duration) -> BoxFuture<'_, Result<Lock, Error>> {
        (**self).lock(lease)
    }
}

/// The contract every store keeps, run against each store's own tests.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    fn tokens(access: &str, refresh: Option<&str>) -> StoredTokens {
        StoredTokens::new(Secret::new(access), refresh.map(Secret::new))
    }

    /// `swap` stores only over the expected refresh token, and a loser learns what is stored.
    pub(crate) async fn swap_is_a_compare_and_swap(store: &dyn TokenStore) {
        let r1 = Secret::new("r1");
        // Empty store: expecting a token conflicts with "nothing stored".
        let new = tokens("a2", Some("r2"));
        assert_eq!(
            store.swap(Some(&r1), &new, None).await.unwrap(),
            Swap::Conflict(None)
        );
        // Empty store, expecting nothing: the first tokens go in.
        let first = tokens("a1", Some("r1"));
        assert_eq!(store.swap(None, &first, None).await.unwrap(), Swap::Saved);
        assert_eq!(
            store.swap(Some(&r1), &new, None).await.unwrap(),
            Swap::Saved
        );
        // A replica still holding r1 loses, and is told what is stored.
        let late = tokens("a3", Some("r3"));
        assert_eq!(
            store.swap(Some(&r1), &late, None).await.unwrap(),
            Swap::Conflict(Some(new.clone()))
        );
        assert_eq!(store.load().await.unwrap(), Some(new));
    }
}
