//! [`Triggers`]: what counts as a rejection of the token (the policy).

use std::any::Any;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use xhttp_core::challenge::is_invalid_token;
use xhttp_core::json::{business_code, normalize};
use xhttp_core::{BusinessCode, Error, ErrorKind};

/// What counts as "the token was rejected".
///
/// ```
/// use xhttp_refresh::Triggers;
/// let triggers = Triggers::default().business_codes([40009, 409, 1002]);
/// # drop(triggers);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Triggers {
    statuses: Vec<StatusCode>,
    invalid_token_challenge: bool,
    grpc_unauthenticated: bool,
    business_codes: Vec<BusinessCode>,
    code_pointer: String,
}

impl Default for Triggers {
    /// 401, `invalid_token` challenges and gRPC UNAUTHENTICATED; no business codes.
    fn default() -> Self {
        Triggers {
            statuses: vec![StatusCode::UNAUTHORIZED],
            invalid_token_challenge: true,
            grpc_unauthenticated: true,
            business_codes: Vec::new(),
            code_pointer: "/code".into(),
        }
    }
}

impl Triggers {
    /// Also treat `status` as a rejection (403 is refused: a new token does not cure a lack
    /// of permission, and refreshing on it is a refresh storm waiting to happen).
    pub fn status(mut self, status: StatusCode) -> Self {
        if status != StatusCode::FORBIDDEN && !self.statuses.contains(&status) {
            self.statuses.push(status);
        }
        self
    }

    /// Whether `WWW-Authenticate: Bearer error="invalid_token"` is a rejection whatever the
    /// status (default on).
    pub fn invalid_token_challenge(mut self, enabled: bool) -> Self {
        self.invalid_token_challenge = enabled;
        self
    }

    /// Whether `grpc-status: 16` in the response headers is a rejection (default on).
    pub fn grpc_unauthenticated(mut self, enabled: bool) -> Self {
        self.grpc_unauthenticated = enabled;
        self
    }

    /// Business codes that mean "token expired" (admin back ends often answer HTTP 200 with
    /// code 40009, 409 or 1002). Codes compare after the core's one normalisation
    /// ([`xhttp_core::json::business_code`]): a configured `40009` or `"40009"` matches a body's
    /// `40009`, `"40009"` or `40009.0`, through a `Bytes` body and an envelope error alike.
    ///
    /// ```
    /// use xhttp_refresh::Triggers;
    /// let triggers = Triggers::default().business_codes(["40009"]);
    /// # drop(triggers);
    /// ```
    pub fn business_codes<C: Into<BusinessCode>>(
        mut self,
        codes: impl IntoIterator<Item = C>,
    ) -> Self {
        self.business_codes
            .extend(codes.into_iter().map(|code| normalize(code.into())));
        self
    }

    /// Where the code sits in a JSON body that reaches this layer as `Bytes` (default
    /// `/code`): a JSON pointer, or a bare name for a top-level member (`"errno"` is
    /// `/errno`), read as every location of the library is read
    /// ([`xhttp_core::json::pointer`]). Used only with business codes and no envelope layer
    /// below.
    ///
    /// ```
    /// use xhttp_refresh::Triggers;
    /// let triggers = Triggers::default().business_codes([40009]).code_pointer("errno");
    /// # drop(triggers);
    /// ```
    pub fn code_pointer(mut self, pointer: impl AsRef<str>) -> Self {
        self.code_pointer = xhttp_core::json::pointer(pointer.as_ref()).into();
        self
    }

    /// The rejection in an outcome, if it is one: the status and challenge to report.
    pub(crate) fn rejection<B: 'static>(
        &self,
        outcome: &Result<Response<B>, Error>,
    ) -> Option<Rejection> {
        match outcome {
            Ok(response) => self.rejected_response(response),
            Err(err) => self.rejected_error(err),
        }
    }

    fn rejected_response<B: 'static>(&self, response: &Response<B>) -> Option<Rejection> {
        let status = response.status();
        let headers = response.headers();
        let by_status = status != StatusCode::FORBIDDEN && self.statuses.contains(&status);
        // Every `WWW-Authenticate` line, each parsed as a list of challenges.
        let by_challenge = self.invalid_token_challenge
            && headers
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(is_invalid_token);
        let by_grpc = self.grpc_unauthenticated
            && headers
                .get("grpc-status")
                .is_some_and(|v| v.as_bytes() == b"16");
        let by_code = !self.business_codes.is_empty()
            && (response.body() as &dyn Any)
                .downcast_ref::<Bytes>()
                .and_then(|body| body_code(body, &self.code_pointer))
                .is_some_and(|code| self.business_codes.contains(&code));
        (by_status || by_challenge || by_grpc || by_code).then(|| Rejection {
            status: Some(status),
            challenge: challenge_of(headers),
        })
    }

    fn rejected_error(&self, err: &Error) -> Option<Rejection> {
        let by_status = err.kind() == ErrorKind::Status
            && err
                .status()
                .is_some_and(|s| s != StatusCode::FORBIDDEN && self.statuses.contains(&s));
        let by_challenge =
            self.invalid_token_challenge && err.challenge().is_some_and(is_invalid_token);
        let by_code = err.kind() == ErrorKind::Business
            && err
                .business_code()
                .is_some_and(|code| self.business_codes.contains(&normalize(code.clone())));
        (by_status || by_challenge || by_code).then(|| Rejection {
            status: err.status(),
            challenge: err.challenge().map(str::to_owned),
        })
    }
}

/// The challenges of a response, for the `Unauthorized` error: every `WWW-Authenticate` line,
/// joined as RFC 9110 section 5.3 combines field lines.
fn challenge_of(headers: &HeaderMap) -> Option<String> {
    let lines: Vec<&str> = headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

/// The business code at `pointer` in a JSON body, normalised by the core's one rule
/// (`40009`, `"40009"` and `40009.0` are one code); `None` for anything that is not a JSON
/// object. Duplicate keys are read as serde_json reads them: the last one wins.
fn body_code(body: &Bytes, pointer: &str) -> Option<BusinessCode> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    business_code(value.pointer(pointer)?)
}

/// A rejection, for the `Unauthorized` error when the replay is rejected too.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    status: Option<StatusCode>,
    challenge: Option<String>,
}

impl Rejection {
    pub(crate) fn into_error(self) -> Error {
        let mut err = Error::new(ErrorKind::Unauthorized);
        if let Some(status) = self.status {
            err = err.with_status(status);
        }
        if let Some(challenge) = self.challenge {
            err = err.with_challenge(challenge);
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &'static str) -> Result<Response<Bytes>, Error> {
        Ok(Response::new(Bytes::from_static(body.as_bytes())))
    }

    #[test]
    fn every_spelling_of_a_code_is_one_code_through_both_paths() {
        for configured in [
            Triggers::default().business_codes([40009]),
            Triggers::default().business_codes(["40009"]),
            Triggers::default().business_codes([" 40009 "]),
        ] {
            for body in [
                r#"{"code":40009}"#,
                r#"{"code":"40009"}"#,
                r#"{"code":40009.0}"#,
                r#"{"code":4.0009e4}"#,
                r#"{"code":0,"code":40009}"#,
            ] {
                assert!(configured.rejection(&ok(body)).is_some(), "{body}");
            }
            for body in [
                r#"{"code":"040009"}"#,
                r#"{"code":40009.5}"#,
                r#"{"code":40009,"code":0}"#,
                r#"[{"code":40009}]"#,
                "40009",
            ] {
                assert!(configured.rejection(&ok(body)).is_none(), "{body}");
            }
            for code in [BusinessCode::Int(40009), BusinessCode::from("40009")] {
                let err: Result<Response<Bytes>, Error> = Err(Error::business(code, "expired"));
                assert!(configured.rejection(&err).is_some());
            }
        }
    }

    #[test]
    fn challenges_are_read_from_every_header_line() {
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.append(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(r#"Basic realm="Bearer error=\"invalid_token\"""#),
        );
        let triggers = Triggers::default();
        let outcome: Result<Response<Bytes>, Error> = Ok(response.clone());
        assert!(
            triggers.rejection(&outcome).is_none(),
            "quoted text is not a challenge"
        );
        response.headers_mut().append(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
        let outcome: Result<Response<Bytes>, Error> = Ok(response);
        let rejection = triggers
            .rejection(&outcome)
            .expect("the second line triggers");
        let err = rejection.into_error();
        assert_eq!(
            err.challenge(),
            Some(r#"Basic realm="Bearer error=\"invalid_token\"", Bearer error="invalid_token""#)
        );
    }
}
