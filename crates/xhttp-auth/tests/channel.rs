//! An auth layer bound to one channel: path-only URIs get the token, any other origin is a
//! typed error, and a layer not bound to a channel never passes a path-only URI on silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::{service_fn, Layer, ServiceExt};
use xhttp_auth::{AuthLayer, GrantResponse, RefreshGrant, Secret, TokenManager};
use xhttp_core::{Error, ErrorKind, Origin};

const SECRET: &str = "SECRET-channel-token-77c1";

#[derive(Debug)]
struct NoRefresh;

impl RefreshGrant for NoRefresh {
    fn request<'a>(&'a self, _: Option<&'a Secret>) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        Box::pin(async { Err(Error::new(ErrorKind::SessionExpired)) })
    }
}

async fn manager() -> TokenManager {
    let manager = TokenManager::builder(NoRefresh).build();
    manager
        .set_tokens(Secret::new(SECRET), None, None)
        .await
        .unwrap();
    manager
}

type Seen = Arc<Mutex<Vec<Option<String>>>>;

fn upstream(
    seen: &Seen,
) -> impl tower::Service<Request<()>, Response = Response<Bytes>, Error = Error, Future = impl Send>
       + Clone {
    let seen = seen.clone();
    service_fn(move |request: Request<()>| {
        let seen = seen.clone();
        async move {
            let token = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push(token);
            Ok::<_, Error>(Response::new(Bytes::new()))
        }
    })
}

fn channel_origin() -> Origin {
    Origin::parse("https://grpc.example.com").unwrap()
}

#[tokio::test]
async fn a_path_only_uri_on_a_channel_layer_gets_the_token() {
    let seen = Seen::default();
    let service = AuthLayer::for_channel(manager().await, channel_origin()).layer(upstream(&seen));
    let request = Request::post("/grpc.health.v1.Health/Check")
        .body(())
        .unwrap();
    service.oneshot(request).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [Some(format!("Bearer {SECRET}"))]);
}

#[tokio::test]
async fn another_origin_on_a_channel_layer_is_an_error_and_nothing_is_sent() {
    let seen = Seen::default();
    let service = AuthLayer::for_channel(manager().await, channel_origin()).layer(upstream(&seen));
    // The channel's own origin, written out, is fine.
    let same = Request::post("https://grpc.example.com/pkg.Svc/Call")
        .body(())
        .unwrap();
    service.clone().oneshot(same).await.unwrap();
    let other = Request::post("https://elsewhere.example.com/pkg.Svc/Call")
        .body(())
        .unwrap();
    let err = service.oneshot(other).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the other request was never sent"
    );
    assert!(!format!("{err} {err:?}").contains(SECRET));
}

#[tokio::test]
async fn a_path_only_uri_on_a_layer_not_bound_to_a_channel_is_an_error_not_a_silent_skip() {
    let seen = Seen::default();
    let service = AuthLayer::new(manager().await, [channel_origin()]).layer(upstream(&seen));
    let request = Request::post("/grpc.health.v1.Health/Check")
        .body(())
        .unwrap();
    let err = service.oneshot(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert!(err.to_string().contains("for_channel"), "{err}");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_plain_http_channel_to_a_non_loopback_host_is_refused() {
    let seen = Seen::default();
    let origin = Origin::parse("http://grpc.example.com").unwrap();
    let service = AuthLayer::for_channel(manager().await, origin)
        .allow_insecure_loopback(true)
        .layer(upstream(&seen));
    let request = Request::post("/pkg.Svc/Call").body(()).unwrap();
    let err = service.oneshot(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsecureTransport);
    assert!(seen.lock().unwrap().is_empty());
}
