//! The response future of [`Auth`](crate::Auth).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::BoxError;
use xhttp_core::{Error, ErrorKind};

pin_project! {
    /// The response future of [`Auth`](crate::Auth): the inner future when the token was at
    /// hand, a boxed one when the request had to wait for a refresh.
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        Inner { #[pin] future: F },
        Waiting { future: BoxFuture<'static, Result<T, Error>> },
        Ready { result: Option<Result<T, Error>> },
    }
}

impl<F, T> ResponseFuture<F, T> {
    pub(crate) fn inner(future: F) -> Self {
        ResponseFuture {
            state: State::Inner { future },
        }
    }

    pub(crate) fn waiting(future: BoxFuture<'static, Result<T, Error>>) -> Self {
        ResponseFuture {
            state: State::Waiting { future },
        }
    }

    pub(crate) fn ready(result: Result<T, Error>) -> Self {
        ResponseFuture {
            state: State::Ready {
                result: Some(result),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => {
                let result = ready!(future.poll(cx));
                Poll::Ready(result.map_err(|e| Error::from_boxed(e.into())))
            }
            StateProj::Waiting { future } => future.as_mut().poll(cx),
            StateProj::Ready { result } => Poll::Ready(result.take().unwrap_or_else(|| {
                Err(Error::new(ErrorKind::Internal).with_message("polled after completion"))
            })),
        }
    }
}
