//! A fake token endpoint for unit tests: a `tower::service_fn` that records every request
//! and answers from a script.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use xhttp_core::{Body, Error};

use super::GrantTransport;

/// What the fake endpoint saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: http::Method,
    pub(crate) uri: String,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) body_limit: Option<xhttp_core::BodyLimit>,
}

/// The requests a fake endpoint received, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub(crate) fn calls(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub(crate) fn last(&self) -> Seen {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

/// A transport that answers the `n`th call (from 0) with `answer(n)`.
pub(crate) fn endpoint<F>(answer: F) -> (GrantTransport, Log)
where
    F: Fn(usize) -> Result<Response<Bytes>, Error> + Clone + Send + Sync + 'static,
{
    let log = Log::default();
    let seen = log.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let answer = answer.clone();
        let seen = seen.clone();
        async move {
            let n = {
                let mut seen = seen.0.lock().unwrap();
                seen.push(Seen {
                    method: request.method().clone(),
                    uri: request.uri().to_string(),
                    headers: request.headers().clone(),
                    body: request.body().as_bytes().cloned().unwrap_or_default(),
                    body_limit: request.extensions().get().copied(),
                });
                seen.len() - 1
            };
            answer(n)
        }
    });
    (GrantTransport::new(service), log)
}

/// A response with `status` and `body`.
pub(crate) fn answer(status: u16, body: &str) -> Result<Response<Bytes>, Error> {
    let mut response = Response::new(Bytes::copy_from_slice(body.as_bytes()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    Ok(response)
}

/// A connection refused before anything was sent.
pub(crate) fn refused() -> Result<Response<Bytes>, Error> {
    Err(Error::transport("connection refused").with_never_sent())
}
