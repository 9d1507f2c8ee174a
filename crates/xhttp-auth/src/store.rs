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
//! 1. [`TokenStore::lock`]: take the fleet-wide refresh lock (a no-op for a local store);
//! 2. [`TokenStore::load`]: if another replica already stored newer tokens, adopt them and make
//!    no token call;
//! 3. call the grant with the refresh token this manager holds;
//! 4. [`TokenStore::swap`]: store the new tokens only if the stored refresh token is still the
//!    one used (compare-and-swap); on a conflict, adopt what is stored;
//! 5. drop the lock.
//!
//! With the lock, step 4 never conflicts; without one (a store that cannot lock), step 2 and
//! the compare-and-swap still keep replicas from overwriting each other's newer tokens. A
//! Redis store implements `lock` with `SET NX PX` and `swap` with a short Lua script.
//!
//! Expiry is stored as wall-clock time ([`SystemTime`]), the only time two processes share;
//! the manager turns it back into tokio's clock when it loads.

use std::fmt;
use std::time::SystemTime;

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

/// A fleet-wide refresh lock, released when dropped.
pub struct RefreshLock {
    /// Never read: dropping it releases the lock.
    _release: Box<dyn Send + Sync>,
}

impl RefreshLock {
    /// Wraps whatever releases the lock on drop (a guard, a task handle, a channel).
    pub fn new(release_on_drop: impl Send + Sync + 'static) -> RefreshLock {
        RefreshLock {
            _release: Box::new(release_on_drop),
        }
    }
}

impl fmt::Debug for RefreshLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshLock")
    }
}

/// Where tokens live between calls. See the [module docs](self) for the protocol.
///
/// ```
/// use xhttp_auth::{MemoryStore, Secret, StoredTokens, Swap, TokenStore};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let first = StoredTokens { access_token: Secret::new("a1"), refresh_token: Some(Secret::new("r1")), expires_at: None };
/// store.save(&first).await.unwrap();
/// let second = StoredTokens { access_token: Secret::new("a2"), refresh_token: Some(Secret::new("r2")), expires_at: None };
/// // Another replica already rotated r1 away: the swap expecting r0 conflicts.
/// let stale = Secret::new("r0");
/// assert_eq!(store.swap(Some(&stale), &second).await.unwrap(), Swap::Conflict(Some(first.clone())));
/// assert_eq!(store.swap(first.refresh_token.as_ref(), &second).await.unwrap(), Swap::Saved);
/// # });
/// ```
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// The stored tokens, if any.
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredTokens>, Error>>;

    /// Stores `tokens` unconditionally (a login, `set_tokens`).
    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), Error>>;

    /// Stores `new` only if the stored refresh token equals `expected` (compare-and-swap).
    fn swap<'a>(
        &'a self,
        expected: Option<&'a Secret>,
        new: &'a StoredTokens,
    ) -> BoxFuture<'a, Result<Swap, Error>>;

    /// Removes the tokens (the session is over).
    fn clear(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// Takes the fleet-wide refresh lock. The default, for stores of one process, takes none.
    fn lock(&self) -> BoxFuture<'_, Result<Option<RefreshLock>, Error>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// The contract every store keeps, run against each store's own tests.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    fn tokens(access: &str, refresh: Option<&str>) -> StoredTokens {
        StoredTokens {
            access_token: Secret::new(access),
            refresh_token: refresh.map(Secret::new),
            expires_at: None,
        }
    }

    /// `swap` stores only over the expected refresh token, and a loser learns what is stored.
    pub(crate) async fn swap_is_a_compare_and_swap(store: &dyn TokenStore) {
        let r1 = Secret::new("r1");
        // Empty store: expecting a token conflicts with "nothing stored".
        let new = tokens("a2", Some("r2"));
        assert_eq!(
            store.swap(Some(&r1), &new).await.unwrap(),
            Swap::Conflict(None)
        );
        // Empty store, expecting nothing: the first tokens go in.
        let first = tokens("a1", Some("r1"));
        assert_eq!(store.swap(None, &first).await.unwrap(), Swap::Saved);
        assert_eq!(store.swap(Some(&r1), &new).await.unwrap(), Swap::Saved);
        // A replica still holding r1 loses, and is told what is stored.
        let late = tokens("a3", Some("r3"));
        assert_eq!(
            store.swap(Some(&r1), &late).await.unwrap(),
            Swap::Conflict(Some(new.clone()))
        );
        assert_eq!(store.load().await.unwrap(), Some(new));
    }
}
