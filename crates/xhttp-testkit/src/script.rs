//! Scripted faults: exactly which requests of a route misbehave, and how.
//!
//! [`Faults`](crate::Faults) draw a share of requests at random; a [`Script`] names them:
//! "the 3rd call of the token endpoint answers 503", "requests 5 000 to 5 049 answer 503",
//! "request 812 hangs for 5 s and then loses its connection". A scripted request gets its
//! [`Action`] instead of the route's drawn faults, so a test knows how many faults fire and
//! where, whatever the timing of the client.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use crate::splitmix;

/// Salt of the seeded positions of [`Script::seeded`], apart from the fault draws.
const SCRIPT_STREAM: u64 = 0x7363_7269_7074; // "script"

/// What one scripted request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Answered with `status` (and `Retry-After` when given) without reaching the handler,
    /// with the body `{"error":{"message":"scripted fault"}}`.
    Fail {
        /// The status; a value that is not a final status is sent as 503.
        status: u16,
        /// A `Retry-After` value such as `"1"`.
        retry_after: Option<String>,
    },
    /// The connection is closed without a response (a reset, as the client sees it).
    Drop,
    /// No answer for this long, then the connection is closed without a response: a hung
    /// upstream that the client's timeout must cut.
    Hang(Duration),
    /// The normal answer, after this long.
    Delay(Duration),
    /// The normal head and the first half of the body at once, the rest after this long: a
    /// slow body that an attempt timeout covering the body must cut.
    SlowBody(Duration),
    /// The access token this request bears is revoked alone (its family and refresh token
    /// stay valid), so the request is answered as any dead token is: 401 `invalid_token`, or
    /// the business "token expired" code. A live token the server turns away before its
    /// expiry: the client must refresh, replay, and never send that token again.
    Revoke,
}

impl Action {
    /// [`Action::Fail`] with `status` and no `Retry-After`.
    ///
    /// ```
    /// use xhttp_testkit::Action;
    ///
    /// assert_eq!(Action::fail(503), Action::Fail { status: 503, retry_after: None });
    /// ```
    pub fn fail(status: u16) -> Action {
        Action::Fail {
            status,
            retry_after: None,
        }
    }
}

/// Which requests of one route misbehave, by their position: the `n`-th request on the
/// route (counting from 0) since the script was set with
/// [`TestServer::set_script`](crate::TestServer::set_script).
///
/// The token endpoint's script is how a test makes it fail a known number of times:
///
/// ```
/// use std::time::Duration;
/// use xhttp_testkit::{Action, Script};
///
/// // The 2nd refresh answers 503, the 5th hangs for 3 s, and 4 more refreshes among the
/// // first 100 answer 503 at positions the seed picks.
/// let script = Script::new()
///     .on(1, Action::fail(503))
///     .on(4, Action::Hang(Duration::from_secs(3)))
///     .seeded(7, 4, 0..100, Action::fail(503));
/// assert_eq!(script.len(), 6);
/// assert_eq!(script.action(1), Some(&Action::fail(503)));
/// assert_eq!(script.action(0), None);
/// // A burst: requests 1 000 to 1 049 of an API route answer 503.
/// let burst = Script::new().on_range(1_000..1_050, Action::fail(503));
/// assert_eq!(burst.len(), 50);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    steps: BTreeMap<u64, Action>,
}

impl Script {
    /// A script that changes nothing.
    pub fn new() -> Script {
        Script::default()
    }

    /// The `n`-th request (from 0) gets `action`; a later step for the same `n` replaces it.
    pub fn on(mut self, n: u64, action: Action) -> Script {
        self.steps.insert(n, action);
        self
    }

    /// Every request whose position is in `range` gets `action` (a burst).
    pub fn on_range(mut self, range: Range<u64>, action: Action) -> Script {
        for n in range {
            self.steps.insert(n, action.clone());
        }
        self
    }

    /// `count` requests at distinct positions in `within` that have no step yet, picked by
    /// `seed` (the same seed picks the same positions), get `action`. Fewer when `within`
    /// has fewer free positions.
    pub fn seeded(mut self, seed: u64, count: usize, within: Range<u64>, action: Action) -> Script {
        let free = within
            .clone()
            .filter(|n| !self.steps.contains_key(n))
            .count();
        let mut left = count.min(free);
        let width = within.end.saturating_sub(within.start);
        let mut draw = 0u64;
        while left > 0 && width > 0 {
            let n = within.start + splitmix::hash(seed, SCRIPT_STREAM, draw) % width;
            draw += 1;
            if let std::collections::btree_map::Entry::Vacant(slot) = self.steps.entry(n) {
                slot.insert(action.clone());
                left -= 1;
            }
        }
        self
    }

    /// The action of the `n`-th request, if it has one.
    pub fn action(&self, n: u64) -> Option<&Action> {
        self.steps.get(&n)
    }

    /// Number of scripted requests.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True when no request is scripted.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The scripted positions, in order.
    pub fn positions(&self) -> impl Iterator<Item = u64> + '_ {
        self.steps.keys().copied()
    }

    /// The last scripted position: a run that made fewer requests on the route than this
    /// plus one did not meet the whole script.
    pub fn last_position(&self) -> Option<u64> {
        self.steps.keys().next_back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_positions_follow_the_seed_and_stay_in_range() {
        let a = Script::new().seeded(3, 10, 100..200, Action::Drop);
        let b = Script::new().seeded(3, 10, 100..200, Action::Drop);
        let c = Script::new().seeded(4, 10, 100..200, Action::Drop);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 10);
        assert!(a.positions().all(|n| (100..200).contains(&n)));
    }

    #[test]
    fn seeded_never_overwrites_and_stops_when_full() {
        let script =
            Script::new()
                .on_range(0..4, Action::fail(503))
                .seeded(1, 10, 0..5, Action::Drop);
        assert_eq!(script.len(), 5);
        assert_eq!(script.action(4), Some(&Action::Drop));
        assert_eq!(script.action(0), Some(&Action::fail(503)));
        assert_eq!(script.last_position(), Some(4));
        assert!(Script::new().is_empty());
    }
}
