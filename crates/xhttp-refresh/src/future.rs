//! The response future of [`Refresh`](crate::Refresh): the inner future on the common path,
//! a boxed refresh-and-replay only after a rejection.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{BoxError, Service};
use xhttp_core::body::RequestBody;
use xhttp_core::Error;

use crate::replay::{note_accepted, Replay};

pin_project! {
    /// The response future of [`Refresh`](crate::Refresh).
    pub struct ResponseFuture<S, B, T>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B, T>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, T>
    where
        S: Service<Request<B>>,
    {
        First { #[pin] future: S::Future, replay: Option<Replay<S, B>> },
        Slow { future: BoxFuture<'static, Result<Response<T>, Error>> },
    }
}

impl<S, B, T> ResponseFuture<S, B, T>
where
    S: Service<Request<B>>,
{
    pub(crate) fn passthrough(future: S::Future) -> Self {
        ResponseFuture {
            state: State::First {
                future,
                replay: None,
            },
        }
    }

    pub(crate) fn first(future: S::Future, replay: Replay<S, B>) -> Self {
        ResponseFuture {
            state: State::First {
                future,
                replay: Some(replay),
            },
        }
    }
}

impl<S, B, T> Future for ResponseFuture<S, B, T>
where
    S: Service<Request<B>, Response = Response<T>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: RequestBody + Send + 'static,
    T: Send + 'static,
{
    type Output = Result<Response<T>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::First { future, replay } => {
                    let result = ready!(future.poll(cx)).map_err(|e| Error::from_boxed(e.into()));
                    let Some(replay) = replay.take() else {
                        return Poll::Ready(result);
                    };
                    if replay.config.triggers.rejection(&result).is_none() {
                        note_accepted(&replay.config, &replay.slot, &result);
                        return Poll::Ready(result);
                    }
                    // No token went out with this trip (another origin, SkipAuth): nothing
                    // to refresh.
                    let Some(generation) = replay.slot.get() else {
                        return Poll::Ready(result);
                    };
                    state.set(State::Slow {
                        future: Box::pin(replay.run(generation, result)),
                    });
                }
                StateProj::Slow { future } => return future.as_mut().poll(cx),
            }
        }
    }
}
