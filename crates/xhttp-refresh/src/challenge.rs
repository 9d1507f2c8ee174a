//! Reading a `WWW-Authenticate: Bearer` challenge (RFC 6750 section 3).

/// The `error` parameter of the first `Bearer` challenge in a `WWW-Authenticate` value, if
/// any: `invalid_token`, `insufficient_scope`, `invalid_request`.
///
/// Lenient by design (servers are): scheme and parameter names are matched without case,
/// values may be quoted or bare, other schemes before `Bearer` are skipped. Never panics.
///
/// ```
/// use xhttp_refresh::bearer_error;
/// assert_eq!(
///     bearer_error(r#"Bearer realm="api", error="invalid_token", error_description="expired""#),
///     Some("invalid_token".to_string())
/// );
/// assert_eq!(bearer_error(r#"Basic realm="x", Bearer error=insufficient_scope"#), Some("insufficient_scope".to_string()));
/// assert_eq!(bearer_error("Bearer realm=\"api\""), None);
/// ```
pub fn bearer_error(header: &str) -> Option<String> {
    let start = find_bearer(header)?;
    let mut rest = &header[start + "bearer".len()..];
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        if name.contains(' ') {
            // A new challenge (`Basic realm=...`) begins: the Bearer one had no error.
            return None;
        }
        let after = &rest[eq + 1..];
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = closing_quote(quoted)?;
            (quoted[..end].replace("\\\"", "\""), &quoted[end + 1..])
        } else {
            let end = after.find([',', ' ']).unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        if name.eq_ignore_ascii_case("error") {
            return Some(value);
        }
        rest = tail;
    }
}

/// Whether the header carries a Bearer challenge with `error="invalid_token"`.
pub fn is_invalid_token(header: &str) -> bool {
    bearer_error(header).is_some_and(|e| e.eq_ignore_ascii_case("invalid_token"))
}

fn find_bearer(header: &str) -> Option<usize> {
    let lower = header.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("bearer") {
        let at = from + i;
        let before_ok = at == 0 || matches!(lower.as_bytes()[at - 1], b' ' | b',' | b'\t');
        let after = lower.as_bytes().get(at + "bearer".len());
        let after_ok = matches!(after, None | Some(b' ') | Some(b'\t') | Some(b','));
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn closing_quote(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_servers_send() {
        assert!(is_invalid_token(r#"Bearer error="invalid_token""#));
        assert!(is_invalid_token(r#"bearer ERROR="invalid_token""#));
        assert!(is_invalid_token("Bearer error=invalid_token"));
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

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,200}") {
            let _ = bearer_error(&text);
        }

        #[test]
        fn finds_the_error_among_other_params(realm in "[a-z ]{0,12}", err in "[a-z_]{1,20}") {
            let header = format!(r#"Bearer realm="{realm}", error="{err}", scope="a b""#);
            proptest::prop_assert_eq!(bearer_error(&header), Some(err));
        }
    }
}
