//! User-info in a URL (`https://bob:hunter2@api.example.com/`) becomes an
//! `Authorization: Basic` header before the request enters the stack, and never travels below
//! the facade in the URI.
//!
//! Why: below the facade the URI is everywhere. hyper-util keys its pool on the authority and
//! writes it into its DEBUG and TRACE events, HTTP/2 sends it as `:authority`, and every
//! layer that logs a URI would have to know to cut it. One rewrite at the top is the only
//! place that cannot be forgotten.
//!
//! What is decided:
//! - user and password are percent-decoded (`b%40b` is `b@b`), joined by `:` and encoded as
//!   RFC 7617 says; the header is marked sensitive, so hyper's HPACK never indexes it and the
//!   dedupe key keeps it;
//! - credentials are never dropped silently and never sent twice: user-info on a request
//!   that already has an `Authorization` header (its own or a default header), or on a
//!   request to an origin the client's auth sends a token to (unless the request carries
//!   `SkipAuth`), is an [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest) that
//!   says which two collide, without the values;
//! - an empty user-info (`https://@host/`, `https://:@host/`) is cut and sends nothing.

use std::str::FromStr;

use base64::Engine;
use http::header::{HeaderValue, AUTHORIZATION};
use http::uri::{Authority, Uri};
use http::Request;
use xhttp_core::{Body, Error};

/// Whether `uri` carries user-info: the cheap test every request passes.
pub(crate) fn has_user_info(uri: &Uri) -> bool {
    uri.authority().is_some_and(|a| a.as_str().contains('@'))
}

/// Cuts the user-info out of the request's URI and puts it in an `Authorization: Basic`
/// header. `auth_applies` says whether the client's auth would add its own credentials.
pub(crate) fn into_basic_auth(
    request: &mut Request<Body>,
    auth_applies: bool,
) -> Result<(), Error> {
    let Some((user_info, host)) = request
        .uri()
        .authority()
        .and_then(|a| a.as_str().rsplit_once('@'))
    else {
        return Ok(());
    };
    let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
    let header = if user.is_empty() && password.is_empty() {
        None
    } else {
        if request.headers().contains_key(AUTHORIZATION) {
            return Err(Error::invalid_request(
                "the URL carries credentials (user-info) and the request already has an \
                 Authorization header: remove one of them",
            ));
        }
        if auth_applies {
            return Err(Error::invalid_request(
                "the URL carries credentials (user-info) and the client's auth sends a token to \
                 this origin: remove the user-info, or send this request with SkipAuth",
            ));
        }
        Some(basic_header(user, password)?)
    };
    let authority = Authority::from_str(host)
        .map_err(|e| Error::invalid_request(format!("malformed URL host: {e}")))?;
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.authority = Some(authority);
    *request.uri_mut() = Uri::from_parts(parts)
        .map_err(|e| Error::invalid_request(format!("malformed URL: {e}")))?;
    if let Some(header) = header {
        request.headers_mut().insert(AUTHORIZATION, header);
    }
    Ok(())
}

/// `Basic base64(user:password)`, sensitive, from the percent-encoded URL parts.
fn basic_header(user: &str, password: &str) -> Result<HeaderValue, Error> {
    let mut pair = percent_decode(user);
    pair.push(b':');
    pair.extend_from_slice(&percent_decode(password));
    let mut value = String::from("Basic ");
    base64::engine::general_purpose::STANDARD.encode_string(&pair, &mut value);
    let mut value = HeaderValue::try_from(value)
        .map_err(|_| Error::invalid_request("URL credentials do not make a header"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Percent-decodes bytes as the WHATWG URL standard does: a `%` not followed by two hex
/// digits stays as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str) -> Request<Body> {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = url.parse().unwrap();
        request
    }

    #[test]
    fn user_info_becomes_a_sensitive_basic_header() {
        let mut r = request("https://bob:hunter2@api.example.com:8443/a?b=1");
        into_basic_auth(&mut r, false).unwrap();
        assert_eq!(r.uri(), "https://api.example.com:8443/a?b=1");
        let header = &r.headers()[AUTHORIZATION];
        // base64("bob:hunter2")
        assert_eq!(header, "Basic Ym9iOmh1bnRlcjI=");
        assert!(header.is_sensitive());
    }

    #[test]
    fn user_and_password_are_percent_decoded() {
        let mut r = request("http://b%40b:p%3Ass%25w%zz@host/");
        into_basic_auth(&mut r, false).unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode("b@b:p:ss%w%zz");
        assert_eq!(
            r.headers()[AUTHORIZATION],
            format!("Basic {expected}").as_str()
        );
        assert_eq!(r.uri(), "http://host/");
    }

    #[test]
    fn a_user_without_a_password_sends_an_empty_password() {
        let mut r = request("http://bob@host/");
        into_basic_auth(&mut r, false).unwrap();
        // base64("bob:")
        assert_eq!(r.headers()[AUTHORIZATION], "Basic Ym9iOg==");
    }

    #[test]
    fn empty_user_info_is_cut_and_sends_nothing() {
        for url in ["http://@host/x", "http://:@host/x"] {
            let mut r = request(url);
            into_basic_auth(&mut r, true).unwrap();
            assert_eq!(r.uri(), "http://host/x");
            assert!(!r.headers().contains_key(AUTHORIZATION));
        }
    }

    #[test]
    fn user_info_beside_another_credential_is_refused_without_echoing_it() {
        let mut r = request("https://bob:hunter2@api.example.com/");
        r.headers_mut()
            .insert(AUTHORIZATION, HeaderValue::from_static("Bearer t0ken"));
        let err = into_basic_auth(&mut r, false).unwrap_err();
        assert_eq!(err.kind(), xhttp_core::ErrorKind::InvalidRequest);
        assert!(err.to_string().contains("Authorization header"), "{err}");
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("t0ken"),
            "{text}"
        );
        let err = into_basic_auth(&mut request("https://bob:hunter2@h/"), true).unwrap_err();
        assert_eq!(err.kind(), xhttp_core::ErrorKind::InvalidRequest);
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2") && !text.contains("bob"), "{text}");
    }

    #[test]
    fn a_url_without_user_info_is_left_alone() {
        let mut r = request("https://api.example.com/a");
        assert!(!has_user_info(r.uri()));
        into_basic_auth(&mut r, true).unwrap();
        assert_eq!(r.uri(), "https://api.example.com/a");
        assert!(!r.headers().contains_key(AUTHORIZATION));
    }
}
