//! [`StoredTokens`] to and from the fields of the token hash, refusing what could not be sent.

use std::time::{Duration, UNIX_EPOCH};

use redis::Value;
use xhttp_auth::{Secret, StoredTokens};
use xhttp_core::{Error, ErrorKind};

/// The most bytes a field of the token hash may hold: a token longer than this is not one a
/// client sends, and reading it would let a hostile store make the client allocate at will.
pub(crate) const MAX_FIELD_LEN: usize = 16 * 1024;

/// The script arguments 3 to 6 of a write: access, refresh, expiry in Unix milliseconds,
/// login; an empty string for a missing one.
pub(crate) fn fields(tokens: &StoredTokens) -> [String; 4] {
    let expiry = tokens
        .expires_at
        .map(|at| {
            let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
            u64::try_from(since.as_millis())
                .unwrap_or(u64::MAX)
                .to_string()
        })
        .unwrap_or_default();
    [
        tokens.access_token.expose().to_owned(),
        tokens
            .refresh_token
            .as_ref()
            .map(|t| t.expose().to_owned())
            .unwrap_or_default(),
        expiry,
        tokens.session.clone().unwrap_or_default(),
    ]
}

/// The tokens of an `HGETALL` answer (a flat array of field, value, or a map on RESP3):
/// `None` for an empty hash. A field that is too long, not text, or an access token that is
/// missing or empty is a `Decode` error that never quotes the value.
pub(crate) fn decode(value: Value) -> Result<Option<StoredTokens>, Error> {
    let pairs: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(None),
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(corrupt("the token hash answer has an odd number of items"));
            }
            let mut items = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                pairs.push((name, value));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        _ => return Err(corrupt("the token hash answer is not a hash")),
    };
    if pairs.is_empty() {
        return Ok(None);
    }
    let (mut access, mut refresh, mut expiry, mut session) = (None, None, None, None);
    for (name, value) in pairs {
        let name = text(name, "a field name")?;
        let value = text(value, "a field")?;
        match name.as_str() {
            "x" => return Err(ended()),
            "a" => access = Some(value),
            "r" => refresh = Some(value),
            "e" => expiry = Some(value),
            "s" => session = Some(value),
            // Fields a later version may add are not this version's business.
            _ => {}
        }
    }
    let access = access
        .filter(|a| !a.is_empty())
        .ok_or_else(|| corrupt("the token hash has no access token"))?;
    let expires_at = match expiry.filter(|e| !e.is_empty()) {
        None => None,
        Some(ms) => {
            let ms: u64 = ms
                .parse()
                .map_err(|_| corrupt("the token hash's expiry is not a number of milliseconds"))?;
            Some(
                UNIX_EPOCH
                    .checked_add(Duration::from_millis(ms))
                    .ok_or_else(|| corrupt("the token hash's expiry is out of range"))?,
            )
        }
    };
    Ok(Some(StoredTokens {
        access_token: Secret::from(access),
        refresh_token: refresh.filter(|r| !r.is_empty()).map(Secret::from),
        expires_at,
        session: session.filter(|s| !s.is_empty()),
    }))
}

/// A bulk string as text, refusing one over [`MAX_FIELD_LEN`] or not UTF-8.
fn text(value: Value, what: &str) -> Result<String, Error> {
    let bytes = match value {
        Value::BulkString(bytes) => bytes,
        Value::SimpleString(text) => text.into_bytes(),
        _ => {
            return Err(corrupt(&format!(
                "{what} of the token hash is not a string"
            )))
        }
    };
    if bytes.len() > MAX_FIELD_LEN {
        return Err(corrupt(&format!(
            "{what} of the token hash is longer than {MAX_FIELD_LEN} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| corrupt(&format!("{what} of the token hash is not UTF-8")))
}

/// The mark of [`scripts::END`](crate::scripts::END): the session is over for the fleet.
fn ended() -> Error {
    Error::new(ErrorKind::SessionExpired).with_message(
        "the session was ended by a process sharing the Redis token store (a logout, or a \
         refresh token the server refused): log in again",
    )
}

fn corrupt(why: &str) -> Error {
    Error::decode(format!(
        "the Redis token store holds no valid tokens: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn round_trips_through_the_hash_fields() {
        let tokens = StoredTokens {
            access_token: Secret::new("SECRET-AT-1"),
            refresh_token: Some(Secret::new("SECRET-RT-1")),
            expires_at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            session: Some("login-1".to_owned()),
        };
        let [a, r, e, s] = fields(&tokens);
        let answer = Value::Array(vec![
            bulk("a"),
            bulk(&a),
            bulk("r"),
            bulk(&r),
            bulk("e"),
            bulk(&e),
            bulk("s"),
            bulk(&s),
        ]);
        assert_eq!(decode(answer).unwrap(), Some(tokens));
    }

    #[test]
    fn missing_fields_are_none_and_an_empty_hash_is_nothing_stored() {
        let answer = Value::Array(vec![bulk("a"), bulk("only-access")]);
        let tokens = decode(answer).unwrap().unwrap();
        assert_eq!(tokens.refresh_token, None);
        assert_eq!(tokens.expires_at, None);
        assert_eq!(tokens.session, None);
        assert_eq!(decode(Value::Array(vec![])).unwrap(), None);
        assert_eq!(decode(Value::Nil).unwrap(), None);
    }

    #[test]
    fn the_end_mark_is_session_expired() {
        let answer = Value::Array(vec![bulk("x"), bulk("ended")]);
        assert_eq!(
            decode(answer).unwrap_err().kind(),
            ErrorKind::SessionExpired
        );
    }

    #[test]
    fn corrupt_hashes_are_decode_errors_that_never_quote_the_value() {
        let cases = [
            Value::Array(vec![bulk("r"), bulk("SECRET-RT-9")]),
            Value::Array(vec![
                bulk("a"),
                bulk("SECRET-AT-9"),
                bulk("e"),
                bulk("SECRET-E"),
            ]),
            Value::Array(vec![bulk("a")]),
            Value::Array(vec![bulk("a"), Value::BulkString(vec![0xff, 0xfe])]),
            Value::Array(vec![bulk("a"), bulk(&"x".repeat(MAX_FIELD_LEN + 1))]),
            Value::Int(3),
        ];
        for case in cases {
            let err = decode(case).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode);
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(!shown.contains("xxxxxxxx"), "{shown}");
        }
    }
}
