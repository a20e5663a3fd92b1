//! What a client asks for: the upstream blob URL carried in `/accelerator/<url>`, the key the
//! cache knows it by, and the policy that keeps the daemon from being an open proxy.
//!
//! The URL is kept byte for byte as the client sent it (query string included): presigned
//! object-storage URLs carry a signature over their exact text, so re-encoding would break
//! them. That is why `http::Uri` is used rather than a normalising URL parser.
//!
//! Blob keys: a registry blob URL (`/v2/<name>/blobs/sha256:<hex>`) and an object-storage URL
//! of the registry's layout (`.../blobs/sha256/<xx>/<hex>/data?...`) are keyed by the digest,
//! so the same layer hits the cache whichever way overlaybd reached it and whatever the
//! signature. Any other URL is keyed by a hash of its text without the query.

use std::net::{IpAddr, SocketAddr};

use http::Uri;
use sha2::{Digest, Sha256};

/// Longest URL accepted after the `/accelerator/` prefix.
pub const MAX_URL_LEN: usize = 8192;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("{0}")]
    Malformed(&'static str),
    #[error("upstream not allowed: {0}")]
    Forbidden(String),
}

/// The identity of a blob in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlobKey {
    /// Lower-case hex of a sha256 digest the URL names.
    Digest(String),
    /// Lower-case hex of sha256 over `scheme://authority/path`.
    Url(String),
}

impl BlobKey {
    /// A short, filesystem-safe name: `sha256-<hex>` or `url-<hex>`.
    pub fn name(&self) -> String {
        match self {
            BlobKey::Digest(hex) => format!("sha256-{hex}"),
            BlobKey::Url(hex) => format!("url-{hex}"),
        }
    }

    pub fn digest(&self) -> Option<&str> {
        match self {
            BlobKey::Digest(hex) => Some(hex),
            BlobKey::Url(_) => None,
        }
    }
}

/// A validated upstream blob URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub uri: Uri,
    pub key: BlobKey,
}

impl Target {
    /// Parses `rest`, the part of the request target after `/accelerator/`, query included.
    pub fn parse(rest: &str) -> Result<Target, TargetError> {
        if rest.is_empty() {
            return Err(TargetError::Malformed(
                "missing upstream URL after /accelerator/",
            ));
        }
        if rest.len() > MAX_URL_LEN {
            return Err(TargetError::Malformed("upstream URL too long"));
        }
        let uri: Uri = rest
            .parse()
            .map_err(|_| TargetError::Malformed("upstream URL is not a valid absolute URL"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            Some(_) => {
                return Err(TargetError::Malformed(
                    "upstream scheme must be http or https",
                ))
            }
            None => {
                return Err(TargetError::Malformed(
                    "upstream URL must be absolute (http:// or https://)",
                ))
            }
        }
        let authority = uri
            .authority()
            .ok_or(TargetError::Malformed("upstream URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(TargetError::Malformed(
                "credentials in the upstream URL are not accepted",
            ));
        }
        if authority.host().is_empty() {
            return Err(TargetError::Malformed("upstream URL has no host"));
        }
        // A port that is not a number from 1 to 65535 would silently become the scheme's.
        let port_text = &authority.as_str()[authority.host().len()..];
        if !port_text.is_empty() && authority.port_u16().is_none_or(|p| p == 0) {
            return Err(TargetError::Malformed(
                "upstream URL port must be a number from 1 to 65535",
            ));
        }
        let key = blob_key(&uri);
        Ok(Target { uri, key })
    }

    /// The URL with its query replaced by a marker, for logs: signatures never reach a log.
    pub fn redacted(&self) -> String {
        crate::telemetry::redact_url(&self.uri.to_string())
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn blob_key(uri: &Uri) -> BlobKey {
    let path = uri.path();
    let segments: Vec<&str> = path.split('/').collect();
    // Registry API: .../v2/<name>/blobs/sha256:<hex>
    if let [.., blobs, last] = segments.as_slice() {
        if *blobs == "blobs" {
            if let Some(hex) = last.strip_prefix("sha256:") {
                if is_hex64(hex) {
                    return BlobKey::Digest(hex.to_string());
                }
            }
        }
    }
    // Registry storage layout: .../blobs/sha256/<xx>/<hex>/data
    if let [.., blobs, algo, prefix, hex, data] = segments.as_slice() {
        if *blobs == "blobs"
            && *algo == "sha256"
            && *data == "data"
            && is_hex64(hex)
            && hex.starts_with(prefix)
            && prefix.len() == 2
        {
            return BlobKey::Digest(hex.to_string());
        }
    }
    let mut h = Sha256::new();
    h.update(uri.scheme_str().unwrap_or("").as_bytes());
    h.update(b"://");
    h.update(uri.authority().map(|a| a.as_str()).unwrap_or("").as_bytes());
    h.update(path.as_bytes());
    BlobKey::Url(hex::encode(h.finalize()))
}

/// Which upstream hosts and addresses may be contacted.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Exact host names, or `*.suffix`; empty allows every host.
    pub allow_hosts: Vec<String>,
    /// The daemon's own listeners: connecting to them would be a loop.
    pub own_addrs: Vec<SocketAddr>,
}

impl Policy {
    /// Checks the host name before any connection is made.
    pub fn check_host(&self, host: &str) -> Result<(), TargetError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            if is_metadata_ip(ip) {
                return Err(TargetError::Forbidden(format!(
                    "{ip} is a link-local or metadata address"
                )));
            }
        }
        let lower = host.to_ascii_lowercase();
        if lower == "metadata.google.internal" || lower == "metadata" {
            return Err(TargetError::Forbidden(format!(
                "{host} is a metadata service"
            )));
        }
        if self.allow_hosts.is_empty() {
            return Ok(());
        }
        let allowed = self
            .allow_hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => {
                    lower.len() > suffix.len() + 1
                        && lower.ends_with(&suffix.to_ascii_lowercase())
                        && lower.as_bytes()[lower.len() - suffix.len() - 1] == b'.'
                }
                None => pattern.eq_ignore_ascii_case(&lower),
            });
        if allowed {
            Ok(())
        } else {
            Err(TargetError::Forbidden(format!(
                "{host} is not in upstream.allowHosts"
            )))
        }
    }

    /// Checks a URL before any connection: its host as [`Policy::check_host`] does, and, when
    /// the host is an IP address or `localhost`, the address and port too. The connector skips
    /// DNS for IP literals and resolves names without their port, so this is the only place a
    /// request to the daemon's own listener can be recognised.
    /// Not yet: a name other than `localhost` that resolves to this daemon is caught only by
    /// the hop header on the looped request, and the client gets that request's 508 rather
    /// than a 403.
    pub fn check_uri(&self, uri: &Uri) -> Result<(), TargetError> {
        let host = uri.host().unwrap_or_default();
        self.check_host(host)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        // `localhost.` is the same name written fully qualified.
        let lower = bare.trim_end_matches('.').to_ascii_lowercase();
        let ip = match bare.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if lower == "localhost" || lower.ends_with(".localhost") => {
                IpAddr::from([127, 0, 0, 1])
            }
            Err(_) => return Ok(()),
        };
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        self.check_addr(SocketAddr::new(ip, port))
    }

    /// Checks a resolved address just before connecting: DNS must not smuggle a forbidden one.
    pub fn check_addr(&self, addr: SocketAddr) -> Result<(), TargetError> {
        // `::ffff:127.0.0.1` reaches an IPv4 listener too, so it is judged as `127.0.0.1`.
        let ip = addr.ip().to_canonical();
        if is_metadata_ip(ip) {
            return Err(TargetError::Forbidden(format!(
                "{ip} is a link-local or metadata address"
            )));
        }
        let local = ip.is_loopback() || ip.is_unspecified();
        let is_self = self.own_addrs.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == ip
                    || (local && (own.ip().is_loopback() || own.ip().is_unspecified())))
        });
        if is_self {
            return Err(TargetError::Forbidden(format!(
                "{addr} is this daemon's own listener"
            )));
        }
        Ok(())
    }
}

/// Link-local ranges (where cloud metadata services live) and well-known metadata addresses.
fn is_metadata_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local() || v4.octets() == [100, 100, 100, 200] || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_metadata_ip(IpAddr::V4(v4)))
                || v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "dd65726c224b09836aeb6ecebd6baf58c96be727ba86da14e62835569896008a";

    #[test]
    fn registry_and_storage_urls_share_the_digest_key() {
        let a = Target::parse(&format!(
            "https://reg.example.com/v2/ns/app/blobs/sha256:{HEX}"
        ))
        .unwrap();
        let b = Target::parse(&format!(
            "https://bucket.oss.example.com/docker/registry/v2/blobs/sha256/dd/{HEX}/data?Expires=1&Signature=abc"
        ))
        .unwrap();
        let c = Target::parse(&format!(
            "https://bucket.oss.example.com/docker/registry/v2/blobs/sha256/dd/{HEX}/data?Expires=2&Signature=xyz"
        ))
        .unwrap();
        assert_eq!(a.key, BlobKey::Digest(HEX.into()));
        assert_eq!(a.key, b.key);
        assert_eq!(b.key, c.key);
        assert_eq!(b.uri.query(), Some("Expires=1&Signature=abc"));
    }

    #[test]
    fn other_urls_are_keyed_without_their_query() {
        let a = Target::parse("http://h:1/some/file.bin?sig=1").unwrap();
        let b = Target::parse("http://h:1/some/file.bin?sig=2").unwrap();
        let c = Target::parse("http://h:1/other.bin").unwrap();
        assert!(matches!(a.key, BlobKey::Url(_)));
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        assert!(a.key.name().starts_with("url-"));
    }

    #[test]
    fn storage_prefix_must_match_the_digest() {
        let t = Target::parse(&format!(
            "https://b/docker/registry/v2/blobs/sha256/ee/{HEX}/data"
        ))
        .unwrap();
        assert!(matches!(t.key, BlobKey::Url(_)));
    }

    #[test]
    fn malformed_urls_are_refused() {
        for bad in [
            "",
            "reg.example.com/v2/x",
            "/v2/x/blobs/sha256:00",
            "ftp://host/file",
            "file:///etc/passwd",
            "http://user:pw@host/x",
            "http:///nohost",
            "http://exa mple.com/x",
            "http://reg.example.com:99999/v2/x",
            "http://reg.example.com:0/v2/x",
            "http://reg.example.com:/v2/x",
            "http://[::1]:70000/v2/x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "http://reg.example.com:5000/v2/x",
            "https://[::1]/v2/x",
            "http://[::1]:8080/v2/x",
        ] {
            assert!(Target::parse(good).is_ok(), "{good:?} refused");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_keeps_the_text(s in "\\PC{0,200}") {
            if let Ok(t) = Target::parse(&s) {
                proptest::prop_assert!(matches!(t.uri.scheme_str(), Some("http" | "https")));
                proptest::prop_assert!(!t.redacted().contains('?') || t.redacted().ends_with("?<redacted>"));
            }
        }

        #[test]
        fn urls_of_any_path_parse_or_are_refused(path in "[a-zA-Z0-9/:._~%?=&-]{0,120}") {
            let _ = Target::parse(&format!("https://reg.example.com/{path}"));
        }
    }

    #[test]
    fn redaction_hides_the_query() {
        let t = Target::parse("https://b/x/data?Signature=secret&Expires=1").unwrap();
        assert_eq!(t.redacted(), "https://b/x/data?<redacted>");
        assert!(!t.redacted().contains("secret"));
    }

    #[test]
    fn metadata_and_own_listeners_are_refused() {
        let own: SocketAddr = "127.0.0.1:65001".parse().unwrap();
        let p = Policy {
            allow_hosts: vec![],
            own_addrs: vec![own],
        };
        assert!(p.check_host("169.254.169.254").is_err());
        assert!(p.check_host("100.100.100.200").is_err());
        assert!(p.check_host("[fe80::1]").is_err());
        assert!(p.check_host("metadata.google.internal").is_err());
        assert!(p.check_host("reg.example.com").is_ok());
        assert!(p.check_addr(own).is_err());
        assert!(p.check_addr("127.0.0.2:65001".parse().unwrap()).is_err());
        assert!(p.check_addr("127.0.0.1:5000".parse().unwrap()).is_ok());
        assert!(p
            .check_addr("[::ffff:169.254.169.254]:80".parse().unwrap())
            .is_err());
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert!(p.check_uri(&uri("http://127.0.0.1:65001/v2/x")).is_err());
        assert!(p.check_uri(&uri("http://localhost:65001/v2/x")).is_err());
        assert!(p.check_uri(&uri("http://LocalHost.:65001/v2/x")).is_err());
        assert!(p.check_uri(&uri("http://[::1]:65001/v2/x")).is_err());
        assert!(p
            .check_uri(&uri("http://[::ffff:127.0.0.1]:65001/v2/x"))
            .is_err());
        assert!(p.check_uri(&uri("http://169.254.169.254/latest")).is_err());
        assert!(p.check_uri(&uri("http://127.0.0.1:5000/v2/x")).is_ok());
        assert!(p.check_uri(&uri("https://reg.example.com/v2/x")).is_ok());
    }

    #[test]
    fn allow_list_matches_exact_and_suffix() {
        let p = Policy {
            allow_hosts: vec!["reg.example.com".into(), "*.oss.example.com".into()],
            own_addrs: vec![],
        };
        assert!(p.check_host("reg.example.com").is_ok());
        assert!(p.check_host("REG.example.com").is_ok());
        assert!(p.check_host("bucket.oss.example.com").is_ok());
        assert!(p.check_host("oss.example.com").is_err());
        assert!(p.check_host("evil-oss.example.com").is_err());
        assert!(p.check_host("other.com").is_err());
    }
}
