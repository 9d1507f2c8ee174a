//! The policy: which statuses fail, and what the error says; and the per-request
//! [`SkipStatus`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Response, StatusCode, Uri};
use tower::Layer;
use xhttp_core::{json, Error, SharedClock, TokioClock};

use crate::message::{self, ENVELOPE_POINTERS};
use crate::{Language, Status};

type Predicate = Arc<dyn Fn(StatusCode) -> bool + Send + Sync>;

/// Turns failure statuses into [`Error`]s with a readable message. See the
/// [crate docs](crate).
///
/// Cheap to clone: the configuration lives in one `Arc` shared by every clone and every
/// service the layer builds.
///
/// ```
/// use http::StatusCode;
/// use xhttp_status::{Language, StatusLayer};
///
/// // The default: 4xx and 5xx fail, messages in English.
/// let layer = StatusLayer::new();
/// // Chinese messages, a back end that writes `{"data":{"errMsg":...}}`, and 404 read by
/// // the callers themselves.
/// let layer = StatusLayer::builder()
///     .language(Language::Chinese)
///     .message_pointer("/data/errMsg")
///     .success_if(|status| status.as_u16() < 400 || status == StatusCode::NOT_FOUND)
///     .build();
/// # drop(layer);
/// ```
#[derive(Clone)]
#[must_use]
pub struct StatusLayer {
    config: Arc<Config>,
}

/// Builds a [`StatusLayer`]; every setting has a default.
///
/// ```
/// use std::sync::Arc;
/// use std::time::SystemTime;
/// use xhttp_core::Clock;
/// use xhttp_status::{Language, StatusLayer};
///
/// // A wall clock a test controls, for `Retry-After` dates.
/// #[derive(Debug)]
/// struct Fixed(SystemTime);
/// impl Clock for Fixed {
///     fn now(&self) -> tokio::time::Instant { tokio::time::Instant::now() }
///     fn system_now(&self) -> SystemTime { self.0 }
/// }
///
/// let layer = StatusLayer::builder()
///     .language(Language::English)
///     .message_pointers(["/message", "/data/reason"])
///     .clock(Arc::new(Fixed(SystemTime::UNIX_EPOCH)))
///     .build();
/// # drop(layer);
/// ```
#[must_use]
pub struct StatusLayerBuilder {
    success: Predicate,
    language: Language,
    envelope_pointers: Vec<Box<str>>,
    clock: SharedClock,
}

/// Per-request option: skip the status layer, returning failure responses as responses, for
/// a caller that wants to read a 404 (or any failure) itself. Errors of the inner service
/// still come back as errors. Also exported under its former name, `StatusPassthrough`.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use tower::{service_fn, Layer, ServiceExt};
/// use xhttp_status::{SkipStatus, StatusLayer};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let upstream = service_fn(|_request: Request<()>| async {
///     let mut response = Response::new(Bytes::new());
///     *response.status_mut() = StatusCode::NOT_FOUND;
///     Ok::<_, std::convert::Infallible>(response)
/// });
/// let service = StatusLayer::new().layer(upstream);
///
/// let mut request = Request::new(());
/// request.extensions_mut().insert(SkipStatus);
/// let response = service.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::NOT_FOUND);
/// assert!(service.oneshot(Request::new(())).await.is_err());
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipStatus;

pub(crate) struct Config {
    success: Predicate,
    language: Language,
    envelope_pointers: Vec<Box<str>>,
    clock: SharedClock,
}

/// The default success predicate: anything but 4xx and 5xx.
///
/// 2xx obviously. 3xx too: one that reaches this layer was not followed on purpose (no
/// redirect layer, or a redirect the caller wants to read), and a 304 answers a conditional
/// request, telling the caller its cached copy is good; neither is a failure. A 1xx is never
/// a final response except 101 for an upgrade the caller asked for. That leaves client and
/// server errors (RFC 9110 sections 15.5 and 15.6), the statuses an axios wrapper's `checkStatus`
/// turns into messages; a status outside 100..=599 fails as well.
///
/// ```
/// use http::StatusCode;
/// use xhttp_status::default_success;
///
/// assert!(default_success(StatusCode::NO_CONTENT));
/// assert!(default_success(StatusCode::NOT_MODIFIED));
/// assert!(!default_success(StatusCode::NOT_FOUND));
/// assert!(!default_success(StatusCode::BAD_GATEWAY));
/// ```
pub fn default_success(status: StatusCode) -> bool {
    status.is_success() || status.is_redirection() || status.is_informational()
}

impl StatusLayer {
    /// A status layer with the defaults: 4xx and 5xx fail, English messages, the envelope
    /// members `message`, `msg` and `Msg`, the system clock for `Retry-After` dates.
    pub fn new() -> Self {
        StatusLayer::builder().build()
    }

    /// A builder starting from the defaults of [`StatusLayer::new`].
    pub fn builder() -> StatusLayerBuilder {
        StatusLayerBuilder {
            success: Arc::new(default_success),
            language: Language::default(),
            envelope_pointers: ENVELOPE_POINTERS.iter().map(|p| (*p).into()).collect(),
            clock: Arc::new(TokioClock),
        }
    }
}

impl Default for StatusLayer {
    fn default() -> Self {
        StatusLayer::new()
    }
}

impl StatusLayerBuilder {
    /// Which statuses are success; the others become errors (default [`default_success`]:
    /// all but 4xx and 5xx).
    pub fn success_if(
        mut self,
        predicate: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.success = Arc::new(predicate);
        self
    }

    /// The language of the default messages (default [`Language::English`]).
    pub fn language(mut self, language: Language) -> Self {
        self.language = language;
        self
    }

    /// Also reads the message at `pointer` (RFC 6901, such as `/data/errMsg`; a bare name
    /// such as `errMsg` is the top-level member of that name, as
    /// [`xhttp_core::json::pointer`] reads it), after the envelope members already listed.
    pub fn message_pointer(mut self, pointer: impl AsRef<str>) -> Self {
        self.envelope_pointers.push(json::pointer(pointer.as_ref()));
        self
    }

    /// Replaces the envelope members read for a message (default `/message`, `/msg`,
    /// `/Msg`, in that order). Problem details come before them and `error.message`,
    /// `error_description` and `error` after them whatever this list says.
    pub fn message_pointers<P: AsRef<str>>(
        mut self,
        pointers: impl IntoIterator<Item = P>,
    ) -> Self {
        self.envelope_pointers = pointers
            .into_iter()
            .map(|p| json::pointer(p.as_ref()))
            .collect();
        self
    }

    /// The clock whose wall time measures a `Retry-After` date (default the system's).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The layer.
    pub fn build(self) -> StatusLayer {
        StatusLayer {
            config: Arc::new(Config {
                success: self.success,
                language: self.language,
                envelope_pointers: self.envelope_pointers,
                clock: self.clock,
            }),
        }
    }
}

impl Config {
    pub(crate) fn is_success(&self, status: StatusCode) -> bool {
        (self.success)(status)
    }

    /// The error a failure response becomes: its status, the server's message or the
    /// default one, `Retry-After`, `WWW-Authenticate` (and the scope an `insufficient_scope`
    /// challenge asks for), an RFC 9457 problem document (bounded and masked by
    /// [`Problem`](xhttp_core::problem::Problem)), and the request it answered. The body
    /// itself is not kept: errors are cloned to many callers and should stay small.
    pub(crate) fn error(&self, response: &Response<Bytes>, method: &Method, uri: &Uri) -> Error {
        let status = response.status();
        let headers = response.headers();
        let message = message::from_body(headers, response.body(), &self.envelope_pointers)
            .unwrap_or_else(|| self.language.default_message(status).to_owned());
        let mut err = Error::from_status(status)
            .with_message(message)
            .with_method_uri(method, uri);
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| xhttp_core::retry_after::parse_retry_after(v, self.clock.system_now()));
        if let Some(wait) = retry_after {
            err = err.with_retry_after(wait);
        }
        if let Some(challenge) = challenge(headers) {
            // Core's one challenge parser (refresh reads `invalid_token` with it).
            if let Some(scope) = xhttp_core::challenge::required_scope(&challenge) {
                err = err.with_required_scope(scope);
            }
            err = err.with_challenge(challenge);
        }
        if message::is_problem(headers) {
            if let Some(problem) = xhttp_core::problem::Problem::from_json(response.body()) {
                err = err.with_problem(problem);
            }
        }
        err
    }
}

/// Every `WWW-Authenticate` value, joined as RFC 9110 section 5.3 allows.
fn challenge(headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

impl fmt::Debug for StatusLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusLayer")
            .field("language", &self.config.language)
            .field("envelope_pointers", &self.config.envelope_pointers)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for StatusLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusLayerBuilder")
            .field("language", &self.language)
            .field("envelope_pointers", &self.envelope_pointers)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for StatusLayer {
    type Service = Status<S>;

    fn layer(&self, inner: S) -> Status<S> {
        Status::new(inner, self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_client_and_server_errors_fail_by_default() {
        for code in [100, 101, 200, 204, 299, 301, 304, 308] {
            assert!(
                default_success(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [400, 401, 404, 429, 499, 500, 503, 599, 600, 999] {
            assert!(
                !default_success(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }

    #[test]
    fn bare_names_become_pointers() {
        let layer = StatusLayer::builder()
            .message_pointers(["errMsg", "/data/msg"])
            .build();
        assert_eq!(
            layer.config.envelope_pointers,
            vec![Box::from("/errMsg"), Box::from("/data/msg")]
        );
    }

    #[test]
    fn several_challenges_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"api\"".parse().unwrap(),
        );
        headers.append(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"api\"".parse().unwrap(),
        );
        assert_eq!(
            challenge(&headers).as_deref(),
            Some("Bearer realm=\"api\", Basic realm=\"api\"")
        );
        assert_eq!(challenge(&HeaderMap::new()), None);
    }
}
