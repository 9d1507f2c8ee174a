//! The response future of [`Refresh`](crate::Refresh): the inner future on the common path,
//! a boxed refresh-and-replay only after a rejection.

use futures_util::FutureExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{BoxError, Service, ServiceExt};
use xhttp_auth::GenerationSlot;
use xhttp_core::body::{can_replay, mark_not_replayed, RequestBody};
use xhttp_core::Error;

use crate::{Config, Replayed};

/// What a call keeps to replay its request after a refresh.
pub(crate) struct Replay<S, B> {
    /// `None` when the body cannot be copied. Boxed: a request is 272 bytes, and every layer
    /// above moves this future while the chain is built.
    pub(crate) resend: Option<Box<Resend<S, B>>>,
    pub(crate) slot: GenerationSlot,
    pub(crate) config: Arc<Config>,
}

/// The copy of a request and the clone of the inner service a replay sends it through.
pub(crate) struct Resend<S, B> {
    pub(crate) service: S,
    pub(crate) request: Request<B>,
}

impl<S, B, T> Replay<S, B>
where
    S: Service<Request<B>, Response = Response<T>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: RequestBody + Send + 'static,
    T: Send + 'static,
{
    async fn run(
        self,
        generation: u64,
        first: Result<Response<T>, Error>,
    ) -> Result<Response<T>, Error> {
        tracing::debug!(
            generation,
            "token rejected: refreshing, then replaying once"
        );
        // `SessionChanged` (the trip was sent in an older session) ends here too: no replay
        // with another session's credentials.
        // The caller's deadline bounds its wait for the refresh (the flight goes on for others).
        let deadline = self
            .resend
            .as_deref()
            .and_then(|resend| xhttp_core::Deadline::of(&resend.request));
        let refreshed = match deadline {
            Some(deadline) => {
                self.config
                    .manager
                    .refresh_after_rejection_before(generation, deadline)
                    .await
            }
            None => {
                self.config
                    .manager
                    .refresh_after_rejection(generation)
                    .await
            }
        };
        if let Err(err) = refreshed {
            if err.kind() == xhttp_core::ErrorKind::SessionChanged {
                tracing::debug!("rejected in an older session: returned without a replay");
            }
            return Err(err);
        }
        // Decided now, not when the copy was taken: a streaming body that outgrew its replay
        // cap during the first send cannot be sent again. The token is refreshed either way,
        // for the next call.
        let Some(resend) = self.resend.filter(|resend| can_replay(&resend.request)) else {
            tracing::debug!("request body cannot be replayed: returning the first outcome");
            let mut first = first;
            mark_not_replayed(&mut first);
            return first;
        };
        drop(first);
        let Resend {
            service,
            mut request,
        } = *resend;
        request.extensions_mut().insert(Replayed);
        let replay_slot = GenerationSlot::new();
        request.extensions_mut().insert(replay_slot.clone());
        let second = service
            .oneshot(request)
            .await
            .map_err(|e| Error::from_boxed(e.into()));
        match self.config.triggers.rejection(&second) {
            Some(rejection) => {
                // The fresh token was rejected too: it is dead, so tell the manager (no call
                // sends it again; the manager's rejection back-off bounds the refreshes a
                // server that rejects every fresh token can cause). Only the synchronous
                // part runs here: the refresh, if one starts, is the manager's own task and
                // this caller does not wait for it.
                if let Some(generation) = replay_slot.get() {
                    let _ = self
                        .config
                        .manager
                        .refresh_after_rejection(generation)
                        .now_or_never();
                }
                Err(rejection.into_error())
            }
            None => {
                note_accepted(&self.config, &replay_slot, &second);
                second
            }
        }
    }
}

/// A response that is not a rejection tells the manager the server took the token (it tells
/// a revoked token from one the server never accepts). An error is no such sign: a transport
/// failure or a gateway's 503 may never have looked at it.
fn note_accepted<T>(config: &Config, slot: &GenerationSlot, outcome: &Result<Response<T>, Error>) {
    if outcome.is_ok() {
        if let Some(generation) = slot.get() {
            config.manager.note_accepted(generation);
        }
    }
}

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
