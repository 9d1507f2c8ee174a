//! xhttp against raw hyper-util on a loopback server, in one process run.
//!
//! Two parts:
//! 1. criterion groups (`raw_hyper` and `xhttp`, at concurrency 1 and 32) for the usual
//!    statistics;
//! 2. interleaved rounds: raw and xhttp take turns on the same warm server, round after round,
//!    and each round's ratio (xhttp throughput / raw throughput) is printed with the median.
//!    Absolute times on a shared machine drift; a ratio taken within one round does not.
//!
//! Run: `cargo bench --bench stack` (add `-- --quick` for a shorter criterion part; set
//! `XHTTP_BENCH_INTERLEAVED_ONLY=1` to run only the interleaved rounds).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;
use xhttp_testkit::TestServer;

const PATH: &str = "/public/items/1";
const ROUNDS: usize = 15;

#[derive(Clone)]
struct Raw {
    client: HyperClient<HttpConnector, Empty<Bytes>>,
    uri: http::Uri,
}

impl Raw {
    async fn call(&self) {
        let response = self.client.get(self.uri.clone()).await.unwrap();
        assert!(response.status().is_success());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(!body.is_empty());
    }
}

#[derive(Clone)]
struct Stack {
    client: xhttp::Client,
}

impl Stack {
    async fn call(&self) {
        let response = self.client.get(PATH).send().await.unwrap();
        assert!(response.status().is_success());
        assert!(!response.body().is_empty());
    }
}

/// `n` operations at the given concurrency: `concurrency` tasks, each making `n / concurrency`
/// calls back to back.
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

type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
type Op = Arc<dyn Fn() -> BoxFuture + Send + Sync>;

struct Setup {
    runtime: Runtime,
    _server: TestServer,
    raw: Op,
    stack: Op,
}

fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(TestServer::start());
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let raw = Raw {
        client: HyperClient::builder(TokioExecutor::new()).build(http),
        uri: server.url(PATH).parse().unwrap(),
    };
    let stack = Stack {
        client: xhttp::Client::builder()
            .base_url(server.base_url())
            .build()
            .unwrap(),
    };
    // Both pay the same boxing so the comparison is of the clients alone.
    let raw: Op = Arc::new(move || {
        let raw = raw.clone();
        Box::pin(async move { raw.call().await })
    });
    let stack: Op = Arc::new(move || {
        let stack = stack.clone();
        Box::pin(async move { stack.call().await })
    });
    Setup {
        runtime,
        _server: server,
        raw,
        stack,
    }
}

fn criterion_part(c: &mut Criterion, setup: &Setup) {
    for concurrency in [1usize, 32] {
        let mut group = c.benchmark_group(format!("get_c{concurrency}"));
        group.throughput(criterion::Throughput::Elements(concurrency as u64));
        for (name, op) in [("raw_hyper", &setup.raw), ("xhttp", &setup.stack)] {
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
    println!("\ninterleaved rounds: ratio = xhttp throughput / raw hyper throughput");
    for (concurrency, n) in [(1usize, 2_000usize), (32, 8_000)] {
        let mut ratios = Vec::with_capacity(ROUNDS);
        // Warm both paths (pools, allocator) before the first measured round.
        setup
            .runtime
            .block_on(run(setup.raw.clone(), n / 4, concurrency));
        setup
            .runtime
            .block_on(run(setup.stack.clone(), n / 4, concurrency));
        for round in 0..ROUNDS {
            // Alternate which goes first so drift over a round does not favour one side.
            let (raw, stack) = if round % 2 == 0 {
                let raw = setup
                    .runtime
                    .block_on(run(setup.raw.clone(), n, concurrency));
                let stack = setup
                    .runtime
                    .block_on(run(setup.stack.clone(), n, concurrency));
                (raw, stack)
            } else {
                let stack = setup
                    .runtime
                    .block_on(run(setup.stack.clone(), n, concurrency));
                let raw = setup
                    .runtime
                    .block_on(run(setup.raw.clone(), n, concurrency));
                (raw, stack)
            };
            ratios.push(raw.as_secs_f64() / stack.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "concurrency {concurrency:>2}: median {median:.3}  min {:.3}  max {:.3}  ({ROUNDS} rounds of {n} requests each)",
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}

fn main() {
    let setup = setup();
    if std::env::var_os("XHTTP_BENCH_INTERLEAVED_ONLY").is_some() {
        interleaved_part(&setup);
        return;
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    criterion_part(&mut criterion, &setup);
    criterion.final_summary();
    interleaved_part(&setup);
}
