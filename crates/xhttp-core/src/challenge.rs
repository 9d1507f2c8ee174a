//! Reading `WWW-Authenticate` challenges (RFC 9110 section 11.6.1, RFC 6750 section 3).
//!
//! A header value is a list of challenges, and a response may carry several header lines:
//!
//! ```text
//! challenge   = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param  = token BWS "=" BWS ( token / quoted-string )
//! ```
//!
//! The parser walks that grammar instead of searching for `Bearer` in the text, so that a
//! `Bearer error="invalid_token"` inside *another* scheme's quoted parameter
//! (`Basic realm="Bearer error=\"invalid_token\""`) is read as the text it is, and never
//! triggers a refresh. Lenient where servers are sloppy (case, spaces around `=`, empty list
//! elements, bare values), strict about quoting; it never panics.
//!
//! The one parser of the workspace: refresh reads `invalid_token` with it, status reads the
//! scope of `insufficient_scope` ([`required_scope`]).

/// One challenge: its scheme and its parameters (names lowercase, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Challenge {
    /// The auth scheme as sent (`Bearer`, `Basic`...); compare without case.
    pub scheme: String,
    /// The auth-params in order, names lowercase, values unquoted. Empty for a `token68`.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of the parameter `name` (lowercase), if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The `error` parameter of the first `Bearer` challenge in a `WWW-Authenticate` value, if
/// any: `invalid_token`, `insufficient_scope`, `invalid_request`.
///
/// Scheme and parameter names are matched without case; values may be quoted (with `\`
/// escapes) or bare. Only a parameter of a `Bearer` challenge counts: text inside another
/// challenge's quoted value never does. Never panics.
///
/// ```
/// use xhttp_core::challenge::bearer_error;
/// assert_eq!(
///     bearer_error(r#"Bearer realm="api", error="invalid_token", error_description="expired""#),
///     Some("invalid_token".to_string())
/// );
/// assert_eq!(bearer_error(r#"Basic realm="x", Bearer error=insufficient_scope"#), Some("insufficient_scope".to_string()));
/// assert_eq!(bearer_error("Bearer realm=\"api\""), None);
/// // Inside another scheme's quoted parameter, it is only text.
/// assert_eq!(bearer_error(r#"Basic realm="Bearer error=\"invalid_token\"""#), None);
/// ```
pub fn bearer_error(header: &str) -> Option<String> {
    parse(header)
        .into_iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|c| c.param("error").map(str::to_owned))
}

/// Whether the header carries a Bearer challenge with `error="invalid_token"`.
///
/// ```
/// use xhttp_core::challenge::is_invalid_token;
/// assert!(is_invalid_token(r#"Basic realm="x", Bearer error="invalid_token""#));
/// assert!(!is_invalid_token(r#"Digest realm="x", nonce="Bearer error=invalid_token""#));
/// ```
pub fn is_invalid_token(header: &str) -> bool {
    parse(header).iter().any(|c| {
        c.scheme.eq_ignore_ascii_case("bearer")
            && c.param("error")
                .is_some_and(|e| e.eq_ignore_ascii_case("invalid_token"))
    })
}

/// The `scope` of the first `Bearer` challenge whose `error` is `insufficient_scope`
/// (RFC 6750 section 3.1: the scope the request needs), unquoted.
///
/// ```
/// use xhttp_core::challenge::required_scope;
/// assert_eq!(
///     required_scope(r#"Bearer error="insufficient_scope", scope="a b""#).as_deref(),
///     Some("a b")
/// );
/// assert_eq!(required_scope(r#"Bearer error="invalid_token", scope="a""#), None);
/// assert_eq!(required_scope(r#"Basic realm="error=insufficient_scope, scope=a""#), None);
/// ```
pub fn required_scope(header: &str) -> Option<String> {
    parse(header)
        .into_iter()
        .find(|c| {
            c.scheme.eq_ignore_ascii_case("bearer")
                && c.param("error")
                    .is_some_and(|e| e.eq_ignore_ascii_case("insufficient_scope"))
        })
        .and_then(|c| c.param("scope").map(str::to_owned))
}

/// The challenges of one header value, in order. A malformed part ends the parse: what came
/// before it is kept, nothing after it is guessed at.
///
/// ```
/// let challenges = xhttp_core::challenge::parse(r#"Basic realm="x", Bearer scope="a b""#);
/// assert_eq!(challenges.len(), 2);
/// assert_eq!(challenges[1].param("scope"), Some("a b"));
/// ```
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut cursor = Cursor {
        bytes: header.as_bytes(),
        at: 0,
    };
    let mut challenges = Vec::new();
    loop {
        cursor.skip_list_separators();
        let Some(scheme) = cursor.token() else {
            return challenges;
        };
        let mut challenge = Challenge {
            scheme,
            params: Vec::new(),
        };
        let spaced = cursor.skip_spaces();
        if spaced && !cursor.at_comma() && !cursor.at_end() {
            if !read_params(&mut cursor, &mut challenge) {
                challenges.push(challenge);
                return challenges;
            }
        } else if !cursor.at_comma() && !cursor.at_end() {
            // `Bearer"x"` or `Bearer=`: not a challenge.
            return challenges;
        }
        challenges.push(challenge);
    }
}

/// Reads `token68` or `#auth-param` after a scheme and its space, leaving the cursor at the
/// next challenge. `false` when the text is malformed (the parse stops there).
fn read_params(cursor: &mut Cursor<'_>, challenge: &mut Challenge) -> bool {
    if cursor.token68() {
        // A credential such as `Negotiate abc123==`: no parameters.
        return true;
    }
    loop {
        let Some(name) = cursor.token() else {
            return false;
        };
        cursor.skip_spaces();
        if !cursor.eat(b'=') {
            return false;
        }
        cursor.skip_spaces();
        let value = if cursor.peek() == Some(b'"') {
            cursor.quoted()
        } else {
            cursor.token()
        };
        let Some(value) = value else {
            return false;
        };
        challenge.params.push((name.to_ascii_lowercase(), value));
        cursor.skip_spaces();
        if cursor.at_end() {
            return true;
        }
        if cursor.at_comma() {
            cursor.skip_list_separators();
        } else if cursor.peek().is_none_or(|b| !is_token_char(b)) {
            // Neither a separator nor the start of a name: malformed.
            return false;
        }
        // Next: another parameter of this challenge (`name=`), or a new challenge (a scheme:
        // a token not followed by `=`). A missing comma is forgiven, as servers omit it;
        // this never looks inside a quoted string, so it cannot be fooled by one.
        if cursor.at_end() || cursor.next_is_scheme() {
            return true;
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn at_end(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn at_comma(&self) -> bool {
        self.peek() == Some(b',')
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Skips spaces and tabs; whether there were any.
    fn skip_spaces(&mut self) -> bool {
        let start = self.at;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
        self.at > start
    }

    /// Consumes a `token68` (`1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`)
    /// when one stands alone before the end or a comma; else moves nothing.
    fn token68(&mut self) -> bool {
        let start = self.at;
        while self.peek().is_some_and(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        }) {
            self.at += 1;
        }
        if self.at == start {
            return false;
        }
        while self.eat(b'=') {}
        self.skip_spaces();
        if self.at_end() || self.at_comma() {
            return true;
        }
        self.at = start;
        false
    }

    /// Whether a scheme starts here: a token followed by something other than `=`.
    fn next_is_scheme(&self) -> bool {
        let mut probe = Cursor {
            bytes: self.bytes,
            at: self.at,
        };
        if probe.token().is_none() {
            return false;
        }
        probe.skip_spaces();
        probe.peek() != Some(b'=')
    }

    /// Skips spaces and empty list elements (`, ,`).
    fn skip_list_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.at += 1;
        }
    }

    /// A `token` (RFC 9110 `tchar`s; token68 characters `/`, `+` too, for bare values and
    /// credentials).
    fn token(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(is_token_char) {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned())
    }

    /// A `quoted-string`, unescaped; `None` (the cursor unmoved) when it never closes.
    fn quoted(&mut self) -> Option<String> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let body = self.at + 1;
        let close = closing_quote(self.bytes, body, b'"')?;
        let mut value = Vec::with_capacity(close - body);
        let mut escaped = false;
        for &byte in &self.bytes[body..close] {
            if byte == b'\\' && !escaped {
                escaped = true;
            } else {
                value.push(byte);
                escaped = false;
            }
        }
        self.at = close + 1;
        Some(String::from_utf8_lossy(&value).into_owned())
    }
}

/// Where the string whose content starts at `from` closes: the first `quote` byte (ASCII) at
/// or after `from` that no backslash escapes. `None` when the string never closes, an escape
/// cut off by the end included.
///
/// The one scan for a quoted string's end: the challenge parser unquotes parameters with it,
/// and the masker finds the end of a quoted value with it.
pub(crate) fn closing_quote(bytes: &[u8], from: usize, quote: u8) -> Option<usize> {
    let mut at = from;
    while let Some(&byte) = bytes.get(at) {
        if byte == b'\\' {
            at += 2;
        } else if byte == quote {
            return Some(at);
        } else {
            at += 1;
        }
    }
    None
}

/// RFC 9110 `tchar`, plus `/` (token68) so that bare values like `a/b` read whole.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
                | b'/'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_servers_send() {
        assert!(is_invalid_token(r#"Bearer error="invalid_token""#));
        assert!(is_invalid_token(r#"bearer ERROR="invalid_token""#));
        assert!(is_invalid_token("Bearer error=invalid_token"));
        assert!(is_invalid_token("Bearer error = \"invalid_token\""));
        assert!(is_invalid_token(
            r#"Bearer realm="x", error_description="a \"quoted\" word", error="invalid_token""#
        ));
        assert!(!is_invalid_token(r#"Bearer error="insufficient_scope""#));
        assert!(!is_invalid_token(r#"Bearer realm="xhttp-testkit""#));
        assert!(!is_invalid_token(r#"Basic realm="invalid_token""#));
        assert!(!is_invalid_token(r#"Bearerx error="invalid_token""#));
        assert!(!is_invalid_token(""));
        assert!(!is_invalid_token(r#"Bearer error="unterminated"#));
    }

    #[test]
    fn several_challenges_in_one_value() {
        let header =
            r#"Basic realm="a, b", Negotiate abc123==, Bearer realm="api", error="invalid_token""#;
        let challenges = parse(header);
        let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["Basic", "Negotiate", "Bearer"]);
        assert_eq!(challenges[0].param("realm"), Some("a, b"));
        assert!(is_invalid_token(header));
        assert!(is_invalid_token(
            r#"Digest realm="x", nonce="n", qop="auth", Bearer error="invalid_token""#
        ));
        assert!(is_invalid_token(", , Bearer error=invalid_token ,"));
        assert!(is_invalid_token("Negotiate, Bearer error=invalid_token"));
        // Commas servers forget.
        assert!(is_invalid_token(
            r#"Bearer realm="x" error="invalid_token""#
        ));
        assert!(is_invalid_token(
            r#"Basic realm="x" Bearer error="invalid_token""#
        ));
    }

    #[test]
    fn quoted_text_of_another_scheme_never_triggers() {
        for header in [
            r#"Basic realm="Bearer error=\"invalid_token\"""#,
            r#"Digest realm="x", nonce="Bearer error=invalid_token""#,
            r#"Digest realm="x", nonce="a, Bearer error=invalid_token, b""#,
            r#"Basic realm="\", Bearer error=invalid_token""#,
            r#"Custom data="Bearer error=\"invalid_token\"", other=1"#,
            r#"Bearer realm="error=\"invalid_token\"""#,
        ] {
            assert!(!is_invalid_token(header), "{header}");
        }
    }

    #[test]
    fn escapes_are_unquoted() {
        let challenges = parse(r#"Bearer error_description="say \"hi\" \\ bye""#);
        assert_eq!(
            challenges[0].param("error_description"),
            Some(r#"say "hi" \ bye"#)
        );
    }

    #[test]
    fn a_string_closes_at_the_first_unescaped_quote() {
        assert_eq!(closing_quote(br#""ab"c""#, 1, b'"'), Some(3));
        assert_eq!(closing_quote(br#""a\"b"c"#, 1, b'"'), Some(5));
        assert_eq!(closing_quote(br#""a\\"b"#, 1, b'"'), Some(4));
        assert_eq!(closing_quote(b"'it''", 1, b'\''), Some(3));
        assert_eq!(closing_quote(br#""never"#, 1, b'"'), None);
        assert_eq!(closing_quote(br#""cut\"#, 1, b'"'), None);
        assert_eq!(closing_quote(b"", 0, b'"'), None);
    }

    #[test]
    fn a_quote_that_never_closes_is_no_value() {
        let header = r#"Basic realm="x", Bearer error="invalid_token\""#;
        let challenges = parse(header);
        assert_eq!(challenges[0].param("realm"), Some("x"));
        assert_eq!(challenges[1].param("error"), None);
        assert!(!is_invalid_token(header));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,200}") {
            let _ = bearer_error(&text);
            let _ = is_invalid_token(&text);
        }

        /// Quoting then reading gives back the text, whatever it holds.
        #[test]
        fn a_quoted_value_reads_back_whole(value in ".{0,60}") {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
            let challenges = parse(&format!(r#"Bearer realm="{escaped}""#));
            proptest::prop_assert_eq!(challenges[0].param("realm"), Some(value.as_str()));
        }

        #[test]
        fn finds_the_error_among_other_params(realm in "[a-z ]{0,12}", err in "[a-z_]{1,20}") {
            let header = format!(r#"Bearer realm="{realm}", error="{err}", scope="a b""#);
            proptest::prop_assert_eq!(bearer_error(&header), Some(err));
        }

        /// Whatever another scheme quotes, escaped as a server must, it never triggers.
        #[test]
        fn quoted_params_never_trigger(
            scheme in "(Basic|Digest|Negotiate|Custom)",
            name in "[a-z]{1,8}",
            inner in ".{0,60}",
        ) {
            let inner = format!("Bearer error=\"invalid_token\" {inner}");
            let escaped = inner.replace('\\', "\\\\").replace('"', "\\\"");
            let header = format!(r#"{scheme} {name}="{escaped}""#);
            proptest::prop_assert!(!is_invalid_token(&header), "{}", header);
        }
    }
}
