//! The one masker of the stack: every piece of server text that enters an error, a notice, an
//! error-log record or a tracing event goes through [`server_text`] (or [`mask`] when it is
//! already clean and bounded).
//!
//! Servers quote what they rejected ("invalid token eyJhbGciOi...", a form body echoed back,
//! serde's `invalid type: string "<token>"`). [`server_text`] works in four passes:
//! 1. [`clean`]: control, bidi-override and invisible characters go and whitespace runs become
//!    one space, so nothing forges a log line and no zero-width character splits a secret so
//!    that it escapes the next passes;
//! 2. known secrets are replaced by value ([`KnownSecret`]: the current access and refresh
//!    tokens, client secrets, the fields a grant sends), before anything is cut;
//! 3. [`mask`]: anything shaped like a credential is masked: the value after a secret name
//!    (see [`is_secret_name`]) in every notation servers use, and words shaped like tokens;
//! 4. only then is the text capped, on a character boundary.
//!
//! The rules are heuristics that prefer masking a harmless word to leaking a token. Each is
//! written so that prose, field names (`user.name`), host names, paths and non-Latin text
//! survive; the corpus in this module's tests lists what is masked and what is kept.
//!
//! # Bounds
//!
//! Masking runs on error paths only, but a server can send megabytes. [`server_text`] reads at
//! most a window of `4 × cap + 4 KiB` cleaned bytes (plus the longest known secret, so that a
//! secret straddling the window is still replaced whole), and the word under way at the end of
//! the window is read to its end (up to 1 MiB more; a longer word is dropped), so that no word
//! is ever shown in part. Known secrets cost one substring search each over that window, so the
//! registry is meant for the handful of live credentials of a process, not for thousands.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

use crate::redact::MASK;

/// How many bytes of server text a piece of an error keeps by default (4 KiB): the envelope's
/// excerpt of a broken body, a business message. Status messages are shorter (256 characters).
pub const DEFAULT_CAP: usize = 4096;

/// `text` cleaned, with known secrets and credential shapes masked, capped at `cap` bytes.
///
/// ```
/// let shown = xhttp_core::mask::server_text("token=abc\u{202e}def\nforged line", 64);
/// assert_eq!(shown, "token=REDACTED forged line");
/// let shown = xhttp_core::mask::server_text(r#"{"accessToken":"abc123","user":"bob"}"#, 64);
/// assert_eq!(shown, r#"{"accessToken":"REDACTED","user":"bob"}"#);
/// ```
pub fn server_text(text: &str, cap: usize) -> String {
    let window = cap.saturating_mul(4).saturating_add(4096);
    let longest = registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .longest
        .min(MAX_LOOKAHEAD);
    let (cleaned, cut) = clean_bounded(text, window.saturating_add(longest));
    let mut scrubbed = scrub_known(cleaned);
    if cut != Cut::No {
        // Cut at the first word boundary past the window, so that no word is shown in part.
        let mut at = window.min(scrubbed.len());
        while !scrubbed.is_char_boundary(at) {
            at -= 1;
        }
        match scrubbed[at..].find(|c| !is_word_char(c)) {
            Some(end) => scrubbed.truncate(at + end),
            // A word longer than `MAX_WORD` was cut: it might be a token whose shape the
            // masker would no longer recognise, so it goes.
            None if cut == Cut::InWord => {
                let keep = scrubbed.trim_end_matches(is_word_char).len();
                scrubbed.truncate(keep);
            }
            None => {}
        }
    }
    let mut masked = mask(&scrubbed);
    truncate(&mut masked, cap);
    let kept = masked.trim_end().len();
    masked.truncate(kept);
    masked
}

/// A server's message fit to show a person: [`server_text`], capped at `max_chars`
/// characters rather than bytes, the last one an ellipsis when something was cut; `None` when
/// nothing is left.
///
/// For the short texts a toast or a log line shows (a status message, the message of a token
/// endpoint's refusal). Masking runs before the cap, so that a token cut by the cap cannot
/// escape the rules that recognise it whole.
///
/// ```
/// use xhttp_core::mask::server_message;
///
/// assert_eq!(server_message(" bad\n\tinput ", 32).as_deref(), Some("bad input"));
/// assert_eq!(server_message("déjà vu", 4).as_deref(), Some("déj…"));
/// let shown = server_message("token=abc123 expired", 64);
/// assert_eq!(shown.as_deref(), Some("token=REDACTED expired"));
/// assert_eq!(server_message("\u{200b}\r\n", 32), None);
/// ```
pub fn server_message(text: &str, max_chars: usize) -> Option<String> {
    // Four bytes per character at most, and one more character to tell that a cut happened.
    let mut shown = server_text(text, max_chars.saturating_add(1).saturating_mul(4));
    if let Some((cut, _)) = shown.char_indices().nth(max_chars.checked_sub(1)?) {
        if shown[cut..].chars().nth(1).is_some() {
            shown.truncate(cut);
            shown.push('…');
        }
    }
    (!shown.is_empty()).then_some(shown)
}

/// How far past the window a known secret is looked for (64 KiB): no credential is longer.
const MAX_LOOKAHEAD: usize = 64 * 1024;

/// `text` with whitespace runs turned into one space, other control characters and bidi-override
/// and invisible characters removed, and the ends trimmed.
///
/// ```
/// assert_eq!(xhttp_core::mask::clean(" a\r\n\tb\u{200b}c\u{061c}\u{7} "), "a bc");
/// ```
pub fn clean(text: &str) -> String {
    clean_bounded(text, usize::MAX).0
}

/// The longest word read past the window to reach its end (1 MiB): a longer one is dropped.
const MAX_WORD: usize = 1 << 20;

/// Whether [`clean_bounded`] stopped before the end of the text, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// It read everything.
    No,
    /// It stopped between two words.
    AtWord,
    /// It stopped inside a word longer than [`MAX_WORD`].
    InWord,
}

/// [`clean`], stopping once `limit` bytes are written and the word under way has ended.
fn clean_bounded(text: &str, limit: usize) -> (String, Cut) {
    let mut out = String::with_capacity(text.len().min(limit));
    let mut space = false;
    for c in text.chars() {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if c.is_control() {
            continue;
        }
        let extra = c.len_utf8() + usize::from(space && !out.is_empty());
        if out.len().saturating_add(extra) > limit {
            let in_word = !space && out.ends_with(is_word_char) && is_word_char(c);
            if !in_word {
                return (out, Cut::AtWord);
            }
            if out.len() >= limit.saturating_add(MAX_WORD) {
                return (out, Cut::InWord);
            }
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    (out, Cut::No)
}

fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}' | '\u{1d173}'..='\u{1d17a}'
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

// ---------------------------------------------------------------------------------------------
// Known secrets

/// A secret the masker replaces by value wherever it appears, for as long as this guard lives.
///
/// The token manager registers the current access and refresh tokens, grants their client
/// secrets and the fields they send. Values shorter than [`KnownSecret::MIN_LEN`] bytes are not
/// registered (they would mask ordinary words); their shapes are still masked. The value is
/// also replaced in the forms a server echoes it in: percent-encoded (a form body) and
/// JSON-escaped.
///
/// ```
/// use xhttp_core::mask::{server_text, KnownSecret};
///
/// let guard = KnownSecret::register("opaque-value-42");
/// assert_eq!(server_text("rejected opaque-value-42!", 64), "rejected REDACTED!");
/// assert_eq!(server_text("rejected opaque-\u{200b}value-42!", 64), "rejected REDACTED!");
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
        let mut registry = registry().write().unwrap_or_else(|e| e.into_inner());
        for form in echoed_forms(&value) {
            registry.entries.push((id, form.into_boxed_str()));
        }
        registry.sort();
        KnownSecret { id: Some(id) }
    }
}

impl Drop for KnownSecret {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut registry = registry().write().unwrap_or_else(|e| e.into_inner());
            registry.entries.retain(|(entry, _)| *entry != id);
            registry.sort();
        }
    }
}

impl std::fmt::Debug for KnownSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KnownSecret(REDACTED)")
    }
}

#[derive(Default)]
struct Registry {
    /// Every form of every live secret, longest first, so that a secret that contains another
    /// is replaced whole.
    entries: Vec<(u64, Box<str>)>,
    longest: usize,
}

impl Registry {
    fn sort(&mut self) {
        self.entries
            .sort_by_key(|entry| std::cmp::Reverse(entry.1.len()));
        self.longest = self.entries.first().map_or(0, |(_, form)| form.len());
    }
}

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The value as it is, percent-encoded as a form would send it, and JSON-escaped.
fn echoed_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string()];
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                encoded.push(char::from(byte))
            }
            b' ' => encoded.push('+'),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    let json = serde_json::to_string(value).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or("");
    for form in [encoded, json.to_string(), json.replace('/', "\\/")] {
        if form.len() >= KnownSecret::MIN_LEN && !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

fn scrub_known(text: String) -> String {
    let registry = registry().read().unwrap_or_else(|e| e.into_inner());
    let mut out = text;
    for (_, secret) in &registry.entries {
        if out.contains(&**secret) {
            out = out.replace(&**secret, MASK);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Secret names

/// Whether a field, parameter or header name names a secret: the one list the masker and
/// [`redact`](crate::redact) share.
///
/// The name is compared in any case and with any separator (`access_token`, `accessToken`,
/// `Access-Token`, `access%5Ftoken` are one name): percent escapes are decoded, then only ASCII
/// letters and digits count. A name is secret when it
/// - contains `token`, `secret`, `passw` (`password`, `passwd`), `pwd`, `passphrase`,
///   `signature`, `credential`, `session`, `sessid`, `cookie`, `jwt`, `assertion`, `bearer`,
///   `authorization`, `apikey`, `accesskey`, `privatekey` and the other `...key`s of secrets, or
///   names a one-time code (`authcode`, `smscode`, `verificationcode`, `otpcode`);
/// - is `key`, `code` (OAuth's authorization code), `sig`, `auth`, `rt`, `sid`, `pass`, `pw`,
///   `pin`, `otp`, `totp`, `dpop`, `cred`, `creds`, `ticket`, `psk`;
/// - ends in `auth` (`x-auth`, `basic_auth`) or `key` (`x-api-key`, `AccountKey`), except the
///   keys of data (`primaryKey`, `sortKey`, `idempotency-key`, ...);
/// - is one of the Chinese words for password, token and secret key (`密码`, `令牌`, ...);
///
/// unless it names a property of a secret rather than the secret: a name ending in `type`,
/// `expiresin`, `expiresat`, `expiry`, `ttl`, `endpoint`, `url`, `uri`, `length`, `count` or
/// `name` (`token_type`, `token_endpoint`, `session_name`).
///
/// ```
/// use xhttp_core::mask::is_secret_name;
/// for name in ["access_token", "accessToken", "X-API-Key", "pwd", "client%5Fsecret", "rt"] {
///     assert!(is_secret_name(name), "{name}");
/// }
/// for name in ["page", "user.name", "token_type", "author", "primaryKey"] {
///     assert!(!is_secret_name(name), "{name}");
/// }
/// ```
pub fn is_secret_name(name: &str) -> bool {
    const CJK: [&str; 7] = ["密码", "口令", "令牌", "密钥", "秘钥", "凭证", "凭据"];
    let decoded = if name.contains('%') {
        Cow::Owned(percent_decode_lossy(name))
    } else {
        Cow::Borrowed(name)
    };
    if !decoded.is_ascii() && CJK.iter().any(|word| decoded.contains(word)) {
        return true;
    }
    is_secret_normalized(&normalize_name(name))
}

const CONTAINS: [&str; 30] = [
    "token",
    "secret",
    "passw",
    "pwd",
    "passphrase",
    "signature",
    "credential",
    "session",
    "sessid",
    "cookie",
    "jwt",
    "assertion",
    "bearer",
    "authorization",
    "apikey",
    "accesskey",
    "privatekey",
    "signingkey",
    "clientkey",
    "masterkey",
    "accountkey",
    "sessionkey",
    "sharedkey",
    "encryptionkey",
    "authcode",
    "smscode",
    "verifycode",
    "verificationcode",
    "otpcode",
    "samlresponse",
];

const EXACT: [&str; 16] = [
    "key", "code", "sig", "auth", "rt", "sid", "pass", "pw", "pin", "otp", "totp", "dpop", "cred",
    "creds", "ticket", "psk",
];

/// Names ending in `key` that name data, not a secret.
const DATA_KEYS: [&str; 16] = [
    "primarykey",
    "foreignkey",
    "sortkey",
    "partitionkey",
    "rangekey",
    "hashkey",
    "idempotencykey",
    "cachekey",
    "hotkey",
    "publickey",
    "monkey",
    "hockey",
    "turkey",
    "whiskey",
    "jockey",
    "donkey",
];

/// Suffixes naming a property of a secret (`token_type`), not the secret.
const PROPERTY_SUFFIXES: [&str; 11] = [
    "type",
    "expiresin",
    "expiresat",
    "expiry",
    "ttl",
    "endpoint",
    "url",
    "uri",
    "length",
    "count",
    "name",
];

fn is_secret_normalized(n: &str) -> bool {
    if n.is_empty() {
        return false;
    }
    if PROPERTY_SUFFIXES
        .iter()
        .any(|suffix| n.len() > suffix.len() && n.ends_with(suffix))
    {
        return false;
    }
    CONTAINS.iter().any(|word| n.contains(word))
        || EXACT.contains(&n)
        || n.ends_with("auth")
        || (n.ends_with("key") && !DATA_KEYS.contains(&n))
}

/// A name as it is compared: percent escapes decoded, ASCII letters and digits only, lower case.
fn normalize_name(name: &str) -> String {
    let decoded = if name.contains('%') {
        Cow::Owned(percent_decode_lossy(name))
    } else {
        Cow::Borrowed(name)
    };
    decoded
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Names whose value may also follow them in prose, after a space: "invalid token abc123".
fn is_strong_name(n: &str) -> bool {
    const STRONG: [&str; 10] = [
        "token",
        "passw",
        "secret",
        "apikey",
        "jwt",
        "credential",
        "bearer",
        "signature",
        "assertion",
        "cookie",
    ];
    STRONG.iter().any(|word| n.contains(word))
}

/// Enough percent-decoding to see through `access%5Ftoken`; `+` is a space; invalid escapes
/// stay as they are.
pub(crate) fn percent_decode_lossy(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The masker

/// `text` with every credential in it replaced by `REDACTED`.
///
/// Two passes. The first masks the value that follows a secret name ([`is_secret_name`]):
/// - in `name=value`, `name: value`, `name => value`, `name：value` (a full-width colon),
///   JSON and JavaScript (`"name": "value"`, `'name': 'value'`, `"name": 12345`, an array,
///   a string cut before its closing quote, `{\"name\":\"value\"}` escaped inside a string,
///   `&quot;` in HTML), form and query strings (`a=1&name=value`, `access%5Ftoken=value`,
///   `creds[password]=value`), XML (`<password>value</password>`) and headers
///   (`Authorization: Bearer value`, `Cookie: sid=value`): the value runs to the closing quote,
///   or to a space or one of `&,;"'<>)]}`;
/// - JSON's `null`, `true` and `false` are kept, and so is a `code` of at most five digits
///   (a business code such as `40009`; an authorization or one-time code is longer or not a
///   number), and a word of prose after a colon and a space ("no refresh token: log in
///   first");
/// - after `token`, `password`, `secret`, `cookie` and the like with no operator ("invalid
///   token abc123"), a quoted value or a word that does not read as prose (a lower-case word,
///   a short acronym such as `URL`);
/// - serde's quoted values (`invalid type: string "value"`, ``unknown variant `value` ``).
///
/// The second masks words (runs of ASCII letters, digits and `-_.=+/~%`) shaped like tokens:
/// - JWTs and JWEs: `eyJ` followed by at least two more dot-separated segments;
/// - the credential after `Bearer`, `Basic`, `DPoP`, `Negotiate`, `NTLM` or `Digest`, unless it
///   is an ordinary word ("bearer token is missing") or a challenge parameter (`realm="api"`);
/// - well-known token prefixes: GitHub (`ghp_`, `github_pat_`...), GitLab (`glpat-`), Slack
///   (`xoxb-`, `xoxp-`...), OpenAI and Anthropic (`sk-`), Stripe (`sk_live_`, `rk_live_`,
///   `whsec_`), AWS access key ids (`AKIA`, `ASIA`), Google (`AIza`, `ya29.`, `1//`), npm,
///   PyPI, SendGrid, Shopify, Hugging Face and others;
/// - UUIDs, hex strings of 32 characters or more, and opaque tokens: 20 characters or more of
///   letters and digits (at least two of each) that change between lower case, upper case and
///   digits often, as random strings do and identifiers such as `user_profile_v2` do not; such
///   a segment is masked on its own in a path or a host name;
/// - a percent-encoded word whose decoded text holds a credential (a URL in a query
///   parameter): the whole word.
///
/// ```
/// use xhttp_core::mask::mask;
/// assert_eq!(mask("Bearer abc.def.ghi expired"), "Bearer REDACTED expired");
/// assert_eq!(mask("refresh_token=r-123 rejected"), "refresh_token=REDACTED rejected");
/// assert_eq!(mask(r#"{"password": 123456, "code": 40009}"#), r#"{"password": REDACTED, "code": 40009}"#);
/// assert_eq!(mask("the bearer token for user.name expired"), "the bearer token for user.name expired");
/// ```
pub fn mask(text: &str) -> String {
    mask_depth(text, 0)
}

/// How many levels of percent-encoding are looked through.
const MAX_DEPTH: u8 = 2;

fn mask_depth(text: &str, depth: u8) -> String {
    mask_words(&mask_pairs(text), depth)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '_' | '-' | '%')
        || (!c.is_ascii() && c.is_alphabetic())
}

/// Quote forms, longest first.
const QUOTES: [&str; 8] = ["&quot;", "&#34;", "&#39;", "\\\"", "\\'", "\"", "'", "`"];

/// Words after which serde quotes the offending value.
const QUOTE_INTRODUCERS: [&str; 5] = ["string", "integer", "float", "char", "variant"];

fn quote_at(text: &str, at: usize) -> Option<&'static str> {
    QUOTES
        .iter()
        .copied()
        .find(|quote| text[at..].starts_with(quote))
}

fn skip_spaces(text: &str, mut at: usize) -> usize {
    while text[at..].starts_with(' ') {
        at += 1;
    }
    at
}

/// The first pass: values after secret names.
fn mask_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut at = 0;
    while at < text.len() {
        let Some(offset) = text[at..].find(is_name_char) else {
            out.push_str(&text[at..]);
            break;
        };
        let start = at + offset;
        out.push_str(&text[at..start]);
        let end = text[start..]
            .find(|c| !is_name_char(c))
            .map_or(text.len(), |n| start + n);
        let name = &text[start..end];
        out.push_str(name);
        at = end;
        if QUOTE_INTRODUCERS.contains(&name) && text[end..].starts_with(' ') {
            if let Some(quote @ ("\"" | "`")) = quote_at(text, end + 1) {
                out.push(' ');
                at = mask_quoted(text, end + 1, quote, &mut out);
            }
            continue;
        }
        if !is_secret_name(name) {
            continue;
        }
        let xml = text[..start].ends_with('<') && text[end..].starts_with('>');
        if xml {
            out.push('>');
            let value_end = text[end + 1..]
                .find('<')
                .map_or(text.len(), |n| end + 1 + n);
            if value_end > end + 1 {
                out.push_str(MASK);
            }
            at = value_end;
        } else if let Some(value) = operator_after(text, end) {
            out.push_str(&text[end..value]);
            let business_code = normalize_name(name) == "code";
            // "no refresh token: log in first": after a colon and a space, prose may follow.
            let prose = text[..value].ends_with([':', '：']) && text[value..].starts_with(' ');
            at = mask_value(text, value, business_code, prose, &mut out);
        } else if is_strong_name(&normalize_name(name)) && text[end..].starts_with(' ') {
            at = mask_prose_value(text, end, &mut out);
        }
    }
    out
}

/// Where the value starts, when an operator follows the name at `end`: an optional closing
/// quote and `]`, spaces, then `=`, `:`, `=>` or `：`.
fn operator_after(text: &str, end: usize) -> Option<usize> {
    let mut at = end;
    if let Some(quote) = quote_at(text, at) {
        at += quote.len();
    }
    if text[at..].starts_with(']') {
        at += 1;
    }
    at = skip_spaces(text, at);
    let rest = &text[at..];
    if rest.starts_with("=>") {
        Some(at + 2)
    } else if rest.starts_with("==") || rest.starts_with("::") || rest.starts_with(":/") {
        // A comparison, a Rust path, a URL scheme.
        None
    } else if rest.starts_with('=') || rest.starts_with(':') {
        Some(at + 1)
    } else if rest.starts_with('：') {
        Some(at + '：'.len_utf8())
    } else {
        None
    }
}

/// Masks the value starting at `at` (after spaces); returns where scanning resumes.
fn mask_value(text: &str, at: usize, business_code: bool, prose: bool, out: &mut String) -> usize {
    let start = skip_spaces(text, at);
    out.push_str(&text[at..start]);
    let rest = &text[start..];
    if let Some(quote) = quote_at(text, start) {
        return mask_quoted(text, start, quote, out);
    }
    if rest.starts_with('{') {
        // An object: its own names decide.
        return start;
    }
    if rest.starts_with('[') {
        return mask_array(text, start, out);
    }
    let end = unquoted_end(text, start);
    let value = &text[start..end];
    let literal = matches!(value, "null" | "true" | "false") || (prose && is_prose_word(value));
    let short_code = business_code
        && (1..=5).contains(&value.trim_start_matches('-').len())
        && value
            .trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit());
    if literal || short_code {
        out.push_str(value);
        return end;
    }
    if let Some(scheme) = value_scheme(text, start) {
        out.push_str(&text[start..scheme]);
        let end = unquoted_end(text, scheme);
        if end > scheme {
            out.push_str(MASK);
        }
        return end;
    }
    if end > start {
        out.push_str(MASK);
    }
    end
}

/// After an authorization scheme and its spaces inside a value (`Authorization: Bearer x`),
/// where the credential starts.
fn value_scheme(text: &str, start: usize) -> Option<usize> {
    let word_end = text[start..]
        .find(|c: char| !c.is_ascii_alphabetic())
        .map_or(text.len(), |n| start + n);
    let after = skip_spaces(text, word_end);
    (after > word_end && is_scheme(&text[start..word_end]) && after < text.len()).then_some(after)
}

fn unquoted_end(text: &str, start: usize) -> usize {
    text[start..]
        .find(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    '&' | ',' | ';' | '"' | '\'' | '<' | '>' | ')' | ']' | '}'
                )
        })
        .map_or(text.len(), |n| start + n)
}

/// Masks the content of the string opening with `quote` at `at`, to its closing quote or, for a
/// string cut short, to the end.
fn mask_quoted(text: &str, at: usize, quote: &str, out: &mut String) -> usize {
    out.push_str(quote);
    let body = at + quote.len();
    let close = if let [q] = quote.as_bytes() {
        // Plain quotes: skip backslash escapes.
        crate::challenge::closing_quote(text.as_bytes(), body, *q)
    } else {
        text[body..].find(quote).map(|n| body + n)
    };
    match close {
        Some(close) => {
            if close > body {
                out.push_str(MASK);
            }
            out.push_str(quote);
            close + quote.len()
        }
        None => {
            if body < text.len() {
                out.push_str(MASK);
            }
            text.len()
        }
    }
}

/// Masks an array's content, to its closing bracket or the end.
fn mask_array(text: &str, at: usize, out: &mut String) -> usize {
    out.push('[');
    let mut depth = 0usize;
    let mut close = None;
    for (i, c) in text[at..].char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(at + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close.unwrap_or(text.len());
    if !text[at + 1..close].trim().is_empty() {
        out.push_str(MASK);
    }
    if close < text.len() {
        out.push(']');
        close + 1
    } else {
        close
    }
}

/// After a strong secret name and a space, with no operator: a quoted value, or a word that
/// does not read as prose.
fn mask_prose_value(text: &str, end: usize, out: &mut String) -> usize {
    let start = skip_spaces(text, end);
    out.push_str(&text[end..start]);
    if let Some(quote @ ("\"" | "'" | "`")) = quote_at(text, start) {
        return mask_quoted(text, start, quote, out);
    }
    let word_end = text[start..]
        .find(|c| !is_word_char(c))
        .map_or(text.len(), |n| start + n);
    let word = text[start..word_end].trim_end_matches('.');
    // Prose: lower-case words, acronyms ("the token URL"), words of the prose list.
    let acronym = word.len() <= 5 && word.bytes().all(|b| b.is_ascii_uppercase());
    let prose = word.bytes().all(|b| b.is_ascii_lowercase())
        || acronym
        || word == MASK
        || is_challenge_param(word)
        || is_prose_word(word);
    if prose {
        return start;
    }
    out.push_str(MASK);
    start + word.len()
}

/// The second pass: words shaped like credentials.
fn mask_words(text: &str, depth: u8) -> String {
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
        mask_word(word, after_scheme, depth, &mut out);
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
    ["bearer", "basic", "dpop", "negotiate", "ntlm", "digest"]
        .iter()
        .any(|scheme| word.eq_ignore_ascii_case(scheme))
}

/// Words of prose that may follow a scheme or a secret's name ("Bearer token is missing",
/// "no refresh token: log in first"), so are no credential.
fn is_prose_word(word: &str) -> bool {
    const PROSE: &[&str] = &[
        "a",
        "again",
        "already",
        "an",
        "and",
        "are",
        "as",
        "auth",
        "authentication",
        "authorization",
        "bad",
        "be",
        "but",
        "can",
        "cannot",
        "challenge",
        "client",
        "credential",
        "credentials",
        "current",
        "denied",
        "did",
        "disabled",
        "do",
        "does",
        "empty",
        "enabled",
        "error",
        "errors",
        "expected",
        "expired",
        "failed",
        "for",
        "forbidden",
        "format",
        "from",
        "given",
        "got",
        "has",
        "header",
        "headers",
        "if",
        "in",
        "incorrect",
        "invalid",
        "is",
        "it",
        "log",
        "login",
        "malformed",
        "mismatch",
        "missing",
        "must",
        "needed",
        "new",
        "no",
        "none",
        "not",
        "null",
        "of",
        "ok",
        "old",
        "on",
        "only",
        "or",
        "please",
        "present",
        "provided",
        "realm",
        "received",
        "refresh",
        "rejected",
        "request",
        "required",
        "revoked",
        "scheme",
        "schemes",
        "server",
        "should",
        "sign",
        "supported",
        "the",
        "this",
        "to",
        "token",
        "tokens",
        "too",
        "try",
        "type",
        "unavailable",
        "unknown",
        "unsupported",
        "used",
        "user",
        "value",
        "was",
        "were",
        "with",
        "wrong",
    ];
    PROSE.iter().any(|prose| word.eq_ignore_ascii_case(prose))
}

/// A challenge parameter (`realm=`, `error=`), not a credential.
fn is_challenge_param(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, value)| {
        !name.is_empty()
            && name.len() <= 24
            && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            && !value.contains('=')
    })
}

fn mask_word(word: &str, after_scheme: bool, depth: u8, out: &mut String) {
    // A full stop ending a sentence is not part of the token before it.
    let core = word.trim_end_matches('.');
    let suffix = &word[core.len()..];
    if core.is_empty() || core == MASK {
        out.push_str(word);
        return;
    }
    if after_scheme && !is_prose_word(core) && !is_challenge_param(core) {
        out.push_str(MASK);
        out.push_str(suffix);
        return;
    }
    if let Some(at) = core.find("eyJ") {
        if core[at..].matches('.').count() >= 2 {
            out.push_str(&core[..at]);
            out.push_str(MASK);
            out.push_str(suffix);
            return;
        }
        // An unsecured JWT (`alg: none`) ends with the dot before its empty signature.
        if word[at..].matches('.').count() >= 2 {
            out.push_str(&core[..at]);
            out.push_str(MASK);
            return;
        }
    }
    if depth < MAX_DEPTH && has_percent_escape(core) {
        let decoded = percent_decode_lossy(core);
        if decoded != core && mask_depth(&decoded, depth + 1) != decoded {
            out.push_str(MASK);
            out.push_str(suffix);
            return;
        }
    }
    for (i, piece) in core.split('=').enumerate() {
        if i > 0 {
            out.push('=');
        }
        if has_token_prefix(piece) {
            out.push_str(MASK);
            continue;
        }
        for (j, segment) in piece.split('/').enumerate() {
            if j > 0 {
                out.push('/');
            }
            if has_token_prefix(segment) {
                out.push_str(MASK);
                continue;
            }
            for (k, label) in segment.split('.').enumerate() {
                if k > 0 {
                    out.push('.');
                }
                out.push_str(if is_token_shaped(label) { MASK } else { label });
            }
        }
    }
    out.push_str(suffix);
}

fn has_percent_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// Prefixes of well-known credentials, with how many characters must follow.
const TOKEN_PREFIXES: [(&str, usize); 40] = [
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("github_pat_", 20),
    ("glpat-", 16),
    ("glrt-", 16),
    ("xoxb-", 8),
    ("xoxp-", 8),
    ("xoxa-", 8),
    ("xoxr-", 8),
    ("xoxs-", 8),
    ("xoxe-", 8),
    ("xapp-", 8),
    ("sk-", 16),
    ("sk_live_", 8),
    ("sk_test_", 8),
    ("rk_live_", 8),
    ("rk_test_", 8),
    ("whsec_", 8),
    ("AKIA", 16),
    ("ASIA", 16),
    ("AIza", 30),
    ("ya29.", 16),
    ("1//", 16),
    ("npm_", 20),
    ("pypi-", 20),
    ("SG.", 16),
    ("shpat_", 16),
    ("shpss_", 16),
    ("hf_", 16),
    ("dop_v1_", 16),
    ("sq0atp-", 16),
    ("sq0csp-", 16),
    ("ATATT", 16),
    ("gsk_", 16),
    ("r8_", 16),
    ("lin_api_", 16),
    ("secret_", 16),
];

fn has_token_prefix(piece: &str) -> bool {
    TOKEN_PREFIXES
        .iter()
        .any(|(prefix, rest)| piece.len() >= prefix.len() + rest && piece.starts_with(prefix))
}

/// A UUID, a long hex string, or a random-looking run of letters and digits.
fn is_token_shaped(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let uuid = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if uuid {
        return true;
    }
    // A digest or a hex key has digits and letters; a run of one letter is not a secret.
    let hex = bytes.len() >= 32
        && bytes.iter().all(u8::is_ascii_hexdigit)
        && bytes.iter().any(u8::is_ascii_digit)
        && bytes.iter().any(u8::is_ascii_alphabetic);
    if hex {
        return true;
    }
    if bytes.len() < 20 {
        return false;
    }
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
    if digits < 2 || letters < 2 {
        return false;
    }
    // How often the character class changes between neighbouring letters and digits: about
    // half the time in a random string, rarely in words and identifiers.
    let class = |b: u8| match b {
        b'a'..=b'z' => 1,
        b'A'..=b'Z' => 2,
        b'0'..=b'9' => 3,
        _ => 0,
    };
    let classes: Vec<u8> = bytes
        .iter()
        .map(|b| class(*b))
        .filter(|c| *c != 0)
        .collect();
    let changes = classes.windows(2).filter(|w| w[0] != w[1]).count();
    changes >= 4 && changes * 5 >= bytes.len()
}

#[cfg(test)]
mod tests;
