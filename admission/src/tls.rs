//! Serving certificate that follows the files on disk.
//!
//! cert-manager (and the CA script) replace `tls.crt` and `tls.key` in place; with a Secret
//! volume the swap is an atomic symlink change. Each TLS handshake compares a cheap
//! fingerprint of both files (inode, length, modification time, following symlinks) with the
//! one last loaded and reloads when it differs, so the next connection after a rotation is
//! served the new certificate without a timer or a restart. A pair that does not load (half
//! written, or key and certificate not matching) is logged and the previous pair kept.

use std::fmt;
use std::io::BufReader;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    #[error("{0}: no PEM private key found")]
    NoKey(PathBuf),
    #[error("unusable key or certificate: {0}")]
    Rustls(#[from] rustls::Error),
}

type Fingerprint = [(u64, u64, i64, i64); 2];

fn fingerprint(paths: [&Path; 2]) -> Option<Fingerprint> {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
    };
    Some([one(paths[0])?, one(paths[1])?])
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a PEM certificate chain and private key into a rustls key pair.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(&read(cert)?[..]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let der = rustls_pemfile::private_key(&mut BufReader::new(&read(key)?[..]))
        .map_err(|source| TlsError::Read {
            path: key.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(key.to_path_buf()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)?;
    let pair = CertifiedKey::new(certs, signer);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(e) => Err(e.into()),
    }
}

struct Loaded {
    seen: Option<Fingerprint>,
    pair: Arc<CertifiedKey>,
}

/// A [`ResolvesServerCert`] that reloads the pair when the files change.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Loaded>,
    metrics: Metrics,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ReloadingCert {
    /// Loads the pair once; failing here stops the process at start.
    pub fn new(cert: PathBuf, key: PathBuf, metrics: Metrics) -> Result<Self, TlsError> {
        let seen = fingerprint([&cert, &key]);
        let pair = Arc::new(load(&cert, &key)?);
        Ok(Self {
            cert,
            key,
            loaded: Mutex::new(Loaded { seen, pair }),
            metrics,
        })
    }

    /// The pair to serve, reloaded first if the files changed since the last look.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let now = fingerprint([&self.cert, &self.key]);
        if now.is_some() && now != loaded.seen {
            loaded.seen = now;
            match load(&self.cert, &self.key) {
                Ok(pair) => {
                    loaded.pair = Arc::new(pair);
                    self.metrics.cert_reload("ok");
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                }
                Err(error) => {
                    self.metrics.cert_reload("failed");
                    let cause = std::error::Error::source(&error).map(|c| c.to_string());
                    tracing::warn!(%error, ?cause, "serving certificate not reloaded; keeping the old one");
                }
            }
        }
        loaded.pair.clone()
    }

    /// A rustls server configuration (HTTP/1.1 and HTTP/2) that serves this pair.
    pub fn server_config(self: Arc<Self>) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
