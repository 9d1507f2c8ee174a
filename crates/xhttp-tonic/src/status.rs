//! From an [`Error`] to a [`Status`] and back.

use std::error::Error as StdError;
use std::sync::Arc;

use tonic::Status;
use xhttp_core::error::MAX_TEXT_LEN;
use xhttp_core::Error;

use crate::code_for;

/// A `tonic::Status` for `err`: the code from [`code_for`], the error's `Display` as the
/// message, and the error itself as the status's
/// [`source()`](std::error::Error::source), so [`xhttp_error`] gives it back with its
/// details (attempts, `retry_after`, the refresh failure).
///
/// The message never carries a credential: an [`Error`] keeps no headers, its URI is
/// redacted and its text masked when it enters, and the `Display` is masked once more here
/// (the known secrets of the moment, credential shapes), so a secret that reached the error
/// by a path no one foresaw does not reach the status either.
///
/// ```
/// use tonic::Code;
/// use xhttp_core::{Error, ErrorKind};
///
/// let err = Error::new(ErrorKind::SessionExpired).with_message("refresh token revoked");
/// let status = xhttp_tonic::status_for(&err);
/// assert_eq!(status.code(), Code::Unauthenticated);
/// assert_eq!(status.message(), "session expired, log in again: refresh token revoked");
/// assert_eq!(xhttp_tonic::xhttp_error(&status).map(Error::kind), Some(ErrorKind::SessionExpired));
/// ```
pub fn status_for(err: &Error) -> Status {
    let message = xhttp_core::mask::server_text(&err.to_string(), MAX_TEXT_LEN);
    let mut status = Status::new(code_for(err), message);
    status.set_source(Arc::new(err.clone()));
    status
}

/// The xhttp [`Error`] behind a `tonic::Status`, when there is one in its source chain.
///
/// Two ways put it there: [`status_for`], and tonic itself, which turns an error of the
/// service under a generated client into a `Code::Unknown` status whose source is that
/// error. So a caller can read the code xhttp meant even from a stack that does not map its
/// errors:
///
/// ```
/// use tonic::{Code, Status};
/// use xhttp_core::{Error, ErrorKind};
///
/// // What a generated client returns when a layer below it failed with an xhttp error.
/// let status = Status::from_error(Box::new(Error::new(ErrorKind::Unauthorized)));
/// assert_eq!(status.code(), Code::Unknown);
/// let code = xhttp_tonic::xhttp_error(&status).map_or(status.code(), xhttp_tonic::code_for);
/// assert_eq!(code, Code::Unauthenticated);
/// ```
pub fn xhttp_error(status: &Status) -> Option<&Error> {
    let mut source = status.source();
    while let Some(err) = source {
        if let Some(err) = err.downcast_ref::<Error>() {
            return Some(err);
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use tonic::Code;
    use xhttp_core::mask::KnownSecret;
    use xhttp_core::ErrorKind;

    const ACCESS: &str = "at-9f8e7d6c5b4a39281706";
    const REFRESH: &str = "rt-0a1b2c3d4e5f60718293";

    fn errors_quoting_secrets() -> Vec<Error> {
        let request = http::Request::post(format!(
            "https://user:{REFRESH}@api.example.com/grpc.health.v1.Health/Check?access_token={ACCESS}"
        ))
        .header("authorization", format!("Bearer {ACCESS}"))
        .body(())
        .expect("request");
        vec![
            Error::new(ErrorKind::Unauthorized)
                .with_challenge(format!("Bearer error=\"invalid_token\", token={ACCESS}"))
                .with_request(&request),
            Error::new(ErrorKind::SessionExpired)
                .with_message(format!("refresh token {REFRESH} revoked")),
            Error::new(ErrorKind::RefreshFailed)
                .with_message(format!(r#"{{"access_token":"{ACCESS}"}}"#))
                .with_status(StatusCode::BAD_GATEWAY),
            Error::business(40009, format!("token {ACCESS} expired")),
            Error::decode(format!("refresh_token={REFRESH}")),
            Error::transport(format!("reset while sending Bearer {ACCESS}")).with_request(&request),
            Error::from_status(StatusCode::UNAUTHORIZED).with_message(ACCESS),
        ]
    }

    #[test]
    fn a_status_never_quotes_a_known_secret() {
        let _access = KnownSecret::register(ACCESS);
        let _refresh = KnownSecret::register(REFRESH);
        for err in errors_quoting_secrets() {
            let status = status_for(&err);
            let shown = format!("{} {status} {status:?}", status.message());
            assert!(!shown.contains(ACCESS), "{shown}");
            assert!(!shown.contains(REFRESH), "{shown}");
        }
    }

    #[test]
    fn a_status_never_quotes_a_credential_shape_even_unregistered() {
        for err in errors_quoting_secrets() {
            let status = status_for(&err);
            let shown = format!("{} {status:?}", status.message());
            assert!(!shown.contains(ACCESS), "{shown}");
            assert!(!shown.contains(REFRESH), "{shown}");
        }
    }

    #[test]
    fn the_message_is_the_errors_display() {
        let err = Error::from_status(StatusCode::SERVICE_UNAVAILABLE)
            .with_message("maintenance")
            .with_attempts(3);
        let status = status_for(&err);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), err.to_string());
        assert_eq!(
            status.message(),
            "server answered 503 Service Unavailable: maintenance (3 attempts)"
        );
    }

    #[test]
    fn the_error_comes_back_from_the_status_with_its_details() {
        let err = Error::from_status(StatusCode::TOO_MANY_REQUESTS)
            .with_retry_after(std::time::Duration::from_secs(2))
            .with_attempts(4);
        let status = status_for(&err);
        let back = xhttp_error(&status).expect("source");
        assert_eq!(back.attempts(), 4);
        assert_eq!(back.retry_after(), Some(std::time::Duration::from_secs(2)));
    }

    #[test]
    fn a_status_from_elsewhere_has_no_xhttp_error() {
        assert!(xhttp_error(&Status::unavailable("down")).is_none());
        let foreign = Status::from_error("boom".into());
        assert!(xhttp_error(&foreign).is_none());
    }

    #[test]
    fn tonics_own_conversion_keeps_the_error_as_source() {
        // What tonic's generated clients do with the error of the service below them.
        let status = Status::from_error(Box::new(Error::new(ErrorKind::SessionExpired)));
        assert_eq!(status.code(), Code::Unknown);
        let err = xhttp_error(&status).expect("source");
        assert_eq!(code_for(err), Code::Unauthenticated);
    }

    #[test]
    fn a_status_made_here_passes_through_tonics_conversion_unchanged() {
        // A stack whose top maps its errors with status_for hands tonic a Status, which tonic
        // returns as it is: the caller sees the mapped code, not Unknown.
        let status = status_for(&Error::new(ErrorKind::Unauthorized));
        let seen = Status::from_error(Box::new(status));
        assert_eq!(seen.code(), Code::Unauthenticated);
    }
}
