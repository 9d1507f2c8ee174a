//! Masking credentials in a message the server wrote.
//!
//! Servers quote what they rejected: "invalid token eyJhbGciOi...", "Authorization: Bearer
//! abc.def.ghi is expired". A message becomes part of an `Error`, whose `Display` ends up in
//! logs, toasts and bug reports, so anything in it that looks like a credential is masked
//! before it is kept. The rules are heuristics that prefer masking a harmless word to leaking
//! a token; each one is written so that ordinary prose, field names (`user.name`), host names
//! and paths survive.

use std::borrow::Cow;

use xhttp_core::redact::{is_secret_param, MASK};

/// `text` with every word that looks like a credential replaced by `REDACTED`.
///
/// A word (a run of ASCII letters, digits and `-_.=+/~%`) is masked when it is:
/// - a JWT or JWE: `eyJ` (base64url of `{"`, the start of every JOSE header) followed by at
///   least two more dot-separated segments;
/// - the credential after an authorization scheme (`Bearer`, `Basic`, `DPoP`): a word of 16
///   characters or more, or with anything but letters in it, so that "bearer token" stays;
/// - `name=value` where the name names a secret (`access_token=`, `client_secret=`, ...,
///   as [`xhttp_core::redact::is_secret_param`] decides): the value is masked;
/// - an opaque token: 32 characters or more, with letters and digits, and no `.` or `/` (API
///   keys, hex digests and random session ids; not host names, file names or paths).
///
/// ```
/// use xhttp_status::mask_tokens;
///
/// assert_eq!(mask_tokens("Bearer abc.def.ghi expired"), "Bearer REDACTED expired");
/// assert_eq!(
///     mask_tokens("bad jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl."),
///     "bad jwt REDACTED."
/// );
/// assert_eq!(mask_tokens("refresh_token=r-123 rejected"), "refresh_token=REDACTED rejected");
/// assert_eq!(
///     mask_tokens("the bearer token for user.name on api.example.com expired"),
///     "the bearer token for user.name on api.example.com expired"
/// );
/// ```
pub fn mask_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut previous_was_scheme = false;
    while let Some(start) = rest.find(is_word_char) {
        let (gap, tail) = rest.split_at(start);
        let end = tail.find(|c| !is_word_char(c)).unwrap_or(tail.len());
        let (word, after) = tail.split_at(end);
        let after_scheme =
            previous_was_scheme && !gap.is_empty() && gap.chars().all(char::is_whitespace);
        out.push_str(gap);
        out.push_str(&mask_word(word, after_scheme));
        previous_was_scheme = is_scheme(word);
        rest = after;
    }
    out.push_str(rest);
    out
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '+' | '/' | '~' | '%')
}

fn is_scheme(word: &str) -> bool {
    ["bearer", "basic", "dpop"]
        .iter()
        .any(|scheme| word.eq_ignore_ascii_case(scheme))
}

fn mask_word(word: &str, after_scheme: bool) -> Cow<'_, str> {
    // A full stop ending a sentence is not part of the token before it.
    let core = word.trim_end_matches('.');
    let suffix = &word[core.len()..];
    let masked = |prefix: &str| Cow::Owned(format!("{prefix}{MASK}{suffix}"));

    if after_scheme && (core.len() >= 16 || core.chars().any(|c| !c.is_ascii_alphabetic())) {
        return masked("");
    }
    if let Some((name, value)) = core.split_once('=') {
        if !value.is_empty() && is_secret_param(name) {
            return masked(&core[..=name.len()]);
        }
    }
    if let Some(at) = core.find("eyJ") {
        if core[at..].matches('.').count() >= 2 {
            return masked(&core[..at]);
        }
        // An unsecured JWT (`alg: none`) ends with the dot before its empty signature.
        if word[at..].matches('.').count() >= 2 {
            return Cow::Owned(format!("{}{MASK}", &core[..at]));
        }
    }
    let opaque = core.len() >= 32
        && !core.contains(['.', '/'])
        && core.chars().any(|c| c.is_ascii_digit())
        && core.chars().any(|c| c.is_ascii_alphabetic());
    if opaque {
        return masked("");
    }
    Cow::Borrowed(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[test]
    fn masks_jwts_anywhere_in_a_word() {
        assert_eq!(mask_tokens(JWT), "REDACTED");
        assert_eq!(
            mask_tokens(&format!("token '{JWT}' is expired")),
            "token 'REDACTED' is expired"
        );
        assert_eq!(mask_tokens(&format!("x={JWT},")), "x=REDACTED,");
        // Unsecured JWTs have an empty signature.
        assert_eq!(
            mask_tokens("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. ok"),
            "REDACTED ok"
        );
    }

    #[test]
    fn masks_credentials_after_a_scheme() {
        assert_eq!(
            mask_tokens("Authorization: Bearer abc.def.ghi"),
            "Authorization: Bearer REDACTED"
        );
        assert_eq!(mask_tokens("BEARER s3cr3t"), "BEARER REDACTED");
        assert_eq!(
            mask_tokens("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            "Basic REDACTED"
        );
        assert_eq!(
            mask_tokens("bearer abcdefghijklmnopqrst"),
            "bearer REDACTED"
        );
        assert_eq!(mask_tokens("invalid bearer token"), "invalid bearer token");
        assert_eq!(mask_tokens("Bearer, abc123"), "Bearer, abc123");
    }

    #[test]
    fn masks_secret_parameters_and_opaque_tokens() {
        assert_eq!(
            mask_tokens("access_token=abc&page=2 client_secret=s3"),
            "access_token=REDACTED&page=2 client_secret=REDACTED"
        );
        assert_eq!(
            mask_tokens("key 0123456789abcdef0123456789abcdef revoked"),
            "key REDACTED revoked"
        );
        assert_eq!(
            mask_tokens("session 6f1ed002-ab5d-42ee-a1c6-4d3a7f2c9e10 ended"),
            "session REDACTED ended"
        );
    }

    #[test]
    fn leaves_prose_names_hosts_and_paths_alone() {
        for text in [
            "name must not be empty",
            "field user.address.street is required",
            "see https://api.example.com/v1/items/1234567890/attachments/0987654321",
            "version 1.2.3 is not supported",
            "code=40009 token expired",
            "用户没有权限（令牌、用户名、密码错误）!",
            "",
        ] {
            let expected = if text.starts_with("code=") {
                "code=REDACTED token expired".to_string()
            } else {
                text.to_string()
            };
            assert_eq!(mask_tokens(text), expected, "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_jwt_never_survives(prefix in "[ -~]{0,20}", suffix in "[ -~]{0,20}") {
            let shown = mask_tokens(&format!("{prefix} {JWT} {suffix}"));
            proptest::prop_assert!(!shown.contains("SflKxwRJSMeKKF2QT4fw"), "{}", shown);
        }

        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = mask_tokens(&text);
        }
    }
}
