//! xhttp layers under a real tonic client (`HealthClient`) over a `tonic::transport::Channel`,
//! against a real tonic server on loopback (see `support`).
//!
//! `RefreshLayer` and `RetryLayer` need a request body they can replay, which
//! `tonic::body::Body` is not: `ReplayableLayer` above them makes it one (up to a cap), and
//! `IntoTonicBodyLayer` hands it back to the channel below them.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceBuilder};
use xhttp_auth::{AuthLayer, Secret, TokenManager};
use xhttp_core::ErrorKind;
use xhttp_refresh::RefreshLayer;
use xhttp_retry::{DeadlineLayer, RetryLayer, RetryPolicy};
use xhttp_tonic::{
    code_for, status_for, xhttp_error, IntoTonicBodyLayer, RefreshOnTrailersLayer, ReplayableLayer,
    WatchTrailers,
};

use support::{BookGrant, TestServer};

type ChannelStack = BoxCloneService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    xhttp_core::Error,
>;

/// `RefreshLayer` over `RefreshOnTrailersLayer` over `AuthLayer` over a channel to `server`,
/// the body made replayable above them.
async fn refreshing(manager: &TokenManager, server: &TestServer) -> ChannelStack {
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(ReplayableLayer::new())
            .layer(RefreshLayer::new(manager.clone()))
            .map_response(
                |response: http::Response<WatchTrailers<tonic::body::Body>>| {
                    response.map(tonic::body::Body::new)
                },
            )
            .layer(RefreshOnTrailersLayer::new(manager.clone()))
            .layer(auth(manager, server))
            .layer(IntoTonicBodyLayer)
            .service(server.channel().await),
    )
}

fn auth(manager: &TokenManager, server: &TestServer) -> AuthLayer {
    AuthLayer::new(manager.clone(), [server.origin()]).allow_insecure_loopback(true)
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// A manager over the server's grant, holding `token` (which the book may call valid or
/// expired) as its current access token.
async fn manager_with(grant: &BookGrant, token: &str) -> TokenManager {
    let manager = TokenManager::builder(grant.clone()).build();
    manager
        .set_tokens(Secret::new(token), None, Some(Duration::from_secs(3600)))
        .await
        .expect("set tokens");
    manager
}

#[tokio::test]
async fn a_valid_token_reaches_the_server_when_the_client_writes_the_channels_origin() {
    let server = TestServer::start().await;
    let grant = BookGrant::new(&server);
    let manager = TokenManager::builder(grant.clone()).build();
    let stack = auth(&manager, &server).layer(server.channel().await);
    let mut client = HealthClient::with_origin(stack, server.uri());

    let response = client.check(check()).await.expect("check");

    assert_eq!(response.get_ref().status, ServingStatus::Serving as i32);
    assert_eq!(server.authorizations(), [bearer("tok-1-fresh")]);
    assert_eq!((server.calls(), server.rejections()), (1, 0));
    assert_eq!(grant.calls(), 1);
}

// Issue 12 item 1: tonic's `HealthClient::new` sends path-only URIs
// (`/grpc.health.v1.Health/Check`), which no origin matches. A layer not bound to the channel
// refuses them with a typed error instead of sending the call without its token.
#[tokio::test]
async fn a_layer_not_bound_to_the_channel_refuses_a_path_only_call_instead_of_skipping() {
    let server = TestServer::start().await;
    let grant = BookGrant::new(&server);
    let manager = TokenManager::builder(grant.clone()).build();
    let stack = auth(&manager, &server).layer(server.channel().await);
    let status = HealthClient::new(stack)
        .check(check())
        .await
        .expect_err("refused before sending");
    let err = xhttp_tonic::xhttp_error(&status).expect("the xhttp error is the source");
    assert_eq!(err.kind(), xhttp_core::ErrorKind::InvalidRequest, "{err}");
    assert_eq!(xhttp_tonic::code_for(err), Code::InvalidArgument);
    assert_eq!(server.calls(), 0, "nothing reached the server");
    assert_eq!(grant.calls(), 0);
}

#[tokio::test]
async fn a_client_made_with_new_gets_the_token_of_a_layer_bound_to_the_channel() {
    let server = TestServer::start().await;
    let grant = BookGrant::new(&server);
    let manager = TokenManager::builder(grant.clone()).build();
    let layer = AuthLayer::for_channel(manager, server.origin()).allow_insecure_loopback(true);
    let stack = layer.layer(server.channel().await);

    let response = HealthClient::new(stack).check(check()).await;

    assert_eq!(
        response.expect("check").get_ref().status,
        ServingStatus::Serving as i32
    );
    assert_eq!(server.authorizations(), [bearer("tok-1-fresh")]);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_call_replayed() {
    let server = TestServer::start().await;
    server.book().expire("tok-old-expired");
    let grant = BookGrant::new(&server);
    let manager = manager_with(&grant, "tok-old-expired").await;
    let stack = refreshing(&manager, &server).await;
    let mut client = HealthClient::with_origin(stack, server.uri());

    let response = client.check(check()).await.expect("check after refresh");

    assert_eq!(response.get_ref().status, ServingStatus::Serving as i32);
    assert_eq!(
        server.authorizations(),
        [bearer("tok-old-expired"), bearer("tok-1-fresh")]
    );
    assert_eq!((server.calls(), server.rejections()), (2, 1));
    assert_eq!(grant.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_after_expiry_cost_one_token_call() {
    let server = TestServer::start().await;
    server.book().expire("tok-old-expired");
    let grant = BookGrant::new(&server);
    let manager = manager_with(&grant, "tok-old-expired").await;
    let stack = refreshing(&manager, &server).await;
    let client = HealthClient::with_origin(stack, server.uri());

    let outcomes = join_all((0..1000).map(|_| {
        let mut client = client.clone();
        async move { client.check(check()).await }
    }))
    .await;

    let ok = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let failed: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(ok, 1000, "failures: {:?}", failed.first());
    assert_eq!(grant.calls(), 1);
    // Each call was sent at most twice: once with the old token, once with the new one.
    let fresh = server
        .authorizations()
        .iter()
        .filter(|a| **a == bearer("tok-1-fresh"))
        .count();
    assert_eq!(fresh, 1000);
    assert_eq!(server.calls(), 1000 + server.rejections());
}

// gap: issue 12 item 4 (the part tonic decides). Under a generated client, an error of the
// stack reaches the caller as `Code::Unknown`, with the xhttp error as the status's source;
// `xhttp_error` + `code_for` read the code it means, and a stack that maps its errors with
// `status_for` at the top hands the caller `Unauthenticated` directly.
#[tokio::test]
async fn a_dead_session_is_unauthenticated_once_the_stack_maps_its_errors() {
    let server = TestServer::start().await;
    server.book().expire("tok-old-expired");
    let grant = BookGrant::new(&server);
    grant.kill();
    let manager = manager_with(&grant, "tok-old-expired").await;
    let unmapped = refreshing(&manager, &server).await;
    let mapped = ServiceBuilder::new()
        .map_err(|err| status_for(&err))
        .service(unmapped.clone());

    let status = HealthClient::with_origin(unmapped, server.uri())
        .check(check())
        .await
        .expect_err("the session is dead");

    assert_eq!(status.code(), Code::Unknown, "tonic's own conversion");
    let err = xhttp_error(&status).expect("the xhttp error is the source");
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(code_for(err), Code::Unauthenticated);
    assert_eq!((server.calls(), server.rejections()), (1, 1));
    assert_eq!(grant.calls(), 1);

    let status = HealthClient::with_origin(mapped, server.uri())
        .check(check())
        .await
        .expect_err("the session is still dead");

    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        xhttp_error(&status).map(|err| err.kind()),
        Some(ErrorKind::SessionExpired)
    );
    let shown = format!("{} {status:?}", status.message());
    assert!(!shown.contains("tok-old-expired"), "{shown}");
    // A dead session fails at once: no trip to the server, no token call.
    assert_eq!((server.calls(), grant.calls()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_session_fails_every_concurrent_caller_with_unauthenticated_and_one_event() {
    let server = TestServer::start().await;
    server.book().expire("tok-old-expired");
    let grant = BookGrant::new(&server);
    grant.kill();
    let events = Arc::new(AtomicUsize::new(0));
    let counter = events.clone();
    let manager = TokenManager::builder(grant.clone())
        .on_session_expired(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    manager
        .set_tokens(
            Secret::new("tok-old-expired"),
            None,
            Some(Duration::from_secs(3600)),
        )
        .await
        .expect("set tokens");
    let stack = ServiceBuilder::new()
        .map_err(|err| status_for(&err))
        .service(refreshing(&manager, &server).await);
    let client = HealthClient::with_origin(stack, server.uri());

    let outcomes = join_all((0..200).map(|_| {
        let mut client = client.clone();
        async move { client.check(check()).await }
    }))
    .await;

    let codes: Vec<Code> = outcomes
        .iter()
        .map(|o| o.as_ref().map_or_else(|s| s.code(), |_| Code::Ok))
        .collect();
    assert!(
        codes.iter().all(|code| *code == Code::Unauthenticated),
        "{codes:?}"
    );
    assert_eq!(grant.calls(), 1);
    assert_eq!(events.load(Ordering::SeqCst), 1);
    assert_eq!(server.calls(), server.rejections(), "no call got through");
}

#[tokio::test]
async fn unauthenticated_in_the_trailers_of_a_stream_refreshes_for_the_next_call() {
    let server = TestServer::start().await;
    server.book().issue("tok-a");
    server.reject_watch_in_trailers(true);
    let grant = BookGrant::new(&server);
    let manager = manager_with(&grant, "tok-a").await;
    let stack = ServiceBuilder::new()
        .map_err(|err| status_for(&err))
        .service(refreshing(&manager, &server).await);
    let mut client = HealthClient::with_origin(stack, server.uri());

    let mut stream = client.watch(check()).await.expect("watch").into_inner();
    let first = stream.message().await.expect("first message");
    assert_eq!(first.map(|m| m.status), Some(ServingStatus::Serving as i32));
    let status = stream.message().await.expect_err("trailers carry 16");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(server.trailer_rejections(), 1);

    client.check(check()).await.expect("next call");
    assert_eq!(grant.calls(), 1, "the trailers' 16 refreshed the token");
    assert_eq!(
        server.authorizations(),
        [bearer("tok-a"), bearer("tok-1-fresh")]
    );
}

#[tokio::test]
async fn unavailable_is_retried_for_a_call_with_an_idempotency_key() {
    let server = TestServer::start().await;
    server.book().issue("tok-a");
    server.fail_next([Code::Unavailable]);
    let grant = BookGrant::new(&server);
    let manager = manager_with(&grant, "tok-a").await;
    let stack = ServiceBuilder::new()
        .map_err(|err| status_for(&err))
        .layer(ReplayableLayer::new())
        .layer(RetryLayer::new(RetryPolicy::default()))
        .layer(auth(&manager, &server))
        .layer(IntoTonicBodyLayer)
        .service(server.channel().await);
    let mut client = HealthClient::with_origin(stack, server.uri());
    let mut request = tonic::Request::new(check());
    request
        .metadata_mut()
        .insert("idempotency-key", "check-1".parse().expect("ascii"));

    let response = client.check(request).await;

    assert_eq!(
        response
            .map(|r| r.into_inner().status)
            .map_err(|s| s.code()),
        Ok(ServingStatus::Serving as i32)
    );
    assert_eq!(server.calls(), 2);
}

#[tokio::test]
async fn the_deadline_is_sent_as_grpc_timeout() {
    let server = TestServer::start().await;
    server.book().issue("tok-a");
    let grant = BookGrant::new(&server);
    let manager = manager_with(&grant, "tok-a").await;
    let stack = ServiceBuilder::new()
        .map_err(|err| status_for(&err))
        .layer(DeadlineLayer::new(Duration::from_secs(5)))
        .layer(auth(&manager, &server))
        .service(server.channel().await);
    let mut client = HealthClient::with_origin(stack, server.uri());

    client.check(check()).await.expect("check");

    let sent = server.seen()[0].grpc_timeout.clone();
    let millis: Option<u64> = sent
        .as_deref()
        .and_then(|t| t.strip_suffix('m'))
        .and_then(|t| t.parse().ok());
    assert!(
        millis.is_some_and(|ms| ms > 4000 && ms <= 5000),
        "grpc-timeout: {sent:?}"
    );
}

/// The test server records `grpc-timeout` when a caller sends one (here tonic itself, from
/// the request's own timeout), so the deadline test above can trust what it sees.
#[tokio::test]
async fn the_server_records_the_grpc_timeout_tonic_sends() {
    let server = TestServer::start().await;
    server.book().issue("tok-a");
    let grant = BookGrant::new(&server);
    let manager = manager_with(&grant, "tok-a").await;
    let stack = auth(&manager, &server).layer(server.channel().await);
    let mut client = HealthClient::with_origin(stack, server.uri());
    let mut request = tonic::Request::new(check());
    request.set_timeout(Duration::from_secs(3));

    client.check(request).await.expect("check");

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].grpc_timeout.is_some(), "{seen:?}");
    assert_eq!(seen[0].authorization, bearer("tok-a"));
}
