//! A real loopback HTTP API server for testing HTTP clients: tokens that expire and rotate,
//! envelopes, counters, and seeded fault injection.
//!
//! [`TestServer::start`] binds `127.0.0.1:0` and serves HTTP/1.1 and HTTP/2 (prior
//! knowledge) from tasks of the current tokio runtime until the server is dropped. Tests,
//! benchmarks and the demo of xhttp all run against it, so what they measure goes through
//! real sockets.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Empty};
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use xhttp_testkit::{Faults, Route, TestServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestServer::start().await;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
//! let tokens = server.login();
//! let me = || {
//!     http::Request::get(server.url("/api/me"))
//!         .header("authorization", format!("Bearer {}", tokens.access_token))
//!         .body(Empty::new())
//! };
//!
//! let response = client.request(me()?).await?;
//! assert_eq!(response.status(), 200);
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(body, r#"{"code":0,"message":"ok","result":{"user":"admin"}}"#);
//!
//! // From now on every request on /api/me is answered 503 with a Retry-After.
//! let faults = Faults { fail_rate: 1.0, retry_after: Some("1".into()), ..Faults::default() };
//! server.set_faults(Route::Me, faults);
//! let response = client.request(me()?).await?;
//! assert_eq!(response.status(), 503);
//! assert_eq!(response.headers()["retry-after"], "1");
//!
//! assert_eq!(server.counters().hits(Route::Me), 2);
//! assert_eq!(server.counters().faults_injected(), 1);
//! assert_eq!(server.counters().token_calls(), 0); // `login()` issues directly
//! # Ok(())
//! # }
//! ```
//!
//! # Routes
//!
//! Token endpoints (each call that reaches one counts in [`Counters::token_calls`]):
//!
//! | route | |
//! |---|---|
//! | `POST /auth/login` | JSON `{"username","password"}` → `{"access_token","refresh_token","token_type":"Bearer","expires_in"}`; wrong credentials → 401 `{"error":"invalid_client"}` |
//! | `POST /auth/token` | RFC 6749 form: `grant_type=refresh_token&refresh_token=…`, or `grant_type=client_credentials` with `client_id`/`client_secret` (body or HTTP Basic; no refresh token issued); a bad refresh token → 400 `{"error":"invalid_grant"}` |
//! | `POST /auth/refresh` | JSON `{"refreshToken"}` → `{"code":0,"message":"ok","result":{"accessToken","refreshToken","expiresIn"}}`; invalid → 200 `{"code":401,"message":"invalid refresh token","result":null}` |
//!
//! Refresh tokens rotate, and presenting a retired one revokes its whole family (RFC 9700
//! section 4.14.2) and counts in [`Counters::reuse_detected`]. Access tokens expire after
//! [`Config::access_ttl`] on tokio's clock, so a test on a paused clock controls expiry with
//! `tokio::time::advance`.
//!
//! Protected routes need `Authorization: Bearer <access token>`; without a valid one they
//! answer as [`Config::expiry_mode`] says:
//!
//! | route | |
//! |---|---|
//! | `GET /api/items/{id}` | `{"code":0,"message":"ok","result":{"id":<id>,"name":"item <id>"}}` |
//! | `GET /api/me` | the envelope with `{"user":"admin"}` |
//! | `POST /api/items` | the JSON body, byte for byte, as the envelope's `result` |
//!
//! Open routes:
//!
//! | route | |
//! |---|---|
//! | `ANY /echo`, `/echo/{*rest}` | `{"method","path","query","headers":{lowercase name: value},"body":<UTF-8>}` |
//! | `GET /public/items/{id}` | as `/api/items/{id}`, without a token |
//! | `GET /public/gzip/{id}` | as `/public/items/{id}`, gzip-compressed with `Content-Encoding: gzip` when the request's `Accept-Encoding` accepts gzip (`q` above 0), plain otherwise; each compressed answer counts in [`Counters::gzip_responses`] |
//! | `POST /reflect` | 200 with the request's body as it is, under the content type in `x-reflect-content-type` (default `application/json`): any envelope dialect, any broken body (counts under `Route::Echo`) |
//! | `POST /upload` | reads the body without keeping it: `{"code":0,…,"result":{"bytes":<length>}}` |
//! | `GET /bytes/{n}` | `n` bytes of `x` with `content-length`, streamed in 64 KiB frames as the client reads |
//! | `GET /bytes-chunked/{n}` | the same without `content-length` |
//! | `GET /close-mid-body` | `content-length: 1000`, 10 bytes, then the connection breaks |
//! | `GET /gate/{id}` | waits for [`Gate::open`], then the envelope with `{"id":<id>}` |
//! | `GET /api/gate/{id}` | waits for [`Gate::open`], *then* checks the bearer token, then answers as `/api/items/{id}`: many requests with one token line up before any is answered |
//! | `GET /gate-echo/{*rest}` | waits for [`Gate::open`], then answers as `/echo`: callers that differ in a header line up, and each sees what the server saw |
//! | `GET /gate-status/{code}` | waits for [`Gate::open`], then answers as `/status/{code}` |
//! | `ANY /status/{code}` | that status with `{"error":{"message":"status <code>"}}`; `?retry_after=` adds `Retry-After` |
//! | `GET /problem/{code}` | that status, `content-type: application/problem+json`, `{"type":"https://example.com/probs/x","title":"Unprocessable","status":400,"detail":"name must not be empty"}` (the `status` member deliberately disagrees with the HTTP status) |
//! | `GET /html-error/{code}` | that status with `content-type: text/html` and an nginx-style HTML error page |
//! | `GET /envelope-error/{code}` | that status with `{"code":<code>,"message":"envelope says <code>","result":null}` |
//! | `GET /slow/{ms}` | answers after `ms` milliseconds |
//! | `GET /slow-body/{ms}` | sends half the body at once and the rest after `ms` milliseconds |
//! | `ANY /redirect?to=<url>&status=<3xx>` | a redirect (default 302) to any URL |
//!
//! Every route can misbehave on demand: at random with [`Faults`] and
//! [`TestServer::set_faults`], at named positions with a [`Script`] and
//! [`TestServer::set_script`] (the token endpoint failing its 3rd call, a burst of 503s, the
//! k-th request hanging or trickling its body). [`ChaosPlan`] puts them together into the
//! seeded chaos run of the demo's `--chaos` and of `tests/chaos.rs`, and [`StartLog`] tells
//! the seconds of a run in which calls could not start.
//! Below HTTP, [`RawServer`] sends garbage, hangs or resets, and [`refused_addr`] gives an
//! address where nothing listens.

mod auth;
mod bodies;
mod chaos;
mod config;
mod connection;
mod counters;
mod faults;
mod gate;
mod probe;
mod raw;
mod readiness;
mod redis;
mod resources;
mod responses;
mod script;
mod server;
mod splitmix;
mod stall;
mod tokens;
mod trace_log;

pub use chaos::ChaosPlan;
pub use config::{Config, ExpiryMode, TokenPair};
pub use counters::Counters;
pub use faults::{fault_pattern, FaultDecision, Faults, Route};
pub use gate::Gate;
pub use probe::{Probed, ProbedBody, ProbedFuture, TokenProbe};
pub use raw::{refused_addr, RawServer};
pub use readiness::ReadinessProbe;
pub use redis::{RedisServer, NO_INSTALL_ENV, REDIS_SERVER_ENV};
pub use script::{Action, Script};
pub use server::TestServer;
pub use stall::StartLog;
pub use trace_log::TraceLog;
