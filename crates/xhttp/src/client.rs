//! [`Client`] and [`ClientBuilder`]: the composed stack behind a reqwest-like front.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use xhttp_auth::{AuthLayer, SkipAuth, TokenManager};
use xhttp_core::Origin;
use xhttp_core::{Body, BodyLimit, Error};
use xhttp_dedupe::{DedupeLayer, DedupeLayerBuilder, DedupeStats};
use xhttp_envelope::Envelope;
use xhttp_refresh::{RefreshLayer, Triggers};
use xhttp_retry::RetryPolicy;
use xhttp_status::{ReportLayer, StatusLayer};

use crate::future::ResponseFuture;
use crate::request::RequestBuilder;
use crate::stack::{check_timeouts, Stack, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_DEADLINE};
use crate::transport::{AttemptTimeoutLayer, CollectLayer, HttpTransport, HttpTransportBuilder};
use crate::user_info;

/// The composed stack as a plain tower service, for users who add their own layers.
pub type BoxService = BoxCloneSyncService<Request<Body>, Response<Bytes>, Error>;

/// The response body at the transport end of a client with
/// [`transport_layer`](ClientBuilder::transport_layer)s: whatever those layers answer with,
/// boxed.
pub type TransportBody = UnsyncBoxBody<Bytes, BoxError>;

/// The transport end of the stack, below collect, as the layers given to
/// [`ClientBuilder::transport_layer`] see it: the HTTP transport (or the layers added
/// before), boxed.
pub type BoxTransport = BoxCloneSyncService<Request<Body>, Response<TransportBody>, BoxError>;

/// One layer at the transport end, applied at build time.
type TransportLayerFn = Box<dyn FnOnce(BoxTransport) -> BoxTransport + Send>;

/// One layer above the stack, applied at build time.
type OuterLayerFn = Box<dyn FnOnce(BoxService) -> BoxService + Send>;

/// An HTTP client with the xhttp stack inside. Cheap to clone (an `Arc`), `Send + Sync`, so
/// it fits in axum state and is shared by every task.
///
/// ```no_run
/// # async fn run() -> Result<(), xhttp::Error> {
/// #[derive(serde::Deserialize)]
/// struct Item { id: u64, name: String }
///
/// let client = xhttp::Client::builder()
///     .base_url("https://api.example.com/v1")
///     .build()?;
/// let item: Item = client.get("/items/7").send().await?.json()?;
/// println!("{} {}", item.id, item.name);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    dedupe: Option<DedupeLayer>,
    /// The base URL without its trailing slash, ready to have a path appended. It may hold
    /// user-info: every request built from it passes `user_info::into_basic_auth`.
    base: Option<String>,
    /// The origins the auth layer sends its token to (empty without auth), so that user-info
    /// to one of them is refused instead of sending two credentials; `None` over a service of
    /// one's own, whose auth the client cannot see: there user-info is refused everywhere
    /// (unless the request skips auth).
    auth_origins: Option<Vec<Origin>>,
    default_headers: HeaderMap,
    service: BoxService,
}

impl Client {
    /// A client over `service`, the whole stack of one's own (see
    /// [`ClientBuilder::build_over`], which also takes a base URL and default headers); URLs
    /// are absolute.
    ///
    /// ```
    /// let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
    ///     .build_http::<xhttp::Body>();
    /// let stack: xhttp::Stack = xhttp::Stack::builder().build().unwrap();
    /// let client = xhttp::Client::from_service(tower::Layer::layer(&stack, hyper));
    /// # drop(client);
    /// ```
    pub fn from_service<S>(service: S) -> Client
    where
        S: Service<Request<Body>, Response = Response<Bytes>, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        // Invariant: a fresh builder has no option that configures the stack, and no base
        // URL to parse, so `build_over` cannot fail.
        ClientBuilder::new()
            .build_over(service)
            .expect("a fresh builder sets no stack option")
    }

    /// A client with no base URL and the default stack.
    ///
    /// ```
    /// let client = xhttp::Client::new();
    /// # drop(client);
    /// ```
    pub fn new() -> Client {
        // Invariant: the default builder has no base URL, no header and no timeout to
        // validate, so `build` cannot fail (a test below holds it to that).
        ClientBuilder::new()
            .build()
            .expect("the default client options are valid")
    }

    /// Options for a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Starts a request. `url` is joined to the base URL unless it is absolute.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let request = self.resolve(url).map(|uri| {
            let mut request = Request::new(Body::empty());
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.headers_mut() = self.inner.default_headers.clone();
            request
        });
        RequestBuilder::new(self.clone(), request)
    }

    /// Starts a GET.
    pub fn get(&self, url: &str) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// Starts a POST.
    pub fn post(&self, url: &str) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// Starts a PUT.
    pub fn put(&self, url: &str) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// Starts a PATCH.
    pub fn patch(&self, url: &str) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// Starts a DELETE.
    pub fn delete(&self, url: &str) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// Starts a HEAD.
    pub fn head(&self, url: &str) -> RequestBuilder {
        self.request(Method::HEAD, url)
    }

    /// The composed stack as a tower service (a clone of it).
    ///
    /// ```
    /// use tower::ServiceExt;
    /// # async fn run(client: xhttp::Client) -> Result<(), xhttp::Error> {
    /// let request = http::Request::get("http://127.0.0.1:8080/health")
    ///     .body(xhttp::Body::empty())
    ///     .map_err(|e| xhttp::Error::invalid_request(e.to_string()))?;
    /// let response = client.service().oneshot(request).await?;
    /// # drop(response); Ok(()) }
    /// ```
    pub fn service(&self) -> BoxService {
        self.inner.service.clone()
    }

    /// What the dedupe layer has done so far (all zeros without one). A client over a service
    /// of one's own ([`ClientBuilder::build_over`], [`Client::from_service`]) cannot see into
    /// that service: its statistics are the stack's, [`Stack::dedupe`](crate::Stack::dedupe).
    pub fn dedupe_stats(&self) -> DedupeStats {
        self.inner
            .dedupe
            .as_ref()
            .map(DedupeLayer::stats)
            .unwrap_or_default()
    }

    /// Sends a built request through the stack. Errors carry the method and the redacted URI.
    ///
    /// User-info in the URL (`https://user:password@host/`) is sent as an
    /// `Authorization: Basic` header and cut from the URI, which the stack below logs and pools
    /// on; next to another `Authorization` header, or to an origin the client's auth covers,
    /// it is an `InvalidRequest` error rather than two credentials or a silently dropped one.
    /// ([`Client::service`] is the raw stack: requests given to it are sent as they are.)
    ///
    /// ```no_run
    /// # async fn run(client: xhttp::Client) -> Result<(), xhttp::Error> {
    /// let request = client.get("/items/7").build()?;
    /// let response = client.execute(request).await?;
    /// # drop(response); Ok(()) }
    /// ```
    pub fn execute(&self, mut request: Request<Body>) -> ResponseFuture {
        if let Err(err) = self.prepare(&mut request) {
            return ResponseFuture::failed(err);
        }
        ResponseFuture::new(self.inner.service.clone(), request)
    }

    /// What every request passes before it enters the stack: user-info becomes a header.
    pub(crate) fn prepare(&self, request: &mut Request<Body>) -> Result<(), Error> {
        if !user_info::has_user_info(request.uri()) {
            return Ok(());
        }
        let auth_applies =
            request.extensions().get::<SkipAuth>().is_none()
                && self.inner.auth_origins.as_ref().is_none_or(|origins| {
                    origins.iter().any(|origin| origin.matches(request.uri()))
                });
        user_info::into_basic_auth(request, auth_applies)
    }

    /// Joins `url` to the base URL, or takes it as it is when absolute; only `http` and
    /// `https` URLs with a host pass.
    fn resolve(&self, url: &str) -> Result<Uri, Error> {
        if has_scheme(url) {
            return parse_http_url(url);
        }
        let Some(base) = &self.inner.base else {
            return Err(Error::invalid_request(
                "relative URL without a base URL on the client",
            ));
        };
        let path = url.trim_start_matches('/');
        let mut full = String::with_capacity(base.len() + 1 + path.len());
        full.push_str(base);
        full.push('/');
        full.push_str(path);
        // `Uri: TryFrom<String>` keeps the string's buffer instead of copying it.
        check_http_uri(Uri::try_from(full))
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field(
                "base_url",
                &self.inner.base.as_deref().map(|base| {
                    base.parse::<Uri>()
                        .map(|uri| xhttp_core::redact::uri(&uri))
                        .unwrap_or_default()
                }),
            )
            .finish_non_exhaustive()
    }
}

fn has_scheme(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// Parses an absolute `http`/`https` URL with a host.
fn parse_http_url(url: &str) -> Result<Uri, Error> {
    check_http_uri(url.parse())
}

fn check_http_uri(parsed: Result<Uri, http::uri::InvalidUri>) -> Result<Uri, Error> {
    let uri = parsed.map_err(|e| Error::invalid_request(format!("malformed URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(Error::invalid_request(format!(
                "unsupported URL scheme `{other}` (only http and https)"
            )))
        }
        None => return Err(Error::invalid_request("URL has no scheme")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::invalid_request("URL has no host"));
    }
    Ok(uri)
}

/// Applies the layers above the stack, the first added outermost.
fn wrap(layers: Vec<OuterLayerFn>, service: BoxService) -> BoxService {
    layers
        .into_iter()
        .rev()
        .fold(service, |inner, layer| layer(inner))
}

/// Boxes a transport-end service, its body and its error.
fn box_transport<S, B>(service: S) -> BoxTransport
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxTransport::new(
        service
            .map_response(|response: Response<B>| {
                response.map(|body| body.map_err(Into::into).boxed_unsync())
            })
            .map_err(Into::into),
    )
}

/// The small stack a grant calls its token endpoint through: transport, collect, attempt
/// timeout, and nothing else (no auth, no refresh), so that a refresh can never wait on
/// itself.
///
/// ```
/// let grant = xhttp::auth::OAuth2Refresh::new(
///     xhttp::grant_transport(),
///     "https://auth.example.com/oauth/token",
/// )
/// .unwrap()
/// .client_id("admin-console");
/// let manager = xhttp::auth::TokenManager::builder(grant).build();
/// # drop(manager);
/// ```
pub fn grant_transport() -> xhttp_auth::GrantTransport {
    xhttp_auth::GrantTransport::new(
        ServiceBuilder::new()
            .layer(AttemptTimeoutLayer::new(DEFAULT_ATTEMPT_TIMEOUT))
            .layer(CollectLayer::new())
            .service(HttpTransport::default()),
    )
}

/// Options of a [`Client`]; later layers add their own.
///
/// ```
/// use std::time::Duration;
/// let client = xhttp::Client::builder()
///     .base_url("http://127.0.0.1:8080/api")
///     .default_header("x-app", "admin")
///     .attempt_timeout(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// # drop(client);
/// ```
///
/// Its `Debug` never prints a credential: the base URL without its user-info, the default
/// headers by name only.
///
/// ```
/// let builder = xhttp::Client::builder()
///     .base_url("https://bob:hunter2@api.example.com")
///     .default_header("x-api-key", "k-123");
/// let shown = format!("{builder:?}");
/// assert!(shown.contains("api.example.com") && shown.contains("x-api-key"));
/// assert!(!shown.contains("hunter2") && !shown.contains("k-123"));
/// ```
pub struct ClientBuilder {
    base_url: Option<String>,
    default_headers: HeaderMap,
    attempt_timeout: Duration,
    deadline: Duration,
    retry: Option<RetryPolicy>,
    dedupe: Option<DedupeLayerBuilder>,
    envelope: Option<Envelope>,
    status: Option<StatusLayer>,
    report: Option<ReportLayer>,
    body_limit: BodyLimit,
    transport: HttpTransportBuilder,
    auth: Option<AuthOptions>,
    transport_layers: Vec<TransportLayerFn>,
    outer_layers: Vec<OuterLayerFn>,
    /// The first option set that configures the stack, for `build_over`, which takes the
    /// stack from its service and refuses to drop options silently.
    stack_options: Option<&'static str>,
    error: Option<Error>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // User-info and header values may be credentials: neither is printed.
        let base_url = self
            .base_url
            .as_deref()
            .map(|url| match url.parse::<Uri>() {
                Ok(uri) => xhttp_core::redact::uri(&uri),
                Err(_) => "<malformed URL>".to_owned(),
            });
        f.debug_struct("ClientBuilder")
            .field("base_url", &base_url)
            .field(
                "default_headers",
                &crate::response::HeaderNames(&self.default_headers),
            )
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("retry", &self.retry)
            .field("dedupe", &self.dedupe)
            .field("envelope", &self.envelope)
            .field("status", &self.status)
            .field("report", &self.report)
            .field("body_limit", &self.body_limit)
            .field("transport", &self.transport)
            .field("auth", &self.auth)
            .field("transport_layers", &self.transport_layers.len())
            .field("layers", &self.outer_layers.len())
            .field("stack_options", &self.stack_options)
            .field("error", &self.error)
            .finish()
    }
}

/// What `ClientBuilder::auth` and its companions configured.
#[derive(Debug)]
struct AuthOptions {
    /// The layer, with the origins, header and scheme given so far; the base URL's origin
    /// joins it at build time.
    layer: AuthLayer,
    triggers: Option<Triggers>,
    refresh: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder::new()
    }
}

impl ClientBuilder {
    /// The defaults: no base URL, no default headers, attempt timeout 10 s, body limit
    /// 16 MiB, the default transport.
    pub fn new() -> Self {
        ClientBuilder {
            base_url: None,
            // Empty, so that a request's header map costs no allocation; like reqwest, no
            // `user-agent` unless you set one with `default_header`.
            default_headers: HeaderMap::new(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            retry: Some(RetryPolicy::default()),
            dedupe: Some(DedupeLayer::builder()),
            envelope: None,
            status: None,
            report: None,
            body_limit: BodyLimit::DEFAULT,
            transport: HttpTransport::builder(),
            auth: None,
            transport_layers: Vec::new(),
            outer_layers: Vec::new(),
            stack_options: None,
            error: None,
        }
    }

    /// Sends the manager's token with every request to the base URL's origin (add others with
    /// [`auth_origin`](ClientBuilder::auth_origin)), and refreshes and replays once on a
    /// rejection (401, `invalid_token`, gRPC UNAUTHENTICATED; add business codes with
    /// [`refresh_triggers`](ClientBuilder::refresh_triggers)).
    pub fn auth(self, manager: TokenManager) -> Self {
        self.auth_layer(AuthLayer::new(manager, []))
    }

    /// [`auth`](ClientBuilder::auth) with an [`AuthLayer`] of one's own: its header and
    /// scheme (a bare `access_token` header, say), its origins (the base URL's joins them),
    /// its loopback rule. Refresh uses the layer's manager.
    ///
    /// ```
    /// use xhttp::auth::{AuthLayer, OAuth2Refresh, TokenManager};
    ///
    /// let grant = OAuth2Refresh::new(xhttp::grant_transport(), "https://auth.example.com/token")
    ///     .unwrap();
    /// let manager = TokenManager::builder(grant).build();
    /// let client = xhttp::Client::builder()
    ///     .base_url("https://admin.example.com/api")
    ///     .auth_layer(
    ///         AuthLayer::new(manager, [])
    ///             .header(http::HeaderName::from_static("access_token"))
    ///             .scheme(""),
    ///     )
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn auth_layer(mut self, layer: AuthLayer) -> Self {
        self.stack_options.get_or_insert("auth_layer");
        self.auth = Some(AuthOptions {
            layer,
            triggers: None,
            refresh: true,
        });
        self
    }

    fn auth_mut(&mut self, what: &str) -> Option<&mut AuthOptions> {
        if self.auth.is_none() && self.error.is_none() {
            self.error = Some(Error::config(format!("{what} needs `auth(manager)` first")));
        }
        self.auth.as_mut()
    }

    /// Another origin that gets the token (scheme, host and port of `url`).
    pub fn auth_origin(mut self, url: &str) -> Self {
        match Origin::parse(url) {
            Ok(origin) => {
                if let Some(auth) = self.auth_mut("auth_origin") {
                    auth.layer = auth.layer.clone().with_origin(origin);
                }
            }
            Err(err) => self.error = self.error.or(Some(err)),
        }
        self
    }

    /// Allows the token over plain `http` to a loopback *address* (tests, a local sidecar):
    /// `127.0.0.0/8` or `[::1]` written as an IP literal. A name, `localhost` included, is
    /// refused with [`ErrorKind::InsecureTransport`](crate::ErrorKind::InsecureTransport),
    /// because what a name resolves to is not the library's to vouch for.
    pub fn allow_insecure_loopback(mut self) -> Self {
        if let Some(auth) = self.auth_mut("allow_insecure_loopback") {
            auth.layer = auth.layer.clone().allow_insecure_loopback(true);
        }
        self
    }

    /// What counts as a rejection that triggers a refresh (default: 401, `invalid_token`,
    /// gRPC UNAUTHENTICATED).
    pub fn refresh_triggers(mut self, triggers: Triggers) -> Self {
        if let Some(auth) = self.auth_mut("refresh_triggers") {
            auth.triggers = Some(triggers);
        }
        self
    }

    /// Sends tokens but never refreshes on a rejection (the manager still refreshes ahead of
    /// expiry).
    pub fn without_refresh(mut self) -> Self {
        if let Some(auth) = self.auth_mut("without_refresh") {
            auth.refresh = false;
        }
        self
    }

    /// The URL relative paths are joined to, with any path prefix (`https://host/api`):
    /// vben's `apiUrl` and `urlPrefix` in one. User-info in it (`https://user:pass@host`) is
    /// sent as `Authorization: Basic` and never in the URI (see [`Client::execute`]).
    ///
    /// ```
    /// let client = xhttp::Client::builder()
    ///     .base_url("https://bob:hunter2@api.example.com/v1")
    ///     .build()
    ///     .unwrap();
    /// let request = client.get("/me").build().unwrap();
    /// assert_eq!(request.uri(), "https://api.example.com/v1/me");
    /// assert!(request.headers()["authorization"].is_sensitive());
    /// ```
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// A header sent with every request (a request's own header of that name wins).
    pub fn default_header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: fmt::Display,
        V: TryInto<HeaderValue>,
        V::Error: fmt::Display,
    {
        match crate::request::header_pair(name, value) {
            Ok((name, value)) => {
                self.default_headers.insert(name, value);
            }
            Err(err) => self.error = self.error.or(Some(err)),
        }
        self
    }

    /// How long one trip (head and body) may take; default 10 s. Each attempt gets the
    /// smaller of this and the time left before the deadline.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.stack_options.get_or_insert("attempt_timeout");
        self.attempt_timeout = timeout;
        self
    }

    /// How long a whole call may take, retries, backoff and a refresh included; default 30 s.
    pub fn deadline(mut self, timeout: Duration) -> Self {
        self.stack_options.get_or_insert("deadline");
        self.deadline = timeout;
        self
    }

    /// The retry policy (default: `RetryPolicy::default()`, 3 retries of idempotent requests
    /// and of requests that never reached the server, full-jitter backoff, `Retry-After`
    /// capped at 30 s, a shared budget).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.stack_options.get_or_insert("retry");
        self.retry = Some(policy);
        self
    }

    /// No retries at all.
    pub fn without_retry(mut self) -> Self {
        self.stack_options.get_or_insert("without_retry");
        self.retry = None;
        self
    }

    /// The dedupe options (default `DedupeLayer::builder()`: identical concurrent GET and HEAD
    /// requests share one trip; other methods are left alone unless a request says otherwise
    /// with `DedupeOverride`). With `auth`, the client names each request's caller from the
    /// token manager's session (and `SkipAuth` requests as anonymous), so that responses never
    /// cross identities.
    pub fn dedupe(mut self, options: DedupeLayerBuilder) -> Self {
        self.stack_options.get_or_insert("dedupe");
        self.dedupe = Some(options);
        self
    }

    /// No deduplication at all.
    pub fn without_dedupe(mut self) -> Self {
        self.stack_options.get_or_insert("without_dedupe");
        self.dedupe = None;
        self
    }

    /// Unwraps this envelope dialect from every 2xx JSON response (off by default): the body
    /// becomes the data, a failure code becomes `ErrorKind::Business` (which retry, refresh and
    /// the caller see as a typed error), and `Response::envelope` keeps code and message.
    /// `SkipEnvelope` on a request skips it.
    pub fn envelope(mut self, envelope: Envelope) -> Self {
        self.stack_options.get_or_insert("envelope");
        self.envelope = Some(envelope);
        self
    }

    /// Turns 4xx and 5xx responses into `ErrorKind::Status` errors with the server's message
    /// (problem details, the envelope's message, `error.message`) or a default one, keeping
    /// `Retry-After` and `WWW-Authenticate` (off by default for now: responses of any status
    /// come back as responses). It sits below retry and refresh, which see the typed errors.
    pub fn status(mut self, layer: StatusLayer) -> Self {
        self.stack_options.get_or_insert("status");
        self.status = Some(layer);
        self
    }

    /// Reports every failed call once, at the top of the stack, however many attempts and
    /// layers it went through: an error notice (`ErrorNotice` per request), an error log
    /// record (a bounded ring by default: keep the layer to read it), `on_unauthorized`
    /// (off by default for now).
    pub fn report(mut self, layer: ReportLayer) -> Self {
        self.stack_options.get_or_insert("report");
        self.report = Some(layer);
        self
    }

    /// The largest response body held in memory; default 16 MiB. A request may set its own
    /// with [`RequestBuilder::body_limit`].
    pub fn body_limit(mut self, bytes: u64) -> Self {
        self.stack_options.get_or_insert("body_limit");
        self.body_limit = BodyLimit(bytes);
        self
    }

    /// How long a TCP connect may take; default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.stack_options.get_or_insert("connect_timeout");
        self.transport = self.transport.connect_timeout(timeout);
        self
    }

    /// How long an idle pooled connection is kept; default 90 s.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stack_options.get_or_insert("pool_idle_timeout");
        self.transport = self.transport.pool_idle_timeout(timeout);
        self
    }

    /// How many idle connections are kept per host; default unbounded.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.stack_options.get_or_insert("pool_max_idle_per_host");
        self.transport = self.transport.pool_max_idle_per_host(max);
        self
    }

    /// Adds a layer at the transport end of the stack: below collect and the attempt
    /// timeout, over the HTTP transport, where it sees each trip's request as sent (the
    /// token written, once per attempt) and the response as streamed from the wire. This is
    /// the place of tower-http's decompression and redirect layers, of a metrics or
    /// tracing layer per trip, and of a test probe.
    ///
    /// The first layer added is the outermost, the nearest collect, as with
    /// `ServiceBuilder`. Its response body must yield `Bytes` (it is boxed, and collected
    /// under the body limit); its error may be any `Into<BoxError>` (an `xhttp::Error`
    /// passes through unchanged, any other error is a `Transport` error). A client with no
    /// transport layer keeps the transport unboxed.
    ///
    /// ```
    /// use tower::ServiceBuilder;
    /// use tower::layer::layer_fn;
    ///
    /// // A layer that stamps every trip; any tower `Layer` fits.
    /// let stamp = layer_fn(|inner: xhttp::BoxTransport| {
    ///     ServiceBuilder::new()
    ///         .map_request(|mut request: http::Request<xhttp::Body>| {
    ///             request.headers_mut().insert("x-trip", http::HeaderValue::from_static("1"));
    ///             request
    ///         })
    ///         .service(inner)
    /// });
    /// let client = xhttp::Client::builder()
    ///     .base_url("http://127.0.0.1:8080")
    ///     .transport_layer(stamp)
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn transport_layer<L, B>(mut self, layer: L) -> Self
    where
        L: Layer<BoxTransport> + Send + 'static,
        L::Service: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.stack_options.get_or_insert("transport_layer");
        self.transport_layers
            .push(Box::new(move |inner| box_transport(layer.layer(inner))));
        self
    }

    /// Adds a layer above the whole stack: it sees each call once, as the caller made it
    /// (before dedupe, retries and refresh), and the outcome the caller gets: the place of a
    /// per-call metrics layer, a concurrency limit, a rate limit. The first layer added is the
    /// outermost. It also wraps a service given to [`build_over`](Self::build_over).
    ///
    /// ```
    /// // A layer that stamps every call once, however many trips it takes.
    /// let stamp = tower::util::MapRequestLayer::new(|mut request: http::Request<xhttp::Body>| {
    ///     request.headers_mut().insert("x-call", http::HeaderValue::from_static("1"));
    ///     request
    /// });
    /// let client = xhttp::Client::builder()
    ///     .base_url("http://127.0.0.1:8080")
    ///     .layer(stamp)
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxService> + Send + 'static,
        L::Service: Service<Request<Body>, Response = Response<Bytes>, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
    {
        self.outer_layers
            .push(Box::new(move |inner| BoxService::new(layer.layer(inner))));
        self
    }

    /// Speak HTTP/2 without negotiation, also over plain TCP (h2c).
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.stack_options.get_or_insert("http2_prior_knowledge");
        self.transport = self.transport.http2_prior_knowledge(true);
        self
    }

    /// A client over `service`, which is the whole stack: the builder's request options
    /// (base URL, default headers, user-info as `Authorization: Basic`) apply, and the layers
    /// are the service's own: compose them with [`Stack`] over any HTTP service, a raw
    /// hyper-util client included. An option that configures the built-in stack (auth, retry,
    /// timeouts, dedupe, transport...) is a `Config` error here rather than silently unused.
    /// The client cannot see which origins the service's auth covers, so user-info in a URL
    /// (`https://user:pass@host`) is refused as `InvalidRequest` unless the request skips
    /// auth: never two credentials, never one silently dropped.
    ///
    /// ```
    /// use tower::ServiceBuilder;
    /// use http_body_util::Full;
    /// use bytes::Bytes;
    ///
    /// let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
    ///     .build_http::<xhttp::Body>();
    /// let stack: xhttp::Stack = xhttp::Stack::builder().build().unwrap();
    /// let client = xhttp::Client::builder()
    ///     .base_url("http://127.0.0.1:8080/api")
    ///     .build_over(ServiceBuilder::new().layer(stack).service(hyper))
    ///     .unwrap();
    /// # drop(client);
    /// let err = xhttp::Client::builder()
    ///     .without_retry()
    ///     .build_over(tower::service_fn(|_: http::Request<xhttp::Body>| async {
    ///         Ok::<_, xhttp::Error>(http::Response::new(Bytes::new()))
    ///     }))
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), xhttp::ErrorKind::Config);
    /// # let _ = Full::<Bytes>::default();
    /// ```
    pub fn build_over<S>(self, service: S) -> Result<Client, Error>
    where
        S: Service<Request<Body>, Response = Response<Bytes>, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        if let Some(err) = self.error {
            return Err(err);
        }
        if let Some(option) = self.stack_options.or(self.auth.as_ref().map(|_| "auth")) {
            return Err(Error::config(format!(
                "`{option}` configures the built-in stack; a client over a service of one's \
                 own takes its layers from that service"
            )));
        }
        Ok(Client {
            inner: Arc::new(ClientInner {
                dedupe: None,
                base: self.base()?,
                auth_origins: None,
                default_headers: self.default_headers,
                service: wrap(self.outer_layers, BoxService::new(service)),
            }),
        })
    }

    fn base(&self) -> Result<Option<String>, Error> {
        let Some(url) = &self.base_url else {
            return Ok(None);
        };
        let uri = parse_http_url(url)?;
        if uri.query().is_some() {
            return Err(Error::invalid_request("a base URL cannot have a query"));
        }
        Ok(Some(uri.to_string().trim_end_matches('/').to_string()))
    }

    /// Builds the client; a malformed base URL, an unsupported scheme, an invalid default
    /// header, a zero timeout or one above a year
    /// ([`LONGEST_TIMEOUT`](crate::transport::LONGEST_TIMEOUT); `Duration::MAX` included) is a
    /// `Config` or `InvalidRequest` error here, not a panic at the first request.
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = xhttp::Client::builder().deadline(Duration::MAX).build().unwrap_err();
    /// assert_eq!(err.kind(), xhttp::ErrorKind::Config);
    /// ```
    pub fn build(self) -> Result<Client, Error> {
        if let Some(err) = self.error {
            return Err(err);
        }
        check_timeouts(self.attempt_timeout, self.deadline)?;
        self.transport.check()?;
        let base = self.base()?;
        let mut stack = Stack::<Body>::builder()
            .attempt_timeout(self.attempt_timeout)
            .deadline(self.deadline)
            .body_limit(self.body_limit.0);
        if let Some(policy) = self.retry {
            stack = stack.retry(policy);
        }
        if let Some(options) = self.dedupe {
            stack = stack.dedupe(options);
        }
        if let Some(envelope) = self.envelope {
            stack = stack.envelope(envelope);
        }
        if let Some(status) = self.status {
            stack = stack.status(status);
        }
        if let Some(report) = self.report {
            stack = stack.report(report);
        }
        let mut auth_origins = Vec::new();
        if let Some(options) = self.auth {
            let mut layer = options.layer;
            if let Some(origin) = base.as_deref().and_then(|b| Origin::parse(b).ok()) {
                layer = layer.with_origin(origin);
            }
            if layer.origins().is_empty() {
                return Err(Error::config(
                    "auth needs an origin: set a base URL or call auth_origin",
                ));
            }
            auth_origins = layer.origins().to_vec();
            if options.refresh {
                stack = stack.refresh(RefreshLayer::with_triggers(
                    layer.manager().clone(),
                    options.triggers.unwrap_or_default(),
                ));
            }
            stack = stack.auth(layer);
        }
        let stack = stack.build()?;
        let transport = self.transport.build();
        // Without transport layers the transport is not boxed: the common client pays nothing
        // for the hook.
        let service = if self.transport_layers.is_empty() {
            stack.layer(transport)
        } else {
            let boxed = self
                .transport_layers
                .into_iter()
                .rev()
                .fold(box_transport(transport), |inner, layer| layer(inner));
            stack.layer(boxed)
        };
        Ok(Client {
            inner: Arc::new(ClientInner {
                dedupe: stack.dedupe().cloned(),
                base,
                auth_origins: Some(auth_origins),
                default_headers: self.default_headers,
                service: wrap(self.outer_layers, service),
            }),
        })
    }
}
