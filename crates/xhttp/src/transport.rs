//! The bottom of the stack: hyper-util's pooled client over rustls, and the two steps above
//! it that every trip takes: [`Collect`] turns the streamed response into `Response<Bytes>`
//! under a limit, and [`AttemptTimeout`] bounds one trip, head and body.
//!
//! ```
//! use tower::{ServiceBuilder, ServiceExt};
//! use xhttp::transport::{AttemptTimeoutLayer, CollectLayer, HttpTransport};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), xhttp::Error> {
//! let service = ServiceBuilder::new()
//!     .layer(AttemptTimeoutLayer::new(Duration::from_secs(10)))
//!     .layer(CollectLayer::new())
//!     .service(HttpTransport::builder().build());
//! let request = http::Request::get("http://127.0.0.1:1/").body(xhttp::Body::empty()).unwrap();
//! let result = service.oneshot(request).await; // connection refused: a Transport error
//! assert!(result.unwrap_err().is_never_sent());
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use tower::Service;
use xhttp_core::{Body, Error};

/// The longest timeout the facade accepts: a year (365 days), the cap of
/// [`xhttp_core::Deadline::after`]. `Duration::MAX` overflows every clock it is added to; a
/// year is no timeout worth the name, and says so without a panic.
pub const LONGEST_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The connector: rustls over TCP with the `rustls` feature (the default), plain TCP without.
#[cfg(feature = "rustls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "rustls"))]
type Connector = HttpConnector;

/// hyper-util's legacy client, pooled, speaking HTTP/1.1 and HTTP/2 (ALPN over TLS, or prior
/// knowledge over plain TCP), with rustls (ring provider, webpki roots) when the `rustls`
/// feature is on (the default). Without it, it speaks plain HTTP only, and an `https` URL is a
/// `Transport` error marked never-sent, before any byte leaves: a token is never sent in the
/// clear to a port that expects TLS.
///
/// Failures come back as [`Error`]s of kind `Transport`; a connection that never carried the
/// request (refused, DNS, TLS handshake, connect timeout) is marked
/// [`Error::is_never_sent`] so that retry may resend any method.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    // Behind one `Arc`: the stack is cloned for every call (tower's `call` takes `&mut self`),
    // and hyper-util's client is half a dozen `Arc`s whose counts would all bounce between
    // cores on every request.
    client: Arc<HyperClient<Connector, Body>>,
}

/// Options of [`HttpTransport`].
///
/// ```
/// use std::time::Duration;
/// let transport = xhttp::transport::HttpTransport::builder()
///     .connect_timeout(Duration::from_secs(3))
///     .http2_prior_knowledge(true)
///     .build();
/// # drop(transport);
/// ```
#[derive(Clone, Debug)]
pub struct HttpTransportBuilder {
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    http2_prior_knowledge: bool,
    tcp_nodelay: bool,
}

impl Default for HttpTransportBuilder {
    fn default() -> Self {
        HttpTransportBuilder {
            // A host that does not answer a SYN in 10 s is down; fail fast so retry can act.
            connect_timeout: Some(Duration::from_secs(10)),
            // hyper-util's default: idle connections live 90 s.
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            http2_prior_knowledge: false,
            tcp_nodelay: true,
        }
    }
}

impl HttpTransportBuilder {
    /// How long a TCP connect may take (default 10 s); `None` waits for the OS.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// How long an idle pooled connection is kept (default 90 s).
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.pool_idle_timeout = timeout.into();
        self
    }

    /// How many idle connections to keep per host (default unbounded, as hyper-util).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Speak HTTP/2 without negotiation, also over plain TCP (h2c); default off: HTTP/1.1,
    /// or HTTP/2 when TLS negotiates it.
    pub fn http2_prior_knowledge(mut self, enabled: bool) -> Self {
        self.http2_prior_knowledge = enabled;
        self
    }

    /// Disable Nagle's algorithm (default on: API calls are small and latency-bound).
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.tcp_nodelay = enabled;
        self
    }

    /// Fails when a timeout is above [`LONGEST_TIMEOUT`] (the client's builder asks this;
    /// [`build`](HttpTransportBuilder::build) itself clamps).
    pub(crate) fn check(&self) -> Result<(), Error> {
        let too_long = |t: Option<Duration>| t.is_some_and(|t| t > LONGEST_TIMEOUT);
        if too_long(self.connect_timeout) || too_long(self.pool_idle_timeout) {
            return Err(Error::config(
                "the connect and pool idle timeouts must be at most a year",
            ));
        }
        Ok(())
    }

    /// Builds the transport. A timeout above [`LONGEST_TIMEOUT`] counts as a year
    /// (hyper-util adds the idle timeout to the clock, which `Duration::MAX` overflows).
    pub fn build(self) -> HttpTransport {
        let clamp = |t: Option<Duration>| t.map(|t| t.min(LONGEST_TIMEOUT));
        let mut http = HttpConnector::new();
        http.set_nodelay(self.tcp_nodelay);
        http.set_connect_timeout(clamp(self.connect_timeout));
        #[cfg(feature = "rustls")]
        let connector = {
            http.enforce_http(false);
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http)
        };
        #[cfg(not(feature = "rustls"))]
        let connector = {
            // Refuses any scheme but http at connect time.
            http.enforce_http(true);
            http
        };
        let mut builder = HyperClient::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(clamp(self.pool_idle_timeout))
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .http2_only(self.http2_prior_knowledge);
        HttpTransport {
            client: Arc::new(builder.build(connector)),
        }
    }
}

impl HttpTransport {
    /// Options for a transport.
    pub fn builder() -> HttpTransportBuilder {
        HttpTransportBuilder::default()
    }
}

impl Default for HttpTransport {
    fn default() -> Self {
        HttpTransport::builder().build()
    }
}

impl Service<Request<Body>> for HttpTransport {
    type Response = Response<Incoming>;
    type Error = Error;
    type Future = TransportFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // The pool has no back-pressure: it opens a connection when none is idle.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> TransportFuture {
        TransportFuture {
            inner: self.client.request(request),
        }
    }
}

pin_project! {
    /// The response future of [`HttpTransport`].
    pub struct TransportFuture {
        #[pin]
        inner: hyper_util::client::legacy::ResponseFuture,
    }
}

impl Future for TransportFuture {
    type Output = Result<Response<Incoming>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(self.project().inner.poll(cx));
        Poll::Ready(result.map_err(from_hyper_util))
    }
}

/// Turns a hyper-util client error into an [`Error`] of kind `Transport`, marked
/// [`Error::is_never_sent`] when the connection was never made (refused, DNS, TLS handshake,
/// connect timeout), so that retry may resend any method, a `POST` included. The
/// [`Stack`](crate::Stack) applies it to the errors of the service below; a hand-built stack
/// over a hyper-util client maps its errors with it.
///
/// ```
/// # async fn run() {
/// use http_body_util::Full;
/// use bytes::Bytes;
/// let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
///     .build_http::<Full<Bytes>>();
/// let request = http::Request::post("http://127.0.0.1:1/").body(Full::default()).unwrap();
/// let err = client.request(request).await.unwrap_err();
/// let err = xhttp::transport::from_hyper_util(err);
/// assert_eq!(err.kind(), xhttp::ErrorKind::Transport);
/// assert!(err.is_never_sent());
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run());
/// ```
pub fn from_hyper_util(err: hyper_util::client::legacy::Error) -> Error {
    let never_sent = err.is_connect();
    let mut error = Error::transport(err);
    if never_sent {
        error = error.with_never_sent();
    }
    error
}

pub use xhttp_core::collect::{Collect, CollectFuture, CollectLayer};
pub use xhttp_core::timeout::{AttemptTimeout, AttemptTimeoutFuture, AttemptTimeoutLayer};

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tower::{service_fn, Layer, Service, ServiceExt};
    use xhttp_core::{BodyLimit, ErrorKind, TimeoutScope};

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_fires_on_the_paused_clock() {
        let slow = service_fn(|_: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(11)).await;
            Ok::<_, Error>(Response::new(()))
        });
        let service = AttemptTimeoutLayer::new(Duration::from_secs(10)).layer(slow);
        let start = tokio::time::Instant::now();
        let err = service.oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutScope::Attempt));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_gets_no_more_than_the_time_left_before_the_deadline() {
        let never = service_fn(|_: Request<()>| async {
            std::future::pending::<()>().await;
            Ok::<_, Error>(Response::new(()))
        });
        let service = AttemptTimeoutLayer::new(Duration::from_secs(10)).layer(never);
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(xhttp_core::Deadline::after(Duration::from_secs(2)));
        let start = tokio::time::Instant::now();
        let err = service.clone().oneshot(request).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutScope::Total));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // A deadline further away than the attempt timeout leaves the attempt timeout in charge.
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(xhttp_core::Deadline::after(Duration::from_secs(60)));
        let err = service.oneshot(request).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutScope::Attempt));
        assert_eq!(start.elapsed(), Duration::from_secs(12));
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_covers_the_body() {
        // The head comes at once; the body stalls past the timeout.
        let stalled_body = service_fn(|_: Request<()>| async {
            let body = http_body_util::StreamBody::new(futures_stream_pending());
            Ok::<_, Error>(Response::new(body))
        });
        let service = AttemptTimeoutLayer::new(Duration::from_secs(1))
            .layer(CollectLayer::new().layer(stalled_body));
        let err = service.oneshot(Request::new(())).await.unwrap_err();
        assert!(err.is_timeout());
    }

    fn futures_stream_pending(
    ) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, Error>> {
        futures_util::stream::pending()
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_timeout_of_duration_max_counts_as_a_year_and_does_not_panic() {
        let never = service_fn(|_: Request<()>| async {
            std::future::pending::<()>().await;
            Ok::<_, Error>(Response::new(()))
        });
        let service = AttemptTimeoutLayer::new(Duration::MAX).layer(never);
        let start = tokio::time::Instant::now();
        let err = service.oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutScope::Attempt));
        assert_eq!(start.elapsed(), LONGEST_TIMEOUT);
    }

    #[test]
    fn outside_a_runtime_an_attempt_is_a_config_error_not_a_panic() {
        let ok = service_fn(|_: Request<()>| async { Ok::<_, Error>(Response::new(())) });
        let mut service = AttemptTimeoutLayer::new(Duration::from_secs(1)).layer(ok);
        let future = service.call(Request::new(()));
        let err = futures_util::FutureExt::now_or_never(future)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn layers_keep_the_readiness_contract() {
        let body = http_body_util::Full::new(Bytes::from_static(b"ok"));
        let probe = xhttp_testkit::ReadinessProbe::new(Response::new(body));
        let stack = AttemptTimeoutLayer::new(Duration::from_secs(1))
            .layer(CollectLayer::new().layer(probe.clone()));
        // oneshot polls readiness first: the layers must pass it down for the call to work.
        let response = stack.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.body(), "ok");
        // A clone is not ready: calling it without poll_ready reaches the probe as the bug.
        let mut clone = stack.clone();
        let err = clone.call(Request::new(())).await.unwrap_err();
        // `Display` prints one level; the probe's complaint is the cause.
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause
                .as_deref()
                .is_some_and(|c| c.contains("readiness contract")),
            "{err}: {cause:?}"
        );
        assert_eq!(probe.calls(), 1);
    }

    #[test]
    fn futures_are_send_and_services_send_sync() {
        fn assert_send<T: Send>() {}
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send::<CollectFuture<TransportFuture, hyper::body::Incoming>>();
        assert_send::<AttemptTimeoutFuture<TransportFuture>>();
        assert_send_sync::<AttemptTimeout<Collect<HttpTransport>>>();
    }

    #[tokio::test]
    async fn collect_uses_the_request_limit() {
        let big = service_fn(|_: Request<()>| async {
            Ok::<_, Error>(Response::new(http_body_util::Full::new(Bytes::from(
                vec![0u8; 100],
            ))))
        });
        let mut request = Request::new(());
        request.extensions_mut().insert(BodyLimit(99));
        let err = CollectLayer::new()
            .layer(big)
            .oneshot(request)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyTooLarge);
        assert_eq!(err.status(), Some(http::StatusCode::OK));
    }
}

/// Built and run by `.ci/run` with `--no-default-features`.
#[cfg(all(test, not(feature = "rustls")))]
mod without_tls {
    use std::time::Duration;

    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn an_https_url_is_refused_before_any_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let request = Request::get(format!("https://127.0.0.1:{port}/"))
            .header("authorization", "Bearer plain-text-would-leak-3f9a")
            .body(Body::empty())
            .unwrap();
        let err = HttpTransport::default().oneshot(request).await.unwrap_err();
        assert_eq!(err.kind(), xhttp_core::ErrorKind::Transport);
        assert!(err.is_never_sent(), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("plain-text-would-leak-3f9a"));
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");
    }
}
