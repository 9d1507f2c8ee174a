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

    /// Whether the host is a loopback IP address literal, as [`is_loopback_address`] decides.
    /// Names, `localhost` included, are not.
    ///
    /// ```
    /// use xhttp_core::Origin;
    /// assert!(Origin::parse("http://127.0.0.1:8080").unwrap().is_loopback());
    /// assert!(!Origin::parse("http://localhost:8080").unwrap().is_loopback());
    /// ```
    pub fn is_loopback(&self) -> bool {
        is_loopback_address(&self.host)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Whether `host` (as a URI carries it: IPv6 in brackets or not) is a loopback IP address
/// literal: `127.0.0.0/8`, `::1`, or an IPv4-mapped `::ffff:127.x.y.z`.
///
/// The one loopback rule of the workspace: a credential goes over plain `http` only to such
/// an address. A name is never loopback, not even `localhost` or `*.localhost`: it resolves to
/// whatever DNS, `/etc/hosts` or a proxy says, so write `127.0.0.1` (or `[::1]`) instead.
///
/// ```
/// use xhttp_core::origin::is_loopback_address;
/// assert!(is_loopback_address("127.0.0.1"));
/// assert!(is_loopback_address("127.8.9.10"));
/// assert!(is_loopback_address("[::1]"));
/// assert!(is_loopback_address("[::ffff:127.0.0.1]"));
/// assert!(!is_loopback_address("localhost"));
/// assert!(!is_loopback_address("api.localhost"));
/// assert!(!is_loopback_address("10.0.0.1"));
/// ```
pub fn is_loopback_address(host: &str) -> bool {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
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
            "http://127.0.0.9",
            "http://127.255.255.254:1",
            "http://[::1]:80",
            "http://[::ffff:127.0.0.1]:80",
        ] {
            assert!(Origin::parse(url).unwrap().is_loopback(), "{url}");
        }
        // Names resolve to anything: never loopback, `localhost` included.
        for url in [
            "http://localhost",
            "http://a.localhost:1",
            "http://10.0.0.1",
            "http://localhost.example.com",
            "http://[::2]",
            "http://[::ffff:10.0.0.1]",
            "http://127.0.0.1.nip.io",
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
