//! [`MemoryStore`]: tokens held by this process only, the default store.
//!
//! Nothing outlives the process and nothing is shared with another one, so `lock` is the
//! trait's no-op; `swap` is still a real compare-and-swap, so that the manager's protocol
//! behaves the same over every store.

use std::sync::{Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use xhttp_core::Error;

use super::{StoredTokens, Swap, TokenStore};
use crate::Secret;

/// Tokens in memory, behind a mutex held only for a copy (never across an await).
///
/// `swap(expected, new, _)` stores `new` when the stored refresh token equals `expected`,
/// where an empty store and stored tokens without a refresh token both count as `None`; it
/// grants no fences, so the fence is not checked.
///
/// ```
/// use xhttp_auth::{MemoryStore, Secret, StoredTokens, TokenStore};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// assert_eq!(store.load().await.unwrap(), None);
/// let tokens = StoredTokens::new(Secret::new("a"), None);
/// store.save(&tokens).await.unwrap();
/// assert_eq!(store.load().await.unwrap(), Some(tokens));
/// store.clear().await.unwrap();
/// assert_eq!(store.load().await.unwrap(), None);
/// # });
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    tokens: Mutex<Option<StoredTokens>>,
}

impl MemoryStore {
    /// An empty store.
    ///
    /// ```
    /// let store = xhttp_auth::MemoryStore::new();
    /// # let _ = store;
    /// ```
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn tokens(&self) -> MutexGuard<'_, Option<StoredTokens>> {
        // The guarded value is replaced whole, never left half-written, so a panic elsewhere
        // while the lock was held cannot have broken it.
        xhttp_core::sync::lock(&self.tokens)
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredTokens>, Error>> {
        let tokens = self.tokens().clone();
        Box::pin(std::future::ready(Ok(tokens)))
    }

    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), Error>> {
        *self.tokens() = Some(tokens.clone());
        Box::pin(std::future::ready(Ok(())))
    }

    fn swap<'a>(
        &'a self,
        expected: Option<&'a Secret>,
        new: &'a StoredTokens,
        _fence: Option<u64>,
    ) -> BoxFuture<'a, Result<Swap, Error>> {
        let mut stored = self.tokens();
        let outcome = if stored_refresh_token(&stored) == expected {
            *stored = Some(new.clone());
            Swap::Saved
        } else {
            Swap::Conflict(stored.clone())
        };
        drop(stored);
        Box::pin(std::future::ready(Ok(outcome)))
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        *self.tokens() = None;
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The refresh token of what is stored; `None` for an empty store too.
pub(super) fn stored_refresh_token(stored: &Option<StoredTokens>) -> Option<&Secret> {
    stored.as_ref().and_then(|t| t.refresh_token.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(access: &str, refresh: Option<&str>) -> StoredTokens {
        StoredTokens::new(Secret::new(access), refresh.map(Secret::new))
    }

    #[tokio::test]
    async fn swap_stores_only_over_the_expected_refresh_token() {
        crate::store::contract::swap_is_a_compare_and_swap(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn debug_never_shows_the_tokens() {
        let store = MemoryStore::new();
        store
            .save(&tokens("SECRET-AT-123", Some("SECRET-RT-123")))
            .await
            .unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn store_is_send_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<MemoryStore>();
    }
}
