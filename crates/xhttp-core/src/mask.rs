//! The one masker of the stack: every piece of server text that enters an error, a notice, an
//! error-log record or a tracing event goes through [`server_text`] (or [`mask`] when it is
//! already clean and bounded).
//!
//! Servers quote what they rejected ("invalid token eyJhbGciOi...", a form body echoed back,
//! serde's `invalid type: string "<token>"`). The masker works in three passes:
//! 1. [`clean`]: control, bidi-override and invisible characters go, so nothing forges a log line
//!    and no zero-width character splits a secret so that it escapes the next passes;
//! 2. known secrets are replaced by value ([`KnownSecret`]: the current access and refresh
//!    tokens, client secrets, the fields a grant sends), before anything is cut;
//! 3. [`mask`]: anything shaped like a credential is masked;
//!
//! and only then is the text capped, on a character boundary.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

use crate::redact::{is_secret_param, MASK};

/// How many bytes of server text an error keeps by default.
pub const DEFAULT_CAP: usize = 1024;

/// `text` cleaned, with known secrets and credential shapes masked, capped at `cap` bytes.
///
/// ```
/// let shown = xhttp_core::mask::server_text("token=abc\u{202e}def\nforged line", 64);
/// assert_eq!(shown, "token=REDACTED forged line");
/// ```
pub fn server_text(text: &str, cap: usize) -> String {
    let cleaned = clean(text);
    let scrubbed = scrub_known(&cleaned);
    let mut masked = mask(&scrubbed);
    truncate(&mut masked, cap);
    masked
}

/// `text` with control characters turned into spaces and bidi-override and invisible
/// characters removed.
///
/// ```
/// assert_eq!(xhttp_core::mask::clean("a\nb\u{200b}c\u{061c}"), "a bc");
/// ```
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_invisible(c) {
            continue;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fff8}' | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0000}'..='\u{e0fff}')
}

fn truncate(text: &mut String, cap: usize) {
    if text.len() > cap {
        let mut end = cap;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// A secret the masker replaces by value wherever it appears, for as long as this guard lives.
///
/// The token manager registers the current access and refresh tokens, grants their client
/// secrets and the fields they send. Values shorter than [`KnownSecret::MIN_LEN`] bytes are not
/// registered (they would mask ordinary words); their shapes are still masked.
///
/// ```
/// use xhttp_core::mask::{server_text, KnownSecret};
///
/// let guard = KnownSecret::register("opaque-value-42");
/// assert_eq!(server_text("rejected opaque-value-42!", 64), "rejected REDACTED!");
/// drop(guard);
/// assert_eq!(server_text("rejected opaque-value-42!", 64), "rejected opaque-value-42!");
/// ```
#[must_use = "the secret is forgotten when the guard is dropped"]
pub struct KnownSecret {
    id: Option<u64>,
}

impl KnownSecret {
    /// The shortest value registered.
    pub const MIN_LEN: usize = 6;

    /// Registers `value` until the guard is dropped.
    pub fn register(value: &str) -> KnownSecret {
        let value = clean(value);
        if value.len() < Self::MIN_LEN {
            return KnownSecret { id: None };
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut map = registry().write().unwrap_or_else(|e| e.into_inner());
        map.insert(id, value.into_boxed_str());
        KnownSecret { id: Some(id) }
    }
}

impl Drop for KnownSecret {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut map = registry().write().unwrap_or_else(|e| e.into_inner());
            map.remove(&id);
        }
    }
}

impl std::fmt::Debug for KnownSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KnownSecret(REDACTED)")
    }
}

fn registry() -> &'static RwLock<HashMap<u64, Box<str>>> {
    static REGISTRY: OnceLock<RwLock<HashMap<u64, Box<str>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn scrub_known(text: &str) -> Cow<'_, str> {
    let map = registry().read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for secret in map.values() {
        if out.contains(&**secret) {
            out = Cow::Owned(out.replace(&**secret, MASK));
        }
    }
    out
}

/// `text` with every word that looks like a credential replaced by `REDACTED`.
///
/// A word (a run of ASCII letters, digits and `-_.=+/~%`) is masked when it is:
/// - a JWT or JWE: `eyJ` (base64url of `{"`, the start of every JOSE header) followed by at
///   least two more dot-separated segments;
/// - the credential after an authorization scheme (`Bearer`, `Basic`, `DPoP`): a word of 16
///   characters or more, or with anything but letters in it, so that "bearer token" stays;
/// - `name=value` where the name names a secret (`access_token=`, `client_secret=`, ...,
///   as [`is_secret_param`] decides): the value is masked;
/// - an opaque token: 32 characters or more, with letters and digits, and no `.` or `/` (API
///   keys, hex digests and random session ids; not host names, file names or paths).
///
/// ```
/// use xhttp_core::mask::mask;
/// assert_eq!(mask("Bearer abc.def.ghi expired"), "Bearer REDACTED expired");
/// assert_eq!(mask("refresh_token=r-123 rejected"), "refresh_token=REDACTED rejected");
/// ```
pub fn mask(text: &str) -> String {
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
        assert_eq!(mask(JWT), "REDACTED");
        assert_eq!(
            mask(&format!("token '{JWT}' is expired")),
            "token 'REDACTED' is expired"
        );
        assert_eq!(mask(&format!("x={JWT},")), "x=REDACTED,");
        // Unsecured JWTs have an empty signature.
        assert_eq!(
            mask("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. ok"),
            "REDACTED ok"
        );
    }

    #[test]
    fn masks_credentials_after_a_scheme() {
        assert_eq!(
            mask("Authorization: Bearer abc.def.ghi"),
            "Authorization: Bearer REDACTED"
        );
        assert_eq!(mask("BEARER s3cr3t"), "BEARER REDACTED");
        assert_eq!(
            mask("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            "Basic REDACTED"
        );
        assert_eq!(
            mask("bearer abcdefghijklmnopqrst"),
            "bearer REDACTED"
        );
        assert_eq!(mask("invalid bearer token"), "invalid bearer token");
        assert_eq!(mask("Bearer, abc123"), "Bearer, abc123");
    }

    #[test]
    fn masks_secret_parameters_and_opaque_tokens() {
        assert_eq!(
            mask("access_token=abc&page=2 client_secret=s3"),
            "access_token=REDACTED&page=2 client_secret=REDACTED"
        );
        assert_eq!(
            mask("key 0123456789abcdef0123456789abcdef revoked"),
            "key REDACTED revoked"
        );
        assert_eq!(
            mask("session 6f1ed002-ab5d-42ee-a1c6-4d3a7f2c9e10 ended"),
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
            assert_eq!(mask(text), expected, "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_jwt_never_survives(prefix in "[ -~]{0,20}", suffix in "[ -~]{0,20}") {
            let shown = mask(&format!("{prefix} {JWT} {suffix}"));
            proptest::prop_assert!(!shown.contains("SflKxwRJSMeKKF2QT4fw"), "{}", shown);
        }

        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = mask(&text);
        }
    }
}
