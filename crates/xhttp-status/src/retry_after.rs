//! `Retry-After` (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date.

use std::time::{Duration, SystemTime};

/// The wait a `Retry-After` value asks for, a date measured against `now` (a date in the past
/// means no wait); `None` for a value that is neither form, which is then ignored.
pub(crate) fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds still means "a very long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn delta_seconds_and_every_date_form() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_772); // Sun, 06 Nov 1994 08:49:32 GMT
        let five = Some(Duration::from_secs(5));
        assert_eq!(parse(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", now), five);
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT", now), five);
        assert_eq!(parse("Sun Nov  6 08:49:37 1994", now), five);
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for garbage in ["", " ", "-1", "1.5", "10s", "soon"] {
            assert_eq!(parse(garbage, now), None, "{garbage:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,64}") {
            let _ = parse(&text, SystemTime::now());
        }
    }
}
