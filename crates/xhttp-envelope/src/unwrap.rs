//! [`unwrap`]: how one response is read as an envelope, sliced without a copy.

use std::fmt;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Response};
use serde_json::value::RawValue;
use xhttp_core::error::MAX_TEXT_LEN;
use xhttp_core::json::{business_code, describe_error};
use xhttp_core::mask::server_text;
use xhttp_core::{BusinessCode, Error};

use crate::Envelope;

/// The envelope's code and message, kept on a successful response whose body is now the data.
///
/// ```
/// use bytes::Bytes;
/// use xhttp_envelope::{unwrap, Envelope, EnvelopeMeta};
///
/// let body = Bytes::from_static(br#"{"code":0,"message":"ok","result":1}"#);
/// let mut response = http::Response::new(body);
/// response.headers_mut().insert("content-type", "application/json".parse().unwrap());
/// let data = unwrap(response, &Envelope::vben()).unwrap();
/// let meta = data.extensions().get::<EnvelopeMeta>().unwrap();
/// assert_eq!(meta.message.as_deref(), Some("ok"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvelopeMeta {
    /// The success code.
    pub code: BusinessCode,
    /// The message, when the envelope had one.
    pub message: Option<String>,
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// Unwraps one response as the envelope says.
///
/// ```
/// use bytes::Bytes;
/// use xhttp_envelope::{unwrap, Envelope};
/// let mut response = http::Response::new(Bytes::from_static(br#"{"Code":200,"Msg":"ok","Data":[1,2]}"#));
/// response.headers_mut().insert("content-type", "application/json; charset=utf-8".parse().unwrap());
/// let data = unwrap(response, &Envelope::pascal()).unwrap();
/// assert_eq!(data.body(), "[1,2]");
/// ```
pub fn unwrap(response: Response<Bytes>, envelope: &Envelope) -> Result<Response<Bytes>, Error> {
    if !response.status().is_success() || !is_json(response.headers()) {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    // One pass over the top-level object; deeper fields are parsed only along their path.
    let fields = match std::str::from_utf8(&body).map(serde_json::from_str::<Fields<'_>>) {
        Ok(Ok(fields)) => fields,
        Ok(Err(err)) => {
            // Valid JSON that is not an object is not an envelope; broken JSON is an error.
            if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
                return Ok(Response::from_parts(parts, body));
            }
            return Err(broken(&parts, &body, &describe_error(&err)));
        }
        Err(err) => {
            let why = format!("invalid UTF-8 at byte {}", err.valid_up_to());
            return Err(broken(&parts, &body, &why));
        }
    };
    let lookup = |pointer: &[String]| -> Option<&RawValue> {
        let (first, rest) = pointer.split_first()?;
        // A name given twice reads as serde_json reads it: the last one wins.
        let value = fields.0.iter().rev().find(|(name, _)| name == first)?.1;
        find(value, rest)
    };
    let code = match lookup(&envelope.code).and_then(code_of) {
        Some(code) => code,
        // JSON, but not an envelope: nothing to unwrap.
        None => return Ok(Response::from_parts(parts, body)),
    };
    let message =
        lookup(&envelope.message).and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    if !envelope.is_success(&code) {
        let err = Error::business(code, message.unwrap_or_default()).with_status(parts.status);
        return Err(err);
    }
    let data = match lookup(&envelope.data) {
        Some(raw) => body.slice_ref(raw.get().as_bytes()),
        None => Bytes::from_static(b"null"),
    };
    parts.extensions.insert(EnvelopeMeta { code, message });
    Ok(Response::from_parts(parts, data))
}

/// The value at `pointer` in `root`, borrowed from the original bytes.
fn find<'a>(root: &'a RawValue, pointer: &[String]) -> Option<&'a RawValue> {
    let mut current = root;
    for token in pointer {
        let text = current.get();
        current = match text.as_bytes().first() {
            Some(b'{') => {
                let fields: Vec<(std::borrow::Cow<'a, str>, &'a RawValue)> =
                    serde_json::from_str::<Fields<'a>>(text).ok()?.0;
                fields.into_iter().rev().find(|(name, _)| name == token)?.1
            }
            Some(b'[') => {
                let index = xhttp_core::json::array_index(token)?;
                let items: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
                items.get(index).copied()?
            }
            _ => return None,
        };
    }
    Some(current)
}

/// An object's fields in order, names borrowed when they have no escapes.
struct Fields<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Fields<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Fields<'a>, M::Error> {
                let mut fields = Vec::new();
                while let Some(name) = map.next_key::<CowStr<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((name.0, value));
                }
                Ok(Fields(fields))
            }
        }

        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// A string borrowed from the input when possible.
struct CowStr<'a>(std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CowStr<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, value: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(std::borrow::Cow::Borrowed(value)))
            }

            fn visit_str<E>(self, value: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(std::borrow::Cow::Owned(value.to_string())))
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

/// A code as a number or a string, normalised by core's one rule; anything else is no code.
fn code_of(raw: &RawValue) -> Option<BusinessCode> {
    match raw.get().as_bytes().first()? {
        b'"' | b'-' | b'0'..=b'9' => {
            business_code(&serde_json::from_str::<serde_json::Value>(raw.get()).ok()?)
        }
        _ => None,
    }
}

/// A body that claims JSON and is not: status, content type, where it broke (`why`, never
/// serde's message), and as much of the body's beginning as the error keeps, masked.
fn broken(parts: &http::response::Parts, body: &Bytes, why: &str) -> Error {
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let head = format!("{content_type} body is not valid JSON ({why}); it begins: ");
    // The excerpt is masked here, before the error's own pass over the whole message, so that
    // the cap cuts masked text and the excerpt gets all the room the head leaves.
    let room = MAX_TEXT_LEN.saturating_sub(head.len());
    let excerpt = server_text(&String::from_utf8_lossy(body), room);
    Error::decode(head + &excerpt).with_status(parts.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &'static str) -> Response<Bytes> {
        let mut response = Response::new(Bytes::from_static(body.as_bytes()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, "application/json".parse().unwrap());
        response
    }

    #[test]
    fn data_is_a_slice_of_the_original_buffer() {
        let response = json(r#"{"code":0,"message":"ok","result":{"items":[1,2,3]}}"#);
        let start = response.body().as_ptr() as usize;
        let data = unwrap(response, &Envelope::vben()).unwrap();
        assert_eq!(data.body(), r#"{"items":[1,2,3]}"#);
        let offset = data.body().as_ptr() as usize - start;
        assert_eq!(offset, r#"{"code":0,"message":"ok","result":"#.len());
    }

    #[test]
    fn pointers_reach_nested_fields_and_array_items() {
        let response = json(r#"{"meta":{"code":"OK","info":["first","second"]},"payload":"x"}"#);
        let envelope =
            Envelope::new("/meta/code", "/meta/info/1", "/payload").success_codes(["OK"]);
        let data = unwrap(response, &envelope).unwrap();
        assert_eq!(data.body(), r#""x""#);
        let meta = data.extensions().get::<EnvelopeMeta>().unwrap();
        assert_eq!(meta.message.as_deref(), Some("second"));
    }

    #[test]
    fn an_array_index_is_read_as_serde_json_reads_it() {
        let root: Box<RawValue> = serde_json::from_str(r#"{"info":["first","second"]}"#).unwrap();
        let at = |pointer: &str| {
            let tokens = xhttp_core::json::pointer_tokens(pointer);
            find(&root, &tokens).map(|value| value.get().to_owned())
        };
        let value: serde_json::Value = serde_json::from_str(root.get()).unwrap();
        for pointer in ["/info/1", "/info/01", "/info/+1", "/info/-0", "/info/2"] {
            assert_eq!(
                at(pointer),
                value.pointer(pointer).map(|v| v.to_string()),
                "{pointer}"
            );
        }
    }

    #[test]
    fn string_and_number_codes_are_one_code() {
        let envelope = Envelope::vben();
        assert!(unwrap(json(r#"{"code":"0","result":1}"#), &envelope).is_ok());
        let err = unwrap(
            json(r#"{"code":"40009","message":"token expired"}"#),
            &envelope,
        )
        .unwrap_err();
        assert_eq!(err.business_code(), Some(&BusinessCode::Int(40009)));
    }

    #[test]
    fn a_float_code_and_a_duplicate_key_read_as_serde_json_reads_them() {
        let envelope = Envelope::vben();
        let err = unwrap(json(r#"{"code":40009.0,"message":"expired"}"#), &envelope).unwrap_err();
        assert_eq!(err.business_code(), Some(&BusinessCode::Int(40009)));
        // A code given twice: the last one wins, as in serde_json, so a failure never hides
        // behind an earlier success code.
        let err = unwrap(json(r#"{"code":0,"code":40009,"result":1}"#), &envelope).unwrap_err();
        assert_eq!(err.business_code(), Some(&BusinessCode::Int(40009)));
        let ok = unwrap(
            json(r#"{"code":1,"code":0,"result":2,"result":3}"#),
            &envelope,
        )
        .unwrap();
        let value: serde_json::Value =
            serde_json::from_str(r#"{"code":1,"code":0,"result":2,"result":3}"#).unwrap();
        assert_eq!(ok.body().as_ref(), value["result"].to_string().as_bytes());
    }

    #[test]
    fn escaped_field_names_are_found() {
        let response = json(r#"{"co\u0064e":0,"result":true}"#);
        assert_eq!(unwrap(response, &Envelope::vben()).unwrap().body(), "true");
    }

    #[test]
    fn the_payload_is_never_altered() {
        let body =
            r#"{"code":0,"result":{"name":"  spaced  ","when":"2024-01-01 00:00:00","n":1.50}}"#;
        let data = unwrap(json(body), &Envelope::vben()).unwrap();
        assert_eq!(
            data.body(),
            r#"{"name":"  spaced  ","when":"2024-01-01 00:00:00","n":1.50}"#
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let mut response = Response::new(Bytes::from(body));
            response.headers_mut().insert(CONTENT_TYPE, "application/json".parse().unwrap());
            let _ = unwrap(response, &Envelope::vben());
        }
    }
}
