//! DedupeLayer over in-process services (`tower::service_fn`): coalescing at scale, keys,
//! callers that leave, shared errors and panics, the per-request policies, cancel scopes, the
//! success window on the paused clock, the bound, and the readiness contract.
//!
//! Concurrency is proven by lining callers up on a gate inside the upstream and opening it
//! only once the layer's counters show every caller registered, never by sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, ServiceExt};
use xhttp_core::{Body, Error, ErrorKind};
use xhttp_dedupe::{
    CancelScope, Dedupe, DedupeLayer, DedupeOverride, DedupePolicy, Identity, ResponseFuture,
};
use xhttp_testkit::ReadinessProbe;

type Upstream<B> = BoxCloneSyncService<Request<B>, Response<Bytes>, Error>;
type Service<B> = Dedupe<Upstream<B>>;
type Outcome = Result<Response<Bytes>, Error>;

/// A gate for upstream calls, and what the upstream saw: calls made, and calls whose future
/// was dropped before it answered.
#[derive(Clone, Default)]
struct Held {
    open: Arc<watch::Sender<bool>>,
    calls: Arc<AtomicUsize>,
    abandoned: Arc<AtomicUsize>,
}

impl Held {
    /// Lets every held call (and every later one) answer.
    fn open(&self) {
        self.open.send_replace(true);
    }

    /// Holds later calls again.
    fn close(&self) {
        self.open.send_replace(false);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// An upstream that counts each call when it is made, holds it until `open`, then
    /// answers `respond(request, n)` (`n`: the call's number, from 1). `respond` runs inside
    /// the call's future, so a panic in it is a panic of the future.
    fn service<B, F>(&self, respond: F) -> Upstream<B>
    where
        B: Send + 'static,
        F: Fn(&Request<B>, usize) -> Outcome + Clone + Send + Sync + 'static,
    {
        let this = self.clone();
        Upstream::new(service_fn(move |request: Request<B>| {
            let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let mut open = this.open.subscribe();
            let respond = respond.clone();
            let mut guard = Abandoned(Some(this.abandoned.clone()));
            async move {
                let _ = open.wait_for(|open| *open).await;
                let outcome = respond(&request, n);
                guard.disarm();
                outcome
            }
        }))
    }
}

/// Counts a call whose future is dropped before it answers.
struct Abandoned(Option<Arc<AtomicUsize>>);

impl Abandoned {
    /// The call answered: it was not abandoned.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn ok(body: impl Into<Bytes>) -> Outcome {
    Ok(Response::new(body.into()))
}

/// A body on the heap, made per call, so that equal pointers mean one shared buffer.
fn numbered(_: &Request<()>, n: usize) -> Outcome {
    ok(format!("response #{n}"))
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

fn with_policy(uri: &str, policy: DedupePolicy) -> Request<()> {
    Request::get(uri)
        .extension(DedupeOverride(policy))
        .body(())
        .unwrap()
}

fn spawn_call<B>(service: &Service<B>, request: Request<B>) -> JoinHandle<Outcome>
where
    B: xhttp_core::body::RequestBody + Send + 'static,
{
    tokio::spawn(service.clone().oneshot(request))
}

/// Waits until `condition` holds, yielding to the callers in between; fails after 10 s.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let wait = async {
        while !condition() {
            tokio::task::yield_now().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .is_err()
    {
        panic!("timed out waiting for {what}");
    }
}

async fn join_all(handles: Vec<JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(handles.len());
    for handle in handles {
        outcomes.push(handle.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_identical_gets_make_one_call_and_share_one_body_buffer() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer.layer(upstream.service(numbered));

    let callers: Vec<_> = (0..1000)
        .map(|_| spawn_call(&service, get("https://api.example.com/items/7")))
        .collect();
    until("999 followers behind one leader", || {
        layer.stats().coalesced == 999 && upstream.calls() == 1
    })
    .await;
    assert_eq!(layer.len(), 1);
    upstream.open();

    let responses: Vec<_> = join_all(callers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(upstream.calls(), 1);
    assert_eq!(responses.len(), 1000);
    let first = responses[0].body().clone();
    assert_eq!(first, "response #1");
    for response in &responses {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), &first);
        assert_eq!(
            response.body().as_ptr(),
            first.as_ptr(),
            "one shared buffer"
        );
    }
    assert_eq!(layer.stats().coalesced, 999);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_and_accept_language_split_the_key_and_each_caller_gets_its_own_body() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    // The body names what the upstream saw, so a caller served another's response shows.
    let service = layer.layer(upstream.service(|request: &Request<()>, _| {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_else(|| "-".into())
        };
        let identity = request
            .extensions()
            .get::<Identity>()
            .map(|i| i.0.to_string())
            .unwrap_or_else(|| "-".into());
        ok(format!(
            "{} {identity} {}",
            header("authorization"),
            header("accept-language")
        ))
    }));
    let request = |authorization: &str, identity: Option<&str>, language: Option<&str>| {
        let mut builder = Request::get("https://api.example.com/me")
            .header("authorization", authorization.to_string());
        if let Some(identity) = identity {
            builder = builder.extension(Identity(identity.into()));
        }
        if let Some(language) = language {
            builder = builder.header("accept-language", language.to_string());
        }
        builder.body(()).unwrap()
    };
    // Each variant differs from the first in one thing only, and is sent twice.
    let variants = [
        (("Bearer alice", None, None), "Bearer alice - -"),
        (("Bearer bob", None, None), "Bearer bob - -"),
        (
            ("Bearer alice", Some("tenant-2"), None),
            "Bearer alice tenant-2 -",
        ),
        (
            ("Bearer alice", None, Some("zh-CN")),
            "Bearer alice - zh-CN",
        ),
    ];
    let callers: Vec<_> = variants
        .iter()
        .flat_map(|((auth, identity, language), expected)| {
            (0..2).map(|_| {
                (
                    *expected,
                    spawn_call(&service, request(auth, *identity, *language)),
                )
            })
        })
        .collect();
    until("one leader and one follower per variant", || {
        layer.stats().coalesced == 4 && upstream.calls() == 4
    })
    .await;
    upstream.open();

    for (expected, caller) in callers {
        let response = caller.await.unwrap().unwrap();
        assert_eq!(response.body(), expected);
    }
    assert_eq!(upstream.calls(), 4);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_posts_are_never_coalesced_by_default() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer.layer(upstream.service(|_: &Request<Body>, n| ok(format!("created #{n}"))));
    let post = || {
        Request::post("https://api.example.com/orders")
            .body(Body::from("{\"item\":7}"))
            .unwrap()
    };

    let callers = vec![spawn_call(&service, post()), spawn_call(&service, post())];
    // Both are inside the upstream at once: neither joined the other.
    until("both posts upstream", || upstream.calls() == 2).await;
    upstream.open();

    let mut bodies: Vec<_> = join_all(callers)
        .await
        .into_iter()
        .map(|r| r.unwrap().into_body())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["created #1", "created #2"]);
    assert_eq!(layer.stats().coalesced, 0);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_the_response_when_the_leader_is_dropped_early() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer.layer(upstream.service(numbered));
    let uri = "https://api.example.com/items/7";

    let leader = spawn_call(&service, get(uri));
    until("the leader upstream", || upstream.calls() == 1).await;
    let followers: Vec<_> = (0..10).map(|_| spawn_call(&service, get(uri))).collect();
    until("10 followers", || layer.stats().coalesced == 10).await;

    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert_eq!(
        upstream.abandoned(),
        0,
        "the trip goes on for the followers"
    );
    upstream.open();

    for outcome in join_all(followers).await {
        assert_eq!(outcome.unwrap().body(), "response #1");
    }
    assert_eq!(upstream.calls(), 1);
    assert_eq!(upstream.abandoned(), 0);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_dropped_outside_any_runtime_does_not_strand_its_followers() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer.layer(upstream.service(numbered));
    let uri = "https://api.example.com/items/7";

    let mut leader = Box::pin(service.clone().oneshot(get(uri)));
    poll_fn(|cx| {
        assert!(leader.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    assert_eq!(upstream.calls(), 1);
    let followers: Vec<_> = (0..3).map(|_| spawn_call(&service, get(uri))).collect();
    until("3 followers", || layer.stats().coalesced == 3).await;

    // A thread of its own has no tokio runtime to hand the trip to.
    std::thread::spawn(move || drop(leader)).join().unwrap();
    upstream.open();

    // The followers get the response or an error, but they are answered.
    let outcomes = tokio::time::timeout(Duration::from_secs(10), join_all(followers))
        .await
        .expect("the followers were stranded");
    for outcome in outcomes {
        match outcome {
            Ok(response) => assert_eq!(response.body(), "response #1"),
            Err(err) => assert_eq!(err.kind(), ErrorKind::Internal),
        }
    }
    assert_eq!(layer.len(), 0);
    let next = tokio::time::timeout(Duration::from_secs(10), service.clone().oneshot(get(uri)))
        .await
        .expect("the key stayed taken by a dead trip");
    assert!(next.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_call_is_dropped_when_every_caller_has_gone() {
    // The leader leaving first (the trip moves to a task, which the last follower aborts) and
    // the leader leaving last (it still drives the trip and drops it itself).
    for leader_leaves_first in [true, false] {
        let upstream = Held::default();
        let layer = DedupeLayer::new();
        let service = layer.layer(upstream.service(numbered));
        let uri = "https://api.example.com/items/7";

        let leader = spawn_call(&service, get(uri));
        until("the leader upstream", || upstream.calls() == 1).await;
        let followers: Vec<_> = (0..4).map(|_| spawn_call(&service, get(uri))).collect();
        until("4 followers", || layer.stats().coalesced == 4).await;

        let mut callers = followers;
        if leader_leaves_first {
            callers.insert(0, leader);
        } else {
            callers.push(leader);
        }
        for caller in callers {
            caller.abort();
            assert!(caller.await.unwrap_err().is_cancelled());
        }

        assert_eq!(layer.len(), 0, "leader first: {leader_leaves_first}");
        // An aborted task drops its future on its next turn on the runtime.
        until("the upstream future dropped", || upstream.abandoned() == 1).await;
        assert_eq!(upstream.calls(), 1);

        // The key is free: the next identical call makes its own trip.
        upstream.open();
        let response = service.clone().oneshot(get(uri)).await.unwrap();
        assert_eq!(response.body(), "response #2");
        assert_eq!(layer.len(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_error_reaches_every_caller_and_is_never_kept() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer
        .layer(upstream.service(|_: &Request<()>, _| {
            Err(Error::from_status(StatusCode::SERVICE_UNAVAILABLE))
        }));
    let uri = "https://api.example.com/items/7";

    let callers: Vec<_> = (0..20).map(|_| spawn_call(&service, get(uri))).collect();
    until("19 followers behind one leader", || {
        layer.stats().coalesced == 19 && upstream.calls() == 1
    })
    .await;
    upstream.open();

    for outcome in join_all(callers).await {
        let err = outcome.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Status);
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    }
    assert_eq!(upstream.calls(), 1);
    assert_eq!(layer.len(), 0);

    let err = service.clone().oneshot(get(uri)).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(upstream.calls(), 2, "an error is never served again");
    assert_eq!(layer.stats().coalesced, 19);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_shared_call_is_internal_for_every_waiter_and_the_next_call_works() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer.layer(upstream.service(|_: &Request<()>, n| {
        if n == 1 {
            panic!("upstream bug");
        }
        ok(format!("response #{n}"))
    }));
    let uri = "https://api.example.com/items/7";

    let callers: Vec<_> = (0..10).map(|_| spawn_call(&service, get(uri))).collect();
    until("9 followers behind one leader", || {
        layer.stats().coalesced == 9 && upstream.calls() == 1
    })
    .await;
    upstream.open();

    for outcome in join_all(callers).await {
        assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Internal);
    }
    assert_eq!(layer.len(), 0);

    let response = service.clone().oneshot(get(uri)).await.unwrap();
    assert_eq!(response.body(), "response #2");
    assert_eq!(upstream.calls(), 2);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_previous_supersedes_the_older_caller_and_cancels_its_call() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer.layer(upstream.service(numbered));
    let uri = "https://api.example.com/search?q=ru";

    let older = spawn_call(&service, with_policy(uri, DedupePolicy::CancelPrevious));
    until("the older call upstream", || upstream.calls() == 1).await;
    let newer = spawn_call(&service, with_policy(uri, DedupePolicy::CancelPrevious));

    // The older caller is answered while the gate is still closed.
    let err = older.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Superseded);
    assert_eq!(upstream.abandoned(), 1, "the older call was dropped");
    upstream.open();

    let response = newer.await.unwrap().unwrap();
    assert_eq!(response.body(), "response #2");
    assert_eq!(upstream.calls(), 2);
    assert_eq!(layer.stats().superseded, 1);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_duplicate_refuses_the_second_caller_at_once_and_accepts_after_the_first() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer.layer(upstream.service(numbered));
    let uri = "https://api.example.com/orders/submit";

    let first = spawn_call(&service, with_policy(uri, DedupePolicy::RejectDuplicate));
    until("the first call upstream", || upstream.calls() == 1).await;

    // Answered while the first is still held: nothing waits on the gate.
    let err = service
        .clone()
        .oneshot(with_policy(uri, DedupePolicy::RejectDuplicate))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Duplicate);
    assert!(!first.is_finished());
    assert_eq!(upstream.calls(), 1);
    assert_eq!(layer.stats().rejected, 1);
    upstream.open();

    assert_eq!(first.await.unwrap().unwrap().body(), "response #1");
    assert_eq!(layer.len(), 0);
    let again = service
        .clone()
        .oneshot(with_policy(uri, DedupePolicy::RejectDuplicate))
        .await
        .unwrap();
    assert_eq!(again.body(), "response #2");
    assert_eq!(layer.stats().rejected, 1);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_scope_cancels_its_hundred_pending_calls_and_drops_them() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer.layer(upstream.service(numbered));
    let scope = CancelScope::new();

    let callers: Vec<_> = (0..100)
        .map(|i| {
            let request = Request::get(format!("https://api.example.com/items/{i}"))
                .extension(scope.clone())
                .body(())
                .unwrap();
            spawn_call(&service, request)
        })
        .collect();
    until("100 calls upstream", || upstream.calls() == 100).await;
    assert_eq!(layer.len(), 100);

    scope.cancel();
    for outcome in join_all(callers).await {
        assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Cancelled);
    }
    assert_eq!(upstream.abandoned(), 100);
    assert_eq!(layer.len(), 0);
    assert_eq!(layer.stats().cancelled, 100);

    // A request started under a cancelled scope is cancelled too.
    let late = Request::get("https://api.example.com/items/0")
        .extension(scope.clone())
        .body(())
        .unwrap();
    let err = service.clone().oneshot(late).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_success_window_serves_a_success_for_its_length_and_never_an_error() {
    let upstream = Held::default();
    upstream.open();
    let layer = DedupeLayer::builder()
        .success_window(Duration::from_millis(200))
        .build()
        .unwrap();
    let service = layer.layer(upstream.service(|request: &Request<()>, n| {
        if request.uri().path() == "/fail" {
            Err(Error::from_status(StatusCode::BAD_GATEWAY))
        } else {
            ok(format!("response #{n}"))
        }
    }));
    let call = |uri: &str| service.clone().oneshot(get(uri));

    let first = call("https://api.example.com/items/7").await.unwrap();
    assert_eq!(first.body(), "response #1");

    tokio::time::advance(Duration::from_millis(100)).await;
    let windowed = call("https://api.example.com/items/7").await.unwrap();
    assert_eq!(windowed.body(), "response #1");
    assert_eq!(windowed.body().as_ptr(), first.body().as_ptr());
    assert_eq!(upstream.calls(), 1);
    assert_eq!(layer.stats().windowed, 1);

    // 300 ms after the success: the window has ended.
    tokio::time::advance(Duration::from_millis(200)).await;
    let fresh = call("https://api.example.com/items/7").await.unwrap();
    assert_eq!(fresh.body(), "response #2");
    assert_eq!(upstream.calls(), 2);
    assert_eq!(layer.stats().windowed, 1);

    // An error is never kept, not even for a moment.
    let err = call("https://api.example.com/fail").await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_GATEWAY));
    let err = call("https://api.example.com/fail").await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_GATEWAY));
    assert_eq!(upstream.calls(), 4);
    assert_eq!(layer.stats().windowed, 1);
}

#[tokio::test(start_paused = true)]
async fn expired_window_entries_do_not_fill_the_bound() {
    let upstream = Held::default();
    upstream.open();
    let layer = DedupeLayer::builder()
        .success_window(Duration::from_millis(200))
        .max_entries(2)
        .build()
        .unwrap();
    let service = layer.layer(upstream.service(numbered));
    for path in ["a", "b"] {
        let uri = format!("https://api.example.com/{path}");
        service.clone().oneshot(get(&uri)).await.unwrap();
    }

    // Both windows are over: their places in the map are free again.
    tokio::time::advance(Duration::from_millis(300)).await;
    let uri = "https://api.example.com/c";
    service.clone().oneshot(get(uri)).await.unwrap();
    assert_eq!(layer.stats().overflowed, 0);
    let windowed = service.clone().oneshot(get(uri)).await.unwrap();
    assert_eq!(windowed.body(), "response #3");
    assert_eq!(layer.stats().windowed, 1);
    assert_eq!(upstream.calls(), 3);
    assert!(layer.len() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_entries_a_new_key_passes_through_and_still_succeeds() {
    let upstream = Held::default();
    let layer = DedupeLayer::builder().max_entries(2).build().unwrap();
    let service = layer
        .layer(upstream.service(|request: &Request<()>, _| ok(request.uri().path().to_string())));

    let callers: Vec<_> = ["/a", "/b", "/c"]
        .into_iter()
        .map(|path| spawn_call(&service, get(&format!("https://api.example.com{path}"))))
        .collect();
    until("3 calls upstream", || upstream.calls() == 3).await;
    assert_eq!(layer.stats().overflowed, 1);
    assert_eq!(layer.len(), 2);
    upstream.open();

    let mut bodies: Vec<_> = join_all(callers)
        .await
        .into_iter()
        .map(|r| r.unwrap().into_body())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["/a", "/b", "/c"]);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_bodies_and_bodies_over_the_cap_are_never_deduplicated() {
    let upstream = Held::default();
    // Coalescing on for every method, so only the body decides.
    let layer = DedupeLayer::builder()
        .other_methods(DedupePolicy::Coalesce)
        .body_cap(8)
        .build()
        .unwrap();
    let service = layer.layer(upstream.service(|_: &Request<Body>, n| ok(format!("#{n}"))));
    let post = |body: Body| {
        Request::post("https://api.example.com/search")
            .body(body)
            .unwrap()
    };
    let streaming =
        || Body::replayable(http_body_util::Full::new(Bytes::from_static(b"q=1")), 1024);
    // What is sent twice at once, and the upstream calls it makes.
    type Case = (&'static str, fn() -> Body, usize);
    let cases: [Case; 3] = [
        ("at the cap (control)", || Body::from("12345678"), 1),
        ("over the cap", || Body::from("123456789"), 2),
        ("streaming", streaming, 2),
    ];
    for (what, body, expected_calls) in cases {
        let before = upstream.calls();
        let coalesced = layer.stats().coalesced;
        let callers = vec![
            spawn_call(&service, post(body())),
            spawn_call(&service, post(body())),
        ];
        until(what, || {
            upstream.calls() - before + (layer.stats().coalesced - coalesced) as usize == 2
        })
        .await;
        upstream.open();
        for outcome in join_all(callers).await {
            outcome.unwrap();
        }
        assert_eq!(upstream.calls() - before, expected_calls, "{what}");
        assert_eq!(layer.len(), 0, "{what}");
        upstream.close();
    }
}

#[tokio::test]
async fn oneshot_polls_the_inner_service_ready_before_calling_it() {
    let probe = ReadinessProbe::new(Response::new(Bytes::from_static(b"pong")));
    let layer = DedupeLayer::new();
    let response = layer
        .layer(probe.clone())
        .oneshot(get("https://api.example.com/ping"))
        .await
        .unwrap();
    assert_eq!(response.body(), "pong");
    assert_eq!(probe.calls(), 1);
    assert_eq!(layer.len(), 0);
}

#[test]
fn the_service_its_future_and_the_layer_are_send_and_sync() {
    fn assert_send<T: Send>() {}
    fn assert_sync<T: Sync>() {}
    assert_send::<Service<Body>>();
    assert_sync::<Service<Body>>();
    assert_send::<ResponseFuture<Bytes>>();
    assert_send::<DedupeLayer>();
    assert_sync::<DedupeLayer>();
    assert_send::<CancelScope>();
    assert_sync::<CancelScope>();
}

#[tokio::test(start_paused = true)]
async fn expired_window_entries_are_swept_below_the_bound() {
    use tower::{Layer, ServiceExt};
    let layer: xhttp_dedupe::DedupeLayer = xhttp_dedupe::DedupeLayer::builder()
        .success_window(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let service = layer.layer(tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, xhttp_core::Error>(http::Response::new(bytes::Bytes::from_static(b"ok")))
    }));
    for i in 0..100 {
        let request = http::Request::get(format!("https://api.example.com/items/{i}"))
            .body(())
            .unwrap();
        service.clone().oneshot(request).await.unwrap();
    }
    assert_eq!(layer.len(), 100, "each success is kept for its window");
    tokio::time::advance(std::time::Duration::from_millis(300)).await;
    let request = http::Request::get("https://api.example.com/items/new")
        .body(())
        .unwrap();
    service.oneshot(request).await.unwrap();
    assert_eq!(layer.len(), 1, "the expired ones went with the next call");
}

/// Sends `a` and `b` at once through `layer`, both held upstream until each has either
/// started a call or joined one; returns the upstream calls made and each caller's body. The
/// upstream answers with the call's number and the headers it saw, in the order it saw them,
/// so that a caller served another's response shows.
async fn pair(layer: &DedupeLayer, a: Request<()>, b: Request<()>) -> (usize, [String; 2]) {
    let upstream = Held::default();
    let service = layer.layer(upstream.service(|request: &Request<()>, n| {
        let mut seen = format!("#{n}");
        for (name, value) in request.headers() {
            seen.push_str(&format!(" {name}={}", value.to_str().unwrap()));
        }
        ok(seen)
    }));
    let coalesced = layer.stats().coalesced;
    let callers = vec![spawn_call(&service, a), spawn_call(&service, b)];
    until("both callers in", || {
        upstream.calls() + (layer.stats().coalesced - coalesced) as usize == 2
    })
    .await;
    upstream.open();
    let mut bodies = join_all(callers)
        .await
        .into_iter()
        .map(|outcome| String::from_utf8(outcome.unwrap().into_body().to_vec()).unwrap());
    let bodies = [bodies.next().unwrap(), bodies.next().unwrap()];
    assert_eq!(layer.len(), 0);
    (upstream.calls(), bodies)
}

fn get_with(headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::get("https://api.example.com/reports/7");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

/// Asserts that nothing the layer prints shows a secret.
fn assert_no_secret(printed: &str) {
    assert!(
        !printed.contains("SECRET"),
        "a secret was printed: {printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_differing_only_in_a_credential_or_tenant_header_each_make_their_own_call() {
    let layer = DedupeLayer::new();
    for name in [
        "x-api-key",
        "proxy-authorization",
        "x-auth-token",
        "x-tenant",
    ] {
        let a = get_with(&[(name, "SECRET-KEY-tenantA")]);
        let b = get_with(&[(name, "SECRET-KEY-tenantB")]);
        let (calls, [a, b]) = pair(&layer, a, b).await;
        assert_eq!(calls, 2, "{name}");
        // Each caller got the response to its own request, whichever was answered first.
        let mut bodies = [a.split_once(' ').unwrap().1, b.split_once(' ').unwrap().1];
        bodies.sort_unstable();
        assert_eq!(
            bodies,
            [
                format!("{name}=SECRET-KEY-tenantA"),
                format!("{name}=SECRET-KEY-tenantB")
            ],
        );
        assert!(
            a.ends_with("tenantA") && b.ends_with("tenantB"),
            "{a} / {b}"
        );
    }
    assert_eq!(layer.stats().coalesced, 0);
    assert_no_secret(&format!("{layer:?} {:?}", layer.stats()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_of_header_names_is_ignored_but_the_order_of_values_is_not() {
    let layer = DedupeLayer::new();
    let (calls, [a, b]) = pair(
        &layer,
        get_with(&[("x-tenant", "a"), ("accept", "application/json")]),
        get_with(&[("accept", "application/json"), ("x-tenant", "a")]),
    )
    .await;
    assert_eq!(calls, 1, "names in another order are the same request");
    assert_eq!(a, b);

    let (calls, [a, b]) = pair(
        &layer,
        get_with(&[("accept", "text/csv"), ("accept", "application/json")]),
        get_with(&[("accept", "application/json"), ("accept", "text/csv")]),
    )
    .await;
    assert_eq!(
        calls, 2,
        "values of one name in another order are another request"
    );
    assert!(
        a.ends_with("accept=text/csv accept=application/json"),
        "{a}"
    );
    assert!(
        b.ends_with("accept=application/json accept=text/csv"),
        "{b}"
    );

    let (calls, _) = pair(
        &layer,
        get_with(&[("accept", "text/csv"), ("accept", "application/json")]),
        get_with(&[("accept", "text/csv"), ("accept", "application/json")]),
    )
    .await;
    assert_eq!(
        calls, 1,
        "several values in the same order are the same request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_and_ignored_headers_do_not_split_the_key_unless_put_back() {
    let trace = |n: u8| {
        get_with(&[
            (
                "traceparent",
                &format!("00-4bf92f3577b34da6a3ce929d0e0e473{n}-00f067aa0ba902b7-01"),
            ),
            ("tracestate", &format!("vendor=v{n}")),
            ("x-request-id", &format!("req-{n}")),
            (
                "b3",
                &format!("80f198ee56343ba864fe8b2a57d3eff{n}-e457b5a2e4d86bd1-1"),
            ),
            ("sentry-trace", &format!("771a43a4192642f0b136d5159a50{n}")),
            ("x-client-sent-at", &format!("1700000000{n}")),
        ])
    };
    let layer = DedupeLayer::builder()
        .ignore_header(http::HeaderName::from_static("x-client-sent-at"))
        .build()
        .unwrap();
    let (calls, [a, b]) = pair(&layer, trace(1), trace(2)).await;
    assert_eq!(calls, 1);
    assert_eq!(a, b);
    assert_eq!(layer.stats().coalesced, 1);

    // Without the layer's own ignore, its header splits the key again.
    let (calls, _) = pair(&DedupeLayer::new(), trace(1), trace(2)).await;
    assert_eq!(calls, 2);

    // `key_header` puts a default-ignored name back.
    let layer = DedupeLayer::builder()
        .ignore_header(http::HeaderName::from_static("x-client-sent-at"))
        .key_header(http::HeaderName::from_static("x-request-id"))
        .build()
        .unwrap();
    let (calls, _) = pair(&layer, trace(1), trace(2)).await;
    assert_eq!(calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_header_with_a_sensitive_value_is_still_in_the_key() {
    let sensitive = |value: &'static str| {
        let mut value = http::HeaderValue::from_static(value);
        value.set_sensitive(true);
        let mut request = get("https://api.example.com/reports/7");
        request.headers_mut().insert("x-request-id", value);
        request
    };
    let (calls, _) = pair(
        &DedupeLayer::new(),
        sensitive("SECRET-KEY-tenantA"),
        sensitive("SECRET-KEY-tenantB"),
    )
    .await;
    assert_eq!(calls, 2);
}

#[test]
fn credential_headers_can_never_be_ignored() {
    for name in xhttp_dedupe::CREDENTIAL_HEADERS {
        let builder = DedupeLayer::builder()
            .ignore_header(http::HeaderName::from_bytes(name.as_bytes()).unwrap());
        assert_no_secret(&format!("{builder:?}"));
        let err = builder.build::<Bytes>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{name}");
        assert!(err.to_string().contains(name), "{err}");
    }
    // Spelled in any case: header names are case-insensitive.
    let err = DedupeLayer::builder()
        .ignore_header(http::HeaderName::from_static("x-api-key"))
        .ignore_header(http::HeaderName::from_bytes(b"Authorization").unwrap())
        .build::<Bytes>()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_extensions_split_by_value_and_neutral_extensions_do_not() {
    #[derive(Clone, PartialEq, Eq, Hash)]
    struct Region(&'static str);
    #[derive(Clone)]
    #[allow(dead_code)] // read by no one here: what matters is that it is carried
    struct LogLabel(&'static str);
    #[derive(Clone)]
    struct Marker;
    let layer = DedupeLayer::builder()
        .key_extension::<Region>()
        .neutral_extension::<LogLabel>()
        .key_extension_with(|_: &Marker| ())
        .build()
        .unwrap();
    let with = |region: Option<&'static str>, label: &'static str, marker: bool| {
        let mut request = get("https://api.example.com/reports/7");
        if let Some(region) = region {
            request.extensions_mut().insert(Region(region));
        }
        request.extensions_mut().insert(LogLabel(label));
        if marker {
            request.extensions_mut().insert(Marker);
        }
        request
    };
    // (a, b, upstream calls)
    let cases = [
        (
            with(Some("eu"), "a", false),
            with(Some("eu"), "b", false),
            1,
        ),
        (
            with(Some("eu"), "a", false),
            with(Some("us"), "a", false),
            2,
        ),
        (with(Some("eu"), "a", false), with(None, "a", false), 2),
        (with(None, "a", true), with(None, "b", true), 1),
        (with(None, "a", true), with(None, "a", false), 2),
    ];
    for (i, (a, b, expected)) in cases.into_iter().enumerate() {
        let (calls, _) = pair(&layer, a, b).await;
        assert_eq!(calls, expected, "case {i}");
    }
    assert_eq!(layer.stats().bypassed, 0);
    let printed = format!("{layer:?}");
    assert!(
        printed.contains("Region") && printed.contains("LogLabel"),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_an_unknown_extension_is_never_coalesced_and_is_counted() {
    #[derive(Clone)]
    struct Unknown;
    let layer = DedupeLayer::new();
    let unknown = || {
        Request::get("https://api.example.com/reports/7")
            .extension(Unknown)
            .body(())
            .unwrap()
    };
    let (calls, [a, b]) = pair(&layer, unknown(), unknown()).await;
    assert_eq!(calls, 2);
    assert_ne!(a, b);
    assert_eq!(layer.stats().bypassed, 2);
    // The extensions the layer knows still coalesce, and are not counted.
    let known = || {
        Request::get("https://api.example.com/reports/7")
            .extension(CancelScope::new())
            .extension(DedupeOverride(DedupePolicy::Coalesce))
            .extension(xhttp_core::BodyLimit(1024))
            .extension(Identity("tenant-1".into()))
            .body(())
            .unwrap()
    };
    let (calls, _) = pair(&layer, known(), known()).await;
    assert_eq!(calls, 1);
    assert_eq!(layer.stats().bypassed, 2);
    // A different body limit is another request.
    let mut smaller = known();
    smaller.extensions_mut().insert(xhttp_core::BodyLimit(8));
    let (calls, _) = pair(&layer, known(), smaller).await;
    assert_eq!(calls, 2);

    // Reject-duplicate shares no response: an unknown extension does not disarm it.
    let upstream = Held::default();
    let service = layer.layer(upstream.service(numbered));
    let submit = || {
        let mut request = with_policy(
            "https://api.example.com/forms",
            DedupePolicy::RejectDuplicate,
        );
        request.extensions_mut().insert(Unknown);
        request
    };
    let first = spawn_call(&service, submit());
    until("the first submit", || upstream.calls() == 1).await;
    let err = service.clone().oneshot(submit()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Duplicate);
    upstream.open();
    first.await.unwrap().unwrap();
    assert_eq!(upstream.calls(), 1);
}

#[test]
fn the_layers_own_extensions_cannot_be_redeclared() {
    let errors = [
        DedupeLayer::builder()
            .neutral_extension::<xhttp_core::BodyLimit>()
            .build::<Bytes>(),
        DedupeLayer::builder()
            .key_extension::<Identity>()
            .build::<Bytes>(),
        DedupeLayer::builder()
            .neutral_extension::<CancelScope>()
            .build::<Bytes>(),
    ];
    for result in errors {
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Config);
    }
}

#[tokio::test(start_paused = true)]
async fn a_success_window_over_an_hour_is_a_config_error_and_an_hour_never_panics() {
    for window in [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        xhttp_dedupe::MAX_SUCCESS_WINDOW + Duration::from_nanos(1),
    ] {
        let err = DedupeLayer::builder()
            .success_window(window)
            .build::<Bytes>()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
    let layer = DedupeLayer::builder()
        .success_window(xhttp_dedupe::MAX_SUCCESS_WINDOW)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = layer.layer(service_fn(move |_: Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { ok("kept") }
    }));
    for _ in 0..2 {
        let response = service
            .clone()
            .oneshot(get("https://api.example.com/a"))
            .await;
        assert_eq!(response.unwrap().body(), "kept");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().windowed, 1);
    tokio::time::advance(xhttp_dedupe::MAX_SUCCESS_WINDOW).await;
    service
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_follower_waits_no_longer_than_its_own_deadline() {
    let upstream = Held::default();
    // A lock timeout past the deadline: the deadline is what ends this wait.
    let layer: DedupeLayer = DedupeLayer::builder()
        .lock_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let service = layer.layer(upstream.service(numbered));
    let leader = spawn_call(&service, get("https://api.example.com/slow"));
    until("the leader's call", || upstream.calls() == 1).await;
    let mut hurried = get("https://api.example.com/slow");
    hurried
        .extensions_mut()
        .insert(xhttp_core::Deadline::after(Duration::from_secs(1)));
    let follower = spawn_call(&service, hurried);
    until("the follower", || layer.stats().coalesced == 1).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let err = follower.await.unwrap().unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(xhttp_core::TimeoutScope::Total)
    );
    assert!(!leader.is_finished());
    upstream.open();
    assert_eq!(leader.await.unwrap().unwrap().body(), "response #1");
    assert_eq!(upstream.calls(), 1);
}

/// An upstream whose first call waits for `gate` (forever if it is never opened) while every
/// later call answers at once; each answer names its call's number.
fn first_held(gate: &watch::Sender<bool>, calls: &Arc<AtomicUsize>) -> Upstream<()> {
    let (gate, calls) = (gate.clone(), calls.clone());
    Upstream::new(service_fn(move |_: Request<()>| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut open = gate.subscribe();
        async move {
            if n == 1 {
                let _ = open.wait_for(|open| *open).await;
            }
            ok(format!("response #{n}"))
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn followers_of_a_hung_trip_give_up_at_exactly_the_lock_timeout_and_send_their_own() {
    let (gate, calls) = (watch::Sender::new(false), Arc::new(AtomicUsize::new(0)));
    let layer = DedupeLayer::new();
    let service = layer.layer(first_held(&gate, &calls));
    let start = tokio::time::Instant::now();
    let leader = spawn_call(&service, get("https://api.example.com/hung"));
    until("the leader's call", || calls.load(Ordering::SeqCst) == 1).await;
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let call = service.clone().oneshot(get("https://api.example.com/hung"));
            tokio::spawn(async move { (call.await, start.elapsed()) })
        })
        .collect();
    until("three followers", || layer.stats().coalesced == 3).await;

    // Just before the limit nobody has given up.
    tokio::time::advance(xhttp_dedupe::DEFAULT_LOCK_TIMEOUT - Duration::from_millis(1)).await;
    until("the followers to settle", || true).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().lock_timeouts, 0);

    let mut own = Vec::new();
    for follower in followers {
        let (outcome, waited) = follower.await.unwrap();
        assert_eq!(
            waited,
            Duration::from_secs(1),
            "gave up at exactly the limit"
        );
        own.push(outcome.unwrap().into_body());
    }
    own.sort();
    assert_eq!(own, ["response #2", "response #3", "response #4"]);
    assert_eq!(calls.load(Ordering::SeqCst), 4, "one own call per follower");
    let stats = layer.stats();
    assert_eq!((stats.coalesced, stats.lock_timeouts), (3, 3));
    // The leader's trip was never cancelled: it answers when its upstream does.
    assert!(!leader.is_finished());
    gate.send_replace(true);
    assert_eq!(leader.await.unwrap().unwrap().body(), "response #1");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert!(layer.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_trip_still_serves_a_follower_that_stays_while_one_that_gave_up_succeeds_too() {
    let (gate, calls) = (watch::Sender::new(false), Arc::new(AtomicUsize::new(0)));
    let layer: DedupeLayer = DedupeLayer::builder()
        .lock_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let service = layer.layer(first_held(&gate, &calls));
    let leader = spawn_call(&service, get("https://api.example.com/slow"));
    until("the leader's call", || calls.load(Ordering::SeqCst) == 1).await;
    let early = spawn_call(&service, get("https://api.example.com/slow"));
    until("the early follower", || layer.stats().coalesced == 1).await;
    tokio::time::advance(Duration::from_millis(300)).await;
    let late = spawn_call(&service, get("https://api.example.com/slow"));
    until("the late follower", || layer.stats().coalesced == 2).await;

    // 500 ms after it joined, the early follower sends its own request and is answered.
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(early.await.unwrap().unwrap().body(), "response #2");
    assert_eq!(layer.stats().lock_timeouts, 1);
    assert!(!late.is_finished());

    // The leader's trip answers before the late follower's limit: it shares the leader's.
    tokio::time::advance(Duration::from_millis(100)).await;
    gate.send_replace(true);
    assert_eq!(leader.await.unwrap().unwrap().body(), "response #1");
    assert_eq!(late.await.unwrap().unwrap().body(), "response #1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(layer.stats().lock_timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_gave_up_keeps_its_own_deadline_on_its_own_request() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    // Every call hangs: the follower's own request too.
    let upstream = Upstream::new(service_fn(move |_: Request<()>| {
        counted.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Outcome>()
    }));
    let layer = DedupeLayer::new();
    let service = layer.layer(upstream);
    let _leader = spawn_call(&service, get("https://api.example.com/hung"));
    until("the leader's call", || calls.load(Ordering::SeqCst) == 1).await;
    let mut follower = get("https://api.example.com/hung");
    follower
        .extensions_mut()
        .insert(xhttp_core::Deadline::after(Duration::from_secs(3)));
    let start = tokio::time::Instant::now();
    let err = service.clone().oneshot(follower).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(xhttp_core::TimeoutScope::Total)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "its own request was sent at 1 s"
    );
    assert_eq!(layer.stats().lock_timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_lock_timeout_of_duration_max_never_panics_and_waits_for_the_trip() {
    let (gate, calls) = (watch::Sender::new(false), Arc::new(AtomicUsize::new(0)));
    let layer: DedupeLayer = DedupeLayer::builder()
        .lock_timeout(Duration::MAX)
        .build()
        .unwrap();
    let service = layer.layer(first_held(&gate, &calls));
    let leader = spawn_call(&service, get("https://api.example.com/slow"));
    until("the leader's call", || calls.load(Ordering::SeqCst) == 1).await;
    let follower = spawn_call(&service, get("https://api.example.com/slow"));
    until("the follower", || layer.stats().coalesced == 1).await;
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    assert!(!follower.is_finished());
    gate.send_replace(true);
    assert_eq!(leader.await.unwrap().unwrap().body(), "response #1");
    assert_eq!(follower.await.unwrap().unwrap().body(), "response #1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().lock_timeouts, 0);
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_gives_up_polls_its_own_clone_ready_before_calling_it() {
    // The probe refuses a call made without `poll_ready`; its first answer never comes.
    let probe = ReadinessProbe::new(());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let upstream = ServiceExt::<Request<()>>::and_then(probe.clone(), move |()| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n == 1 {
                std::future::pending::<()>().await;
            }
            Ok::<_, tower::BoxError>(Response::new(Bytes::from(format!("response #{n}"))))
        }
    });
    let layer = DedupeLayer::new();
    let service = layer.layer(upstream);
    let _leader = tokio::spawn(service.clone().oneshot(get("https://api.example.com/x")));
    until("the leader's call", || calls.load(Ordering::SeqCst) == 1).await;
    let follower = service.clone().oneshot(get("https://api.example.com/x"));
    assert_eq!(follower.await.unwrap().body(), "response #2");
    assert_eq!(probe.calls(), 2, "both calls came after poll_ready");
    assert_eq!(layer.stats().lock_timeouts, 1);
}

/// A plain `service_fn` over `Full<Bytes>`, the usual hyper client body, failing with
/// `std::io::Error` (not xhttp's): each call is counted when it is made and held at the gate,
/// then answered with its number and the body it was sent.
fn full_upstream(
    held: &Held,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Bytes>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    let held = held.clone();
    service_fn(move |request: Request<Full<Bytes>>| {
        let n = held.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut open = held.open.subscribe();
        async move {
            let _ = open.wait_for(|open| *open).await;
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let answer = format!("#{n} {}", String::from_utf8_lossy(&body));
            Ok(Response::new(Bytes::from(answer)))
        }
    })
}

fn full(method: http::Method, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("https://api.example.com/search")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_gets_over_full_bytes_make_one_inner_call() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer.layer(full_upstream(&upstream));
    let callers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(service.clone().oneshot(full(http::Method::GET, ""))))
        .collect();
    until("one leader and one follower", || {
        upstream.calls() + layer.stats().coalesced as usize == 2
    })
    .await;
    upstream.open();
    let mut bodies = Vec::new();
    for caller in callers {
        bodies.push(caller.await.unwrap().unwrap().into_body());
    }
    assert_eq!(upstream.calls(), 1);
    assert_eq!(layer.stats().coalesced, 1);
    assert_eq!(bodies, ["#1 ", "#1 "]);
    assert_eq!(layer.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_over_full_bytes_coalesce_only_when_their_bodies_are_identical() {
    let upstream = Held::default();
    let layer = DedupeLayer::builder()
        .other_methods(DedupePolicy::Coalesce)
        .build()
        .unwrap();
    let service = layer.layer(full_upstream(&upstream));
    let bodies = [r#"{"q":"pen"}"#, r#"{"q":"ink"}"#, r#"{"q":"pen"}"#];
    let callers: Vec<_> = bodies
        .iter()
        .map(|body| tokio::spawn(service.clone().oneshot(full(http::Method::POST, body))))
        .collect();
    until("every caller in", || {
        upstream.calls() + layer.stats().coalesced as usize == 3
    })
    .await;
    upstream.open();
    let mut answers = Vec::new();
    for caller in callers {
        answers.push(caller.await.unwrap().unwrap().into_body());
    }
    assert_eq!(upstream.calls(), 2, "one trip per distinct body");
    assert_eq!(layer.stats().coalesced, 1);
    // Each caller got the answer to its own body; the two "pen" callers got one answer.
    assert!(answers[0].ends_with(br#" {"q":"pen"}"#), "{answers:?}");
    assert!(answers[1].ends_with(br#" {"q":"ink"}"#), "{answers:?}");
    assert_eq!(answers[0], answers[2]);
    assert_ne!(answers[0], answers[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_gets_with_boxed_bodies_are_never_coalesced() {
    let upstream = Held::default();
    let layer = DedupeLayer::new();
    let service = layer.layer(
        upstream.service(|_: &Request<BoxBody<Bytes, Error>>, n| ok(format!("response #{n}"))),
    );
    let boxed = || {
        let body = Full::new(Bytes::new()).map_err(|never| match never {});
        Request::get("https://api.example.com/items/7")
            .body(body.boxed())
            .unwrap()
    };
    let callers: Vec<_> = (0..2).map(|_| spawn_call(&service, boxed())).collect();
    until("both calls upstream", || upstream.calls() == 2).await;
    upstream.open();
    join_all(callers).await;
    assert_eq!(layer.stats().coalesced, 0);
    assert_eq!(layer.stats().bypassed, 2);
}
