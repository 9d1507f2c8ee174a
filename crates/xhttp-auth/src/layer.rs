//! [`AuthLayer`]: puts the manager's token on every request to the configured origins.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future::BoxFuture;
use http::header::{HeaderName, AUTHORIZATION};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{BoxError, Layer, Service, ServiceExt};
use xhttp_core::{Error, ErrorKind, Origin};

use crate::{Token, TokenManager};

/// Per-request option: send this request without a token (a login call, a public endpoint).
///
/// ```
/// let request = http::Request::get("https://api.example.com/public")
///     .extension(xhttp_auth::SkipAuth)
///     .body(())
///     .unwrap();
/// # drop(request);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipAuth;

/// Where the auth layer records the generation of the token it sent, for the refresh layer
/// above it: a request extension shared between the two (the request itself moves down the
/// stack, the slot stays readable above).
///
/// A manager never reuses a generation, across sessions too, so the generation in the slot
/// also names the session the request was sent in: the refresh layer hands it to
/// [`TokenManager::refresh_after_rejection`], which refuses (`SessionChanged`) to replay a
/// rejection of an older session with the current one's token.
///
/// ```
/// let slot = xhttp_auth::GenerationSlot::new();
/// assert_eq!(slot.get(), None);
/// slot.set(3);
/// assert_eq!(slot.clone().get(), Some(3));
/// ```
#[derive(Debug, Clone, Default)]
pub struct GenerationSlot(Arc<AtomicU64>);

impl GenerationSlot {
    /// An empty slot.
    pub fn new() -> Self {
        GenerationSlot::default()
    }

    /// Records the generation of the token a trip was sent with.
    pub fn set(&self, generation: u64) {
        self.0.store(generation, Ordering::Release);
    }

    /// The generation recorded, if a token was sent (generations start at 1).
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            generation => Some(generation),
        }
    }
}

/// Adds `Authorization: Bearer <token>` (or another scheme or header) from a
/// [`TokenManager`], only to the configured origins.
///
/// - A request to another origin gets no token and costs no token call.
/// - A bearer never goes over plain `http` (RFC 6750 section 5.3), except to a loopback
///   **address** when [`allow_insecure_loopback`](AuthLayer::allow_insecure_loopback) is set
///   (`127.0.0.0/8`, `[::1]`, `[::ffff:127.x.y.z]`, as
///   [`xhttp_core::origin::is_loopback_address`] decides). A name is never loopback, not even
///   `localhost` or `*.localhost`: it resolves to whatever DNS or a hosts file says, so write
///   `127.0.0.1`. Any other plain-`http` request to a configured origin fails with
///   `InsecureTransport` before anything is sent or any token is fetched.
/// - The header is marked sensitive; the token's generation goes into the request's
///   [`GenerationSlot`] when there is one; [`SkipAuth`] requests pass untouched.
/// - While a rejection-triggered refresh runs, requests wait for its new token.
///
/// Generic over request and response bodies, so it also wraps a tonic `Channel`.
///
/// ```
/// use xhttp_auth::{AuthLayer, TokenManager};
/// use xhttp_core::Origin;
///
/// fn layer(manager: TokenManager) -> AuthLayer {
///     AuthLayer::new(manager, [Origin::parse("https://api.example.com").unwrap()])
/// }
/// ```
#[derive(Clone)]
pub struct AuthLayer {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    manager: TokenManager,
    origins: Vec<Origin>,
    header: HeaderName,
    scheme: String,
    allow_insecure_loopback: bool,
}

impl AuthLayer {
    /// A layer that sends the manager's token to `origins` as `Authorization: Bearer`.
    pub fn new(manager: TokenManager, origins: impl IntoIterator<Item = Origin>) -> Self {
        AuthLayer {
            config: Arc::new(Config {
                manager,
                origins: origins.into_iter().collect(),
                header: AUTHORIZATION,
                scheme: "Bearer".into(),
                allow_insecure_loopback: false,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The scheme before the token (default `Bearer`, as axios wrappers' `authenticationScheme`);
    /// an empty scheme sends the bare token.
    pub fn scheme(mut self, scheme: impl Into<String>) -> Self {
        self.config_mut().scheme = scheme.into();
        self
    }

    /// The header that carries the token (default `authorization`; some admin back ends read
    /// `access_token`). Use with `.scheme("")` for a bare token.
    pub fn header(mut self, header: HeaderName) -> Self {
        self.config_mut().header = header;
        self
    }

    /// Allows plain `http` to loopback addresses (tests, a sidecar); off by default. Only IP
    /// literals count (`http://127.0.0.1:8080`, `http://[::1]:8080`): `http://localhost` and
    /// other names are still refused with `InsecureTransport`.
    pub fn allow_insecure_loopback(mut self, allow: bool) -> Self {
        self.config_mut().allow_insecure_loopback = allow;
        self
    }

    /// The manager this layer takes tokens from.
    pub fn manager(&self) -> &TokenManager {
        &self.config.manager
    }

    /// The origins this layer sends the token to.
    ///
    /// ```
    /// # use xhttp_auth::{AuthLayer, TokenManager};
    /// # use xhttp_core::Origin;
    /// # fn check(manager: TokenManager) {
    /// let origin = Origin::parse("https://api.example.com").unwrap();
    /// let layer = AuthLayer::new(manager, [origin.clone()]);
    /// assert_eq!(layer.origins(), [origin]);
    /// # }
    /// ```
    pub fn origins(&self) -> &[Origin] {
        &self.config.origins
    }

    /// Sends the token to `origin` too (once: an origin already listed is not repeated).
    ///
    /// ```
    /// # use xhttp_auth::{AuthLayer, TokenManager};
    /// # use xhttp_core::Origin;
    /// # fn check(manager: TokenManager) {
    /// let api = Origin::parse("https://api.example.com").unwrap();
    /// let files = Origin::parse("https://files.example.com").unwrap();
    /// let layer = AuthLayer::new(manager, [api.clone()]).with_origin(files.clone()).with_origin(api.clone());
    /// assert_eq!(layer.origins(), [files, api]);
    /// # }
    /// ```
    pub fn with_origin(mut self, origin: Origin) -> Self {
        let origins = &mut self.config_mut().origins;
        if !origins.contains(&origin) {
            origins.insert(0, origin);
        }
        self
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("origins", &self.config.origins)
            .field("header", &self.config.header)
            .field("scheme", &self.config.scheme)
            .field(
                "allow_insecure_loopback",
                &self.config.allow_insecure_loopback,
            )
            .finish()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Auth<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("origins", &self.config.origins)
            .finish()
    }
}

/// Whether a request gets a token, decided before anything is sent.
enum Decision {
    Pass,
    Insecure,
    Token,
}

impl Config {
    fn decide<B>(&self, request: &Request<B>) -> Decision {
        if request.extensions().get::<SkipAuth>().is_some() {
            return Decision::Pass;
        }
        let uri = request.uri();
        let Some(origin) = self.origins.iter().find(|origin| origin.matches(uri)) else {
            return Decision::Pass;
        };
        let allowed_plain = self.allow_insecure_loopback && origin.is_loopback();
        if !origin.is_secure() && !allowed_plain {
            return Decision::Insecure;
        }
        Decision::Token
    }

    fn apply<B>(&self, request: &mut Request<B>, token: &Token) -> Result<(), Error> {
        let value = token.header_value(&self.scheme)?;
        request.headers_mut().insert(self.header.clone(), value);
        if let Some(slot) = request.extensions().get::<GenerationSlot>() {
            slot.set(token.generation());
        }
        Ok(())
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, Response<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match self.config.decide(&request) {
            Decision::Pass => {}
            Decision::Insecure => {
                let err = Error::new(ErrorKind::InsecureTransport)
                    .with_message(
                        "a bearer token is only sent over https, or plain http to a loopback \
                         address such as 127.0.0.1 when allowed",
                    )
                    .with_request(&request);
                return ResponseFuture::ready(Err(err));
            }
            Decision::Token => match self.config.manager.current_now() {
                Some(token) => {
                    if let Err(err) = self.config.apply(&mut request, &token) {
                        return ResponseFuture::ready(Err(err));
                    }
                }
                None => {
                    // Wait for the token: the ready service goes into the future, a fresh
                    // clone stays here (tower-http's pattern), and is made ready there.
                    let clone = self.inner.clone();
                    let inner = std::mem::replace(&mut self.inner, clone);
                    let config = self.config.clone();
                    // A request with a deadline stops waiting for the refresh at it.
                    let deadline = xhttp_core::Deadline::of(&request);
                    return ResponseFuture::waiting(Box::pin(async move {
                        let token = config.manager.current_until(deadline).await?;
                        config.apply(&mut request, &token)?;
                        inner
                            .oneshot(request)
                            .await
                            .map_err(|e| Error::from_boxed(e.into()))
                    }));
                }
            },
        }
        ResponseFuture::inner(self.inner.call(request))
    }
}

pin_project! {
    /// The response future of [`Auth`]: the inner future when the token was at hand, a boxed
    /// one when the request had to wait for a refresh.
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        Inner { #[pin] future: F },
        Waiting { future: BoxFuture<'static, Result<T, Error>> },
        Ready { result: Option<Result<T, Error>> },
    }
}

impl<F, T> ResponseFuture<F, T> {
    fn inner(future: F) -> Self {
        ResponseFuture {
            state: State::Inner { future },
        }
    }

    fn waiting(future: BoxFuture<'static, Result<T, Error>>) -> Self {
        ResponseFuture {
            state: State::Waiting { future },
        }
    }

    fn ready(result: Result<T, Error>) -> Self {
        ResponseFuture {
            state: State::Ready {
                result: Some(result),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => {
                let result = ready!(future.poll(cx));
                Poll::Ready(result.map_err(|e| Error::from_boxed(e.into())))
            }
            StateProj::Waiting { future } => future.as_mut().poll(cx),
            StateProj::Ready { result } => Poll::Ready(result.take().unwrap_or_else(|| {
                Err(Error::new(ErrorKind::Internal).with_message("polled after completion"))
            })),
        }
    }
}
