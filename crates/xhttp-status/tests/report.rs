//! ReportLayer: one report per caller, whatever happened below.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use tower::{service_fn, Layer, Service, ServiceExt};
use xhttp_core::{Error, ErrorKind};
use xhttp_status::{
    ErrorLog, ErrorNotice, ErrorRecord, Notice, ReportLayer, ReportLayerBuilder, SuccessNotice,
};
use xhttp_testkit::ReadinessProbe;

/// Every notice the layer gave, in order.
#[derive(Clone, Default)]
struct Shown(Arc<Mutex<Vec<Notice>>>);

impl Shown {
    fn builder(&self) -> ReportLayerBuilder {
        let shown = self.0.clone();
        ReportLayer::builder().notifier(move |notice: &Notice| {
            shown.lock().unwrap().push(notice.clone());
        })
    }

    fn notices(&self) -> Vec<Notice> {
        self.0.lock().unwrap().clone()
    }
}

fn get(url: &str) -> Request<()> {
    Request::get(url).body(()).unwrap()
}

/// An upstream failing every call with a clone of `err`.
fn failing(
    err: Error,
) -> impl Service<Request<()>, Response = Response<Bytes>, Error = Error, Future: Send> + Clone {
    service_fn(move |_request: Request<()>| {
        let err = err.clone();
        async move { Err::<Response<Bytes>, _>(err) }
    })
}

#[tokio::test(start_paused = true)]
async fn four_failures_inside_one_call_make_one_notice_and_one_record() {
    let trips = Arc::new(AtomicUsize::new(0));
    let counter = trips.clone();
    // What retry below does: four trips in one call, then the final error.
    let upstream = service_fn(move |_request: Request<()>| {
        let counter = counter.clone();
        async move {
            let mut last = None;
            for _ in 0..4 {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                last = Some(Error::from_status(StatusCode::SERVICE_UNAVAILABLE));
            }
            let err = last.unwrap_or_else(|| Error::new(ErrorKind::Internal));
            Err::<Response<Bytes>, _>(err.with_attempts(4))
        }
    });
    let shown = Shown::default();
    let layer = shown.builder().build();

    let err = layer
        .layer(upstream)
        .oneshot(
            Request::post("https://api.example.com/orders")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap_err();

    assert_eq!(err.attempts(), 4);
    assert_eq!(trips.load(Ordering::SeqCst), 4);
    let notices = shown.notices();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].mode, ErrorNotice::Message);
    assert_eq!(notices[0].status, Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(notices[0].kind, Some(ErrorKind::Status));
    assert!(!notices[0].success);
    let records = layer.error_log().unwrap().records();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.method, Method::POST);
    assert_eq!(record.url, "https://api.example.com/orders");
    assert_eq!(record.status, Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(record.kind, ErrorKind::Status);
    assert_eq!(record.attempts, 4);
    assert_eq!(record.duration, Duration::from_secs(2));
    assert_eq!(record.message, "server answered 503 Service Unavailable");
}

#[tokio::test]
async fn error_notice_none_records_without_a_notice() {
    let shown = Shown::default();
    let layer = shown.builder().build();
    let service = layer.layer(failing(Error::business(40001, "no such user")));

    let mut quiet = get("https://api.example.com/users/7");
    quiet.extensions_mut().insert(ErrorNotice::None);
    service.clone().oneshot(quiet).await.unwrap_err();
    assert!(shown.notices().is_empty());
    assert_eq!(layer.error_log().unwrap().len(), 1);
    let record = &layer.error_log().unwrap().records()[0];
    assert_eq!(record.business_code, Some(40001.into()));
    assert_eq!(record.message, "no such user");

    let mut modal = get("https://api.example.com/users/8");
    modal.extensions_mut().insert(ErrorNotice::Modal);
    service.oneshot(modal).await.unwrap_err();
    assert_eq!(shown.notices()[0].mode, ErrorNotice::Modal);
}

#[tokio::test]
async fn the_default_notice_mode_is_configurable() {
    let shown = Shown::default();
    let layer = shown.builder().default_notice(ErrorNotice::None).build();
    let service = layer.layer(failing(Error::new(ErrorKind::Transport)));
    service
        .clone()
        .oneshot(get("https://a.example/"))
        .await
        .unwrap_err();
    assert!(shown.notices().is_empty());

    let mut loud = get("https://a.example/");
    loud.extensions_mut().insert(ErrorNotice::Message);
    service.oneshot(loud).await.unwrap_err();
    assert_eq!(shown.notices().len(), 1);
    assert_eq!(layer.error_log().unwrap().len(), 2);
}

#[tokio::test]
async fn a_thousand_failures_leave_the_newest_two_hundred_in_the_ring() {
    let layer = Shown::default().builder().build();
    let mut service = layer.layer(failing(Error::from_status(StatusCode::BAD_GATEWAY)));
    let ring = layer.error_log().unwrap();
    for i in 0..1_000 {
        let url = format!("https://api.example.com/items/{i}");
        service
            .ready()
            .await
            .unwrap()
            .call(get(&url))
            .await
            .unwrap_err();
        assert!(ring.len() <= 200);
    }
    let records = ring.records();
    assert_eq!(records.len(), 200);
    assert_eq!(records[0].url, "https://api.example.com/items/800");
    assert_eq!(records[199].url, "https://api.example.com/items/999");
}

#[tokio::test(start_paused = true)]
async fn identical_failures_within_the_window_are_notified_once() {
    let shown = Shown::default();
    let layer = shown.builder().build();
    let service = layer.layer(failing(Error::from_status(StatusCode::SERVICE_UNAVAILABLE)));

    for _ in 0..10 {
        service
            .clone()
            .oneshot(get("https://a.example/x"))
            .await
            .unwrap_err();
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert_eq!(shown.notices().len(), 1);
    assert_eq!(layer.suppressed_repeats(), 9);
    // Every failure is still recorded.
    assert_eq!(layer.error_log().unwrap().len(), 10);

    // The window runs from the notice shown, 1 s ago: still held back at 2.9 s.
    tokio::time::advance(Duration::from_millis(1_900)).await;
    service
        .clone()
        .oneshot(get("https://a.example/x"))
        .await
        .unwrap_err();
    assert_eq!(shown.notices().len(), 1);
    assert_eq!(layer.suppressed_repeats(), 10);

    tokio::time::advance(Duration::from_millis(200)).await;
    service
        .clone()
        .oneshot(get("https://a.example/x"))
        .await
        .unwrap_err();
    assert_eq!(shown.notices().len(), 2);

    // A different status is a different notice.
    let other = layer.layer(failing(Error::from_status(StatusCode::BAD_GATEWAY)));
    other.oneshot(get("https://a.example/x")).await.unwrap_err();
    assert_eq!(shown.notices().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_zero_repeat_window_notifies_every_failure() {
    let shown = Shown::default();
    let layer = shown.builder().repeat_window(Duration::ZERO).build();
    let service = layer.layer(failing(Error::from_status(StatusCode::SERVICE_UNAVAILABLE)));
    for _ in 0..3 {
        service
            .clone()
            .oneshot(get("https://a.example/"))
            .await
            .unwrap_err();
    }
    assert_eq!(shown.notices().len(), 3);
    assert_eq!(layer.suppressed_repeats(), 0);
}

#[tokio::test]
async fn on_unauthorized_fires_once_per_failed_caller_of_those_kinds() {
    let fired = Arc::new(Mutex::new(Vec::new()));
    let seen = fired.clone();
    let layer = ReportLayer::builder()
        .notifier(|_: &Notice| {})
        .on_unauthorized(move |err: &Error| seen.lock().unwrap().push(err.kind()))
        .build();

    let unauthorized = layer.layer(failing(
        Error::new(ErrorKind::Unauthorized).with_status(StatusCode::UNAUTHORIZED),
    ));
    for _ in 0..3 {
        unauthorized
            .clone()
            .oneshot(get("https://a.example/"))
            .await
            .unwrap_err();
    }
    assert_eq!(*fired.lock().unwrap(), [ErrorKind::Unauthorized; 3]);

    for err in [
        Error::from_status(StatusCode::UNAUTHORIZED),
        Error::from_status(StatusCode::FORBIDDEN),
        Error::new(ErrorKind::RefreshFailed),
        Error::new(ErrorKind::Transport),
    ] {
        layer
            .layer(failing(err))
            .oneshot(get("https://a.example/"))
            .await
            .unwrap_err();
    }
    assert_eq!(fired.lock().unwrap().len(), 3);

    layer
        .layer(failing(Error::new(ErrorKind::SessionExpired)))
        .oneshot(get("https://a.example/"))
        .await
        .unwrap_err();
    assert_eq!(fired.lock().unwrap()[3], ErrorKind::SessionExpired);
}

#[tokio::test]
async fn a_success_notice_is_given_only_when_asked() {
    let shown = Shown::default();
    let layer = shown.builder().build();
    let service = layer.layer(service_fn(|_request: Request<()>| async {
        let mut response = Response::new(Bytes::from_static(b"saved"));
        *response.status_mut() = StatusCode::CREATED;
        Ok::<_, io::Error>(response)
    }));

    let response = service
        .clone()
        .oneshot(get("https://a.example/"))
        .await
        .unwrap();
    assert_eq!(response.body(), "saved");
    assert!(shown.notices().is_empty());

    let mut save = Request::post("https://a.example/items").body(()).unwrap();
    save.extensions_mut().insert(SuccessNotice::new("Saved"));
    let response = service.oneshot(save).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let notices = shown.notices();
    assert_eq!(notices.len(), 1);
    assert!(notices[0].success);
    assert_eq!(notices[0].message, "Saved");
    assert_eq!(notices[0].kind, None);
    assert_eq!(notices[0].status, Some(StatusCode::CREATED));
    assert!(layer.error_log().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_caller_gets_no_notice_and_leaves_no_record() {
    let shown = Shown::default();
    let layer = shown.builder().build();
    let service = layer.layer(service_fn(|_request: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Err::<Response<Bytes>, _>(Error::from_status(StatusCode::GATEWAY_TIMEOUT))
    }));

    let call = service.oneshot(get("https://a.example/slow"));
    assert!(tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .is_err());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(shown.notices().is_empty());
    assert!(layer.error_log().unwrap().is_empty());
}

#[tokio::test]
async fn inner_errors_of_any_type_become_errors_and_are_reported() {
    let layer = Shown::default().builder().build();
    let service = layer.layer(service_fn(|_request: Request<()>| async {
        Err::<Response<Bytes>, _>(io::Error::other("connection reset"))
    }));
    let err = service
        .oneshot(get("https://a.example/"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    let record = &layer.error_log().unwrap().records()[0];
    assert_eq!(record.kind, ErrorKind::Transport);
    assert_eq!(record.message, "connection failed");
}

#[tokio::test]
async fn a_custom_error_log_receives_the_records() {
    #[derive(Default)]
    struct Urls(Mutex<Vec<String>>);
    impl ErrorLog for Urls {
        fn record(&self, record: ErrorRecord) {
            self.0.lock().unwrap().push(record.url);
        }
    }

    let urls = Arc::new(Urls::default());
    let layer = Shown::default().builder().error_log(urls.clone()).build();
    assert!(layer.error_log().is_none());
    layer
        .layer(failing(Error::new(ErrorKind::Decode)))
        .oneshot(get("https://a.example/p?client_secret=x"))
        .await
        .unwrap_err();
    assert_eq!(
        *urls.0.lock().unwrap(),
        ["https://a.example/p?client_secret=REDACTED"]
    );
}

#[tokio::test]
async fn readiness_passes_through_and_call_uses_the_ready_service() {
    let probe = ReadinessProbe::new(Response::new(Bytes::from_static(b"pong")));
    let layer = ReportLayer::new();
    let service = layer.layer(probe.clone());
    let response = service
        .clone()
        .oneshot(get("https://a.example/"))
        .await
        .unwrap();
    assert_eq!(response.body(), "pong");

    // A call without poll_ready breaks the probe's contract: its error is reported as ours.
    let mut not_ready = service.clone();
    let err = not_ready.call(get("https://a.example/")).await.unwrap_err();
    assert!(format!("{err:?}").contains("readiness contract"), "{err:?}");
    assert_eq!(probe.calls(), 1);
    assert_eq!(layer.error_log().unwrap().len(), 1);
}

#[test]
fn the_layer_the_service_and_its_future_are_send_and_sync() {
    fn assert_send<T: Send>() {}
    fn assert_sync<T: Sync>() {}
    type Upstream = ReadinessProbe<Response<Bytes>>;
    type Service = xhttp_status::Report<Upstream>;
    assert_send::<Service>();
    assert_sync::<Service>();
    assert_send::<<Service as tower::Service<Request<()>>>::Future>();
    assert_send::<ReportLayer>();
    assert_sync::<ReportLayer>();
    assert_send::<ReportLayerBuilder>();
}
