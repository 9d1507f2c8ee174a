//! Unwrapping `{code, message, result}` envelopes.
//!
//! Admin back ends often answer HTTP 200 with an envelope: `{"code":0,"message":"ok","result":
//! {...}}` (vue-vben-admin), `{"Code":200,"Msg":"..","Data":{..}}` (an axios wrapper's
//! `formatResponse`), `{"code":200,"msg":"..","data":{..}}`. Every front end unwraps it in an
//! interceptor; [`EnvelopeLayer`] does it once, below retry and refresh, so that they see a
//! business failure as a typed [`Error::business`](xhttp_core::Error::business):
//!
//! - **success** (the code is one of the success codes): the response body becomes the data,
//!   sliced out of the original bytes (`serde_json::value::RawValue` + `Bytes::slice_ref`):
//!   no re-serialising, no copy, and the payload is never altered (vben's `formatDate` trims
//!   every string it sees; this does not touch a byte). Code and message stay readable as an
//!   [`EnvelopeMeta`] response extension;
//! - **failure**: `Err(Error::business(code, message))` with the HTTP status; the message is
//!   the server's text, so [`Error::business`](xhttp_core::Error::business) cleans, masks and
//!   caps it like every text an error takes;
//! - **not an envelope**: a response that is not 2xx, or not JSON by its content type, or JSON
//!   without the code field, passes through untouched; a body that claims JSON and is broken
//!   is a `Decode` error with the status, the content type, where it broke (the category and
//!   position of [`describe_error`], never serde's message,
//!   which quotes the offending value) and the beginning of the body, masked by
//!   [`server_text`], within the error's 4 KiB.
//!
//! [`SkipEnvelope`] skips the layer for one request (vben's `isReturnNativeResponse`).
//!
//! ```
//! use bytes::Bytes;
//! use tower::{service_fn, Layer, ServiceExt};
//! use xhttp_core::{Error, ErrorKind};
//! use xhttp_envelope::{Envelope, EnvelopeLayer, EnvelopeMeta};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let api = service_fn(|request: http::Request<()>| async move {
//!     let body: &'static [u8] = if request.uri().path() == "/ok" {
//!         br#"{"code":0,"message":"ok","result":{"id":7}}"#
//!     } else {
//!         br#"{"code":1003,"message":"system busy","result":null}"#
//!     };
//!     let mut response = http::Response::new(Bytes::from_static(body));
//!     response.headers_mut().insert("content-type", "application/json".parse().unwrap());
//!     Ok::<_, Error>(response)
//! });
//! let service = EnvelopeLayer::new(Envelope::vben()).layer(api);
//!
//! let ok = service.clone().oneshot(http::Request::get("/ok").body(()).unwrap()).await.unwrap();
//! assert_eq!(ok.body(), r#"{"id":7}"#);
//! assert_eq!(ok.extensions().get::<EnvelopeMeta>().unwrap().message.as_deref(), Some("ok"));
//!
//! let busy = service.oneshot(http::Request::get("/busy").body(()).unwrap()).await.unwrap_err();
//! assert_eq!(busy.kind(), ErrorKind::Business);
//! assert_eq!(busy.message(), Some("system busy"));
//! # });
//! ```
//!
//! [`describe_error`]: xhttp_core::json::describe_error
//! [`server_text`]: xhttp_core::mask::server_text
#![deny(unsafe_code)]

pub mod future;
mod layer;
mod service;
mod unwrap;

pub use future::ResponseFuture;
pub use layer::{Envelope, EnvelopeLayer, SkipEnvelope};
#[allow(deprecated)]
pub use service::EnvelopeService;
pub use service::UnwrapEnvelope;
pub use unwrap::{unwrap, EnvelopeMeta};

/// The former name of [`SkipEnvelope`] (the same type).
pub use layer::SkipEnvelope as RawResponse;
