//! Masking secrets before anything is printed.
//!
//! Tokens end up in URLs more often than anyone intends (`?access_token=` in OAuth 2.0's query
//! form, signed links, `user:password@` in a base URL). Everything xhttp prints about a request
//! goes through [`uri`] first.

/// The mark that replaces a secret.
pub const MASK: &str = "REDACTED";

/// Whether a query parameter name names a secret.
///
/// Matches, case-insensitively, names containing `token`, `secret`, `password`, `passwd`,
/// `signature`, `credential`, `apikey`, `api_key` or `session`, and the exact names `key`,
/// `code`, `sig`, `auth` and `authorization`.
///
/// ```
/// use xhttp_core::redact::is_secret_param;
/// assert!(is_secret_param("access_token"));
/// assert!(is_secret_param("X-Amz-Signature"));
/// assert!(!is_secret_param("page"));
/// ```
pub fn is_secret_param(name: &str) -> bool {
    const CONTAINS: [&str; 9] = [
        "token",
        "secret",
        "password",
        "passwd",
        "signature",
        "credential",
        "apikey",
        "api_key",
        "session",
    ];
    const EXACT: [&str; 5] = ["key", "code", "sig", "auth", "authorization"];
    let lower = name.to_ascii_lowercase();
    CONTAINS.iter().any(|word| lower.contains(word)) || EXACT.contains(&lower.as_str())
}

/// The URI as text with the user-info and the values of secret query parameters masked.
///
/// ```
/// let uri: http::Uri = "https://bob:hunter2@api.example.com/a?token=abc&page=2".parse().unwrap();
/// assert_eq!(
///     xhttp_core::redact::uri(&uri),
///     "https://***@api.example.com/a?token=REDACTED&page=2"
/// );
/// ```
pub fn uri(uri: &http::Uri) -> String {
    let mut out = String::with_capacity(uri.to_string().len());
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        let text = authority.as_str();
        match text.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&text[at..]);
            }
            None => out.push_str(text),
        }
    }
    out.push_str(uri.path());
    if let Some(query) = uri.query() {
        out.push('?');
        out.push_str(&self::query(query));
    }
    out
}

/// A query string with the values of secret parameters masked.
///
/// ```
/// assert_eq!(
///     xhttp_core::redact::query("a=1&client_secret=s3&b"),
///     "a=1&client_secret=REDACTED&b"
/// );
/// ```
pub fn query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret_param(&percent_decode_lossy(name)) => {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(pair),
        }
    }
    out
}

/// Enough percent-decoding to see through `access%5Ftoken`; invalid escapes stay as they are.
fn percent_decode_lossy(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(value as u8);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_encoded_names_and_keeps_the_rest() {
        assert_eq!(
            query("access%5Ftoken=x&q=rust&empty&refresh_token="),
            "access%5Ftoken=REDACTED&q=rust&empty&refresh_token=REDACTED"
        );
    }

    #[test]
    fn uri_without_query_or_authority() {
        let u: http::Uri = "/only/path".parse().unwrap();
        assert_eq!(uri(&u), "/only/path");
        let u: http::Uri = "http://[::1]:8080/".parse().unwrap();
        assert_eq!(uri(&u), "http://[::1]:8080/");
    }

    proptest::proptest! {
        #[test]
        fn a_secret_value_never_survives(secret in "[A-Za-z0-9]{12,24}", other in "[a-z]{1,8}") {
            let text = format!("https://h/p?{other}=1&access_token={secret}&id_token={secret}");
            let u: http::Uri = text.parse().unwrap();
            let shown = uri(&u);
            proptest::prop_assert!(!shown.contains(&secret));
        }
    }
}
