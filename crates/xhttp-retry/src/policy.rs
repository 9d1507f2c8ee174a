//! What is retried, when, and how long to wait: the policy, apart from the mechanics (tower's
//! `Retry` polls readiness and drives the attempts).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderName, Method, Request, Response, StatusCode};
use tower::retry::budget::{Budget, TpsBudget};
use xhttp_core::body::{can_replay, copy_for_replay, mark_not_replayed, RequestBody};
use xhttp_core::{
    is_idempotent, Deadline, Error, ErrorKind, SharedClock, TimeoutScope, TokioClock,
};

use crate::parse_retry_after;

/// The draft `Idempotency-Key` header: a request carrying it may be retried whatever its
/// method, with the same key on every attempt (the clone carries it).
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Per-request option: retry this request differently from the layer's policy.
///
/// ```
/// use xhttp_retry::RetryOverride;
/// let request = http::Request::post("https://api.example.com/charge")
///     .extension(RetryOverride::Off)
///     .body(())
///     .unwrap();
/// # drop(request);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOverride {
    /// Never retry this request.
    Off,
    /// At most this many retries (attempts minus one) for this request.
    Retries(u32),
}

/// How many attempts a call made, as a response extension (an error carries it as
/// [`Error::attempts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts(pub u32);

/// Why an attempt is retried, for the `on_retry` hook and the tracing event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryReason {
    /// The connection failed before the request was sent (connect refused, DNS, TLS).
    NeverSent,
    /// The attempt timed out (an idempotent request).
    Timeout,
    /// The connection failed after the request may have been sent (an idempotent request).
    Transport,
    /// The server answered a retryable status (408, 429, 500, 502, 503, 504).
    Status(StatusCode),
    /// The user's predicate asked for it.
    Predicate,
    /// A gRPC answer said UNAVAILABLE (`grpc-status: 14`, an idempotent call or one with an
    /// `Idempotency-Key`).
    GrpcUnavailable,
}

/// What the user predicate sees of an outcome.
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The response status, when a response came back.
    pub status: Option<StatusCode>,
    /// The error, when one came back.
    pub error: Option<&'a Error>,
}

type Predicate = Arc<dyn Fn(&Outcome<'_>) -> Option<bool> + Send + Sync>;
type Hook = Arc<dyn Fn(u32, Duration, &RetryReason) + Send + Sync>;
type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// The retry policy: counts, backoff, `Retry-After`, budget and hooks. Built once; every clone
/// and every layer built from it share one budget.
///
/// Defaults, and why:
/// - 3 retries (4 attempts), as Polly's standard pipeline and axios-retry;
/// - exponential backoff from 100 ms, factor 2, capped at 5 s, with full jitter
///   (`U(0, min(cap, base * 2^n))`, the AWS analysis: it spreads a retry storm best);
/// - `Retry-After` on 429 and 503 honoured up to 30 s (ky and retryablehttp sleep for any value,
///   3,600 s was seen); a wait that would pass the call's deadline returns at once instead,
///   with the parsed value on the error;
/// - a budget of 20% of requests plus 10 retries a second over 10 s, as tower's `TpsBudget`;
/// - gRPC answers whose status comes in their headers (Trailers-Only, as failures usually
///   come) are classified as gRFC A6 does with its default retryable codes: UNAVAILABLE
///   (`grpc-status: 14`) is retried when the call may be repeated (every gRPC call is a
///   `POST`, so: its method configured with
///   [`idempotent_path`](RetryPolicyBuilder::idempotent_path), an `Idempotency-Key`, or never
///   sent), `grpc-retry-pushback-ms` is honoured
///   as `Retry-After` is (under the same cap), a negative or malformed pushback means "do not
///   retry", and every other code ends the call.
///
/// Configurations that cannot work are a `Config` error from
/// [`build`](RetryPolicyBuilder::build), never a panic later: a factor that is not a finite
/// number >= 1 (NaN included), a base above the cap, a backoff or `Retry-After` cap above a
/// year ([`RetryPolicy::LONGEST_WAIT`]: no wait worth the name, and `Duration::MAX` overflows
/// every clock), a budget whose ttl is outside 1 to 60 s, whose percent is outside 0 to 1000
/// (NaN included) or whose floor is `i32::MAX` a second or more (tower's `TpsBudget` asserts
/// these). A jitter source that returns NaN or a value outside `[0, 1]` is clamped, never
/// trusted.
///
/// ```
/// use std::time::Duration;
/// use xhttp_retry::RetryPolicy;
///
/// let policy = RetryPolicy::builder()
///     .max_retries(5)
///     .backoff(Duration::from_millis(50), 2.0, Duration::from_secs(2))
///     .retry_if(|outcome| {
///         // A backend's "system busy" business code is worth another try.
///         let busy = outcome.error.and_then(|e| e.business_code()).is_some_and(|c| c.to_string() == "1003");
///         busy.then_some(true)
///     })
///     .on_retry(|attempt, delay, reason| eprintln!("retry {attempt} in {delay:?}: {reason:?}"))
///     .build()
///     .unwrap();
/// # drop(policy);
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    settings: Arc<Settings>,
}

struct Settings {
    max_retries: u32,
    base: Duration,
    factor: f64,
    cap: Duration,
    retry_after_cap: Duration,
    budget: TpsBudget,
    jitter: Jitter,
    clock: SharedClock,
    predicate: Option<Predicate>,
    on_retry: Option<Hook>,
    idempotent_paths: Arc<[String]>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("RetryPolicy")
            .field("max_retries", &s.max_retries)
            .field("base", &s.base)
            .field("factor", &s.factor)
            .field("cap", &s.cap)
            .field("retry_after_cap", &s.retry_after_cap)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // The defaults are valid by construction.
        RetryPolicyBuilder::default()
            .build()
            .unwrap_or_else(|_| unreachable!("the default retry policy is valid"))
    }
}

/// Options of a [`RetryPolicy`].
#[must_use]
pub struct RetryPolicyBuilder {
    max_retries: u32,
    base: Duration,
    factor: f64,
    cap: Duration,
    retry_after_cap: Duration,
    budget: (Duration, u32, f32),
    jitter: Option<Jitter>,
    clock: SharedClock,
    predicate: Option<Predicate>,
    on_retry: Option<Hook>,
    idempotent_paths: Vec<String>,
}

impl Default for RetryPolicyBuilder {
    fn default() -> Self {
        RetryPolicyBuilder {
            max_retries: 3,
            base: Duration::from_millis(100),
            factor: 2.0,
            cap: Duration::from_secs(5),
            retry_after_cap: Duration::from_secs(30),
            budget: (Duration::from_secs(10), 10, 0.2),
            jitter: None,
            clock: Arc::new(TokioClock),
            predicate: None,
            on_retry: None,
            idempotent_paths: Vec::new(),
        }
    }
}

impl RetryPolicyBuilder {
    /// Retries after the first attempt (default 3).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Exponential backoff: `base * factor^n`, at most `cap`, before full jitter. `build`
    /// fails unless `factor` is finite and >= 1, `base <= cap` and `cap` is at most a year.
    pub fn backoff(mut self, base: Duration, factor: f64, cap: Duration) -> Self {
        (self.base, self.factor, self.cap) = (base, factor, cap);
        self
    }

    /// The longest `Retry-After` honoured (default 30 s, at most a year); a longer one ends
    /// the retries.
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.retry_after_cap = cap;
        self
    }

    /// The retry budget (tower's `TpsBudget`): over `ttl`, retries may be `retry_percent` of
    /// requests plus `min_per_sec` a second. `ttl` must be 1 to 60 s, `retry_percent` 0 to
    /// 1000 and `min_per_sec` below `i32::MAX`, or `build` fails.
    pub fn budget(mut self, ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        self.budget = (ttl, min_per_sec, retry_percent);
        self
    }

    /// The random source of the jitter: a value in `[0, 1]` (default: a fast thread-local
    /// generator). Tests pin it to get exact schedules.
    pub fn jitter(mut self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.jitter = Some(Arc::new(random));
        self
    }

    /// Requests to this path may be repeated whatever their method, as if they carried an
    /// `Idempotency-Key`: a `POST` the server treats as idempotent, and every gRPC method
    /// that is (`/grpc.health.v1.Health/Check`; gRPC sends every call as a `POST`, so without
    /// this a gRPC call is retried only when it was never sent). The path is matched exactly.
    ///
    /// ```
    /// use xhttp_retry::RetryPolicy;
    ///
    /// let policy = RetryPolicy::builder()
    ///     .idempotent_path("/grpc.health.v1.Health/Check")
    ///     .idempotent_path("/api/search")
    ///     .build()
    ///     .unwrap();
    /// # drop(policy);
    /// ```
    pub fn idempotent_path(mut self, path: impl Into<String>) -> Self {
        self.idempotent_paths.push(path.into());
        self
    }

    /// The clock `Retry-After` dates are read against (default: the system's wall clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// A predicate consulted before the built-in classification: `Some(true)` retries,
    /// `Some(false)` never retries, `None` leaves it to the defaults. Idempotency still
    /// matters: return `Some(true)` only for outcomes that are safe to repeat.
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&Outcome<'_>) -> Option<bool> + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Called before each retry with the attempt that failed (1 for the first), the delay and
    /// the reason.
    pub fn on_retry(
        mut self,
        hook: impl Fn(u32, Duration, &RetryReason) + Send + Sync + 'static,
    ) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// Validates and builds the policy.
    pub fn build(self) -> Result<RetryPolicy, Error> {
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(Error::config(
                "the backoff factor must be a finite number >= 1",
            ));
        }
        if self.base > self.cap {
            return Err(Error::config("the backoff base must not exceed its cap"));
        }
        if let Some(path) = self.idempotent_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(Error::config(format!(
                "an idempotent path is a request path that starts with `/`, not `{path}`"
            )));
        }
        if self.cap > RetryPolicy::LONGEST_WAIT || self.retry_after_cap > RetryPolicy::LONGEST_WAIT
        {
            return Err(Error::config(
                "the backoff cap and the Retry-After cap must be at most a year",
            ));
        }
        let (ttl, min_per_sec, percent) = self.budget;
        // `contains` is false for NaN. These are the assertions of `TpsBudget::new`.
        if !(0.0..=1000.0).contains(&percent)
            || !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl)
        {
            return Err(Error::config(
                "the retry budget needs a ttl of 1 to 60 s and a percent of 0 to 1000",
            ));
        }
        if min_per_sec >= i32::MAX as u32 {
            return Err(Error::config(format!(
                "the retry budget's floor must be below {} retries a second",
                i32::MAX
            )));
        }
        Ok(RetryPolicy {
            settings: Arc::new(Settings {
                max_retries: self.max_retries,
                base: self.base,
                factor: self.factor,
                cap: self.cap,
                retry_after_cap: self.retry_after_cap,
                budget: TpsBudget::new(ttl, min_per_sec, percent),
                jitter: self
                    .jitter
                    .unwrap_or_else(|| Arc::new(xhttp_core::random::unit)),
                clock: self.clock,
                predicate: self.predicate,
                on_retry: self.on_retry,
                idempotent_paths: self.idempotent_paths.into(),
            }),
        })
    }
}

impl RetryPolicy {
    /// The longest backoff cap and `Retry-After` cap a policy accepts: a year (365 days), the
    /// same bound as [`Deadline::after`]'s.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xhttp_retry::RetryPolicy;
    /// let too_long = RetryPolicy::LONGEST_WAIT + Duration::from_secs(1);
    /// let err = RetryPolicy::builder()
    ///     .backoff(Duration::from_millis(100), 2.0, too_long)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), xhttp_core::ErrorKind::Config);
    /// ```
    pub const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

    /// Options for a policy, starting from the defaults.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::default()
    }

    /// The largest wait before retry `n` (0 for the first retry): `min(cap, base * factor^n)`,
    /// computed without overflow for any `n`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let policy = xhttp_retry::RetryPolicy::default();
    /// assert_eq!(policy.backoff_bound(0), Duration::from_millis(100));
    /// assert_eq!(policy.backoff_bound(3), Duration::from_millis(800));
    /// assert_eq!(policy.backoff_bound(1024), Duration::from_secs(5));
    /// ```
    pub fn backoff_bound(&self, n: u32) -> Duration {
        let s = &self.settings;
        let exp = i32::try_from(n).unwrap_or(i32::MAX);
        let secs = s.base.as_secs_f64() * s.factor.powi(exp);
        if secs.is_finite() && secs < s.cap.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            s.cap
        }
    }

    /// The wait before retry `n` with full jitter: `random * backoff_bound(n)`, the random
    /// value clamped to `[0, 1]`.
    pub fn backoff(&self, n: u32) -> Duration {
        let random = (self.settings.jitter)();
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.backoff_bound(n).mul_f64(random)
    }

    pub(crate) fn per_request(&self) -> Attempt {
        Attempt {
            policy: self.clone(),
            attempts: 0,
            max_retries: self.settings.max_retries,
        }
    }
}

impl RetryPolicy {
    fn header_retry_after<T>(&self, response: &Response<T>) -> Option<Duration> {
        response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.settings.clock.system_now()))
    }
}

/// A decision about one outcome.
enum Verdict {
    Stop,
    Retry(RetryReason, Option<Duration>),
}

fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

impl RetryPolicy {
    /// The built-in classification: never-sent failures for any
    /// method; timeouts, resets and 408/429/500/502/503/504 only for idempotent methods or a
    /// request with an `Idempotency-Key`, and gRPC's UNAVAILABLE under the same rule; never
    /// 501, other 4xx, other gRPC codes, decode errors, body limits or auth errors.
    fn classify<B, T>(&self, request: &Request<B>, result: &Result<Response<T>, Error>) -> Verdict {
        let method = request.method();
        if let Some(predicate) = &self.settings.predicate {
            let outcome = match result {
                Ok(response) => Outcome {
                    method,
                    status: Some(response.status()),
                    error: None,
                },
                Err(err) => Outcome {
                    method,
                    status: err.status(),
                    error: Some(err),
                },
            };
            match predicate(&outcome) {
                Some(true) => {
                    let retry_after = match result {
                        Ok(response) => self.header_retry_after(response),
                        Err(err) => err.retry_after(),
                    };
                    return Verdict::Retry(RetryReason::Predicate, retry_after);
                }
                Some(false) => return Verdict::Stop,
                None => {}
            }
        }
        let repeatable = is_idempotent(method)
            || request.headers().contains_key(&IDEMPOTENCY_KEY)
            || self
                .settings
                .idempotent_paths
                .iter()
                .any(|path| path == request.uri().path());
        let (status, retry_after) = match result {
            Ok(response) if response.headers().contains_key(GRPC_STATUS) => {
                return grpc_verdict(response, repeatable)
            }
            Ok(response) => (response.status(), self.header_retry_after(response)),
            Err(err) => match err.kind() {
                ErrorKind::Transport if err.is_never_sent() => {
                    return Verdict::Retry(RetryReason::NeverSent, None)
                }
                ErrorKind::Transport if repeatable => {
                    return Verdict::Retry(RetryReason::Transport, None)
                }
                ErrorKind::Timeout(TimeoutScope::Attempt) if repeatable => {
                    return Verdict::Retry(RetryReason::Timeout, None)
                }
                ErrorKind::Status => match err.status() {
                    Some(status) => (status, err.retry_after()),
                    None => return Verdict::Stop,
                },
                _ => return Verdict::Stop,
            },
        };
        if !repeatable || !retryable_status(status) {
            return Verdict::Stop;
        }
        let honoured = matches!(status.as_u16(), 429 | 503)
            .then_some(retry_after)
            .flatten();
        Verdict::Retry(RetryReason::Status(status), honoured)
    }
}

const GRPC_STATUS: &str = "grpc-status";
const GRPC_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// A gRPC answer whose status came in its headers (Trailers-Only, as failures usually come),
/// classified as gRFC A6 does with its default retryable codes: UNAVAILABLE (14) is retried
/// when the call may be repeated; `grpc-retry-pushback-ms` is honoured as `Retry-After` is,
/// and a negative or malformed pushback means "do not retry". Any other code ends the call.
fn grpc_verdict<T>(response: &Response<T>, repeatable: bool) -> Verdict {
    let unavailable = response
        .headers()
        .get(GRPC_STATUS)
        .is_some_and(|code| code.as_bytes() == b"14");
    if !unavailable || !repeatable {
        return Verdict::Stop;
    }
    match response.headers().get(GRPC_PUSHBACK) {
        None => Verdict::Retry(RetryReason::GrpcUnavailable, None),
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(ms) => Verdict::Retry(
                RetryReason::GrpcUnavailable,
                Some(Duration::from_millis(ms)),
            ),
            None => Verdict::Stop,
        },
    }
}

/// The per-call state of the policy, as tower's `Retry` clones it for each call.
#[derive(Clone)]
pub struct Attempt {
    policy: RetryPolicy,
    attempts: u32,
    max_retries: u32,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("attempts", &self.attempts)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl Attempt {
    /// The retries this request may make: its [`RetryOverride`], else the policy's.
    fn max_retries_for<B>(&self, request: &Request<B>) -> u32 {
        match request.extensions().get::<RetryOverride>() {
            Some(RetryOverride::Off) => 0,
            Some(RetryOverride::Retries(n)) => *n,
            None => self.max_retries,
        }
    }

    /// Records the attempt count on the final outcome.
    fn finish<T>(&self, result: &mut Result<Response<T>, Error>) {
        match result {
            Ok(response) => {
                response.extensions_mut().insert(Attempts(self.attempts));
            }
            Err(err) => *err = err.clone().with_attempts(self.attempts),
        }
    }
}

impl<B, T> tower::retry::Policy<Request<B>, Response<T>, Error> for Attempt
where
    B: RequestBody,
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<T>, Error>,
    ) -> Option<Self::Future> {
        self.attempts = self.attempts.saturating_add(1);
        let settings = &self.policy.settings;
        if self.attempts == 1 {
            settings.budget.deposit();
        }
        let (reason, retry_after) = match self.policy.classify(request, result) {
            Verdict::Stop => {
                self.finish(result);
                return None;
            }
            Verdict::Retry(reason, retry_after) => (reason, retry_after),
        };
        if self.attempts > self.max_retries_for(request) {
            self.finish(result);
            return None;
        }
        // Decided now, after the attempt, not when the copy was taken: a streaming body that
        // outgrew its replay cap during the attempt cannot be sent again.
        if !can_replay(request) {
            tracing::debug!("request body cannot be replayed: returning the first outcome");
            self.finish(result);
            mark_not_replayed(result);
            return None;
        }
        let delay = match retry_after {
            Some(wait) if wait > settings.retry_after_cap => {
                tracing::debug!(retry_after = ?wait, "Retry-After beyond the cap: not retrying");
                self.finish(result);
                if let Err(err) = result {
                    *err = err.clone().with_retry_after(wait);
                }
                return None;
            }
            Some(wait) => wait,
            None => self.policy.backoff(self.attempts - 1),
        };
        if let Some(deadline) = Deadline::of(request) {
            if delay >= deadline.remaining() {
                // The wait cannot fit the deadline: return now, with the wait on the error.
                self.finish(result);
                if let (Err(err), Some(wait)) = (result.as_mut(), retry_after) {
                    *err = err.clone().with_retry_after(wait);
                }
                return None;
            }
        }
        if tokio::runtime::Handle::try_current().is_err() {
            // tokio cannot make the backoff timer here: say so instead of panicking.
            *result = Err(xhttp_core::timeout::no_runtime_error());
            self.finish(result);
            return None;
        }
        if !settings.budget.withdraw() {
            tracing::debug!("retry budget exhausted: not retrying");
            self.finish(result);
            return None;
        }
        if let Some(hook) = &settings.on_retry {
            hook(self.attempts, delay, &reason);
        }
        tracing::info!(
            attempt = self.attempts,
            delay_ms = delay.as_millis() as u64,
            reason = ?reason,
            method = %request.method(),
            uri = %xhttp_core::redact::uri(request.uri()),
            "retrying"
        );
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        // Copied even when retries are off for the request (`RetryOverride::Off`, zero
        // retries): without a copy tower returns the outcome without showing it to `retry`,
        // which would leave the attempt count at 0 instead of 1. Copied before every attempt, the last one included, so that `retry` sees every
        // outcome and can record the attempt count on the final one. Whether the copy can be
        // sent is asked in `retry`, once the attempt has read the body.
        copy_for_replay(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_configs_are_rejected() {
        assert!(RetryPolicy::builder()
            .backoff(Duration::from_secs(10), 2.0, Duration::from_secs(1))
            .build()
            .is_err());
        assert!(RetryPolicy::builder()
            .backoff(Duration::from_millis(1), 0.5, Duration::from_secs(1))
            .build()
            .is_err());
        assert!(RetryPolicy::builder()
            .backoff(Duration::from_millis(1), f64::NAN, Duration::from_secs(1))
            .build()
            .is_err());
        assert!(RetryPolicy::builder()
            .budget(Duration::ZERO, 1, 0.2)
            .build()
            .is_err());
    }

    #[test]
    fn a_budget_floor_of_u32_max_is_a_config_error_not_a_panic() {
        // tower's `TpsBudget::new` asserts `min_per_sec < i32::MAX`.
        for floor in [u32::MAX, i32::MAX as u32] {
            let err = RetryPolicy::builder()
                .budget(Duration::from_secs(10), floor, 0.2)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
        }
        assert!(RetryPolicy::builder()
            .budget(Duration::from_secs(10), i32::MAX as u32 - 1, 0.2)
            .build()
            .is_ok());
    }

    #[test]
    fn nan_or_infinite_factors_and_percents_are_config_errors() {
        for factor in [f64::NAN, f64::INFINITY, -1.0] {
            let err = RetryPolicy::builder()
                .backoff(Duration::from_millis(1), factor, Duration::from_secs(1))
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "factor {factor}");
        }
        for percent in [f32::NAN, f32::INFINITY, -0.1, 1000.5] {
            let err = RetryPolicy::builder()
                .budget(Duration::from_secs(10), 10, percent)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "percent {percent}");
        }
        // The smallest positive percent makes tower's withdraw amount saturate: no panic.
        let policy = RetryPolicy::builder()
            .budget(Duration::from_secs(10), 10, f32::MIN_POSITIVE)
            .build()
            .unwrap();
        drop(policy);
    }

    #[test]
    fn backoff_durations_of_duration_max_are_config_errors() {
        let max = Duration::MAX;
        for (base, cap) in [(max, max), (Duration::from_millis(1), max)] {
            let err = RetryPolicy::builder()
                .backoff(base, 2.0, cap)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
        }
        let err = RetryPolicy::builder()
            .retry_after_cap(max)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        // A year is the longest accepted, and its delays compute without a panic.
        let year = RetryPolicy::LONGEST_WAIT;
        let policy = RetryPolicy::builder()
            .backoff(year, 2.0, year)
            .retry_after_cap(year)
            .jitter(|| 1.0)
            .build()
            .unwrap();
        assert_eq!(policy.backoff(0), year);
        assert_eq!(policy.backoff(u32::MAX), year);
    }

    #[test]
    fn a_nan_or_out_of_range_jitter_is_clamped_not_trusted() {
        for (random, expected) in [
            (f64::NAN, Duration::ZERO),
            (f64::INFINITY, Duration::ZERO),
            (f64::NEG_INFINITY, Duration::ZERO),
            (-3.0, Duration::ZERO),
            (7.0, Duration::from_millis(100)),
        ] {
            let policy = RetryPolicy::builder()
                .jitter(move || random)
                .build()
                .unwrap();
            assert_eq!(policy.backoff(0), expected, "random {random}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_delay_is_within_its_bound(n in 0u32..=1024, random in 0.0f64..=1.0, base_ms in 1u64..1000, cap_ms in 1000u64..60_000) {
            let policy = RetryPolicy::builder()
                .backoff(Duration::from_millis(base_ms), 2.0, Duration::from_millis(cap_ms))
                .jitter(move || random)
                .build()
                .unwrap();
            let bound = Duration::from_millis(cap_ms).min(Duration::from_millis(base_ms).saturating_mul(2u32.saturating_pow(n.min(31))));
            let delay = policy.backoff(n);
            proptest::prop_assert!(delay <= policy.backoff_bound(n));
            proptest::prop_assert!(policy.backoff_bound(n) <= Duration::from_millis(cap_ms));
            if n < 20 {
                let diff = policy.backoff_bound(n).abs_diff(bound);
                proptest::prop_assert!(diff <= Duration::from_micros(1), "{:?} vs {:?}", policy.backoff_bound(n), bound);
            }
        }
    }
}
