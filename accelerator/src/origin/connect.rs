//! How the origin client reaches upstreams: a resolver that drops link-local and metadata
//! addresses after DNS (so a host name cannot smuggle one in), and the rustls client
//! configuration (system roots plus an optional extra bundle, ring provider).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use crate::target::Policy;

/// A DNS resolver that applies the address policy to every answer.
#[derive(Clone)]
pub struct PolicyResolver {
    pub policy: Arc<Policy>,
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for PolicyResolver {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Addrs>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.check_addr(*a).is_ok())
                .collect();
            if allowed.is_empty() {
                let reason = if found.is_empty() {
                    "no address"
                } else {
                    "only forbidden addresses"
                };
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{host} resolves to {reason}"),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {0}: {1}")]
    CaFile(String, io::Error),
    #[error("CA file {0} holds no usable certificate")]
    NoCerts(String),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

pub fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system store may hold certificates rustls cannot use; skipping them is what browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| TlsSetupError::CaFile(shown.clone(), e))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
            if roots.add(cert).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(TlsSetupError::NoCerts(shown));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
