//! Masking secrets before anything is printed.
//!
//! Tokens end up in URLs more often than anyone intends (`?access_token=` in OAuth 2.0's query
//! form, `#access_token=` in its implicit grant, `;jsessionid=` matrix parameters, signed
//! links, `user:password@` in a base URL). Everything xhttp prints about a request goes through
//! [`uri`] (or [`url`] for a URL as text) first. What names a secret is decided by one list,
//! the masker's ([`mask::is_secret_name`](crate::mask::is_secret_name)).

/// The mark that replaces a secret.
pub const MASK: &str = "REDACTED";

/// Whether a query, matrix or fragment parameter name names a secret.
///
/// The rules are the masker's ([`mask::is_secret_name`](crate::mask::is_secret_name)), so that
/// a URL and a server's text agree on what a secret is: any case and separator, percent
/// escapes decoded (`access_token`, `accessToken`, `access%5Ftoken`, `api-key`, `x-api-key`,
/// `pwd`, `jwt`, `assertion`, `private_key`, `rt`, `code`, `X-Amz-Signature`, ...).
///
/// ```
/// use xhttp_core::redact::is_secret_param;
/// assert!(is_secret_param("access_token"));
/// assert!(is_secret_param("X-Amz-Signature"));
/// assert!(is_secret_param("api-key"));
/// assert!(!is_secret_param("page"));
/// ```
pub fn is_secret_param(name: &str) -> bool {
    crate::mask::is_secret_name(name)
}

/// The URI as text with the user-info, the values of secret query parameters and the values
/// of secret matrix parameters (`/a;token=x/b`) masked.
///
/// An [`http::Uri`] holds no fragment (the `http` crate drops it when parsing); a URL given as
/// text goes through [`url`], which masks the fragment too.
///
/// ```
/// let uri: http::Uri = "https://bob:hunter2@api.example.com/a;jwt=x/b?token=abc&page=2".parse().unwrap();
/// assert_eq!(
///     xhttp_core::redact::uri(&uri),
///     "https://***@api.example.com/a;jwt=REDACTED/b?token=REDACTED&page=2"
/// );
/// ```
pub fn uri(uri: &http::Uri) -> String {
    let mut out = String::with_capacity(uri.to_string().len());
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        out.push_str(&self::authority(authority.as_str()));
    }
    out.push_str(&path(uri.path()));
    if let Some(query) = uri.query() {
        out.push('?');
        out.push_str(&self::query(query));
    }
    out
}

/// A URL given as text, masked as [`uri`] masks an [`http::Uri`], and its fragment too.
///
/// A fragment's secret parameters are masked as a query's are (OAuth 2.0's implicit grant
/// returns `#access_token=...&state=...`), and anything in it shaped like a token is masked by
/// [`mask::mask`](crate::mask::mask): the fragment is never sent to a server, but it is a
/// credential's usual hiding place in a redirect URL.
///
/// ```
/// assert_eq!(
///     xhttp_core::redact::url("https://app.example.com/cb#access_token=abc&state=xyz"),
///     "https://app.example.com/cb#access_token=REDACTED&state=xyz"
/// );
/// assert_eq!(
///     xhttp_core::redact::url("http://u:p@h/p;sid=1?a=1&pwd=2"),
///     "http://***@h/p;sid=REDACTED?a=1&pwd=REDACTED"
/// );
/// ```
pub fn url(text: &str) -> String {
    let (rest, fragment) = match text.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (text, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(text.len());
    let path_text = match rest.split_once("://") {
        Some((scheme, after)) => {
            out.push_str(scheme);
            out.push_str("://");
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            out.push_str(&self::authority(authority));
            path
        }
        None => rest,
    };
    out.push_str(&path(path_text));
    if let Some(query) = query {
        out.push('?');
        out.push_str(&self::query(query));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(&crate::mask::mask(&self::query(fragment)));
    }
    out
}

/// An authority with its user-info masked as `***`.
fn authority(text: &str) -> String {
    match text.rfind('@') {
        Some(at) => format!("***{}", &text[at..]),
        None => text.to_string(),
    }
}

/// A path with the values of secret matrix parameters (`;name=value`) masked.
fn path(path: &str) -> String {
    if !path.contains(';') {
        return path.to_string();
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        for (j, part) in segment.split(';').enumerate() {
            if j > 0 {
                out.push(';');
            }
            out.push_str(&pair(part, j > 0));
        }
    }
    out
}

/// `name=value` with the value masked when `check` is set and `name` is a secret's.
fn pair(pair: &str, check: bool) -> std::borrow::Cow<'_, str> {
    match pair.split_once('=') {
        Some((name, _)) if check && is_secret_param(name) => format!("{name}={MASK}").into(),
        _ => pair.into(),
    }
}

/// A query string with the values of secret parameters masked.
///
/// ```
/// assert_eq!(
///     xhttp_core::redact::query("a=1&client_secret=s3&b&access%5Ftoken=x"),
///     "a=1&client_secret=REDACTED&b&access%5Ftoken=REDACTED"
/// );
/// ```
pub fn query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, part) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&pair(part, true));
    }
    out
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

    #[test]
    fn matrix_parameters_and_every_secret_name_are_masked() {
        let u: http::Uri = "https://h/a;token=x1/b;v=2;api-key=x2?x-api-key=x3&pwd=x4&jwt=x5\
            &assertion=x6&private_key=x7&rt=x8&apiKey=x9&Access-Token=x10&page=2"
            .replace(' ', "")
            .parse()
            .unwrap();
        let shown = uri(&u);
        for n in 1..=10 {
            assert!(!shown.contains(&format!("=x{n}")), "x{n}: {shown}");
        }
        assert!(
            shown.contains("/b;v=2;") && shown.ends_with("&page=2"),
            "{shown}"
        );
    }

    #[test]
    fn a_fragment_keeps_its_plain_parameters_and_loses_its_secrets() {
        assert_eq!(
            url("https://app/cb#access_token=abc&token_type=bearer&expires_in=3600&state=s"),
            "https://app/cb#access_token=REDACTED&token_type=bearer&expires_in=3600&state=s"
        );
        assert_eq!(url("/docs#section-2"), "/docs#section-2");
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        assert_eq!(url(&format!("/cb#{jwt}")), "/cb#REDACTED");
    }

    #[test]
    fn url_text_masks_user_info_like_uri() {
        assert_eq!(
            url("https://bob:pa55@api.example.com"),
            "https://***@api.example.com"
        );
        assert_eq!(url("relative/path?q=1"), "relative/path?q=1");
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
