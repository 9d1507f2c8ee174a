//! What makes two requests "the same": compared by value, never by a hash alone.

use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, AUTHORIZATION, COOKIE};
use http::{HeaderName, HeaderValue, Method, Request, Uri};

/// The request body as the dedupe key sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BodyKey {
    /// No body, or an empty one.
    Empty,
    /// All the body's bytes, known up front and under the layer's cap.
    Bytes(Bytes),
    /// A streaming body, or one over the cap: such a request is never deduplicated.
    Unknown,
}

/// A request body whose bytes the dedupe key can read without consuming it.
///
/// ```
/// use xhttp_dedupe::{BodyKey, KeyBody};
/// assert_eq!(xhttp_core::Body::empty().body_key(), BodyKey::Empty);
/// assert!(matches!(xhttp_core::Body::from("q=1").body_key(), BodyKey::Bytes(_)));
/// ```
pub trait KeyBody {
    /// The body for the key.
    fn body_key(&self) -> BodyKey;
}

impl KeyBody for xhttp_core::Body {
    fn body_key(&self) -> BodyKey {
        match self.as_bytes() {
            Some(bytes) if bytes.is_empty() => BodyKey::Empty,
            Some(bytes) => BodyKey::Bytes(bytes.clone()),
            None => BodyKey::Unknown,
        }
    }
}

impl KeyBody for () {
    fn body_key(&self) -> BodyKey {
        BodyKey::Empty
    }
}

impl KeyBody for Bytes {
    fn body_key(&self) -> BodyKey {
        if self.is_empty() {
            BodyKey::Empty
        } else {
            BodyKey::Bytes(self.clone())
        }
    }
}

impl KeyBody for String {
    fn body_key(&self) -> BodyKey {
        Bytes::copy_from_slice(self.as_bytes()).body_key()
    }
}

/// Per-request option: who the caller is, for callers that share a client but must never
/// share a response (the users of a multi-tenant service). Requests with different
/// identities never coalesce.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity(pub std::sync::Arc<str>);

/// The headers that change a response, and those that name the caller: part of the key by
/// default.
pub(crate) const DEFAULT_KEY_HEADERS: [HeaderName; 5] = [
    ACCEPT,
    ACCEPT_ENCODING,
    ACCEPT_LANGUAGE,
    AUTHORIZATION,
    COOKIE,
];

/// Two requests with equal keys are the same request. Compared field by field; the hash
/// (SipHash with the layer's random keys) is computed once, when the key is made, and the map
/// reuses it for its lookup, insert and remove.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    hash: u64,
    parts: Parts,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Parts {
    method: Method,
    uri: Uri,
    body: BodyKey,
    /// The key headers present on the request, by their position in the layer's list; most
    /// requests carry none, and then this costs no allocation.
    headers: Vec<(usize, HeaderValue)>,
    identity: Option<Identity>,
    /// A caller with a smaller body limit must not get a larger body through another's trip.
    limit: Option<xhttp_core::BodyLimit>,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.hash == other.hash && self.parts == other.parts
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The map's hasher: the key already carries its SipHash, so this passes it through.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Key`; fold anything else in, to stay a valid hasher.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The map type: keys hashed once, with the layer's random SipHash keys.
pub(crate) type KeyMap<V> = std::collections::HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

/// Names the caller of a request from its extensions (the facade derives it from the token
/// manager's session and `SkipAuth`).
pub(crate) type IdentityFn = dyn Fn(&http::Extensions) -> Option<Identity> + Send + Sync;

impl Key {
    /// The key of `request`; `None` when it cannot be deduplicated (a streaming body, a body
    /// over `body_cap`, a header with several values).
    pub(crate) fn of<B: KeyBody>(
        request: &Request<B>,
        headers: &[HeaderName],
        body_cap: usize,
        identity: Option<&IdentityFn>,
        random: &RandomState,
    ) -> Option<Key> {
        let body = match request.body().body_key() {
            BodyKey::Bytes(bytes) if bytes.len() > body_cap => return None,
            BodyKey::Unknown => return None,
            body => body,
        };
        let mut values = Vec::new();
        if !request.headers().is_empty() {
            for (position, name) in headers.iter().enumerate() {
                let mut all = request.headers().get_all(name).iter();
                if let Some(first) = all.next() {
                    if all.next().is_some() {
                        return None;
                    }
                    values.push((position, first.clone()));
                }
            }
        }
        let parts = Parts {
            method: request.method().clone(),
            uri: request.uri().clone(),
            body,
            headers: values,
            identity: match request.extensions().get::<Identity>() {
                Some(own) => Some(own.clone()),
                None => identity.and_then(|name| name(request.extensions())),
            },
            limit: request.extensions().get::<xhttp_core::BodyLimit>().copied(),
        };
        Some(Key {
            hash: random.hash_one(&parts),
            parts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static RANDOM: std::sync::LazyLock<RandomState> = std::sync::LazyLock::new(RandomState::new);

    fn key(request: Request<xhttp_core::Body>) -> Option<Key> {
        Key::of(&request, &DEFAULT_KEY_HEADERS, 64 * 1024, None, &RANDOM)
    }

    #[test]
    fn keys_differ_by_every_part() {
        let base = || Request::get("https://a.example/x?q=1");
        let plain = key(base().body(xhttp_core::Body::empty()).unwrap()).unwrap();
        assert_eq!(
            plain,
            key(base().body(xhttp_core::Body::empty()).unwrap()).unwrap()
        );
        let variants = [
            Request::get("https://a.example/x?q=2").body(xhttp_core::Body::empty()),
            Request::head("https://a.example/x?q=1").body(xhttp_core::Body::empty()),
            base()
                .header("accept-language", "zh-CN")
                .body(xhttp_core::Body::empty()),
            base()
                .header("authorization", "Bearer other")
                .body(xhttp_core::Body::empty()),
            base().body(xhttp_core::Body::from("x")),
            base()
                .extension(Identity("tenant-2".into()))
                .body(xhttp_core::Body::empty()),
            base()
                .extension(xhttp_core::BodyLimit(8))
                .body(xhttp_core::Body::empty()),
        ];
        for variant in variants {
            assert_ne!(key(variant.unwrap()).unwrap(), plain);
        }
    }

    #[test]
    fn streaming_large_and_ambiguous_requests_have_no_key() {
        let big = Request::post("https://a.example/")
            .body(xhttp_core::Body::from(vec![0u8; 64 * 1024 + 1]))
            .unwrap();
        assert!(key(big).is_none());
        let stream = Request::post("https://a.example/")
            .body(xhttp_core::Body::replayable(
                http_body_util::Full::new(Bytes::from_static(b"x")),
                10,
            ))
            .unwrap();
        assert!(key(stream).is_none());
        let twice = Request::get("https://a.example/")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(xhttp_core::Body::empty())
            .unwrap();
        assert!(key(twice).is_none());
    }
}
