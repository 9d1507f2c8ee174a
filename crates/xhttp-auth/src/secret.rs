//! [`Secret`]: a credential that never prints itself.

use std::fmt;
use std::sync::Arc;

/// An access token, a refresh token or a client secret.
///
/// `Debug` and `Display` print a redaction mark, never the value; the value is read only
/// through [`Secret::expose`], so every place that handles the raw credential is greppable.
/// Cheap to clone (an `Arc<str>`).
///
/// ```
/// use xhttp_auth::Secret;
/// let token = Secret::new("eyJhbGciOi...");
/// assert_eq!(format!("{token:?} {token}"), "Secret(***) ***");
/// assert_eq!(token.expose(), "eyJhbGciOi...");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }

    /// The credential itself. Call it only where the value is sent or stored.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the credential is the empty string (servers sometimes send `""` for "none").
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret::new(value)
    }
}
