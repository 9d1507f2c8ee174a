//! The seeded chaos run: every fault of an adversarial upstream at once, at known positions.

use std::time::Duration;

use crate::{splitmix, Action, Config, Faults, Route, Script, TestServer};

/// Salt of the plan's own draws (burst and token-failure positions).
const CHAOS_STREAM: u64 = 0x63_6861_6f73; // "chaos"

/// The fault mix of a chaos run against [`Route::Items`] and the token endpoint
/// ([`Route::Token`]), scaled to the number of API calls the run plans to make.
///
/// What [`apply`](Self::apply) sets, all from the seed:
///
/// - short-lived access tokens ([`access_ttl`](Self::access_ttl)), so the client refreshes
///   many times during the run;
/// - on the token endpoint, [`token_failures`](Self::token_failures) calls answered 503,
///   never two in a row (so a refresh that retries once gets tokens), among its first
///   `3 × token_failures` calls;
/// - on the API route, [`bursts`](Self::bursts) bursts of
///   [`burst_len`](Self::burst_len) consecutive 503s, [`hangs`](Self::hangs) requests that
///   get no answer for [`hang_for`](Self::hang_for) and then lose their connection,
///   [`slow_bodies`](Self::slow_bodies) answers whose body stalls for
///   [`slow_body_pause`](Self::slow_body_pause) halfway, and a share of connection resets
///   ([`reset_rate`](Self::reset_rate)) and of scattered 503s
///   ([`fail_rate`](Self::fail_rate)) drawn per request;
/// - on the API route, [`revocations`](Self::revocations) requests whose live access token
///   the server revokes on arrival (answered 401 while its refresh token stays valid), so
///   the client must refresh on a rejection, replay, and never send that token again.
///
/// ```
/// use xhttp_testkit::{ChaosPlan, Route, TestServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let plan = ChaosPlan::scaled(7, 2_000);
/// let server = TestServer::start_with(plan.config()).await;
/// plan.apply(&server);
/// assert_eq!(plan.token_script().len(), 5);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ChaosPlan {
    /// Seed of the server (tokens, drawn faults) and of the scripted positions.
    pub seed: u64,
    /// API calls the run plans to make; the scripts spread over this many requests.
    pub calls: u64,
    /// Lifetime of access tokens.
    pub access_ttl: Duration,
    /// Calls of the token endpoint answered 503, in total.
    pub token_failures: u64,
    /// Bursts of consecutive 503s on the API route.
    pub bursts: u64,
    /// Length of each burst, in requests.
    pub burst_len: u64,
    /// API requests that hang.
    pub hangs: u64,
    /// How long a hung request gets no answer before its connection is dropped.
    pub hang_for: Duration,
    /// API answers whose body stalls halfway.
    pub slow_bodies: u64,
    /// How long a slow body stalls.
    pub slow_body_pause: Duration,
    /// Share of API requests whose connection is reset without an answer.
    pub reset_rate: f64,
    /// Share of API requests answered 503 outside the bursts.
    pub fail_rate: f64,
    /// API requests whose live access token is revoked on arrival ([`Action::Revoke`]).
    pub revocations: u64,
}

impl ChaosPlan {
    /// The full-size run: 100 000 calls, 300 ms tokens, 5 token-endpoint failures,
    /// 20 bursts of 50 503s, 20 hangs of 5 s, 200 slow bodies of 300 ms, 200 revoked access
    /// tokens, 0.2% resets and 0.5% scattered 503s.
    pub fn full(seed: u64) -> ChaosPlan {
        ChaosPlan::scaled(seed, 100_000)
    }

    /// The same mix for `calls` API calls: the token failures stay 5, the bursts, hangs,
    /// slow bodies and revocations scale with the calls (at least 2 of each), and tokens live 300 ms (so
    /// a run of a few seconds refreshes often enough to meet every token failure).
    pub fn scaled(seed: u64, calls: u64) -> ChaosPlan {
        let per = |every: u64| (calls / every).max(2);
        ChaosPlan {
            seed,
            calls,
            access_ttl: Duration::from_millis(300),
            token_failures: 5,
            bursts: per(5_000),
            burst_len: 50,
            hangs: per(5_000),
            hang_for: Duration::from_secs(5),
            slow_bodies: per(500),
            slow_body_pause: Duration::from_millis(300),
            reset_rate: 0.002,
            fail_rate: 0.005,
            revocations: per(500),
        }
    }

    /// The server configuration: the seed and the token lifetime.
    pub fn config(&self) -> Config {
        Config {
            access_ttl: self.access_ttl,
            seed: self.seed,
            ..Config::default()
        }
    }

    /// The token endpoint's script: `token_failures` 503s, the k-th at position `3k + 1` or
    /// `3k + 2` (the seed picks), so two failures are never adjacent.
    pub fn token_script(&self) -> Script {
        (0..self.token_failures).fold(Script::new(), |script, k| {
            let offset = splitmix::hash(self.seed, CHAOS_STREAM, k) % 2;
            script.on(3 * k + 1 + offset, Action::fail(503))
        })
    }

    /// The API route's script: the bursts (spread evenly, each at a seeded offset in its
    /// share of the calls), then the hangs, the slow bodies and the revocations at seeded
    /// free positions.
    pub fn api_script(&self) -> Script {
        let calls = self.calls.max(1);
        let share = (calls / self.bursts.max(1)).max(self.burst_len + 1);
        let mut script = Script::new();
        for b in 0..self.bursts {
            let room = share.saturating_sub(self.burst_len).max(1);
            let start = b * share + splitmix::hash(self.seed, CHAOS_STREAM, 1_000 + b) % room;
            script = script.on_range(start..start + self.burst_len, Action::fail(503));
        }
        script
            .seeded(
                self.seed,
                self.hangs as usize,
                0..calls,
                Action::Hang(self.hang_for),
            )
            .seeded(
                self.seed ^ 1,
                self.slow_bodies as usize,
                0..calls,
                Action::SlowBody(self.slow_body_pause),
            )
            .seeded(
                self.seed ^ 2,
                self.revocations as usize,
                0..calls,
                Action::Revoke,
            )
    }

    /// The drawn faults of the API route: resets and scattered 503s.
    pub fn api_faults(&self) -> Faults {
        Faults {
            drop_rate: self.reset_rate,
            fail_rate: self.fail_rate,
            ..Faults::default()
        }
    }

    /// Sets the scripts and faults on `server` (started with [`config`](Self::config)).
    pub fn apply(&self, server: &TestServer) {
        server.set_script(Route::Token, self.token_script());
        server.set_script(Route::Items, self.api_script());
        server.set_faults(Route::Items, self.api_faults());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_failures_are_never_adjacent() {
        for seed in 0..50 {
            let script = ChaosPlan::scaled(seed, 3_000).token_script();
            let positions: Vec<u64> = script.positions().collect();
            assert_eq!(positions.len(), 5);
            assert!(
                positions.windows(2).all(|w| w[1] - w[0] >= 2),
                "{positions:?}"
            );
            assert!(!positions.contains(&0));
        }
    }

    #[test]
    fn the_api_script_holds_every_fault_within_the_calls() {
        let plan = ChaosPlan::full(1);
        let script = plan.api_script();
        let expected =
            plan.bursts * plan.burst_len + plan.hangs + plan.slow_bodies + plan.revocations;
        assert_eq!(script.len() as u64, expected);
        assert!(script.last_position().is_some_and(|n| n < plan.calls));
        assert_eq!(plan.api_script(), script, "same seed, same script");
    }
}
