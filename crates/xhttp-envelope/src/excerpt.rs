//! The first bytes of a broken body, safe to put in an error: control characters removed, the
//! values of secret-looking fields and anything shaped like a JWT or a bearer token masked.

use xhttp_core::redact::{is_secret_param, MASK};

/// At most `max` bytes of `body` as text, with secrets masked.
pub(crate) fn redacted(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(max)]);
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    mask_tokens(&mask_secret_fields(&clean))
}

/// `"password": "x"` and the like: the value of a string field whose name looks secret.
fn mask_secret_fields(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut last_string: Option<String> = None;
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = closing_quote(after).unwrap_or(after.len());
        let literal = &after[..end];
        let tail = after.get(end + 1..).unwrap_or("");
        let is_value_of_secret = last_string.take().is_some_and(|key| is_secret_param(&key));
        out.push('"');
        if is_value_of_secret {
            out.push_str(MASK);
        } else {
            out.push_str(literal);
        }
        if end < after.len() {
            out.push('"');
        }
        // A string followed by ':' is a key; remember it for the value that follows.
        if tail.trim_start().starts_with(':') {
            last_string = Some(literal.to_string());
        }
        rest = tail;
    }
    out.push_str(rest);
    out
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

/// Words shaped like a JWT (three base64url segments) or following `Bearer`.
fn mask_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_bearer = false;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String, after_bearer: &mut bool| {
        if word.is_empty() {
            return;
        }
        if *after_bearer || looks_like_jwt(word) {
            out.push_str(MASK);
        } else {
            out.push_str(word);
        }
        *after_bearer = word.eq_ignore_ascii_case("bearer");
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=') {
            word.push(c);
        } else {
            flush(&mut word, &mut out, &mut after_bearer);
            out.push(c);
        }
    }
    flush(&mut word, &mut out, &mut after_bearer);
    out
}

fn looks_like_jwt(word: &str) -> bool {
    let segments: Vec<&str> = word.split('.').collect();
    segments.len() == 3
        && segments.iter().all(|s| {
            s.len() >= 4
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_the_rest_kept() {
        let body = br#"{"user":"bob","access_token":"SECRET-1","note":"Bearer SECRET-2 and eyJhbGci.eyJzdWIi.c2lnbmF0dXJl", "n": 3 ,"#;
        let text = redacted(body, 4096);
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!text.contains("eyJhbGci"), "{text}");
        assert!(text.contains(r#""user":"bob""#), "{text}");
        assert!(text.contains(r#""n": 3"#), "{text}");
    }

    #[test]
    fn the_excerpt_is_capped_and_has_no_control_characters() {
        let body = [b'a'; 10_000];
        assert_eq!(redacted(&body, 4096).len(), 4096);
        assert_eq!(redacted(b"a\nb\x00c", 100), "a b c");
    }
}
