//! Where the hooks of an axios wrapper go in a tower stack (documentation only).
//!
//! vue-vben-admin's `VAxios` exposes hooks around one axios call. In tower each
//! becomes a layer, and where it sits in the `ServiceBuilder` says what it sees: layers
//! listed first are outermost, so they see the request first and the response last.
//!
//! | VAxios hook | tower |
//! |---|---|
//! | `beforeRequestHook` | `ServiceBuilder::map_request` |
//! | `transformRequestData` | `map_request` mapping the body |
//! | `requestCatchHook` | `map_err` below the layers whose errors it handles |
//! | request interceptor | a reusable `MapRequestLayer` |
//! | response interceptor | `map_response` |
//! | response interceptor catch | `map_err` / `and_then` |
//! | anything with state | a layer of your own ([`ReportLayer`](crate::ReportLayer) for notices and the error log) |
//!
//! # `beforeRequestHook` → `map_request`
//!
//! ```
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     // Join the API prefix and add the cache-busting `_t` of a GET.
//!     .map_request(|mut request: Request<()>| {
//!         let url = format!("https://api.example.com/api{}?_t=1", request.uri().path());
//!         *request.uri_mut() = url.parse().unwrap();
//!         request
//!     })
//!     .service(service_fn(|request: Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(Response::new(request.uri().to_string()))
//!     }));
//! let response = service.oneshot(Request::get("/users").body(()).unwrap()).await.unwrap();
//! assert_eq!(response.body(), "https://api.example.com/api/users?_t=1");
//! # });
//! ```
//!
//! # `transformRequestData` → `map_request` on the body
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     .map_request(|request: Request<serde_json::Value>| {
//!         request.map(|json| Bytes::from(json.to_string()))
//!     })
//!     .service(service_fn(|request: Request<Bytes>| async move {
//!         Ok::<_, std::convert::Infallible>(Response::new(request.into_body()))
//!     }));
//! let request = Request::new(serde_json::json!({ "name": "Ann" }));
//! assert_eq!(service.oneshot(request).await.unwrap().body(), r#"{"name":"Ann"}"#);
//! # });
//! ```
//!
//! # `requestCatchHook` → `map_err` below
//!
//! ```
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use xhttp_core::{Error, ErrorKind};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     // Sees the transport's errors only: placed right above it.
//!     .map_err(|err: std::io::Error| Error::transport(err).with_never_sent())
//!     .service(service_fn(|_request: Request<()>| async {
//!         Err::<Response<()>, _>(std::io::Error::other("connection refused"))
//!     }));
//! let err = service.oneshot(Request::new(())).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Transport);
//! assert!(err.is_never_sent());
//! # });
//! ```
//!
//! # Request interceptor → a `map_request` layer
//!
//! ```
//! use http::{HeaderValue, Request, Response};
//! use tower::util::MapRequestLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // A layer value, added to as many stacks as need it.
//! let tenant = MapRequestLayer::new(|mut request: Request<()>| {
//!     request.headers_mut().insert("x-tenant", HeaderValue::from_static("acme"));
//!     request
//! });
//! let service = ServiceBuilder::new()
//!     .layer(tenant.clone())
//!     .service(service_fn(|request: Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(Response::new(request.headers()["x-tenant"].clone()))
//!     }));
//! assert_eq!(service.oneshot(Request::new(())).await.unwrap().body(), "acme");
//! # });
//! ```
//!
//! # Response interceptor → `map_response`
//!
//! ```
//! use http::{Request, Response};
//! use serde_json::{json, Value};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     // Unwrap vben's envelope `{code, message, result}`.
//!     .map_response(|response: Response<Value>| response.map(|mut body| body["result"].take()))
//!     .service(service_fn(|_request: Request<()>| async {
//!         let body = json!({ "code": 0, "message": "ok", "result": [1, 2] });
//!         Ok::<_, std::convert::Infallible>(Response::new(body))
//!     }));
//! assert_eq!(*service.oneshot(Request::new(())).await.unwrap().body(), json!([1, 2]));
//! # });
//! ```
//!
//! # Response interceptor catch → `and_then` / `map_err`
//!
//! ```
//! use http::{Request, Response};
//! use serde_json::{json, Value};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use xhttp_core::{Error, ErrorKind};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     // Errors of every kind, including the one made just below, get the caller's context.
//!     .map_err(|err: Error| err.with_attempts(1))
//!     // A failure code in a success envelope becomes an error.
//!     .and_then(|response: Response<Value>| async move {
//!         match response.body()["code"].as_i64() {
//!             Some(0) => Ok(response),
//!             code => Err(Error::business(code.unwrap_or(-1), "rejected")),
//!         }
//!     })
//!     .service(service_fn(|_request: Request<()>| async {
//!         Ok::<_, Error>(Response::new(json!({ "code": 40009, "message": "token expired" })))
//!     }));
//! let err = service.oneshot(Request::new(())).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Business);
//! assert_eq!(err.attempts(), 1);
//! # });
//! ```
//!
//! # Anything stateful → a layer of your own
//!
//! A hook that remembers (a count, a pending map, a refresh in flight) becomes a `Layer` whose
//! state lives in one `Arc` shared by its clones, as every xhttp layer does:
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::task::{Context, Poll};
//! use http::{Request, Response};
//! use tower::{service_fn, Layer, Service, ServiceExt};
//!
//! #[derive(Clone, Default)]
//! struct CountLayer(Arc<AtomicUsize>);
//!
//! #[derive(Clone)]
//! struct Count<S> { inner: S, count: Arc<AtomicUsize> }
//!
//! impl<S> Layer<S> for CountLayer {
//!     type Service = Count<S>;
//!     fn layer(&self, inner: S) -> Count<S> { Count { inner, count: self.0.clone() } }
//! }
//!
//! impl<S: Service<R>, R> Service<R> for Count<S> {
//!     type Response = S::Response;
//!     type Error = S::Error;
//!     type Future = S::Future;
//!     fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
//!         self.inner.poll_ready(cx)
//!     }
//!     fn call(&mut self, request: R) -> S::Future {
//!         self.count.fetch_add(1, Ordering::Relaxed);
//!         self.inner.call(request)
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let layer = CountLayer::default();
//! let service = layer.layer(service_fn(|_request: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(()))
//! }));
//! service.clone().oneshot(Request::new(())).await.unwrap();
//! service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(layer.0.load(Ordering::Relaxed), 2);
//! # });
//! ```
