//! [`RequestBuilder`]: one request, built step by step, errors kept for `send`.

use std::fmt;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Request};
use serde::Serialize;
use xhttp_core::{Body, BodyLimit, Deadline, Error};

use crate::transport::LONGEST_TIMEOUT;
use crate::{Client, ResponseFuture};

/// A request under construction, from [`Client::get`] and friends.
///
/// Every step that can fail (a bad header, a query that does not serialise) keeps the first
/// error and [`send`](RequestBuilder::send) returns it as an
/// [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest); nothing panics.
///
/// ```no_run
/// # async fn run(client: xhttp::Client) -> Result<(), xhttp::Error> {
/// #[derive(serde::Serialize)]
/// struct Search<'a> { q: &'a str, page: u32 }
///
/// let response = client
///     .get("/items")
///     .query(&Search { q: "rust", page: 2 })
///     .header("accept-language", "zh-CN")
///     .send()
///     .await?;
/// # drop(response); Ok(()) }
/// ```
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    client: Client,
    request: Result<Request<Body>, Error>,
    /// Turned into a `Deadline` when the request is sent (or built), so the clock starts then.
    timeout: Option<Duration>,
}

impl RequestBuilder {
    pub(crate) fn new(client: Client, request: Result<Request<Body>, Error>) -> Self {
        RequestBuilder {
            client,
            request,
            timeout: None,
        }
    }

    fn update(mut self, f: impl FnOnce(&mut Request<Body>) -> Result<(), Error>) -> Self {
        if let Ok(request) = &mut self.request {
            if let Err(err) = f(request) {
                self.request = Err(err);
            }
        }
        self
    }

    /// Sets a header, replacing one of the same name (a default header too).
    pub fn header<K, V>(self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: fmt::Display,
        V: TryInto<HeaderValue>,
        V::Error: fmt::Display,
    {
        let pair = header_pair(name, value);
        self.update(|request| {
            let (name, value) = pair?;
            request.headers_mut().insert(name, value);
            Ok(())
        })
    }

    /// Sets several headers, replacing those of the same names.
    pub fn headers(self, headers: HeaderMap) -> Self {
        self.update(|request| {
            let mut last = None;
            for (name, value) in headers {
                // A name is only given for the first of several values of one header.
                let name = match name {
                    Some(name) => {
                        request.headers_mut().remove(&name);
                        last = Some(name.clone());
                        name
                    }
                    None => match &last {
                        Some(name) => name.clone(),
                        None => continue,
                    },
                };
                request.headers_mut().append(name, value);
            }
            Ok(())
        })
    }

    /// Appends query parameters, serialised from a struct, a map or a slice of pairs.
    pub fn query<T: Serialize + ?Sized>(self, query: &T) -> Self {
        self.update(|request| {
            let encoded = serde_urlencoded::to_string(query)
                .map_err(|e| Error::invalid_request(format!("query does not serialise: {e}")))?;
            if encoded.is_empty() {
                return Ok(());
            }
            let uri = request.uri();
            let joined = match uri.query() {
                Some(existing) if !existing.is_empty() => {
                    format!("{}?{existing}&{encoded}", uri.path())
                }
                _ => format!("{}?{encoded}", uri.path()),
            };
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(
                joined
                    .parse()
                    .map_err(|e| Error::invalid_request(format!("malformed query: {e}")))?,
            );
            *request.uri_mut() = http::Uri::from_parts(parts)
                .map_err(|e| Error::invalid_request(format!("malformed URL: {e}")))?;
            Ok(())
        })
    }

    /// Sends `value` as a JSON body (`content-type: application/json` unless set).
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Self {
        self.update(|request| {
            let bytes = serde_json::to_vec(value)
                .map_err(|e| Error::invalid_request(format!("body does not serialise: {e}")))?;
            set_body(request, bytes.into(), "application/json");
            Ok(())
        })
    }

    /// Sends `value` as a form (`application/x-www-form-urlencoded` unless set).
    pub fn form<T: Serialize + ?Sized>(self, value: &T) -> Self {
        self.update(|request| {
            let text = serde_urlencoded::to_string(value)
                .map_err(|e| Error::invalid_request(format!("form does not serialise: {e}")))?;
            set_body(request, text.into(), "application/x-www-form-urlencoded");
            Ok(())
        })
    }

    /// Sends raw bytes or a streaming [`Body`].
    pub fn body(self, body: impl Into<Body>) -> Self {
        let body = body.into();
        self.update(|request| {
            *request.body_mut() = body;
            Ok(())
        })
    }

    /// How long this call may take in all, retries and backoff included, counted from
    /// [`send`](RequestBuilder::send) (or [`build`](RequestBuilder::build)). It can shorten
    /// the client's deadline, never extend it: the earlier of the two applies. Zero or more
    /// than a year ([`LONGEST_TIMEOUT`](crate::transport::LONGEST_TIMEOUT), `Duration::MAX`
    /// included) is a `Config` error from `send`, not a panic.
    ///
    /// ```
    /// use std::time::Duration;
    /// # async fn run(client: xhttp::Client) {
    /// let err = client.get("/slow").timeout(Duration::MAX).send().await.unwrap_err();
    /// assert_eq!(err.kind(), xhttp::ErrorKind::Config);
    /// # }
    /// # let client = xhttp::Client::builder().base_url("http://127.0.0.1:1").build().unwrap();
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(client));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The largest response body this request accepts in memory.
    pub fn body_limit(self, bytes: u64) -> Self {
        self.extension(BodyLimit(bytes))
    }

    /// Adds a typed per-request option read by a layer (`SkipAuth`, `RetryOverride`, ...).
    pub fn extension<T: Clone + Send + Sync + 'static>(self, value: T) -> Self {
        self.update(|request| {
            request.extensions_mut().insert(value);
            Ok(())
        })
    }

    /// The request as built, or the first error met while building it. User-info in the
    /// URL has become an `Authorization: Basic` header here (see [`Client::execute`]).
    ///
    /// ```
    /// let client = xhttp::Client::new();
    /// let request = client.get("https://bob:hunter2@api.example.com/me").build().unwrap();
    /// assert_eq!(request.uri(), "https://api.example.com/me");
    /// assert_eq!(request.headers()["authorization"], "Basic Ym9iOmh1bnRlcjI=");
    /// ```
    pub fn build(self) -> Result<Request<Body>, Error> {
        let mut request = with_timeout(self.request, self.timeout)?;
        self.client.prepare(&mut request)?;
        Ok(request)
    }

    /// Sends the request through the client's stack.
    pub fn send(self) -> ResponseFuture {
        // `execute` moves user-info into the header, as `build` does.
        match with_timeout(self.request, self.timeout) {
            Ok(request) => self.client.execute(request),
            Err(err) => ResponseFuture::failed(err),
        }
    }
}

/// The request with its per-request timeout as a `Deadline` from now.
fn with_timeout(
    request: Result<Request<Body>, Error>,
    timeout: Option<Duration>,
) -> Result<Request<Body>, Error> {
    let mut request = request?;
    if let Some(timeout) = timeout {
        if timeout.is_zero() || timeout > LONGEST_TIMEOUT {
            return Err(Error::config(
                "a request timeout must be above zero and at most a year",
            ));
        }
        request.extensions_mut().insert(Deadline::after(timeout));
    }
    Ok(request)
}

impl fmt::Debug for RequestBuilder {
    /// Method and redacted URL only: headers may carry credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RequestBuilder");
        match &self.request {
            Ok(request) => d
                .field("method", request.method())
                .field("uri", &xhttp_core::redact::uri(request.uri())),
            Err(err) => d.field("error", err),
        };
        d.finish()
    }
}

fn set_body(request: &mut Request<Body>, body: Body, content_type: &'static str) {
    *request.body_mut() = body;
    request
        .headers_mut()
        .entry(CONTENT_TYPE)
        .or_insert(HeaderValue::from_static(content_type));
}

/// Validates a header name and value, naming the header but never echoing the value (it may
/// be a credential).
pub(crate) fn header_pair<K, V>(name: K, value: V) -> Result<(HeaderName, HeaderValue), Error>
where
    K: TryInto<HeaderName>,
    K::Error: fmt::Display,
    V: TryInto<HeaderValue>,
    V::Error: fmt::Display,
{
    let name = name
        .try_into()
        .map_err(|e| Error::invalid_request(format!("invalid header name: {e}")))?;
    let value = value
        .try_into()
        .map_err(|e| Error::invalid_request(format!("invalid value for header `{name}`: {e}")))?;
    Ok((name, value))
}
