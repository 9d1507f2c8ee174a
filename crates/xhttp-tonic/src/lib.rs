//! xhttp errors as gRPC status codes, for tonic clients over xhttp layers.
//!
//! The xhttp layers (`AuthLayer`, `RefreshLayer`, `RetryLayer`, ...) fail with one error type,
//! [`xhttp_core::Error`]. Under a tonic client such an error reaches the caller as a
//! `tonic::Status` of code `Unknown` (tonic's rule for an error it does not recognise), so a
//! caller that matches on `Code::Unauthenticated` to send the user to a login page never
//! sees it. This crate gives every [`ErrorKind`](xhttp_core::ErrorKind) its gRPC code:
//!
//! - [`code_for`]: the [`tonic::Code`] of an error;
//! - [`status_for`]: a `tonic::Status` with that code, the error's masked `Display` as its
//!   message, and the error as its source;
//! - [`xhttp_error`]: the error back from a status, whether [`status_for`] made it or tonic
//!   wrapped the error as `Unknown`;
//! - [`code_for_http_status`]: gRPC's mapping of an HTTP status that came instead of a gRPC
//!   answer;
//! - [`ReplayableLayer`] above the xhttp layers and [`IntoTonicBodyLayer`] below them: a
//!   call's body can be sent again (up to a cap), so refresh replays and retry resends gRPC
//!   calls over a `Channel`;
//! - [`RefreshOnTrailersLayer`]: a stream that ends with UNAUTHENTICATED in its trailers
//!   refreshes the token for the next call (a rejection in the headers is the refresh layer's,
//!   which also replays).
//!
//! Rust's orphan rule forbids `impl From<xhttp_core::Error> for tonic::Status` outside both
//! crates, so these are functions. Map the errors at the top of the stack under the client,
//! and tonic hands the status through unchanged:
//!
//! ```
//! use tonic::Code;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use xhttp_core::{Error, ErrorKind};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // Stands for an xhttp stack over a tonic Channel whose refresh found the session dead.
//! let stack = service_fn(|_: http::Request<()>| async {
//!     Err::<http::Response<()>, _>(Error::new(ErrorKind::SessionExpired))
//! });
//! let service = ServiceBuilder::new()
//!     .map_err(|err| xhttp_tonic::status_for(&err))
//!     .service(stack);
//! let status = service.oneshot(http::Request::new(())).await.unwrap_err();
//! assert_eq!(status.code(), Code::Unauthenticated);
//! # });
//! ```
//!
//! # The mapping
//!
//! Each code is chosen for what the caller should do next, in the terms of gRPC's status
//! code guide: `Unauthenticated` means "log in again", `Unavailable` "retry with backoff",
//! `DeadlineExceeded` "it took too long", `FailedPrecondition` "fix the setup before
//! retrying". A kind added to xhttp later is `Unknown` until this table learns it.
//!
//! | `ErrorKind` | `tonic::Code` | Why |
//! |---|---|---|
//! | `SessionExpired` | `Unauthenticated` | The refresh credential is dead: only a new login helps. |
//! | `Unauthorized` | `Unauthenticated` | The server still rejected the credentials after a refresh and a replay. |
//! | `RefreshFailed` | `Unavailable` | The refresh failed for a reason that may pass (the token endpoint was down, slow, or answered garbage), whatever `Error::refresh_failure` says: a dead credential is `SessionExpired` instead. A refresh that ran out of its own time is not the caller's deadline, so not `DeadlineExceeded`. |
//! | `SessionChanged` | `Aborted` | A concurrent login or logout replaced the session the call was sent in; the call was for the old identity and is not replayed. Not `Unauthenticated`: the user has just logged in. |
//! | `Timeout` | `DeadlineExceeded` | Either scope: an attempt or the whole call ran out of time. |
//! | `Cancelled` | `Cancelled` | The caller or a cancel scope cancelled the call. |
//! | `Superseded` | `Cancelled` | The client cancelled the call in favour of a newer identical one; nothing failed and there is nothing to retry. |
//! | `Duplicate` | `Aborted` | An identical call is in flight and this one was refused: a concurrency conflict, which `Aborted` names. Not `AlreadyExists`, which speaks of a server-side entity. |
//! | `Transport` | `Unavailable` | gRPC's code for a connection that failed or broke, whether or not the request was sent (`Error::is_never_sent` tells). |
//! | `Status` | by the HTTP status | gRPC's HTTP-to-gRPC mapping ([`code_for_http_status`]): 400 `Internal`, 401 `Unauthenticated`, 403 `PermissionDenied`, 404 `Unimplemented`, 429, 502, 503, 504 `Unavailable`, others (and no status) `Unknown`. |
//! | `Business` | `Unknown` | An application's own failure code in a success envelope: no gRPC code means what it means. The code is in the message and in `Error::business_code`. |
//! | `Decode` | `Internal` | A response that could not be parsed, as gRPC reports a message it cannot decode. |
//! | `BodyTooLarge` | `ResourceExhausted` | gRPC's code for a message larger than the configured maximum. |
//! | `InvalidRequest` | `InvalidArgument` | The request could not be built (a bad URI, header or token); sending it again as it is cannot help. |
//! | `Config` | `FailedPrecondition` | A layer's configuration cannot work; nothing was sent. |
//! | `InsecureTransport` | `FailedPrecondition` | A credential would have gone over plain `http`: the channel's setup must change first. |
//! | `Internal` | `Internal` | A bug or a panic caught in a task that several calls shared. |
//!
//! # Getting the token onto a channel
//!
//! `AuthLayer` sends the token only to the origins it was given, and decides by the request's
//! URI. A tonic client made with `new(channel)` sends URIs that carry only a path (the
//! `Channel` adds its endpoint below the layers): bind the layer to the channel with
//! `AuthLayer::for_channel(manager, origin)`, and every such call gets the token. A layer
//! that is not bound to a channel refuses a path-only URI with `InvalidRequest`
//! (`InvalidArgument` here) rather than send the call without its token. A client made with
//! `with_origin(stack, uri)` writes the endpoint into every URI, which either layer matches.
#![deny(unsafe_code)]

mod code;
mod replay;
mod status;
mod trailers;

pub use code::{code_for, code_for_http_status};
pub use replay::{IntoTonicBody, IntoTonicBodyLayer, Replayable, ReplayableLayer};
pub use status::{status_for, xhttp_error};
pub use trailers::{future, RefreshOnTrailers, RefreshOnTrailersLayer, WatchTrailers};
