//! [`Auth`]: the service of [`AuthLayer`](crate::AuthLayer). A request whose token is at hand
//! goes down at once; one that must wait for a refresh waits in a boxed future.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{BoxError, Service, ServiceExt};
use xhttp_core::{Error, ErrorKind};

use crate::future::ResponseFuture;
use crate::layer::{Config, Decision};

/// The service of [`AuthLayer`](crate::AuthLayer): puts the token on requests to the
/// configured origins.
///
/// ```
/// use tower::{service_fn, Layer};
/// use xhttp_auth::{Auth, AuthLayer, TokenManager};
/// use xhttp_core::{Error, Origin};
///
/// fn wrap(manager: TokenManager) {
///     let api = service_fn(|_: http::Request<()>| async {
///         Ok::<_, Error>(http::Response::new(()))
///     });
///     let origin = Origin::parse("https://api.example.com").unwrap();
///     let service: Auth<_> = AuthLayer::new(manager, [origin]).layer(api);
///     let _api = service.into_inner();
/// }
/// ```
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Auth<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Auth { inner, config }
    }
}

xhttp_core::inner_service_accessors! {
    impl<S> Auth<S> { inner: S }
}

impl<S: fmt::Debug> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("origins", &self.config.origins)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, Response<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match self.config.decide(&request) {
            Decision::Pass => {}
            Decision::Insecure => {
                let err = Error::new(ErrorKind::InsecureTransport)
                    .with_message(
                        "a bearer token is only sent over https, or plain http to a loopback \
                         address such as 127.0.0.1 when allowed",
                    )
                    .with_request(&request);
                return ResponseFuture::ready(Err(err));
            }
            Decision::Unplaceable(why) => {
                let err = Error::invalid_request(why).with_request(&request);
                return ResponseFuture::ready(Err(err));
            }
            Decision::Token => match self.config.manager.current_now() {
                Some(token) => {
                    if let Err(err) = self.config.apply(&mut request, &token) {
                        return ResponseFuture::ready(Err(err));
                    }
                }
                None => {
                    // Wait for the token: the ready service goes into the future, a fresh
                    // clone stays here (tower-http's pattern), and is made ready there.
                    let clone = self.inner.clone();
                    let inner = std::mem::replace(&mut self.inner, clone);
                    let config = self.config.clone();
                    // A request with a deadline stops waiting for the refresh at it.
                    let deadline = xhttp_core::Deadline::of(&request);
                    return ResponseFuture::waiting(Box::pin(async move {
                        let token = config.manager.current_until(deadline).await?;
                        config.apply(&mut request, &token)?;
                        inner
                            .oneshot(request)
                            .await
                            .map_err(|e| Error::from_boxed(e.into()))
                    }));
                }
            },
        }
        ResponseFuture::inner(self.inner.call(request))
    }
}
