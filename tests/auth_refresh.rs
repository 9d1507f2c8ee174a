//! Auth and refresh over real loopback sockets, against the testkit's token endpoints
//! (rotating refresh tokens with reuse detection). Each test runs through the facade and
//! through the public stack over a raw hyper-util client (`common`), its token calls over the
//! matching grant transport.
//!
//! Socket tests assert counts, order and kinds; the exact timings are proven on the paused
//! clock in `crates/xhttp-auth/tests/manager.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{both, TestClient, Via};
use serde_json::Value;
use xhttp::auth::{FileStore, OAuth2Refresh, Secret, SkipAuth, TokenManager, TokenStore};
use xhttp::refresh::Triggers;
use xhttp::ErrorKind;
use xhttp_testkit::{Config, ExpiryMode, Faults, Route, TestServer, TokenPair, TraceLog};

/// Every test's tracing events, to prove no token is ever logged.
fn log() -> &'static TraceLog {
    TraceLog::global()
}

fn assert_not_logged(secrets: &[&str]) {
    log().assert_free_of(secrets);
}

struct Setup {
    server: TestServer,
    manager: TokenManager,
    client: TestClient,
    expired_hook: Arc<AtomicUsize>,
    login: TokenPair,
}

async fn setup_with(
    via: Via,
    config: Config,
    triggers: Triggers,
    refresh_timeout: Duration,
) -> Setup {
    log();
    let server = TestServer::start_with(config).await;
    let grant = OAuth2Refresh::new(via.grant_transport(), &server.url("/auth/token")).unwrap();
    let expired_hook = Arc::new(AtomicUsize::new(0));
    let manager = TokenManager::builder(grant)
        .refresh_timeout(refresh_timeout)
        .on_session_expired({
            let hook = expired_hook.clone();
            move || {
                hook.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build();
    let login = server.login();
    manager
        .set_tokens(
            Secret::new(login.access_token.clone()),
            Some(Secret::new(login.refresh_token.clone())),
            Some(Duration::from_secs(login.expires_in)),
        )
        .await
        .unwrap();
    let client = via
        .client()
        .base_url(server.base_url())
        .auth(manager.clone())
        .allow_insecure_loopback()
        .refresh_triggers(triggers)
        .build()
        .unwrap();
    Setup {
        server,
        manager,
        client,
        expired_hook,
        login,
    }
}

async fn setup(via: Via) -> Setup {
    setup_with(
        via,
        Config::default(),
        Triggers::default(),
        Duration::from_secs(10),
    )
    .await
}

/// Makes the current access token dead on the server (its family stays valid), the way a
/// token expires while the client still believes in it.
async fn expire_access_token_on_server(setup: &Setup) {
    setup.server.set_token_ttl(Duration::from_millis(1));
    let short = setup.server.login();
    setup.server.set_token_ttl(Duration::from_secs(3600));
    setup
        .manager
        .set_tokens(
            Secret::new(short.access_token),
            Some(Secret::new(short.refresh_token)),
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
}

both!(
    multi_thread,
    thousand_concurrent_requests_with_an_expired_token_refresh_once_and_replay
);
async fn thousand_concurrent_requests_with_an_expired_token_refresh_once_and_replay(via: Via) {
    let setup = setup(via).await;
    expire_access_token_on_server(&setup).await;
    let gate = setup.server.gate();
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let client = setup.client.clone();
            tokio::spawn(async move { client.get(&format!("/api/gate/{i}")).send().await })
        })
        .collect();
    // Every request carries the dead token and waits at the server before any is answered.
    gate.wait_for_arrivals(1000).await;
    gate.open();
    for call in calls {
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
    }
    let counters = setup.server.counters();
    assert_eq!(counters.token_calls(), 1, "one refresh for 1000 rejections");
    assert_eq!(
        counters.unauthorized(),
        1000,
        "every first trip was rejected"
    );
    assert_eq!(
        counters.hits(Route::Gate),
        2000,
        "1000 firsts + 1000 replays"
    );
    assert_eq!(counters.reuse_detected(), 0);
    assert_eq!(setup.manager.generation(), 3);
}

both!(
    multi_thread,
    late_401_for_a_replaced_generation_replays_without_a_refresh
);
async fn late_401_for_a_replaced_generation_replays_without_a_refresh(via: Via) {
    let setup = setup_with(
        via,
        Config {
            reject_superseded: true,
            ..Config::default()
        },
        Triggers::default(),
        Duration::from_secs(10),
    )
    .await;
    let gate = setup.server.gate();
    // Sent with generation 1, held at the server.
    let late = tokio::spawn({
        let client = setup.client.clone();
        async move { client.get("/api/gate/1").send().await }
    });
    gate.wait_for_arrivals(1).await;
    // Meanwhile another request's rejection refreshed the token to generation 2.
    let fresh = setup.manager.refresh_after_rejection(1).await.unwrap();
    assert_eq!(fresh.generation(), 2);
    assert_eq!(setup.server.counters().token_calls(), 1);
    // Now the held request is answered 401 (its token was superseded).
    gate.open();
    let response = late.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let counters = setup.server.counters();
    assert_eq!(
        counters.token_calls(),
        1,
        "no second refresh for the late 401"
    );
    assert_eq!(counters.unauthorized(), 1);
    assert_eq!(
        counters.hits(Route::Gate),
        2,
        "one replay with generation 2"
    );
    assert_eq!(counters.reuse_detected(), 0);
}

both!(
    multi_thread,
    requests_sent_during_a_rejection_refresh_wait_for_the_new_token
);
async fn requests_sent_during_a_rejection_refresh_wait_for_the_new_token(via: Via) {
    let setup = setup(via).await;
    expire_access_token_on_server(&setup).await;
    // A slow token endpoint, so the refresh is still running when the others start.
    setup.server.set_faults(
        Route::Token,
        Faults {
            delay: Some(Duration::from_millis(300)),
            ..Faults::default()
        },
    );
    let first = tokio::spawn({
        let client = setup.client.clone();
        async move { client.get("/api/items/1").send().await }
    });
    while setup.server.counters().hits(Route::Token) == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Distinct paths from the first one, so that none of them coalesces with it.
    let others: Vec<_> = (100..200)
        .map(|i| {
            let client = setup.client.clone();
            tokio::spawn(async move { client.get(&format!("/api/items/{i}")).send().await })
        })
        .collect();
    for other in others {
        assert_eq!(other.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    let counters = setup.server.counters();
    assert_eq!(
        counters.unauthorized(),
        1,
        "none of the 100 went out with the dead token"
    );
    assert_eq!(counters.token_calls(), 1);
    assert_eq!(counters.hits(Route::Items), 102);
}

both!(
    multi_thread,
    dropping_the_caller_that_triggered_the_refresh_lets_the_others_finish
);
async fn dropping_the_caller_that_triggered_the_refresh_lets_the_others_finish(via: Via) {
    let setup = setup(via).await;
    expire_access_token_on_server(&setup).await;
    setup.server.set_faults(
        Route::Token,
        Faults {
            delay: Some(Duration::from_millis(300)),
            ..Faults::default()
        },
    );
    let trigger = tokio::spawn({
        let client = setup.client.clone();
        async move { client.get("/api/items/1").send().await }
    });
    while setup.server.counters().hits(Route::Token) == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let waiters: Vec<_> = (100..120)
        .map(|i| {
            let client = setup.client.clone();
            tokio::spawn(async move { client.get(&format!("/api/items/{i}")).send().await })
        })
        .collect();
    trigger.abort();
    assert!(trigger.await.unwrap_err().is_cancelled());
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(setup.server.counters().token_calls(), 1);
    assert_eq!(setup.server.counters().reuse_detected(), 0);
}

both!(
    multi_thread,
    a_token_endpoint_that_never_answers_fails_waiters_at_the_refresh_timeout
);
async fn a_token_endpoint_that_never_answers_fails_waiters_at_the_refresh_timeout(via: Via) {
    let setup = setup_with(
        via,
        Config::default(),
        Triggers::default(),
        Duration::from_millis(300),
    )
    .await;
    expire_access_token_on_server(&setup).await;
    setup.server.set_faults(
        Route::Token,
        Faults {
            hang: true,
            ..Faults::default()
        },
    );
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let client = setup.client.clone();
            tokio::spawn(async move { client.get(&format!("/api/items/{i}")).send().await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed, "{err}");
    }
    assert_eq!(setup.server.counters().hits(Route::Token), 1);
    // Within the cool-down (1 s from the END of the failed refresh) callers get its error at
    // once, with no token call; after it the next call starts a new refresh, and this time
    // the endpoint answers.
    setup.server.set_faults(Route::Token, Faults::default());
    for i in 0..20 {
        let err = setup
            .client
            .get(&format!("/api/items/{i}"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed, "{err}");
        assert_eq!(
            err.refresh_failure(),
            Some(xhttp_core::error::RefreshFailure::Timeout)
        );
    }
    assert_eq!(setup.server.counters().hits(Route::Token), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = setup.client.get("/api/items/1").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(setup.server.counters().hits(Route::Token), 2);
}

both!(
    multi_thread,
    invalid_grant_expires_the_session_once_and_then_fails_fast
);
async fn invalid_grant_expires_the_session_once_and_then_fails_fast(via: Via) {
    let setup = setup(via).await;
    setup.server.revoke_all();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let client = setup.client.clone();
            tokio::spawn(async move { client.get(&format!("/api/items/{i}")).send().await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired, "{err}");
    }
    assert_eq!(setup.expired_hook.load(Ordering::SeqCst), 1, "one logout");
    let token_calls = setup.server.counters().token_calls();
    assert_eq!(token_calls, 1);
    let upstream = setup.server.counters().hits(Route::Items);
    for i in 0..100 {
        let err = setup
            .client
            .get(&format!("/api/items/{i}"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
    }
    assert_eq!(
        setup.server.counters().token_calls(),
        token_calls,
        "fail fast, no token call"
    );
    assert_eq!(
        setup.server.counters().hits(Route::Items),
        upstream,
        "nothing sent"
    );
}

both!(
    multi_thread,
    a_server_that_rejects_the_fresh_token_too_gives_unauthorized
);
async fn a_server_that_rejects_the_fresh_token_too_gives_unauthorized(via: Via) {
    let setup = setup(via).await;
    setup.server.set_faults(
        Route::Items,
        Faults {
            fail_rate: 1.0,
            status: 401,
            ..Faults::default()
        },
    );
    let err = setup.client.get("/api/items/1").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    let counters = setup.server.counters();
    // The replay's fresh token rejected once may be a revocation: one more refresh and
    // replay; rejected again, the call ends. Never a loop.
    assert_eq!(
        counters.hits(Route::Items),
        3,
        "the first trip and two replays"
    );
    assert_eq!(counters.token_calls(), 2);
}

both!(
    multi_thread,
    an_api_that_rejects_every_fresh_token_gets_a_bounded_number_of_refreshes
);
async fn an_api_that_rejects_every_fresh_token_gets_a_bounded_number_of_refreshes(via: Via) {
    let setup = setup(via).await;
    setup.server.set_faults(
        Route::Items,
        Faults {
            fail_rate: 1.0,
            status: 401,
            ..Faults::default()
        },
    );
    for i in 0..21 {
        let err = setup
            .client
            .get(&format!("/api/items/{i}"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    }
    // Call 1: a refresh and a replay. Call 2: its fresh token is rejected at once, so the
    // next refresh is held back for 1 s; meanwhile the dead token is never sent. (21 calls
    // take milliseconds; a machine slow enough to pass the 1 s hold makes one more.)
    let counters = setup.server.counters();
    assert!(counters.token_calls() <= 2, "{}", counters.token_calls());
    assert!(
        counters.hits(Route::Items) <= 5,
        "{}",
        counters.hits(Route::Items)
    );
    assert_eq!(counters.reuse_detected(), 0);
}

both!(
    multi_thread,
    a_rejected_generation_is_never_handed_out_again_after_a_failed_refresh
);
async fn a_rejected_generation_is_never_handed_out_again_after_a_failed_refresh(via: Via) {
    let setup = setup(via).await;
    expire_access_token_on_server(&setup).await;
    // A 500 from the token endpoint: not retried (it may have consumed the refresh token).
    setup.server.set_faults(
        Route::Token,
        Faults {
            fail_rate: 1.0,
            status: 500,
            ..Faults::default()
        },
    );
    let first = setup.client.get("/api/items/0").send().await.unwrap_err();
    assert_eq!(first.kind(), ErrorKind::RefreshFailed, "{first}");
    let counters = setup.server.counters();
    let (items, unauthorized) = (counters.hits(Route::Items), counters.unauthorized());
    assert_eq!(items, 1);
    for i in 1..=20 {
        let err = setup
            .client
            .get(&format!("/api/items/{i}"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshFailed, "{err}");
        assert_eq!(err.status(), Some(http::StatusCode::INTERNAL_SERVER_ERROR));
    }
    assert_eq!(
        counters.hits(Route::Items),
        items,
        "0 requests with the dead token"
    );
    assert_eq!(counters.unauthorized(), unauthorized);
    assert_eq!(counters.hits(Route::Token), 1, "the cool-down holds");
}

both!(multi_thread, forbidden_and_other_origins_cost_no_token_call);
async fn forbidden_and_other_origins_cost_no_token_call(via: Via) {
    let setup = setup(via).await;
    let response = setup.client.get("/status/403").send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(setup.server.counters().token_calls(), 0);

    let elsewhere = TestServer::start().await;
    let echo: Value = setup
        .client
        .get(&elsewhere.url("/echo"))
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert!(
        echo["headers"].get("authorization").is_none(),
        "no token to another origin"
    );
    let unauthorized = setup
        .client
        .get(&elsewhere.url("/api/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401, "its 401 is not ours to refresh");
    assert_eq!(setup.server.counters().token_calls(), 0);
    assert_eq!(elsewhere.counters().token_calls(), 0);

    // SkipAuth: no token even to our own origin.
    let echo: Value = setup
        .client
        .get("/echo")
        .extension(SkipAuth)
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert!(echo["headers"].get("authorization").is_none());
    let echo: Value = setup
        .client
        .get("/echo")
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        echo["headers"]["authorization"],
        format!("Bearer {}", setup.login.access_token)
    );
}

both!(
    multi_thread,
    business_code_40009_in_a_200_envelope_refreshes_once_and_replays
);
async fn business_code_40009_in_a_200_envelope_refreshes_once_and_replays(via: Via) {
    let setup = setup_with(
        via,
        Config {
            expiry_mode: ExpiryMode::BusinessCode,
            ..Config::default()
        },
        Triggers::default().business_codes([40009]),
        Duration::from_secs(10),
    )
    .await;
    expire_access_token_on_server(&setup).await;
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let client = setup.client.clone();
            tokio::spawn(async move { client.get(&format!("/api/items/{i}")).send().await })
        })
        .collect();
    for call in calls {
        let body: Value = call.await.unwrap().unwrap().json().unwrap();
        assert_eq!(body["code"], 0);
    }
    assert_eq!(setup.server.counters().token_calls(), 1);
    assert!(setup.server.counters().unauthorized() >= 1);
    assert_eq!(setup.server.counters().reuse_detected(), 0);
}

both!(
    multi_thread,
    plain_http_to_a_remote_host_is_refused_before_sending
);
async fn plain_http_to_a_remote_host_is_refused_before_sending(via: Via) {
    let manager = TokenManager::builder(
        OAuth2Refresh::new(via.grant_transport(), "https://auth.example.com/token").unwrap(),
    )
    .build();
    manager
        .set_tokens(Secret::new("SECRET-AT-remote"), None, None)
        .await
        .unwrap();
    let client = via
        .client()
        .base_url("http://api.example.com")
        .auth(manager)
        .build()
        .unwrap();
    let err = client.get("/x").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsecureTransport);
    assert!(!format!("{err} {err:?}").contains("SECRET"));
}

both!(multi_thread, no_token_appears_in_errors_debug_or_tracing);
async fn no_token_appears_in_errors_debug_or_tracing(via: Via) {
    let setup = setup(via).await;
    expire_access_token_on_server(&setup).await;
    let ok = setup.client.get("/api/items/1").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    setup.server.revoke_all();
    let err = setup.client.get("/api/items/2").send().await.unwrap_err();
    let token = setup.manager.current().await.err();
    let shown = format!(
        "{err} {err:?} {:?} {:?} {:?}",
        setup.manager, setup.client, token
    );
    let login = &setup.login;
    for secret in [&login.access_token, &login.refresh_token] {
        assert!(!shown.contains(secret.as_str()), "{shown}");
    }
    assert_not_logged(&[&login.access_token, &login.refresh_token]);
}

both!(
    multi_thread,
    different_identities_never_share_a_coalesced_response
);
async fn different_identities_never_share_a_coalesced_response(via: Via) {
    let setup = setup(via).await;
    let gate = setup.server.gate();
    // The same URL, once with the token and once without: two callers, two trips.
    let with_token = tokio::spawn({
        let client = setup.client.clone();
        async move { client.get("/gate/7").send().await }
    });
    let anonymous = tokio::spawn({
        let client = setup.client.clone();
        async move { client.get("/gate/7").extension(SkipAuth).send().await }
    });
    gate.wait_for_arrivals(2).await;
    // A new login is a new session: its identical request does not join the old one's trip.
    let next = setup.server.login();
    setup
        .manager
        .set_tokens(
            Secret::new(next.access_token),
            Some(Secret::new(next.refresh_token)),
            None,
        )
        .await
        .unwrap();
    let next_session = tokio::spawn({
        let client = setup.client.clone();
        async move { client.get("/gate/7").send().await }
    });
    gate.wait_for_arrivals(3).await;
    // And a caller of the same session and the same request does join.
    let joiner = tokio::spawn({
        let client = setup.client.clone();
        async move { client.get("/gate/7").send().await }
    });
    while setup.client.dedupe_stats().coalesced < 1 {
        tokio::task::yield_now().await;
    }
    gate.open();
    for call in [with_token, anonymous, next_session, joiner] {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(setup.server.counters().hits(Route::Gate), 3);
    assert_eq!(setup.client.dedupe_stats().coalesced, 1);
}

/// A fresh directory for a token file, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xhttp-suite-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A manager against `server`'s token endpoint, keeping its tokens in `store`.
fn manager_with_store(via: Via, server: &TestServer, store: FileStore) -> TokenManager {
    let grant = OAuth2Refresh::new(via.grant_transport(), &server.url("/auth/token")).unwrap();
    TokenManager::builder(grant).store(store).build()
}

fn client_for(via: Via, server: &TestServer, manager: &TokenManager) -> TestClient {
    via.client()
        .base_url(server.base_url())
        .auth(manager.clone())
        .allow_insecure_loopback()
        .build()
        .unwrap()
}

fn assert_hidden(shown: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!shown.contains(secret), "a secret is shown: {shown}");
    }
}

both!(
    multi_thread,
    a_rejection_from_an_old_session_is_never_replayed_with_the_new_sessions_token
);
async fn a_rejection_from_an_old_session_is_never_replayed_with_the_new_sessions_token(via: Via) {
    let setup = setup(via).await;
    // User A's token dies on the server while A's DELETE waits at the gate.
    setup.server.set_token_ttl(Duration::from_millis(1));
    let user_a = setup.server.login();
    setup.server.set_token_ttl(Duration::from_secs(3600));
    setup
        .manager
        .set_tokens(
            Secret::new(user_a.access_token.clone()),
            Some(Secret::new(user_a.refresh_token.clone())),
            None,
        )
        .await
        .unwrap();
    let gate = setup.server.gate();
    let delete = tokio::spawn({
        let client = setup.client.clone();
        async move { client.delete("/api/gate/account-a").send().await }
    });
    gate.wait_for_arrivals(1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Meanwhile user B logs in on the same manager (an account switch).
    let user_b = setup.server.login();
    setup
        .manager
        .set_tokens(
            Secret::new(user_b.access_token.clone()),
            Some(Secret::new(user_b.refresh_token.clone())),
            Some(Duration::from_secs(user_b.expires_in)),
        )
        .await
        .unwrap();
    let unauthorized_before = setup.server.counters().unauthorized();
    gate.open();
    let err = delete.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionChanged, "{err}");
    let counters = setup.server.counters();
    assert_eq!(counters.token_calls(), 0, "no token call");
    assert_eq!(
        counters.hits(Route::Gate),
        1,
        "A's DELETE went out once and was never replayed (so never with B's token)"
    );
    assert_eq!(counters.unauthorized(), unauthorized_before + 1);
    // B's session is untouched: its token is the one sent now.
    let echo: Value = setup
        .client
        .get("/echo")
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        echo["headers"]["authorization"],
        format!("Bearer {}", user_b.access_token)
    );
    let secrets = [
        user_a.access_token.as_str(),
        user_a.refresh_token.as_str(),
        user_b.access_token.as_str(),
        user_b.refresh_token.as_str(),
    ];
    assert_hidden(&format!("{err} {err:?} {:?}", setup.manager), &secrets);
    assert_not_logged(&secrets);
}

// Single: refresh and auth composed by hand over the facade's transport, the layers alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_from_an_old_session_is_never_replayed_through_the_layers_either() {
    use tower::{Layer, ServiceExt};
    use xhttp::auth::AuthLayer;
    use xhttp::refresh::RefreshLayer;
    use xhttp::transport::{AttemptTimeoutLayer, CollectLayer, HttpTransport};

    let server = TestServer::start().await;
    let manager = TokenManager::builder(
        OAuth2Refresh::new(xhttp::grant_transport(), &server.url("/auth/token")).unwrap(),
    )
    .build();
    server.set_token_ttl(Duration::from_millis(1));
    let user_a = server.login();
    server.set_token_ttl(Duration::from_secs(3600));
    manager
        .set_tokens(
            Secret::new(user_a.access_token.clone()),
            Some(Secret::new(user_a.refresh_token.clone())),
            None,
        )
        .await
        .unwrap();
    let origin = xhttp_core::Origin::parse(&server.base_url()).unwrap();
    let transport = AttemptTimeoutLayer::new(Duration::from_secs(10))
        .layer(CollectLayer::new().layer(HttpTransport::default()));
    let service = RefreshLayer::new(manager.clone()).layer(
        AuthLayer::new(manager.clone(), [origin])
            .allow_insecure_loopback(true)
            .layer(transport),
    );
    let request = http::Request::delete(server.url("/api/gate/account-a"))
        .body(xhttp_core::Body::empty())
        .unwrap();
    let gate = server.gate();
    let delete = tokio::spawn(service.oneshot(request));
    gate.wait_for_arrivals(1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let user_b = server.login();
    manager
        .set_tokens(
            Secret::new(user_b.access_token.clone()),
            Some(Secret::new(user_b.refresh_token.clone())),
            None,
        )
        .await
        .unwrap();
    gate.open();
    let err = delete.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionChanged, "{err}");
    assert_eq!(server.counters().token_calls(), 0);
    assert_eq!(server.counters().hits(Route::Gate), 1);
}

both!(
    multi_thread,
    a_bearer_over_plain_http_goes_only_to_a_loopback_address
);
async fn a_bearer_over_plain_http_goes_only_to_a_loopback_address(via: Via) {
    let setup = setup(via).await;
    let port = setup.server.addr().port();
    // Names are refused, `localhost` included: they resolve to whatever DNS says.
    for base in [
        format!("http://localhost:{port}"),
        format!("http://api.localhost:{port}"),
        format!("http://127.0.0.1.nip.io:{port}"),
    ] {
        let client = via
            .client()
            .base_url(&base)
            .auth(setup.manager.clone())
            .allow_insecure_loopback()
            .build()
            .unwrap();
        let err = client.get("/api/me").send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{base}: {err}");
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    }
    assert_eq!(setup.server.counters().total(), 0, "nothing was sent");
    // The address itself works.
    let response = setup.client.get("/api/me").send().await.unwrap();
    assert_eq!(response.status(), 200);
    // Token endpoints follow the same rule.
    for url in [
        format!("http://localhost:{port}/auth/token"),
        format!("http://auth.localhost:{port}/auth/token"),
    ] {
        let err = OAuth2Refresh::new(via.grant_transport(), &url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{url}");
        let err = xhttp::auth::JsonGrant::new(via.grant_transport(), &url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{url}");
    }
    assert!(OAuth2Refresh::new(via.grant_transport(), &setup.server.url("/auth/token")).is_ok());
    assert_eq!(setup.server.counters().token_calls(), 0);
}

both!(
    multi_thread,
    a_token_with_a_newline_is_refused_where_it_enters
);
async fn a_token_with_a_newline_is_refused_where_it_enters(via: Via) {
    let setup = setup(via).await;
    let injected = format!("{}\r\nX-Injected: 1", setup.login.access_token);
    let err = setup
        .manager
        .set_tokens(Secret::new(injected.clone()), None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert_hidden(&format!("{err} {err:?}"), &[&setup.login.access_token]);
    // The valid login token stays in service: requests work, no refresh was needed.
    let echo: Value = setup
        .client
        .get("/echo")
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        echo["headers"]["authorization"],
        format!("Bearer {}", setup.login.access_token)
    );
    assert!(echo["headers"].get("x-injected").is_none());
    assert_eq!(setup.server.counters().token_calls(), 0);

    // From a token file: refused when loaded, nothing is sent with it.
    let dir = TempDir::new("newline");
    let path = dir.0.join("tokens.json");
    let file = serde_json::json!({
        "access_token": "SECRET-AT-stored\nX-Injected: 1",
        "refresh_token": setup.login.refresh_token,
    });
    std::fs::write(&path, file.to_string()).unwrap();
    assert_eq!(
        FileStore::new(&path).load().await.unwrap_err().kind(),
        ErrorKind::Decode
    );
    let manager = manager_with_store(via, &setup.server, FileStore::new(&path));
    let client = client_for(via, &setup.server, &manager);
    let hits = setup.server.counters().total();
    let err = client.get("/api/me").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired, "{err}");
    assert_eq!(setup.server.counters().total(), hits, "nothing sent");
    assert_hidden(&format!("{err} {err:?}"), &["SECRET-AT-stored"]);
    assert_not_logged(&["SECRET-AT-stored", &setup.login.access_token]);
}

both!(
    multi_thread,
    an_expired_on_arrival_token_is_used_with_reactive_refresh_only
);
async fn an_expired_on_arrival_token_is_used_with_reactive_refresh_only(via: Via) {
    let setup = setup(via).await;
    // The server says the token lives 0 s, but it works: it is used until rejected.
    let login = setup.server.login();
    setup
        .manager
        .set_tokens(
            Secret::new(login.access_token.clone()),
            Some(Secret::new(login.refresh_token.clone())),
            Some(Duration::ZERO),
        )
        .await
        .unwrap();
    for i in 0..20 {
        let response = setup
            .client
            .get(&format!("/api/items/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        setup.server.counters().token_calls(),
        0,
        "no refresh per call"
    );
    assert!(
        log().text().contains("over on arrival"),
        "one warning says why"
    );
    // When the server does reject it, one refresh and a replay.
    setup.server.set_token_ttl(Duration::from_millis(1));
    let short = setup.server.login();
    setup.server.set_token_ttl(Duration::from_secs(3600));
    setup
        .manager
        .set_tokens(
            Secret::new(short.access_token.clone()),
            Some(Secret::new(short.refresh_token.clone())),
            Some(Duration::ZERO),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 0..20 {
        let response = setup
            .client
            .get(&format!("/api/items/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        setup.server.counters().token_calls(),
        1,
        "one reactive refresh"
    );
    assert_not_logged(&[
        &login.access_token,
        &login.refresh_token,
        &short.access_token,
        &short.refresh_token,
    ]);
}

#[cfg(unix)]
both!(
    multi_thread,
    a_fifo_at_the_token_store_path_fails_fast_instead_of_hanging
);
#[cfg(unix)]
async fn a_fifo_at_the_token_store_path_fails_fast_instead_of_hanging(via: Via) {
    let server = TestServer::start().await;
    let dir = TempDir::new("fifo");
    let path = dir.0.join("tokens.json");
    match std::process::Command::new("mkfifo").arg(&path).status() {
        Ok(status) if status.success() => {}
        _ => {
            eprintln!("skipped: no mkfifo command");
            return;
        }
    }
    let err = tokio::time::timeout(Duration::from_secs(5), FileStore::new(&path).load())
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let manager = manager_with_store(via, &server, FileStore::new(&path));
    let client = client_for(via, &server, &manager);
    let err = tokio::time::timeout(Duration::from_secs(5), client.get("/api/me").send())
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired, "{err}");
    assert_eq!(server.counters().total(), 0);
}

both!(
    multi_thread,
    a_killed_writers_temp_file_is_removed_by_the_next_login
);
async fn a_killed_writers_temp_file_is_removed_by_the_next_login(via: Via) {
    let server = TestServer::start().await;
    let dir = TempDir::new("temps");
    let path = dir.0.join("tokens.json");
    // A writer killed between creating its temp file and renaming it (its pid is gone).
    let leftover = dir.0.join(".tokens.json.999999999.3.tmp");
    std::fs::write(&leftover, r#"{"access_token":"SECRET-AT-half"#).unwrap();
    let manager = manager_with_store(via, &server, FileStore::new(&path));
    let login = server.login();
    manager
        .set_tokens(
            Secret::new(login.access_token.clone()),
            Some(Secret::new(login.refresh_token.clone())),
            None,
        )
        .await
        .unwrap();
    assert_eq!(dir.entries(), ["tokens.json"]);
    let response = client_for(via, &server, &manager)
        .get("/api/me")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

both!(
    multi_thread,
    a_corrupt_token_file_is_recovered_by_a_new_login
);
async fn a_corrupt_token_file_is_recovered_by_a_new_login(via: Via) {
    let server = TestServer::start().await;
    let dir = TempDir::new("corrupt");
    let path = dir.0.join("tokens.json");
    std::fs::write(
        &path,
        r#"{"access_token": "SECRET-AT-corrupt", "refresh_token": 7"#,
    )
    .unwrap();
    let err = FileStore::new(&path).load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_hidden(&format!("{err} {err:?}"), &["SECRET-AT-corrupt"]);
    let manager = manager_with_store(via, &server, FileStore::new(&path));
    let client = client_for(via, &server, &manager);
    // Unreadable tokens: the session is over, not stuck, and nothing is sent.
    let err = client.get("/api/me").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired, "{err}");
    assert_eq!(server.counters().total(), 0);
    // A new login overwrites the file, and everything works again, across restarts too.
    let login = server.login();
    manager
        .set_tokens(
            Secret::new(login.access_token.clone()),
            Some(Secret::new(login.refresh_token.clone())),
            None,
        )
        .await
        .unwrap();
    assert_eq!(client.get("/api/me").send().await.unwrap().status(), 200);
    let stored = FileStore::new(&path).load().await.unwrap().unwrap();
    assert_eq!(stored.access_token.expose(), login.access_token);
    let restarted = manager_with_store(via, &server, FileStore::new(&path));
    let response = client_for(via, &server, &restarted)
        .get("/api/me")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.counters().token_calls(), 0);
    assert_not_logged(&[
        "SECRET-AT-corrupt",
        &login.access_token,
        &login.refresh_token,
    ]);
}
