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
    ///
    /// Never panics: a share outside `0.0..=1.0` (or NaN) counts as the nearest bound, 0 for
    /// NaN; [`TokenManagerBuilder::try_build`](crate::TokenManagerBuilder::try_build) refuses
    /// such windows with a `Config` error before they are ever used.
    pub fn lengths(&self, lifetime: Duration) -> (Duration, Duration, Duration) {
        self.lengths_with_margin(lifetime, Duration::ZERO)
    }

    /// [`lengths`](Self::lengths) with `margin` added to the skew: the margin the manager
    /// learned from a server that expired tokens before the client stopped using them. The
    /// skew never grows past a quarter of the lifetime (or its configured length, if larger).
    pub(crate) fn lengths_with_margin(
        &self,
        lifetime: Duration,
        margin: Duration,
    ) -> (Duration, Duration, Duration) {
        let base = self.skew.min(share_of(lifetime, self.skew_share));
        let skew = base.saturating_add(margin).min(base.max(lifetime / 4));
        let usable = lifetime.saturating_sub(skew);
        let hard = self.hard.min(share_of(usable, self.hard_share));
        let soft = self.soft.min(share_of(usable, self.soft_share)).max(hard);
        (skew, soft, hard)
    }

    /// Checks that every share is a number in `0.0..=1.0` and every length at most ten
    /// years: anything else is an [`ErrorKind::Config`](xhttp_core::ErrorKind::Config) error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xhttp_auth::Windows;
    ///
    /// assert!(Windows::default().validate().is_ok());
    /// let nan = Windows { soft_share: f64::NAN, ..Windows::default() };
    /// assert_eq!(nan.validate().unwrap_err().kind(), xhttp_core::ErrorKind::Config);
    /// let huge = Windows { skew: Duration::MAX, ..Windows::default() };
    /// assert!(huge.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        for (name, share) in [
            ("skew_share", self.skew_share),
            ("soft_share", self.soft_share),
            ("hard_share", self.hard_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(Error::config(format!(
                    "the token window {name} must be a number from 0.0 to 1.0"
                )));
            }
        }
        for (name, length) in [
            ("skew", self.skew),
            ("soft", self.soft),
            ("hard", self.hard),
        ] {
            check_duration(name, length)?;
        }
        Ok(())
    }
}

/// The longest duration a setting may have: ten years, the longest token lifetime the manager
/// believes. Longer ones overflow instant arithmetic on some platforms.
pub(crate) const MAX_SETTING: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// A `Config` error for a duration setting longer than [`MAX_SETTING`].
pub(crate) fn check_duration(name: &str, value: Duration) -> Result<(), Error> {
    if value > MAX_SETTING {
        return Err(Error::config(format!(
            "the token manager's {name} is longer than ten years"
        )));
    }
    Ok(())
}

/// `share` of `duration`, saturating; a share outside `0.0..=1.0` is clamped, NaN is 0.
fn share_of(duration: Duration, share: f64) -> Duration {
    let share = if share.is_nan() {
        0.0
    } else {
        share.clamp(0.0, 1.0)
    };
    Duration::try_from_secs_f64(duration.as_secs_f64() * share).unwrap_or(duration)
}

/// Whether an access token can be sent: RFC 6750's `b64token` travels after `Bearer ` in a
/// header, so it is one or more visible ASCII characters (`%x21-7E`), no space, no control.
pub(crate) fn check_access_token(token: &Secret) -> Result<(), &'static str> {
    let text = token.expose();
    if text.is_empty() {
        return Err("the access token is empty");
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the access token has characters a header cannot carry (only visible ASCII)");
    }
    Ok(())
}

/// Whether a refresh token can be sent: RFC 6749 appendix A.17, `1*VSCHAR` (`%x20-7E`).
pub(crate) fn check_refresh_token(token: &Secret) -> Result<(), &'static str> {
    if !token.expose().bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("the refresh token has characters a request cannot carry (only visible ASCII)");
    }
    Ok(())
}

/// An access token as the [`TokenManager`](crate::TokenManager) hands it out.
///
/// Its [`generation`](Token::generation) counts the tokens the manager has held: a request
/// records the generation it was sent with, so that a rejection that arrives after the token
/// was already replaced replays with the new one instead of refreshing again.
///
/// Generations are never reused by a manager, across sessions too: the manager remembers the
/// first generation of the current session, so a generation also names its session. A
/// rejection of a generation from an older session (before a `set_tokens` or a `clear`) is
/// never replayed with the new session's token: it ends in
/// [`ErrorKind::SessionChanged`](xhttp_core::ErrorKind::SessionChanged).
///
/// A token whose lifetime is over on arrival (`expires_in: 0`, a JWT `exp` in the past, a
/// lifetime the skew eats whole) counts as having no known expiry: it is used until the
/// server rejects it, and one warning says so, instead of a refresh on every call.
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
    /// What was taken off the server's lifetime (zero without one).
    skew: Duration,
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
        margin: Duration,
    ) -> Token {
        let (mut expires_at, mut soft_at, mut hard_at) = (None, None, None);
        let mut taken = Duration::ZERO;
        if let Some(lifetime) = lifetime {
            let (skew, soft, hard) = windows.lengths_with_margin(lifetime, margin);
            taken = skew;
            let usable = lifetime.saturating_sub(skew);
            if usable.is_zero() {
                // Believing it would refresh on every call; the server decides instead.
                tracing::warn!(
                    generation,
                    "the new token's lifetime was over on arrival (expires_in 0 or a JWT exp \
                     in the past): it is used until the server rejects it"
                );
            } else if let Some(at) = received_at.checked_add(usable) {
                // A lifetime too long for the clock (years) is treated as no expiry.
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
            skew: taken,
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

    /// Which token of the manager this is: 1 for the first, one more for every refresh and
    /// every [`set_tokens`](crate::TokenManager::set_tokens), never reused.
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

    pub(crate) fn skew(&self) -> Duration {
        self.skew
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
            Duration::ZERO,
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
            Duration::ZERO,
        );
        assert_eq!(token.expires_at(), None);
        let token = Token::new(
            Secret::new("a"),
            None,
            Instant::now(),
            Some(Duration::ZERO),
            1,
            &Windows::default(),
            Duration::ZERO,
        );
        // Over on arrival: no known expiry, reactive refresh only.
        assert_eq!(token.expires_at(), None);
        assert!(!token.is_expired(Instant::now()));
        assert!(!token.in_hard_window(Instant::now()));
    }

    #[test]
    fn impossible_windows_never_panic_and_are_refused() {
        let bad = [
            Windows {
                soft_share: f64::NAN,
                ..Windows::default()
            },
            Windows {
                skew_share: -0.5,
                ..Windows::default()
            },
            Windows {
                hard_share: 1.5,
                ..Windows::default()
            },
            Windows {
                soft_share: f64::INFINITY,
                ..Windows::default()
            },
            Windows {
                skew: Duration::MAX,
                ..Windows::default()
            },
            Windows {
                soft: Duration::MAX,
                ..Windows::default()
            },
            Windows {
                hard: Duration::MAX,
                ..Windows::default()
            },
        ];
        for windows in bad {
            let err = windows.validate().unwrap_err();
            assert_eq!(err.kind(), xhttp_core::ErrorKind::Config, "{windows:?}");
            for lifetime in [Duration::ZERO, Duration::from_millis(300), Duration::MAX] {
                let _ = windows.lengths(lifetime);
                let _ = Token::new(
                    Secret::new("a"),
                    None,
                    Instant::now(),
                    Some(lifetime),
                    1,
                    &windows,
                    Duration::ZERO,
                );
            }
        }
        let all_of_it = Windows {
            skew_share: 1.0,
            soft_share: 1.0,
            hard_share: 1.0,
            ..Windows::default()
        };
        assert!(all_of_it.validate().is_ok());
        let _ = all_of_it.lengths(Duration::MAX);
    }

    #[test]
    fn only_visible_ascii_tokens_are_accepted() {
        for bad in [
            "",
            "a b",
            "line\nbreak",
            "nul\0",
            "tab\t",
            "caf\u{e9}",
            "del\u{7f}",
        ] {
            assert!(check_access_token(&Secret::new(bad)).is_err(), "{bad:?}");
        }
        assert!(check_access_token(&Secret::new("eyJ.a-b_c~d+e/f=")).is_ok());
        assert!(check_refresh_token(&Secret::new("with space")).is_ok());
        assert!(check_refresh_token(&Secret::new("line\nbreak")).is_err());
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
            Duration::ZERO,
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
            Duration::ZERO,
        );
        assert!(bad.header_value("Bearer").is_err());
    }
}
