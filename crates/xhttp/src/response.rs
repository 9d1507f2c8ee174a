//! [`Response`]: status, headers and the collected body.

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};
use serde::de::DeserializeOwned;
use xhttp_core::Error;

/// A response whose body has been collected (under the body limit) into [`Bytes`].
///
/// ```
/// let response = xhttp::Response::from(http::Response::new(bytes::Bytes::from_static(b"{\"id\":7}")));
/// #[derive(serde::Deserialize)]
/// struct Item { id: u64 }
/// assert_eq!(response.json::<Item>().unwrap().id, 7);
/// ```
#[derive(Debug, Clone)]
pub struct Response {
    inner: http::Response<Bytes>,
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
            let what = match e.classify() {
                serde_json::error::Category::Io => "could not be read",
                serde_json::error::Category::Syntax => "is not valid JSON",
                serde_json::error::Category::Data => "does not match the expected type",
                serde_json::error::Category::Eof => "ends early",
            };
            Error::decode(format!(
                "JSON body {what} at line {} column {}",
                e.line(),
                e.column()
            ))
            .with_status(self.status())
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
