//! [`GenerationSlot`]: the handshake between the auth layer and the refresh layer above it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where the auth layer records the generation of the token it sent, for the refresh layer
/// above it: a request extension shared between the two (the request itself moves down the
/// stack, the slot stays readable above). It is public for that handshake only: a stack of
/// `AuthLayer` and `RefreshLayer` never needs it written by hand, a replacement for
/// [`AuthLayer`](crate::AuthLayer) under the refresh layer writes it.
///
/// A manager never reuses a generation, across sessions too, so the generation in the slot
/// also names the session the request was sent in: the refresh layer hands it to
/// [`TokenManager::refresh_after_rejection`](crate::TokenManager::refresh_after_rejection), which refuses (`SessionChanged`) to replay a
/// rejection of an older session with the current one's token.
///
/// ```
/// let slot = xhttp_auth::GenerationSlot::new();
/// assert_eq!(slot.get(), None);
/// slot.set(3);
/// assert_eq!(slot.clone().get(), Some(3));
/// ```
#[derive(Debug, Clone, Default)]
pub struct GenerationSlot(Arc<AtomicU64>);

impl GenerationSlot {
    /// An empty slot.
    pub fn new() -> Self {
        GenerationSlot::default()
    }

    /// Records the generation of the token a trip was sent with.
    pub fn set(&self, generation: u64) {
        self.0.store(generation, Ordering::Release);
    }

    /// The generation recorded, if a token was sent (generations start at 1).
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            generation => Some(generation),
        }
    }
}
