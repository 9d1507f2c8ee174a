//! Fault injection: which routes misbehave, how often, and in which pattern.
//!
//! The decision for the n-th request on a route is a pure function of the server's seed,
//! the route and n ([`Faults::decide`]). Two servers with the same seed therefore answer the
//! same sequence of requests with the same faults, and a test can recompute the pattern
//! with [`fault_pattern`] to compare it with what the server did.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::splitmix;
use crate::{Action, Script};

/// A route of the [`TestServer`](crate::TestServer), for counters and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Route {
    /// `POST /auth/login`.
    Login,
    /// `POST /auth/token` (the OAuth 2.0 token endpoint).
    Token,
    /// `POST /auth/refresh` (the custom JSON refresh dialect).
    CustomRefresh,
    /// `GET /api/items/{id}` and `POST /api/items` (protected).
    Items,
    /// `GET /api/me` (protected).
    Me,
    /// `GET /public/items/{id}`.
    Public,
    /// `GET /public/gzip/{id}`: the public item, gzip-compressed when the client accepts it.
    Gzip,
    /// `/echo` and `/echo/{*rest}`, any method.
    Echo,
    /// `POST /upload`.
    Upload,
    /// `GET /bytes/{n}` and `GET /bytes-chunked/{n}`.
    Bytes,
    /// `GET /close-mid-body`.
    CloseMidBody,
    /// `GET /gate/{id}`, `GET /api/gate/{id}`, `GET /gate-echo/{*rest}` and
    /// `GET /gate-status/{code}`: every route held at the gate.
    Gate,
    /// `/status/{code}` (any method), `GET /problem/{code}`, `GET /html-error/{code}` and
    /// `GET /envelope-error/{code}`.
    Status,
    /// `GET /slow/{ms}` and `GET /slow-body/{ms}`.
    Slow,
    /// `/redirect?to=...`, any method.
    Redirect,
    /// Every route: [`TestServer::set_faults`](crate::TestServer::set_faults) with `Any`
    /// sets the faults of every route, and [`Counters::hits`](crate::Counters::hits) with
    /// `Any` is the total of requests.
    Any,
}

impl Route {
    /// Every concrete route (all but [`Route::Any`]).
    pub const ALL: [Route; 15] = [
        Route::Login,
        Route::Token,
        Route::CustomRefresh,
        Route::Items,
        Route::Me,
        Route::Public,
        Route::Echo,
        Route::Upload,
        Route::Bytes,
        Route::CloseMidBody,
        Route::Gate,
        Route::Status,
        Route::Slow,
        Route::Redirect,
        Route::Gzip,
    ];

    /// Number of concrete routes: the length of per-route tables.
    pub(crate) const COUNT: usize = Self::ALL.len();

    /// Position in per-route tables, and the stream id of the route's fault decisions
    /// (so it must never change for a given route, or seeds would stop reproducing).
    pub(crate) fn index(self) -> usize {
        match self {
            Route::Login => 0,
            Route::Token => 1,
            Route::CustomRefresh => 2,
            Route::Items => 3,
            Route::Me => 4,
            Route::Public => 5,
            Route::Echo => 6,
            Route::Upload => 7,
            Route::Bytes => 8,
            Route::CloseMidBody => 9,
            Route::Gate => 10,
            Route::Status => 11,
            Route::Slow => 12,
            Route::Redirect => 13,
            Route::Gzip => 14,
            Route::Any => 15,
        }
    }
}

/// How a route misbehaves. The default is all off.
///
/// The rates are shares of requests in `[0, 1]`; one draw per request picks at most one of
/// drop, fail or malformed (in that order), so their sum should not exceed 1. `delay` applies
/// to every request of the route, before the drawn outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Share of requests answered with `status` instead of reaching the handler.
    pub fail_rate: f64,
    /// Status of injected failures (default 503 Service Unavailable, the status of an
    /// overloaded server; 429 with `retry_after` imitates a rate limit).
    pub status: u16,
    /// `Retry-After` value added to injected failures, such as `"2"` or an HTTP date.
    pub retry_after: Option<String>,
    /// Wait before answering each request.
    pub delay: Option<Duration>,
    /// Share of requests whose connection is closed without any response.
    pub drop_rate: f64,
    /// Share of requests answered 200 with a JSON content type and a truncated JSON body.
    pub malformed_json_rate: f64,
    /// Never answer (until the server is dropped, which then closes the connection).
    pub hang: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            fail_rate: 0.0,
            status: 503,
            retry_after: None,
            delay: None,
            drop_rate: 0.0,
            malformed_json_rate: 0.0,
            hang: false,
        }
    }
}

/// What fault injection does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultDecision {
    /// The request reaches its handler (after the delay, if any).
    Pass,
    /// Answered with the configured failure status.
    Fail,
    /// The connection is closed without a response.
    Drop,
    /// Answered 200 with broken JSON.
    Malformed,
    /// Never answered.
    Hang,
}

impl Faults {
    /// Status of injected failures: `status`, or 503 when it is not a final status.
    pub fn failure_status(&self) -> http::StatusCode {
        http::StatusCode::from_u16(self.status)
            .ok()
            .filter(|status| status.as_u16() >= 200)
            .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE)
    }

    /// True when these faults change nothing.
    pub fn is_off(&self) -> bool {
        !self.hang
            && self.delay.is_none()
            && self.fail_rate <= 0.0
            && self.drop_rate <= 0.0
            && self.malformed_json_rate <= 0.0
    }

    /// The decision for the `n`-th request (counting from 0) on `route` of a server seeded
    /// with `seed`.
    pub fn decide(&self, seed: u64, route: Route, n: u64) -> FaultDecision {
        if self.hang {
            return FaultDecision::Hang;
        }
        let draw = splitmix::unit(splitmix::hash(seed, route.index() as u64, n));
        let mut edge = self.drop_rate;
        if draw < edge {
            return FaultDecision::Drop;
        }
        edge += self.fail_rate;
        if draw < edge {
            return FaultDecision::Fail;
        }
        edge += self.malformed_json_rate;
        if draw < edge {
            return FaultDecision::Malformed;
        }
        FaultDecision::Pass
    }
}

/// The decisions for the first `n` requests on `route` of a server seeded with `seed`,
/// counted from the moment `faults` were set on that route.
///
/// ```
/// use xhttp_testkit::{fault_pattern, FaultDecision, Faults, Route};
///
/// let faults = Faults { fail_rate: 0.5, ..Faults::default() };
/// let pattern = fault_pattern(7, Route::Items, &faults, 100);
/// assert_eq!(pattern, fault_pattern(7, Route::Items, &faults, 100));
/// assert!(pattern.contains(&FaultDecision::Fail) && pattern.contains(&FaultDecision::Pass));
/// ```
pub fn fault_pattern(seed: u64, route: Route, faults: &Faults, n: usize) -> Vec<FaultDecision> {
    (0..n as u64)
        .map(|index| faults.decide(seed, route, index))
        .collect()
}

/// The faults in force on each route, with the request sequence number the decisions use.
#[derive(Debug)]
pub(crate) struct FaultTable {
    seed: u64,
    routes: [RouteFaults; Route::COUNT],
}

#[derive(Debug, Default)]
struct RouteFaults {
    /// `None` when off, so the common case costs one uncontended read lock.
    faults: RwLock<Option<Arc<Faults>>>,
    /// Requests seen since `faults` were last set: the `n` of [`Faults::decide`].
    sequence: AtomicU64,
    /// `None` when no script is set.
    script: RwLock<Option<Arc<Script>>>,
    /// Requests seen since `script` was last set: the position [`Script::action`] reads.
    script_sequence: AtomicU64,
}

/// The faults drawn for one request.
#[derive(Debug)]
pub(crate) struct Injection {
    pub(crate) faults: Arc<Faults>,
    pub(crate) decision: FaultDecision,
}

impl FaultTable {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            routes: Default::default(),
        }
    }

    /// Sets the faults of `route` (every route for [`Route::Any`]) and restarts its sequence.
    pub(crate) fn set(&self, route: Route, faults: Faults) {
        let faults = (!faults.is_off()).then(|| Arc::new(faults));
        let targets: &[Route] = match route {
            Route::Any => &Route::ALL,
            _ => std::slice::from_ref(&route),
        };
        for target in targets {
            let slot = &self.routes[target.index()];
            // The lock orders the reset against draws, so request 0 after `set` is decided
            // with the new faults.
            let mut guard = slot
                .faults
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            *guard = faults.clone();
            slot.sequence.store(0, Ordering::SeqCst);
        }
    }

    /// Sets the script of `route` (every route for [`Route::Any`]) and restarts its count.
    pub(crate) fn set_script(&self, route: Route, script: Script) {
        let script = (!script.is_empty()).then(|| Arc::new(script));
        let targets: &[Route] = match route {
            Route::Any => &Route::ALL,
            _ => std::slice::from_ref(&route),
        };
        for target in targets {
            let slot = &self.routes[target.index()];
            let mut guard = slot
                .script
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            *guard = script.clone();
            slot.script_sequence.store(0, Ordering::SeqCst);
        }
    }

    /// The scripted action of the next request on `route`, if its script names it.
    pub(crate) fn scripted(&self, route: Route) -> Option<Action> {
        let slot = self.routes.get(route.index())?;
        let guard = slot
            .script
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let script = guard.as_ref()?;
        let n = slot.script_sequence.fetch_add(1, Ordering::SeqCst);
        script.action(n).cloned()
    }

    /// Draws the decision for the next request on `route`; `None` when it has no faults.
    pub(crate) fn draw(&self, route: Route) -> Option<Injection> {
        let slot = self.routes.get(route.index())?;
        let guard = slot
            .faults
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let faults = guard.as_ref()?.clone();
        let n = slot.sequence.fetch_add(1, Ordering::SeqCst);
        drop(guard);
        let decision = faults.decide(self.seed, route, n);
        Some(Injection { faults, decision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_indices_are_distinct_and_fit_the_tables() {
        for (position, route) in Route::ALL.iter().enumerate() {
            assert_eq!(route.index(), position);
        }
        assert_eq!(Route::Any.index(), Route::COUNT);
    }

    #[test]
    fn rates_partition_one_draw() {
        let faults = Faults {
            drop_rate: 0.1,
            fail_rate: 0.2,
            malformed_json_rate: 0.3,
            ..Faults::default()
        };
        let pattern = fault_pattern(42, Route::Echo, &faults, 20_000);
        let share = |d| pattern.iter().filter(|x| **x == d).count() as f64 / 20_000.0;
        assert!((share(FaultDecision::Drop) - 0.1).abs() < 0.02);
        assert!((share(FaultDecision::Fail) - 0.2).abs() < 0.02);
        assert!((share(FaultDecision::Malformed) - 0.3).abs() < 0.02);
        assert!((share(FaultDecision::Pass) - 0.4).abs() < 0.02);
    }

    #[test]
    fn hang_wins_over_rates() {
        let faults = Faults {
            hang: true,
            fail_rate: 1.0,
            ..Faults::default()
        };
        assert_eq!(faults.decide(0, Route::Me, 0), FaultDecision::Hang);
    }

    #[test]
    fn setting_faults_restarts_the_sequence() {
        let table = FaultTable::new(9);
        let faults = Faults {
            fail_rate: 0.5,
            ..Faults::default()
        };
        table.set(Route::Items, faults.clone());
        let first: Vec<_> = (0..50)
            .filter_map(|_| table.draw(Route::Items))
            .map(|i| i.decision)
            .collect();
        table.set(Route::Items, faults.clone());
        let again: Vec<_> = (0..50)
            .filter_map(|_| table.draw(Route::Items))
            .map(|i| i.decision)
            .collect();
        assert_eq!(first, again);
        assert_eq!(first, fault_pattern(9, Route::Items, &faults, 50));
    }

    #[test]
    fn any_sets_every_route_and_default_clears() {
        let table = FaultTable::new(0);
        table.set(
            Route::Any,
            Faults {
                hang: true,
                ..Faults::default()
            },
        );
        assert!(Route::ALL.iter().all(|r| table.draw(*r).is_some()));
        table.set(Route::Any, Faults::default());
        assert!(Route::ALL.iter().all(|r| table.draw(*r).is_none()));
    }

    #[test]
    fn failure_status_defaults_to_503() {
        assert_eq!(Faults::default().failure_status().as_u16(), 503);
        let faults = Faults {
            status: 429,
            ..Faults::default()
        };
        assert_eq!(faults.failure_status().as_u16(), 429);
    }
}
