//! A small HTTP client over hyper-util, shared by the socket tests.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::error::Error as StdError;

use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// A response read to the end.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub(crate) struct TestClient {
    pub(crate) inner: Client<HttpConnector, Full<Bytes>>,
}

impl TestClient {
    /// HTTP/1.1 with a pool that opens a connection per concurrent request.
    pub(crate) fn http1() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// HTTP/2 with prior knowledge (h2c).
    pub(crate) fn http2() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub(crate) async fn send(&self, request: Request<Full<Bytes>>) -> Result<Reply, BoxError> {
        let response = self.inner.request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    pub(crate) async fn try_get(&self, url: &str) -> Result<Reply, BoxError> {
        self.send(
            Request::get(url)
                .body(Full::default())
                .expect("valid request"),
        )
        .await
    }

    pub(crate) async fn get(&self, url: &str) -> Reply {
        self.try_get(url).await.expect("request failed")
    }

    pub(crate) async fn get_with_token(&self, url: &str, token: &str) -> Reply {
        let request = Request::get(url)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::default())
            .expect("valid request");
        self.send(request).await.expect("request failed")
    }

    pub(crate) async fn post_json(&self, url: &str, body: serde_json::Value) -> Reply {
        let request = Request::post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("valid request");
        self.send(request).await.expect("request failed")
    }

    pub(crate) async fn post_form(&self, url: &str, body: &str) -> Reply {
        let request = Request::post(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .expect("valid request");
        self.send(request).await.expect("request failed")
    }
}

/// True when `error` or one of its sources is a `hyper::Error` matching `predicate`.
pub(crate) fn has_hyper_error(error: &BoxError, predicate: impl Fn(&hyper::Error) -> bool) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error.as_ref());
    while let Some(current) = source {
        if current
            .downcast_ref::<hyper::Error>()
            .is_some_and(&predicate)
        {
            return true;
        }
        source = current.source();
    }
    false
}

/// True when `error` or one of its sources is an I/O error of `kind`.
pub(crate) fn has_io_error(error: &BoxError, kind: std::io::ErrorKind) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error.as_ref());
    while let Some(current) = source {
        if current
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == kind)
        {
            return true;
        }
        source = current.source();
    }
    false
}
