//! The HTTP front: listeners, connections, TLS, and graceful drain.
//!
//! Each listener runs one accept loop. A connection permit is taken before `accept`, so a
//! flood of connections waits in the kernel's backlog instead of growing memory. Connections
//! are HTTP/1.1 with keep-alive (what overlaybd and containerd use), TLS handshake time,
//! header size and header read time are bounded, and on shutdown every connection is told
//! to finish its current response and close; what is still running after the grace period
//! is dropped.

pub(crate) mod error;
mod mirror;
mod routes;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::engine::{Engine, EngineError};
use crate::target::Policy;

pub use error::ApiError;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, EngineError>;

/// Largest request head accepted; longer ones get 431 from hyper.
const MAX_HEAD_BYTES: usize = 32 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A TLS handshake takes a round trip or two; a client silent for longer is dropped, since
/// until the handshake ends hyper's header timeout does not run and the connection would
/// hold its permit for ever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// The accelerator endpoint, health, status, and metrics unless they have their own port.
    Service,
    /// Only `/metrics` (`standaloneExporterPort: true`).
    Metrics,
    /// The peer protocol on `p2pPort`.
    Peer,
}

/// What every request handler shares.
pub struct App {
    pub engine: Arc<Engine>,
    pub policy: Arc<Policy>,
    /// Metrics are on: `Some(true)` on their own port, `Some(false)` on the service port.
    pub exporter_standalone: Option<bool>,
    /// Cache evictions already reported to telemetry.
    pub evictions_seen: AtomicU64,
    pub mirror: crate::config::MirrorConfig,
}

impl App {
    /// Brings the cache's own figures (use, evictions) into telemetry before they are shown.
    fn sync_cache_figures(&self) {
        let stats = self.engine.cache().stats();
        let telemetry = self.engine.telemetry();
        telemetry.set_cache_used(stats.used);
        // Two scrapes at once may read the stats in either order: only the larger moves on.
        let before = self
            .evictions_seen
            .fetch_max(stats.evictions, Ordering::Relaxed);
        if stats.evictions > before {
            telemetry.eviction(stats.evictions - before);
        }
    }

    fn metrics_here(&self, routes: Routes) -> bool {
        matches!(
            (self.exporter_standalone, routes),
            (Some(true), Routes::Metrics) | (Some(false), Routes::Service)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("tls: cannot read {path}: {source}")]
    TlsFile {
        path: String,
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(String),
}

pub struct Listener {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    routes: Routes,
    write_timeout: Duration,
}

impl Listener {
    pub async fn bind(addr: SocketAddr, routes: Routes) -> Result<Listener, ServiceError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::Bind { addr, source })?;
        Ok(Listener {
            listener,
            tls: None,
            routes,
            write_timeout: Duration::from_millis(crate::config::DEFAULT_WRITE_TIMEOUT_MS),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Cuts off a client that takes no bytes of a response for `timeout`.
    pub fn with_write_timeout(mut self, timeout: Duration) -> Listener {
        self.write_timeout = timeout;
        self
    }

    pub fn with_tls(mut self, cert: &Path, key: &Path) -> Result<Listener, ServiceError> {
        self.tls = Some(tls_acceptor(cert, key)?);
        Ok(self)
    }

    /// Serves until `shutdown` turns true, then drains for at most `grace`.
    pub async fn serve(
        self,
        app: Arc<App>,
        max_connections: usize,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let permits = Arc::new(Semaphore::new(max_connections));
        let graceful = GracefulShutdown::new();
        let addr = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stopped(&mut shutdown) => break,
            };
            let (tcp, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => break,
            };
            let _ = tcp.set_nodelay(true);
            let mut tcp = tokio_io_timeout::TimeoutStream::new(tcp);
            tcp.set_write_timeout(Some(self.write_timeout));
            let tcp = Box::pin(tcp);
            let app = app.clone();
            let routes = self.routes;
            let tls = self.tls.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    async move {
                        let resp = match routes {
                            Routes::Peer => crate::peer::server::handle(app, peer, req).await,
                            _ => routes::handle(app, routes, req).await,
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .keep_alive(true)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                let result = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => {
                                watcher
                                    .watch(builder.serve_connection(TokioIo::new(stream), svc))
                                    .await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "tls handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "tls handshake timed out");
                                return;
                            }
                        }
                    }
                    None => {
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(tcp), svc))
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        tracing::info!(addr = %addr, "listener closed, draining connections");
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!(addr = %addr, "connections drained"),
            _ = tokio::time::sleep(grace) => tracing::warn!(addr = %addr, grace_ms = grace.as_millis() as u64, "grace period over, dropping connections"),
        }
    }
}

/// Completes once the shutdown flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ServiceError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| ServiceError::TlsFile {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| ServiceError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServiceError::Tls(format!(
            "{}: no certificate found",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ServiceError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServiceError::Tls(format!("{}: no private key found", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServiceError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServiceError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
