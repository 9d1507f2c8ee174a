//! xhttp against raw hyper-util on a loopback server, in one process run.
//!
//! Three clients make the same authenticated GET (a bearer token on a protected route) to the
//! same warm testkit server:
//! - `raw_hyper`: hyper-util's legacy client with the `Authorization` header set by hand, the
//!   body collected with `http-body-util`;
//! - `xhttp_service`: the composed xhttp stack (refresh, auth with a `TokenManager`, attempt
//!   timeout, collect, transport) called as a tower service (`client.service()`) with a
//!   request built by hand;
//! - `xhttp`: the facade, `client.get(path).send().await`;
//! - `stack_hyper`: the public `xhttp::Stack` (the facade's default layers: retry, dedupe,
//!   refresh, auth, deadline, attempt timeout, collect) over a raw hyper-util
//!   `Client<HttpConnector, Empty<Bytes>>`, composed with `ServiceBuilder`.
//!
//! Two parts:
//! 1. criterion groups at concurrency 1 and 32, for the usual statistics;
//! 2. interleaved rounds: the three take turns, round after round, in a rotating order, and
//!    each round's throughput ratio to raw hyper is printed as median, min and max. Absolute
//!    times on a shared machine drift; a ratio taken within one round does not.
//!
//! The server runs on its own runtime thread (a real upstream is another process); the
//! clients share one current-thread runtime, so that what is compared is the clients' own
//! work, not where tokio happened to place their connection tasks across workers.
//!
//! A third part measures a fan-out: 32 identical concurrent GETs, which raw hyper sends 32
//! times and xhttp's dedupe layer once.
//!
//! Run: `cargo bench --bench stack` (add `-- --quick` for a shorter criterion part; set
//! `XHTTP_BENCH_INTERLEAVED_ONLY=1` to run only the interleaved rounds, or
//! `XHTTP_BENCH_PROFILE=<client>` to run one client alone under a profiler).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;
use tower::ServiceExt;
use xhttp_testkit::TestServer;

/// A protected route: every client sends the bearer token (raw hyper sets the header itself).
/// Every request asks for another item, so that nothing is a duplicate: what is measured is
/// the cost of the layers, dedupe's key included, not the savings of coalescing.
fn next_path() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("/api/items/{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
const ROUNDS: usize = 15;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// One request, start to collected body; every client pays the same boxing.
type Op = Arc<dyn Fn() -> BoxFuture + Send + Sync>;

struct Setup {
    runtime: Runtime,
    server: TestServer,
    _server_runtime: Runtime,
    variants: Vec<(&'static str, Op)>,
    /// The same 32 concurrent identical GETs (one item): raw hyper sends 32, xhttp one.
    fan_out: Vec<(&'static str, Op)>,
}

fn setup() -> Setup {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = server_runtime.block_on(TestServer::start());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = server.base_url();
    let tokens = server.login();
    let bearer = http::HeaderValue::try_from(format!("Bearer {}", tokens.access_token)).unwrap();

    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let raw_client = HyperClient::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(http);
    let raw_base = base.clone();
    let raw: Op = Arc::new(move || {
        let (client, bearer) = (raw_client.clone(), bearer.clone());
        let uri = format!("{raw_base}{}", next_path());
        Box::pin(async move {
            let request = http::Request::get(uri)
                .header(http::header::AUTHORIZATION, bearer)
                .body(Empty::new())
                .unwrap();
            let response = client.request(request).await.unwrap();
            assert!(response.status().is_success());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(!body.is_empty());
        })
    });

    // The full stack of this issue: refresh and auth over attempt timeout, collect, transport.
    let grant =
        xhttp::auth::OAuth2Refresh::new(xhttp::grant_transport(), &server.url("/auth/token"))
            .unwrap();
    let manager = xhttp::auth::TokenManager::builder(grant).build();
    runtime
        .block_on(manager.set_tokens(
            xhttp::auth::Secret::new(tokens.access_token.clone()),
            Some(xhttp::auth::Secret::new(tokens.refresh_token.clone())),
            Some(Duration::from_secs(tokens.expires_in)),
        ))
        .unwrap();
    let client_manager = manager.clone();
    let client = xhttp::Client::builder()
        .base_url(server.base_url())
        .auth(manager)
        .allow_insecure_loopback()
        .build()
        .unwrap();
    let stack = client.service();
    let service_base = base.clone();
    let service: Op = Arc::new(move || {
        let stack = stack.clone();
        let uri = format!("{service_base}{}", next_path());
        Box::pin(async move {
            let request = http::Request::get(uri).body(xhttp::Body::empty()).unwrap();
            let response = stack.oneshot(request).await.unwrap();
            assert!(response.status().is_success());
            assert!(!response.body().is_empty());
        })
    });

    // The public stack over the user's own hyper client.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let own_hyper = HyperClient::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(http);
    let over_hyper = tower::ServiceBuilder::new()
        .layer(
            xhttp::Stack::<Empty<Bytes>>::builder()
                .auth(
                    xhttp::auth::AuthLayer::new(
                        client_manager.clone(),
                        [xhttp::Origin::parse(&base).unwrap()],
                    )
                    .allow_insecure_loopback(true),
                )
                .refresh(xhttp::refresh::RefreshLayer::new(client_manager.clone()))
                .retry(xhttp::retry::RetryPolicy::default())
                .dedupe(xhttp::dedupe::DedupeLayer::builder())
                .build()
                .unwrap(),
        )
        .service(own_hyper);
    let stack_base = base.clone();
    let stack_hyper: Op = Arc::new(move || {
        let service = over_hyper.clone();
        let uri = format!("{stack_base}{}", next_path());
        Box::pin(async move {
            let request = http::Request::get(uri).body(Empty::new()).unwrap();
            let response = service.oneshot(request).await.unwrap();
            assert!(response.status().is_success());
            assert!(!response.body().is_empty());
        })
    });

    let facade_client = client.clone();
    let facade: Op = Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            let response = client.get(&next_path()).send().await.unwrap();
            assert!(response.status().is_success());
            assert!(!response.body().is_empty());
        })
    });

    let fan_raw = raw_fan_out(&base, &tokens.access_token);
    let fan_client = facade_client.clone();
    let fan_xhttp: Op = Arc::new(move || {
        let client = fan_client.clone();
        Box::pin(async move {
            let calls: Vec<_> = (0..FAN_OUT)
                .map(|_| client.get("/api/items/0"))
                .map(|b| b.send())
                .collect();
            for response in futures_join(calls).await {
                assert!(response.unwrap().status().is_success());
            }
        })
    });
    Setup {
        fan_out: vec![("raw_hyper", fan_raw), ("xhttp", fan_xhttp)],
        runtime,
        server,
        _server_runtime: server_runtime,
        variants: vec![
            ("raw_hyper", raw),
            ("xhttp_service", service),
            ("xhttp", facade),
            ("stack_hyper", stack_hyper),
        ],
    }
}

/// `n` operations at the given concurrency: `concurrency` tasks, each making
/// `n / concurrency` calls back to back.
async fn run(op: Op, n: usize, concurrency: usize) -> Duration {
    let start = Instant::now();
    if concurrency == 1 {
        for _ in 0..n {
            op().await;
        }
    } else {
        let per_task = n.div_ceil(concurrency);
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let op = op.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        op().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
    start.elapsed()
}

fn criterion_part(c: &mut Criterion, setup: &Setup) {
    for concurrency in [1usize, 32] {
        let mut group = c.benchmark_group(format!("get_c{concurrency}"));
        group.throughput(criterion::Throughput::Elements(concurrency as u64));
        for (name, op) in &setup.variants {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    let n = iters as usize * concurrency;
                    setup.runtime.block_on(run(op.clone(), n, concurrency))
                })
            });
        }
        group.finish();
    }
}

fn interleaved_part(setup: &Setup) {
    println!("\ninterleaved rounds: throughput relative to raw hyper (1.000 = as fast)");
    let count = setup.variants.len();
    for (concurrency, n) in [(1usize, 2_000usize), (32, 8_000)] {
        // Warm every client (pools, allocator) before the first measured round.
        for (_, op) in &setup.variants {
            setup.runtime.block_on(run(op.clone(), n / 4, concurrency));
        }
        let mut ratios = vec![Vec::with_capacity(ROUNDS); count];
        for round in 0..ROUNDS {
            let mut times = vec![Duration::ZERO; count];
            // Rotate who goes first so drift within a round favours nobody.
            for k in 0..count {
                let i = (k + round) % count;
                times[i] = setup
                    .runtime
                    .block_on(run(setup.variants[i].1.clone(), n, concurrency));
            }
            for i in 0..count {
                ratios[i].push(times[0].as_secs_f64() / times[i].as_secs_f64());
            }
        }
        for (i, (name, _)) in setup.variants.iter().enumerate().skip(1) {
            let r = &mut ratios[i];
            r.sort_by(f64::total_cmp);
            println!(
                "concurrency {concurrency:>2}  {name:<14} median {:.3}  min {:.3}  max {:.3}  ({ROUNDS} rounds of {n} requests)",
                r[r.len() / 2],
                r[0],
                r[r.len() - 1]
            );
        }
    }
    let counters = setup.server.counters();
    assert_eq!(
        counters.unauthorized(),
        0,
        "every request carried a valid token"
    );
    assert_eq!(counters.token_calls(), 0, "no refresh during the run");
}

const FAN_OUT: usize = 32;

/// Awaits every future, in order (a tiny `join_all`).
async fn futures_join<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    let mut pinned: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    // Poll all of them before waiting on any, so they are in flight together.
    std::future::poll_fn(|cx| {
        for future in &mut pinned {
            let _ = future.as_mut().poll(cx);
        }
        std::task::Poll::Ready(())
    })
    .await;
    for future in pinned {
        out.push(future.await);
    }
    out
}

fn raw_fan_out(base: &str, token: &str) -> Op {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client = HyperClient::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(http);
    let uri: http::Uri = format!("{base}/api/items/0").parse().unwrap();
    let bearer = http::HeaderValue::try_from(format!("Bearer {token}")).unwrap();
    Arc::new(move || {
        let (client, uri, bearer) = (client.clone(), uri.clone(), bearer.clone());
        Box::pin(async move {
            let calls: Vec<_> = (0..FAN_OUT)
                .map(|_| {
                    let request = http::Request::get(uri.clone())
                        .header(http::header::AUTHORIZATION, bearer.clone())
                        .body(Empty::new())
                        .unwrap();
                    let client = client.clone();
                    async move {
                        let response = client.request(request).await.unwrap();
                        response.into_body().collect().await.unwrap().to_bytes()
                    }
                })
                .collect();
            for body in futures_join(calls).await {
                assert!(!body.is_empty());
            }
        })
    })
}

/// 32 identical concurrent GETs per operation: what coalescing saves.
fn fan_out_part(setup: &Setup) {
    let rounds = 2_000 / FAN_OUT;
    let mut ratios = Vec::with_capacity(ROUNDS);
    for (_, op) in &setup.fan_out {
        setup.runtime.block_on(run(op.clone(), rounds / 4, 1));
    }
    for round in 0..ROUNDS {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut times = [Duration::ZERO; 2];
        for i in order {
            times[i] = setup
                .runtime
                .block_on(run(setup.fan_out[i].1.clone(), rounds, 1));
        }
        ratios.push(times[0].as_secs_f64() / times[1].as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "fan-out ({FAN_OUT} identical concurrent GETs)  xhttp median {:.3}  min {:.3}  max {:.3}  ({ROUNDS} rounds of {rounds} fan-outs)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

fn main() {
    let setup = setup();
    // For profilers: one client alone at concurrency 32 (`XHTTP_BENCH_PROFILE=xhttp perf record ...`).
    if let Ok(name) = std::env::var("XHTTP_BENCH_PROFILE") {
        let (_, op) = setup
            .variants
            .iter()
            .find(|(n, _)| *n == name)
            .expect("XHTTP_BENCH_PROFILE names raw_hyper, xhttp_service or xhttp");
        let took = setup.runtime.block_on(run(op.clone(), 200_000, 32));
        println!("{name}: 200000 requests at concurrency 32 in {took:?}");
        return;
    }
    if std::env::var_os("XHTTP_BENCH_INTERLEAVED_ONLY").is_none() {
        let mut criterion = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(20)
            .configure_from_args();
        criterion_part(&mut criterion, &setup);
        criterion.final_summary();
    }
    interleaved_part(&setup);
    fan_out_part(&setup);
}
