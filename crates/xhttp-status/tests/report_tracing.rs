//! ReportLayer never logs a secret: its own binary, because a thread's default `tracing`
//! subscriber misses events whose callsites other tests of the same binary register
//! concurrently on their threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer, ServiceExt};
use xhttp_core::Error;
use xhttp_status::ReportLayer;

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_the_record_the_notice_or_any_tracing_event() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // The test runs on one thread, so the thread's default subscriber sees every event.
    let _guard = tracing::subscriber::set_default(subscriber);

    let url = "https://api.example.com/files?page=2&access_token=SECRET-123";
    let request = Request::get(url).body(()).unwrap();
    // The server quotes the token back in its message, and the error records the request.
    let upstream_err = Error::from_status(StatusCode::UNAUTHORIZED)
        .with_message("token access_token=SECRET-123 rejected")
        .with_request(&request);
    // The default notifier: its tracing event is captured too.
    let layer = ReportLayer::new();
    layer
        .layer(service_fn(move |_request: Request<()>| {
            let err = upstream_err.clone();
            async move { Err::<Response<Bytes>, _>(err) }
        }))
        .oneshot(request)
        .await
        .unwrap_err();

    let record = &layer.error_log().unwrap().records()[0];
    assert_eq!(
        record.url,
        "https://api.example.com/files?page=2&access_token=REDACTED"
    );
    assert!(!format!("{record:?}").contains("SECRET-123"), "{record:?}");
    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(output.contains("xhttp::report"), "{output}");
    assert!(output.contains("xhttp::notice"), "{output}");
    assert!(output.contains("access_token=REDACTED"), "{output}");
    assert!(!output.contains("SECRET-123"), "{output}");
}
