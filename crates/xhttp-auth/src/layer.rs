//! [`AuthLayer`]: which requests get a token, and how it is written (the policy); the
//! [`Auth`] service applies it.

use std::fmt;
use std::sync::Arc;

use http::header::{HeaderName, AUTHORIZATION};
use http::Request;
use tower::Layer;
use xhttp_core::{Error, Origin};

use crate::{Auth, GenerationSlot, Token, TokenManager};

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
#[must_use]
pub struct AuthLayer {
    config: Arc<Config>,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) manager: TokenManager,
    pub(crate) origins: Vec<Origin>,
    header: HeaderName,
    scheme: String,
    allow_insecure_loopback: bool,
    /// Bound to one channel ([`AuthLayer::for_channel`]): a path-only URI is that origin's,
    /// and a request to any other origin is an error, never a request without the token.
    channel: bool,
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
                channel: false,
            }),
        }
    }

    /// A layer bound to one channel: a tonic `Channel`, or any service that sends every
    /// request to one endpoint and writes the authority itself. Request URIs there carry only
    /// a path (`/grpc.health.v1.Health/Check`), which no origin matches; this layer takes a
    /// path-only URI as `origin`'s and sends the token. A request whose URI names another
    /// origin is an `InvalidRequest` error: on a channel it cannot go there, and it never
    /// leaves without the token it was meant to carry.
    ///
    /// ```
    /// # use xhttp_auth::{AuthLayer, TokenManager};
    /// # use xhttp_core::Origin;
    /// # fn build(manager: TokenManager) {
    /// // The origin of the endpoint the channel connects to.
    /// let layer = AuthLayer::for_channel(manager, Origin::parse("https://grpc.example.com").unwrap());
    /// # drop(layer);
    /// # }
    /// ```
    pub fn for_channel(manager: TokenManager, origin: Origin) -> Self {
        let mut layer = AuthLayer::new(manager, [origin]);
        layer.config_mut().channel = true;
        layer
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
            .field("channel", &self.config.channel)
            .finish()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth::new(inner, self.config.clone())
    }
}

/// Whether a request gets a token, decided before anything is sent.
pub(crate) enum Decision {
    Pass,
    Insecure,
    Token,
    /// The URI names no origin this layer can place: a path-only URI on a layer not bound to
    /// a channel, or another origin on a layer that is.
    Unplaceable(&'static str),
}

impl Config {
    pub(crate) fn decide<B>(&self, request: &Request<B>) -> Decision {
        if request.extensions().get::<SkipAuth>().is_some() {
            return Decision::Pass;
        }
        let uri = request.uri();
        let path_only = uri.scheme().is_none() && uri.authority().is_none();
        let origin = if path_only {
            match (self.channel, self.origins.first()) {
                (true, Some(origin)) => origin,
                _ => {
                    return Decision::Unplaceable(
                        "the request URI has no scheme or host, so the auth layer cannot tell \
                         where the token would go; over a channel, bind the layer to the \
                         channel's origin with AuthLayer::for_channel",
                    )
                }
            }
        } else {
            match self.origins.iter().find(|origin| origin.matches(uri)) {
                Some(origin) => origin,
                None if self.channel => {
                    return Decision::Unplaceable(
                        "the request names another origin than the channel the auth layer is \
                         bound to",
                    )
                }
                None => return Decision::Pass,
            }
        };
        let allowed_plain = self.allow_insecure_loopback && origin.is_loopback();
        if !origin.is_secure() && !allowed_plain {
            return Decision::Insecure;
        }
        Decision::Token
    }

    pub(crate) fn apply<B>(&self, request: &mut Request<B>, token: &Token) -> Result<(), Error> {
        let value = token.header_value(&self.scheme)?;
        request.headers_mut().insert(self.header.clone(), value);
        if let Some(slot) = request.extensions().get::<GenerationSlot>() {
            slot.set(token.generation());
        }
        Ok(())
    }
}
