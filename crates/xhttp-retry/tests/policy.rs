//! RetryLayer under DeadlineLayer over in-process services (`tower::service_fn`), on tokio's
//! paused clock: exact schedules, `Retry-After` to the millisecond, the deadline, the
//! classification, per-request overrides, the budget, cancellation and the readiness
//! contract. The same rules through real sockets are in the root `tests/retry.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use xhttp_core::{Body, BusinessCode, Clock, Error, ErrorKind, TimeoutScope};
use xhttp_retry::{
    Attempts, DeadlineFuture, DeadlineLayer, EnforceDeadline, Retry, RetryLayer, RetryOverride,
    RetryPolicy, RetryPolicyBuilder, RetryReason,
};

type Reply = Result<Response<()>, Error>;

const MS: Duration = Duration::from_millis(1);

/// What the upstream saw of each call: when it started, and the request's method and headers.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: Method,
    headers: HeaderMap,
}

#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn calls(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// When each call started, relative to `start`.
    fn offsets(&self, start: Instant) -> Vec<Duration> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|seen| seen.at - start)
            .collect()
    }

    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

/// An upstream that records every call and answers the n-th (from 0) with `script(n)`.
fn upstream<F>(
    log: &Log,
    script: F,
) -> impl Service<Request<()>, Response = Response<()>, Error = Error> + Clone
where
    F: Fn(usize) -> Reply + Send + Sync + 'static,
{
    let log = log.clone();
    let script = Arc::new(script);
    service_fn(move |request: Request<()>| {
        let n = {
            let mut seen = log.0.lock().unwrap();
            seen.push(Seen {
                at: Instant::now(),
                method: request.method().clone(),
                headers: request.headers().clone(),
            });
            seen.len() - 1
        };
        let reply = script(n);
        async move { reply }
    })
}

fn status(code: u16) -> Reply {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    Ok(response)
}

fn status_with_retry_after(code: u16, retry_after: &str) -> Reply {
    let mut response = status(code)?;
    response
        .headers_mut()
        .insert("retry-after", retry_after.parse().unwrap());
    Ok(response)
}

fn request(method: Method) -> Request<()> {
    Request::builder()
        .method(method)
        .uri("https://api.example.com/items")
        .body(())
        .unwrap()
}

fn get() -> Request<()> {
    request(Method::GET)
}

/// The random source pinned at its maximum: every wait is its full bound.
fn max_jitter() -> RetryPolicyBuilder {
    RetryPolicy::builder().jitter(|| 1.0)
}

/// Sends `request` through deadline > retry > `inner` and returns the outcome with the time
/// it took.
async fn send<S>(
    policy: RetryPolicy,
    deadline: Duration,
    inner: S,
    request: Request<()>,
) -> (Reply, Duration)
where
    S: Service<Request<()>, Response = Response<()>, Error = Error> + Clone,
{
    let service = ServiceBuilder::new()
        .layer(DeadlineLayer::new(deadline))
        .layer(RetryLayer::new(policy))
        .service(inner);
    let start = Instant::now();
    let result = service.oneshot(request).await;
    (result, start.elapsed())
}

const DEADLINE: Duration = Duration::from_secs(30);

fn attempts_of(response: &Response<()>) -> Option<Attempts> {
    response.extensions().get::<Attempts>().copied()
}

// ---------------------------------------------------------------------------------------
// Backoff schedule

#[tokio::test(start_paused = true)]
async fn full_jitter_at_its_maximum_waits_100_then_200_then_400_ms() {
    let log = Log::default();
    let start = Instant::now();
    let (result, took) = send(
        max_jitter().build().unwrap(),
        DEADLINE,
        upstream(&log, |_| status(503)),
        get(),
    )
    .await;
    assert_eq!(
        log.offsets(start),
        [Duration::ZERO, 100 * MS, 300 * MS, 700 * MS]
    );
    assert_eq!(took, 700 * MS);
    let response = result.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(attempts_of(&response), Some(Attempts(4)));
}

#[tokio::test(start_paused = true)]
async fn a_final_503_error_records_four_attempts() {
    let log = Log::default();
    let start = Instant::now();
    let (result, _) = send(
        max_jitter().build().unwrap(),
        DEADLINE,
        upstream(&log, |_| {
            Err(Error::from_status(StatusCode::SERVICE_UNAVAILABLE))
        }),
        get(),
    )
    .await;
    assert_eq!(
        log.offsets(start),
        [Duration::ZERO, 100 * MS, 300 * MS, 700 * MS]
    );
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_at_zero_retries_at_once() {
    let log = Log::default();
    let start = Instant::now();
    let (result, took) = send(
        RetryPolicy::builder().jitter(|| 0.0).build().unwrap(),
        DEADLINE,
        upstream(&log, |_| status(503)),
        get(),
    )
    .await;
    assert_eq!(log.offsets(start), [Duration::ZERO; 4]);
    assert_eq!(took, Duration::ZERO);
    assert_eq!(attempts_of(&result.unwrap()), Some(Attempts(4)));
}

#[tokio::test(start_paused = true)]
async fn the_backoff_bound_saturates_at_its_cap() {
    let log = Log::default();
    let start = Instant::now();
    let policy = max_jitter()
        .backoff(Duration::from_secs(1), 2.0, Duration::from_secs(2))
        .build()
        .unwrap();
    let (result, _) = send(policy, DEADLINE, upstream(&log, |_| status(503)), get()).await;
    let secs = Duration::from_secs(1);
    // Waits of 1 s, then 2 s (the bound), then 2 s again (capped, not 4 s).
    assert_eq!(
        log.offsets(start),
        [Duration::ZERO, secs, 3 * secs, 5 * secs]
    );
    assert_eq!(attempts_of(&result.unwrap()), Some(Attempts(4)));
}

#[tokio::test(start_paused = true)]
async fn on_retry_sees_each_failed_attempt_its_delay_and_the_status() {
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let policy = max_jitter()
        .on_retry({
            let hooked = hooked.clone();
            move |attempt, delay, reason| {
                hooked
                    .lock()
                    .unwrap()
                    .push((attempt, delay, reason.clone()));
            }
        })
        .build()
        .unwrap();
    let log = Log::default();
    let (result, _) = send(policy, DEADLINE, upstream(&log, |_| status(503)), get()).await;
    assert_eq!(result.unwrap().status(), 503);
    let reason = RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        *hooked.lock().unwrap(),
        [
            (1, 100 * MS, reason.clone()),
            (2, 200 * MS, reason.clone()),
            (3, 400 * MS, reason),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_after_failures_stops_the_retries_and_counts_its_attempts() {
    let log = Log::default();
    let (result, _) = send(
        max_jitter().build().unwrap(),
        DEADLINE,
        upstream(&log, |n| if n < 2 { status(502) } else { status(200) }),
        get(),
    )
    .await;
    let response = result.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(attempts_of(&response), Some(Attempts(3)));
    assert_eq!(log.calls(), 3);
}

// ---------------------------------------------------------------------------------------
// Retry-After

/// Tue, 14 Nov 2023 22:13:20 GMT.
fn fixed_wall_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// tokio's (paused) clock for instants, and a fixed wall clock for `Retry-After` dates.
#[derive(Debug)]
struct FixedWallClock;

impl Clock for FixedWallClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn system_now(&self) -> SystemTime {
        fixed_wall_time()
    }
}

/// When the second call started, for a first reply of `first` followed by a 200.
async fn second_call_after(first: Reply) -> Duration {
    let policy = max_jitter()
        .clock(Arc::new(FixedWallClock))
        .build()
        .unwrap();
    let log = Log::default();
    let first = Mutex::new(Some(first));
    let start = Instant::now();
    let (result, _) = send(
        policy,
        DEADLINE,
        upstream(&log, move |_| {
            first.lock().unwrap().take().unwrap_or_else(|| status(200))
        }),
        get(),
    )
    .await;
    let response = result.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(attempts_of(&response), Some(Attempts(2)));
    let offsets = log.offsets(start);
    assert_eq!(offsets.len(), 2);
    offsets[1]
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_delta_seconds_on_503_is_waited_exactly() {
    let wait = second_call_after(status_with_retry_after(503, "2")).await;
    assert_eq!(wait, 2000 * MS);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_imf_fixdate_is_read_against_the_injected_wall_clock() {
    let date = httpdate::fmt_http_date(fixed_wall_time() + Duration::from_secs(3));
    assert_eq!(date, "Tue, 14 Nov 2023 22:13:23 GMT");
    let wait = second_call_after(status_with_retry_after(503, &date)).await;
    assert_eq!(wait, 3000 * MS);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_rfc_850_date_is_honoured() {
    let wait = second_call_after(status_with_retry_after(
        503,
        "Tuesday, 14-Nov-23 22:13:23 GMT",
    ))
    .await;
    assert_eq!(wait, 3000 * MS);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_asctime_date_is_honoured() {
    let wait = second_call_after(status_with_retry_after(503, "Tue Nov 14 22:13:23 2023")).await;
    assert_eq!(wait, 3000 * MS);
}

#[tokio::test(start_paused = true)]
async fn retry_after_with_a_past_date_retries_without_waiting() {
    let date = httpdate::fmt_http_date(fixed_wall_time() - Duration::from_secs(60));
    let wait = second_call_after(status_with_retry_after(503, &date)).await;
    assert_eq!(wait, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_unparseable_retry_after_falls_back_to_the_backoff() {
    let wait = second_call_after(status_with_retry_after(503, "soon")).await;
    assert_eq!(wait, 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_429_is_honoured() {
    let wait = second_call_after(status_with_retry_after(429, "2")).await;
    assert_eq!(wait, 2000 * MS);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_500_is_ignored_in_favour_of_the_backoff() {
    let wait = second_call_after(status_with_retry_after(500, "2")).await;
    assert_eq!(wait, 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_a_503_error_is_honoured() {
    let err = Error::from_status(StatusCode::SERVICE_UNAVAILABLE)
        .with_retry_after(Duration::from_secs(2));
    let wait = second_call_after(Err(err)).await;
    assert_eq!(wait, 2000 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_returns_at_once_after_one_call() {
    let log = Log::default();
    let (result, took) = send(
        max_jitter().build().unwrap(),
        Duration::from_secs(10),
        upstream(&log, |_| status_with_retry_after(503, "20")),
        get(),
    )
    .await;
    assert_eq!(log.calls(), 1);
    assert_eq!(took, Duration::ZERO, "no sleep at all");
    let response = result.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "20");
    assert_eq!(attempts_of(&response), Some(Attempts(1)));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_is_kept_on_the_error() {
    let log = Log::default();
    let (result, took) = send(
        max_jitter().build().unwrap(),
        Duration::from_secs(10),
        upstream(&log, |_| {
            Err(Error::from_status(StatusCode::SERVICE_UNAVAILABLE)
                .with_retry_after(Duration::from_secs(20)))
        }),
        get(),
    )
    .await;
    assert_eq!(log.calls(), 1);
    assert_eq!(took, Duration::ZERO);
    let err = result.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(20)));
    assert_eq!(err.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_over_the_cap_ends_the_retries_without_a_deadline() {
    for first in [
        status_with_retry_after(503, "40"),
        Err(Error::from_status(StatusCode::TOO_MANY_REQUESTS)
            .with_retry_after(Duration::from_secs(40))),
    ] {
        let log = Log::default();
        let first = Mutex::new(Some(first));
        let service = RetryLayer::new(max_jitter().build().unwrap())
            .layer(upstream(&log, move |_| {
                first.lock().unwrap().take().unwrap_or_else(|| status(200))
            }));
        let start = Instant::now();
        let result = service.oneshot(get()).await;
        assert_eq!(log.calls(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
        match result {
            Ok(response) => {
                assert_eq!(response.status(), 503);
                assert_eq!(attempts_of(&response), Some(Attempts(1)));
            }
            Err(err) => {
                assert_eq!(err.retry_after(), Some(Duration::from_secs(40)));
                assert_eq!(err.attempts(), 1);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_retry_after_cap_is_configurable() {
    let log = Log::default();
    let policy = max_jitter()
        .retry_after_cap(Duration::from_secs(1))
        .build()
        .unwrap();
    let (result, _) = send(
        policy,
        DEADLINE,
        upstream(&log, |_| status_with_retry_after(503, "2")),
        get(),
    )
    .await;
    assert_eq!(log.calls(), 1);
    assert_eq!(attempts_of(&result.unwrap()), Some(Attempts(1)));
}

// ---------------------------------------------------------------------------------------
// Deadline

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_fails_with_the_total_timeout_at_the_deadline() {
    let calls = Arc::new(AtomicUsize::new(0));
    let never = service_fn({
        let calls = calls.clone();
        move |_: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Reply>()
        }
    });
    let (result, took) = send(RetryPolicy::default(), DEADLINE, never, get()).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutScope::Total));
    assert_eq!(took, DEADLINE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_when_its_backoff_cannot_fit_the_deadline() {
    let log = Log::default();
    let start = Instant::now();
    let deadline = 250 * MS;
    let (result, took) = send(
        max_jitter().build().unwrap(),
        deadline,
        upstream(&log, |_| status(503)),
        get(),
    )
    .await;
    // 0 ms, then 100 ms; the next wait (200 ms) would end past 250 ms: return now.
    assert_eq!(took, 100 * MS);
    let response = result.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(attempts_of(&response), Some(Attempts(2)));
    tokio::time::advance(Duration::from_secs(60)).await;
    let offsets = log.offsets(start);
    assert_eq!(offsets, [Duration::ZERO, 100 * MS]);
    assert!(offsets.iter().all(|&at| at < deadline));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_on_the_request_is_kept_when_earlier() {
    let log = Log::default();
    let mut request = get();
    request
        .extensions_mut()
        .insert(xhttp_core::Deadline::after(250 * MS));
    let (result, took) = send(
        max_jitter().build().unwrap(),
        DEADLINE,
        upstream(&log, |_| status(503)),
        request,
    )
    .await;
    assert_eq!(took, 100 * MS);
    assert_eq!(log.calls(), 2);
    assert_eq!(attempts_of(&result.unwrap()), Some(Attempts(2)));
}

// ---------------------------------------------------------------------------------------
// Classification

/// How many calls one request with `method` makes when every attempt fails with `error()`.
async fn calls_for(method: Method, error: impl Fn() -> Error + Send + Sync + 'static) -> usize {
    let log = Log::default();
    let (result, _) = send(
        RetryPolicy::builder().jitter(|| 0.0).build().unwrap(),
        DEADLINE,
        upstream(&log, move |_| Err(error())),
        request(method),
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.attempts() as usize, log.calls());
    log.calls()
}

#[tokio::test(start_paused = true)]
async fn a_never_sent_transport_error_is_retried_for_any_method() {
    for method in [Method::POST, Method::PATCH, Method::GET] {
        let calls = calls_for(method.clone(), || {
            Error::transport("refused").with_never_sent()
        });
        assert_eq!(calls.await, 4, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reset_is_retried_for_idempotent_methods_only() {
    for method in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ] {
        let calls = calls_for(method.clone(), || Error::transport("reset")).await;
        assert_eq!(calls, 4, "{method}");
    }
    for method in [Method::POST, Method::PATCH] {
        let calls = calls_for(method.clone(), || Error::transport("reset")).await;
        assert_eq!(calls, 1, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_is_retried_for_idempotent_methods_only() {
    let timeout = || Error::timeout(TimeoutScope::Attempt);
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        assert_eq!(calls_for(method.clone(), timeout).await, 4, "{method}");
    }
    for method in [Method::POST, Method::PATCH] {
        assert_eq!(calls_for(method.clone(), timeout).await, 1, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn final_errors_are_never_retried() {
    type MakeError = fn() -> Error;
    let finals: [(&str, MakeError); 10] = [
        ("total timeout", || Error::timeout(TimeoutScope::Total)),
        ("decode", || Error::decode("broken JSON")),
        ("body too large", || Error::body_too_large(16)),
        ("session expired", || Error::new(ErrorKind::SessionExpired)),
        ("refresh failed", || Error::new(ErrorKind::RefreshFailed)),
        ("unauthorized", || Error::new(ErrorKind::Unauthorized)),
        ("business", || Error::business(1003, "busy")),
        ("cancelled", || Error::new(ErrorKind::Cancelled)),
        ("401", || Error::from_status(StatusCode::UNAUTHORIZED)),
        ("501", || Error::from_status(StatusCode::NOT_IMPLEMENTED)),
    ];
    for (name, error) in finals {
        assert_eq!(calls_for(Method::GET, error).await, 1, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn retryable_statuses_are_retried_for_get_and_others_are_not() {
    for (code, calls) in [
        (408, 4),
        (429, 4),
        (500, 4),
        (502, 4),
        (503, 4),
        (504, 4),
        (200, 1),
        (400, 1),
        (401, 1),
        (403, 1),
        (404, 1),
        (409, 1),
        (422, 1),
        (501, 1),
        (505, 1),
    ] {
        let log = Log::default();
        let (result, _) = send(
            RetryPolicy::builder().jitter(|| 0.0).build().unwrap(),
            DEADLINE,
            upstream(&log, move |_| status(code)),
            get(),
        )
        .await;
        assert_eq!(log.calls(), calls, "{code}");
        assert_eq!(
            attempts_of(&result.unwrap()),
            Some(Attempts(calls as u32)),
            "{code}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn post_503_is_not_retried() {
    let log = Log::default();
    let (result, _) = send(
        max_jitter().build().unwrap(),
        DEADLINE,
        upstream(&log, |_| status(503)),
        request(Method::POST),
    )
    .await;
    assert_eq!(log.calls(), 1);
    assert_eq!(attempts_of(&result.unwrap()), Some(Attempts(1)));
}

#[tokio::test(start_paused = true)]
async fn post_with_an_idempotency_key_is_retried_with_the_same_key_every_time() {
    let log = Log::default();
    let mut post = request(Method::POST);
    post.headers_mut()
        .insert("idempotency-key", "k-1".parse().unwrap());
    let (result, _) = send(
        RetryPolicy::builder().jitter(|| 0.0).build().unwrap(),
        DEADLINE,
        upstream(&log, |_| status(503)),
        post,
    )
    .await;
    assert_eq!(attempts_of(&result.unwrap()), Some(Attempts(4)));
    let seen = log.seen();
    assert_eq!(seen.len(), 4);
    for call in &seen {
        assert_eq!(call.method, Method::POST);
        assert_eq!(call.headers["idempotency-key"], "k-1");
    }
}

// ---------------------------------------------------------------------------------------
// Per-request overrides and the predicate

async fn ready<S: Service<Request<()>>>(service: &mut S) -> &mut S
where
    S::Error: std::fmt::Debug,
{
    ServiceExt::<Request<()>>::ready(service).await.unwrap()
}

async fn calls_with(
    policy: RetryPolicy,
    request: Request<()>,
    script: fn(usize) -> Reply,
) -> usize {
    let log = Log::default();
    let _ = send(policy, DEADLINE, upstream(&log, script), request).await;
    log.calls()
}

#[tokio::test(start_paused = true)]
async fn retry_override_off_makes_one_call() {
    let mut request = get();
    request.extensions_mut().insert(RetryOverride::Off);
    let policy = RetryPolicy::builder().jitter(|| 0.0).build().unwrap();
    assert_eq!(calls_with(policy, request, |_| status(503)).await, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_override_with_one_retry_makes_two_calls() {
    let log = Log::default();
    let mut request = get();
    request.extensions_mut().insert(RetryOverride::Retries(1));
    let (result, _) = send(
        RetryPolicy::builder().jitter(|| 0.0).build().unwrap(),
        DEADLINE,
        upstream(&log, |_| status(503)),
        request,
    )
    .await;
    assert_eq!(log.calls(), 2);
    assert_eq!(attempts_of(&result.unwrap()), Some(Attempts(2)));
}

#[tokio::test(start_paused = true)]
async fn retry_override_can_raise_the_retries_above_the_policy() {
    let mut request = get();
    request.extensions_mut().insert(RetryOverride::Retries(5));
    let policy = RetryPolicy::builder().jitter(|| 0.0).build().unwrap();
    assert_eq!(calls_with(policy, request, |_| status(503)).await, 6);
}

#[tokio::test(start_paused = true)]
async fn a_retry_override_applies_to_its_own_request_only() {
    // One service called twice (as a user holding the stack does): the first request turns
    // retries off, the second has no override and gets the policy's three retries.
    let log = Log::default();
    let mut service = ServiceBuilder::new()
        .layer(DeadlineLayer::new(DEADLINE))
        .layer(RetryLayer::new(
            RetryPolicy::builder().jitter(|| 0.0).build().unwrap(),
        ))
        .service(upstream(&log, |_| status(503)));
    let mut off = get();
    off.extensions_mut().insert(RetryOverride::Off);
    let first = ready(&mut service).await.call(off).await.unwrap();
    assert_eq!(log.calls(), 1);
    assert_eq!(first.status(), 503);
    let second = ready(&mut service).await.call(get()).await.unwrap();
    assert_eq!(log.calls(), 1 + 4);
    assert_eq!(attempts_of(&second), Some(Attempts(4)));

    let mut one = get();
    one.extensions_mut().insert(RetryOverride::Retries(1));
    ready(&mut service).await.call(one).await.unwrap();
    assert_eq!(log.calls(), 5 + 2);
    ready(&mut service).await.call(get()).await.unwrap();
    assert_eq!(log.calls(), 7 + 4);
}

#[tokio::test(start_paused = true)]
async fn a_predicate_can_retry_a_busy_business_code() {
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let policy = RetryPolicy::builder()
        .jitter(|| 0.0)
        .retry_if(|outcome| {
            let busy = outcome
                .error
                .and_then(Error::business_code)
                .is_some_and(|code| *code == BusinessCode::Int(1003));
            busy.then_some(true)
        })
        .on_retry({
            let hooked = hooked.clone();
            move |_, _, reason| hooked.lock().unwrap().push(reason.clone())
        })
        .build()
        .unwrap();
    let log = Log::default();
    let (result, _) = send(
        policy,
        DEADLINE,
        upstream(&log, |_| Err(Error::business(1003, "busy"))),
        get(),
    )
    .await;
    assert_eq!(log.calls(), 4);
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Business);
    assert_eq!(err.attempts(), 4);
    assert_eq!(*hooked.lock().unwrap(), vec![RetryReason::Predicate; 3]);
}

#[tokio::test(start_paused = true)]
async fn a_predicate_saying_no_stops_a_503() {
    let policy = RetryPolicy::builder()
        .jitter(|| 0.0)
        .retry_if(|outcome| {
            (outcome.status == Some(StatusCode::SERVICE_UNAVAILABLE)).then_some(false)
        })
        .build()
        .unwrap();
    assert_eq!(calls_with(policy.clone(), get(), |_| status(503)).await, 1);
    // `None` leaves other outcomes to the built-in rules.
    assert_eq!(calls_with(policy, get(), |_| status(502)).await, 4);
}

// ---------------------------------------------------------------------------------------
// Budget

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_at_a_floor_plus_20_percent_of_requests() {
    let policy = RetryPolicy::builder()
        .jitter(|| 0.0)
        .budget(Duration::from_secs(10), 10, 0.2)
        .build()
        .unwrap();
    let log = Log::default();
    let layer = RetryLayer::new(policy);
    let inner = upstream(&log, |_| status(503));
    const REQUESTS: usize = 1000;
    for _ in 0..REQUESTS {
        let service = layer.layer(inner.clone());
        let response = service.oneshot(get()).await.unwrap();
        assert_eq!(response.status(), 503);
    }
    let retries = log.calls() - REQUESTS;
    println!("{REQUESTS} requests always answered 503 made {retries} retries");
    // tower's TpsBudget: a reserve of 10 a second over 10 s, plus one retry per 5 requests
    // (without a budget: 3 retries per request, 3000). On the paused clock no deposit
    // expires, so the bound is reached exactly.
    assert_eq!(retries, 10 * 10 + REQUESTS / 5);
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_shared_by_every_service_built_from_one_policy() {
    // A budget with no share of requests and a reserve of exactly one retry.
    let policy = RetryPolicy::builder()
        .jitter(|| 0.0)
        .budget(Duration::from_secs(1), 1, 0.0)
        .build()
        .unwrap();
    let log_a = Log::default();
    let log_b = Log::default();
    let a = RetryLayer::new(policy.clone()).layer(upstream(&log_a, |_| status(503)));
    let b = RetryLayer::new(policy).layer(upstream(&log_b, |_| status(503)));
    let response = a.oneshot(get()).await.unwrap();
    assert_eq!(log_a.calls(), 2, "the one retry of the reserve");
    assert_eq!(attempts_of(&response), Some(Attempts(2)));
    let response = b.oneshot(get()).await.unwrap();
    assert_eq!(log_b.calls(), 1, "the reserve is spent for every service");
    assert_eq!(attempts_of(&response), Some(Attempts(1)));
}

// ---------------------------------------------------------------------------------------
// Cancellation

/// Sets its flag when dropped.
struct DropGuard(Arc<AtomicBool>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_dropped_during_an_attempt_drops_it_and_never_retries() {
    let calls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Notify::new());
    let held = service_fn({
        let (calls, dropped, gate) = (calls.clone(), dropped.clone(), gate.clone());
        move |_: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let guard = DropGuard(dropped.clone());
            let gate = gate.clone();
            async move {
                let _guard = guard;
                gate.notified().await;
                status(503)
            }
        }
    });
    let retries = Arc::new(AtomicUsize::new(0));
    let policy = max_jitter()
        .on_retry({
            let retries = retries.clone();
            move |_, _, _| {
                retries.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(DeadlineLayer::new(DEADLINE))
        .layer(RetryLayer::new(policy))
        .service(held);
    let outcome = tokio::time::timeout(Duration::from_secs(1), service.oneshot(get())).await;
    assert!(outcome.is_err(), "the caller gave up");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the attempt was dropped with the caller"
    );
    gate.notify_waiters();
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(retries.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_caller_dropped_during_the_backoff_makes_no_further_attempt() {
    let log = Log::default();
    let retries = Arc::new(AtomicUsize::new(0));
    let policy = max_jitter()
        .on_retry({
            let retries = retries.clone();
            move |_, _, _| {
                retries.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    let start = Instant::now();
    let future = send(policy, DEADLINE, upstream(&log, |_| status(503)), get());
    // The first wait is 100 ms: give up half way through it.
    let outcome = tokio::time::timeout(50 * MS, future).await;
    assert!(outcome.is_err());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(log.offsets(start), [Duration::ZERO]);
    assert_eq!(
        retries.load(Ordering::SeqCst),
        1,
        "the retry was scheduled, never run"
    );
}

// ---------------------------------------------------------------------------------------
// The tower contracts

#[tokio::test(start_paused = true)]
async fn readiness_is_polled_before_every_attempt() {
    let mut unavailable = Response::new(Bytes::from_static(b"busy"));
    *unavailable.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let probe = xhttp_testkit::ReadinessProbe::new(unavailable);
    let service = RetryLayer::new(RetryPolicy::builder().jitter(|| 0.0).build().unwrap())
        .layer(probe.clone());
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.extensions().get::<Attempts>(),
        Some(&Attempts(4)),
        "every attempt reached the probe"
    );
    // A call without poll_ready fails in the probe and is not counted: four counted calls
    // mean readiness was polled before each of the four attempts.
    assert_eq!(probe.calls(), 4);
}

type Boxed = BoxCloneSyncService<Request<Body>, Response<Bytes>, Error>;

#[test]
fn services_are_send_and_sync_and_futures_send() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Retry<Boxed>>();
    assert_send_sync::<EnforceDeadline<Boxed>>();
    assert_send_sync::<EnforceDeadline<Retry<Boxed>>>();
    assert_send_sync::<RetryLayer>();
    assert_send_sync::<DeadlineLayer>();
    assert_send_sync::<RetryPolicy>();
    assert_send::<xhttp_retry::ResponseFuture<Boxed, Body>>();
    assert_send::<DeadlineFuture<<Retry<Boxed> as Service<Request<Body>>>::Future>>();
}

#[test]
#[allow(deprecated)]
fn the_former_name_deadline_service_and_the_future_module_paths_resolve() {
    let inner =
        service_fn(|_: Request<Body>| async { Ok::<_, Error>(Response::new(Bytes::new())) });
    let service: xhttp_retry::DeadlineService<_> = DeadlineLayer::default().layer(inner);
    let service: EnforceDeadline<_> = service;
    let _: xhttp_retry::future::ResponseFuture<Boxed, Body>;
    let _: xhttp_retry::future::DeadlineFuture<std::future::Ready<Reply>>;
    let _inner = service.into_inner();
}

#[tokio::test(start_paused = true)]
async fn a_predicate_retry_of_a_response_honours_its_retry_after() {
    // A backend that answers 200 with a "busy" marker header and a Retry-After.
    let policy = max_jitter()
        .retry_if(|outcome| (outcome.status == Some(StatusCode::ACCEPTED)).then_some(true))
        .build()
        .unwrap();
    let log = Log::default();
    let start = Instant::now();
    let (result, _) = send(
        policy,
        DEADLINE,
        upstream(&log, |n| {
            if n == 0 {
                status_with_retry_after(202, "2")
            } else {
                status(200)
            }
        }),
        get(),
    )
    .await;
    assert_eq!(result.unwrap().status(), StatusCode::OK);
    assert_eq!(log.offsets(start), vec![Duration::ZERO, 2000 * MS]);
}

// ---------------------------------------------------------------------------------------
// Impossible configurations: typed errors or documented clamps, never a panic.

/// Polls `future` once with a no-op waker, outside any tokio runtime.
fn poll_once_without_a_runtime<F: std::future::Future>(future: F) -> std::task::Poll<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.as_mut().poll(&mut cx)
}

#[tokio::test(start_paused = true)]
async fn a_deadline_of_duration_max_counts_as_a_year_and_retries_still_work() {
    let log = Log::default();
    let inner = upstream(&log, |n| if n == 0 { status(503) } else { status(200) });
    let (result, took) = send(max_jitter().build().unwrap(), Duration::MAX, inner, get()).await;
    let response = result.unwrap();
    assert_eq!(attempts_of(&response), Some(Attempts(2)));
    assert_eq!(took, 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_of_duration_max_still_times_out_a_hung_call_after_a_year() {
    let never = service_fn(|_: Request<()>| std::future::pending::<Reply>());
    let service = DeadlineLayer::new(Duration::MAX).layer(never);
    let start = Instant::now();
    let err = service.oneshot(get()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutScope::Total));
    assert_eq!(start.elapsed(), RetryPolicy::LONGEST_WAIT);
}

#[tokio::test(start_paused = true)]
async fn max_retries_of_u32_max_counts_attempts_as_before() {
    let log = Log::default();
    let inner = upstream(&log, |n| if n < 3 { status(503) } else { status(200) });
    let policy = max_jitter().max_retries(u32::MAX).build().unwrap();
    let (result, _) = send(policy, DEADLINE, inner, get()).await;
    assert_eq!(attempts_of(&result.unwrap()), Some(Attempts(4)));
    assert_eq!(log.calls(), 4);
}

#[test]
fn outside_a_runtime_the_deadline_is_a_config_error_not_a_panic() {
    let log = Log::default();
    let service = ServiceBuilder::new()
        .layer(DeadlineLayer::new(DEADLINE))
        .layer(RetryLayer::new(RetryPolicy::default()))
        .service(upstream(&log, |_| status(200)));
    let std::task::Poll::Ready(result) = poll_once_without_a_runtime(service.oneshot(get())) else {
        panic!("a call that cannot have a timer fails at once");
    };
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[test]
fn outside_a_runtime_a_retry_is_a_config_error_not_a_panic() {
    // No deadline layer: the first attempt runs, and its retry would need a tokio timer.
    let log = Log::default();
    let service = RetryLayer::new(RetryPolicy::default()).layer(upstream(&log, |_| status(503)));
    let std::task::Poll::Ready(result) = poll_once_without_a_runtime(service.oneshot(get())) else {
        panic!("the retry decision is made on the first poll");
    };
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.attempts(), 1);
    assert_eq!(log.calls(), 1);
}

// ---------------------------------------------------------------------------------------
// Replay of streaming bodies: decided when the retry would happen.

/// A streaming body of `chunks` 64 KiB frames with no size hint, under a 64 KiB replay cap.
fn streaming(chunks: usize) -> Body {
    let frames = (0..chunks)
        .map(|_| Ok::<_, Error>(http_body::Frame::data(Bytes::from(vec![7u8; 64 * 1024]))));
    let stream =
        http_body_util::StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
    Body::replayable(stream, xhttp_core::body::DEFAULT_REPLAY_CAP)
}

/// An upstream that reads each request's whole body, records its length, and answers
/// `reply(n)` for the n-th call.
fn reading_upstream(
    lengths: &Arc<Mutex<Vec<usize>>>,
    reply: impl Fn(usize) -> Reply + Clone + Send + Sync + 'static,
) -> impl Service<Request<Body>, Response = Response<()>, Error = Error> + Clone {
    let lengths = lengths.clone();
    service_fn(move |request: Request<Body>| {
        let (lengths, reply) = (lengths.clone(), reply.clone());
        async move {
            use http_body_util::BodyExt;
            let read = request.into_body().collect().await?.to_bytes().len();
            let n = {
                let mut lengths = lengths.lock().unwrap();
                lengths.push(read);
                lengths.len() - 1
            };
            reply(n)
        }
    })
}

async fn put_through_retry<S>(inner: S, body: Body) -> Reply
where
    S: Service<Request<Body>, Response = Response<()>, Error = Error> + Clone,
{
    let request = Request::put("https://api.example.com/blob")
        .body(body)
        .unwrap();
    ServiceBuilder::new()
        .layer(DeadlineLayer::new(DEADLINE))
        .layer(RetryLayer::new(max_jitter().build().unwrap()))
        .service(inner)
        .oneshot(request)
        .await
}

#[tokio::test(start_paused = true)]
async fn a_streaming_put_past_its_replay_cap_returns_its_first_503_response_marked() {
    let lengths = Arc::new(Mutex::new(Vec::new()));
    let inner = reading_upstream(&lengths, |_| status(503));
    let response = put_through_retry(inner, streaming(2)).await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response
        .extensions()
        .get::<xhttp_core::body::NotReplayed>()
        .is_some());
    assert_eq!(attempts_of(&response), Some(Attempts(1)));
    assert_eq!(
        *lengths.lock().unwrap(),
        [128 * 1024],
        "exactly one call, the whole body"
    );
}

#[tokio::test(start_paused = true)]
async fn a_streaming_put_past_its_replay_cap_returns_its_first_503_error_marked() {
    let lengths = Arc::new(Mutex::new(Vec::new()));
    let inner = reading_upstream(&lengths, |_| {
        Err(Error::from_status(StatusCode::SERVICE_UNAVAILABLE))
    });
    let err = put_through_retry(inner, streaming(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert!(err.is_body_not_replayable());
    assert_eq!(err.attempts(), 1);
    assert_eq!(lengths.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_streaming_put_within_its_replay_cap_is_retried_with_the_same_bytes() {
    let lengths = Arc::new(Mutex::new(Vec::new()));
    let inner = reading_upstream(&lengths, |n| status(if n == 0 { 503 } else { 200 }));
    let response = put_through_retry(inner, streaming(1)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .extensions()
        .get::<xhttp_core::body::NotReplayed>()
        .is_none());
    assert_eq!(*lengths.lock().unwrap(), [64 * 1024, 64 * 1024]);
}

#[tokio::test(start_paused = true)]
async fn a_body_whose_size_hint_is_over_its_cap_is_refused_up_front_and_sent_once() {
    // The upstream does not read the body: the size hint alone decides.
    let log = Log::default();
    let calls = log.clone();
    let inner = service_fn(move |_: Request<Body>| {
        calls.0.lock().unwrap().push(Seen {
            at: Instant::now(),
            method: Method::PUT,
            headers: HeaderMap::new(),
        });
        async { status(503) }
    });
    let large = http_body_util::Full::new(Bytes::from(vec![1u8; 128 * 1024]));
    let body = Body::replayable(large, xhttp_core::body::DEFAULT_REPLAY_CAP);
    assert!(!body.is_replayable());
    let response = put_through_retry(inner, body).await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response
        .extensions()
        .get::<xhttp_core::body::NotReplayed>()
        .is_some());
    assert_eq!(log.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_off_still_record_one_attempt_on_the_error_and_the_response() {
    let log = Log::default();
    let mut request = get();
    request.extensions_mut().insert(RetryOverride::Off);
    let inner = upstream(&log, |_| {
        Err(Error::from_status(StatusCode::SERVICE_UNAVAILABLE))
    });
    let (result, _) = send(max_jitter().build().unwrap(), DEADLINE, inner, request).await;
    assert_eq!(result.unwrap_err().attempts(), 1);

    let mut request = get();
    request.extensions_mut().insert(RetryOverride::Off);
    let inner = upstream(&log, |_| status(503));
    let (result, _) = send(max_jitter().build().unwrap(), DEADLINE, inner, request).await;
    assert_eq!(attempts_of(&result.unwrap()), Some(Attempts(1)));

    let zero = max_jitter().max_retries(0).build().unwrap();
    let inner = upstream(&log, |_| status(503));
    let (result, _) = send(zero, DEADLINE, inner, get()).await;
    assert_eq!(attempts_of(&result.unwrap()), Some(Attempts(1)));
    assert_eq!(log.calls(), 3, "one call each");
}

/// A GET over `Full<Bytes>`, the usual hyper client body.
fn full_get() -> Request<Full<Bytes>> {
    Request::get("https://api.example.com/items")
        .body(Full::new(Bytes::from_static(b"q=1")))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_service_failing_with_io_errors_is_retried_and_its_error_kept_as_the_source() {
    let calls = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    // Its error type is `std::io::Error`, not xhttp's: the first two calls are reset.
    let flaky = service_fn({
        let (calls, bodies) = (calls.clone(), bodies.clone());
        move |request: Request<Full<Bytes>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let bodies = bodies.clone();
            async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                bodies.lock().unwrap().push(body);
                if n < 2 {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
                }
                Ok(Response::new(()))
            }
        }
    });
    let service = RetryLayer::new(max_jitter().build().unwrap()).layer(flaky);
    let response = service.oneshot(full_get()).await.unwrap();
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(3)));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(*bodies.lock().unwrap(), vec![Bytes::from_static(b"q=1"); 3]);

    // Always reset: the last reset is the source of the final `Transport` error.
    let reset = service_fn(|_: Request<Full<Bytes>>| async {
        Err::<Response<()>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    });
    let service = RetryLayer::new(max_jitter().build().unwrap()).layer(reset);
    let err = service.clone().oneshot(full_get()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert_eq!(err.attempts(), 4);
    let source = std::error::Error::source(&err)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .expect("the io error is the source");
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionReset);

    // A reset may have reached the server: a POST is not sent again.
    let post = Request::post("https://api.example.com/items")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(service.oneshot(post).await.unwrap_err().attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_xhttp_error_boxed_by_the_service_keeps_its_kind() {
    let calls = Arc::new(AtomicUsize::new(0));
    // A service whose error type is `BoxError`, carrying xhttp errors: a connect failure
    // (never sent, so retried even for a POST), then a success.
    let boxed = service_fn({
        let calls = calls.clone();
        move |_: Request<Full<Bytes>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    let refused = Error::transport("connection refused").with_never_sent();
                    return Err(tower::BoxError::from(refused));
                }
                Ok(Response::new(()))
            }
        }
    });
    let service = RetryLayer::new(max_jitter().build().unwrap()).layer(boxed);
    let post = Request::post("https://api.example.com/items")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = service.oneshot(post).await.unwrap();
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A Trailers-Only gRPC answer: HTTP 200 with its `grpc-status` (and a pushback) in headers.
fn grpc(code: u8, pushback: Option<&str>) -> Reply {
    let mut response = Response::new(());
    response
        .headers_mut()
        .insert("grpc-status", code.to_string().parse().unwrap());
    if let Some(ms) = pushback {
        response
            .headers_mut()
            .insert("grpc-retry-pushback-ms", ms.parse().unwrap());
    }
    Ok(response)
}

fn grpc_call(idempotency_key: bool) -> Request<()> {
    let mut request = Request::post("https://grpc.example.com/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    if idempotency_key {
        request
            .headers_mut()
            .insert("idempotency-key", "call-1".parse().unwrap());
    }
    request
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_is_retried_for_a_call_that_may_be_repeated() {
    let log = Log::default();
    let inner = upstream(&log, |n| {
        if n == 0 {
            grpc(14, None)
        } else {
            grpc(0, None)
        }
    });
    let (result, _) = send(
        max_jitter().build().unwrap(),
        DEADLINE,
        inner,
        grpc_call(true),
    )
    .await;
    let response = result.unwrap();
    assert_eq!(response.headers()["grpc-status"], "0");
    assert_eq!(log.calls(), 2);
    assert_eq!(attempts_of(&response), Some(Attempts(2)));
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_is_not_retried_for_a_call_that_may_have_run() {
    // Every gRPC call is a POST: without an Idempotency-Key it may have run on the server.
    let log = Log::default();
    let inner = upstream(&log, |_| grpc(14, None));
    let (result, _) = send(
        max_jitter().build().unwrap(),
        DEADLINE,
        inner,
        grpc_call(false),
    )
    .await;
    assert_eq!(result.unwrap().headers()["grpc-status"], "14");
    assert_eq!(log.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn grpc_pushback_is_waited_and_a_negative_one_ends_the_retries() {
    let log = Log::default();
    let inner = upstream(&log, |n| match n {
        0 => grpc(14, Some("250")),
        _ => grpc(0, None),
    });
    let start = Instant::now();
    let (result, _) = send(
        max_jitter().build().unwrap(),
        DEADLINE,
        inner,
        grpc_call(true),
    )
    .await;
    assert!(result.is_ok());
    assert_eq!(log.offsets(start), [Duration::ZERO, 250 * MS]);

    for pushback in ["-1", "soon"] {
        let log = Log::default();
        let inner = upstream(&log, move |_| grpc(14, Some(pushback)));
        let (result, _) = send(
            max_jitter().build().unwrap(),
            DEADLINE,
            inner,
            grpc_call(true),
        )
        .await;
        assert_eq!(result.unwrap().headers()["grpc-status"], "14", "{pushback}");
        assert_eq!(log.calls(), 1, "pushback {pushback:?} means do not retry");
    }
}

#[tokio::test(start_paused = true)]
async fn other_grpc_codes_are_not_retried() {
    for code in [0, 2, 4, 13, 16] {
        let log = Log::default();
        let inner = upstream(&log, move |_| grpc(code, None));
        let (result, _) = send(
            max_jitter().build().unwrap(),
            DEADLINE,
            inner,
            grpc_call(true),
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(log.calls(), 1, "grpc-status {code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_to_an_idempotent_path_is_retried_whatever_its_method() {
    let policy = || {
        max_jitter()
            .idempotent_path("/pkg.Svc/Call")
            .build()
            .unwrap()
    };
    // gRPC UNAVAILABLE on a POST without an Idempotency-Key, to a path configured idempotent.
    let log = Log::default();
    let inner = upstream(&log, |n| {
        if n == 0 {
            grpc(14, None)
        } else {
            grpc(0, None)
        }
    });
    let (result, _) = send(policy(), DEADLINE, inner, grpc_call(false)).await;
    assert_eq!(result.unwrap().headers()["grpc-status"], "0");
    assert_eq!(log.calls(), 2);
    // A plain HTTP 503 on a POST to another path: not retried.
    let log = Log::default();
    let inner = upstream(&log, |_| status(503));
    let (result, _) = send(policy(), DEADLINE, inner, request(Method::POST)).await;
    assert_eq!(result.unwrap().status(), 503);
    assert_eq!(log.calls(), 1);
    // A path that is not a path is a Config error.
    let err = RetryPolicy::builder()
        .idempotent_path("pkg.Svc/Call")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}
