//! Every end-to-end test runs twice: through the facade (`Client::builder()...build()`) and
//! through the public [`Stack`] over a raw hyper-util `Client<HttpConnector, Full<Bytes>>`,
//! composed with `ServiceBuilder` as a tower user would, under the facade's request API
//! (`ClientBuilder::build_over`). Same options, same server, same assertions: a count that
//! differs between the two is a difference between the facade and the stack it claims to be.
//!
//! ```ignore
//! mod common;
//! use common::{both, Via};
//!
//! both!(multi_thread, a_503_is_retried);
//! async fn a_503_is_retried(via: Via) {
//!     let server = TestServer::start().await;
//!     let client = via.client().base_url(server.base_url()).build().unwrap();
//!     // ... `client.get(..)`, `client.dedupe_stats()`, as with an `xhttp::Client`
//! }
//! ```
//!
//! generates the tests `a_503_is_retried::facade` and `a_503_is_retried::stack`. A test that
//! cannot run over a raw client (a streaming body, the facade's own transport options) stays
//! a plain `#[tokio::test]`, with a comment saying why.

// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder};
use xhttp::auth::{AuthLayer, GrantTransport, TokenManager};
use xhttp::dedupe::{DedupeLayer, DedupeLayerBuilder, DedupeStats};
use xhttp::envelope::Envelope;
use xhttp::refresh::{RefreshLayer, Triggers};
use xhttp::retry::RetryPolicy;
use xhttp::status::{ReportLayer, StatusLayer};
use xhttp::{Body, Client, Error, Origin, Stack};

/// The raw client the stack variant runs over: hyper-util's, as its users build it.
pub type RawClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// Which way a test reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `Client::builder()...build()`: the facade's own stack over its transport.
    Facade,
    /// `Stack<Full<Bytes>>` over a raw hyper-util client, under `build_over`.
    Stack,
}

impl Via {
    /// Options for a client, the facade's defaults included (retry and dedupe on).
    pub fn client(self) -> TestClientBuilder {
        TestClientBuilder {
            via: self,
            base_url: None,
            auth: None,
            retry: Setting::Default,
            dedupe: Setting::Default,
            envelope: None,
            status: None,
            report: None,
            attempt_timeout: None,
            deadline: None,
            body_limit: None,
        }
    }

    /// The transport a grant calls its token endpoint through: `xhttp::grant_transport()`,
    /// or a stack with no optional layer (attempt timeout, collect) over a raw client.
    pub fn grant_transport(self) -> GrantTransport {
        match self {
            Via::Facade => xhttp::grant_transport(),
            Via::Stack => {
                // Invariant: a stack with no optional layer and the default timeouts is valid.
                let stack = Stack::<Full<Bytes>>::builder()
                    .build()
                    .expect("the default stack options are valid");
                GrantTransport::new(over_raw_client(&stack))
            }
        }
    }
}

/// A facade option: left at the facade's default, set, or switched off.
enum Setting<T> {
    Default,
    On(T),
    Off,
}

/// What one of the client's layers was given, as `ClientBuilder::auth` and its companions
/// take it.
struct AuthOptions {
    manager: TokenManager,
    origins: Vec<String>,
    allow_insecure_loopback: bool,
    triggers: Option<Triggers>,
    refresh: bool,
}

/// The facade's options that the tests use, applied either to `Client::builder()` or to
/// `Stack::builder()` the way the facade applies them.
pub struct TestClientBuilder {
    via: Via,
    base_url: Option<String>,
    auth: Option<AuthOptions>,
    retry: Setting<RetryPolicy>,
    dedupe: Setting<DedupeLayerBuilder>,
    envelope: Option<Envelope>,
    status: Option<StatusLayer>,
    report: Option<ReportLayer>,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
    body_limit: Option<u64>,
}

impl TestClientBuilder {
    /// `ClientBuilder::base_url`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// `ClientBuilder::auth`: the token to the base URL's origin, refresh on rejection.
    pub fn auth(mut self, manager: TokenManager) -> Self {
        self.auth = Some(AuthOptions {
            manager,
            origins: Vec::new(),
            allow_insecure_loopback: false,
            triggers: None,
            refresh: true,
        });
        self
    }

    fn auth_mut(&mut self, what: &str) -> &mut AuthOptions {
        match &mut self.auth {
            Some(auth) => auth,
            None => panic!("{what} needs `auth(manager)` first"),
        }
    }

    /// `ClientBuilder::auth_origin`.
    pub fn auth_origin(mut self, url: &str) -> Self {
        self.auth_mut("auth_origin").origins.push(url.to_owned());
        self
    }

    /// `ClientBuilder::allow_insecure_loopback`.
    pub fn allow_insecure_loopback(mut self) -> Self {
        self.auth_mut("allow_insecure_loopback")
            .allow_insecure_loopback = true;
        self
    }

    /// `ClientBuilder::refresh_triggers`.
    pub fn refresh_triggers(mut self, triggers: Triggers) -> Self {
        self.auth_mut("refresh_triggers").triggers = Some(triggers);
        self
    }

    /// `ClientBuilder::without_refresh`.
    pub fn without_refresh(mut self) -> Self {
        self.auth_mut("without_refresh").refresh = false;
        self
    }

    /// `ClientBuilder::retry`.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Setting::On(policy);
        self
    }

    /// `ClientBuilder::without_retry`.
    pub fn without_retry(mut self) -> Self {
        self.retry = Setting::Off;
        self
    }

    /// `ClientBuilder::dedupe`.
    pub fn dedupe(mut self, options: DedupeLayerBuilder) -> Self {
        self.dedupe = Setting::On(options);
        self
    }

    /// `ClientBuilder::without_dedupe`.
    pub fn without_dedupe(mut self) -> Self {
        self.dedupe = Setting::Off;
        self
    }

    /// `ClientBuilder::envelope`.
    pub fn envelope(mut self, envelope: Envelope) -> Self {
        self.envelope = Some(envelope);
        self
    }

    /// `ClientBuilder::status`.
    pub fn status(mut self, layer: StatusLayer) -> Self {
        self.status = Some(layer);
        self
    }

    /// `ClientBuilder::report`.
    pub fn report(mut self, layer: ReportLayer) -> Self {
        self.report = Some(layer);
        self
    }

    /// `ClientBuilder::attempt_timeout`.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// `ClientBuilder::deadline`.
    pub fn deadline(mut self, timeout: Duration) -> Self {
        self.deadline = Some(timeout);
        self
    }

    /// `ClientBuilder::body_limit`.
    pub fn body_limit(mut self, bytes: u64) -> Self {
        self.body_limit = Some(bytes);
        self
    }

    /// The client, or the error the facade's `build` (or the stack's) gives.
    pub fn build(self) -> Result<TestClient, Error> {
        match self.via {
            Via::Facade => self.build_facade(),
            Via::Stack => self.build_stack(),
        }
    }

    fn build_facade(self) -> Result<TestClient, Error> {
        let mut builder = Client::builder();
        if let Some(url) = self.base_url {
            builder = builder.base_url(url);
        }
        if let Some(auth) = self.auth {
            builder = builder.auth(auth.manager);
            for origin in &auth.origins {
                builder = builder.auth_origin(origin);
            }
            if auth.allow_insecure_loopback {
                builder = builder.allow_insecure_loopback();
            }
            if let Some(triggers) = auth.triggers {
                builder = builder.refresh_triggers(triggers);
            }
            if !auth.refresh {
                builder = builder.without_refresh();
            }
        }
        builder = match self.retry {
            Setting::Default => builder,
            Setting::On(policy) => builder.retry(policy),
            Setting::Off => builder.without_retry(),
        };
        builder = match self.dedupe {
            Setting::Default => builder,
            Setting::On(options) => builder.dedupe(options),
            Setting::Off => builder.without_dedupe(),
        };
        if let Some(envelope) = self.envelope {
            builder = builder.envelope(envelope);
        }
        if let Some(status) = self.status {
            builder = builder.status(status);
        }
        if let Some(report) = self.report {
            builder = builder.report(report);
        }
        if let Some(timeout) = self.attempt_timeout {
            builder = builder.attempt_timeout(timeout);
        }
        if let Some(timeout) = self.deadline {
            builder = builder.deadline(timeout);
        }
        if let Some(bytes) = self.body_limit {
            builder = builder.body_limit(bytes);
        }
        let client = builder.build()?;
        Ok(TestClient {
            via: Via::Facade,
            client,
            dedupe: None,
        })
    }

    /// What `ClientBuilder::build` does with these options, spelled out with the public
    /// `Stack` and a raw hyper-util client.
    fn build_stack(self) -> Result<TestClient, Error> {
        let mut stack = Stack::<Full<Bytes>>::builder();
        if let Some(timeout) = self.attempt_timeout {
            stack = stack.attempt_timeout(timeout);
        }
        if let Some(timeout) = self.deadline {
            stack = stack.deadline(timeout);
        }
        if let Some(bytes) = self.body_limit {
            stack = stack.body_limit(bytes);
        }
        // The facade's defaults: `RetryPolicy::default()` and `DedupeLayer::builder()`.
        stack = match self.retry {
            Setting::Default => stack.retry(RetryPolicy::default()),
            Setting::On(policy) => stack.retry(policy),
            Setting::Off => stack,
        };
        stack = match self.dedupe {
            Setting::Default => stack.dedupe(DedupeLayer::builder()),
            Setting::On(options) => stack.dedupe(options),
            Setting::Off => stack,
        };
        if let Some(envelope) = self.envelope {
            stack = stack.envelope(envelope);
        }
        if let Some(status) = self.status {
            stack = stack.status(status);
        }
        if let Some(report) = self.report {
            stack = stack.report(report);
        }
        if let Some(auth) = self.auth {
            // As the facade: the given origins, then the base URL's, and refresh with the
            // layer's manager unless switched off.
            let mut layer = AuthLayer::new(auth.manager.clone(), [])
                .allow_insecure_loopback(auth.allow_insecure_loopback);
            for origin in &auth.origins {
                layer = layer.with_origin(Origin::parse(origin)?);
            }
            if let Some(origin) = self.base_url.as_deref().and_then(|b| Origin::parse(b).ok()) {
                layer = layer.with_origin(origin);
            }
            if layer.origins().is_empty() {
                return Err(Error::config(
                    "auth needs an origin: set a base URL or call auth_origin",
                ));
            }
            if auth.refresh {
                stack = stack.refresh(RefreshLayer::with_triggers(
                    auth.manager,
                    auth.triggers.unwrap_or_default(),
                ));
            }
            stack = stack.auth(layer);
        }
        let stack = stack.build()?;
        let mut builder = Client::builder();
        if let Some(url) = self.base_url {
            builder = builder.base_url(url);
        }
        let client = builder.build_over(over_raw_client(&stack))?;
        Ok(TestClient {
            via: Via::Stack,
            client,
            dedupe: stack.dedupe().cloned(),
        })
    }
}

/// `stack` over a fresh raw hyper-util client, taking `xhttp::Body` requests. The client is
/// hyper-util's default (`build_http`): unlike the facade's transport it has no connect
/// timeout, no pool timer and Nagle on, and no test here depends on those.
fn over_raw_client(stack: &Stack<Full<Bytes>>) -> KnownBytes<xhttp::BoxStack<Full<Bytes>>> {
    let raw: RawClient =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    ServiceBuilder::new()
        .layer_fn(KnownBytes)
        .layer(stack.clone())
        .service(raw)
}

/// An `xhttp::Client` built one way or the other. It derefs to the client; its
/// [`dedupe_stats`](TestClient::dedupe_stats) reads the stack's dedupe layer when the client
/// was built over one (the facade's own accessor sees no layer there, and answers zeros).
#[derive(Clone)]
pub struct TestClient {
    via: Via,
    client: Client,
    dedupe: Option<DedupeLayer>,
}

impl TestClient {
    /// What the dedupe layer has done so far (all zeros without one).
    pub fn dedupe_stats(&self) -> DedupeStats {
        match self.via {
            Via::Facade => self.client.dedupe_stats(),
            Via::Stack => self
                .dedupe
                .as_ref()
                .map(DedupeLayer::stats)
                .unwrap_or_default(),
        }
    }
}

impl std::ops::Deref for TestClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl fmt::Debug for TestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClient")
            .field("via", &self.via)
            .field("client", &self.client)
            .finish()
    }
}

/// Sends an `xhttp::Body` of known bytes as the `Full<Bytes>` a raw hyper-util client takes
/// (a reference count, no copy). A streaming body is refused with `InvalidRequest`: collecting
/// it would hide the replay cap that retry and refresh decide on, so tests of streaming bodies
/// run through the facade only.
#[derive(Clone)]
pub struct KnownBytes<S>(S);

impl<S> Service<Request<Body>> for KnownBytes<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<Bytes>, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (parts, body) = request.into_parts();
        match body.as_bytes() {
            Some(bytes) => {
                let request = Request::from_parts(parts, Full::new(bytes.clone()));
                Box::pin(self.0.call(request))
            }
            None => Box::pin(std::future::ready(Err(Error::invalid_request(
                "a streaming body cannot be sent as Full<Bytes>",
            )))),
        }
    }
}

/// Polls `condition` every millisecond; fails after 10 s.
pub async fn until(what: &str, condition: impl Fn() -> bool) {
    let wait = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .is_err()
    {
        panic!("timed out waiting for {what}");
    }
}

/// `both!(multi_thread, name)` (or `current_thread`) next to `async fn name(via: Via)`: a
/// module `name` with the tests `facade` and `stack`, running `name` with [`Via::Facade`] and
/// [`Via::Stack`] on a tokio runtime of that flavor (`multi_thread` has 2 workers). The test
/// body stays an ordinary function, which rustfmt formats and the compiler flags as unused
/// when its `both!` is forgotten.
macro_rules! both {
    (multi_thread, $name:ident) => {
        $crate::common::both!(
            @tests [#[tokio::test(flavor = "multi_thread", worker_threads = 2)]] $name
        );
    };
    (current_thread, $name:ident) => {
        $crate::common::both!(@tests [#[tokio::test]] $name);
    };
    (@tests [$(#[$attr:meta])*] $name:ident) => {
        mod $name {
            $(#[$attr])*
            async fn facade() {
                super::$name($crate::common::Via::Facade).await
            }

            $(#[$attr])*
            async fn stack() {
                super::$name($crate::common::Via::Stack).await
            }
        }
    };
}
pub(crate) use both;
