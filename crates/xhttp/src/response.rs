//! [`Response`]: status, headers and the collected body.

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};
use serde::de::DeserializeOwned;
use xhttp_core::Error;

/// A response whose body has been collected (under the body limit) into [`Bytes`].
///
/// Its `Debug` prints the status, the version, the header names and the body's length: never
/// the body nor a header value (a `Set-Cookie` session, a token in a JSON body).
///
/// ```
/// let response = http::Response::builder()
///     .header("set-cookie", "sid=s3ss10n; HttpOnly")
///     .body(bytes::Bytes::from_static(b"{\"token\":\"t0k3n\"}"))
///     .unwrap();
/// let shown = format!("{:?}", xhttp::Response::from(response));
/// assert!(shown.contains("set-cookie") && shown.contains("body_len: 17"));
/// assert!(!shown.contains("s3ss10n") && !shown.contains("t0k3n"));
/// ```
///
/// ```
/// let response = xhttp::Response::from(http::Response::new(bytes::Bytes::from_static(b"{\"id\":7}")));
/// #[derive(serde::Deserialize)]
/// struct Item { id: u64 }
/// assert_eq!(response.json::<Item>().unwrap().id, 7);
/// ```
#[derive(Clone)]
pub struct Response {
    inner: http::Response<Bytes>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.inner.status())
            .field("version", &self.inner.version())
            .field("headers", &HeaderNames(self.inner.headers()))
            .field("body_len", &self.inner.body().len())
            .finish_non_exhaustive()
    }
}

/// A header map's `Debug` by names only: values may be credentials.
pub(crate) struct HeaderNames<'a>(pub(crate) &'a HeaderMap);

impl fmt::Debug for HeaderNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Response {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The HTTP version the server answered with.
    pub fn version(&self) -> Version {
        self.inner.version()
    }

    /// The response extensions (layers leave typed information here).
    pub fn extensions(&self) -> &http::Extensions {
        self.inner.extensions()
    }

    /// The envelope's code and message, when the client unwrapped one (the body is then the
    /// envelope's data).
    pub fn envelope(&self) -> Option<&xhttp_envelope::EnvelopeMeta> {
        self.inner.extensions().get()
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        self.inner.body()
    }

    /// The body, by value (a reference count, not a copy).
    pub fn bytes(self) -> Bytes {
        self.inner.into_body()
    }

    /// The body as UTF-8 text; invalid UTF-8 is a `Decode` error.
    pub fn text(self) -> Result<String, Error> {
        let status = self.status();
        String::from_utf8(self.inner.into_body().into())
            .map_err(|e| Error::decode(format!("body is not UTF-8: {e}")).with_status(status))
    }

    /// The body decoded from JSON; a mismatch is a `Decode` error that names the position,
    /// never the content (it may be a token).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(self.inner.body()).map_err(|e| {
            let why = xhttp_core::json::describe_error(&e);
            Error::decode(format!("JSON body: {why}")).with_status(self.status())
        })
    }

    /// The underlying `http::Response`.
    pub fn into_http(self) -> http::Response<Bytes> {
        self.inner
    }
}

impl From<http::Response<Bytes>> for Response {
    fn from(inner: http::Response<Bytes>) -> Self {
        Response { inner }
    }
}
