//! Live counters of what the server saw, for exact assertions in tests.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Route;

/// Live counters of a [`TestServer`](crate::TestServer).
///
/// Every counter is an atomic updated by the request that it counts, so the numbers are
/// exact under any concurrency; read them after the requests being counted have finished.
#[derive(Debug, Default)]
pub struct Counters {
    total: AtomicU64,
    hits: [AtomicU64; Route::COUNT],
    token_calls: AtomicU64,
    refresh_calls: AtomicU64,
    reuse_detected: AtomicU64,
    faults_injected: AtomicU64,
    in_flight: AtomicU64,
    peak_concurrency: AtomicU64,
    unauthorized: AtomicU64,
    stale_tokens: AtomicU64,
    bytes_streamed: AtomicU64,
    rejected_token_arrivals: AtomicU64,
    scripted_faults: AtomicU64,
    revoked_tokens: AtomicU64,
    gzip_responses: AtomicU64,
}

impl Counters {
    /// Requests received, on any path (unknown paths included).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Requests received on `route`, faulted ones included; [`Route::Any`] gives
    /// [`total`](Self::total).
    pub fn hits(&self, route: Route) -> u64 {
        match self.hits.get(route.index()) {
            Some(hits) => hits.load(Ordering::SeqCst),
            None => self.total(),
        }
    }

    /// Calls that reached a token endpoint's handler: logins, `/auth/token` (any grant) and
    /// `/auth/refresh`, successful or not. Faulted calls never reach the handler.
    pub fn token_calls(&self) -> u64 {
        self.token_calls.load(Ordering::SeqCst)
    }

    /// Refresh calls among [`token_calls`](Self::token_calls): `grant_type=refresh_token`
    /// and the custom JSON dialect.
    pub fn refresh_calls(&self) -> u64 {
        self.refresh_calls.load(Ordering::SeqCst)
    }

    /// Times a retired refresh token was presented (each one revokes its family, RFC 9700
    /// section 4.14.2). A client that refreshes once per expiry keeps this at 0.
    pub fn reuse_detected(&self) -> u64 {
        self.reuse_detected.load(Ordering::SeqCst)
    }

    /// Requests answered by fault injection (failed, dropped, malformed or hung) instead of
    /// their handler; delays alone are not counted.
    pub fn faults_injected(&self) -> u64 {
        self.faults_injected.load(Ordering::SeqCst)
    }

    /// Requests whose handler has not produced a response head yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The highest [`in_flight`](Self::in_flight) seen since the start or the last
    /// [`reset`](Self::reset).
    pub fn peak_concurrency(&self) -> u64 {
        self.peak_concurrency.load(Ordering::SeqCst)
    }

    /// Responses with status 401, plus 200 answers carrying the business "token expired"
    /// code ([`ExpiryMode::BusinessCode`](crate::ExpiryMode::BusinessCode)).
    pub fn unauthorized(&self) -> u64 {
        self.unauthorized.load(Ordering::SeqCst)
    }

    /// Protected requests whose bearer token was valid once but no longer is current:
    /// expired, revoked, or superseded by a refresh of its family (a superseded token that
    /// has not expired is still accepted unless
    /// [`Config::reject_superseded`](crate::Config::reject_superseded) is set, but counts).
    pub fn requests_with_stale_token(&self) -> u64 {
        self.stale_tokens.load(Ordering::SeqCst)
    }

    /// Body bytes produced by `/bytes/{n}` and `/bytes-chunked/{n}`. Bodies are produced
    /// only as fast as the client reads, so this shows that a large body is streamed.
    pub fn bytes_streamed(&self) -> u64 {
        self.bytes_streamed.load(Ordering::SeqCst)
    }

    /// Protected requests that arrived bearing an access token this server had already
    /// turned away (answered 401, or the business "token expired" code, at least once
    /// before): a token is dead once the server rejected it.
    ///
    /// The server cannot tell when such a request was sent: this counts the requests that
    /// were already on the wire when the first rejection went out (a race no client can
    /// avoid, at most one per request in flight then) together with those a client sent after
    /// it had seen the rejection (a defect). [`TokenProbe`](crate::TokenProbe), on the client
    /// side, counts the second kind alone.
    ///
    /// ```
    /// use xhttp_testkit::Counters;
    ///
    /// assert_eq!(Counters::default().rejected_token_arrivals(), 0);
    /// ```
    pub fn rejected_token_arrivals(&self) -> u64 {
        self.rejected_token_arrivals.load(Ordering::SeqCst)
    }

    /// Requests answered by a [`Script`](crate::Script) step (also counted in
    /// [`faults_injected`](Self::faults_injected), delays and slow bodies included).
    pub fn scripted_faults(&self) -> u64 {
        self.scripted_faults.load(Ordering::SeqCst)
    }

    /// Live access tokens revoked by an [`Action::Revoke`](crate::Action::Revoke) step.
    pub fn revoked_tokens(&self) -> u64 {
        self.revoked_tokens.load(Ordering::SeqCst)
    }

    /// Answers of `GET /public/gzip/{id}` sent gzip-compressed (`Content-Encoding: gzip`),
    /// because the request's `Accept-Encoding` accepted gzip. A client that decodes gzip
    /// and asks for it on every call sees this equal its successful calls.
    pub fn gzip_responses(&self) -> u64 {
        self.gzip_responses.load(Ordering::SeqCst)
    }

    /// Sets every counter to 0, except [`in_flight`](Self::in_flight), which keeps
    /// counting the requests still running; the peak restarts from it.
    pub fn reset(&self) {
        let counters = [
            &self.total,
            &self.token_calls,
            &self.refresh_calls,
            &self.reuse_detected,
            &self.faults_injected,
            &self.unauthorized,
            &self.stale_tokens,
            &self.bytes_streamed,
            &self.rejected_token_arrivals,
            &self.scripted_faults,
            &self.revoked_tokens,
            &self.gzip_responses,
        ];
        for counter in counters.into_iter().chain(&self.hits) {
            counter.store(0, Ordering::SeqCst);
        }
        self.peak_concurrency
            .store(self.in_flight(), Ordering::SeqCst);
    }

    pub(crate) fn request_started(&self) -> InFlight<'_> {
        self.total.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_concurrency.fetch_max(now, Ordering::SeqCst);
        InFlight { counters: self }
    }

    pub(crate) fn hit(&self, route: Route) {
        if let Some(hits) = self.hits.get(route.index()) {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn token_call(&self, refresh: bool) {
        self.token_calls.fetch_add(1, Ordering::SeqCst);
        if refresh {
            self.refresh_calls.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn reuse(&self) {
        self.reuse_detected.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn fault(&self) {
        self.faults_injected.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn rejected(&self) {
        self.unauthorized.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn stale_token(&self) {
        self.stale_tokens.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn rejected_token_arrival(&self) {
        self.rejected_token_arrivals.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn revoked(&self) {
        self.revoked_tokens.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn scripted(&self) {
        self.scripted_faults.fetch_add(1, Ordering::SeqCst);
        self.faults_injected.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn gzipped(&self) {
        self.gzip_responses.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn streamed(&self, bytes: u64) {
        self.bytes_streamed.fetch_add(bytes, Ordering::SeqCst);
    }
}

/// Counts one request as in flight until dropped, so a cancelled request is uncounted too.
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    counters: &'a Counters,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_follows_the_highest_in_flight() {
        let counters = Counters::default();
        let a = counters.request_started();
        let b = counters.request_started();
        drop(a);
        let c = counters.request_started();
        assert_eq!(counters.in_flight(), 2);
        assert_eq!(counters.peak_concurrency(), 2);
        drop((b, c));
        assert_eq!(counters.in_flight(), 0);
        assert_eq!(counters.total(), 3);
    }

    #[test]
    fn reset_keeps_requests_in_flight() {
        let counters = Counters::default();
        let running = counters.request_started();
        counters.hit(Route::Me);
        counters.token_call(true);
        counters.reset();
        assert_eq!(counters.total(), 0);
        assert_eq!(counters.hits(Route::Me), 0);
        assert_eq!(counters.refresh_calls(), 0);
        assert_eq!(counters.in_flight(), 1);
        assert_eq!(counters.peak_concurrency(), 1);
        drop(running);
        assert_eq!(counters.in_flight(), 0);
    }
}
