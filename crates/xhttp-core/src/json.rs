//! The JSON rules every layer shares: what a business code is, where a configured location
//! points, and how a parse failure is described without quoting the body.
//!
//! Envelope, refresh and the token grants all read codes out of server JSON. They read them
//! through [`business_code`], so that `40009`, `"40009"` and `40009.0` are one code everywhere
//! and a failure envelope can never pass as a success through one path and trigger a refresh
//! through another. Likewise every location a user configures (`"code"`, `"/data/errMsg"`)
//! is read by [`pointer()`], so that a name means the same member in every layer.

use serde_json::Value;

use crate::BusinessCode;

/// The business code a JSON value holds, normalised; `None` for a value that is no code
/// (`null`, a boolean, an array, an object, an empty string).
///
/// - An integer is [`BusinessCode::Int`].
/// - A float with no fractional part that fits an `i64` (`40009.0`, `4.0009e4`) is that
///   integer; any other float is its text, as a [`BusinessCode::Str`].
/// - A string is trimmed; one that spells an integer the way an integer prints (`"40009"`,
///   `"-1"`, not `"007"` or `"+1"`) is that integer, any other non-empty string stays text.
///
/// ```
/// use serde_json::json;
/// use xhttp_core::{json::business_code, BusinessCode};
///
/// assert_eq!(business_code(&json!(40009)), Some(BusinessCode::Int(40009)));
/// assert_eq!(business_code(&json!("40009")), Some(BusinessCode::Int(40009)));
/// assert_eq!(business_code(&json!(40009.0)), Some(BusinessCode::Int(40009)));
/// assert_eq!(business_code(&json!(" 0 ")), Some(BusinessCode::Int(0)));
/// assert_eq!(business_code(&json!("007")), Some(BusinessCode::from("007")));
/// assert_eq!(business_code(&json!("A0001")), Some(BusinessCode::from("A0001")));
/// assert_eq!(business_code(&json!(null)), None);
/// assert_eq!(business_code(&json!(true)), None);
/// ```
pub fn business_code(value: &Value) -> Option<BusinessCode> {
    match value {
        Value::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(int), _) => BusinessCode::Int(int),
            (None, Some(float)) => whole_float(float)
                .map(BusinessCode::Int)
                .unwrap_or_else(|| BusinessCode::Str(n.to_string().into())),
            (None, None) => BusinessCode::Str(n.to_string().into()),
        }),
        Value::String(text) => code_from_text(text),
        _ => None,
    }
}

/// A code given as text (a configured code, a header value, a JSON string), normalised as
/// [`business_code`] normalises strings.
///
/// ```
/// use xhttp_core::{json::code_from_text, BusinessCode};
/// assert_eq!(code_from_text("40009"), Some(BusinessCode::Int(40009)));
/// assert_eq!(code_from_text(""), None);
/// ```
pub fn code_from_text(text: &str) -> Option<BusinessCode> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(match text.parse::<i64>() {
        Ok(n) if n.to_string() == text => BusinessCode::Int(n),
        _ => BusinessCode::Str(text.into()),
    })
}

/// A code normalised: a [`BusinessCode::Str`] that spells an integer becomes that integer.
///
/// ```
/// use xhttp_core::{json::normalize, BusinessCode};
/// assert_eq!(normalize(BusinessCode::from("0")), BusinessCode::Int(0));
/// assert_eq!(normalize(BusinessCode::Int(7)), BusinessCode::Int(7));
/// ```
pub fn normalize(code: BusinessCode) -> BusinessCode {
    match code {
        BusinessCode::Str(text) => code_from_text(&text).unwrap_or(BusinessCode::Str(text)),
        code => code,
    }
}

fn whole_float(float: f64) -> Option<i64> {
    // i64::MAX is not exactly representable; stay strictly inside the range.
    let in_range = float.is_finite() && float.fract() == 0.0 && float.abs() < 9.0e18;
    #[allow(clippy::cast_possible_truncation)]
    in_range.then_some(float as i64)
}

/// A location given as a JSON pointer (RFC 6901) or as a member name, as a pointer.
///
/// Text that starts with `/` is a pointer and is kept as it is, and so is `""` (the whole
/// document). Any other text is the name of a top-level member, escaped as RFC 6901 says
/// (`~` as `~0`, `/` as `~1`): `a/b` names the member `"a/b"`, not a path.
///
/// ```
/// use serde_json::json;
/// use xhttp_core::json::pointer;
///
/// assert_eq!(&*pointer("token"), "/token");
/// assert_eq!(&*pointer("/data/token"), "/data/token");
/// assert_eq!(&*pointer("a/b"), "/a~1b");
/// let body = json!({"data": {"token": "t"}, "a/b": 1});
/// assert_eq!(body.pointer(&pointer("/data/token")), Some(&json!("t")));
/// assert_eq!(body.pointer(&pointer("a/b")), Some(&json!(1)));
/// ```
pub fn pointer(location: &str) -> Box<str> {
    if location.is_empty() || location.starts_with('/') {
        return location.into();
    }
    format!("/{}", location.replace('~', "~0").replace('/', "~1")).into()
}

/// The array index a JSON pointer token names (RFC 6901, section 4): `0`, or digits without
/// a leading zero; anything else (`01`, `+1`, `-1`, `1.0`, empty) names no index. The same
/// rule as `serde_json::Value::pointer`, for walks that cannot use it.
///
/// ```
/// use xhttp_core::json::array_index;
/// assert_eq!(array_index("0"), Some(0));
/// assert_eq!(array_index("12"), Some(12));
/// for not in ["01", "+1", "-1", "1.0", "", " 1"] {
///     assert_eq!(array_index(not), None, "{not:?}");
/// }
/// ```
pub fn array_index(token: &str) -> Option<usize> {
    let canonical = token == "0"
        || (token.starts_with(|c: char| matches!(c, '1'..='9'))
            && token.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| token.parse().ok()).flatten()
}

/// The reference tokens of a location read as [`pointer()`] reads it, unescaped (`~1` is `/`,
/// `~0` is `~`): the member names and array indices to walk, in order. The whole document
/// (`""`) has none.
///
/// For code that walks a document serde_json's `Value::pointer` cannot reach, such as a
/// borrowed `RawValue`.
///
/// ```
/// use xhttp_core::json::pointer_tokens;
///
/// assert_eq!(pointer_tokens("/data/items/0"), ["data", "items", "0"]);
/// assert_eq!(pointer_tokens("/a~1b/c~0d"), ["a/b", "c~d"]);
/// assert_eq!(pointer_tokens("a/b"), ["a/b"]);
/// assert!(pointer_tokens("").is_empty());
/// ```
pub fn pointer_tokens(location: &str) -> Vec<String> {
    if location.is_empty() {
        return Vec::new();
    }
    match location.strip_prefix('/') {
        // `~1` first, as RFC 6901 section 4 says, so that `~01` reads as `~1`, not `/`.
        Some(rest) => rest
            .split('/')
            .map(|token| token.replace("~1", "/").replace("~0", "~"))
            .collect(),
        None => vec![location.to_owned()],
    }
}

/// A parse failure described by its category and position only.
///
/// serde's own message quotes the offending value (`invalid type: string "eyJ..."`), which may
/// be a token, so it never enters an error: only its category (syntax, data, end of input) and
/// its line and column do.
///
/// ```
/// let err = serde_json::from_str::<u32>(r#""secret-token""#).unwrap_err();
/// let text = xhttp_core::json::describe_error(&err);
/// assert_eq!(text, "invalid data at line 1, column 14");
/// assert!(!text.contains("secret"));
/// ```
pub fn describe_error(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let category = match err.classify() {
        Category::Io => "read failure",
        Category::Syntax => "syntax error",
        Category::Data => "invalid data",
        Category::Eof => "unexpected end of input",
    };
    format!("{category} at line {}, column {}", err.line(), err.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_strings_are_one_code() {
        for value in [
            json!(40009),
            json!("40009"),
            json!(40009.0),
            json!(4.0009e4),
        ] {
            assert_eq!(
                business_code(&value),
                Some(BusinessCode::Int(40009)),
                "{value}"
            );
        }
        assert_eq!(business_code(&json!(1.5)), Some(BusinessCode::from("1.5")));
        assert_eq!(
            business_code(&json!(1e300)),
            Some(BusinessCode::from("1e+300"))
        );
        assert_eq!(business_code(&json!("")), None);
        assert_eq!(business_code(&json!([])), None);
    }

    #[test]
    fn escapes_read_in_the_order_rfc_6901_gives() {
        assert_eq!(pointer_tokens("/~01"), ["~1"]);
        assert_eq!(pointer_tokens("/"), [""]);
        assert_eq!(&*pointer(""), "");
        assert_eq!(&*pointer("~"), "/~0");
    }

    /// Walks `value` by the tokens, an array index read as RFC 6901 reads it (no leading zero).
    fn walk<'a>(value: &'a Value, tokens: &[String]) -> Option<&'a Value> {
        tokens
            .iter()
            .try_fold(value, |current, token| match current {
                Value::Object(map) => map.get(token),
                Value::Array(items) if token == "0" || !token.starts_with('0') => {
                    items.get(token.parse::<usize>().ok()?)
                }
                _ => None,
            })
    }

    proptest::proptest! {
        #[test]
        fn tokens_walk_where_the_pointer_points(
            location in "/?[a-c~/01]{0,6}",
        ) {
            let document = json!({
                "a": {"b": 1, "a/b": [2, {"c": 3}]},
                "a/b": 4,
                "~": {"0": 5},
                "": 6,
                "c~1": 7,
            });
            proptest::prop_assert_eq!(
                walk(&document, &pointer_tokens(&location)),
                document.pointer(&pointer(&location))
            );
        }

        #[test]
        fn an_integer_reads_the_same_in_every_form(n in proptest::num::i64::ANY) {
            let expected = Some(BusinessCode::Int(n));
            proptest::prop_assert_eq!(business_code(&json!(n)), expected.clone());
            proptest::prop_assert_eq!(business_code(&json!(n.to_string())), expected);
        }
    }
}
