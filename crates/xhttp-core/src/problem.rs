//! RFC 9457 problem details (`application/problem+json`), kept on an [`Error`](crate::Error).
//!
//! A problem document carries `type`, `title`, `status`, `detail` and `instance`, and any
//! extension members the API defines (`balance`, `errors`, `trace_id`...). Errors are cloned
//! to many callers and kept in report rings, so a [`Problem`] is bounded: each text member
//! and each extension value is masked by [`mask::server_text`](crate::mask::server_text) and
//! capped at [`MAX_MEMBER_LEN`] bytes, at most [`MAX_EXTENSIONS`] extension members are kept
//! (in name order), an extension whose name is a secret's (`access_token`, `password`...) is
//! kept as `"REDACTED"`, and a document over [`MAX_DOCUMENT_LEN`] is not read at all.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;

/// Most bytes kept per text member and per extension value (its JSON text): 1 KiB.
pub const MAX_MEMBER_LEN: usize = 1024;

/// Most extension members kept: 16, in name order; the rest are counted in
/// [`Problem::dropped_extensions`].
pub const MAX_EXTENSIONS: usize = 16;

/// Largest document read (64 KiB): problem documents are small; a larger body is not read as
/// one.
pub const MAX_DOCUMENT_LEN: usize = 64 * 1024;

/// An RFC 9457 problem document, masked and bounded (see the [module docs](self)).
///
/// ```
/// use xhttp_core::problem::Problem;
///
/// let problem = Problem::from_json(br#"{
///     "type": "https://example.com/probs/out-of-credit",
///     "title": "You do not have enough credit.",
///     "detail": "Your current balance is 30, but that costs 50.",
///     "instance": "/account/12345/msgs/abc",
///     "balance": 30,
///     "accounts": ["/account/12345", "/account/67890"],
///     "access_token": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"
/// }"#).unwrap();
/// assert_eq!(problem.problem_type(), Some("https://example.com/probs/out-of-credit"));
/// assert_eq!(problem.title(), Some("You do not have enough credit."));
/// assert_eq!(problem.instance(), Some("/account/12345/msgs/abc"));
/// assert_eq!(problem.extension("balance"), Some("30"));
/// assert_eq!(problem.extension("accounts"), Some(r#"["/account/12345", "/account/67890"]"#));
/// assert_eq!(problem.extension("access_token"), Some(r#""REDACTED""#));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problem {
    problem_type: Option<Box<str>>,
    title: Option<Box<str>>,
    status: Option<u16>,
    detail: Option<Box<str>>,
    instance: Option<Box<str>>,
    extensions: Vec<(Box<str>, Box<str>)>,
    dropped: usize,
}

impl Problem {
    /// Reads a problem document; `None` when the body is not a JSON object or is over
    /// [`MAX_DOCUMENT_LEN`]. Members of the wrong type (a numeric `title`) are left out; a
    /// name given twice reads as serde_json reads it (the last wins).
    pub fn from_json(body: &[u8]) -> Option<Problem> {
        if body.len() > MAX_DOCUMENT_LEN {
            return None;
        }
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let members: BTreeMap<Cow<'_, str>, &RawValue> = serde_json::from_slice(body).ok()?;
        let mut problem = Problem::default();
        for (name, value) in members {
            match &*name {
                "type" => problem.problem_type = text(value),
                "title" => problem.title = text(value),
                "detail" => problem.detail = text(value),
                "instance" => problem.instance = text(value),
                "status" => problem.status = serde_json::from_str(value.get()).ok(),
                _ if problem.extensions.len() >= MAX_EXTENSIONS => problem.dropped += 1,
                _ => {
                    let kept = if crate::mask::is_secret_name(&name) {
                        r#""REDACTED""#.into()
                    } else {
                        crate::mask::server_text(value.get(), MAX_MEMBER_LEN).into_boxed_str()
                    };
                    let name = crate::mask::server_text(&name, MAX_MEMBER_LEN);
                    problem.extensions.push((name.into_boxed_str(), kept));
                }
            }
        }
        Some(problem)
    }

    /// The `type` URI, as sent (absent means `about:blank`, RFC 9457 section 3.1.1).
    pub fn problem_type(&self) -> Option<&str> {
        self.problem_type.as_deref()
    }

    /// The `title`.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    /// The document's own `status` member (the HTTP status wins on the error).
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The `detail`.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The `instance` URI reference.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// An extension member's value as its JSON text, as sent (`30`, `"text"`, `[...]`), masked.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(held, _)| &**held == name)
            .map(|(_, value)| &**value)
    }

    /// Every kept extension member, in name order, values as JSON text.
    ///
    /// ```
    /// let problem = xhttp_core::problem::Problem::from_json(br#"{"b":2,"a":"x"}"#).unwrap();
    /// let members: Vec<_> = problem.extensions().collect();
    /// assert_eq!(members, [("a", r#""x""#), ("b", "2")]);
    /// ```
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extensions
            .iter()
            .map(|(name, value)| (&**name, &**value))
    }

    /// How many extension members were left out past [`MAX_EXTENSIONS`].
    pub fn dropped_extensions(&self) -> usize {
        self.dropped
    }
}

/// A string member, masked and capped; `None` for another type or nothing left.
fn text(value: &RawValue) -> Option<Box<str>> {
    let text: Cow<'_, str> = serde_json::from_str(value.get()).ok()?;
    let text = crate::mask::server_text(&text, MAX_MEMBER_LEN);
    (!text.is_empty()).then(|| text.into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_bounded_and_values_capped() {
        let members: Vec<String> = (0..40)
            .map(|i| format!(r#""m{i:02}":"{}""#, "x".repeat(1500)))
            .collect();
        let body = format!("{{{}}}", members.join(","));
        let problem = Problem::from_json(body.as_bytes()).unwrap();
        assert_eq!(problem.extensions().count(), MAX_EXTENSIONS);
        assert_eq!(problem.dropped_extensions(), 40 - MAX_EXTENSIONS);
        assert!(problem.extensions().all(|(_, v)| v.len() <= MAX_MEMBER_LEN));
    }

    #[test]
    fn secrets_in_members_are_masked_and_non_objects_are_none() {
        let problem = Problem::from_json(
            br#"{"detail":"token AT-9f8e7d6c5b4a39281706 expired","password":"hunter22","note":"refresh_token=abcdef123456"}"#,
        )
        .unwrap();
        let printed = format!("{problem:?}");
        assert!(!printed.contains("hunter22"), "{printed}");
        assert!(!printed.contains("abcdef123456"), "{printed}");
        assert!(!printed.contains("9f8e7d6c5b4a39281706"), "{printed}");
        assert_eq!(Problem::from_json(b"[1,2]"), None);
        assert_eq!(Problem::from_json(b"not json"), None);
        assert_eq!(Problem::from_json(&vec![b' '; MAX_DOCUMENT_LEN + 1]), None);
    }
}
