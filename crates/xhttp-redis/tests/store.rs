//! The Redis token store against a real `redis-server` on a free loopback port: the store's
//! contract, the lease, the fence, release messages, a dead holder, and a Redis that is
//! down, frozen or holds garbage. Every secret is a known string checked in every output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use xhttp_auth::{Lock, RefreshLock, Secret, StoredTokens, Swap, TokenStore};
use xhttp_core::ErrorKind;
use xhttp_redis::RedisStore;
use xhttp_testkit::RedisServer;

const PASSWORD: &str = "SECRET-REDIS-PASSWORD-1";

fn redis() -> RedisServer {
    RedisServer::start().expect("a redis-server for the tests")
}

fn store(redis: &RedisServer, key: &str) -> RedisStore {
    RedisStore::builder(redis.url())
        .key(key)
        .op_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

/// A store whose leases end with the refresh's deadline: no grace, so a test can outlive one.
fn graceless(redis: &RedisServer, key: &str) -> RedisStore {
    RedisStore::builder(redis.url())
        .key(key)
        .lease_grace(Duration::ZERO)
        .build()
        .unwrap()
}

fn tokens(access: &str, refresh: Option<&str>) -> StoredTokens {
    StoredTokens::new(Secret::new(access), refresh.map(Secret::new))
}

/// Waits until exactly `count` connections subscribe to `channel`.
async fn wait_for_subscribers(redis: &RedisServer, channel: &str, count: i64) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let subscribed = async {
        loop {
            let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query_async(&mut connection)
                .await
                .unwrap();
            if subscribers == count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), subscribed)
        .await
        .expect("the subscribers of the release channel");
}

/// Waits until `store` is subscribed to its release channel: it was read from, and every
/// wake-up of its new subscription is over.
async fn wait_until_subscribed(store: &RedisStore) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !store.is_subscribed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the store subscribed to its release channel");
}

/// Scripts the server has run (`EVAL` and `EVALSHA`), from `INFO commandstats`.
async fn scripts_run(redis: &RedisServer) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    info.lines()
        .filter(|line| line.starts_with("cmdstat_eval:") || line.starts_with("cmdstat_evalsha:"))
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Starts `waiter` asking for the lease `holder` holds, and returns once the server has run
/// its attempt: from then on only a message (or the lease running out) ends its wait.
async fn start_waiting(
    redis: &RedisServer,
    waiter: RedisStore,
) -> tokio::task::JoinHandle<(RedisStore, Result<Lock, xhttp_core::Error>)> {
    waiter.load().await.unwrap();
    wait_until_subscribed(&waiter).await;
    let before = scripts_run(redis).await;
    let waiting = tokio::spawn(async move {
        let woken = waiter.lock(Duration::from_secs(60)).await;
        (waiter, woken)
    });
    tokio::time::timeout(Duration::from_secs(5), async {
        while scripts_run(redis).await == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the waiter asked for the lease");
    assert!(
        !waiting.is_finished(),
        "the lease is held: the waiter waits"
    );
    waiting
}

/// The lease a `lock` call took; any other answer fails the test.
fn held(lock: Result<Lock, xhttp_core::Error>) -> RefreshLock {
    match lock.unwrap() {
        Lock::Held(lease) => lease,
        other => panic!("expected the lease, got {other:?}"),
    }
}

fn assert_no_secret(shown: &str) {
    assert!(!shown.contains("SECRET"), "a secret was shown: {shown}");
}

#[tokio::test]
async fn load_save_clear_round_trip_every_field() {
    let redis = redis();
    let store = store(&redis, "round-trip");
    assert_eq!(store.load().await.unwrap(), None);
    let mut full = tokens("SECRET-AT-1", Some("SECRET-RT-1"));
    full.expires_at = Some(std::time::UNIX_EPOCH + Duration::from_millis(1_900_000_000_123));
    full.session = Some("login-abc".to_owned());
    store.save(&full).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(full.clone()));
    // A save replaces every field: nothing of the old tokens survives.
    let bare = tokens("SECRET-AT-2", None);
    store.save(&bare).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(bare));
    assert_no_secret(&format!("{store:?}"));
}

#[tokio::test]
async fn a_cleared_session_stays_ended_for_every_process_until_the_next_save() {
    let redis = redis();
    let here = store(&redis, "ended");
    let there = store(&redis, "ended");
    let login = tokens("SECRET-AT-1", Some("SECRET-RT-1"));
    here.save(&login).await.unwrap();
    // A logout here: another process reading, or storing a refresh, learns it.
    here.clear().await.unwrap();
    let err = there.load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired, "{err:?}");
    assert_no_secret(&format!("{err} {err:?}"));
    let r1 = Secret::new("SECRET-RT-1");
    let refreshed = tokens("SECRET-AT-2", Some("SECRET-RT-2"));
    for expected in [Some(&r1), None] {
        let err = there.swap(expected, &refreshed, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired, "{err:?}");
    }
    // A new login ends the mark.
    let again = tokens("SECRET-AT-3", Some("SECRET-RT-3"));
    there.save(&again).await.unwrap();
    assert_eq!(here.load().await.unwrap(), Some(again));
}

#[tokio::test]
async fn swap_is_a_compare_and_swap_on_the_refresh_token() {
    let redis = redis();
    let store = store(&redis, "cas");
    let r1 = Secret::new("SECRET-RT-1");
    let new = tokens("SECRET-AT-2", Some("SECRET-RT-2"));
    // Empty store: expecting a token conflicts with "nothing stored".
    assert_eq!(
        store.swap(Some(&r1), &new, None).await.unwrap(),
        Swap::Conflict(None)
    );
    let first = tokens("SECRET-AT-1", Some("SECRET-RT-1"));
    assert_eq!(store.swap(None, &first, None).await.unwrap(), Swap::Saved);
    assert_eq!(
        store.swap(Some(&r1), &new, None).await.unwrap(),
        Swap::Saved
    );
    // A replica still holding r1 loses, and is told what is stored.
    let late = tokens("SECRET-AT-3", Some("SECRET-RT-3"));
    assert_eq!(
        store.swap(Some(&r1), &late, None).await.unwrap(),
        Swap::Conflict(Some(new.clone()))
    );
    assert_eq!(store.load().await.unwrap(), Some(new));
}

#[tokio::test]
async fn keys_and_prefixes_keep_credentials_apart() {
    let redis = redis();
    let a = store(&redis, "crm");
    let b = store(&redis, "billing");
    let c = RedisStore::builder(redis.url())
        .key("crm")
        .prefix("other:")
        .build()
        .unwrap();
    a.save(&tokens("SECRET-AT-A", None)).await.unwrap();
    assert_eq!(b.load().await.unwrap(), None);
    assert_eq!(c.load().await.unwrap(), None);
    assert_eq!(a.key_base(), "xhttp:{crm}");
    assert_eq!(c.key_base(), "other:{crm}");
}

#[tokio::test]
async fn a_waiter_is_woken_by_the_holders_release_not_when_the_lease_runs_out() {
    let redis = redis();
    let holder = store(&redis, "lease");
    // A lease of a minute: only the release message can end the wait within the bound.
    let lease = held(holder.lock(Duration::from_secs(60)).await);
    let first_fence = lease.fence().unwrap();
    let waiting = start_waiting(&redis, store(&redis, "lease")).await;
    drop(lease);
    // A waiter that is subscribed looks again only every 5 s unless a message wakes it.
    let (waiter, woken) = tokio::time::timeout(Duration::from_secs(4), waiting)
        .await
        .expect("the release message woke the waiter")
        .unwrap();
    // Woken to read what the holder stored, without taking the lease for it.
    assert!(matches!(woken.unwrap(), Lock::Released));
    let next = held(waiter.lock(Duration::from_secs(60)).await);
    assert_eq!(
        next.fence(),
        Some(first_fence + 1),
        "the wait took no lease"
    );
}

/// A store first used on a runtime that then shut down (a one-off `block_on` at start-up)
/// listens again on the runtime it is used on next.
#[test]
fn a_store_moved_to_another_runtime_still_hears_releases() {
    let redis = redis();
    let waiter = store(&redis, "moved");
    let channel = format!("{}:released", waiter.key_base());
    let start_up = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    start_up.block_on(async { waiter.load().await.unwrap() });
    drop(start_up);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The start-up runtime's subscription went with it.
        wait_for_subscribers(&redis, &channel, 0).await;
        assert!(!waiter.is_subscribed());
        let holder = store(&redis, "moved");
        let lease = held(holder.lock(Duration::from_secs(60)).await);
        let waiting = start_waiting(&redis, waiter).await;
        // The holder's listener and the waiter's new one.
        wait_for_subscribers(&redis, &channel, 2).await;
        drop(lease);
        let (_, woken) = tokio::time::timeout(Duration::from_secs(4), waiting)
            .await
            .expect("the release message woke the waiter")
            .unwrap();
        assert!(matches!(woken.unwrap(), Lock::Released));
    });
}

#[tokio::test]
async fn a_dead_holders_lease_runs_out_and_the_next_refresher_takes_it() {
    let redis = redis();
    let dead = graceless(&redis, "dead");
    let lock = held(dead.lock(Duration::from_millis(300)).await);
    // The holder dies: nothing releases the lease.
    std::mem::forget(lock);
    let next = store(&redis, "dead");
    let taken = held(
        tokio::time::timeout(Duration::from_secs(10), next.lock(Duration::from_secs(5)))
            .await
            .expect("the lease ran out"),
    );
    assert_eq!(taken.fence(), Some(2));
}

#[tokio::test]
async fn a_refresher_whose_lease_ran_out_cannot_overwrite_the_next_ones_tokens() {
    let redis = redis();
    let slow = graceless(&redis, "fence");
    let fast = store(&redis, "fence");
    // A grant whose refresh token does not rotate: the compare-and-swap alone passes both.
    let login = tokens("SECRET-AT-0", Some("SECRET-RT-SAME"));
    slow.save(&login).await.unwrap();
    let slow_lease = held(slow.lock(Duration::from_millis(200)).await);
    // The slow refresher stalls past its lease; the next one takes a new lease and stores.
    let fast_lease = held(
        tokio::time::timeout(Duration::from_secs(10), fast.lock(Duration::from_secs(5)))
            .await
            .unwrap(),
    );
    let newer = tokens("SECRET-AT-FAST", Some("SECRET-RT-SAME"));
    let same = Secret::new("SECRET-RT-SAME");
    assert_eq!(
        fast.swap(Some(&same), &newer, fast_lease.fence())
            .await
            .unwrap(),
        Swap::Saved
    );
    // The slow one wakes with its older access token: the fence refuses it.
    let older = tokens("SECRET-AT-SLOW", Some("SECRET-RT-SAME"));
    assert_eq!(
        slow.swap(Some(&same), &older, slow_lease.fence())
            .await
            .unwrap(),
        Swap::Conflict(Some(newer.clone()))
    );
    assert_eq!(fast.load().await.unwrap(), Some(newer));
    drop((slow_lease, fast_lease));
}

#[tokio::test]
async fn releasing_a_lease_that_went_to_another_owner_leaves_it_alone() {
    let redis = redis();
    let first = graceless(&redis, "owner");
    let second = store(&redis, "owner");
    let stale = held(first.lock(Duration::from_millis(150)).await);
    let current = held(
        tokio::time::timeout(
            Duration::from_secs(10),
            second.lock(Duration::from_secs(30)),
        )
        .await
        .unwrap(),
    );
    // The first owner's late release must not free the second owner's lease, nor wake
    // its waiters.
    let third = store(&redis, "owner");
    let attempt = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_millis(500),
            third.lock(Duration::from_secs(30)),
        )
        .await
    });
    // The listeners of all three stores.
    wait_for_subscribers(&redis, &format!("{}:released", first.key_base()), 3).await;
    drop(stale);
    let attempt = attempt.await.unwrap();
    assert!(
        attempt.is_err(),
        "the lease was taken from its owner, or its waiter woken: {attempt:?}"
    );
    drop(current);
}

#[tokio::test]
async fn a_password_from_the_url_is_used_and_never_shown() {
    let redis = RedisServer::start_with(Some(PASSWORD)).expect("a redis-server for the tests");
    let store = RedisStore::builder(redis.url())
        .key("auth")
        .build()
        .unwrap();
    store.save(&tokens("SECRET-AT-1", None)).await.unwrap();
    assert!(store.load().await.unwrap().is_some());
    assert_no_secret(&format!("{store:?}"));

    // Without the password the server refuses, and the error says so without the URL's secrets.
    let url = redis.url().replace(PASSWORD, "SECRET-WRONG-PASSWORD");
    let wrong = RedisStore::builder(url).key("auth").build().unwrap();
    let err = wrong.load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    assert_no_secret(&format!("{err} {err:?}"));
}

#[tokio::test]
async fn an_unreachable_redis_is_a_prompt_transport_error_naming_the_address_only() {
    let addr = xhttp_testkit::refused_addr();
    let store = RedisStore::builder(format!("redis://:{PASSWORD}@{addr}"))
        .op_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    for err in [
        store.load().await.unwrap_err(),
        store.lock(Duration::from_secs(1)).await.unwrap_err(),
        store
            .swap(None, &tokens("SECRET-AT-1", None), None)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Transport, "{err:?}");
        let shown = format!("{err} {err:?}");
        // The cause is shown whole, not taken for a secret.
        assert!(
            shown.contains("failed with \"Connection refused"),
            "{shown}"
        );
        assert!(shown.contains(&addr.port().to_string()), "{shown}");
        assert_no_secret(&shown);
    }
}

#[tokio::test]
async fn a_frozen_redis_costs_one_operation_timeout_per_call() {
    let redis = redis();
    let store = RedisStore::builder(redis.url())
        .key("frozen")
        .op_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    store.save(&tokens("SECRET-AT-1", None)).await.unwrap();
    redis.pause();
    let err = tokio::time::timeout(Duration::from_secs(10), store.load())
        .await
        .expect("bounded by the operation timeout")
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        format!("{err}").contains("did not answer within 200ms reading the tokens"),
        "{err}"
    );
    redis.resume();
    // The connection that timed out was dropped: the next call connects anew and works.
    assert!(store.load().await.unwrap().is_some());
}

#[tokio::test]
async fn garbage_in_the_token_key_is_a_decode_error_that_quotes_nothing() {
    let redis = redis();
    let store = store(&redis, "garbage");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:tokens", store.key_base());
    // Not a hash at all.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("SECRET-AT-GARBAGE")
        .query_async(&mut connection)
        .await
        .unwrap();
    let err = store.load().await.unwrap_err();
    assert_no_secret(&format!("{err} {err:?}"));
    // A hash without an access token, and one with an expiry that is not a number.
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("r")
        .arg("SECRET-RT-GARBAGE")
        .query_async(&mut connection)
        .await
        .unwrap();
    let err = store.load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_no_secret(&format!("{err} {err:?}"));
}

#[test]
fn bad_options_are_config_errors() {
    for built in [
        RedisStore::builder("http://127.0.0.1").build(),
        RedisStore::builder("redis://127.0.0.1").key("").build(),
        RedisStore::builder("redis://127.0.0.1").key("a{b}").build(),
        RedisStore::builder("redis://127.0.0.1").key("a b").build(),
        RedisStore::builder("redis://127.0.0.1")
            .key("k".repeat(129))
            .build(),
        RedisStore::builder("redis://127.0.0.1")
            .prefix("p{")
            .build(),
        RedisStore::builder("redis://127.0.0.1")
            .op_timeout(Duration::ZERO)
            .build(),
        RedisStore::builder("redis://127.0.0.1")
            .lease_grace(Duration::from_secs(61))
            .build(),
    ] {
        assert_eq!(built.unwrap_err().kind(), ErrorKind::Config);
    }
    // A URL the parser refuses is not echoed: it may hold a password.
    let err = RedisStore::builder(format!("redis://:{PASSWORD}@[::1"))
        .build()
        .unwrap_err();
    assert_no_secret(&format!("{err} {err:?}"));
}

#[cfg(feature = "rustls")]
#[tokio::test]
async fn rediss_urls_speak_tls_and_refuse_an_untrusted_server() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let redis = RedisServer::start_tls(&dir.join("server.crt"), &dir.join("server.key"))
        .expect("a redis-server with TLS");
    assert!(redis.url().starts_with("rediss://"));
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let store = RedisStore::builder(redis.url())
        .key("tls")
        .root_certificates(ca)
        .build()
        .unwrap();
    store.save(&tokens("SECRET-AT-TLS", None)).await.unwrap();
    assert_eq!(
        store.load().await.unwrap().unwrap().access_token.expose(),
        "SECRET-AT-TLS"
    );
    // Trusting the system's roots only, the test CA's server is refused.
    let untrusting = RedisStore::builder(redis.url()).key("tls").build().unwrap();
    let err = untrusting.load().await.unwrap_err();
    assert_no_secret(&format!("{err} {err:?}"));
    // And plain text to a TLS port is no answer either.
    let plain = RedisStore::builder(redis.url().replace("rediss://", "redis://"))
        .key("tls")
        .op_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(plain.load().await.is_err());
}

#[tokio::test]
async fn a_restarted_redis_is_reconnected_on_the_next_call_with_no_error() {
    let mut redis = redis();
    let store = store(&redis, "restart");
    store.save(&tokens("SECRET-AT-1", None)).await.unwrap();
    let lease = held(store.lock(Duration::from_secs(30)).await);
    drop(lease);
    // The restarted server has nothing stored; the store's connections to the old one are
    // dead, and the next call makes a new one without failing.
    redis.restart().unwrap();
    assert_eq!(store.load().await.unwrap(), None);
    store.save(&tokens("SECRET-AT-2", None)).await.unwrap();
    let lease = held(
        tokio::time::timeout(Duration::from_secs(10), store.lock(Duration::from_secs(30)))
            .await
            .unwrap(),
    );
    // A new server's fence counter starts again.
    assert_eq!(lease.fence(), Some(1));
}

#[tokio::test]
async fn the_same_owner_asking_for_its_lease_again_gets_its_fence_back() {
    // A lease take whose answer was lost is sent again by the store: the script must not
    // hand the same owner a second fence or make it wait for itself.
    let redis = redis();
    let store = store(&redis, "again");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let base = store.key_base().to_owned();
    let acquire = |owner: &str| {
        let mut command = redis::cmd("EVAL");
        command
            .arg(include_str!("../src/lua/acquire.lua"))
            .arg(4)
            .arg(format!("{base}:tokens"))
            .arg(format!("{base}:fence"))
            .arg(format!("{base}:lock"))
            .arg(format!("{base}:released"))
            .arg(owner)
            .arg(30_000);
        command
    };
    let first: i64 = acquire("owner-a")
        .query_async(&mut connection)
        .await
        .unwrap();
    let again: i64 = acquire("owner-a")
        .query_async(&mut connection)
        .await
        .unwrap();
    let other: i64 = acquire("owner-b")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!((first, again), (1, 1));
    assert!(other < 0, "another owner waits: {other}");
}
