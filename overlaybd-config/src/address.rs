//! The accelerator address as overlaybd reads it from `p2pConfig.address`.
//!
//! overlaybd builds each request as `<address>/<blob-url>` and, with registryfs
//! v2, finds the scheme by searching for the first `://` anywhere in that
//! string. An address without its own `http://` or `https://` therefore makes
//! overlaybd pick up the scheme of the blob URL and talk to the origin,
//! silently bypassing the accelerator. That is why the scheme is mandatory
//! here even though overlaybd itself would accept the value.
//!
//! A query or fragment is refused for the same reason: the blob URL is
//! appended after the address, so anything after `?` or `#` would swallow it.

use std::fmt;

use thiserror::Error;

/// The address `enable` writes when none is given: the accelerator's
/// documented overlaybd endpoint on the node itself.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:65001/accelerator";

/// Why an address cannot be used by overlaybd to reach the accelerator.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AddressError {
    #[error(
        "address {0:?} has no http:// or https:// scheme; overlaybd would bypass the accelerator"
    )]
    NoScheme(String),
    #[error("address {0:?} has no host")]
    NoHost(String),
    #[error("address {address:?}: port {port:?} is not a number")]
    PortNotNumeric { address: String, port: String },
    #[error("address {address:?}: port {port} is outside 1-65535")]
    PortOutOfRange { address: String, port: String },
    #[error("address {0:?} contains whitespace or control characters")]
    BadCharacter(String),
    #[error("address {0:?} has a query or fragment; overlaybd appends the blob URL after it")]
    QueryOrFragment(String),
    #[error("address {0:?} carries credentials; they are not supported")]
    Credentials(String),
    #[error("address {0:?}: unclosed '[' in an IPv6 host")]
    BadIpv6(String),
}

/// Scheme of the accelerator address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A validated accelerator address split into the parts the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// Host without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path after the authority, possibly empty (e.g. `/accelerator`).
    pub path: String,
}

impl Endpoint {
    /// Parses and validates an address string.
    pub fn parse(address: &str) -> Result<Self, AddressError> {
        let owned = || address.to_string();
        if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AddressError::BadCharacter(owned()));
        }
        let (scheme, rest) = if let Some(rest) = address.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = address.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err(AddressError::NoScheme(owned()));
        };
        if rest.contains(['?', '#']) {
            return Err(AddressError::QueryOrFragment(owned()));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(AddressError::Credentials(owned()));
        }
        let (host, port) = split_host_port(authority, address)?;
        if host.is_empty() {
            return Err(AddressError::NoHost(owned()));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(p) => parse_port(p, address)?,
        };
        Ok(Endpoint {
            scheme,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `host:port` as a socket address string (IPv6 hosts bracketed).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The accelerator's health endpoint on the same service address.
    pub fn health_url(&self) -> String {
        format!("{}://{}/healthz", self.scheme.as_str(), self.authority())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.path
        )
    }
}

fn split_host_port<'a>(
    authority: &'a str,
    address: &str,
) -> Result<(&'a str, Option<&'a str>), AddressError> {
    if let Some(inner) = authority.strip_prefix('[') {
        let Some(end) = inner.find(']') else {
            return Err(AddressError::BadIpv6(address.to_string()));
        };
        let host = &inner[..end];
        let after = &inner[end + 1..];
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(AddressError::PortNotNumeric {
                address: address.to_string(),
                port: after.to_string(),
            }),
        };
    }
    Ok(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

fn parse_port(port: &str, address: &str) -> Result<u16, AddressError> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError::PortNotNumeric {
            address: address.to_string(),
            port: port.to_string(),
        });
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(AddressError::PortOutOfRange {
            address: address.to_string(),
            port: port.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_address_parses() {
        let e = Endpoint::parse(DEFAULT_ADDRESS).unwrap();
        assert_eq!(e.scheme, Scheme::Http);
        assert_eq!(e.host, "127.0.0.1");
        assert_eq!(e.port, 65001);
        assert_eq!(e.path, "/accelerator");
        assert_eq!(e.health_url(), "http://127.0.0.1:65001/healthz");
        assert_eq!(e.to_string(), DEFAULT_ADDRESS);
    }

    #[test]
    fn default_ports_and_ipv6() {
        let e = Endpoint::parse("https://localhost/accelerator").unwrap();
        assert_eq!((e.scheme, e.port), (Scheme::Https, 443));
        let e = Endpoint::parse("http://[::1]:65001/accelerator").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.authority(), "[::1]:65001");
        assert_eq!(e.health_url(), "http://[::1]:65001/healthz");
        let e = Endpoint::parse("http://node-a").unwrap();
        assert_eq!((e.port, e.path.as_str()), (80, ""));
    }

    #[test]
    fn scheme_less_shipped_default_is_refused() {
        let err = Endpoint::parse("localhost:19145/dadip2p").unwrap_err();
        assert!(matches!(err, AddressError::NoScheme(_)));
        assert!(err.to_string().contains("bypass"));
        assert!(matches!(
            Endpoint::parse("HTTP://localhost:1/a"),
            Err(AddressError::NoScheme(_))
        ));
        assert!(matches!(
            Endpoint::parse("ftp://localhost:1/a"),
            Err(AddressError::NoScheme(_))
        ));
    }

    #[test]
    fn bad_ports_are_refused() {
        for (addr, numeric) in [
            ("http://127.0.0.1:abc/accelerator", true),
            ("http://127.0.0.1:/accelerator", true),
            ("http://127.0.0.1:65001x/accelerator", true),
            ("http://127.0.0.1:-1/accelerator", true),
            ("http://[::1]x/accelerator", true),
            ("http://127.0.0.1:0/accelerator", false),
            ("http://127.0.0.1:65536/accelerator", false),
        ] {
            let err = Endpoint::parse(addr).unwrap_err();
            if numeric {
                assert!(
                    matches!(err, AddressError::PortNotNumeric { .. }),
                    "{addr}: {err}"
                );
            } else {
                assert!(
                    matches!(err, AddressError::PortOutOfRange { .. }),
                    "{addr}: {err}"
                );
            }
        }
    }

    #[test]
    fn other_malformed_addresses_are_refused() {
        use AddressError::*;
        type Variant = fn(String) -> AddressError;
        let cases: [(&str, Variant); 6] = [
            ("http://", NoHost),
            ("http://:65001/a", NoHost),
            ("http://127.0.0.1:65001/a b", BadCharacter),
            ("http://127.0.0.1:65001/a?x=1", QueryOrFragment),
            ("http://u:p@127.0.0.1:65001/a", Credentials),
            ("http://[::1:65001/a", BadIpv6),
        ];
        for (addr, expected) in cases {
            assert_eq!(Endpoint::parse(addr), Err(expected(addr.to_string())));
        }
    }
}
