//! [`Token`] and the windows before its expiry.

use std::fmt;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;
use xhttp_core::Error;

use crate::Secret;

/// When a token counts as expiring, scaled to its lifetime.
///
/// Two windows before expiry, as botocore and google-auth have: in the **soft** window
/// [`TokenManager::current`](crate::TokenManager::current) still returns the valid token at
/// once and starts one refresh in the background; in the **hard** window callers wait for
/// the refresh. Every figure is the smaller of a fixed length and a share of the lifetime, so
/// a token that lives 300 ms is still used for about 70% of its life instead of being
/// refreshed on every call.
///
/// ```
/// use std::time::Duration;
/// use xhttp_auth::Windows;
///
/// let w = Windows::default();
/// // An hour-long token: 10 s of skew, soft window 5 min, hard window 10 s.
/// let (skew, soft, hard) = w.lengths(Duration::from_secs(3600));
/// assert_eq!((skew, soft, hard), (Duration::from_secs(10), Duration::from_secs(300), Duration::from_secs(10)));
/// // A 300 ms token: 30 ms of skew, soft 54 ms, hard 27 ms.
/// let (skew, soft, hard) = w.lengths(Duration::from_millis(300));
/// assert_eq!(skew, Duration::from_millis(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Windows {
    /// Taken off the server's `expires_in` for clock skew and the time a request spends in
    /// flight: at most this (default 10 s, as Go's oauth2)...
    pub skew: Duration,
    /// ...and at most this share of the lifetime (default 0.1).
    pub skew_share: f64,
    /// Soft window: at most this long (default 5 min)...
    pub soft: Duration,
    /// ...and at most this share of the remaining lifetime (default 0.2).
    pub soft_share: f64,
    /// Hard window: at most this long (default 10 s)...
    pub hard: Duration,
    /// ...and at most this share of the remaining lifetime (default 0.1).
    pub hard_share: f64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            skew: Duration::from_secs(10),
            skew_share: 0.1,
            soft: Duration::from_secs(300),
            soft_share: 0.2,
            hard: Duration::from_secs(10),
            hard_share: 0.1,
        }
    }
}

impl Windows {
    /// The skew, soft window and hard window for a token the server says lives `lifetime`.
    pub fn lengths(&self, lifetime: Duration) -> (Duration, Duration, Duration) {
        let skew = self
            .skew
            .min(lifetime.mul_f64(self.skew_share.clamp(0.0, 1.0)));
        let usable = lifetime.saturating_sub(skew);
        let hard = self
            .hard
            .min(usable.mul_f64(self.hard_share.clamp(0.0, 1.0)));
        let soft = self
            .soft
            .min(usable.mul_f64(self.soft_share.clamp(0.0, 1.0)))
            .max(hard);
        (skew, soft, hard)
    }
}

/// An access token as the [`TokenManager`](crate::TokenManager) hands it out.
///
/// Its [`generation`](Token::generation) counts the tokens the manager has held: a request
/// records the generation it was sent with, so that a rejection that arrives after the token
/// was already replaced replays with the new one instead of refreshing again.
///
/// `Debug` never prints the token.
#[derive(Clone)]
pub struct Token {
    access: Secret,
    refresh: Option<Secret>,
    generation: u64,
    expires_at: Option<Instant>,
    soft_at: Option<Instant>,
    hard_at: Option<Instant>,
    bearer: Option<HeaderValue>,
}

impl Token {
    pub(crate) fn new(
        access: Secret,
        refresh: Option<Secret>,
        received_at: Instant,
        lifetime: Option<Duration>,
        generation: u64,
        windows: &Windows,
    ) -> Token {
        let (mut expires_at, mut soft_at, mut hard_at) = (None, None, None);
        if let Some(lifetime) = lifetime {
            let (skew, soft, hard) = windows.lengths(lifetime);
            // A lifetime too long for the clock (years) is treated as no expiry.
            if let Some(at) = received_at.checked_add(lifetime.saturating_sub(skew)) {
                expires_at = Some(at);
                soft_at = Some(at.checked_sub(soft).unwrap_or(received_at));
                hard_at = Some(at.checked_sub(hard).unwrap_or(received_at));
            }
        }
        let bearer = HeaderValue::try_from(format!("Bearer {}", access.expose()))
            .ok()
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        Token {
            access,
            refresh,
            generation,
            expires_at,
            soft_at,
            hard_at,
            bearer,
        }
    }

    /// The access token.
    pub fn access(&self) -> &Secret {
        &self.access
    }

    /// The refresh token, if the grant has one.
    pub fn refresh(&self) -> Option<&Secret> {
        self.refresh.as_ref()
    }

    /// Which token of the manager this is: 1 for the first, one more for every refresh.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the manager stops using the token (the server's expiry minus the skew), on
    /// tokio's clock; `None` when the server gave no lifetime.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// Whether the token is past its expiry at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    pub(crate) fn soft_at(&self) -> Option<Instant> {
        self.soft_at
    }

    pub(crate) fn in_soft_window(&self, now: Instant) -> bool {
        self.soft_at.is_some_and(|at| now >= at)
    }

    pub(crate) fn in_hard_window(&self, now: Instant) -> bool {
        self.hard_at.is_some_and(|at| now >= at)
    }

    /// The header value `<scheme> <token>` (`scheme` empty: the bare token), marked sensitive
    /// so that hyper's and tracing's header dumps hide it.
    pub fn header_value(&self, scheme: &str) -> Result<HeaderValue, Error> {
        if scheme == "Bearer" {
            if let Some(bearer) = &self.bearer {
                return Ok(bearer.clone());
            }
        }
        let text = if scheme.is_empty() {
            self.access.expose().to_string()
        } else {
            format!("{scheme} {}", self.access.expose())
        };
        let mut value = HeaderValue::try_from(text).map_err(|_| {
            Error::invalid_request("the access token has characters a header cannot carry")
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access", &self.access)
            .field("refresh", &self.refresh.as_ref().map(|_| "***"))
            .field("generation", &self.generation)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lived_tokens_are_used_for_most_of_their_life() {
        let now = Instant::now();
        let token = Token::new(
            Secret::new("a"),
            None,
            now,
            Some(Duration::from_millis(300)),
            1,
            &Windows::default(),
        );
        let at = |ms| now + Duration::from_millis(ms);
        assert!(!token.in_soft_window(at(200)));
        assert!(token.in_soft_window(at(220)));
        assert!(!token.in_hard_window(at(240)));
        assert!(token.in_hard_window(at(245)));
        assert!(!token.is_expired(at(269)));
        assert!(token.is_expired(at(270)));
    }

    #[test]
    fn absurd_lifetimes_do_not_overflow() {
        let token = Token::new(
            Secret::new("a"),
            None,
            Instant::now(),
            Some(Duration::MAX),
            1,
            &Windows::default(),
        );
        assert_eq!(token.expires_at(), None);
        let token = Token::new(
            Secret::new("a"),
            None,
            Instant::now(),
            Some(Duration::ZERO),
            1,
            &Windows::default(),
        );
        assert!(token.is_expired(Instant::now()));
    }

    #[test]
    fn header_values_are_sensitive_and_debug_is_redacted() {
        let token = Token::new(
            Secret::new("SECRET-AT-1"),
            Some(Secret::new("SECRET-RT-1")),
            Instant::now(),
            None,
            3,
            &Windows::default(),
        );
        let bearer = token.header_value("Bearer").unwrap();
        assert!(bearer.is_sensitive());
        assert_eq!(bearer, "Bearer SECRET-AT-1");
        assert_eq!(token.header_value("").unwrap(), "SECRET-AT-1");
        let shown = format!("{token:?} {bearer:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        let bad = Token::new(
            Secret::new("line\nbreak"),
            None,
            Instant::now(),
            None,
            1,
            &Windows::default(),
        );
        assert!(bad.header_value("Bearer").is_err());
    }
}
