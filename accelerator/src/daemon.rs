//! Assembles a running daemon from a validated [`Config`]: listeners first (so a port in use
//! fails fast, before the cache is scanned), then cache, telemetry, origin client and engine;
//! then serves until told to stop and drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cache::{Cache, CacheConfig as StoreConfig, CacheError, IoBackend};
use crate::config::{AuditMode, Config, ConfigError};
use crate::engine::{Engine, EngineConfig};
use crate::origin::{Origin, OriginConfig, TlsSetupError};
use crate::peer::Peers;
use crate::service::{App, Listener, Routes, ServiceError};
use crate::target::Policy;
use crate::telemetry::{self, AuditSink, Telemetry, TelemetryConfig, TelemetryError};

/// Least time queued audit lines get at shutdown, even when the grace period is spent.
const AUDIT_FLUSH_FLOOR: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Cache errors carry no path by design, so the directory is named here.
    #[error("cache.dir {dir}: {source}")]
    Cache {
        dir: std::path::PathBuf,
        source: CacheError,
    },
    #[error("upstream tls: {0}")]
    Tls(#[from] TlsSetupError),
    #[error("telemetry: {0}")]
    Telemetry(#[from] TelemetryError),
    #[error("peer.tokenFile {0}")]
    PeerToken(String),
}

/// The peers' shared token from `peer.tokenFile`: trimmed, not empty, printable ASCII.
fn read_peer_token(path: Option<&std::path::Path>) -> Result<http::HeaderValue, StartError> {
    let path = path.unwrap_or(std::path::Path::new(""));
    let text = std::fs::read_to_string(path)
        .map_err(|e| StartError::PeerToken(format!("{}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(StartError::PeerToken(format!(
            "{} is empty",
            path.display()
        )));
    }
    let printable = token.bytes().all(|b| b.is_ascii_graphic());
    match http::HeaderValue::from_str(token) {
        Ok(value) if printable => Ok(value),
        _ => Err(StartError::PeerToken(format!(
            "{}: the token must be printable ASCII without spaces",
            path.display()
        ))),
    }
}

/// A listener besides the service's, with the address it got.
async fn bind(
    addr: SocketAddr,
    routes: Routes,
    write_timeout: Duration,
) -> Result<(Listener, SocketAddr), ServiceError> {
    let l = Listener::bind(addr, routes)
        .await?
        .with_write_timeout(write_timeout);
    let bound = l
        .local_addr()
        .map_err(|source| ServiceError::Bind { addr, source })?;
    Ok((l, bound))
}

/// Runs the daemon until `stop` completes, then drains and flushes.
pub async fn run(cfg: Config, stop: impl Future<Output = ()>) -> Result<(), StartError> {
    cfg.validate()?;
    let peer_token = if cfg.peer.members.is_empty() {
        None
    } else {
        Some(read_peer_token(cfg.peer.token_file.as_deref())?)
    };
    let listen = cfg.listen_addr()?;
    let write_timeout = Duration::from_millis(cfg.service.write_timeout_ms);
    let mut service = Listener::bind(listen, Routes::Service)
        .await?
        .with_write_timeout(write_timeout);
    if let (Some(cert), Some(key)) = (&cfg.service.tls.cert, &cfg.service.tls.key) {
        service = service.with_tls(cert, key)?;
    }
    let service_addr = service.local_addr().map_err(|source| ServiceError::Bind {
        addr: listen,
        source,
    })?;
    let mut own_addrs = vec![service_addr];
    let exporter = if cfg.exporter.enable && cfg.exporter.standalone_exporter_port {
        let ip = match &cfg.exporter.address {
            Some(a) => a.parse().unwrap_or(service_addr.ip()),
            None => service_addr.ip(),
        };
        let addr = SocketAddr::new(ip, cfg.exporter.port);
        let (l, bound) = bind(addr, Routes::Metrics, write_timeout).await?;
        own_addrs.push(bound);
        Some((l, bound))
    } else {
        None
    };
    let peer_listener = if cfg.peer.members.is_empty() {
        None
    } else {
        let addr = cfg.peer_listen_addr()?;
        let (l, bound) = bind(addr, Routes::Peer, write_timeout).await?;
        own_addrs.push(bound);
        Some((l, bound))
    };
    // A listener on every address is reached at each interface's address: those are this
    // daemon too, as of start-up.
    if own_addrs.iter().any(|a| a.ip().is_unspecified()) {
        let interfaces = crate::interfaces::addresses();
        let ports: Vec<u16> = own_addrs
            .iter()
            .filter(|a| a.ip().is_unspecified())
            .map(SocketAddr::port)
            .collect();
        for port in ports {
            own_addrs.extend(interfaces.iter().map(|ip| SocketAddr::new(*ip, port)));
        }
    }
    let policy = Arc::new(Policy {
        allow_hosts: cfg.upstream.allow_hosts.clone(),
        own_addrs,
    });

    let cache = Cache::open(StoreConfig {
        dir: cfg.cache.dir.clone(),
        capacity: cfg.cache.capacity,
        io: if cfg.cache.aio_enable == 1 {
            IoBackend::IoUring
        } else {
            IoBackend::Pread
        },
        piece_size: cfg.cache.piece_size,
    })
    .await
    .map_err(|source| StartError::Cache {
        dir: cfg.cache.dir.clone(),
        source,
    })?;
    let stats = cache.stats();
    tracing::info!(dir = %cfg.cache.dir.display(), pieces = stats.pieces, used = stats.used, capacity = stats.capacity, "cache ready");

    let audit = match (cfg.deploy.log_audit, cfg.deploy.log_audit_mode) {
        (false, _) => AuditSink::Off,
        (true, AuditMode::Stdout) => AuditSink::Stdout,
        (true, AuditMode::File) => AuditSink::File {
            dir: cfg.deploy.log_dir.clone(),
            max_bytes: cfg.deploy.log_audit_max_mb << 20,
            keep: cfg.deploy.log_audit_keep as usize,
        },
    };
    let telemetry = Telemetry::new(TelemetryConfig {
        node: telemetry::node_label(service_addr)?,
        mode: cfg.deploy.mode,
        cache_allocated: cfg.cache.capacity,
        audit,
        window: Duration::from_secs(cfg.exporter.window_secs),
    })?;

    let origin = Arc::new(Origin::new(
        OriginConfig {
            connect_timeout: Duration::from_millis(cfg.upstream.connect_timeout_ms),
            read_timeout: Duration::from_millis(cfg.upstream.read_timeout_ms),
            retries: cfg.upstream.retries,
            ca_file: cfg.upstream.ca_file.clone(),
            backoff: Duration::from_millis(100),
        },
        policy.clone(),
        telemetry.clone(),
    )?);
    let peers = match (&peer_listener, peer_token) {
        (Some((_, bound)), Some(token)) => {
            let own = if bound.ip().is_unspecified() {
                let port = bound.port();
                crate::interfaces::addresses()
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()
            } else {
                vec![*bound]
            };
            let peers = Arc::new(Peers::new(
                cfg.peer.members.clone(),
                own,
                token,
                Duration::from_secs(cfg.peer.down_secs),
                Duration::from_millis(cfg.upstream.read_timeout_ms),
            ));
            peers.refresh().await;
            Some(peers)
        }
        _ => None,
    };
    let engine = Engine::new(
        cache.clone(),
        origin,
        telemetry.clone(),
        EngineConfig {
            piece_size: cfg.cache.piece_size,
            read_ahead: cfg.read_ahead,
            proxy_concurrency: cfg.proxy_concurrency_limit,
            throttle_mb: cfg.throttle_limit_mb,
            bypass_limit: cfg.cold_random_read_kib << 10,
        },
        peers.clone(),
    );
    let app = Arc::new(App {
        engine,
        policy,
        exporter_standalone: cfg
            .exporter
            .enable
            .then_some(cfg.exporter.standalone_exporter_port),
        evictions_seen: AtomicU64::new(0),
        mirror: cfg.mirror.clone(),
    });

    let (tx, rx) = watch::channel(false);
    let grace = Duration::from_millis(cfg.service.grace_ms);
    let max_conn = cfg.service.max_connections as usize;
    let mut tasks = tokio::task::JoinSet::new();
    tracing::info!(addr = %service_addr, mode = cfg.deploy.mode.as_str(), tls = cfg.service.tls.cert.is_some(), "serving");
    tasks.spawn(service.serve(app.clone(), max_conn, rx.clone(), grace));
    if let Some((l, addr)) = exporter {
        tracing::info!(%addr, "metrics exporter listening");
        tasks.spawn(l.serve(app.clone(), 64, rx.clone(), grace));
    }
    if let (Some((l, addr)), Some(peers)) = (peer_listener, &peers) {
        tracing::info!(%addr, "peer protocol listening");
        tasks.spawn(l.serve(app.clone(), max_conn, rx.clone(), grace));
        let every = Duration::from_secs(cfg.peer.refresh_secs);
        let (peers, mut stop_refresh) = (peers.clone(), rx.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop_refresh.changed() => return,
                }
                peers.refresh().await;
            }
        });
    }
    stop.await;
    tracing::info!("shutting down");
    let deadline = tokio::time::Instant::now() + grace;
    let _ = tx.send(true);
    while tasks.join_next().await.is_some() {}
    // Piece downloads a reader was served from as they came are committed, within the
    // same grace period, so those bytes are not fetched again after a restart.
    if !app.engine.downloads_settled(deadline).await {
        tracing::warn!("grace period over: piece downloads abandoned");
    }
    cache.flush().await;
    // Queued audit lines get what is left of the grace period, and at least a moment: a
    // sink stalled for good (a stdout pipe nobody reads) must not hold the daemon.
    let flush_by = deadline.max(tokio::time::Instant::now() + AUDIT_FLUSH_FLOOR);
    if tokio::time::timeout_at(flush_by, telemetry.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: audit lines still queued are lost");
    }
    tracing::info!("stopped");
    Ok(())
}
