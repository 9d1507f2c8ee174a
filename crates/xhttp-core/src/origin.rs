//! Origins (scheme, host, port), as RFC 6454 compares them.
//!
//! Auth sends a token only to its configured origins, and redirect handling strips
//! credentials when the origin changes; both compare [`Origin`]s.

use std::fmt;
use std::net::IpAddr;

use crate::Error;

/// The scheme, lowercase host and effective port of a URL.
///
/// ```
/// use xhttp_core::Origin;
/// let a = Origin::parse("https://API.example.com/v1").unwrap();
/// let b = Origin::parse("https://api.example.com:443").unwrap();
/// assert_eq!(a, b);
/// assert_ne!(a, Origin::parse("http://api.example.com").unwrap());
/// assert!(Origin::parse("http://127.0.0.1:8080").unwrap().is_loopback());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: Box<str>,
    host: Box<str>,
    port: u16,
}

impl Origin {
    /// The origin of an absolute URI; `None` for a relative one or an unknown scheme without a
    /// port.
    pub fn from_uri(uri: &http::Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.to_ascii_lowercase();
        let port = match uri.port_u16() {
            Some(port) => port,
            None => default_port(&scheme)?,
        };
        Some(Origin {
            scheme: scheme.into(),
            host: host.into(),
            port,
        })
    }

    /// Whether `uri` has this origin, compared without allocating (auth asks this of every
    /// request).
    ///
    /// ```
    /// use xhttp_core::Origin;
    /// let origin = Origin::parse("https://api.example.com").unwrap();
    /// assert!(origin.matches(&"https://API.example.com:443/v1?x=1".parse().unwrap()));
    /// assert!(!origin.matches(&"https://api.example.com:8443/".parse().unwrap()));
    /// assert!(!origin.matches(&"/relative".parse().unwrap()));
    /// ```
    pub fn matches(&self, uri: &http::Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) || !host.eq_ignore_ascii_case(&self.host) {
            return false;
        }
        let port = uri.port_u16().or_else(|| default_port(&self.scheme));
        port == Some(self.port)
    }

    /// Parses an absolute URL and takes its origin.
    pub fn parse(url: &str) -> Result<Origin, Error> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::invalid_request(format!("malformed URL: {e}")))?;
        Origin::from_uri(&uri).ok_or_else(|| Error::invalid_request("URL has no scheme or no host"))
    }

    /// The scheme, lowercase.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host, lowercase; IPv6 addresses keep their brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the scheme encrypts the connection (`https`, `wss`).
    pub fn is_secure(&self) -> bool {
        matches!(&*self.scheme, "https" | "wss")
    }

    /// Whether the host is `localhost`, a `.localhost` name or a loopback address.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_forms() {
        for url in [
            "http://localhost",
            "http://a.localhost:1",
            "http://127.0.0.9",
            "http://[::1]:80",
        ] {
            assert!(Origin::parse(url).unwrap().is_loopback(), "{url}");
        }
        for url in [
            "http://10.0.0.1",
            "http://localhost.example.com",
            "http://[::2]",
        ] {
            assert!(!Origin::parse(url).unwrap().is_loopback(), "{url}");
        }
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        assert_eq!(
            Origin::parse("not a url").unwrap_err().kind(),
            crate::ErrorKind::InvalidRequest
        );
        assert!(Origin::parse("/relative").is_err());
        assert!(Origin::parse("ftp://host/").is_err());
    }
}
