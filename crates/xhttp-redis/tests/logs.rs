//! No secret reaches a tracing event: a manager refreshing through the Redis store, while it
//! works, while it is frozen, and with a wrong password, logs its warnings (they are checked
//! to be there) without the password or any token. Its own test binary: the capture is the
//! process's one global subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use xhttp_auth::{GrantResponse, RefreshGrant, Secret, TokenManager};
use xhttp_core::Error;
use xhttp_redis::RedisStore;
use xhttp_testkit::{RedisServer, TraceLog};

const PASSWORD: &str = "SECRET-REDIS-PASSWORD-LOGS";

/// Issues `SECRET-AT-<n>` and `SECRET-RT-<n>`.
#[derive(Debug, Default)]
struct Grant(AtomicU64);

impl RefreshGrant for Grant {
    fn request<'a>(&'a self, _: Option<&'a Secret>) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            Ok(GrantResponse {
                access_token: Secret::new(format!("SECRET-AT-{n}")),
                refresh_token: Some(Secret::new(format!("SECRET-RT-{n}"))),
                expires_in: Some(Duration::from_secs(3600)),
                received_at: tokio::time::Instant::now(),
            })
        })
    }
}

fn manager(url: String) -> TokenManager {
    let store = RedisStore::builder(url)
        .key("logs")
        .op_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    TokenManager::builder(Grant::default())
        .store(store)
        .refresh_timeout(Duration::from_secs(5))
        .build()
}

/// A refresh as a revocation calls for one: the token served, then the server rejected it.
async fn refresh(manager: &TokenManager) {
    let token = manager.current().await.unwrap();
    manager.note_accepted(token.generation());
    manager
        .refresh_after_rejection(token.generation())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_store_logs_its_failures_without_a_secret() {
    let log = TraceLog::global();
    let redis = RedisServer::start_with(Some(PASSWORD)).expect("a redis-server");

    // Working: a login, then refreshes through the lease and the swap.
    let working = manager(redis.url());
    working
        .set_tokens(
            Secret::new("SECRET-AT-0"),
            Some(Secret::new("SECRET-RT-0")),
            None,
        )
        .await
        .unwrap();
    refresh(&working).await;
    refresh(&working).await;
    assert_eq!(working.store_errors(), 0);

    // Frozen: every store call times out and is skipped; the refresh still succeeds.
    redis.pause();
    refresh(&working).await;
    redis.resume();
    assert!(working.store_errors() >= 3, "{}", working.store_errors());

    // A wrong password: the store refuses, the refresh goes on without it.
    let wrong = manager(redis.url().replace(PASSWORD, "SECRET-WRONG-PASSWORD"));
    wrong
        .set_tokens(
            Secret::new("SECRET-AT-W"),
            Some(Secret::new("SECRET-RT-W")),
            None,
        )
        .await
        .unwrap();
    refresh(&wrong).await;
    assert!(wrong.store_errors() >= 3, "{}", wrong.store_errors());

    let text = log.text();
    assert!(text.contains("could not lock the token store"), "{text}");
    assert!(text.contains("did not answer within"), "{text}");
    assert!(text.contains("Redis token store"), "{text}");
    log.assert_free_of(&[
        PASSWORD,
        "SECRET-WRONG-PASSWORD",
        "SECRET-AT-",
        "SECRET-RT-",
    ]);
}
