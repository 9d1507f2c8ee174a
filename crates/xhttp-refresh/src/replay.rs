//! What a call does after its token was rejected: wait for the refresh, then replay its copy
//! (three times at most).

use std::sync::Arc;

use http::{Request, Response};
use tower::{BoxError, Service, ServiceExt};
use xhttp_auth::GenerationSlot;
use xhttp_core::body::{can_replay, copy_for_replay, mark_not_replayed, RequestBody};
use xhttp_core::Error;

use crate::layer::Config;
use crate::Replayed;

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
    pub(crate) async fn run(
        self,
        generation: u64,
        first: Result<Response<T>, Error>,
    ) -> Result<Response<T>, Error> {
        tracing::debug!(generation, "token rejected: refreshing, then replaying");
        // The caller's deadline bounds its wait for the refresh (the flight goes on for others).
        let deadline = self
            .resend
            .as_deref()
            .and_then(|resend| xhttp_core::Deadline::of(&resend.request));
        // `SessionChanged` (the trip was sent in an older session) ends here too: no replay
        // with another session's credentials.
        if let Err(err) = refresh(&self.config, generation, deadline).await {
            if err.kind() == xhttp_core::ErrorKind::SessionChanged {
                tracing::debug!("rejected in an older session: returned without a replay");
            }
            return Err(err);
        }
        // Decided now, not when the copy was taken: a streaming body that outgrew its replay
        // cap during the first send cannot be sent again. The token is refreshed either way,
        // for the next call.
        let Some(mut resend) = self.resend.filter(|resend| can_replay(&resend.request)) else {
            tracing::debug!("request body cannot be replayed: returning the first outcome");
            let mut first = first;
            mark_not_replayed(&mut first);
            return first;
        };
        drop(first);
        let mut replays = 0;
        loop {
            replays += 1;
            // A spare copy for one more replay, taken before this one consumes the request.
            let spare = (replays < MAX_REPLAYS)
                .then(|| copy_for_replay(&resend.request))
                .flatten()
                .map(|request| Resend {
                    service: resend.service.clone(),
                    request,
                });
            let (outcome, slot) = resend.send().await;
            let Some(rejection) = self.config.triggers.rejection(&outcome) else {
                note_accepted(&self.config, &slot, &outcome);
                return outcome;
            };
            // The fresh token was rejected too: it is dead, so tell the manager (no call sends
            // it again). Once in a row may be a revocation that hit the token's first use: the
            // manager refreshes again at once, and this call replays once more. A server that
            // rejects every fresh token gets the manager's back-off instead (its
            // `Unauthorized`), and the caller this rejection.
            let Some(rejected) = slot.get() else {
                return Err(rejection.into_error());
            };
            let again = match spare {
                Some(spare) if can_replay(&spare.request) => spare,
                _ => {
                    // This caller does not wait for the refresh it causes.
                    self.config.manager.report_rejected(rejected);
                    tracing::info!(
                        generation = rejected,
                        replays,
                        "the replay's token was rejected too: giving up"
                    );
                    return Err(rejection.into_error());
                }
            };
            if let Err(err) = refresh(&self.config, rejected, deadline).await {
                tracing::info!(
                    generation = rejected,
                    kind = ?err.kind(),
                    "the replay's token was rejected and no newer one came: giving up"
                );
                return Err(rejection.into_error());
            }
            tracing::debug!(
                generation = rejected,
                "the refreshed token was rejected too: replaying once more"
            );
            *resend = again;
        }
    }
}

/// The manager's token after `generation` was rejected, waited for until the caller's deadline.
async fn refresh(
    config: &Config,
    generation: u64,
    deadline: Option<xhttp_core::Deadline>,
) -> Result<Arc<xhttp_auth::Token>, Error> {
    let manager = &config.manager;
    match deadline {
        Some(deadline) => {
            manager
                .refresh_after_rejection_before(generation, deadline)
                .await
        }
        None => manager.refresh_after_rejection(generation).await,
    }
}

/// Replays one call makes at most: the first after the refresh its rejection started; each
/// further one only when the last replay's token was rejected too and the manager hands out a
/// newer one at once (a revocation; a server that rejects every fresh token is held back by
/// the manager after the second, so it never gets a third). The cap only bounds a call that
/// meets several revocations in a row; it is never a loop.
const MAX_REPLAYS: u32 = 3;

impl<S, B> Resend<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    /// Sends the copy, marked as a replay, with a slot of its own for the generation the
    /// auth layer writes.
    async fn send<T>(self) -> (Result<Response<T>, Error>, GenerationSlot)
    where
        S: Service<Request<B>, Response = Response<T>>,
    {
        let Resend {
            service,
            mut request,
        } = self;
        request.extensions_mut().insert(Replayed);
        let slot = GenerationSlot::new();
        request.extensions_mut().insert(slot.clone());
        let outcome = service
            .oneshot(request)
            .await
            .map_err(|e| Error::from_boxed(e.into()));
        (outcome, slot)
    }
}

/// A response that is not a rejection tells the manager the server took the token (it tells
/// a revoked token from one the server never accepts). An error is no such sign: a transport
/// failure or a gateway's 503 may never have looked at it.
pub(crate) fn note_accepted<T>(
    config: &Config,
    slot: &GenerationSlot,
    outcome: &Result<Response<T>, Error>,
) {
    if outcome.is_ok() {
        if let Some(generation) = slot.get() {
            config.manager.note_accepted(generation);
        }
    }
}
