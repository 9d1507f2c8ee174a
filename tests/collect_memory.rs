//! A 1 GiB streaming response never makes the client hold more than its body limit.
//!
//! This test binary counts every allocation of the process (client and in-process server) and
//! records the peak, so "does not allocate more than the limit" is measured, not assumed.
#![allow(unsafe_code)] // a counting global allocator needs `unsafe impl GlobalAlloc`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use xhttp::{Client, ErrorKind};
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

/// Runs one request and returns the peak growth of the heap while it ran.
async fn peak_growth_of(client: &Client, path: &str) -> (usize, xhttp::Error) {
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

#[tokio::test]
async fn a_1_gib_streaming_response_stays_within_the_limit() {
    let server = TestServer::start().await;
    let client = Client::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
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
