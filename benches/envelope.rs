//! Unwrapping a 1 MiB envelope: xhttp's slice of the original bytes against the usual way
//! (parse into `serde_json::Value`, take `result`, encode it again), in one process run.
//!
//! Run: `cargo bench --bench envelope`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use xhttp::envelope::{unwrap, Envelope};

/// A vben envelope around about 1 MiB of records.
fn body() -> Bytes {
    let mut records = String::from("[");
    let mut i = 0;
    while records.len() < 1 << 20 {
        if i > 0 {
            records.push(',');
        }
        records.push_str(&format!(
            r#"{{"id":{i},"name":"item {i}","price":{}.{:02},"tags":["a","b"],"note":"  kept as is  "}}"#,
            i * 3,
            i % 100
        ));
        i += 1;
    }
    records.push(']');
    Bytes::from(format!(r#"{{"code":0,"message":"ok","result":{records}}}"#))
}

fn response(body: &Bytes) -> http::Response<Bytes> {
    let mut response = http::Response::new(body.clone());
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn slice(body: &Bytes, envelope: &Envelope) -> Bytes {
    unwrap(response(body), envelope).unwrap().into_body()
}

fn reencode(body: &Bytes) -> Bytes {
    let mut value: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(value["code"], 0);
    let result = value["result"].take();
    Bytes::from(serde_json::to_vec(&result).unwrap())
}

fn main() {
    let body = body();
    let envelope = Envelope::vben();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&slice(&body, &envelope)).unwrap(),
        serde_json::from_slice::<serde_json::Value>(&reencode(&body)).unwrap(),
        "both ways give the same data"
    );

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    let mut group = criterion.benchmark_group("envelope_1mib");
    group.throughput(criterion::Throughput::Bytes(body.len() as u64));
    group.bench_function("xhttp_slice", |b| b.iter(|| slice(&body, &envelope)));
    group.bench_function("value_reencode", |b| b.iter(|| reencode(&body)));
    group.finish();
    criterion.final_summary();

    // Interleaved rounds: the ratio of the two in each round.
    let mut ratios = Vec::new();
    for _ in 0..15 {
        let start = Instant::now();
        for _ in 0..10 {
            std::hint::black_box(slice(&body, &envelope));
        }
        let ours = start.elapsed();
        let start = Instant::now();
        for _ in 0..10 {
            std::hint::black_box(reencode(&body));
        }
        let theirs = start.elapsed();
        ratios.push(theirs.as_secs_f64() / ours.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "\nenvelope unwrap of {} bytes: xhttp is {:.1}x faster than Value + re-encode (median; min {:.1}, max {:.1}; 15 rounds of 10)",
        body.len(),
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
