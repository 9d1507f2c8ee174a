//! A tonic client over the xhttp layers against a real tonic server on loopback: bearer tokens
//! on a `Channel`, one refresh for every call that meets an expired token, the call replayed,
//! and typed gRPC codes.
//!
//! ```sh
//! cargo run --example tonic_bearer
//! ```
//!
//! The server is tonic-health's `HealthServer` behind an interceptor that accepts only the
//! current access token. Every 250 calls the server expires it, so the calls in flight and the
//! next ones are rejected with UNAUTHENTICATED; the refresh grant rotates its refresh token and
//! reports a refresh token presented twice. It ends by printing one JSON line of what it
//! observed, `{"calls","ok","failed","token_calls","reuse_detected","replays"}`, and exits 1
//! when a call failed, a refresh token was reused, or the tokens never expired.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::{HealthReporter, HealthService};
use tower::ServiceBuilder;
use xhttp::auth::{AuthLayer, GrantResponse, RefreshGrant, Secret, TokenManager};
use xhttp::refresh::RefreshLayer;
use xhttp::{Error, ErrorKind, Origin};
use xhttp_tonic::{IntoTonicBodyLayer, RefreshOnTrailersLayer, ReplayableLayer};

const CALLS: usize = 2_000;
const CONCURRENCY: usize = 32;
/// The server expires the current token after this many calls.
const EXPIRE_EVERY: u64 = 250;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    xhttp_core::sync::lock(mutex)
}

/// The server's view: the one valid access token, what it has seen, what it rejected.
#[derive(Default)]
struct Tokens {
    current: Mutex<Option<String>>,
    calls: AtomicU64,
    rejections: AtomicU64,
}

/// Accepts only the current token; expires it every [`EXPIRE_EVERY`] calls.
#[derive(Clone)]
struct Gate(Arc<Tokens>);

impl Interceptor for Gate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let n = self.0.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let mut current = lock(&self.0.current);
        let valid = token.is_some() && token == *current;
        if n % EXPIRE_EVERY == 0 {
            *current = None;
        }
        if valid {
            Ok(request)
        } else {
            self.0.rejections.fetch_add(1, Ordering::SeqCst);
            Err(Status::unauthenticated("token expired or unknown"))
        }
    }
}

/// A refresh grant with rotating refresh tokens: each refresh retires the one it presents,
/// and a retired one presented again is counted as reuse.
struct Rotating {
    tokens: Arc<Tokens>,
    calls: AtomicUsize,
    retired: Mutex<HashSet<String>>,
    reuse: AtomicUsize,
}

impl std::fmt::Debug for Rotating {
    // Counts only: the retired refresh tokens are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotating")
            .field("calls", &self.calls)
            .field("reuse", &self.reuse)
            .finish_non_exhaustive()
    }
}

impl RefreshGrant for Rotating {
    fn request<'a>(
        &'a self,
        refresh_token: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let presented = refresh_token
                .map(|t| t.expose().to_owned())
                .unwrap_or_default();
            if !lock(&self.retired).insert(presented) {
                self.reuse.fetch_add(1, Ordering::SeqCst);
                return Err(Error::new(ErrorKind::SessionExpired)
                    .with_message("refresh token reused: session revoked"));
            }
            let access = format!("access-{n}");
            *lock(&self.tokens.current) = Some(access.clone());
            Ok(GrantResponse {
                access_token: Secret::new(access),
                refresh_token: Some(Secret::new(format!("refresh-{n}"))),
                expires_in: Some(Duration::from_secs(3600)),
                received_at: tokio::time::Instant::now(),
            })
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens = Arc::new(Tokens::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let health = HealthService::from_health_reporter(HealthReporter::new());
    let server = HealthServer::with_interceptor(health, Gate(tokens.clone()));
    tokio::spawn(Server::builder().serve_with_incoming(server, TcpIncoming::from(listener)));

    let grant = Arc::new(Rotating {
        tokens: tokens.clone(),
        calls: AtomicUsize::new(0),
        retired: Mutex::new(HashSet::new()),
        reuse: AtomicUsize::new(0),
    });
    let manager = TokenManager::builder(SharedGrant(grant.clone())).build();
    manager
        .set_tokens(
            Secret::new("access-0"),
            Some(Secret::new("refresh-0")),
            None,
        )
        .await?;
    *lock(&tokens.current) = Some("access-0".into());

    // The layers over a tonic Channel, with the usual client constructor.
    let uri = format!("http://{addr}");
    let channel = Channel::from_shared(uri.clone())?.connect().await?;
    let stack = ServiceBuilder::new()
        .map_err(|err: Error| xhttp_tonic::status_for(&err))
        .layer(ReplayableLayer::new())
        .layer(RefreshLayer::new(manager.clone()))
        .layer(RefreshOnTrailersLayer::new(manager.clone()))
        .layer(AuthLayer::for_channel(manager, Origin::parse(&uri)?).allow_insecure_loopback(true))
        .layer(IntoTonicBodyLayer)
        .service(channel);
    let client = HealthClient::new(stack);

    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (mut client, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, Vec::new());
                while next.fetch_add(1, Ordering::Relaxed) < CALLS {
                    let check = HealthCheckRequest {
                        service: String::new(),
                    };
                    match client.check(check).await {
                        Ok(answer) if answer.get_ref().status == ServingStatus::Serving as i32 => {
                            ok += 1
                        }
                        Ok(answer) => failed.push(format!("status {}", answer.get_ref().status)),
                        Err(status) => {
                            failed.push(format!("{:?}: {}", status.code(), status.message()))
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0u64, Vec::new());
    for worker in workers {
        let (o, f) = worker.await?;
        ok += o;
        failed.extend(f);
    }
    let token_calls = grant.calls.load(Ordering::SeqCst);
    let reuse = grant.reuse.load(Ordering::SeqCst);
    // Every rejection the server sent was answered by a replay (or the call would have
    // failed): the replays are the rejections.
    let replays = tokens.rejections.load(Ordering::SeqCst);
    println!(
        "{}",
        serde_json::json!({
            "calls": ok + failed.len() as u64,
            "ok": ok,
            "failed": failed.len(),
            "token_calls": token_calls,
            "reuse_detected": reuse,
            "replays": replays,
        })
    );
    for problem in failed.iter().take(5) {
        eprintln!("tonic_bearer: a call failed: {problem}");
    }
    if !failed.is_empty() || reuse > 0 || token_calls < 2 || replays == 0 {
        eprintln!("tonic_bearer: a check failed");
        std::process::exit(1);
    }
    Ok(())
}

/// The grant, shared with `main` for its counters.
#[derive(Debug)]
struct SharedGrant(Arc<Rotating>);

impl RefreshGrant for SharedGrant {
    fn request<'a>(
        &'a self,
        refresh_token: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<GrantResponse, Error>> {
        self.0.request(refresh_token)
    }
}
