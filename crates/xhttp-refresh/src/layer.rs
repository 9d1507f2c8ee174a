//! [`RefreshLayer`] and the per-request markers: what the layer is configured with.

use std::fmt;
use std::sync::Arc;

use tower::Layer;
use xhttp_auth::TokenManager;
use xhttp_core::BusinessCode;

use crate::{Refresh, Triggers};

/// Per-request option: never refresh for this request (axios-auth-refresh's
/// `skipAuthRefresh`); its rejection comes back as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipRefresh;

/// Marks the replay of a request after a refresh (visible to layers below).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed;

/// Refreshes the token on a rejection and replays the request (three times at most). See the
/// [crate docs](crate).
#[derive(Clone)]
#[must_use]
pub struct RefreshLayer {
    config: Arc<Config>,
}

pub(crate) struct Config {
    pub(crate) manager: TokenManager,
    pub(crate) triggers: Triggers,
}

impl RefreshLayer {
    /// A refresh layer with the default [`Triggers`].
    pub fn new(manager: TokenManager) -> Self {
        RefreshLayer::with_triggers(manager, Triggers::default())
    }

    /// A refresh layer with the given triggers.
    pub fn with_triggers(manager: TokenManager, triggers: Triggers) -> Self {
        RefreshLayer {
            config: Arc::new(Config { manager, triggers }),
        }
    }

    /// Adds business codes that mean "token expired".
    pub fn business_codes<C: Into<BusinessCode>>(self, codes: impl IntoIterator<Item = C>) -> Self {
        let triggers = self.config.triggers.clone().business_codes(codes);
        RefreshLayer::with_triggers(self.config.manager.clone(), triggers)
    }
}

impl fmt::Debug for RefreshLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshLayer")
            .field("triggers", &self.config.triggers)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RefreshLayer {
    type Service = Refresh<S>;

    fn layer(&self, inner: S) -> Refresh<S> {
        Refresh::new(inner, self.config.clone())
    }
}
