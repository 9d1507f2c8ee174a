//! What makes two requests "the same": compared by value, never by a hash alone.
//!
//! The policy lives here: which headers and which request extensions are part of a request's
//! identity, which are known not to change the response, and which requests cannot be keyed
//! at all (and so are sent on their own).

use std::any::{Any, TypeId};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::Arc;

use http::{Extensions, HeaderName, HeaderValue, Method, Request, Uri};
use xhttp_core::body::{BodyKey, RequestBody};

use crate::{CancelScope, DedupeOverride};

/// Per-request option: who the caller is, for callers that share a client but must never
/// share a response (the users of a multi-tenant service). Requests with different
/// identities never coalesce.
///
/// Its `Debug` does not print the name: an identity may be derived from a credential.
///
/// ```
/// use xhttp_dedupe::Identity;
/// let request = http::Request::get("https://api.example.com/me")
///     .extension(Identity("tenant-7".into()))
///     .body(())
///     .unwrap();
/// assert!(!format!("{:?}", Identity("tenant-7".into())).contains("tenant-7"));
/// # drop(request);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity(pub std::sync::Arc<str>);

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Identity(..)")
    }
}

/// Request headers that never change a response: request ids and trace context, new on every
/// call, which would otherwise keep any two calls apart. Everything else is in the key.
///
/// W3C Trace Context (`traceparent`, `tracestate`), Zipkin B3 (single and multi header), Sentry,
/// AWS X-Ray and the usual request and correlation ids. `baggage` is deliberately *not* here: it
/// carries application values (a tenant, a feature flag) that servers may act on.
///
/// ```
/// assert!(xhttp_dedupe::DEFAULT_IGNORED_HEADERS.contains(&"traceparent"));
/// assert!(!xhttp_dedupe::DEFAULT_IGNORED_HEADERS.contains(&"baggage"));
/// ```
pub const DEFAULT_IGNORED_HEADERS: &[&str] = &[
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "sentry-trace",
    "x-amzn-trace-id",
    "x-request-id",
    "x-correlation-id",
    "request-id",
];

/// Headers that carry credentials or name the caller: always in the key, whatever the
/// builder says ([`ignore_header`](crate::DedupeLayerBuilder::ignore_header) refuses them).
/// A header value marked sensitive ([`HeaderValue::set_sensitive`]) is always in the key too.
///
/// ```
/// assert!(xhttp_dedupe::CREDENTIAL_HEADERS.contains(&"x-api-key"));
/// ```
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-amz-security-token",
];

/// A keyed extension's value, with its type erased: compared and hashed by value.
pub(crate) trait ExtensionValue: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn eq_value(&self, other: &dyn ExtensionValue) -> bool;
    fn hash_value(&self, state: &mut dyn Hasher);
}

impl<K: Eq + Hash + Send + Sync + 'static> ExtensionValue for K {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn eq_value(&self, other: &dyn ExtensionValue) -> bool {
        other.as_any().downcast_ref::<K>() == Some(self)
    }

    fn hash_value(&self, mut state: &mut dyn Hasher) {
        self.hash(&mut state);
    }
}

/// Reads one extension type's part of the key: `None` when the request does not carry it.
type Project = dyn Fn(&Extensions) -> Option<Arc<dyn ExtensionValue>> + Send + Sync;

/// A user-declared extension type and what it means for the key.
#[derive(Clone)]
pub(crate) struct ExtensionRule {
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
    pub(crate) kind: RuleKind,
}

#[derive(Clone)]
pub(crate) enum RuleKind {
    /// Known not to change the outcome: only counted as accounted for.
    Neutral(Arc<dyn Fn(&Extensions) -> bool + Send + Sync>),
    /// Part of the key, by the projected value.
    Keyed(Arc<Project>),
}

impl ExtensionRule {
    pub(crate) fn neutral<T: Send + Sync + 'static>() -> Self {
        ExtensionRule {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
            kind: RuleKind::Neutral(Arc::new(|extensions| extensions.get::<T>().is_some())),
        }
    }

    pub(crate) fn keyed<T, K>(project: impl Fn(&T) -> K + Send + Sync + 'static) -> Self
    where
        T: Send + Sync + 'static,
        K: Eq + Hash + Send + Sync + 'static,
    {
        ExtensionRule {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
            kind: RuleKind::Keyed(Arc::new(move |extensions| {
                extensions
                    .get::<T>()
                    .map(|value| Arc::new(project(value)) as Arc<dyn ExtensionValue>)
            })),
        }
    }
}

/// The extension types the layer accounts for on its own: they cannot be redeclared.
pub(crate) fn is_built_in(type_id: TypeId) -> bool {
    [
        TypeId::of::<Identity>(),
        TypeId::of::<DedupeOverride>(),
        TypeId::of::<CancelScope>(),
        TypeId::of::<xhttp_core::BodyLimit>(),
        TypeId::of::<xhttp_core::Deadline>(),
    ]
    .contains(&type_id)
}

/// What the layer knows about headers and extensions, fixed when it is built.
#[derive(Clone)]
pub(crate) struct KeyRules {
    /// Header names left out of the key (values marked sensitive are kept anyway).
    pub(crate) ignored: Vec<HeaderName>,
    pub(crate) extensions: Vec<ExtensionRule>,
    pub(crate) body_cap: usize,
}

impl Default for KeyRules {
    /// The default ignore list, no declared extension, bodies up to 64 KiB (a JSON query or
    /// a search form; larger bodies are uploads, which are not deduplicated).
    fn default() -> Self {
        KeyRules {
            ignored: DEFAULT_IGNORED_HEADERS
                .iter()
                .map(|name| HeaderName::from_static(name))
                .collect(),
            extensions: Vec::new(),
            body_cap: 64 * 1024,
        }
    }
}

impl KeyRules {
    fn ignores(&self, name: &HeaderName, value: &HeaderValue) -> bool {
        !value.is_sensitive() && self.ignored.contains(name)
    }
}

/// Two requests with equal keys are the same request. Compared field by field; the hash
/// (SipHash with the layer's random keys) is computed once, when the key is made, and the map
/// reuses it for its lookup, insert and remove.
#[derive(Clone)]
pub(crate) struct Key {
    hash: u64,
    parts: Parts,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Parts {
    method: Method,
    uri: Uri,
    body: BodyKey,
    /// Every header not ignored, sorted by name; several values of one name keep their order
    /// (the sort is stable), since `Accept: a, b` and `Accept: b, a` may be answered apart.
    headers: Vec<(HeaderName, HeaderValue)>,
    identity: Option<Identity>,
    /// A caller with a smaller body limit must not get a larger body through another's trip.
    limit: Option<xhttp_core::BodyLimit>,
    /// The keyed extensions present, by their rule's position.
    extensions: Vec<(usize, ErasedValue)>,
}

#[derive(Clone)]
struct ErasedValue(Arc<dyn ExtensionValue>);

impl PartialEq for ErasedValue {
    fn eq(&self, other: &ErasedValue) -> bool {
        self.0.eq_value(other.0.as_ref())
    }
}

impl Eq for ErasedValue {}

impl Hash for ErasedValue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash_value(state);
    }
}

impl fmt::Debug for Key {
    /// Names only: header values, the body, the identity and the query may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.parts.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Key")
            .field("method", &self.parts.method)
            .field("path", &self.parts.uri.path())
            .field("headers", &names)
            .field("identity", &self.parts.identity.is_some())
            .field("limit", &self.parts.limit)
            .finish_non_exhaustive()
    }
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

/// Why a request has no key, and is sent on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoKey {
    /// A streaming body, or one over the cap.
    Body,
    /// An extension the layer does not account for: it might change the outcome.
    UnknownExtension,
}

impl Key {
    /// The key of `request`, or why it has none. `shares_outcome`: the key is for coalescing,
    /// where an unknown extension means no key; cancel-previous and reject-duplicate share no
    /// response, and key such a request as if the extension were not there.
    pub(crate) fn of<B: RequestBody>(
        request: &Request<B>,
        rules: &KeyRules,
        identity: Option<&IdentityFn>,
        random: &RandomState,
        shares_outcome: bool,
    ) -> Result<Key, NoKey> {
        let body = match request.body().body_key() {
            BodyKey::Bytes(bytes) if bytes.len() > rules.body_cap => return Err(NoKey::Body),
            BodyKey::Unknown => return Err(NoKey::Body),
            body => body,
        };
        let ext = request.extensions();
        let mut own_identity = None;
        let mut limit = None;
        let mut extensions = Vec::new();
        // Every extension the request carries must be accounted for, one by one.
        if !ext.is_empty() {
            let mut known = 0;
            own_identity = ext.get::<Identity>().cloned();
            limit = ext.get::<xhttp_core::BodyLimit>().copied();
            known += usize::from(own_identity.is_some()) + usize::from(limit.is_some());
            // Neutral: the policy is chosen from it, each caller's scope ends only its own
            // wait, and a follower waits no longer than its own deadline.
            known += usize::from(ext.get::<DedupeOverride>().is_some())
                + usize::from(ext.get::<CancelScope>().is_some())
                + usize::from(ext.get::<xhttp_core::Deadline>().is_some());
            for (position, rule) in rules.extensions.iter().enumerate() {
                match &rule.kind {
                    RuleKind::Neutral(present) => known += usize::from(present(ext)),
                    RuleKind::Keyed(project) => {
                        if let Some(value) = project(ext) {
                            known += 1;
                            extensions.push((position, ErasedValue(value)));
                        }
                    }
                }
            }
            if shares_outcome && ext.len() > known {
                return Err(NoKey::UnknownExtension);
            }
        }
        let mut headers = Vec::with_capacity(request.headers().len());
        for (name, value) in request.headers() {
            if !rules.ignores(name, value) {
                headers.push((name.clone(), value.clone()));
            }
        }
        // `HeaderMap` yields the values of one name together and in order; a stable sort by
        // name makes the order of names irrelevant and keeps the order of values.
        headers.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        let parts = Parts {
            method: request.method().clone(),
            uri: request.uri().clone(),
            body,
            headers,
            identity: own_identity.or_else(|| identity.and_then(|name| name(ext))),
            limit,
            extensions,
        };
        Ok(Key {
            hash: random.hash_one(&parts),
            parts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    static RANDOM: std::sync::LazyLock<RandomState> = std::sync::LazyLock::new(RandomState::new);

    fn rules() -> KeyRules {
        KeyRules::default()
    }

    fn key(request: Request<xhttp_core::Body>) -> Result<Key, NoKey> {
        Key::of(&request, &rules(), None, &RANDOM, true)
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
            base()
                .header("x-tenant", "b")
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
    fn full_bodies_key_by_their_bytes() {
        let post = |body: &'static str| {
            let request = Request::post("https://a.example/search")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            Key::of(&request, &rules(), None, &RANDOM, true)
        };
        assert_eq!(
            post(r#"{"q":"pen"}"#).unwrap(),
            post(r#"{"q":"pen"}"#).unwrap()
        );
        assert_ne!(
            post(r#"{"q":"pen"}"#).unwrap(),
            post(r#"{"q":"ink"}"#).unwrap()
        );
        // The same bytes in xhttp's own body make the same key.
        let own = Request::post("https://a.example/search")
            .body(xhttp_core::Body::from(r#"{"q":"pen"}"#))
            .unwrap();
        assert_eq!(key(own).unwrap(), post(r#"{"q":"pen"}"#).unwrap());
        let boxed = Request::post("https://a.example/search")
            .body(
                Full::new(Bytes::from_static(b"x"))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap();
        assert_eq!(
            Key::of(&boxed, &rules(), None, &RANDOM, true).unwrap_err(),
            NoKey::Body
        );
    }

    #[test]
    fn streaming_and_large_bodies_and_unknown_extensions_have_no_key() {
        let big = Request::post("https://a.example/")
            .body(xhttp_core::Body::from(vec![0u8; 64 * 1024 + 1]))
            .unwrap();
        assert_eq!(key(big).unwrap_err(), NoKey::Body);
        let stream = Request::post("https://a.example/")
            .body(xhttp_core::Body::replayable(
                http_body_util::Full::new(Bytes::from_static(b"x")),
                10,
            ))
            .unwrap();
        assert_eq!(key(stream).unwrap_err(), NoKey::Body);
        #[derive(Clone)]
        struct Unknown;
        let unknown = Request::get("https://a.example/")
            .extension(Unknown)
            .extension(xhttp_core::BodyLimit(8))
            .body(xhttp_core::Body::empty())
            .unwrap();
        assert_eq!(key(unknown).unwrap_err(), NoKey::UnknownExtension);
    }

    #[test]
    fn the_key_debug_prints_no_value() {
        let request = Request::get("https://a.example/x?token=SECRET-KEY-query")
            .header("x-api-key", "SECRET-KEY-tenantA")
            .extension(Identity("SECRET-KEY-identity".into()))
            .body(xhttp_core::Body::from("SECRET-KEY-body"))
            .unwrap();
        let printed = format!("{:?}", key(request).unwrap());
        assert!(printed.contains("x-api-key"), "{printed}");
        assert!(!printed.contains("SECRET"), "{printed}");
    }
}
