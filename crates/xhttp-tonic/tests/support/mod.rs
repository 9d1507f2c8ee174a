//! A real tonic server on loopback for the tests: tonic-health's `HealthServer` behind an
//! interceptor that checks `authorization: Bearer <token>` against a [`TokenBook`], and a
//! [`BookGrant`] that issues the tokens the book knows, so a `TokenManager` can refresh
//! against it.
//!
//! ```text
//! let server = TestServer::start().await;
//! server.book().issue("tok-a");                 // valid
//! server.book().expire("tok-a");                // rejected as UNAUTHENTICATED
//! let channel = server.channel().await;         // a tonic Channel to 127.0.0.1:port
//! let client = HealthClient::with_origin(stack_over(channel), server.uri());
//! server.calls(); server.rejections(); server.seen();   // what reached the server
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use xhttp_auth::{GrantResponse, RefreshGrant, Secret};
use xhttp_core::{Error, ErrorKind, Origin};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the server thinks of a token; a token not in the book is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenState {
    Valid,
    Expired,
}

/// The server's tokens: valid, expired, or unknown (absent).
#[derive(Debug, Default)]
pub(crate) struct TokenBook {
    tokens: Mutex<HashMap<String, TokenState>>,
}

impl TokenBook {
    /// Makes `token` valid.
    pub(crate) fn issue(&self, token: &str) {
        lock(&self.tokens).insert(token.to_owned(), TokenState::Valid);
    }

    /// Makes `token` expired: the server answers UNAUTHENTICATED to it.
    pub(crate) fn expire(&self, token: &str) {
        lock(&self.tokens).insert(token.to_owned(), TokenState::Expired);
    }

    fn state(&self, token: &str) -> Option<TokenState> {
        lock(&self.tokens).get(token).copied()
    }
}

/// What one call carried when it reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The `authorization` metadata, as sent.
    pub(crate) authorization: Option<String>,
    /// The `grpc-timeout` metadata, as sent.
    pub(crate) grpc_timeout: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    book: TokenBook,
    calls: AtomicU64,
    rejections: AtomicU64,
    trailer_rejections: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    /// The next calls that pass the token check are answered with these codes, in order.
    scripted: Mutex<Vec<Code>>,
    /// Whether `Watch` sends one message and then ends with UNAUTHENTICATED in its trailers.
    reject_watch_in_trailers: AtomicBool,
}

/// The interceptor in front of the health service: checks the bearer against the book.
#[derive(Clone)]
struct Gate {
    state: Arc<State>,
}

impl Interceptor for Gate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let state = &self.state;
        state.calls.fetch_add(1, Ordering::SeqCst);
        let text = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let authorization = text("authorization");
        lock(&state.seen).push(Seen {
            authorization: authorization.clone(),
            grpc_timeout: text("grpc-timeout"),
        });
        let token = authorization
            .as_deref()
            .and_then(|value| value.strip_prefix("Bearer "));
        let verdict = match token.map(|token| state.book.state(token)) {
            None => Err("no bearer token"),
            Some(None) => Err("unknown token"),
            Some(Some(TokenState::Expired)) => Err("token expired"),
            Some(Some(TokenState::Valid)) => Ok(()),
        };
        if let Err(why) = verdict {
            state.rejections.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unauthenticated(why));
        }
        let scripted = {
            let mut scripted = lock(&state.scripted);
            (!scripted.is_empty()).then(|| scripted.remove(0))
        };
        match scripted {
            Some(code) => Err(Status::new(code, "scripted failure")),
            None => Ok(request),
        }
    }
}

/// tonic-health's service, with a `Watch` that can end in UNAUTHENTICATED trailers.
struct BookHealth {
    inner: HealthService,
    state: Arc<State>,
}

#[tonic::async_trait]
impl Health for BookHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = BoxStream<'static, Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if self.state.reject_watch_in_trailers.load(Ordering::SeqCst) {
            self.state.trailer_rejections.fetch_add(1, Ordering::SeqCst);
            let serving = HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            };
            let items = [
                Ok(serving),
                Err(Status::unauthenticated("token expired mid-stream")),
            ];
            return Ok(Response::new(stream::iter(items).boxed()));
        }
        let response = self.inner.watch(request).await?;
        Ok(Response::new(response.into_inner().boxed()))
    }
}

/// The health server on `127.0.0.1:<port>`; stops when dropped.
pub(crate) struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and serves with `Server::serve_with_incoming_shutdown`.
    pub(crate) async fn start() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let health = BookHealth {
            inner: HealthService::from_health_reporter(HealthReporter::new()),
            state: state.clone(),
        };
        let service = HealthServer::with_interceptor(
            health,
            Gate {
                state: state.clone(),
            },
        );
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            Server::builder()
                .serve_with_incoming_shutdown(service, TcpIncoming::from(listener), async {
                    let _ = signal.await;
                })
                .await
                .expect("serve");
        });
        TestServer {
            addr,
            state,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().expect("uri")
    }

    /// The server's origin, as `AuthLayer` is configured with it.
    pub(crate) fn origin(&self) -> Origin {
        Origin::parse(&self.uri().to_string()).expect("origin")
    }

    /// A connected tonic `Channel` to the server.
    pub(crate) async fn channel(&self) -> Channel {
        Channel::builder(self.uri())
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect")
    }

    pub(crate) fn book(&self) -> &TokenBook {
        &self.state.book
    }

    /// Calls that reached the interceptor.
    pub(crate) fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Calls answered UNAUTHENTICATED by the interceptor (in the response headers).
    pub(crate) fn rejections(&self) -> u64 {
        self.state.rejections.load(Ordering::SeqCst)
    }

    /// `Watch` streams that ended with UNAUTHENTICATED in their trailers.
    pub(crate) fn trailer_rejections(&self) -> u64 {
        self.state.trailer_rejections.load(Ordering::SeqCst)
    }

    /// What each call carried, in arrival order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        lock(&self.state.seen).clone()
    }

    /// The `authorization` of each call, in arrival order.
    pub(crate) fn authorizations(&self) -> Vec<Option<String>> {
        self.seen().into_iter().map(|s| s.authorization).collect()
    }

    /// Answers the next calls that pass the token check with `codes`, in order.
    pub(crate) fn fail_next(&self, codes: impl IntoIterator<Item = Code>) {
        lock(&self.state.scripted).extend(codes);
    }

    /// Makes every `Watch` send one message and end with UNAUTHENTICATED in its trailers.
    pub(crate) fn reject_watch_in_trailers(&self, reject: bool) {
        self.state
            .reject_watch_in_trailers
            .store(reject, Ordering::SeqCst);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.abort();
    }
}

/// A grant that issues fresh tokens into the server's book (`tok-<n>-fresh`), or answers
/// `SessionExpired` once killed, counting its calls.
#[derive(Debug, Clone)]
pub(crate) struct BookGrant {
    inner: Arc<GrantState>,
}

#[derive(Debug)]
struct GrantState {
    server: Arc<State>,
    calls: AtomicUsize,
    dead: AtomicBool,
}

impl BookGrant {
    pub(crate) fn new(server: &TestServer) -> BookGrant {
        BookGrant {
            inner: Arc::new(GrantState {
                server: server.state.clone(),
                calls: AtomicUsize::new(0),
                dead: AtomicBool::new(false),
            }),
        }
    }

    /// From now on the refresh credential is dead: every call answers `SessionExpired`.
    pub(crate) fn kill(&self) {
        self.inner.dead.store(true, Ordering::SeqCst);
    }

    pub(crate) fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::SeqCst)
    }
}

impl RefreshGrant for BookGrant {
    fn request<'a>(
        &'a self,
        _refresh_token: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        let n = self.inner.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let dead = self.inner.dead.load(Ordering::SeqCst);
        Box::pin(async move {
            if dead {
                return Err(Error::new(ErrorKind::SessionExpired)
                    .with_message("refresh credential revoked"));
            }
            let token = format!("tok-{n}-fresh");
            self.inner.server.book.issue(&token);
            Ok(GrantResponse {
                access_token: Secret::new(token),
                refresh_token: None,
                expires_in: Some(Duration::from_secs(3600)),
                received_at: tokio::time::Instant::now(),
            })
        })
    }

    fn needs_refresh_token(&self) -> bool {
        false
    }
}
