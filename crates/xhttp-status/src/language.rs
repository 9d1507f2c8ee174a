//! The default message of a failure status when the body has none, in English or Chinese.
//!
//! The Chinese wording is that of vue-vben-admin's `checkStatus`, which many admin front ends copy: an
//! admin front end shows these sentences to its users as they are, so a Rust service that
//! relays them keeps the wording its users already know. 400 and 429, which vben leaves to the
//! server's own message, get sentences in the same style.

use http::StatusCode;

/// The language of the default messages.
///
/// ```
/// use http::StatusCode;
/// use xhttp_status::Language;
///
/// assert_eq!(
///     Language::English.default_message(StatusCode::NOT_FOUND),
///     "The requested resource was not found."
/// );
/// assert_eq!(
///     Language::Chinese.default_message(StatusCode::NOT_FOUND),
///     "网络请求错误,未找到该资源!"
/// );
/// // A status without an entry of its own gets a sentence for its class.
/// assert_eq!(
///     Language::English.default_message(StatusCode::IM_A_TEAPOT),
///     "The server rejected the request."
/// );
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Language {
    /// English (the default).
    #[default]
    English,
    /// Simplified Chinese, in the words of vue-vben-admin's `checkStatus`.
    Chinese,
}

/// The statuses with a message of their own (the others get one for their class).
pub const STATUSES_WITH_DEFAULTS: [u16; 13] = [
    400, 401, 403, 404, 405, 408, 429, 500, 501, 502, 503, 504, 505,
];

impl Language {
    /// The message for `status` when the response body gives none.
    pub fn default_message(self, status: StatusCode) -> &'static str {
        match self {
            Language::English => english(status),
            Language::Chinese => chinese(status),
        }
    }
}

fn english(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request was invalid.",
        401 => "Not authorized: the token, user name or password is wrong or has expired.",
        403 => "Authenticated, but access to this resource is forbidden.",
        404 => "The requested resource was not found.",
        405 => "The request method is not allowed for this resource.",
        408 => "The server timed out waiting for the request.",
        429 => "Too many requests: please try again later.",
        500 => "Internal server error: please contact the administrator.",
        501 => "The server does not implement this request.",
        502 => "Bad gateway: an upstream server answered with an error.",
        503 => "Service unavailable: the server is overloaded or down for maintenance.",
        504 => "Gateway timeout: an upstream server did not answer in time.",
        505 => "The server does not support the HTTP version of the request.",
        _ => class(status, Language::English),
    }
}

fn chinese(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "请求参数错误,请检查后重试!",
        401 => "用户没有权限（令牌、用户名、密码错误）!",
        403 => "用户得到授权，但是访问是被禁止的。!",
        404 => "网络请求错误,未找到该资源!",
        405 => "网络请求错误,请求方法未允许!",
        408 => "网络请求超时!",
        429 => "请求过于频繁,请稍后再试!",
        500 => "服务器错误,请联系管理员!",
        501 => "网络未实现!",
        502 => "网络错误!",
        503 => "服务不可用，服务器暂时过载或维护!",
        504 => "网络超时!",
        505 => "http版本不支持该请求!",
        _ => class(status, Language::Chinese),
    }
}

/// The sentence for a status without one of its own: by class.
fn class(status: StatusCode, language: Language) -> &'static str {
    let english = matches!(language, Language::English);
    match (status.is_client_error(), status.is_server_error(), english) {
        (true, _, true) => "The server rejected the request.",
        (true, _, false) => "请求被服务器拒绝!",
        (_, true, true) => "The server failed to handle the request.",
        (_, true, false) => "服务器处理请求失败!",
        (_, _, true) => "The server answered with an unexpected status.",
        (_, _, false) => "服务器返回了意外的状态!",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_status_has_its_own_message_in_both_languages() {
        for code in STATUSES_WITH_DEFAULTS {
            let status = StatusCode::from_u16(code).unwrap();
            let class = StatusCode::from_u16(if code < 500 { 499 } else { 599 }).unwrap();
            for language in [Language::English, Language::Chinese] {
                let message = language.default_message(status);
                assert!(!message.is_empty());
                assert_ne!(
                    message,
                    language.default_message(class),
                    "{code} {language:?}"
                );
            }
            assert_ne!(
                Language::English.default_message(status),
                Language::Chinese.default_message(status)
            );
        }
    }

    #[test]
    fn the_chinese_table_keeps_vbens_wording() {
        let zh = |code| Language::Chinese.default_message(StatusCode::from_u16(code).unwrap());
        assert_eq!(zh(401), "用户没有权限（令牌、用户名、密码错误）!");
        assert_eq!(zh(403), "用户得到授权，但是访问是被禁止的。!");
        assert_eq!(zh(503), "服务不可用，服务器暂时过载或维护!");
        assert_eq!(zh(505), "http版本不支持该请求!");
    }

    #[test]
    fn other_statuses_get_a_sentence_for_their_class() {
        let en = |code| Language::English.default_message(StatusCode::from_u16(code).unwrap());
        assert_eq!(en(418), "The server rejected the request.");
        assert_eq!(en(507), "The server failed to handle the request.");
        assert_eq!(en(600), "The server answered with an unexpected status.");
    }
}
