//! Refresh on rejection: when the server says the token is no good, refresh it once (for every
//! request that learns it at the same time) and replay the request with the new token.
//!
//! [`RefreshLayer`] sits above `xhttp_auth::AuthLayer` (and above retry, when there is one):
//!
//! 1. Before calling down it puts a [`GenerationSlot`] in the request; the auth layer records
//!    there which token generation the trip was sent with.
//! 2. When the outcome is a rejection it calls
//!    [`TokenManager::refresh_after_rejection`](xhttp_auth::TokenManager::refresh_after_rejection)
//!    with that generation: the late 401 of a request sent with an already-replaced token
//!    replays with the new token and costs no refresh.
//! 3. It replays, marked [`Replayed`]. When the replay's fresh token is rejected too, that
//!    token is dead: the manager is told, and if it hands out a newer token at once (the first
//!    such rejection in a row may be a revocation that hit the token's first use), the call
//!    replays once more. That is two replays at most, never a loop: a server that rejects
//!    every fresh token meets the manager's back-off
//!    ([`TokenManagerBuilder::rejection_backoff`](xhttp_auth::TokenManagerBuilder::rejection_backoff)),
//!    and the call gets the last rejection as `ErrorKind::Unauthorized` with the server's
//!    challenge.
//!
//! A refresh is not a session switch. When the rejected trip was sent in an older session
//! (a `set_tokens` for another login or user, or a `clear`, came while it was in flight), the
//! manager answers `ErrorKind::SessionChanged` with no token call, and the layer returns that
//! error without replaying: a `DELETE` meant for account A never runs with user B's token.
//!
//! What counts as a rejection ([`Triggers`]): status 401 (with or without a challenge),
//! `WWW-Authenticate: Bearer error="invalid_token"` (in any of the response's challenges,
//! parsed per RFC 9110: the same words inside another scheme's quoted parameter do not
//! count), a business code such as 40009, 409 or 1002 (from an `Error::Business`
//! of the envelope layer, or read from a `Bytes` body's `code` field when no envelope layer
//! runs; both normalised by the core's one rule), and gRPC `grpc-status: 16`
//! (UNAUTHENTICATED). Never 403: `insufficient_scope` is not cured by a new token.
//!
//! Requests marked [`SkipRefresh`] pass untouched. A request whose body cannot be replayed
//! (a boxed stream) still triggers the refresh, so that the next request succeeds, but its
//! own first outcome is returned.
//!
//! # Requirements
//!
//! [`Refresh<S>`](Refresh) serves `Request<B>` when:
//!
//! - **request body** `B: RequestBody + Send + 'static` ([`xhttp_core::body::RequestBody`]): the
//!   request is copied before its first send, and the copy sent only if a replay happens.
//!   xhttp's `Body`, `http_body_util::Full` (the usual hyper client body) and `Empty`,
//!   `Bytes`, `String` and `()` are replayed; a boxed body is not (see above).
//! - **response body** `ResBody: Send + 'static`. Business codes are read from a `Bytes` body
//!   (or from an envelope layer's `Error::Business`); any other body is never parsed.
//! - **inner service** `S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send +
//!   'static`, `S::Future: Send + 'static`; not `Sync`. A call whose body can be copied keeps
//!   a clone of the service for its replay, polled ready only if the replay happens.
//! - **inner error** `S::Error: Into<tower::BoxError>`; it becomes an [`Error`] by
//!   [`Error::from_boxed`], which hands an xhttp error back as it was. The layer's own error
//!   is `xhttp_core::Error`; its future ([`ResponseFuture`]) is `Send`.
//!
//! ```
//! use tower::ServiceBuilder;
//! use xhttp_auth::{AuthLayer, TokenManager};
//! use xhttp_refresh::RefreshLayer;
//!
//! fn stack<S>(manager: TokenManager, origins: Vec<xhttp_core::Origin>, transport: S)
//!     -> impl tower::Service<http::Request<xhttp_core::Body>>
//! where
//!     S: tower::Service<http::Request<xhttp_core::Body>, Response = http::Response<bytes::Bytes>>
//!         + Clone + Send + 'static,
//!     S::Error: Into<tower::BoxError>,
//!     S::Future: Send + 'static,
//! {
//!     ServiceBuilder::new()
//!         .layer(RefreshLayer::new(manager.clone()).business_codes([40009]))
//!         .layer(AuthLayer::new(manager, origins))
//!         .service(transport)
//! }
//! ```
#![deny(unsafe_code)]

mod future;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use tower::{BoxError, Layer, Service};
use xhttp_auth::{GenerationSlot, TokenManager};
use xhttp_core::body::{copy_for_replay, RequestBody};
use xhttp_core::json::{business_code, normalize};
use xhttp_core::{BusinessCode, Error, ErrorKind};

pub use future::ResponseFuture;
pub use xhttp_core::challenge::{bearer_error, is_invalid_token};

/// Per-request option: never refresh for this request (axios-auth-refresh's
/// `skipAuthRefresh`); its rejection comes back as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipRefresh;

/// Marks the replay of a request after a refresh (visible to layers below).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed;

/// What counts as "the token was rejected".
///
/// ```
/// use xhttp_refresh::Triggers;
/// let triggers = Triggers::default().business_codes([40009, 409, 1002]);
/// # drop(triggers);
/// ```
#[derive(Debug, Clone)]
pub struct Triggers {
    statuses: Vec<StatusCode>,
    invalid_token_challenge: bool,
    grpc_unauthenticated: bool,
    business_codes: Vec<BusinessCode>,
    code_pointer: String,
}

impl Default for Triggers {
    /// 401, `invalid_token` challenges and gRPC UNAUTHENTICATED; no business codes.
    fn default() -> Self {
        Triggers {
            statuses: vec![StatusCode::UNAUTHORIZED],
            invalid_token_challenge: true,
            grpc_unauthenticated: true,
            business_codes: Vec::new(),
            code_pointer: "/code".into(),
        }
    }
}

impl Triggers {
    /// Also treat `status` as a rejection (403 is refused: a new token does not cure a lack
    /// of permission, and refreshing on it is a refresh storm waiting to happen).
    pub fn status(mut self, status: StatusCode) -> Self {
        if status != StatusCode::FORBIDDEN && !self.statuses.contains(&status) {
            self.statuses.push(status);
        }
        self
    }

    /// Whether `WWW-Authenticate: Bearer error="invalid_token"` is a rejection whatever the
    /// status (default on).
    pub fn invalid_token_challenge(mut self, enabled: bool) -> Self {
        self.invalid_token_challenge = enabled;
        self
    }

    /// Whether `grpc-status: 16` in the response headers is a rejection (default on).
    pub fn grpc_unauthenticated(mut self, enabled: bool) -> Self {
        self.grpc_unauthenticated = enabled;
        self
    }

    /// Business codes that mean "token expired" (admin back ends often answer HTTP 200 with
    /// code 40009, 409 or 1002). Codes compare after the core's one normalisation
    /// ([`xhttp_core::json::business_code`]): a configured `40009` or `"40009"` matches a body's
    /// `40009`, `"40009"` or `40009.0`, through a `Bytes` body and an envelope error alike.
    ///
    /// ```
    /// use xhttp_refresh::Triggers;
    /// let triggers = Triggers::default().business_codes(["40009"]);
    /// # drop(triggers);
    /// ```
    pub fn business_codes<C: Into<BusinessCode>>(
        mut self,
        codes: impl IntoIterator<Item = C>,
    ) -> Self {
        self.business_codes
            .extend(codes.into_iter().map(|code| normalize(code.into())));
        self
    }

    /// Where the code sits in a JSON body that reaches this layer as `Bytes` (default
    /// `/code`): a JSON pointer, or a bare name for a top-level member (`"errno"` is
    /// `/errno`), read as every location of the library is read
    /// ([`xhttp_core::json::pointer`]). Used only with business codes and no envelope layer
    /// below.
    ///
    /// ```
    /// use xhttp_refresh::Triggers;
    /// let triggers = Triggers::default().business_codes([40009]).code_pointer("errno");
    /// # drop(triggers);
    /// ```
    pub fn code_pointer(mut self, pointer: impl AsRef<str>) -> Self {
        self.code_pointer = xhttp_core::json::pointer(pointer.as_ref()).into();
        self
    }

    /// The rejection in an outcome, if it is one: the status and challenge to report.
    pub(crate) fn rejection<B: 'static>(
        &self,
        outcome: &Result<Response<B>, Error>,
    ) -> Option<Rejection> {
        match outcome {
            Ok(response) => self.rejected_response(response),
            Err(err) => self.rejected_error(err),
        }
    }

    fn rejected_response<B: 'static>(&self, response: &Response<B>) -> Option<Rejection> {
        let status = response.status();
        let headers = response.headers();
        let by_status = status != StatusCode::FORBIDDEN && self.statuses.contains(&status);
        // Every `WWW-Authenticate` line, each parsed as a list of challenges.
        let by_challenge = self.invalid_token_challenge
            && headers
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(is_invalid_token);
        let by_grpc = self.grpc_unauthenticated
            && headers
                .get("grpc-status")
                .is_some_and(|v| v.as_bytes() == b"16");
        let by_code = !self.business_codes.is_empty()
            && (response.body() as &dyn Any)
                .downcast_ref::<Bytes>()
                .and_then(|body| body_code(body, &self.code_pointer))
                .is_some_and(|code| self.business_codes.contains(&code));
        (by_status || by_challenge || by_grpc || by_code).then(|| Rejection {
            status: Some(status),
            challenge: challenge_of(headers),
        })
    }

    fn rejected_error(&self, err: &Error) -> Option<Rejection> {
        let by_status = err.kind() == ErrorKind::Status
            && err
                .status()
                .is_some_and(|s| s != StatusCode::FORBIDDEN && self.statuses.contains(&s));
        let by_challenge =
            self.invalid_token_challenge && err.challenge().is_some_and(is_invalid_token);
        let by_code = err.kind() == ErrorKind::Business
            && err
                .business_code()
                .is_some_and(|code| self.business_codes.contains(&normalize(code.clone())));
        (by_status || by_challenge || by_code).then(|| Rejection {
            status: err.status(),
            challenge: err.challenge().map(str::to_owned),
        })
    }
}

/// The challenges of a response, for the `Unauthorized` error: every `WWW-Authenticate` line,
/// joined as RFC 9110 section 5.3 combines field lines.
fn challenge_of(headers: &HeaderMap) -> Option<String> {
    let lines: Vec<&str> = headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

/// The business code at `pointer` in a JSON body, normalised by the core's one rule
/// (`40009`, `"40009"` and `40009.0` are one code); `None` for anything that is not a JSON
/// object. Duplicate keys are read as serde_json reads them: the last one wins.
fn body_code(body: &Bytes, pointer: &str) -> Option<BusinessCode> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    business_code(value.pointer(pointer)?)
}

/// A rejection, for the `Unauthorized` error when the replay is rejected too.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    status: Option<StatusCode>,
    challenge: Option<String>,
}

impl Rejection {
    pub(crate) fn into_error(self) -> Error {
        let mut err = Error::new(ErrorKind::Unauthorized);
        if let Some(status) = self.status {
            err = err.with_status(status);
        }
        if let Some(challenge) = self.challenge {
            err = err.with_challenge(challenge);
        }
        err
    }
}

/// Refreshes the token on a rejection and replays the request (twice at most). See the
/// [crate docs](crate).
#[derive(Clone)]
pub struct RefreshLayer {
    config: Arc<Config>,
}

pub(crate) struct Config {
    pub(crate) manager: TokenManager,
    pub(crate) triggers: Triggers,
}

impl RefreshLayer {
    /// A refresh layer with the default [`Triggers`].
    pub fn new(manager: TokenManager) -> Self {
        RefreshLayer::with_triggers(manager, Triggers::default())
    }

    /// A refresh layer with the given triggers.
    pub fn with_triggers(manager: TokenManager, triggers: Triggers) -> Self {
        RefreshLayer {
            config: Arc::new(Config { manager, triggers }),
        }
    }

    /// Adds business codes that mean "token expired".
    pub fn business_codes<C: Into<BusinessCode>>(self, codes: impl IntoIterator<Item = C>) -> Self {
        let triggers = self.config.triggers.clone().business_codes(codes);
        RefreshLayer::with_triggers(self.config.manager.clone(), triggers)
    }
}

impl fmt::Debug for RefreshLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshLayer")
            .field("triggers", &self.config.triggers)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RefreshLayer {
    type Service = Refresh<S>;

    fn layer(&self, inner: S) -> Refresh<S> {
        Refresh {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`RefreshLayer`]; its bounds are listed under
/// [Requirements](crate#requirements).
#[derive(Clone)]
pub struct Refresh<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Refresh<S> {
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

impl<S: fmt::Debug> fmt::Debug for Refresh<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresh")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Refresh<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqBody: RequestBody + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if request.extensions().get::<SkipRefresh>().is_some() {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        // Cloned before the slot goes in: a request with no extensions of its own clones
        // without allocating a map; the replay gets a slot of its own anyway.
        // Whether the copy can be sent is decided when the replay would happen. The ready
        // service sends the first trip; the replay, if any, goes through a clone made ready
        // then (a clone per call, as tower's `Retry` does, so the service need not be `Sync`).
        let resend = copy_for_replay(&request).map(|request| {
            Box::new(future::Resend {
                service: self.inner.clone(),
                request,
            })
        });
        let slot = GenerationSlot::new();
        request.extensions_mut().insert(slot.clone());
        let future = self.inner.call(request);
        ResponseFuture::first(
            future,
            future::Replay {
                resend,
                slot,
                config: self.config.clone(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &'static str) -> Result<Response<Bytes>, Error> {
        Ok(Response::new(Bytes::from_static(body.as_bytes())))
    }

    #[test]
    fn every_spelling_of_a_code_is_one_code_through_both_paths() {
        for configured in [
            Triggers::default().business_codes([40009]),
            Triggers::default().business_codes(["40009"]),
            Triggers::default().business_codes([" 40009 "]),
        ] {
            for body in [
                r#"{"code":40009}"#,
                r#"{"code":"40009"}"#,
                r#"{"code":40009.0}"#,
                r#"{"code":4.0009e4}"#,
                r#"{"code":0,"code":40009}"#,
            ] {
                assert!(configured.rejection(&ok(body)).is_some(), "{body}");
            }
            for body in [
                r#"{"code":"040009"}"#,
                r#"{"code":40009.5}"#,
                r#"{"code":40009,"code":0}"#,
                r#"[{"code":40009}]"#,
                "40009",
            ] {
                assert!(configured.rejection(&ok(body)).is_none(), "{body}");
            }
            for code in [BusinessCode::Int(40009), BusinessCode::from("40009")] {
                let err: Result<Response<Bytes>, Error> = Err(Error::business(code, "expired"));
                assert!(configured.rejection(&err).is_some());
            }
        }
    }

    #[test]
    fn challenges_are_read_from_every_header_line() {
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.append(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(r#"Basic realm="Bearer error=\"invalid_token\"""#),
        );
        let triggers = Triggers::default();
        let outcome: Result<Response<Bytes>, Error> = Ok(response.clone());
        assert!(
            triggers.rejection(&outcome).is_none(),
            "quoted text is not a challenge"
        );
        response.headers_mut().append(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
        let outcome: Result<Response<Bytes>, Error> = Ok(response);
        let rejection = triggers
            .rejection(&outcome)
            .expect("the second line triggers");
        let err = rejection.into_error();
        assert_eq!(
            err.challenge(),
            Some(r#"Basic realm="Bearer error=\"invalid_token\"", Bearer error="invalid_token""#)
        );
    }
}
