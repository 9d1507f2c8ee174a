//! The response future of [`Dedupe`](crate::Dedupe).

use futures_util::future::BoxFuture;
use http::Response;
use xhttp_core::Error;

/// The response future of [`Dedupe`](crate::Dedupe): boxed, since a call may lead a trip,
/// follow one, own its key or pass through, and a leader's trip may move to a task.
pub type ResponseFuture<T> = BoxFuture<'static, Result<Response<T>, Error>>;
