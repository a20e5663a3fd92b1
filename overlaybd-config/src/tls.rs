//! What `status` trusts when it checks an `https://` accelerator, and how a
//! failed handshake is explained to the operator.
//!
//! The accelerator's certificate is commonly issued by a cluster CA that the
//! node's system store does not hold, so `--cacert` adds a PEM file to the
//! system roots. That file is read and checked before anything else happens:
//! a typo in the path must be a usage error, not an "unknown issuer" health
//! failure that sends the operator looking at the accelerator. The system
//! roots are loaded only when an `https://` address is actually checked.
//!
//! The certificate is verified against the address's host, as overlaybd
//! would reach it: `localhost` as a DNS name, an IP literal as an IP address.
//! A failure gets a short reason word for scripts and, where the usual cause
//! is known, a hint saying what to change.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use thiserror::Error;

/// Why the `--cacert` file cannot be used.
#[derive(Debug, Error)]
pub enum CaCertError {
    #[error("--cacert {}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("--cacert {}: not PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("--cacert {}: no PEM certificates (BEGIN CERTIFICATE) found", path.display())]
    NoCertificates { path: PathBuf },
    #[error("--cacert {}: certificate {index} cannot be a trust anchor: {source}", path.display())]
    Unusable {
        path: PathBuf,
        index: usize,
        source: rustls::Error,
    },
}

/// The extra CA certificates from `--cacert`, checked to be usable.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    cacert: Option<PathBuf>,
    extra: Vec<CertificateDer<'static>>,
}

impl Trust {
    /// Reads `--cacert`, if given; every certificate in it must be usable.
    pub fn load(cacert: Option<&Path>) -> Result<Trust, CaCertError> {
        let Some(path) = cacert else {
            return Ok(Trust::default());
        };
        let owned = || path.to_path_buf();
        let pem = std::fs::read(path).map_err(|source| CaCertError::Read {
            path: owned(),
            source,
        })?;
        let extra = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CaCertError::Pem {
                path: owned(),
                reason: pem_reason(&e),
            })?;
        if extra.is_empty() {
            return Err(CaCertError::NoCertificates { path: owned() });
        }
        let mut check = RootCertStore::empty();
        for (i, cert) in extra.iter().enumerate() {
            check
                .add(cert.clone())
                .map_err(|source| CaCertError::Unusable {
                    path: owned(),
                    index: i + 1,
                    source,
                })?;
        }
        Ok(Trust {
            cacert: Some(owned()),
            extra,
        })
    }

    pub fn cacert(&self) -> Option<&Path> {
        self.cacert.as_deref()
    }

    /// A client trusting the system roots plus `--cacert`, on the ring provider.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, rustls::Error> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "system CA store");
        }
        let (added, skipped) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, skipped, "system roots loaded");
        for cert in &self.extra {
            roots.add(cert.clone())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// The PEM parser's error with its byte strings shown as text.
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a {} section has no END line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {:?}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    }
}

/// The name the certificate must match: an IP address for an IP literal
/// (IPv6 hosts come without brackets), otherwise a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))
}

/// A handshake that did not complete: a reason word for scripts, the error
/// text, and what to do about it when the usual cause is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeFailure {
    pub reason: &'static str,
    pub error: String,
    pub hint: Option<String>,
}

impl HandshakeFailure {
    /// Explains an error returned while handshaking over a socket.
    pub fn from_io(e: &io::Error, name: &str, trust: &Trust) -> HandshakeFailure {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(tls) => HandshakeFailure::from_tls(tls, name, trust),
            None => {
                use io::ErrorKind as K;
                let timed_out = matches!(e.kind(), K::TimedOut | K::WouldBlock);
                // A plain-HTTP server waits for a line end that a ClientHello
                // does not carry, or drops the connection on the binary bytes.
                let cut = matches!(
                    e.kind(),
                    K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted
                );
                let hint = (timed_out || cut).then(|| PLAIN_HTTP_HINT.to_string());
                HandshakeFailure {
                    reason: if timed_out { "timeout" } else { "io" },
                    error: e.to_string(),
                    hint,
                }
            }
        }
    }

    /// Explains an error reported by rustls.
    pub fn from_tls(e: &rustls::Error, name: &str, trust: &Trust) -> HandshakeFailure {
        use CertificateError as C;
        let (reason, hint) = match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => ("unknown_issuer", Some(unknown_issuer_hint(trust))),
                C::NotValidForName | C::NotValidForNameContext { .. } => (
                    "name_mismatch",
                    Some(format!(
                        "the certificate is not issued for {name}; use an address whose host \
                         is one of the certificate's names"
                    )),
                ),
                C::Expired | C::ExpiredContext { .. } => ("expired", Some(dates_hint())),
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    ("not_yet_valid", Some(dates_hint()))
                }
                _ => ("bad_certificate", None),
            },
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                ("not_tls", Some(PLAIN_HTTP_HINT.to_string()))
            }
            rustls::Error::AlertReceived(_) => ("alert_received", None),
            rustls::Error::PeerIncompatible(_) => ("incompatible", None),
            _ => ("handshake_error", None),
        };
        HandshakeFailure {
            reason,
            error: e.to_string(),
            hint,
        }
    }
}

const PLAIN_HTTP_HINT: &str =
    "no TLS answer; if the port serves plain HTTP, the address should start with http://";

fn unknown_issuer_hint(trust: &Trust) -> String {
    match trust.cacert() {
        None => "the certificate is not signed by a CA this node trusts; pass --cacert with \
                 the PEM file of the CA that issued it (often the cluster CA)"
            .to_string(),
        Some(p) => format!(
            "the certificate is signed by neither the system roots nor a CA in --cacert {}",
            p.display()
        ),
    }
}

fn dates_hint() -> String {
    "check the certificate's validity dates and this node's clock".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_for_dns_and_ip_hosts() {
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn reasons_and_hints() {
        let none = Trust::default();
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let f = HandshakeFailure::from_tls(&unknown, "localhost", &none);
        assert_eq!(f.reason, "unknown_issuer");
        assert!(f.hint.unwrap().contains("--cacert"));
        let with = Trust {
            cacert: Some("/etc/ca.pem".into()),
            extra: Vec::new(),
        };
        let f = HandshakeFailure::from_tls(&unknown, "localhost", &with);
        assert!(f.hint.unwrap().contains("/etc/ca.pem"));
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        let f = HandshakeFailure::from_tls(&name, "node-a", &none);
        assert_eq!(f.reason, "name_mismatch");
        assert!(f.hint.unwrap().contains("node-a"));
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        let f = HandshakeFailure::from_io(&eof, "localhost", &none);
        assert_eq!((f.reason, f.hint.is_some()), ("io", true));
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, unknown);
        let f = HandshakeFailure::from_io(&wrapped, "localhost", &none);
        assert_eq!(f.reason, "unknown_issuer");
    }

    #[test]
    fn missing_cacert_names_the_flag_and_path() {
        let e = Trust::load(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(e, CaCertError::Read { .. }));
        assert!(e
            .to_string()
            .starts_with("--cacert /nonexistent/ca.pem: cannot read"));
    }
}
