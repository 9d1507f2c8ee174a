//! The configuration: the [`Envelope`] dialect, the [`EnvelopeLayer`] that applies it, and the
//! per-request [`SkipEnvelope`].

use std::fmt;
use std::sync::Arc;

use tower::Layer;
use xhttp_core::json::{normalize, pointer_tokens};
use xhttp_core::BusinessCode;

use crate::UnwrapEnvelope;

/// Per-request option: skip the envelope layer, returning the whole response, envelope and
/// all (vben's `isReturnNativeResponse`). Also exported under its former name, `RawResponse`.
///
/// ```
/// let request = http::Request::get("https://api.example.com/export")
///     .extension(xhttp_envelope::SkipEnvelope)
///     .body(())
///     .unwrap();
/// # drop(request);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipEnvelope;

type SuccessPredicate = Arc<dyn Fn(&BusinessCode) -> bool + Send + Sync>;

/// Where an envelope keeps its code, message and data, and which codes mean success.
///
/// Locations are field names (`"code"`) or JSON pointers (`"/meta/code"`), read as
/// [`xhttp_core::json::pointer`] reads them.
///
/// ```
/// use xhttp_envelope::Envelope;
/// let dialect = Envelope::new("/status/code", "/status/text", "/payload").success_codes(["OK"]);
/// # drop(dialect);
/// ```
#[derive(Clone)]
#[must_use]
pub struct Envelope {
    pub(crate) code: Vec<String>,
    pub(crate) message: Vec<String>,
    pub(crate) data: Vec<String>,
    success: Success,
}

#[derive(Clone)]
enum Success {
    Codes(Vec<BusinessCode>),
    Predicate(SuccessPredicate),
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Envelope");
        d.field("code", &self.code)
            .field("message", &self.message)
            .field("data", &self.data);
        match &self.success {
            Success::Codes(codes) => d.field("success", codes),
            Success::Predicate(_) => d.field("success", &"<predicate>"),
        };
        d.finish()
    }
}

impl Envelope {
    /// An envelope with its code, message and data at these locations; success code `0`.
    pub fn new(code: &str, message: &str, data: &str) -> Envelope {
        Envelope {
            code: pointer_tokens(code),
            message: pointer_tokens(message),
            data: pointer_tokens(data),
            success: Success::Codes(vec![BusinessCode::Int(0)]),
        }
    }

    /// vue-vben-admin's `{"code":0,"message":"..","result":..}`, success code 0.
    pub fn vben() -> Envelope {
        Envelope::new("code", "message", "result")
    }

    /// The `formatResponse` shape of some axios wrappers: `{"Code":200,"Msg":"..","Data":..}`, success 200.
    pub fn pascal() -> Envelope {
        Envelope::new("Code", "Msg", "Data").success_codes([200])
    }

    /// `{"code":200,"msg":"..","data":..}`, success 200.
    pub fn msg_data() -> Envelope {
        Envelope::new("code", "msg", "data").success_codes([200])
    }

    /// The codes that mean success (numbers and strings; `"0"` and `0` are the same code).
    pub fn success_codes<C: Into<BusinessCode>>(
        mut self,
        codes: impl IntoIterator<Item = C>,
    ) -> Self {
        self.success = Success::Codes(codes.into_iter().map(|c| normalize(c.into())).collect());
        self
    }

    /// A predicate over the code instead of a set.
    pub fn success_if(
        mut self,
        predicate: impl Fn(&BusinessCode) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.success = Success::Predicate(Arc::new(predicate));
        self
    }

    pub(crate) fn is_success(&self, code: &BusinessCode) -> bool {
        match &self.success {
            Success::Codes(codes) => codes.contains(code),
            Success::Predicate(predicate) => predicate(code),
        }
    }
}

/// Unwraps envelopes; see the [crate docs](crate).
#[derive(Debug, Clone)]
#[must_use]
pub struct EnvelopeLayer {
    envelope: Arc<Envelope>,
}

impl EnvelopeLayer {
    /// A layer for this envelope dialect.
    pub fn new(envelope: Envelope) -> Self {
        EnvelopeLayer {
            envelope: Arc::new(envelope),
        }
    }
}

impl<S> Layer<S> for EnvelopeLayer {
    type Service = UnwrapEnvelope<S>;

    fn layer(&self, inner: S) -> UnwrapEnvelope<S> {
        UnwrapEnvelope::new(inner, self.envelope.clone())
    }
}
