//! The one error type of the xhttp stack.
//!
//! [`Error`] is opaque in the manner of hyper's: users ask it questions ([`Error::kind`],
//! [`Error::status`], [`Error::attempts`], ...) instead of matching on its layout, so that
//! layers can add detail without breaking anyone. It is an `Arc` inside, because dedupe hands
//! one outcome to many callers and tower layers pass errors by value.
//!
//! Nothing in an `Error` prints a credential: a request's headers are never kept, its URI is
//! kept only after [`redact::uri`](crate::redact::uri) has masked secrets in the query and the
//! user-info, and every piece of text (a message, a server's challenge) goes through
//! [`mask::server_text`](crate::mask::server_text) when it enters the error, capped at
//! [`MAX_TEXT_LEN`] bytes: no constructor takes text that is kept unmasked.
//!
//! `Display` prints this level only; the cause is [`source()`](std::error::Error::source), as
//! in hyper, so that anyhow and eyre, which walk the chain, print each cause once.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use tower::BoxError;

/// What went wrong, in the terms a caller acts on.
///
/// The enum is `#[non_exhaustive]`: later layers may add kinds, so match with a wildcard arm.
///
/// ```
/// use xhttp_core::{Error, ErrorKind, TimeoutScope};
///
/// let err = Error::timeout(TimeoutScope::Total);
/// match err.kind() {
///     ErrorKind::Timeout(TimeoutScope::Total) => { /* the whole call ran out of time */ }
///     ErrorKind::SessionExpired => { /* send the user to the login page */ }
///     _ => {}
/// }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request could not be built: a malformed URL, an unsupported scheme, an invalid
    /// header name or value. Nothing was sent.
    InvalidRequest,
    /// A configuration that cannot work was rejected when the layer or client was built.
    Config,
    /// The connection failed. [`Error::is_never_sent`] tells whether the request provably
    /// never reached the server (connect refused, DNS, TLS handshake).
    Transport,
    /// A timeout fired; the scope says which one.
    Timeout(TimeoutScope),
    /// The server answered with a status the stack treats as a failure.
    Status,
    /// The server answered success at the HTTP level but a failure code in its envelope.
    Business,
    /// The response could not be decoded (broken JSON, invalid UTF-8, garbage).
    Decode,
    /// The response body was larger than the configured limit.
    BodyTooLarge,
    /// A token refresh failed for a reason that may pass (network, 5xx, timeout).
    RefreshFailed,
    /// The refresh credential is dead (`invalid_grant`): the user must log in again.
    SessionExpired,
    /// The request was still rejected after one refresh and replay.
    Unauthorized,
    /// The request was rejected with the credentials of a session that has since been replaced
    /// (a new login, an account switch). It is never replayed with the new session's
    /// credentials: it was meant for the old identity.
    SessionChanged,
    /// A credential would have been sent over plain `http` to a host that is not allowed.
    InsecureTransport,
    /// A newer identical request replaced this one (dedupe's cancel-previous policy).
    Superseded,
    /// An identical request is already in flight (dedupe's reject-duplicate policy).
    Duplicate,
    /// The request was cancelled by its caller or a cancel scope.
    Cancelled,
    /// A bug or a panic caught in a task shared by several callers.
    Internal,
}

impl ErrorKind {
    /// Every kind this version of the library knows, each timeout scope once: for a table
    /// that maps kinds to something else (HTTP statuses, gRPC codes) and a test that it
    /// misses none. The enum is `#[non_exhaustive]`: a later version may add kinds, so a
    /// mapping still needs its fallback arm.
    ///
    /// ```
    /// use xhttp_core::ErrorKind;
    /// assert!(ErrorKind::ALL.contains(&ErrorKind::SessionExpired));
    /// assert_eq!(ErrorKind::ALL.len(), 18);
    /// ```
    pub const ALL: [ErrorKind; 18] = [
        ErrorKind::InvalidRequest,
        ErrorKind::Config,
        ErrorKind::Transport,
        ErrorKind::Timeout(TimeoutScope::Attempt),
        ErrorKind::Timeout(TimeoutScope::Total),
        ErrorKind::Status,
        ErrorKind::Business,
        ErrorKind::Decode,
        ErrorKind::BodyTooLarge,
        ErrorKind::RefreshFailed,
        ErrorKind::SessionExpired,
        ErrorKind::Unauthorized,
        ErrorKind::SessionChanged,
        ErrorKind::InsecureTransport,
        ErrorKind::Superseded,
        ErrorKind::Duplicate,
        ErrorKind::Cancelled,
        ErrorKind::Internal,
    ];
}

/// Which timeout fired.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutScope {
    /// One trip to the server (head and body) took longer than the attempt timeout.
    Attempt,
    /// The logical call, retries and backoff included, passed its deadline.
    Total,
}

/// What failed in a token refresh, for [`ErrorKind::RefreshFailed`] errors
/// ([`Error::refresh_failure`]). A dead refresh credential is not one of these: it is
/// [`ErrorKind::SessionExpired`].
///
/// The enum is `#[non_exhaustive]`: match with a wildcard arm.
///
/// ```
/// use http::StatusCode;
/// use xhttp_core::error::RefreshFailure;
/// use xhttp_core::{Error, ErrorKind};
///
/// let err = Error::new(ErrorKind::RefreshFailed)
///     .with_refresh_failure(RefreshFailure::Endpoint)
///     .with_status(StatusCode::SERVICE_UNAVAILABLE);
/// match err.refresh_failure() {
///     Some(RefreshFailure::Endpoint) => assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE)),
///     Some(RefreshFailure::Timeout) => { /* the refresh ran out of time */ }
///     _ => {}
/// }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefreshFailure {
    /// The refresh did not finish within its deadline, or its call to the token endpoint
    /// timed out.
    Timeout,
    /// The token endpoint answered with an error: a failure status (readable with
    /// [`Error::status`]) or an error code in a success answer.
    Endpoint,
    /// The token endpoint's answer could not be read as tokens: not JSON, no access token, a
    /// token no header can carry, a body over the limit.
    Malformed,
    /// The token endpoint could not be reached: the request was never sent (connection
    /// refused, DNS, connect timeout).
    Unreachable,
    /// The connection broke after the request was sent (a reset before the whole answer).
    Interrupted,
    /// Anything else: the token store failed, the refresh task was lost, a custom grant's own
    /// error.
    Other,
}

/// A code from a response envelope (`{"code": 40009, ...}`): backends use numbers and strings.
///
/// ```
/// use xhttp_core::BusinessCode;
/// assert_eq!(BusinessCode::from(40009), BusinessCode::Int(40009));
/// assert_eq!(BusinessCode::from("A0001").to_string(), "A0001");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BusinessCode {
    /// A numeric code such as `0`, `200` or `40009`.
    Int(i64),
    /// A textual code such as `"A0001"`.
    Str(Box<str>),
}

impl From<i64> for BusinessCode {
    fn from(code: i64) -> Self {
        BusinessCode::Int(code)
    }
}

impl From<&str> for BusinessCode {
    fn from(code: &str) -> Self {
        BusinessCode::Str(code.into())
    }
}

impl fmt::Display for BusinessCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusinessCode::Int(code) => write!(f, "{code}"),
            BusinessCode::Str(code) => f.write_str(code),
        }
    }
}

type Source = Arc<dyn StdError + Send + Sync + 'static>;

/// The most bytes of text an error keeps per piece (its message, its challenge): 4 KiB, room
/// for the envelope's excerpt of a broken body, while 200 errors in a report ring stay under a
/// megabyte. Longer text is cut on a character boundary after it is masked.
pub const MAX_TEXT_LEN: usize = crate::mask::DEFAULT_CAP;

/// Text fit to keep in an error: cleaned, masked, capped; `None` when nothing is left.
fn kept(text: &str) -> Option<Box<str>> {
    let text = crate::mask::server_text(text, MAX_TEXT_LEN);
    (!text.is_empty()).then(|| text.into_boxed_str())
}

/// The error of every xhttp layer and of the facade.
///
/// Cheap to clone, `Send + Sync + 'static`, and a `std::error::Error`, so it travels through
/// tower's `BoxError` and comes back by downcast ([`Error::from_boxed`]).
///
/// ```
/// use xhttp_core::{Error, ErrorKind};
/// use http::StatusCode;
///
/// let err = Error::from_status(StatusCode::TOO_MANY_REQUESTS)
///     .with_message("slow down")
///     .with_retry_after(std::time::Duration::from_secs(2));
/// assert_eq!(err.kind(), ErrorKind::Status);
/// assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
/// assert_eq!(err.to_string(), "server answered 429 Too Many Requests: slow down");
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: Option<Box<str>>,
    method: Option<Method>,
    /// Always redacted before it is stored.
    uri: Option<Box<str>>,
    status: Option<StatusCode>,
    business_code: Option<BusinessCode>,
    retry_after: Option<Duration>,
    challenge: Option<Box<str>>,
    limit: Option<u64>,
    attempts: u32,
    never_sent: bool,
    refresh_failure: Option<RefreshFailure>,
    body_not_replayable: bool,
    required_scope: Option<Box<str>>,
    problem: Option<Arc<crate::problem::Problem>>,
    source: Option<Source>,
}

impl Error {
    /// An error of the given kind with no further detail.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                message: None,
                method: None,
                uri: None,
                status: None,
                business_code: None,
                retry_after: None,
                challenge: None,
                limit: None,
                attempts: 0,
                never_sent: false,
                refresh_failure: None,
                body_not_replayable: false,
                required_scope: None,
                problem: None,
                source: None,
            }),
        }
    }

    /// A request that could not be built (malformed URL, unsupported scheme, bad header).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidRequest).with_message(message)
    }

    /// A configuration that cannot work.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config).with_message(message)
    }

    /// A connection failure caused by `source`.
    pub fn transport(source: impl Into<BoxError>) -> Self {
        Error::new(ErrorKind::Transport).with_source(source)
    }

    /// A timeout of the given scope.
    pub fn timeout(scope: TimeoutScope) -> Self {
        Error::new(ErrorKind::Timeout(scope))
    }

    /// A failure status from the server.
    pub fn from_status(status: StatusCode) -> Self {
        let mut err = Error::new(ErrorKind::Status);
        err.inner_mut().status = Some(status);
        err
    }

    /// A failure code in a success envelope, with the server's message, cleaned, masked and
    /// capped as [`Error::with_message`] does.
    ///
    /// ```
    /// let err = xhttp_core::Error::business(40009, "token AT-123abc expired\u{202e}\n!");
    /// assert_eq!(err.message(), Some("token REDACTED expired !"));
    /// ```
    pub fn business(code: impl Into<BusinessCode>, message: impl Into<String>) -> Self {
        let mut err = Error::new(ErrorKind::Business).with_message(message);
        err.inner_mut().business_code = Some(code.into());
        err
    }

    /// A response that could not be decoded.
    pub fn decode(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Decode).with_message(message)
    }

    /// A response body larger than `limit` bytes.
    pub fn body_too_large(limit: u64) -> Self {
        let mut err = Error::new(ErrorKind::BodyTooLarge);
        err.inner_mut().limit = Some(limit);
        err
    }

    /// Converts any error from an inner service into an `Error`.
    ///
    /// An `Error` inside the box comes back as it is (never wrapped twice); tower's
    /// `Elapsed` becomes an attempt timeout; anything else is a [`ErrorKind::Transport`] error
    /// with the original as its source.
    pub fn from_boxed(err: BoxError) -> Self {
        match err.downcast::<Error>() {
            Ok(err) => *err,
            Err(err) => {
                if err.is::<tower::timeout::error::Elapsed>() {
                    return Error::timeout(TimeoutScope::Attempt).with_source(err);
                }
                Error::transport(err)
            }
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// Adds a readable message (shown in `Display` after the kind's own phrase).
    ///
    /// The message is server text more often than not, so it is cleaned of control, bidi and
    /// invisible characters, masked and capped at [`MAX_TEXT_LEN`] bytes by
    /// [`mask::server_text`](crate::mask::server_text); a message with nothing left is none.
    ///
    /// ```
    /// use xhttp_core::{Error, ErrorKind};
    ///
    /// let err = Error::new(ErrorKind::Decode).with_message("bad body: access_token=abc\nforged");
    /// assert_eq!(err.message(), Some("bad body: access_token=REDACTED forged"));
    /// ```
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.inner_mut().message = kept(&message.into());
        self
    }

    /// Records the method and the redacted URI of the request this error belongs to.
    ///
    /// Headers are never kept, and secrets in the URI are masked by
    /// [`redact::uri`](crate::redact::uri), so an error built from a request that carries a
    /// token never prints it.
    pub fn with_request<B>(self, request: &http::Request<B>) -> Self {
        self.with_method_uri(request.method(), request.uri())
    }

    /// Records a method and the redacted form of `uri`.
    pub fn with_method_uri(mut self, method: &Method, uri: &http::Uri) -> Self {
        let inner = self.inner_mut();
        inner.method = Some(method.clone());
        inner.uri = Some(crate::redact::uri(uri).into_boxed_str());
        self
    }

    /// Records the cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        let source: BoxError = source.into();
        self.inner_mut().source = Some(Arc::from(source));
        self
    }

    /// Records how many attempts the logical call made.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.inner_mut().attempts = attempts;
        self
    }

    /// Records the server's `Retry-After`, parsed.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.inner_mut().retry_after = Some(retry_after);
        self
    }

    /// Records the server's `WWW-Authenticate` challenge, cleaned, masked and capped as a
    /// message is (its parameters, `realm="api"`, `error="invalid_token"`, are kept).
    pub fn with_challenge(mut self, challenge: impl Into<String>) -> Self {
        self.inner_mut().challenge = kept(&challenge.into());
        self
    }

    /// Records an HTTP status on an error of another kind (a `Decode` error keeps the status
    /// of the response it could not decode, an `Unauthorized` error the final 401).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.inner_mut().status = Some(status);
        self
    }

    /// Marks a transport error whose request provably never reached the server, so that any
    /// method may be retried.
    pub fn with_never_sent(mut self) -> Self {
        self.inner_mut().never_sent = true;
        self
    }

    /// Records what failed in a token refresh (see [`RefreshFailure`]).
    ///
    /// ```
    /// use xhttp_core::error::RefreshFailure;
    /// use xhttp_core::{Error, ErrorKind};
    ///
    /// let err = Error::new(ErrorKind::RefreshFailed).with_refresh_failure(RefreshFailure::Timeout);
    /// assert_eq!(err.refresh_failure(), Some(RefreshFailure::Timeout));
    /// ```
    pub fn with_refresh_failure(mut self, failure: RefreshFailure) -> Self {
        self.inner_mut().refresh_failure = Some(failure);
        self
    }

    /// Marks a first outcome that was returned, not sent again, because the request's body
    /// could not be replayed (a streaming body past its replay cap; see
    /// [`body::mark_not_replayed`](crate::body::mark_not_replayed)).
    ///
    /// ```
    /// let err = xhttp_core::Error::from_status(http::StatusCode::SERVICE_UNAVAILABLE)
    ///     .with_body_not_replayable();
    /// assert!(err.is_body_not_replayable());
    /// ```
    pub fn with_body_not_replayable(mut self) -> Self {
        self.inner_mut().body_not_replayable = true;
        self
    }

    /// Records the scope a `403` with `WWW-Authenticate: Bearer error="insufficient_scope"`
    /// asked for (RFC 6750 section 3.1), cleaned, masked and capped as a message is.
    ///
    /// ```
    /// let err = xhttp_core::Error::from_status(http::StatusCode::FORBIDDEN)
    ///     .with_required_scope("orders:write orders:read");
    /// assert_eq!(err.required_scope(), Some("orders:write orders:read"));
    /// ```
    pub fn with_required_scope(mut self, scope: impl Into<String>) -> Self {
        self.inner_mut().required_scope = kept(&scope.into());
        self
    }

    /// Records the RFC 9457 problem details the server answered with.
    ///
    /// ```
    /// use xhttp_core::problem::Problem;
    /// let problem = Problem::from_json(br#"{"title":"Out of credit","balance":30}"#).unwrap();
    /// let err = xhttp_core::Error::from_status(http::StatusCode::FORBIDDEN).with_problem(problem);
    /// assert_eq!(err.problem().and_then(|p| p.title()), Some("Out of credit"));
    /// ```
    pub fn with_problem(mut self, problem: crate::problem::Problem) -> Self {
        self.inner_mut().problem = Some(Arc::new(problem));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The HTTP status, for `Status` errors and others that came from a response.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The envelope's failure code, for `Business` errors.
    pub fn business_code(&self) -> Option<&BusinessCode> {
        self.inner.business_code.as_ref()
    }

    /// The readable message: the server's own (envelope, problem details) or the layer's.
    pub fn message(&self) -> Option<&str> {
        self.inner.message.as_deref()
    }

    /// The server's `Retry-After`, parsed, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The server's `WWW-Authenticate` challenge, when it sent one.
    pub fn challenge(&self) -> Option<&str> {
        self.inner.challenge.as_deref()
    }

    /// The method of the request, when known.
    pub fn method(&self) -> Option<&Method> {
        self.inner.method.as_ref()
    }

    /// The request's URI with secrets masked, when known.
    pub fn uri(&self) -> Option<&str> {
        self.inner.uri.as_deref()
    }

    /// The body limit that was passed, for `BodyTooLarge` errors.
    pub fn body_limit(&self) -> Option<u64> {
        self.inner.limit
    }

    /// How many attempts the logical call made; 0 when no layer counted them.
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// What failed in a token refresh, for `RefreshFailed` errors whose layer recorded it.
    pub fn refresh_failure(&self) -> Option<RefreshFailure> {
        self.inner.refresh_failure
    }

    /// Whether this is a first outcome returned without a replay because the request's body
    /// could not be sent again (retry or refresh would have replayed it otherwise).
    pub fn is_body_not_replayable(&self) -> bool {
        self.inner.body_not_replayable
    }

    /// The scope a `Bearer error="insufficient_scope"` challenge asked for, when the status
    /// layer read one.
    pub fn required_scope(&self) -> Option<&str> {
        self.inner.required_scope.as_deref()
    }

    /// The server's RFC 9457 problem details (`application/problem+json`), when the status
    /// layer read them.
    pub fn problem(&self) -> Option<&crate::problem::Problem> {
        self.inner.problem.as_deref()
    }

    /// Whether a timeout of any scope fired.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Timeout(_))
    }

    /// Whether the request provably never reached the server (connect refused, DNS, TLS
    /// handshake, a refused HTTP/2 stream), so that sending it again cannot repeat a side effect.
    pub fn is_never_sent(&self) -> bool {
        self.inner.never_sent
    }

    fn phrase(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        match inner.kind {
            ErrorKind::InvalidRequest => f.write_str("invalid request"),
            ErrorKind::Config => f.write_str("invalid configuration"),
            ErrorKind::Transport if inner.never_sent => {
                f.write_str("connection failed before the request was sent")
            }
            ErrorKind::Transport => f.write_str("connection failed"),
            ErrorKind::Timeout(TimeoutScope::Attempt) => f.write_str("attempt timed out"),
            ErrorKind::Timeout(TimeoutScope::Total) => f.write_str("deadline exceeded"),
            ErrorKind::Status => match inner.status {
                Some(status) => write!(f, "server answered {status}"),
                None => f.write_str("server answered a failure status"),
            },
            ErrorKind::Business => match &inner.business_code {
                Some(code) => write!(f, "server answered business error {code}"),
                None => f.write_str("server answered a business error"),
            },
            ErrorKind::Decode => f.write_str("could not decode the response"),
            ErrorKind::BodyTooLarge => match inner.limit {
                Some(limit) => write!(f, "response body is larger than the limit of {limit} bytes"),
                None => f.write_str("response body is larger than the limit"),
            },
            ErrorKind::RefreshFailed => f.write_str("token refresh failed"),
            ErrorKind::SessionExpired => f.write_str("session expired, log in again"),
            ErrorKind::Unauthorized => f.write_str("still unauthorized after refreshing the token"),
            ErrorKind::SessionChanged => {
                f.write_str("rejected with the credentials of a session that has since changed")
            }
            ErrorKind::InsecureTransport => {
                f.write_str("refused to send a credential over plain http")
            }
            ErrorKind::Superseded => f.write_str("superseded by a newer identical request"),
            ErrorKind::Duplicate => f.write_str("an identical request is already in flight"),
            ErrorKind::Cancelled => f.write_str("request cancelled"),
            ErrorKind::Internal => f.write_str("internal error"),
        }
    }
}

impl fmt::Display for Error {
    /// One readable sentence of this level: what happened, the server's or the layer's message,
    /// the request (redacted) and the number of attempts. The cause is not printed: it is
    /// [`source()`](StdError::source), which error reporters walk.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        self.phrase(f)?;
        if let Some(message) = &inner.message {
            write!(f, ": {message}")?;
        }
        match (&inner.method, &inner.uri, inner.attempts) {
            (Some(method), Some(uri), 0 | 1) => write!(f, " ({method} {uri})")?,
            (Some(method), Some(uri), n) => write!(f, " ({method} {uri}, {n} attempts)")?,
            (_, _, 0 | 1) => {}
            (_, _, n) => write!(f, " ({n} attempts)")?,
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let mut d = f.debug_struct("Error");
        d.field("kind", &inner.kind);
        if let Some(status) = inner.status {
            d.field("status", &status);
        }
        if let Some(code) = &inner.business_code {
            d.field("business_code", code);
        }
        if let Some(message) = &inner.message {
            d.field("message", message);
        }
        if let Some(method) = &inner.method {
            d.field("method", method);
        }
        if let Some(uri) = &inner.uri {
            d.field("uri", uri);
        }
        if inner.attempts > 0 {
            d.field("attempts", &inner.attempts);
        }
        if let Some(retry_after) = inner.retry_after {
            d.field("retry_after", &retry_after);
        }
        if inner.never_sent {
            d.field("never_sent", &true);
        }
        if inner.body_not_replayable {
            d.field("body_not_replayable", &true);
        }
        if let Some(scope) = &inner.required_scope {
            d.field("required_scope", scope);
        }
        if let Some(problem) = &inner.problem {
            d.field("problem", problem);
        }
        if let Some(failure) = inner.refresh_failure {
            d.field("refresh_failure", &failure);
        }
        if let Some(source) = &inner.source {
            // The source's Display, not its Debug (a foreign Debug may print more than we vet),
            // and masked: a foreign error may quote what it failed on.
            let source = crate::mask::server_text(&source.to_string(), MAX_TEXT_LEN);
            d.field("source", &source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ErrorKind::ALL`, checked against the enum: the match below has no wildcard, so a new
    /// variant does not compile until it is placed, and the count keeps `ALL` in step.
    fn every_kind() -> Vec<ErrorKind> {
        let place = |kind: ErrorKind| match kind {
            ErrorKind::InvalidRequest
            | ErrorKind::Config
            | ErrorKind::Transport
            | ErrorKind::Status
            | ErrorKind::Business
            | ErrorKind::Decode
            | ErrorKind::BodyTooLarge
            | ErrorKind::RefreshFailed
            | ErrorKind::SessionExpired
            | ErrorKind::Unauthorized
            | ErrorKind::SessionChanged
            | ErrorKind::InsecureTransport
            | ErrorKind::Superseded
            | ErrorKind::Duplicate
            | ErrorKind::Cancelled
            | ErrorKind::Internal => 1,
            ErrorKind::Timeout(TimeoutScope::Attempt | TimeoutScope::Total) => 1,
        };
        let kinds: std::collections::HashSet<_> = ErrorKind::ALL.into_iter().collect();
        assert_eq!(kinds.len(), ErrorKind::ALL.len(), "no kind twice");
        assert_eq!(ErrorKind::ALL.into_iter().map(place).sum::<usize>(), 18);
        ErrorKind::ALL.to_vec()
    }

    #[test]
    fn every_kind_round_trips_through_box_error() {
        for kind in every_kind() {
            let err = Error::new(kind)
                .with_message("m")
                .with_attempts(3)
                .with_status(StatusCode::BAD_GATEWAY);
            let boxed: BoxError = err.into();
            let back = boxed.downcast::<Error>().expect("downcast");
            assert_eq!(back.kind(), kind);
            assert_eq!(back.attempts(), 3);
            assert_eq!(back.status(), Some(StatusCode::BAD_GATEWAY));
            let again = Error::from_boxed(Box::new(*back));
            assert_eq!(again.kind(), kind);
            assert_eq!(again.message(), Some("m"));
        }
    }

    #[test]
    fn from_boxed_keeps_an_inner_error_and_wraps_foreign_ones() {
        let foreign: BoxError = "boom".into();
        let err = Error::from_boxed(foreign);
        assert_eq!(err.kind(), ErrorKind::Transport);
        assert_eq!(err.source().map(|s| s.to_string()), Some("boom".into()));

        let elapsed: BoxError = tower::timeout::error::Elapsed::new().into();
        assert_eq!(
            Error::from_boxed(elapsed).kind(),
            ErrorKind::Timeout(TimeoutScope::Attempt)
        );
    }

    #[test]
    fn display_and_debug_never_print_a_token_from_the_request() {
        let request = http::Request::get(
            "https://user:pa55word@api.example.com/v1/items?page=2&access_token=SECRET-AT-123",
        )
        .header("authorization", "Bearer SECRET-AT-123")
        .body(())
        .unwrap();
        let err = Error::from_status(StatusCode::UNAUTHORIZED)
            .with_request(&request)
            .with_attempts(2);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SECRET-AT-123"), "{shown}");
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(shown.contains("page=2"), "{shown}");
        assert_eq!(
            err.to_string(),
            "server answered 401 Unauthorized (GET https://***@api.example.com/v1/items?page=2&access_token=REDACTED, 2 attempts)"
        );
    }

    #[test]
    fn display_is_one_sentence_per_kind() {
        for kind in every_kind() {
            let text = Error::new(kind).to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{kind:?}: {text}");
        }
        assert_eq!(
            Error::business(40009, "token expired").to_string(),
            "server answered business error 40009: token expired"
        );
        assert_eq!(
            Error::body_too_large(16).to_string(),
            "response body is larger than the limit of 16 bytes"
        );
    }

    #[test]
    fn display_prints_one_level_and_the_cause_is_the_source() {
        let err = Error::transport("connection reset by peer").with_message("upstream");
        assert_eq!(err.to_string(), "connection failed: upstream");
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("connection reset by peer")
        );
        assert!(format!("{err:?}").contains("connection reset by peer"));
    }

    #[test]
    fn no_text_enters_an_error_unmasked_or_uncapped() {
        let secret = "SECRET-AT-xyz123";
        let huge = format!("{}\n\u{202e}token={secret} ", "x ".repeat(3 << 20));
        for err in [
            Error::business(40009, huge.clone()),
            Error::decode(format!("token={secret}\u{0}\r\n")),
            Error::invalid_request(format!("Bearer {secret}")),
            Error::config(format!("client_secret: {secret}")),
            Error::from_status(StatusCode::BAD_REQUEST)
                .with_message(format!(r#"{{"access_token":"{secret}"}}"#))
                .with_challenge(format!("Bearer error=\"invalid_token\", token={secret}")),
            Error::transport(format!("refused password={secret}")),
        ] {
            let shown = format!("{err} {err:?} {:?} {:?}", err.message(), err.challenge());
            assert!(!shown.contains(secret), "{shown}");
            assert!(err.message().map_or(0, str::len) <= MAX_TEXT_LEN);
            assert!(
                !shown.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{shown}"
            );
        }
    }

    #[test]
    fn an_empty_message_is_no_message() {
        assert_eq!(Error::business(1, " \u{200b}\n").message(), None);
        assert_eq!(
            Error::business(1, "").to_string(),
            "server answered business error 1"
        );
    }

    #[test]
    fn clones_share_and_builders_copy_on_write() {
        let a = Error::new(ErrorKind::Internal);
        let b = a.clone().with_attempts(2);
        assert_eq!(a.attempts(), 0);
        assert_eq!(b.attempts(), 2);
    }

    #[test]
    fn error_is_send_sync_static() {
        fn assert_traits<T: Send + Sync + 'static + StdError + Clone>() {}
        assert_traits::<Error>();
    }
}
