//! The server: state shared by every request, the routes, and the middleware that counts
//! requests and injects faults.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use http::StatusCode;
use tokio::sync::watch;

use crate::auth::{self, BusinessRejection};
use crate::bodies::Paused;
use crate::connection::{bind_loopback, ConnectionHandle, DroppableListener};
use crate::faults::{FaultTable, Injection};
use crate::tokens::TokenBook;
use crate::{resources, responses};
use crate::{Action, Config, Counters, FaultDecision, Faults, Gate, Route, Script, TokenPair};

/// Largest body `/echo` reads: uploads in tests stay well below it.
const ECHO_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// State shared by the handle and every request.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) tokens: TokenBook,
    pub(crate) counters: Arc<Counters>,
    pub(crate) faults: FaultTable,
    pub(crate) gate: Gate,
    /// Becomes `true` when the [`TestServer`] is dropped.
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn new(config: Config) -> Self {
        Self {
            tokens: TokenBook::new(config.seed, config.access_ttl),
            faults: FaultTable::new(config.seed),
            counters: Arc::default(),
            gate: Gate::default(),
            shutdown: watch::Sender::new(false),
            config,
        }
    }

    pub(crate) fn credentials_match(&self, user: &str, secret: &str) -> bool {
        let (expected_user, expected_secret) = &self.config.credentials;
        user == expected_user && secret == expected_secret
    }

    /// Resolves when the server is being shut down.
    pub(crate) async fn stopped(&self) {
        let mut shutdown = self.shutdown.subscribe();
        // The sender lives in `self`, so the channel cannot close while this borrow lasts.
        let _ = shutdown.wait_for(|stopped| *stopped).await;
    }
}

/// A real HTTP server on `127.0.0.1` with tokens, counters and fault injection.
///
/// It runs in tasks of the current tokio runtime, speaks HTTP/1.1 and HTTP/2 (prior knowledge,
/// `h2c`), and shuts down gracefully when dropped: it stops accepting, closes idle
/// connections and drops the connections of requests held on the gate or hung by a fault.
/// See the [crate documentation](crate) for the routes.
///
/// An HTTP/2 connection carries at most 200 concurrent streams (hyper's default), so a test
/// that holds more requests than that on the [`Gate`] should use HTTP/1.1, whose client pool
/// opens a connection per concurrent request.
pub struct TestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Starts a server with the default [`Config`].
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or outside a tokio runtime.
    pub async fn start() -> TestServer {
        Self::start_with(Config::default()).await
    }

    /// Starts a server with `config`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or outside a tokio runtime.
    pub async fn start_with(config: Config) -> TestServer {
        let (listener, addr) = bind_loopback().await;
        let shared = Arc::new(Shared::new(config));
        let app = router(shared.clone()).into_make_service_with_connect_info::<ConnectionHandle>();
        let stop = shared.clone();
        tokio::spawn(async move {
            // The listener is bound already, so connections made before this task runs wait
            // in the backlog; serving itself cannot fail (accept errors are retried).
            let _ = axum::serve(DroppableListener::new(listener), app)
                .with_graceful_shutdown(async move { stop.stopped().await })
                .await;
        });
        TestServer { shared, addr }
    }

    /// The bound address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL followed by `path`, which should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The configuration the server was started with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The live counters.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Sets the faults of `route` ([`Route::Any`]: of every route); `Faults::default()`
    /// turns them off. Restarts the route's fault sequence, so the next requests follow
    /// [`fault_pattern`](crate::fault_pattern) from its start.
    pub fn set_faults(&self, route: Route, faults: Faults) {
        self.shared.faults.set(route, faults);
    }

    /// Sets the script of `route` ([`Route::Any`]: of every route); `Script::new()` turns it
    /// off. Restarts the route's script count, so the next request is position 0. A scripted
    /// request gets its [`Action`] instead of the route's [`Faults`].
    ///
    /// ```
    /// use xhttp_testkit::{Action, Route, Script, TestServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let server = TestServer::start().await;
    /// // The token endpoint fails its 1st call with a 503: one refresh must retry.
    /// server.set_script(Route::Token, Script::new().on(0, Action::fail(503)));
    /// # }
    /// ```
    pub fn set_script(&self, route: Route, script: Script) {
        self.shared.faults.set_script(route, script);
    }

    /// Issues a token pair directly, as a login would, without counting a token call.
    pub fn login(&self) -> TokenPair {
        let issued = self.shared.tokens.issue(true);
        TokenPair {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token.unwrap_or_default(),
            expires_in: issued.expires_in,
        }
    }

    /// The gate of `GET /gate/{id}`.
    pub fn gate(&self) -> &Gate {
        &self.shared.gate
    }

    /// Sets the lifetime of access tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.shared.tokens.set_ttl(ttl);
    }

    /// Revokes every access and refresh token issued so far, as a server-side logout of
    /// every session would.
    pub fn revoke_all(&self) {
        self.shared.tokens.revoke_all();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Stops accepting, lets idle connections close, and ends held and hung requests.
        self.shared.shutdown.send_replace(true);
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let on = |route: Route, methods: MethodRouter<Arc<Shared>>| {
        methods.layer(middleware::from_fn_with_state(
            (shared.clone(), route),
            inject_faults,
        ))
    };
    let protected = |route: Route, methods: MethodRouter<Arc<Shared>>| {
        on(
            route,
            methods.layer(middleware::from_fn_with_state(
                shared.clone(),
                auth::require_bearer,
            )),
        )
    };
    let echo = || any(resources::echo).layer(DefaultBodyLimit::max(ECHO_BODY_LIMIT));

    Router::new()
        .route("/auth/login", on(Route::Login, post(auth::login)))
        .route("/auth/token", on(Route::Token, post(auth::token)))
        .route(
            "/auth/refresh",
            on(Route::CustomRefresh, post(auth::custom_refresh)),
        )
        .route(
            "/api/items/{id}",
            protected(Route::Items, get(resources::item)),
        )
        .route(
            "/api/items",
            protected(Route::Items, post(resources::create_item)),
        )
        .route("/api/me", protected(Route::Me, get(resources::me)))
        .route(
            "/public/items/{id}",
            on(Route::Public, get(resources::item)),
        )
        .route(
            "/public/gzip/{id}",
            on(Route::Gzip, resources::gzip_item(shared.clone())),
        )
        .route("/echo", on(Route::Echo, echo()))
        .route("/reflect", on(Route::Echo, post(resources::reflect)))
        .route("/echo/{*rest}", on(Route::Echo, echo()))
        .route("/upload", on(Route::Upload, post(resources::upload)))
        .route("/bytes/{n}", on(Route::Bytes, get(resources::bytes_sized)))
        .route(
            "/bytes-chunked/{n}",
            on(Route::Bytes, get(resources::bytes_chunked)),
        )
        .route(
            "/close-mid-body",
            on(Route::CloseMidBody, get(resources::close_mid_body)),
        )
        .route("/gate/{id}", on(Route::Gate, get(resources::gate)))
        .route(
            "/api/gate/{id}",
            on(
                Route::Gate,
                get(resources::item)
                    .layer(middleware::from_fn_with_state(
                        shared.clone(),
                        auth::require_bearer,
                    ))
                    .layer(middleware::from_fn_with_state(shared.clone(), hold_at_gate)),
            ),
        )
        .route(
            "/gate-echo/{*rest}",
            on(
                Route::Gate,
                get(resources::echo)
                    .layer(middleware::from_fn_with_state(shared.clone(), hold_at_gate)),
            ),
        )
        .route(
            "/gate-status/{code}",
            on(
                Route::Gate,
                get(resources::status)
                    .layer(middleware::from_fn_with_state(shared.clone(), hold_at_gate)),
            ),
        )
        .route("/status/{code}", on(Route::Status, any(resources::status)))
        .route(
            "/problem/{code}",
            on(Route::Status, get(resources::problem)),
        )
        .route(
            "/html-error/{code}",
            on(Route::Status, get(resources::html_error)),
        )
        .route(
            "/envelope-error/{code}",
            on(Route::Status, get(resources::envelope_error)),
        )
        .route("/slow/{ms}", on(Route::Slow, get(resources::slow)))
        .route(
            "/slow-body/{ms}",
            on(Route::Slow, get(resources::slow_body)),
        )
        .route("/redirect", on(Route::Redirect, any(resources::redirect)))
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

/// Outermost middleware: counts every request, its concurrency and the rejections.
async fn observe(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let _in_flight = shared.counters.request_started();
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED
        || response.extensions().get::<BusinessRejection>().is_some()
    {
        shared.counters.rejected();
    }
    response
}

/// Holds a request at the gate before its token is checked, so that a test can line up many
/// requests carrying one token before the server answers any of them.
async fn hold_at_gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    tokio::select! {
        () = shared.gate.pass() => next.run(request).await,
        () = shared.stopped() => responses::never_sent(),
    }
}

/// Per-route middleware: counts the hit and applies the route's faults.
async fn inject_faults(
    State((shared, route)): State<(Arc<Shared>, Route)>,
    request: Request,
    next: Next,
) -> Response {
    shared.counters.hit(route);
    if let Some(action) = shared.faults.scripted(route) {
        shared.counters.scripted();
        return perform(&shared, action, request, next).await;
    }
    let Some(Injection { faults, decision }) = shared.faults.draw(route) else {
        return next.run(request).await;
    };
    if let Some(delay) = faults.delay {
        tokio::time::sleep(delay).await;
    }
    if decision != FaultDecision::Pass {
        shared.counters.fault();
    }
    match decision {
        FaultDecision::Pass => next.run(request).await,
        FaultDecision::Fail => responses::error_with_retry_after(
            faults.failure_status(),
            "injected fault",
            faults.retry_after.as_deref(),
        ),
        FaultDecision::Malformed => responses::malformed_json(),
        FaultDecision::Drop => drop_connection(&request),
        FaultDecision::Hang => {
            shared.stopped().await;
            drop_connection(&request)
        }
    }
}

/// Largest body a [`Action::SlowBody`] holds back: the API routes answer far less.
const SLOW_BODY_LIMIT: usize = 1024 * 1024;

/// Carries out one scripted [`Action`].
async fn perform(shared: &Shared, action: Action, request: Request, next: Next) -> Response {
    match action {
        Action::Fail {
            status,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(|status| status.as_u16() >= 200)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            responses::error_with_retry_after(status, "scripted fault", retry_after.as_deref())
        }
        Action::Drop => drop_connection(&request),
        Action::Hang(duration) => {
            tokio::select! {
                () = tokio::time::sleep(duration) => {}
                () = shared.stopped() => {}
            }
            drop_connection(&request)
        }
        Action::Delay(duration) => {
            tokio::time::sleep(duration).await;
            next.run(request).await
        }
        Action::Revoke => {
            let token = auth::bearer_token(request.headers());
            if token.is_some_and(|token| shared.tokens.revoke_access(token)) {
                shared.counters.revoked();
            }
            next.run(request).await
        }
        Action::SlowBody(pause) => {
            let (mut parts, body) = next.run(request).await.into_parts();
            let Ok(mut first) = axum::body::to_bytes(body, SLOW_BODY_LIMIT).await else {
                return responses::error(StatusCode::INTERNAL_SERVER_ERROR, "body too large");
            };
            let rest = first.split_off(first.len() / 2);
            parts.headers.remove(http::header::CONTENT_LENGTH);
            let body = Paused::slow(first, pause, rest);
            Response::from_parts(parts, axum::body::Body::new(body))
        }
    }
}

fn drop_connection(request: &Request) -> Response {
    if let Some(ConnectInfo(connection)) =
        request.extensions().get::<ConnectInfo<ConnectionHandle>>()
    {
        connection.drop_connection();
    }
    responses::never_sent()
}
