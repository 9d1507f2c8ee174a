//! The mapping itself (the policy): which [`Code`] each [`ErrorKind`] and each HTTP status
//! becomes. The table with the reasons is in the crate docs.

use http::StatusCode;
use tonic::Code;
use xhttp_core::{Error, ErrorKind};

/// The gRPC code a caller should see for `err`.
///
/// Every [`ErrorKind`] has a code, chosen by what the caller should do next (log in again,
/// retry with backoff, give up, fix the request), as the table in the [crate docs](crate)
/// states with the reason for each. A kind added to xhttp later maps to [`Code::Unknown`]
/// until this function learns it.
///
/// ```
/// use tonic::Code;
/// use xhttp_core::{Error, ErrorKind, TimeoutScope};
/// use xhttp_tonic::code_for;
///
/// assert_eq!(code_for(&Error::new(ErrorKind::SessionExpired)), Code::Unauthenticated);
/// assert_eq!(code_for(&Error::timeout(TimeoutScope::Total)), Code::DeadlineExceeded);
/// assert_eq!(code_for(&Error::from_status(http::StatusCode::FORBIDDEN)), Code::PermissionDenied);
/// ```
pub fn code_for(err: &Error) -> Code {
    match err.kind() {
        ErrorKind::SessionExpired | ErrorKind::Unauthorized => Code::Unauthenticated,
        // Transient by definition (a dead credential is SessionExpired): retry later, do not
        // send the user to a login page. A refresh that ran out of its own time is a slow
        // token endpoint, not the caller's deadline, so it is not DeadlineExceeded either.
        ErrorKind::RefreshFailed => Code::Unavailable,
        ErrorKind::SessionChanged => Code::Aborted,
        ErrorKind::Timeout(_) => Code::DeadlineExceeded,
        ErrorKind::Cancelled | ErrorKind::Superseded => Code::Cancelled,
        ErrorKind::Duplicate => Code::Aborted,
        ErrorKind::Transport => Code::Unavailable,
        ErrorKind::Status => err.status().map_or(Code::Unknown, code_for_http_status),
        ErrorKind::Business => Code::Unknown,
        ErrorKind::Decode | ErrorKind::Internal => Code::Internal,
        ErrorKind::BodyTooLarge => Code::ResourceExhausted,
        ErrorKind::InvalidRequest => Code::InvalidArgument,
        ErrorKind::Config | ErrorKind::InsecureTransport => Code::FailedPrecondition,
        _ => Code::Unknown,
    }
}

/// The gRPC code for an HTTP status that came instead of a gRPC answer, as gRPC's own
/// clients read it (gRPC's *HTTP to gRPC Status Code Mapping*): 400 `Internal`, 401
/// `Unauthenticated`, 403 `PermissionDenied`, 404 `Unimplemented`, 429, 502, 503 and 504
/// `Unavailable`, anything else `Unknown`.
///
/// ```
/// use http::StatusCode;
/// use tonic::Code;
/// use xhttp_tonic::code_for_http_status;
///
/// assert_eq!(code_for_http_status(StatusCode::TOO_MANY_REQUESTS), Code::Unavailable);
/// assert_eq!(code_for_http_status(StatusCode::NOT_FOUND), Code::Unimplemented);
/// assert_eq!(code_for_http_status(StatusCode::INTERNAL_SERVER_ERROR), Code::Unknown);
/// ```
pub fn code_for_http_status(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xhttp_core::error::RefreshFailure;
    use xhttp_core::TimeoutScope;

    /// Every kind xhttp-core defines today, with its code: a kind missing here is a kind the
    /// crate docs' table does not speak of either.
    fn table() -> Vec<(ErrorKind, Code)> {
        vec![
            (ErrorKind::InvalidRequest, Code::InvalidArgument),
            (ErrorKind::Config, Code::FailedPrecondition),
            (ErrorKind::Transport, Code::Unavailable),
            (
                ErrorKind::Timeout(TimeoutScope::Attempt),
                Code::DeadlineExceeded,
            ),
            (
                ErrorKind::Timeout(TimeoutScope::Total),
                Code::DeadlineExceeded,
            ),
            (ErrorKind::Status, Code::Unknown),
            (ErrorKind::Business, Code::Unknown),
            (ErrorKind::Decode, Code::Internal),
            (ErrorKind::BodyTooLarge, Code::ResourceExhausted),
            (ErrorKind::RefreshFailed, Code::Unavailable),
            (ErrorKind::SessionExpired, Code::Unauthenticated),
            (ErrorKind::Unauthorized, Code::Unauthenticated),
            (ErrorKind::SessionChanged, Code::Aborted),
            (ErrorKind::InsecureTransport, Code::FailedPrecondition),
            (ErrorKind::Superseded, Code::Cancelled),
            (ErrorKind::Duplicate, Code::Aborted),
            (ErrorKind::Cancelled, Code::Cancelled),
            (ErrorKind::Internal, Code::Internal),
        ]
    }

    #[test]
    fn every_kind_maps_to_its_documented_code() {
        let table = table();
        for kind in ErrorKind::ALL {
            assert!(table.iter().any(|(k, _)| *k == kind), "{kind:?} has no row");
        }
        for (kind, code) in table {
            assert_eq!(code_for(&Error::new(kind)), code, "{kind:?}");
        }
    }

    #[test]
    fn the_crate_docs_table_names_every_kind() {
        let docs = include_str!("lib.rs");
        for (kind, code) in table() {
            let name = match kind {
                ErrorKind::Timeout(_) => "Timeout".to_owned(),
                kind => format!("{kind:?}"),
            };
            let row = format!("//! | `{name}`");
            let line = docs
                .lines()
                .find(|line| line.starts_with(&row))
                .unwrap_or_else(|| panic!("no row for {name}"));
            assert!(line.contains(&format!("`{code:?}`")), "{name}: {line}");
        }
    }

    #[test]
    fn a_status_error_maps_by_its_http_status() {
        for (status, code) in [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (408, Code::Unknown),
            (409, Code::Unknown),
            (500, Code::Unknown),
            (501, Code::Unknown),
            (200, Code::Unknown),
        ] {
            let status = StatusCode::from_u16(status).expect("valid status");
            assert_eq!(code_for(&Error::from_status(status)), code, "{status}");
            assert_eq!(code_for_http_status(status), code, "{status}");
        }
    }

    #[test]
    fn the_kind_decides_even_when_an_http_status_is_attached() {
        // An Unauthorized error keeps the final 401; a Decode error the status of the body it
        // could not read: the kind, not the status, says what the caller does next.
        let decode = Error::decode("broken").with_status(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code_for(&decode), Code::Internal);
        let refresh = Error::new(ErrorKind::RefreshFailed)
            .with_refresh_failure(RefreshFailure::Endpoint)
            .with_status(StatusCode::UNAUTHORIZED);
        assert_eq!(code_for(&refresh), Code::Unavailable);
    }

    #[test]
    fn every_refresh_failure_is_unavailable() {
        for failure in [
            RefreshFailure::Timeout,
            RefreshFailure::Endpoint,
            RefreshFailure::Malformed,
            RefreshFailure::Unreachable,
            RefreshFailure::Interrupted,
            RefreshFailure::Other,
        ] {
            let err = Error::new(ErrorKind::RefreshFailed).with_refresh_failure(failure);
            assert_eq!(code_for(&err), Code::Unavailable, "{failure:?}");
        }
    }
}
