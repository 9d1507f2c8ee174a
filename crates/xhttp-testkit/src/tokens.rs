//! Token book-keeping: issue, check, rotate, detect reuse, revoke. No HTTP here.
//!
//! A *family* is one login (or client-credentials grant) and every refresh descended from
//! it. Refresh tokens rotate: a successful refresh retires the presented token and issues a
//! new one. Presenting a retired token again is what happens when two refreshes race with
//! one refresh token, and RFC 9700 section 4.14.2 asks the server to assume theft and revoke
//! the family: the client is logged out. Clients under test must never trigger it.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::splitmix::SplitMix64;

/// Salt of the token stream, so tokens and fault decisions drawn from one seed differ.
const TOKEN_STREAM: u64 = 0x746f_6b65_6e73; // "tokens"

/// A freshly issued set of tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
    /// Whole seconds, at least 1: the lifetime as a token response states it.
    pub(crate) expires_in: u64,
    /// The exact lifetime, for the wire when it is not a whole number of seconds.
    pub(crate) ttl: Duration,
}

impl Issued {
    /// `expires_in` as the token endpoints send it: whole seconds as an integer (RFC 6749),
    /// a lifetime under a second or with a fraction as a decimal number of seconds (`0.3`), so
    /// that a client can use a 300 ms token for most of its life.
    pub(crate) fn wire_expires_in(&self) -> serde_json::Value {
        if self.ttl.subsec_nanos() == 0 && self.ttl >= Duration::from_secs(1) {
            serde_json::Value::from(self.ttl.as_secs())
        } else {
            serde_json::Value::from(self.ttl.as_secs_f64())
        }
    }
}

/// What a presented access token is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessCheck {
    /// The newest token of a live family, not expired.
    Current,
    /// Not expired, but its family has refreshed since.
    Superseded,
    /// Valid once, now expired or revoked.
    Dead,
    /// Never issued by this server.
    Unknown,
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefreshOutcome {
    /// The token was retired and replaced.
    Rotated(Issued),
    /// Never issued, or its family was revoked.
    Invalid,
    /// The token had been retired already: its family is now revoked.
    Reused,
}

/// Every token the server has issued.
#[derive(Debug)]
pub(crate) struct TokenBook {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rng: SplitMix64,
    ttl: Duration,
    /// Indexed by family id.
    families: Vec<Family>,
    access: HashMap<String, AccessRecord>,
    refresh: HashMap<String, RefreshRecord>,
    /// Access tokens a protected route has turned away: from then on they are dead.
    rejected: HashSet<String>,
}

#[derive(Debug)]
struct Family {
    revoked: bool,
    current_access: String,
}

#[derive(Debug)]
struct AccessRecord {
    family: usize,
    expires_at: Instant,
}

#[derive(Debug)]
struct RefreshRecord {
    family: usize,
    retired: bool,
}

impl TokenBook {
    pub(crate) fn new(seed: u64, ttl: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                rng: SplitMix64::new(seed ^ TOKEN_STREAM),
                ttl,
                families: Vec::new(),
                access: HashMap::new(),
                refresh: HashMap::new(),
                rejected: HashSet::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent before it can panic, so a poisoned lock
        // still holds usable data.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Starts a new family (a login, or a client-credentials grant without a refresh token).
    pub(crate) fn issue(&self, with_refresh_token: bool) -> Issued {
        let mut state = self.state();
        let family = state.families.len();
        let access_token = state.new_access(family);
        state.families.push(Family {
            revoked: false,
            current_access: access_token.clone(),
        });
        let refresh_token = with_refresh_token.then(|| state.new_refresh(family));
        Issued {
            access_token,
            refresh_token,
            expires_in: state.expires_in(),
            ttl: state.ttl,
        }
    }

    /// Checks an access token on tokio's clock.
    pub(crate) fn check(&self, access_token: &str) -> AccessCheck {
        let state = self.state();
        let Some(record) = state.access.get(access_token) else {
            return AccessCheck::Unknown;
        };
        let family = &state.families[record.family];
        if family.revoked || Instant::now() >= record.expires_at {
            AccessCheck::Dead
        } else if family.current_access != access_token {
            AccessCheck::Superseded
        } else {
            AccessCheck::Current
        }
    }

    /// Rotates a refresh token, or detects its reuse.
    pub(crate) fn refresh(&self, refresh_token: &str) -> RefreshOutcome {
        let mut guard = self.state();
        let state = &mut *guard;
        let Some(record) = state.refresh.get_mut(refresh_token) else {
            return RefreshOutcome::Invalid;
        };
        let family_id = record.family;
        let family = &mut state.families[family_id];
        if record.retired {
            family.revoked = true;
            return RefreshOutcome::Reused;
        }
        if family.revoked {
            return RefreshOutcome::Invalid;
        }
        record.retired = true;
        let access_token = state.new_access(family_id);
        state.families[family_id].current_access = access_token.clone();
        let refresh_token = Some(state.new_refresh(family_id));
        RefreshOutcome::Rotated(Issued {
            access_token,
            refresh_token,
            expires_in: state.expires_in(),
            ttl: state.ttl,
        })
    }

    /// Records that a protected route turned `access_token` away; true when it had been
    /// turned away before.
    pub(crate) fn note_rejected(&self, access_token: &str) -> bool {
        let mut state = self.state();
        if state.rejected.contains(access_token) {
            return true;
        }
        state.rejected.insert(access_token.to_owned());
        false
    }

    /// Whether a protected route has turned `access_token` away before.
    pub(crate) fn was_rejected(&self, access_token: &str) -> bool {
        self.state().rejected.contains(access_token)
    }

    /// Revokes one access token alone: from now on it is dead, while its family, its
    /// refresh token and the family's later tokens stay valid (a server that drops one
    /// access token from its cache, or revokes it after a password check). Unknown tokens
    /// are ignored; true when `access_token` was known.
    pub(crate) fn revoke_access(&self, access_token: &str) -> bool {
        let now = Instant::now();
        match self.state().access.get_mut(access_token) {
            Some(record) => {
                record.expires_at = record.expires_at.min(now);
                true
            }
            None => false,
        }
    }

    /// Revokes every family: all access and refresh tokens issued so far become invalid.
    pub(crate) fn revoke_all(&self) {
        for family in &mut self.state().families {
            family.revoked = true;
        }
    }

    /// Sets the lifetime of access tokens issued from now on.
    pub(crate) fn set_ttl(&self, ttl: Duration) {
        self.state().ttl = ttl;
    }
}

impl State {
    fn new_secret(&mut self) -> String {
        format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64())
    }

    fn new_access(&mut self, family: usize) -> String {
        let token = self.new_secret();
        let expires_at = Instant::now() + self.ttl;
        self.access
            .insert(token.clone(), AccessRecord { family, expires_at });
        token
    }

    fn new_refresh(&mut self, family: usize) -> String {
        let token = self.new_secret();
        self.refresh.insert(
            token.clone(),
            RefreshRecord {
                family,
                retired: false,
            },
        );
        token
    }

    fn expires_in(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn rotated(outcome: RefreshOutcome) -> Issued {
        match outcome {
            RefreshOutcome::Rotated(issued) => issued,
            other => panic!("expected a rotation, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn access_tokens_expire_on_tokios_clock() {
        let book = TokenBook::new(0, HOUR);
        let issued = book.issue(true);
        assert_eq!(issued.expires_in, 3600);
        assert_eq!(book.check(&issued.access_token), AccessCheck::Current);
        tokio::time::advance(HOUR - Duration::from_millis(1)).await;
        assert_eq!(book.check(&issued.access_token), AccessCheck::Current);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(book.check(&issued.access_token), AccessCheck::Dead);
        assert_eq!(book.check("never-issued"), AccessCheck::Unknown);
    }

    #[tokio::test]
    async fn refresh_rotates_and_supersedes() {
        let book = TokenBook::new(0, HOUR);
        let first = book.issue(true);
        let second = rotated(book.refresh(first.refresh_token.as_deref().unwrap()));
        assert_ne!(first.refresh_token, second.refresh_token);
        assert_eq!(book.check(&first.access_token), AccessCheck::Superseded);
        assert_eq!(book.check(&second.access_token), AccessCheck::Current);
        rotated(book.refresh(second.refresh_token.as_deref().unwrap()));
    }

    #[tokio::test]
    async fn reuse_revokes_the_family_only() {
        let book = TokenBook::new(0, HOUR);
        let victim = book.issue(true);
        let bystander = book.issue(true);
        let old = victim.refresh_token.clone().unwrap();
        let newest = rotated(book.refresh(&old));
        assert_eq!(book.refresh(&old), RefreshOutcome::Reused);
        assert_eq!(book.check(&newest.access_token), AccessCheck::Dead);
        assert_eq!(
            book.refresh(newest.refresh_token.as_deref().unwrap()),
            RefreshOutcome::Invalid
        );
        assert_eq!(book.check(&bystander.access_token), AccessCheck::Current);
    }

    #[tokio::test]
    async fn revoke_all_kills_every_token() {
        let book = TokenBook::new(0, HOUR);
        let issued = book.issue(true);
        book.revoke_all();
        assert_eq!(book.check(&issued.access_token), AccessCheck::Dead);
        assert_eq!(
            book.refresh(issued.refresh_token.as_deref().unwrap()),
            RefreshOutcome::Invalid
        );
    }

    #[tokio::test]
    async fn tokens_follow_the_seed_and_differ_from_each_other() {
        let a = TokenBook::new(5, HOUR).issue(true);
        let b = TokenBook::new(5, HOUR).issue(true);
        let c = TokenBook::new(6, HOUR).issue(true);
        assert_eq!(a, b);
        assert_ne!(a.access_token, c.access_token);
        assert_ne!(Some(&a.access_token), a.refresh_token.as_ref());
        assert_eq!(a.access_token.len(), 32);
    }

    #[tokio::test]
    async fn a_rejected_token_stays_dead() {
        let book = TokenBook::new(0, HOUR);
        let issued = book.issue(true);
        assert!(!book.was_rejected(&issued.access_token));
        assert!(!book.note_rejected(&issued.access_token));
        assert!(book.was_rejected(&issued.access_token));
        assert!(book.note_rejected(&issued.access_token));
    }

    #[tokio::test]
    async fn expires_in_is_at_least_one_second() {
        let book = TokenBook::new(0, Duration::from_millis(300));
        assert_eq!(book.issue(false).expires_in, 1);
    }
}
