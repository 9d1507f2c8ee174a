//! Where a failure's message comes from: the server's own words in the body when it has any,
//! cleaned and masked before they are kept.

use http::{header, HeaderMap};
use serde_json::Value;
use xhttp_core::mask::server_message;

/// Longest message kept, in characters: a sentence for a toast or a log line, not a page.
pub const MAX_MESSAGE_CHARS: usize = 256;

/// Largest body searched for a message (1 MiB). Error bodies are small; a larger one is a
/// page or a dump whose parse is not worth its cost, and gets the default message.
pub const MAX_SEARCHED_BODY: usize = 1 << 20;

/// The envelope members read by default, in order: vben's and most Chinese back ends'
/// `message`, and the `msg` / `Msg` of RuoYi, go-zero and their kin.
pub(crate) const ENVELOPE_POINTERS: [&str; 3] = ["/message", "/msg", "/Msg"];

/// The OAuth 2.0 and common JSON error shapes, read after the envelope.
const ERROR_POINTERS: [&str; 3] = ["/error/message", "/error_description", "/error"];

/// The RFC 9457 members, read first in a problem document.
const PROBLEM_POINTERS: [&str; 2] = ["/detail", "/title"];

/// The server's message in a failure body, first match wins: an RFC 9457 problem's `detail`
/// then `title` (only under `application/problem+json`), the envelope pointers, then
/// `error.message`, `error_description` and a string `error`. Only non-empty strings count;
/// a body that is not a JSON object gives `None`.
///
/// The text is made fit to keep by core's one masker ([`server_message`]): whitespace runs
/// become one space, control, bidi-override and invisible characters go (they rewrite
/// terminals, reorder log lines and split secrets), known secrets and credentials are masked,
/// and the result is capped at [`MAX_MESSAGE_CHARS`] characters, the last one an ellipsis when
/// something was cut.
pub(crate) fn from_body(
    headers: &HeaderMap,
    body: &[u8],
    envelope_pointers: &[Box<str>],
) -> Option<String> {
    if body.len() > MAX_SEARCHED_BODY {
        return None;
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    // An HTML page, plain text or an empty body is not worth a JSON parse.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let problem = is_problem(headers).then_some(PROBLEM_POINTERS);
    problem
        .into_iter()
        .flatten()
        .chain(envelope_pointers.iter().map(|p| &**p))
        .chain(ERROR_POINTERS)
        .filter_map(|pointer| value.pointer(pointer)?.as_str())
        .find_map(|text| server_message(text, MAX_MESSAGE_CHARS))
}

/// Whether the response says it is an RFC 9457 problem document.
pub(crate) fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            essence
                .trim()
                .eq_ignore_ascii_case("application/problem+json")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn defaults() -> Vec<Box<str>> {
        ENVELOPE_POINTERS.iter().map(|p| (*p).into()).collect()
    }

    fn json(body: &str) -> Option<String> {
        from_body(&HeaderMap::new(), body.as_bytes(), &defaults())
    }

    /// The message a body carrying `raw` as its `message` gives.
    fn clean(raw: &str) -> Option<String> {
        json(&serde_json::json!({ "message": raw }).to_string())
    }

    fn problem(body: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/Problem+JSON; charset=utf-8"),
        );
        from_body(&headers, body.as_bytes(), &defaults())
    }

    #[test]
    fn each_source_on_its_own() {
        assert_eq!(problem(r#"{"detail":"d"}"#).as_deref(), Some("d"));
        assert_eq!(problem(r#"{"title":"t"}"#).as_deref(), Some("t"));
        assert_eq!(json(r#"{"message":"m"}"#).as_deref(), Some("m"));
        assert_eq!(json(r#"{"msg":"m"}"#).as_deref(), Some("m"));
        assert_eq!(json(r#"{"Msg":"m"}"#).as_deref(), Some("m"));
        assert_eq!(json(r#"{"error":{"message":"e"}}"#).as_deref(), Some("e"));
        assert_eq!(json(r#"{"error_description":"ed"}"#).as_deref(), Some("ed"));
        assert_eq!(
            json(r#"{"error":"invalid_grant"}"#).as_deref(),
            Some("invalid_grant")
        );
    }

    #[test]
    fn the_first_source_in_order_wins() {
        let all = r#"{"detail":"d","title":"t","message":"m","msg":"g","Msg":"G",
            "error":{"message":"e"},"error_description":"ed"}"#;
        assert_eq!(problem(all).as_deref(), Some("d"));
        assert_eq!(
            problem(&all.replace(r#""detail":"d","#, "")).as_deref(),
            Some("t")
        );
        // Without the problem media type, `detail` and `title` are ordinary members.
        assert_eq!(json(all).as_deref(), Some("m"));
        assert_eq!(json(r#"{"msg":"g","Msg":"G"}"#).as_deref(), Some("g"));
        assert_eq!(
            json(r#"{"error":{"message":"e"},"error_description":"ed"}"#).as_deref(),
            Some("e")
        );
        assert_eq!(
            json(r#"{"error":"invalid_grant","error_description":"ed"}"#).as_deref(),
            Some("ed")
        );
    }

    #[test]
    fn empty_and_non_string_members_fall_through() {
        assert_eq!(
            json(r#"{"message":"  ","msg":7,"Msg":null,"error":{"message":"e"}}"#).as_deref(),
            Some("e")
        );
        assert_eq!(
            problem(r#"{"detail":"","message":"m"}"#).as_deref(),
            Some("m")
        );
        assert_eq!(json(r#"{"error":{"code":1}}"#), None);
    }

    #[test]
    fn bodies_that_are_not_a_json_object_give_nothing() {
        for body in [
            "",
            "<!DOCTYPE html><html><body><h1>500 Internal Server Error</h1></body></html>",
            "Service Unavailable",
            r#"["message"]"#,
            r#""message""#,
            r#"{"message":"cut"#,
        ] {
            assert_eq!(json(body), None, "{body}");
        }
        assert_eq!(
            json("\u{FEFF} {\"message\":\"bom\"}").as_deref(),
            Some("bom")
        );
    }

    #[test]
    fn custom_pointers_reach_nested_members() {
        let pointers: Vec<Box<str>> = vec!["/data/errMsg".into()];
        let body = br#"{"message":"ignored","data":{"errMsg":"nested"}}"#;
        assert_eq!(
            from_body(&HeaderMap::new(), body, &pointers).as_deref(),
            Some("nested")
        );
    }

    #[test]
    fn messages_are_trimmed_flattened_and_stripped_of_controls() {
        assert_eq!(
            clean("  line one\r\n\tline\u{1b}[31m two\u{0}\u{202E}  ").as_deref(),
            Some("line one line[31m two")
        );
        assert_eq!(clean("\u{7}\n\u{202E}"), None);
    }

    #[test]
    fn long_messages_are_capped_at_256_characters() {
        let capped = clean(&"é".repeat(10_000)).unwrap();
        assert_eq!(capped.chars().count(), MAX_MESSAGE_CHARS);
        assert!(capped.ends_with('…'));
        let exact = "a ".repeat(128);
        assert_eq!(clean(&exact).unwrap(), exact.trim_end());
        let exact = "b".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(clean(&exact).unwrap(), exact);
    }

    #[test]
    fn a_token_in_a_message_is_masked_even_where_the_cap_cuts() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl";
        let text = format!("{} {jwt}", "x".repeat(250));
        let shown = clean(&text).unwrap();
        assert!(!shown.contains("eyJ"), "{shown}");
    }

    #[test]
    fn an_oversized_body_is_not_searched() {
        let body = format!(
            r#"{{"message":"m","pad":"{}"}}"#,
            "x".repeat(MAX_SEARCHED_BODY)
        );
        assert_eq!(json(&body), None);
    }

    proptest::proptest! {
        #[test]
        fn extraction_never_panics_on_arbitrary_bytes(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            problem_type in proptest::bool::ANY,
        ) {
            let mut headers = HeaderMap::new();
            if problem_type {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
            }
            if let Some(message) = from_body(&headers, &body, &defaults()) {
                proptest::prop_assert!(!message.is_empty());
                proptest::prop_assert!(message.chars().count() <= MAX_MESSAGE_CHARS);
            }
        }

        #[test]
        fn extraction_never_panics_on_json_shaped_text(
            message in "\\PC{0,400}",
            key in "(message|msg|Msg|detail|title|error|error_description)",
        ) {
            let body = serde_json::json!({ key: message }).to_string();
            if let Some(shown) = json(&body) {
                proptest::prop_assert!(shown.chars().count() <= MAX_MESSAGE_CHARS);
                proptest::prop_assert!(!shown.chars().any(char::is_control));
            }
        }
    }
}
