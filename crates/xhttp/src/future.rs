//! [`ResponseFuture`]: what [`RequestBuilder::send`](crate::RequestBuilder::send) and
//! [`Client::execute`](crate::Client::execute) return.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Uri};
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use xhttp_core::{Body, Error};

use crate::{BoxService, Response};

pin_project! {
    /// A request on its way through the stack.
    ///
    /// A named future rather than an `async fn`: it holds the stack's future and the two
    /// things an error needs (method and URI, for a redacted `Display`), nothing else, so it
    /// stays a third of the size an `async` chain would be.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Running {
            #[pin]
            call: Oneshot<BoxService, Request<Body>>,
            method: Method,
            uri: Uri,
        },
        Failed { error: Option<Error> },
    }
}

impl ResponseFuture {
    pub(crate) fn new(service: BoxService, request: Request<Body>) -> Self {
        let method = request.method().clone();
        let uri = request.uri().clone();
        ResponseFuture {
            state: State::Running {
                call: Oneshot::new(service, request),
                method,
                uri,
            },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { call, method, uri } => call.poll(cx).map(|result| {
                result.map(Response::from).map_err(|err| {
                    let err = at_least_one_attempt(err);
                    match err.uri() {
                        Some(_) => err,
                        None => err.with_method_uri(method, uri),
                    }
                })
            }),
            StateProj::Failed { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                Error::new(xhttp_core::ErrorKind::Internal)
                    .with_message("response future polled after completion")
            }))),
        }
    }
}

/// An error that only a trip to the server can produce says it took one attempt when no
/// retry layer counted (retries off for the request, or no retry layer in the client): one
/// trip was made, and `attempts()` must not say 0. Errors raised before any trip (an invalid
/// request, a refused duplicate, a cancelled call, a failed proactive refresh) keep 0.
fn at_least_one_attempt(err: Error) -> Error {
    use xhttp_core::{ErrorKind, TimeoutScope};
    let tripped = matches!(
        err.kind(),
        ErrorKind::Status
            | ErrorKind::Business
            | ErrorKind::Decode
            | ErrorKind::BodyTooLarge
            | ErrorKind::Transport
            | ErrorKind::Unauthorized
            | ErrorKind::Timeout(TimeoutScope::Attempt)
    );
    if tripped && err.attempts() == 0 {
        err.with_attempts(1)
    } else {
        err
    }
}
