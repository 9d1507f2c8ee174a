//! `Retry-After` (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date in any of its three
//! forms (IMF-fixdate, RFC 850, asctime).
//!
//! The one parser of the stack: retry and the status layer both read the header through it, so
//! they never disagree about a value.

use std::time::{Duration, SystemTime};

/// The wait a `Retry-After` value asks for, measured against `now` for a date; `None` for a
/// value that is neither (it is then ignored). A date in the past means no wait.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use xhttp_core::retry_after::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_772); // Sun, 06 Nov 1994 08:49:32 GMT
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(5)));
/// assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now), Some(Duration::from_secs(5)));
/// assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), Some(Duration::from_secs(5)));
/// assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time"; the caller caps it.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,64}") {
            let _ = parse_retry_after(&text, SystemTime::now());
        }

        #[test]
        fn delta_seconds_round_trip(secs in 0u64..10_000_000) {
            proptest::prop_assert_eq!(
                parse_retry_after(&secs.to_string(), SystemTime::now()),
                Some(Duration::from_secs(secs))
            );
        }
    }

    #[test]
    fn garbage_and_negative_values_are_ignored() {
        let now = SystemTime::now();
        for value in ["", " ", "-1", "1.5", "10s", "Mon, 32 Foo 2020 99:99:99 GMT"] {
            assert_eq!(parse_retry_after(value, now), None, "{value:?}");
        }
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }
}
