//! TokenManager on tokio's paused clock, against an in-process grant that rotates refresh
//! tokens and detects reuse like a real server (RFC 9700 section 4.14.2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use xhttp_auth::{GrantResponse, RefreshGrant, Secret, TokenManager};
use xhttp_core::error::RefreshFailure;
use xhttp_core::{Error, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Hang,
    Transient,
    InvalidGrant,
    Panic,
    /// The endpoint answered this status (with this `Retry-After` in seconds).
    Status(u16, Option<u64>),
    /// A 200 whose body is not a token response.
    Malformed,
}

/// A token endpoint in memory: counts calls, waits on a gate, rotates refresh tokens.
#[derive(Debug, Clone)]
struct Endpoint(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    calls: AtomicUsize,
    reuse: AtomicUsize,
    gate: watch::Sender<bool>,
    mode: Mutex<Mode>,
    /// Outcomes for the next calls, in order, before `mode` applies again.
    script: Mutex<std::collections::VecDeque<Mode>>,
    /// When each call was made.
    at: Mutex<Vec<Instant>>,
    lifetime: Mutex<Option<Duration>>,
    latency: Mutex<Duration>,
    /// The refresh token that is valid now, and every one retired.
    live: Mutex<String>,
    retired: Mutex<HashSet<String>>,
}

impl Endpoint {
    fn new(lifetime: Option<Duration>) -> Endpoint {
        Endpoint(Arc::new(Inner {
            calls: AtomicUsize::new(0),
            reuse: AtomicUsize::new(0),
            gate: watch::channel(true).0,
            mode: Mutex::new(Mode::Ok),
            script: Mutex::new(Default::default()),
            at: Mutex::new(Vec::new()),
            lifetime: Mutex::new(lifetime),
            latency: Mutex::new(Duration::ZERO),
            live: Mutex::new("refresh-0".into()),
            retired: Mutex::new(HashSet::new()),
        }))
    }

    fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }

    fn reuse(&self) -> usize {
        self.0.reuse.load(Ordering::SeqCst)
    }

    fn set_mode(&self, mode: Mode) {
        *self.0.mode.lock().unwrap() = mode;
    }

    fn script(&self, modes: impl IntoIterator<Item = Mode>) {
        self.0.script.lock().unwrap().extend(modes);
    }

    fn call_times(&self) -> Vec<Instant> {
        self.0.at.lock().unwrap().clone()
    }

    fn close_gate(&self) {
        self.0.gate.send_replace(false);
    }

    fn open_gate(&self) {
        self.0.gate.send_replace(true);
    }
}

impl RefreshGrant for Endpoint {
    fn request<'a>(
        &'a self,
        refresh: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        Box::pin(async move {
            let n = self.0.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.0.at.lock().unwrap().push(Instant::now());
            let scripted = self.0.script.lock().unwrap().pop_front();
            let mut gate = self.0.gate.subscribe();
            gate.wait_for(|open| *open).await.unwrap();
            let latency = *self.0.latency.lock().unwrap();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mode = scripted.unwrap_or_else(|| *self.0.mode.lock().unwrap());
            match mode {
                Mode::Ok => {}
                Mode::Hang => std::future::pending::<()>().await,
                Mode::Transient => {
                    return Err(Error::new(ErrorKind::RefreshFailed).with_message("503"))
                }
                Mode::InvalidGrant => {
                    return Err(Error::new(ErrorKind::SessionExpired).with_message("invalid_grant"))
                }
                Mode::Panic => panic!("the grant blew up"),
                Mode::Status(status, retry_after) => {
                    let mut err = Error::new(ErrorKind::RefreshFailed)
                        .with_refresh_failure(RefreshFailure::Endpoint)
                        .with_status(http::StatusCode::from_u16(status).unwrap())
                        .with_message(format!("the token endpoint answered {status}"));
                    if let Some(secs) = retry_after {
                        err = err.with_retry_after(Duration::from_secs(secs));
                    }
                    return Err(err);
                }
                Mode::Malformed => {
                    return Err(Error::new(ErrorKind::RefreshFailed)
                        .with_refresh_failure(RefreshFailure::Malformed)
                        .with_status(http::StatusCode::OK)
                        .with_message("token response is not JSON"))
                }
            }
            let presented = refresh.map(|r| r.expose().to_string()).unwrap_or_default();
            let mut live = self.0.live.lock().unwrap();
            if presented != *live {
                if self.0.retired.lock().unwrap().contains(&presented) {
                    self.0.reuse.fetch_add(1, Ordering::SeqCst);
                }
                return Err(Error::new(ErrorKind::SessionExpired).with_message("invalid_grant"));
            }
            self.0.retired.lock().unwrap().insert(presented);
            *live = format!("refresh-{n}");
            Ok(GrantResponse {
                access_token: Secret::new(format!("access-{n}")),
                refresh_token: Some(Secret::new(live.clone())),
                expires_in: *self.0.lifetime.lock().unwrap(),
                received_at: Instant::now(),
            })
        })
    }
}

async fn manager_with(endpoint: &Endpoint, lifetime: Option<Duration>) -> TokenManager {
    let manager = TokenManager::builder(endpoint.clone()).build();
    manager
        .set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            lifetime,
        )
        .await
        .unwrap();
    manager
}

/// Lets every spawned task run until none can make progress.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn thousand_concurrent_rejections_make_exactly_one_refresh() {
    let endpoint = Endpoint::new(None);
    let manager = manager_with(&endpoint, None).await;
    endpoint.close_gate();
    let entered = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (manager, entered) = (manager.clone(), entered.clone());
            tokio::spawn(async move {
                entered.fetch_add(1, Ordering::SeqCst);
                manager.refresh_after_rejection(1).await
            })
        })
        .collect();
    while entered.load(Ordering::SeqCst) < 1000 {
        tokio::task::yield_now().await;
    }
    settle().await;
    assert_eq!(endpoint.calls(), 1, "one refresh while all 1000 wait");
    endpoint.open_gate();
    for task in tasks {
        let token = task.await.unwrap().unwrap();
        assert_eq!(token.generation(), 2);
        assert_eq!(token.access().expose(), "access-1");
    }
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(endpoint.reuse(), 0);
}

#[tokio::test(start_paused = true)]
async fn late_rejection_of_a_replaced_generation_makes_no_call() {
    let endpoint = Endpoint::new(None);
    let manager = manager_with(&endpoint, None).await;
    let fresh = manager.refresh_after_rejection(1).await.unwrap();
    assert_eq!(fresh.generation(), 2);
    // The 401 of a request that was sent with generation 1 arrives now.
    let replay_with = manager.refresh_after_rejection(1).await.unwrap();
    assert_eq!(replay_with.generation(), 2);
    assert_eq!(replay_with.access().expose(), "access-1");
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(endpoint.reuse(), 0);
}

#[tokio::test(start_paused = true)]
async fn new_callers_wait_while_a_rejection_refresh_runs() {
    let endpoint = Endpoint::new(None);
    let manager = manager_with(&endpoint, None).await;
    endpoint.close_gate();
    let trigger = tokio::spawn({
        let manager = manager.clone();
        async move { manager.refresh_after_rejection(1).await }
    });
    settle().await;
    assert_eq!(endpoint.calls(), 1);
    // The old token is still unexpired by the clock, but the server rejected it: a new caller
    // must not be handed it.
    assert!(manager.current_now().is_none());
    let newcomer = tokio::spawn({
        let manager = manager.clone();
        async move { manager.current().await }
    });
    settle().await;
    assert!(!newcomer.is_finished(), "new callers wait for the refresh");
    endpoint.open_gate();
    assert_eq!(newcomer.await.unwrap().unwrap().generation(), 2);
    assert_eq!(trigger.await.unwrap().unwrap().generation(), 2);
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_caller_that_started_the_refresh_does_not_cancel_it() {
    let endpoint = Endpoint::new(None);
    let manager = manager_with(&endpoint, None).await;
    endpoint.close_gate();
    let trigger = tokio::spawn({
        let manager = manager.clone();
        async move { manager.refresh_after_rejection(1).await }
    });
    settle().await;
    let others: Vec<_> = (0..10)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.refresh_after_rejection(1).await })
        })
        .collect();
    settle().await;
    trigger.abort();
    assert!(trigger.await.unwrap_err().is_cancelled());
    endpoint.open_gate();
    for other in others {
        assert_eq!(other.await.unwrap().unwrap().generation(), 2);
    }
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn hung_token_endpoint_fails_every_waiter_at_the_refresh_timeout() {
    let endpoint = Endpoint::new(None);
    let manager = manager_with(&endpoint, None).await;
    endpoint.set_mode(Mode::Hang);
    let start = Instant::now();
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move {
                let result = manager.refresh_after_rejection(1).await;
                (result, Instant::now())
            })
        })
        .collect();
    for waiter in waiters {
        let (result, at) = waiter.await.unwrap();
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        assert_eq!(
            at - start,
            Duration::from_secs(10),
            "exactly the refresh timeout"
        );
    }
    assert_eq!(endpoint.calls(), 1);
    // After the cool-down (counted from the end of the failed refresh) a new one starts.
    tokio::time::advance(Duration::from_secs(1)).await;
    endpoint.set_mode(Mode::Ok);
    let token = manager.refresh_after_rejection(1).await.unwrap();
    assert_eq!(token.generation(), 2);
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn fast_transient_failures_are_not_retried_within_the_cooldown() {
    let endpoint = Endpoint::new(None);
    let manager = manager_with(&endpoint, None).await;
    endpoint.set_mode(Mode::Transient);
    for _ in 0..5 {
        let err = manager.refresh_after_rejection(1).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    }
    assert_eq!(endpoint.calls(), 1, "one attempt per cool-down");
    tokio::time::advance(Duration::from_secs(1)).await;
    endpoint.set_mode(Mode::Ok);
    assert_eq!(
        manager
            .refresh_after_rejection(1)
            .await
            .unwrap()
            .generation(),
        2
    );
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_expires_the_session_once_and_later_calls_fail_fast() {
    let endpoint = Endpoint::new(None);
    let expired = Arc::new(AtomicUsize::new(0));
    let manager = TokenManager::builder(endpoint.clone())
        .on_session_expired({
            let expired = expired.clone();
            move || {
                expired.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build();
    manager
        .set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            None,
        )
        .await
        .unwrap();
    endpoint.set_mode(Mode::InvalidGrant);
    endpoint.close_gate();
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.refresh_after_rejection(1).await })
        })
        .collect();
    settle().await;
    endpoint.open_gate();
    for waiter in waiters {
        assert_eq!(
            waiter.await.unwrap().unwrap_err().kind(),
            ErrorKind::SessionExpired
        );
    }
    assert_eq!(expired.load(Ordering::SeqCst), 1, "the hook fires once");
    for _ in 0..100 {
        assert_eq!(
            manager.current().await.unwrap_err().kind(),
            ErrorKind::SessionExpired
        );
        assert_eq!(
            manager.refresh_after_rejection(1).await.unwrap_err().kind(),
            ErrorKind::SessionExpired
        );
    }
    assert_eq!(
        endpoint.calls(),
        1,
        "no token call after the session expired"
    );
    assert!(manager.is_session_expired());

    // A new login ends it.
    endpoint.set_mode(Mode::Ok);
    let token = manager
        .set_tokens(
            Secret::new("access-9"),
            Some(Secret::new("refresh-9")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        manager.current().await.unwrap().generation(),
        token.generation()
    );
    assert_eq!(expired.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn soft_window_serves_the_valid_token_while_a_background_refresh_runs() {
    let lifetime = Some(Duration::from_secs(100));
    let endpoint = Endpoint::new(lifetime);
    let manager = manager_with(&endpoint, lifetime).await;
    // Usable life 90 s (10 s skew): soft window from 72 s, hard window from 81 s.
    tokio::time::advance(Duration::from_secs(75)).await;
    endpoint.close_gate();
    let token = manager
        .current_now()
        .expect("served at once in the soft window");
    assert_eq!(token.generation(), 1);
    settle().await;
    assert_eq!(endpoint.calls(), 1, "one background refresh");
    // More callers in the soft window: the same token at once, no second refresh.
    for _ in 0..10 {
        assert_eq!(manager.current().await.unwrap().generation(), 1);
    }
    assert_eq!(endpoint.calls(), 1);
    endpoint.open_gate();
    settle().await;
    assert_eq!(manager.current().await.unwrap().generation(), 2);
}

#[tokio::test(start_paused = true)]
async fn failing_background_refresh_keeps_the_valid_token_in_service() {
    let lifetime = Some(Duration::from_secs(100));
    let endpoint = Endpoint::new(lifetime);
    let manager = manager_with(&endpoint, lifetime).await;
    endpoint.set_mode(Mode::Transient);
    tokio::time::advance(Duration::from_secs(73)).await;
    assert_eq!(manager.current().await.unwrap().generation(), 1);
    settle().await;
    assert_eq!(endpoint.calls(), 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    // Still valid, still served; at most one soft attempt a minute.
    assert_eq!(manager.current().await.unwrap().generation(), 1);
    assert_eq!(endpoint.calls(), 1);
    // In the hard window callers wait for a real refresh.
    endpoint.set_mode(Mode::Ok);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(manager.current().await.unwrap().generation(), 2);
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn expired_token_makes_callers_wait_for_one_refresh() {
    let lifetime = Some(Duration::from_secs(10));
    let endpoint = Endpoint::new(lifetime);
    let manager = manager_with(&endpoint, lifetime).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.current().await })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap().generation(), 2);
    }
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_grant_becomes_an_error_for_every_waiter() {
    let endpoint = Endpoint::new(None);
    let manager = manager_with(&endpoint, None).await;
    endpoint.set_mode(Mode::Panic);
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.refresh_after_rejection(1).await })
        })
        .collect();
    for waiter in waiters {
        assert_eq!(
            waiter.await.unwrap().unwrap_err().kind(),
            ErrorKind::Internal
        );
    }
    endpoint.set_mode(Mode::Ok);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        manager
            .refresh_after_rejection(1)
            .await
            .unwrap()
            .generation(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn no_refresh_token_means_the_session_is_expired() {
    let endpoint = Endpoint::new(None);
    let manager = TokenManager::builder(endpoint.clone()).build();
    assert_eq!(
        manager.current().await.unwrap_err().kind(),
        ErrorKind::SessionExpired
    );
    assert_eq!(endpoint.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn timed_refresh_runs_at_the_soft_window_and_stops_with_the_manager() {
    let lifetime = Some(Duration::from_secs(100));
    let endpoint = Endpoint::new(lifetime);
    let manager = TokenManager::builder(endpoint.clone())
        .timed_refresh(true)
        .build();
    manager
        .set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            lifetime,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(71)).await;
    assert_eq!(endpoint.calls(), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(
        endpoint.calls(),
        1,
        "refreshed by the timer, with no caller"
    );
    assert_eq!(manager.current_now().unwrap().generation(), 2);
    drop(manager);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    settle().await;
    assert_eq!(endpoint.calls(), 1, "the timer ended with the manager");
}

/// The token endpoint says tokens live 5 s (so the manager refreshes ahead from 3.6 s), but
/// the "server" rejects them after 3.8 s, and a refresh takes 300 ms: callers that hit the
/// server between 3.8 s and the end of the background refresh are rejected and join that same
/// refresh. 200 callers for 2 virtual minutes; rotation must never see a refresh token twice,
/// and every token is refreshed exactly once.
#[tokio::test(start_paused = true)]
async fn long_run_with_expiring_tokens_never_reuses_a_refresh_token() {
    let advertised = Duration::from_secs(5);
    let lifetime = Duration::from_millis(3800);
    let endpoint = Endpoint::new(Some(advertised));
    *endpoint.0.latency.lock().unwrap() = Duration::from_millis(300);
    let manager = manager_with(&endpoint, Some(advertised)).await;
    let issued: Arc<Mutex<Vec<(String, Instant)>>> =
        Arc::new(Mutex::new(vec![("access-0".into(), Instant::now())]));
    let rejections = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + Duration::from_secs(120);
    let callers: Vec<_> = (0..200u64)
        .map(|i| {
            let (manager, issued, rejections) =
                (manager.clone(), issued.clone(), rejections.clone());
            tokio::spawn(async move {
                let mut step = 0u64;
                while Instant::now() < end {
                    let token = manager.current().await.unwrap();
                    // The server's view: a token is valid for 5 s from when it was issued.
                    let born = {
                        let mut issued = issued.lock().unwrap();
                        match issued.iter().find(|(a, _)| a == token.access().expose()) {
                            Some((_, born)) => *born,
                            None => {
                                issued.push((token.access().expose().to_string(), Instant::now()));
                                Instant::now()
                            }
                        }
                    };
                    if Instant::now() >= born + lifetime {
                        rejections.fetch_add(1, Ordering::SeqCst);
                        manager
                            .refresh_after_rejection(token.generation())
                            .await
                            .unwrap();
                    }
                    step += 1;
                    let pause = 10 + (i * 7 + step * 13) % 90;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(endpoint.reuse(), 0, "no refresh token presented twice");
    let calls = endpoint.calls();
    assert_eq!(
        manager.generation() as usize,
        calls + 1,
        "one generation per call"
    );
    // One refresh per token: each lives 3.6 s + 0.3 s of refresh, so 120 s hold at most 31.
    assert!((25..=31).contains(&calls), "{calls} refreshes in 120 s");
    let rejected = rejections.load(Ordering::SeqCst);
    assert!(
        rejected > 0,
        "reactive refreshes overlapped the proactive ones"
    );
    assert_eq!(issued.lock().unwrap().len(), calls + 1);
}

/// Known secrets of these tests: each appears in no `Debug`, `Display` or error text.
const USER_A_ACCESS: &str = "SECRET-user-a-access";
const USER_A_REFRESH: &str = "SECRET-user-a-refresh";
const USER_B_ACCESS: &str = "SECRET-user-b-access";
const USER_B_REFRESH: &str = "SECRET-user-b-refresh";

fn assert_hidden(shown: &str) {
    for secret in [USER_A_ACCESS, USER_A_REFRESH, USER_B_ACCESS, USER_B_REFRESH] {
        assert!(!shown.contains(secret), "a secret is shown: {shown}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_rejection_from_an_older_session_is_session_changed_with_no_call() {
    let endpoint = Endpoint::new(None);
    let manager = TokenManager::builder(endpoint.clone()).build();
    let a = manager
        .set_tokens(
            Secret::new(USER_A_ACCESS),
            Some(Secret::new(USER_A_REFRESH)),
            None,
        )
        .await
        .unwrap();
    let b = manager
        .set_tokens(
            Secret::new(USER_B_ACCESS),
            Some(Secret::new(USER_B_REFRESH)),
            None,
        )
        .await
        .unwrap();
    assert!(
        b.generation() > a.generation(),
        "generations are never reused"
    );
    let err = manager
        .refresh_after_rejection(a.generation())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionChanged);
    assert_eq!(
        err.to_string(),
        "rejected with the credentials of a session that has since changed"
    );
    assert_eq!(endpoint.calls(), 0, "no token call");
    // B's own token is untouched, and still refreshes on its own rejections.
    assert_eq!(
        manager.current().await.unwrap().access().expose(),
        USER_B_ACCESS
    );
    // A logout then a new login: both start new sessions.
    manager.clear().await;
    assert_eq!(
        manager
            .refresh_after_rejection(b.generation())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::SessionExpired,
        "the session-expired state keeps its meaning"
    );
    let c = manager
        .set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        manager
            .refresh_after_rejection(b.generation())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::SessionChanged
    );
    assert_eq!(endpoint.calls(), 0);
    let fresh = manager
        .refresh_after_rejection(c.generation())
        .await
        .unwrap();
    assert_eq!(fresh.access().expose(), "access-1");
    assert_eq!(endpoint.calls(), 1);
    assert_hidden(&format!("{err} {err:?} {manager:?} {a:?} {b:?}"));
}

#[tokio::test(start_paused = true)]
async fn a_refresh_running_when_the_session_changes_is_disowned() {
    let endpoint = Endpoint::new(None);
    let manager = manager_with(&endpoint, None).await;
    endpoint.close_gate();
    let old_waiter = tokio::spawn({
        let manager = manager.clone();
        async move { manager.refresh_after_rejection(1).await }
    });
    settle().await;
    assert_eq!(endpoint.calls(), 1);
    let b = manager
        .set_tokens(
            Secret::new(USER_B_ACCESS),
            Some(Secret::new(USER_B_REFRESH)),
            None,
        )
        .await
        .unwrap();
    // New callers do not wait for the old session's refresh.
    assert_eq!(
        manager.current_now().unwrap().access().expose(),
        USER_B_ACCESS
    );
    endpoint.open_gate();
    let err = old_waiter.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionChanged);
    settle().await;
    // The old session's new token did not replace B's.
    let now = manager.current().await.unwrap();
    assert_eq!(now.access().expose(), USER_B_ACCESS);
    assert_eq!(now.generation(), b.generation());
    assert_hidden(&format!("{err:?} {manager:?}"));
}

#[tokio::test(start_paused = true)]
async fn set_tokens_refuses_a_token_no_header_can_carry() {
    let endpoint = Endpoint::new(None);
    let manager = manager_with(&endpoint, None).await;
    for (access, refresh) in [
        ("SECRET-user-a-access\n", None),
        ("SECRET-user-a\r\naccess", None),
        ("SECRET-user-a\0access", None),
        ("SECRET user-a-access", None),
        ("", None),
        (USER_A_ACCESS, Some("SECRET-user-a-refresh\n")),
        (USER_A_ACCESS, Some("SECRET-user-a-refresh\u{7f}")),
    ] {
        let err = manager
            .set_tokens(Secret::new(access), refresh.map(Secret::new), None)
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidRequest,
            "{access:?} {refresh:?}"
        );
        assert_hidden(&format!("{err} {err:?}"));
    }
    // Nothing changed: the valid token stays in service.
    assert_eq!(
        manager.current().await.unwrap().access().expose(),
        "access-0"
    );
    assert_eq!(manager.generation(), 1);
}

/// A grant whose endpoint answers a token no header can carry.
#[derive(Debug, Default)]
struct BadToken(AtomicUsize);

impl RefreshGrant for BadToken {
    fn request<'a>(&'a self, _: Option<&'a Secret>) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Ok(GrantResponse {
                access_token: Secret::new("SECRET-user-a-access\nInjected: 1"),
                refresh_token: None,
                expires_in: None,
                received_at: Instant::now(),
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_grant_answering_a_token_no_header_can_carry_is_refresh_failed() {
    let manager = TokenManager::builder(BadToken::default()).build();
    manager
        .set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            None,
        )
        .await
        .unwrap();
    let err = manager.refresh_after_rejection(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert_hidden(&format!("{err} {err:?}"));
    // The old token is neither replaced nor hidden behind a broken one.
    assert_eq!(manager.generation(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_expired_on_arrival_token_is_used_until_rejected() {
    let endpoint = Endpoint::new(Some(Duration::ZERO));
    let manager = manager_with(&endpoint, Some(Duration::ZERO)).await;
    for _ in 0..20 {
        let token = manager.current().await.unwrap();
        assert_eq!(token.expires_at(), None, "no known expiry");
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(endpoint.calls(), 0, "no refresh on every call");
    // A rejection refreshes; the refreshed token (also over on arrival) is used on.
    let fresh = manager.refresh_after_rejection(1).await.unwrap();
    assert_eq!(fresh.generation(), 2);
    for _ in 0..20 {
        assert_eq!(manager.current().await.unwrap().generation(), 2);
    }
    assert_eq!(endpoint.calls(), 1);
}

#[test]
fn impossible_configuration_is_a_config_error_never_a_panic() {
    use xhttp_auth::Windows;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let windows = [
        Windows {
            soft_share: f64::NAN,
            ..Windows::default()
        },
        Windows {
            hard_share: -1.0,
            ..Windows::default()
        },
        Windows {
            skew_share: 1.5,
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
    ];
    let mut builders: Vec<(&str, xhttp_auth::TokenManagerBuilder)> = windows
        .into_iter()
        .map(|w| {
            (
                "windows",
                TokenManager::builder(Endpoint::new(None)).windows(w),
            )
        })
        .collect();
    builders.push((
        "refresh timeout MAX",
        TokenManager::builder(Endpoint::new(None)).refresh_timeout(Duration::MAX),
    ));
    builders.push((
        "refresh timeout zero",
        TokenManager::builder(Endpoint::new(None)).refresh_timeout(Duration::ZERO),
    ));
    builders.push((
        "cooldown MAX",
        TokenManager::builder(Endpoint::new(None)).cooldown(Duration::MAX),
    ));
    builders.push((
        "soft interval MAX",
        TokenManager::builder(Endpoint::new(None)).soft_retry_interval(Duration::MAX),
    ));
    for (what, builder) in builders {
        // build() never panics: every call reports the configuration instead.
        let manager = builder.build();
        runtime.block_on(async {
            let err = manager
                .set_tokens(Secret::new("access-0"), None, Some(Duration::MAX))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{what}: {err}");
            assert_eq!(
                manager.current().await.unwrap_err().kind(),
                ErrorKind::Config
            );
            assert_eq!(
                manager.refresh_after_rejection(1).await.unwrap_err().kind(),
                ErrorKind::Config
            );
            assert!(manager.current_now().is_none());
        });
    }
    let err = TokenManager::builder(Endpoint::new(None))
        .refresh_timeout(Duration::MAX)
        .try_build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    // Huge lifetimes with valid windows are fine: no expiry the clock cannot hold.
    runtime.block_on(async {
        let manager = TokenManager::builder(Endpoint::new(None))
            .try_build()
            .unwrap();
        let token = manager
            .set_tokens(Secret::new("access-0"), None, Some(Duration::MAX))
            .await
            .unwrap();
        assert_eq!(token.expires_at(), None);
    });
}

#[test]
fn timed_refresh_outside_a_tokio_runtime_is_a_config_error() {
    let err = TokenManager::builder(Endpoint::new(None))
        .timed_refresh(true)
        .try_build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    // build() outside a runtime does not panic either; the manager reports it when used.
    let manager = TokenManager::builder(Endpoint::new(None))
        .timed_refresh(true)
        .build();
    assert!(manager.current_now().is_none());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime.block_on(manager.current()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn current_now_outside_a_tokio_runtime_does_not_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let endpoint = Endpoint::new(None);
    // The soft window is the whole usable lifetime: a new token is in it at once.
    let windows = xhttp_auth::Windows {
        soft_share: 1.0,
        ..xhttp_auth::Windows::default()
    };
    let manager = TokenManager::builder(endpoint.clone())
        .windows(windows)
        .build();
    // No token yet: current_now would start the refresh, which needs a runtime.
    assert!(manager.current_now().is_none());
    let err = futures_util::FutureExt::now_or_never(manager.current())
        .expect("fails at once")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    // A token in its soft window, outside a runtime: it serves, no background refresh.
    let lifetime = Some(Duration::from_secs(600));
    runtime
        .block_on(manager.set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            lifetime,
        ))
        .unwrap();
    assert_eq!(manager.current_now().unwrap().access().expose(), "access-0");
    assert_eq!(endpoint.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_current_tokens_are_known_secrets_while_current() {
    use xhttp_core::mask::server_text;
    let endpoint = Endpoint::new(None);
    let manager = TokenManager::builder(endpoint.clone()).build();
    let quoted = |secret: &str| server_text(&format!("the server said {secret}"), 200);
    manager
        .set_tokens(
            Secret::new(USER_A_ACCESS),
            Some(Secret::new(USER_A_REFRESH)),
            None,
        )
        .await
        .unwrap();
    assert!(!quoted(USER_A_ACCESS).contains(USER_A_ACCESS));
    assert!(!quoted(USER_A_REFRESH).contains(USER_A_REFRESH));
    manager
        .set_tokens(
            Secret::new(USER_B_ACCESS),
            Some(Secret::new(USER_B_REFRESH)),
            None,
        )
        .await
        .unwrap();
    assert!(!quoted(USER_B_ACCESS).contains(USER_B_ACCESS));
    assert!(
        quoted(USER_A_ACCESS).contains(USER_A_ACCESS),
        "replaced tokens are forgotten"
    );
    manager.clear().await;
    assert!(
        quoted(USER_B_REFRESH).contains(USER_B_REFRESH),
        "dropped on clear"
    );
}

// ---- A failed refresh must not fail thousands of calls (issue 10) ----

/// The tokens these tests hand out and rotate: none may appear in any error.
const ENDPOINT_SECRETS: [&str; 4] = ["access-0", "refresh-0", "access-1", "refresh-1"];

fn assert_no_token(err: &Error) {
    let shown = format!("{err} {err:?}");
    for secret in ENDPOINT_SECRETS {
        assert!(!shown.contains(secret), "a token is shown: {shown}");
    }
}

/// A manager with deterministic backoff (the full bound: 100 ms, 200 ms, 400 ms, ...).
async fn exact_manager(endpoint: &Endpoint, lifetime: Option<Duration>) -> TokenManager {
    let manager = TokenManager::builder(endpoint.clone())
        .refresh_jitter(|| 1.0)
        .build();
    manager
        .set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            lifetime,
        )
        .await
        .unwrap();
    manager
}

/// `n` tasks calling `refresh_after_rejection(1)`, all registered before this returns.
async fn rejected_waiters(
    manager: &TokenManager,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(Result<Arc<xhttp_auth::Token>, Error>, Instant)>> {
    let entered = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (manager, entered) = (manager.clone(), entered.clone());
            tokio::spawn(async move {
                entered.fetch_add(1, Ordering::SeqCst);
                let result = manager.refresh_after_rejection(1).await;
                (result, Instant::now())
            })
        })
        .collect();
    while entered.load(Ordering::SeqCst) < n {
        tokio::task::yield_now().await;
    }
    settle().await;
    tasks
}

#[tokio::test(start_paused = true)]
async fn a_token_endpoint_503_503_200_costs_three_calls_and_no_failed_waiter() {
    let endpoint = Endpoint::new(None);
    let manager = exact_manager(&endpoint, None).await;
    endpoint.script([Mode::Status(503, None), Mode::Status(503, None)]);
    endpoint.close_gate();
    let start = Instant::now();
    let waiters = rejected_waiters(&manager, 20).await;
    assert_eq!(endpoint.calls(), 1, "one flight for the 20 waiters");
    endpoint.open_gate();
    for waiter in waiters {
        let (token, _) = waiter.await.unwrap();
        assert_eq!(token.unwrap().generation(), 2, "no waiter saw the 503s");
    }
    assert_eq!(endpoint.calls(), 3, "exactly 3 token calls");
    let offsets: Vec<_> = endpoint.call_times().iter().map(|t| *t - start).collect();
    assert_eq!(
        offsets,
        [
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_millis(300)
        ],
        "exponential backoff between the calls"
    );
    assert_eq!(endpoint.reuse(), 0);

    // The same at scale: 1,000 waiters, 503 twice, 3 calls, no failure. (A minute later: a
    // token rejected at once after a rejection-triggered refresh would be held back.)
    tokio::time::advance(Duration::from_secs(60)).await;
    endpoint.script([Mode::Status(503, None), Mode::Status(429, None)]);
    endpoint.close_gate();
    let entered = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (manager, entered) = (manager.clone(), entered.clone());
            tokio::spawn(async move {
                entered.fetch_add(1, Ordering::SeqCst);
                manager.refresh_after_rejection(2).await
            })
        })
        .collect();
    while entered.load(Ordering::SeqCst) < 1000 {
        tokio::task::yield_now().await;
    }
    settle().await;
    assert_eq!(endpoint.calls(), 4);
    endpoint.open_gate();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().generation(), 3);
    }
    assert_eq!(endpoint.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_the_token_endpoint_is_honoured_within_the_refresh_deadline() {
    let endpoint = Endpoint::new(None);
    let manager = exact_manager(&endpoint, None).await;
    endpoint.script([Mode::Status(503, Some(3))]);
    let start = Instant::now();
    let waiters = rejected_waiters(&manager, 20).await;
    for waiter in waiters {
        let (token, at) = waiter.await.unwrap();
        assert_eq!(token.unwrap().generation(), 2);
        assert_eq!(
            at - start,
            Duration::from_secs(3),
            "the server's 3 s, not 100 ms"
        );
    }
    assert_eq!(endpoint.calls(), 2);

    // A Retry-After past the 10 s refresh deadline: no retry, and no waiter waits for it.
    tokio::time::advance(Duration::from_secs(60)).await;
    endpoint.script([Mode::Status(429, Some(30))]);
    let start = Instant::now();
    let waiters = rejected_waiters_of(&manager, 2, 20).await;
    for waiter in waiters {
        let (result, at) = waiter.await.unwrap();
        let err = result.unwrap_err();
        assert_eq!(at, start, "failed at once, not at the deadline");
        assert_eq!(err.kind(), ErrorKind::RefreshFailed);
        assert_eq!(err.refresh_failure(), Some(RefreshFailure::Endpoint));
        assert_eq!(err.status(), Some(http::StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
        assert_eq!(err.attempts(), 1);
        assert_no_token(&err);
    }
    assert_eq!(endpoint.calls(), 3);
}

/// Like [`rejected_waiters`], for a rejection of `generation`.
async fn rejected_waiters_of(
    manager: &TokenManager,
    generation: u64,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(Result<Arc<xhttp_auth::Token>, Error>, Instant)>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move {
                let result = manager.refresh_after_rejection(generation).await;
                (result, Instant::now())
            })
        })
        .collect();
    settle().await;
    tasks
}

#[tokio::test(start_paused = true)]
async fn a_500_from_a_rotating_grant_is_not_retried() {
    for status in [500, 502, 504] {
        let endpoint = Endpoint::new(None);
        let manager = exact_manager(&endpoint, None).await;
        endpoint.script([Mode::Status(status, None)]);
        let waiters = rejected_waiters(&manager, 20).await;
        for waiter in waiters {
            let err = waiter.await.unwrap().0.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::RefreshFailed);
            assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
            assert_eq!(err.attempts(), 1);
        }
        assert_eq!(
            endpoint.calls(),
            1,
            "{status} may have consumed the refresh token"
        );
        assert_eq!(endpoint.reuse(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_is_never_retried_and_every_waiter_gets_the_same_error() {
    let endpoint = Endpoint::new(None);
    let manager = exact_manager(&endpoint, None).await;
    endpoint.set_mode(Mode::InvalidGrant);
    endpoint.close_gate();
    let waiters = rejected_waiters(&manager, 1000).await;
    endpoint.open_gate();
    let mut seen = HashSet::new();
    for waiter in waiters {
        let err = waiter.await.unwrap().0.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_eq!(err.attempts(), 1);
        assert_no_token(&err);
        seen.insert(format!("{err} {err:?}"));
    }
    // Later callers, from the expired state, get the identical error.
    for _ in 0..20 {
        let err = manager.current().await.unwrap_err();
        seen.insert(format!("{err} {err:?}"));
        let err = manager.refresh_after_rejection(1).await.unwrap_err();
        seen.insert(format!("{err} {err:?}"));
    }
    assert_eq!(seen.len(), 1, "one error for everyone: {seen:?}");
    assert!(seen.iter().all(|e| e.contains("invalid_grant")));
    assert_eq!(endpoint.calls(), 1, "never retried");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_generation_is_never_handed_out_again_after_a_failed_refresh() {
    let endpoint = Endpoint::new(None);
    let manager = exact_manager(&endpoint, None).await;
    assert_eq!(manager.current().await.unwrap().generation(), 1);
    endpoint.script([Mode::Status(500, None)]);
    let failed = manager.refresh_after_rejection(1).await.unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::RefreshFailed);
    // Generation 1 is dead: 20 calls within the cool-down get the refresh's error, never
    // the rejected token, and cost no token call.
    for _ in 0..20 {
        assert!(manager.current_now().is_none());
        let err = manager.current().await.unwrap_err();
        assert_eq!(format!("{err:?}"), format!("{failed:?}"));
    }
    assert_eq!(endpoint.calls(), 1);
    // After the cool-down the next caller starts a new refresh, and everyone gets its token.
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..20 {
        let token = manager.current().await.unwrap();
        assert_eq!(token.generation(), 2);
        assert_eq!(token.access().expose(), "access-2");
    }
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_cool_down_counts_from_the_end_of_a_timed_out_refresh() {
    let endpoint = Endpoint::new(None);
    let manager = exact_manager(&endpoint, None).await;
    endpoint.set_mode(Mode::Hang);
    let start = Instant::now();
    let waiters = rejected_waiters(&manager, 20).await;
    let mut first = None;
    for waiter in waiters {
        let (result, at) = waiter.await.unwrap();
        let err = result.unwrap_err();
        assert_eq!(at - start, Duration::from_secs(10));
        assert_eq!(err.refresh_failure(), Some(RefreshFailure::Timeout));
        first.get_or_insert(err);
    }
    endpoint.set_mode(Mode::Ok);
    // Waves of callers right after the timeout: the error at once, no token call.
    for _ in 0..3 {
        for _ in 0..20 {
            let err = manager.current().await.unwrap_err();
            assert_eq!(err.refresh_failure(), Some(RefreshFailure::Timeout));
        }
        tokio::time::advance(Duration::from_millis(333)).await;
    }
    assert_eq!(
        endpoint.calls(),
        1,
        "the cool-down applied after a 10 s timeout"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(manager.current().await.unwrap().generation(), 2);
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_api_that_rejects_every_fresh_token_gets_a_bounded_number_of_refreshes() {
    // Every call: take the token, the API rejects it. Every refresh succeeds.
    async fn call(manager: &TokenManager) {
        if let Ok(token) = manager.current().await {
            let _ = manager.refresh_after_rejection(token.generation()).await;
        }
    }

    // 21 sequential calls at one instant: the login token's refresh; its token is rejected
    // at once, which may be a revocation, so one more refresh; that token is rejected at
    // once too, twice in a row, and the next refresh is held back (1 s): 2 token calls.
    let endpoint = Endpoint::new(None);
    let manager = exact_manager(&endpoint, None).await;
    for _ in 0..21 {
        call(&manager).await;
    }
    assert_eq!(endpoint.calls(), 2);
    let err = manager.current().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert_no_token(&err);

    // One call a second for 21 s: refreshes at 0 and 1 s, then held back 1, 2, 4, 8 s after
    // each refreshed token: at 2, 4, 8 and 16 s; 6 token calls, not 21.
    let endpoint = Endpoint::new(None);
    let manager = exact_manager(&endpoint, None).await;
    let start = Instant::now();
    for _ in 0..21 {
        call(&manager).await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let offsets: Vec<_> = endpoint
        .call_times()
        .iter()
        .map(|t| (*t - start).as_secs())
        .collect();
    assert_eq!(offsets, [0, 1, 2, 4, 8, 16]);
    assert_eq!(endpoint.reuse(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_token_the_server_accepted_and_then_rejected_is_refreshed_at_once() {
    // A rejection-triggered refresh issues generation 2; a response accepts it; the server
    // then revokes it. That is no churn: the next refresh starts at once, no hold.
    let endpoint = Endpoint::new(None);
    let manager = exact_manager(&endpoint, None).await;
    let first = manager.current().await.unwrap();
    let second = manager
        .refresh_after_rejection(first.generation())
        .await
        .unwrap();
    assert_eq!(endpoint.calls(), 1);
    manager.note_accepted(second.generation());
    let third = manager
        .refresh_after_rejection(second.generation())
        .await
        .expect("a revoked token is refreshed, not held back");
    assert_eq!(third.generation(), second.generation() + 1);
    assert_eq!(endpoint.calls(), 2);
    // Never accepted, rejected at once: once may be a revocation, refreshed at once; twice
    // in a row is churn, held back.
    let fourth = manager
        .refresh_after_rejection(third.generation())
        .await
        .unwrap();
    assert_eq!(endpoint.calls(), 3);
    let err = manager
        .refresh_after_rejection(fourth.generation())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(endpoint.calls(), 3);
    // A report for an older generation changes nothing.
    manager.note_accepted(1);
    assert_eq!(endpoint.reuse(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_short_token_rejected_late_in_its_life_is_no_churn() {
    // 300 ms tokens: a token rejected 200 ms after a rejection-triggered refresh issued it
    // (past half its life) expired or was revoked; the next refresh starts at once.
    let lifetime = Some(Duration::from_millis(300));
    let endpoint = Endpoint::new(lifetime);
    let manager = exact_manager(&endpoint, lifetime).await;
    let first = manager.current().await.unwrap();
    let second = manager
        .refresh_after_rejection(first.generation())
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(200)).await;
    let third = manager
        .refresh_after_rejection(second.generation())
        .await
        .expect("not held back");
    assert_eq!(third.generation(), second.generation() + 1);
    // Rejected 10 ms after they were issued, never accepted, twice in a row: held back.
    tokio::time::advance(Duration::from_millis(10)).await;
    let fourth = manager
        .refresh_after_rejection(third.generation())
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(10)).await;
    let err = manager
        .refresh_after_rejection(fourth.generation())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(endpoint.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn every_token_gets_its_soft_window_refresh() {
    // 4 s tokens: 0.4 s skew, soft window from 2.88 s, hard window from 3.24 s.
    let lifetime = Some(Duration::from_secs(4));
    let endpoint = Endpoint::new(lifetime);
    let manager = exact_manager(&endpoint, lifetime).await;
    let start = Instant::now();
    let mut last = 1;
    for _ in 0..400 {
        tokio::time::advance(Duration::from_millis(50)).await;
        let token = manager
            .current_now()
            .expect("no caller ever waits: every refresh is a background one");
        assert!(token.generation() >= last);
        last = token.generation();
        settle().await;
    }
    // 20 s of 4 s tokens: a background refresh 2.9 s into each token's life (the first
    // 50 ms step in its soft window), six in all.
    let offsets: Vec<_> = endpoint.call_times().iter().map(|t| *t - start).collect();
    let expected: Vec<_> = (1..=6).map(|i| Duration::from_millis(2900 * i)).collect();
    assert_eq!(offsets, expected);
    assert_eq!(last, 7);
}

#[tokio::test(start_paused = true)]
async fn refresh_failures_say_what_failed() {
    async fn failure_of(modes: &[Mode]) -> Error {
        let endpoint = Endpoint::new(None);
        let manager = exact_manager(&endpoint, None).await;
        endpoint.script(modes.iter().copied());
        let err = manager.refresh_after_rejection(1).await.unwrap_err();
        assert_no_token(&err);
        err
    }
    let timeout = failure_of(&[Mode::Hang]).await;
    assert_eq!(timeout.kind(), ErrorKind::RefreshFailed);
    assert_eq!(timeout.refresh_failure(), Some(RefreshFailure::Timeout));
    assert_eq!(timeout.attempts(), 1);

    let endpoint = failure_of(&[Mode::Status(503, None), Mode::Status(502, None)]).await;
    assert_eq!(endpoint.refresh_failure(), Some(RefreshFailure::Endpoint));
    assert_eq!(endpoint.status(), Some(http::StatusCode::BAD_GATEWAY));
    assert_eq!(endpoint.attempts(), 2, "the token calls the flight made");

    let malformed = failure_of(&[Mode::Malformed]).await;
    assert_eq!(malformed.refresh_failure(), Some(RefreshFailure::Malformed));
    assert_eq!(malformed.attempts(), 1);

    let dead = failure_of(&[Mode::InvalidGrant]).await;
    assert_eq!(dead.kind(), ErrorKind::SessionExpired);
    assert_eq!(dead.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_with_a_deadline_stops_at_it_without_cancelling_the_refresh() {
    let endpoint = Endpoint::new(None);
    let manager = exact_manager(&endpoint, None).await;
    endpoint.close_gate();
    let start = Instant::now();
    let patient = rejected_waiters(&manager, 10).await;
    let hurried = {
        let manager = manager.clone();
        let deadline = xhttp_core::Deadline::after(Duration::from_secs(2));
        tokio::spawn(async move {
            let result = manager.current_before(deadline).await;
            (result, Instant::now())
        })
    };
    let (result, at) = hurried.await.unwrap();
    let err = result.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(at - start, Duration::from_secs(2));
    endpoint.open_gate();
    for waiter in patient {
        assert_eq!(waiter.await.unwrap().0.unwrap().generation(), 2);
    }
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_with_a_deadline_stops_waiting_for_the_refresh_at_it() {
    use tower::{Layer, ServiceExt};
    let lifetime = Some(Duration::from_secs(20));
    let endpoint = Endpoint::new(lifetime);
    let manager = exact_manager(&endpoint, lifetime).await;
    tokio::time::advance(Duration::from_secs(25)).await;
    endpoint.close_gate();
    let api = tower::service_fn(|request: http::Request<()>| async move {
        let auth = request.headers()["authorization"]
            .to_str()
            .unwrap()
            .to_owned();
        Ok::<_, Error>(http::Response::new(auth))
    });
    let origin = xhttp_core::Origin::parse("https://api.example.com").unwrap();
    let service = xhttp_auth::AuthLayer::new(manager.clone(), [origin]).layer(api);
    let start = Instant::now();
    let mut hurried = http::Request::get("https://api.example.com/v1/me")
        .body(())
        .unwrap();
    hurried
        .extensions_mut()
        .insert(xhttp_core::Deadline::after(Duration::from_secs(2)));
    let patient = tokio::spawn({
        let service = service.clone();
        let request = http::Request::get("https://api.example.com/v1/me")
            .body(())
            .unwrap();
        async move { service.oneshot(request).await }
    });
    let err = service.clone().oneshot(hurried).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(Instant::now() - start, Duration::from_secs(2));
    endpoint.open_gate();
    let response = patient.await.unwrap().unwrap();
    assert_eq!(response.body(), "Bearer access-1");
    assert_eq!(
        endpoint.calls(),
        1,
        "the refresh went on for the patient caller"
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_that_expires_tokens_early_makes_later_tokens_stop_earlier() {
    // 1 s tokens: 100 ms of skew, so the client uses each for 900 ms.
    let lifetime = Some(Duration::from_secs(1));
    let endpoint = Endpoint::new(lifetime);
    let manager = exact_manager(&endpoint, lifetime).await;
    let usable = |token: &xhttp_auth::Token, from: Instant| token.expires_at().unwrap() - from;
    let start = Instant::now();
    let first = manager.current().await.unwrap();
    assert_eq!(usable(&first, start), Duration::from_millis(900));
    manager.note_accepted(first.generation());
    // Accepted, then rejected in its soft window: the server expired it before the client
    // stopped using it.
    tokio::time::advance(Duration::from_millis(850)).await;
    let at = Instant::now();
    let second = manager
        .refresh_after_rejection(first.generation())
        .await
        .unwrap();
    assert_eq!(
        usable(&second, at),
        Duration::from_millis(800),
        "one more skew"
    );
    manager.note_accepted(second.generation());
    tokio::time::advance(Duration::from_millis(750)).await;
    let at = Instant::now();
    let third = manager
        .refresh_after_rejection(second.generation())
        .await
        .unwrap();
    assert_eq!(
        usable(&third, at),
        Duration::from_millis(750),
        "doubled, capped at a quarter of the lifetime"
    );
    // A token rejected early in its life (a revocation) teaches nothing.
    manager.note_accepted(third.generation());
    tokio::time::advance(Duration::from_millis(100)).await;
    let at = Instant::now();
    let fourth = manager
        .refresh_after_rejection(third.generation())
        .await
        .unwrap();
    assert_eq!(usable(&fourth, at), Duration::from_millis(750));
    assert_eq!(endpoint.calls(), 3);
}
