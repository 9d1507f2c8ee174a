//! RefreshLayer over AuthLayer over in-process services (`tower::service_fn`): triggers,
//! replays, the readiness contract, and bodies that cannot be replayed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, Service, ServiceExt};
use xhttp_auth::{AuthLayer, GrantResponse, RefreshGrant, Secret, TokenManager};
use xhttp_core::{Body, Error, ErrorKind, Origin};
use xhttp_refresh::{RefreshLayer, Replayed, SkipRefresh, Triggers};

/// A grant that hands out `access-1`, `access-2`, ... and counts its calls.
#[derive(Debug, Default, Clone)]
struct Counting(Arc<AtomicUsize>);

impl RefreshGrant for Counting {
    fn request<'a>(&'a self, _: Option<&'a Secret>) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            Ok(GrantResponse {
                access_token: Secret::new(format!("access-{n}")),
                refresh_token: Some(Secret::new(format!("refresh-{n}"))),
                expires_in: None,
                received_at: tokio::time::Instant::now(),
            })
        })
    }
}

async fn manager() -> (TokenManager, Counting) {
    let grant = Counting::default();
    let manager = TokenManager::builder(grant.clone()).build();
    manager
        .set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            None,
        )
        .await
        .unwrap();
    (manager, grant)
}

fn origin() -> Origin {
    Origin::parse("https://api.example.com").unwrap()
}

/// An upstream that rejects every token but `access-<valid>` with the given response shape.
type Seen = Arc<Mutex<Vec<(String, bool)>>>;
type Upstream = tower::util::BoxCloneSyncService<Request<Body>, Response<Bytes>, Error>;

fn make_upstream<F>(reject: F) -> (Upstream, Seen)
where
    F: Fn(&str) -> Option<Response<Bytes>> + Clone + Send + Sync + 'static,
{
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let service = service_fn(move |request: Request<Body>| {
        let (reject, log) = (reject.clone(), log.clone());
        async move {
            let token = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            log.lock().unwrap().push((
                token.clone(),
                request.extensions().get::<Replayed>().is_some(),
            ));
            Ok::<_, Error>(
                reject(&token).unwrap_or_else(|| Response::new(Bytes::from_static(b"ok"))),
            )
        }
    });
    (Upstream::new(service), seen)
}

fn status(code: u16) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    response
}

fn get() -> Request<Body> {
    Request::get("https://api.example.com/v1/items")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_401_refreshes_once_and_replays_with_the_new_token() {
    let (manager, grant) = manager().await;
    let (upstream, seen) = make_upstream(|token| (token == "Bearer access-0").then(|| status(401)));
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager, [origin()]).layer(upstream));
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(grant.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("Bearer access-0".into(), false),
            ("Bearer access-1".into(), true)
        ]
    );
}

#[tokio::test]
async fn every_trigger_shape_refreshes() {
    let shapes: Vec<(&str, Response<Bytes>)> = vec![
        ("challenge on a 400", {
            let mut r = status(400);
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
            r
        }),
        ("grpc unauthenticated", {
            let mut r = status(200);
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from_static("16"));
            r
        }),
        (
            "business code 1002",
            Response::new(Bytes::from_static(
                br#"{"code":1002,"message":"token expired"}"#,
            )),
        ),
        (
            "business code as a string",
            Response::new(Bytes::from_static(br#"{"code":"409"}"#)),
        ),
        (
            "business code as a float",
            Response::new(Bytes::from_static(br#"{"code":1002.0}"#)),
        ),
        (
            "business code as a number, configured as a string",
            Response::new(Bytes::from_static(br#"{"code":409}"#)),
        ),
    ];
    for (what, rejection) in shapes {
        let (manager, grant) = manager().await;
        let (upstream, _) =
            make_upstream(move |token| (token == "Bearer access-0").then(|| rejection.clone()));
        let triggers = Triggers::default()
            .business_codes([1002])
            .business_codes(["409"]);
        let service = RefreshLayer::with_triggers(manager.clone(), triggers)
            .layer(AuthLayer::new(manager, [origin()]).layer(upstream));
        let response = service.oneshot(get()).await.unwrap();
        assert_eq!(response.body(), "ok", "{what}");
        assert_eq!(grant.0.load(Ordering::SeqCst), 1, "{what}");
    }
}

#[tokio::test]
async fn forbidden_never_refreshes_and_a_second_rejection_is_unauthorized() {
    let (manager, grant) = manager().await;
    let (upstream, _) = make_upstream(|_| Some(status(403)));
    let service = RefreshLayer::with_triggers(
        manager.clone(),
        Triggers::default().status(StatusCode::FORBIDDEN),
    )
    .layer(AuthLayer::new(manager.clone(), [origin()]).layer(upstream));
    assert_eq!(service.oneshot(get()).await.unwrap().status(), 403);
    assert_eq!(grant.0.load(Ordering::SeqCst), 0);

    let (upstream, seen) = make_upstream(|_| {
        let mut r = status(401);
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static(r#"Bearer error="invalid_token", error_description="nope""#),
        );
        Some(r)
    });
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager, [origin()]).layer(upstream));
    let err = service.oneshot(get()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(err.challenge().unwrap().contains("invalid_token"));
    // The replay's fresh token rejected once may be a revocation: one more refresh and
    // replay; rejected again, the manager holds back, and the call ends. No loop.
    assert_eq!(seen.lock().unwrap().len(), 3, "two replays at most");
    assert_eq!(grant.0.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn typed_errors_from_layers_below_trigger_too() {
    let (manager, grant) = manager().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    // As the envelope layer reports a business code, and the status layer a 401.
    let upstream = service_fn(move |request: Request<Body>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let token = request.headers()["authorization"]
            .to_str()
            .unwrap()
            .to_string();
        async move {
            match (n, token.as_str()) {
                (0, "Bearer access-0") => Err(Error::business(40009, "token expired")),
                (1, "Bearer access-1") => Ok(Response::new(Bytes::from_static(b"ok"))),
                _ => Err(Error::from_status(StatusCode::UNAUTHORIZED)),
            }
        }
    });
    let service =
        RefreshLayer::with_triggers(manager.clone(), Triggers::default().business_codes([40009]))
            .layer(AuthLayer::new(manager, [origin()]).layer(upstream));
    assert_eq!(service.oneshot(get()).await.unwrap().body(), "ok");
    assert_eq!(grant.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn skip_refresh_and_foreign_origins_pass_the_rejection_through() {
    let (manager, grant) = manager().await;
    let (upstream, seen) = make_upstream(|_| Some(status(401)));
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager, [origin()]).layer(upstream));
    let mut skip = get();
    skip.extensions_mut().insert(SkipRefresh);
    assert_eq!(service.clone().oneshot(skip).await.unwrap().status(), 401);
    let elsewhere = Request::get("https://other.example.com/")
        .body(Body::empty())
        .unwrap();
    assert_eq!(service.oneshot(elsewhere).await.unwrap().status(), 401);
    assert_eq!(grant.0.load(Ordering::SeqCst), 0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[1].0, "", "no token to another origin");
}

#[tokio::test]
async fn a_body_that_cannot_be_replayed_still_refreshes_and_returns_the_first_outcome() {
    let (manager, grant) = manager().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let upstream = service_fn(move |request: Request<BoxBody<Bytes, Error>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let token = request.headers()["authorization"]
            .to_str()
            .unwrap()
            .to_string();
        async move {
            let _ = request.into_body().collect().await;
            Ok::<_, Error>(if token == "Bearer access-0" {
                status(401)
            } else {
                status(200)
            })
        }
    });
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager.clone(), [origin()]).layer(upstream));
    let body = Full::new(Bytes::from_static(b"stream"))
        .map_err(|never| match never {})
        .boxed();
    let request = Request::post("https://api.example.com/upload")
        .body(body)
        .unwrap();
    assert_eq!(
        service.clone().oneshot(request).await.unwrap().status(),
        401
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not replayed");
    assert_eq!(
        grant.0.load(Ordering::SeqCst),
        1,
        "but refreshed for the next one"
    );
    let body = Full::new(Bytes::from_static(b"again"))
        .map_err(|never| match never {})
        .boxed();
    let request = Request::post("https://api.example.com/upload")
        .body(body)
        .unwrap();
    assert_eq!(service.oneshot(request).await.unwrap().status(), 200);
}

#[tokio::test]
async fn layers_keep_the_readiness_contract() {
    let (manager, _) = manager().await;
    let probe = xhttp_testkit::ReadinessProbe::new(Response::new(Bytes::from_static(b"ok")));
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager, [origin()]).layer(probe.clone()));
    assert_eq!(service.clone().oneshot(get()).await.unwrap().body(), "ok");
    let mut not_ready = service.clone();
    let err = not_ready.call(get()).await.unwrap_err();
    // Display prints one level; the probe's words are in the cause chain.
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(chain.contains("readiness contract"), "{chain}");
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn custom_header_and_bare_token_as_seed_001() {
    let (manager, _) = manager().await;
    let (upstream, _) = make_upstream(|_| None);
    let seen = Arc::new(Mutex::new(None));
    let log = seen.clone();
    let inner = service_fn(move |request: Request<Body>| {
        let value = request.headers().get("access_token").cloned();
        *log.lock().unwrap() = value.clone();
        let mut upstream = upstream.clone();
        async move {
            assert!(value.unwrap().is_sensitive());
            upstream.ready().await?.call(request).await
        }
    });
    let service = AuthLayer::new(manager, [origin()])
        .header(http::HeaderName::from_static("access_token"))
        .scheme("")
        .layer(inner);
    service.oneshot(get()).await.unwrap();
    assert_eq!(seen.lock().unwrap().as_ref().unwrap(), "access-0");
}

#[tokio::test(start_paused = true)]
async fn requests_wait_for_a_token_that_is_being_fetched() {
    let grant = Counting::default();
    let manager = TokenManager::builder(grant.clone()).build();
    manager
        .set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    let (upstream, seen) = make_upstream(|_| None);
    let service = AuthLayer::new(manager, [origin()]).layer(upstream);
    let calls: Vec<_> = (0..10)
        .map(|_| tokio::spawn(service.clone().oneshot(get())))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(grant.0.load(Ordering::SeqCst), 1);
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|(t, _)| t == "Bearer access-1"));
}

#[test]
fn services_and_futures_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    type Inner = tower::util::BoxCloneSyncService<Request<Body>, Response<Bytes>, Error>;
    assert_send_sync::<xhttp_auth::Auth<Inner>>();
    assert_send_sync::<xhttp_refresh::Refresh<xhttp_auth::Auth<Inner>>>();
    assert_send::<
        xhttp_auth::ResponseFuture<<Inner as Service<Request<Body>>>::Future, Response<Bytes>>,
    >();
    assert_send::<xhttp_refresh::ResponseFuture<xhttp_auth::Auth<Inner>, Body, Bytes>>();
}

#[tokio::test]
async fn a_rejection_from_an_older_session_is_session_changed_without_a_replay() {
    let (manager, grant) = manager().await;
    let release = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(tokio::sync::Notify::new());
    let seen: Seen = Arc::default();
    let upstream = Upstream::new(service_fn({
        let (release, arrived, seen) = (release.clone(), arrived.clone(), seen.clone());
        move |request: Request<Body>| {
            let (release, arrived, seen) = (release.clone(), arrived.clone(), seen.clone());
            async move {
                let token = request.headers()["authorization"]
                    .to_str()
                    .unwrap()
                    .to_string();
                seen.lock()
                    .unwrap()
                    .push((token, request.extensions().get::<Replayed>().is_some()));
                arrived.notify_one();
                release.notified().await;
                Ok::<_, Error>(status(401))
            }
        }
    }));
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager.clone(), [origin()]).layer(upstream));
    let request = Request::delete("https://api.example.com/v1/accounts/a")
        .body(Body::empty())
        .unwrap();
    let call = tokio::spawn(service.oneshot(request));
    arrived.notified().await;
    // User B logs in while user A's DELETE is on its way.
    manager
        .set_tokens(
            Secret::new("access-user-b"),
            Some(Secret::new("refresh-user-b")),
            None,
        )
        .await
        .unwrap();
    release.notify_one();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionChanged, "{err}");
    assert_eq!(grant.0.load(Ordering::SeqCst), 0, "no token call");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("Bearer access-0".to_string(), false)],
        "no replay, and never with B's token"
    );
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("access-user-b") && !shown.contains("refresh-user-b"));
}

#[tokio::test(start_paused = true)]
async fn a_streaming_put_past_its_replay_cap_refreshes_once_and_returns_its_first_401_marked() {
    let (manager, grant) = manager().await;
    let lengths = Arc::new(Mutex::new(Vec::new()));
    let log = lengths.clone();
    let upstream = service_fn(move |request: Request<Body>| {
        let log = log.clone();
        let token = request.headers()["authorization"]
            .to_str()
            .unwrap()
            .to_string();
        async move {
            let read = request.into_body().collect().await?.to_bytes().len();
            log.lock().unwrap().push(read);
            Ok::<_, Error>(if token == "Bearer access-0" {
                status(401)
            } else {
                status(200)
            })
        }
    });
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager.clone(), [origin()]).layer(upstream));
    // 128 KiB in two frames, with no size hint: the cap is passed during the first send.
    let frames =
        (0..2).map(|_| Ok::<_, Error>(http_body::Frame::data(Bytes::from(vec![7u8; 64 * 1024]))));
    let stream =
        http_body_util::StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
    let body = Body::replayable(stream, xhttp_core::body::DEFAULT_REPLAY_CAP);
    let request = Request::put("https://api.example.com/blob")
        .body(body)
        .unwrap();

    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401, "the first outcome");
    assert!(response
        .extensions()
        .get::<xhttp_core::body::NotReplayed>()
        .is_some());
    assert_eq!(
        *lengths.lock().unwrap(),
        [128 * 1024],
        "one inner call, never a replay"
    );
    assert_eq!(grant.0.load(Ordering::SeqCst), 1, "one token call");

    // The token was refreshed for the next call.
    let next = Request::put("https://api.example.com/blob")
        .body(Body::from("small"))
        .unwrap();
    assert_eq!(service.oneshot(next).await.unwrap().status(), 200);
    assert_eq!(grant.0.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_401_error_for_a_streaming_body_past_its_cap_is_returned_marked() {
    let (manager, grant) = manager().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let upstream = service_fn(move |request: Request<Body>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = request.into_body().collect().await?;
            Err::<Response<Bytes>, _>(Error::from_status(StatusCode::UNAUTHORIZED))
        }
    });
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager.clone(), [origin()]).layer(upstream));
    let frames =
        (0..2).map(|_| Ok::<_, Error>(http_body::Frame::data(Bytes::from(vec![7u8; 64 * 1024]))));
    let stream =
        http_body_util::StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
    let body = Body::replayable(stream, xhttp_core::body::DEFAULT_REPLAY_CAP);
    let request = Request::put("https://api.example.com/blob")
        .body(body)
        .unwrap();
    let err = service.oneshot(request).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(err.is_body_not_replayable());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(grant.0.load(Ordering::SeqCst), 1);
    for printed in [format!("{err}"), format!("{err:?}")] {
        assert!(!printed.contains("access-"), "{printed}");
        assert!(!printed.contains("refresh-"), "{printed}");
    }
}

/// A grant that takes 5 s to answer `access-slow`.
#[derive(Debug, Default, Clone)]
struct Slow(Arc<AtomicUsize>);

impl RefreshGrant for Slow {
    fn request<'a>(&'a self, _: Option<&'a Secret>) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(GrantResponse {
                access_token: Secret::new("access-slow"),
                refresh_token: Some(Secret::new("refresh-slow")),
                expires_in: None,
                received_at: tokio::time::Instant::now(),
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_replay_waits_for_the_refresh_no_longer_than_its_deadline_and_the_flight_goes_on() {
    let grant = Slow::default();
    let manager = TokenManager::builder(grant.clone()).build();
    manager
        .set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            None,
        )
        .await
        .unwrap();
    let (upstream, seen) = make_upstream(|token| (token == "Bearer access-0").then(|| status(401)));
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager.clone(), [origin()]).layer(upstream));

    let started = tokio::time::Instant::now();
    let mut request = get();
    request
        .extensions_mut()
        .insert(xhttp_core::Deadline::after(Duration::from_secs(1)));
    let err = service.clone().oneshot(request).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(grant.0.load(Ordering::SeqCst), 1);

    // The flight was not cancelled: a caller without a deadline gets its token, with no
    // second token call.
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(grant.0.load(Ordering::SeqCst), 1);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(seen.lock().unwrap().last().unwrap().0, "Bearer access-slow");
}

#[tokio::test(start_paused = true)]
async fn a_token_rejected_on_the_replay_is_dead_and_never_sent_again() {
    let (manager, grant) = manager().await;
    // The API rejects every token, fresh ones included.
    let (upstream, seen) = make_upstream(|_| Some(status(401)));
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager.clone(), [origin()]).layer(upstream));

    let err = service.clone().oneshot(get()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(
        grant.0.load(Ordering::SeqCst),
        2,
        "a refresh, then one more"
    );

    for _ in 0..5 {
        let _ = service.clone().oneshot(get()).await;
    }
    let sent = seen.lock().unwrap().clone();
    let with = |token: &str| sent.iter().filter(|(t, _)| t == token).count();
    assert_eq!(with("Bearer access-0"), 1, "{sent:?}");
    assert_eq!(with("Bearer access-1"), 1, "{sent:?}");
    assert_eq!(with("Bearer access-2"), 1, "{sent:?}");
    for n in 3..=grant.0.load(Ordering::SeqCst) {
        assert!(with(&format!("Bearer access-{n}")) <= 1, "{sent:?}");
    }
}

/// What [`Unshared`] saw of each call: the token, the body, and whether it was a replay.
type SeenBodies = Arc<Mutex<Vec<(String, Bytes, bool)>>>;

/// A service that is `Send` but not `Sync` (the `Cell`), over `Full<Bytes>`, failing with
/// `std::io::Error` (not xhttp's): it rejects `access-0` with a 401.
#[derive(Clone, Default)]
struct Unshared {
    /// Calls made through this clone.
    calls: std::cell::Cell<usize>,
    seen: SeenBodies,
}

impl Service<Request<Full<Bytes>>> for Unshared {
    type Response = Response<Bytes>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Response<Bytes>, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        self.calls.set(self.calls.get() + 1);
        let seen = self.seen.clone();
        Box::pin(async move {
            let token = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let replayed = request.extensions().get::<Replayed>().is_some();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push((token.clone(), body, replayed));
            if token == "Bearer access-0" {
                return Ok(status(401));
            }
            Ok(Response::new(Bytes::from_static(b"ok")))
        })
    }
}

/// `<T as NotSync<_>>::check()` compiles only when `T` is not `Sync`: for a `Sync` type both
/// impls apply and the call is ambiguous.
trait NotSync<Marker> {
    fn check() {}
}

impl<T: ?Sized> NotSync<()> for T {}

struct IsSync;

impl<T: ?Sized + Sync> NotSync<IsSync> for T {}

#[tokio::test]
async fn a_send_but_not_sync_service_over_full_bytes_is_replayed_after_a_401() {
    <Unshared as NotSync<_>>::check();
    let (manager, grant) = manager().await;
    let upstream = Unshared::default();
    let seen = upstream.seen.clone();
    let mut service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager, [origin()]).layer(upstream));
    let body = Bytes::from_static(br#"{"name":"pen"}"#);
    let request = Request::post("https://api.example.com/v1/items")
        .body(Full::new(body.clone()))
        .unwrap();
    let future = service.ready().await.unwrap().call(request);
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&future);
    let response = future.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(grant.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("Bearer access-0".into(), body.clone(), false),
            ("Bearer access-1".into(), body, true)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_replay_whose_fresh_token_was_revoked_replays_once_more_and_succeeds() {
    let (manager, grant) = manager().await;
    // access-0 expired; access-1, the first refresh's token, is revoked on its first use;
    // access-2 is good.
    let (upstream, seen) = make_upstream(|token| (token != "Bearer access-2").then(|| status(401)));
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager.clone(), [origin()]).layer(upstream));
    let response = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(grant.0.load(Ordering::SeqCst), 2);
    let tokens: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(
        tokens,
        ["Bearer access-0", "Bearer access-1", "Bearer access-2"]
    );
    // The next call sends the good token and needs no refresh.
    assert_eq!(service.oneshot(get()).await.unwrap().status(), 200);
    assert_eq!(grant.0.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_bare_name_code_pointer_reads_a_top_level_member() {
    for pointer in ["errno", "/errno"] {
        let (manager, grant) = manager().await;
        let (upstream, _) = make_upstream(|token| {
            (token == "Bearer access-0")
                .then(|| Response::new(Bytes::from_static(br#"{"errno":40009}"#)))
        });
        let triggers = Triggers::default()
            .business_codes([40009])
            .code_pointer(pointer);
        let service = RefreshLayer::with_triggers(manager.clone(), triggers)
            .layer(AuthLayer::new(manager, [origin()]).layer(upstream));
        let response = service.oneshot(get()).await.unwrap();
        assert_eq!(response.body(), "ok", "{pointer}");
        assert_eq!(grant.0.load(Ordering::SeqCst), 1, "{pointer}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_that_meets_revocations_in_a_row_replays_up_to_three_times() {
    // Tokens 1 and 2 were accepted by other calls, then revoked while this call held them;
    // token 3 is good. Each rejection of an accepted token is a revocation, not churn.
    let (manager, grant) = manager().await;
    let accepted = manager.clone();
    let (upstream, seen) = make_upstream(move |token| {
        let revoked = ["Bearer access-1", "Bearer access-2"].contains(&token);
        if revoked {
            let generation = token
                .trim_start_matches("Bearer access-")
                .parse::<u64>()
                .unwrap();
            // Generation n + 1 carries access-n (access-0 is the set_tokens of generation 1).
            accepted.note_accepted(generation + 1);
        }
        (token != "Bearer access-3").then(|| status(401))
    });
    let service = RefreshLayer::new(manager.clone())
        .layer(AuthLayer::new(manager.clone(), [origin()]).layer(upstream));
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    let tokens: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(
        tokens,
        [
            "Bearer access-0",
            "Bearer access-1",
            "Bearer access-2",
            "Bearer access-3"
        ]
    );
    assert_eq!(grant.0.load(Ordering::SeqCst), 3);
}
