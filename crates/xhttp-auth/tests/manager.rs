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
use xhttp_core::{Error, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Hang,
    Transient,
    InvalidGrant,
    Panic,
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
            let mut gate = self.0.gate.subscribe();
            gate.wait_for(|open| *open).await.unwrap();
            let latency = *self.0.latency.lock().unwrap();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mode = *self.0.mode.lock().unwrap();
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
    // The next call starts a new refresh (the cool-down counts from the failed attempt's
    // start, 10 s ago).
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
