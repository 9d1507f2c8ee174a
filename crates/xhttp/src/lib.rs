//! HTTP client layers for Rust services: what every admin front end builds around axios,
//! done once, correctly under concurrency, close to raw hyper's speed.
//!
//! `xhttp` is the facade: a [`Client`] that composes the xhttp layers in their canonical
//! order over hyper-util and rustls, with a reqwest-like request builder. Each concern is also
//! its own crate and tower `Layer`, for use over any tower service.
//!
//! ```no_run
//! # async fn run() -> Result<(), xhttp::Error> {
//! #[derive(serde::Deserialize)]
//! struct Item { id: u64, name: String }
//!
//! let client = xhttp::Client::builder()
//!     .base_url("https://api.example.com/v1")
//!     .build()?;
//! let response = client.get("/items/7").send().await?;
//! assert!(response.status().is_success());
//! let item: Item = response.json()?;
//! # Ok(()) }
//! ```
//!
//! The stack today, outermost first (later layers join in the order of `ARCHITECTURE.md`):
//!
//! ```text
//! report               once per caller: error notice, error log record, on_unauthorized (opt-in)
//! dedupe             identical concurrent GET/HEAD share one trip (other policies per request)
//! deadline         total time of the call (default 30 s), backoff and refresh included
//!   refresh        401 / invalid_token / business code / grpc-status 16 -> refresh once, replay once
//!     retry        idempotency-aware, full-jitter backoff, capped Retry-After, shared budget
//!      status      4xx/5xx -> Error::Status with the server's or a default message (opt-in)
//!      envelope    {code,message,result} -> the data, or Error::Business (opt-in)
//!       auth       the TokenManager's token, to the configured origins only, sensitive header
//!         attempt  per-trip timeout (default 10 s, at most the time left) covering head and body
//!           collect    Response<Incoming> -> Response<Bytes> under a cap (default 16 MiB)
//!             transport  hyper-util legacy client, HTTP/1.1 + HTTP/2, rustls (ring, webpki roots)
//! ```
#![deny(unsafe_code)]

#[cfg(feature = "axum")]
pub mod axum;
mod builder_ext;
mod client;
mod future;
mod request;
mod response;
pub mod stack;
pub mod transport;
mod user_info;

pub use builder_ext::ServiceBuilderExt;
pub use client::{grant_transport, BoxService, BoxTransport, Client, ClientBuilder, TransportBody};
pub use future::ResponseFuture;
pub use request::RequestBuilder;
pub use response::Response;
pub use stack::{BoxStack, Stack, StackBuilder};
pub use xhttp_core::{Body, BodyLimit, BusinessCode, Error, ErrorKind, Origin, TimeoutScope};

/// Tokens: the manager, grants, stores and the auth layer (`xhttp-auth`).
pub mod auth {
    pub use xhttp_auth::*;
}

/// Refresh on rejection (`xhttp-refresh`).
pub mod refresh {
    pub use xhttp_refresh::*;
}

/// Coalesce, cancel-previous, reject-duplicate and cancel scopes (`xhttp-dedupe`).
pub mod dedupe {
    pub use xhttp_dedupe::*;
}

/// Failure statuses as typed errors with readable messages, and the report layer: notices
/// and the error log, once per caller (`xhttp-status`).
pub mod status {
    pub use xhttp_status::*;
}

/// Envelope unwrapping (`xhttp-envelope`).
pub mod envelope {
    pub use xhttp_envelope::*;
}

/// Retry, backoff, `Retry-After`, budget and the total deadline (`xhttp-retry`).
pub mod retry {
    pub use xhttp_retry::*;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_client_builds() {
        assert!(crate::ClientBuilder::new().build().is_ok());
    }

    #[test]
    fn public_types_are_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Client>();
        assert_send_sync::<super::Response>();
        assert_send_sync::<super::BoxService>();
        assert_send_sync::<super::transport::TransportFuture>();
        fn assert_send<T: Send>() {}
        assert_send::<super::ResponseFuture>();
    }
}
