//! A 1 GiB streaming response never makes the client hold more than its body limit, and a
//! declared `Content-Length` is never trusted with a reservation of its own size.
//!
//! This test binary counts every allocation of the process (client and in-process server) and
//! records the peak, so "does not allocate more than the limit" is measured, not assumed. The
//! tests take turns ([`MEASURING`]): one test's allocations would count in another's peak.
//! Each runs through the facade and through the public stack over a raw hyper-util client
//! (`common`).
#![allow(unsafe_code)] // a counting global allocator needs `unsafe impl GlobalAlloc`

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use std::net::SocketAddr;
use std::time::Duration;

use common::{both, TestClient, Via};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use xhttp::ErrorKind;
use xhttp_testkit::TestServer;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the same arguments; the counters
// are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = CURRENT.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const GIB: u64 = 1 << 30;
const LIMIT: u64 = 4 << 20;

/// One measuring test at a time.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs one request and returns the peak growth of the heap while it ran.
async fn peak_growth_of(client: &TestClient, path: &str) -> (usize, xhttp::Error) {
    let baseline = CURRENT.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    let err = client
        .get(path)
        .body_limit(LIMIT)
        .send()
        .await
        .expect_err("a 1 GiB body is over the limit");
    let growth = PEAK.load(Ordering::SeqCst).saturating_sub(baseline);
    eprintln!("{path}: peak heap growth {growth} bytes ({err})");
    (growth, err)
}

both!(
    current_thread,
    a_1_gib_streaming_response_stays_within_the_limit
);
async fn a_1_gib_streaming_response_stays_within_the_limit(via: Via) {
    let _turn = MEASURING.lock().await;
    let server = TestServer::start().await;
    let client = via.client().base_url(server.base_url()).build().unwrap();
    // Warm the pool and the runtime so their one-time allocations are not counted.
    client.get("/bytes/10").send().await.unwrap();

    // Declared length: refused from the head, before a byte of the body is read.
    let (growth, err) = peak_growth_of(&client, &format!("/bytes/{GIB}")).await;
    assert_eq!(err.kind(), ErrorKind::BodyTooLarge);
    assert!(
        growth < (1 << 20),
        "declared 1 GiB: peak growth {growth} bytes"
    );

    // Chunked: read until the limit passes, and never more than the limit in memory
    // (plus what hyper and the in-process server buffer: well under 2 MiB).
    let (growth, err) = peak_growth_of(&client, &format!("/bytes-chunked/{GIB}")).await;
    assert_eq!(err.kind(), ErrorKind::BodyTooLarge);
    let allowed = LIMIT as usize + (2 << 20);
    assert!(
        growth < allowed,
        "chunked 1 GiB: peak growth {growth} bytes, allowed {allowed}"
    );
    assert!(
        server.counters().bytes_streamed() < GIB / 4,
        "the server stopped streaming once the client gave up"
    );
}

/// A server that lies: every response head declares `content-length: {declared}`, then 4 KB
/// of body arrive in two writes (so the client sees two frames) and the connection closes.
async fn lying_server(declared: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\n\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(&[b'x'; 2048]).await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = stream.write_all(&[b'y'; 2048]).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

both!(
    current_thread,
    a_declared_length_of_10_pow_18_under_an_unlimited_limit_is_a_transport_error
);
async fn a_declared_length_of_10_pow_18_under_an_unlimited_limit_is_a_transport_error(via: Via) {
    // Reserving what the head declares was an allocation failure: the process aborted.
    let _turn = MEASURING.lock().await;
    let addr = lying_server(1_000_000_000_000_000_000).await;
    let client = via
        .client()
        .base_url(format!("http://{addr}"))
        .body_limit(u64::MAX)
        .build()
        .unwrap();
    let err = client
        .get("/")
        .send()
        .await
        .expect_err("the body ends 10^18 - 4096 bytes early");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(
        err.to_string().contains("before the body was complete"),
        "{err}"
    );
}

both!(
    current_thread,
    a_declared_gib_with_4_kb_received_reserves_little
);
async fn a_declared_gib_with_4_kb_received_reserves_little(via: Via) {
    let _turn = MEASURING.lock().await;
    let addr = lying_server(GIB).await;
    let client = via
        .client()
        .base_url(format!("http://{addr}"))
        .body_limit(GIB)
        .without_retry()
        .build()
        .unwrap();
    // Warm the runtime, the pool's types and the connector outside the measurement.
    let _ = client.get("/warm").send().await;

    let baseline = CURRENT.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    let err = client
        .get("/")
        .send()
        .await
        .expect_err("the body ends early");
    let growth = PEAK.load(Ordering::SeqCst).saturating_sub(baseline);
    eprintln!("declared 1 GiB, 4 KB sent: peak heap growth {growth} bytes ({err})");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(
        growth < (1 << 20),
        "declared 1 GiB, 4 KB received: peak growth {growth} bytes"
    );
}
