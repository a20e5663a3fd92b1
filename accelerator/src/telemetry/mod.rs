//! Observability for the node daemon: the documented `DADIP2P_*` metric families, a
//! conventional Prometheus set beside them, the audit log and the `/status` snapshot.
//!
//! Operators of the documented agent already scrape `DADIP2P_*` series and parse its audit
//! lines, so those are reproduced byte for byte (including the misspelt
//! `DADIP2P_Read_Throughtput`). Everything new goes into the `dadi_p2p_*` families kept by
//! `prometheus-client`, so a new user gets counters with `_total`, histograms in seconds and
//! no surprises.
//!
//! The data path calls [`Telemetry`] on every piece it moves, so every recording method is a
//! few atomic adds or a lock held for a handful of instructions, and none does I/O: audit
//! lines go through a bounded channel to a writer thread and are dropped (and counted) when
//! that channel is full, rather than slowing a read down.
//!
//! Rates and maximum latency (`DADIP2P_Read_Throughtput`, `DADIP2P_QPS`,
//! `DADIP2P_MaxLatency`) cover the last complete seconds of a sliding window
//! ([`TelemetryConfig::window`], 10 s by default): a window rather than "since the last
//! scrape" so that two scrapers (Prometheus and a person with curl) read the same value and
//! neither resets what the other sees.

mod audit;
mod conventional;
mod dadi;
mod status;
mod window;

#[cfg(test)]
mod exposition_tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use audit::{redact_url, AuditOp};
pub use status::{render_status_table, CacheStatus, PeerStatus, SourceBytes, StatusSnapshot};

use audit::{AuditHandle, AuditRecord};
use conventional::Conventional;
use window::Window;

/// Default span of the sliding window behind the rate and max-latency families.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Longest window accepted: one bucket per second is kept, so this bounds memory.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Smallest audit file size before rotation; below this rotation would churn on every line.
pub const MIN_AUDIT_FILE_BYTES: u64 = 4096;
/// Audit lines buffered between the data path and the writer before lines are dropped.
pub const AUDIT_BUFFER_LINES: usize = 8192;

/// The documented `type` label values: what kind of work a sample measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Downstream reads answered to overlaybd.
    Pread,
    /// Reads fetched back from the origin.
    Download,
    /// Pieces moved between nodes.
    Peer,
    /// Cache file reads and writes.
    Disk,
    /// HTTP requests handled by the service.
    Http,
}

impl Kind {
    /// In the order the documented exposition lists them.
    pub const ALL: [Kind; 5] = [
        Kind::Pread,
        Kind::Download,
        Kind::Peer,
        Kind::Disk,
        Kind::Http,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pread => "pread",
            Kind::Download => "download",
            Kind::Peer => "peer",
            Kind::Disk => "disk",
            Kind::Http => "http",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where the bytes answering a read came from (`source` label of the conventional set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Cache,
    Peer,
    Origin,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Cache, Source::Peer, Source::Origin];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Peer => "peer",
            Source::Origin => "origin",
        }
    }
}

/// The documented `mode` label: a node agent or a root (seed) node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Agent,
    Root,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Agent => "agent",
            Mode::Root => "root",
        }
    }
}

/// Where audit lines go (`logAudit` / `logAuditMode` / `logDir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Off,
    Stdout,
    /// `<dir>/audit.log`, renamed to `audit.log.1` … `audit.log.<keep>` once it would pass
    /// `max_bytes`; the oldest is deleted.
    File {
        dir: PathBuf,
        max_bytes: u64,
        keep: usize,
    },
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The `node` label, `<ip>:<port>` of the service.
    pub node: String,
    pub mode: Mode,
    /// Cache capacity in bytes (`DADIP2P_Cache{type="allocated"}`).
    pub cache_allocated: u64,
    pub audit: AuditSink,
    /// Span of the rate and max-latency window, whole seconds.
    pub window: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("metrics node label is empty")]
    EmptyNode,
    #[error("metrics window must be 1 to 3600 whole seconds, got {0:?}")]
    Window(Duration),
    #[error("audit log max size must be at least {MIN_AUDIT_FILE_BYTES} bytes, got {0}")]
    AuditMaxBytes(u64),
    #[error("cannot open audit log {path}")]
    OpenAudit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the audit writer thread")]
    SpawnWriter(#[source] std::io::Error),
}

impl TelemetryConfig {
    fn validate(&self) -> Result<(), TelemetryError> {
        if self.node.is_empty() {
            return Err(TelemetryError::EmptyNode);
        }
        let w = self.window;
        if w.subsec_nanos() != 0 || w < Duration::from_secs(1) || w > MAX_WINDOW {
            return Err(TelemetryError::Window(w));
        }
        if let AuditSink::File { max_bytes, .. } = self.audit {
            if max_bytes < MIN_AUDIT_FILE_BYTES {
                return Err(TelemetryError::AuditMaxBytes(max_bytes));
            }
        }
        Ok(())
    }
}

/// Per-`type` state: the cumulative byte count and the sliding window.
struct KindStats {
    count: AtomicU64,
    window: Window,
}

/// Shared by every part of the daemon as `Arc<Telemetry>`.
pub struct Telemetry {
    cfg: TelemetryConfig,
    started: Instant,
    kinds: [KindStats; 5],
    cache_used: AtomicU64,
    conventional: Conventional,
    audit: Option<AuditHandle>,
}

/// Keeps the in-flight downloads gauge raised while alive.
#[must_use = "the download counts as in flight only while the guard lives"]
pub struct InflightGuard {
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Telemetry {
    /// Media type of [`Telemetry::render`]: the classic text format, because the documented
    /// families carry millisecond timestamps, which OpenMetrics text does not allow.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// Validates the config and starts the audit writer thread when auditing is on.
    pub fn new(cfg: TelemetryConfig) -> Result<Arc<Self>, TelemetryError> {
        Self::with_audit_capacity(cfg, AUDIT_BUFFER_LINES)
    }

    fn with_audit_capacity(
        cfg: TelemetryConfig,
        lines: usize,
    ) -> Result<Arc<Self>, TelemetryError> {
        cfg.validate()?;
        let conventional = Conventional::new(cfg.cache_allocated);
        let audit = audit::start(&cfg.audit, lines, conventional.audit_dropped.clone())?;
        Ok(Arc::new(Self::assemble(cfg, conventional, audit)))
    }

    fn assemble(
        cfg: TelemetryConfig,
        conventional: Conventional,
        audit: Option<AuditHandle>,
    ) -> Self {
        let secs = cfg.window.as_secs();
        let kind = || KindStats {
            count: AtomicU64::new(0),
            window: Window::new(secs),
        };
        Self {
            kinds: [kind(), kind(), kind(), kind(), kind()],
            started: Instant::now(),
            cache_used: AtomicU64::new(0),
            conventional,
            audit,
            cfg,
        }
    }

    fn now_sec(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// One operation of `kind` that moved `bytes` and took `latency`.
    pub fn record(&self, kind: Kind, bytes: u64, latency: Duration) {
        self.record_at(self.now_sec(), kind, bytes, latency);
    }

    fn record_at(&self, sec: u64, kind: Kind, bytes: u64, latency: Duration) {
        let stats = &self.kinds[kind.index()];
        stats.count.fetch_add(bytes, Ordering::Relaxed);
        stats.window.record(sec, bytes, micros(latency));
        self.conventional.operation(kind, latency);
    }

    /// Bytes handed to a reader, by where they came from.
    pub fn served(&self, source: Source, bytes: u64) {
        self.conventional.served(source, bytes);
    }

    /// One finished HTTP request.
    pub fn request_done(&self, status: u16, latency: Duration) {
        self.conventional.request_done(status, latency);
    }

    pub fn eviction(&self, n: u64) {
        self.conventional.evictions.inc_by(n);
    }

    pub fn integrity_failure(&self) {
        self.conventional.integrity_failures.inc();
    }

    pub fn origin_retry(&self) {
        self.conventional.origin_retries.inc();
    }

    pub fn download_started(&self) -> InflightGuard {
        let gauge = self.conventional.inflight.clone();
        gauge.inc();
        InflightGuard { gauge }
    }

    pub fn set_cache_used(&self, bytes: u64) {
        self.cache_used.store(bytes, Ordering::Relaxed);
        self.conventional.cache_used.set(clamp_i64(bytes));
    }

    /// Queues one audit line; never waits. `pathname` is the blob URL (with or without the
    /// leading `/`); its query string and userinfo are redacted before it is written.
    pub fn audit(&self, op: AuditOp, pathname: &str, offset: u64, size: i64, latency: Duration) {
        if let Some(handle) = &self.audit {
            handle.send(AuditRecord::now(
                op,
                pathname,
                offset,
                size,
                micros(latency),
            ));
        }
    }

    /// The whole `/metrics` body: documented families first, then the conventional set.
    pub fn render(&self) -> String {
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.render_at(self.now_sec(), ts_ms)
    }

    fn render_at(&self, sec: u64, ts_ms: u64) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let rows = Kind::ALL.map(|k| {
            let stats = &self.kinds[k.index()];
            let w = stats.window.read(sec);
            dadi::KindRow {
                kind: k,
                throughput: w.bytes_per_sec,
                qps: w.ops_per_sec,
                max_latency_us: w.max_us as f64,
                count: stats.count.load(Ordering::Relaxed) as f64,
            }
        });
        let view = dadi::View {
            node: &self.cfg.node,
            mode: self.cfg.mode,
            ts_ms,
            rows: &rows,
            allocated: self.cfg.cache_allocated,
            used: self.cache_used.load(Ordering::Relaxed),
            version: env!("CARGO_PKG_VERSION"),
        };
        dadi::render(&mut out, &view);
        self.conventional.render_classic(&mut out);
        out
    }

    /// Counters for `GET /status`.
    pub fn snapshot(&self) -> StatusSnapshot {
        let c = &self.conventional;
        let bytes = SourceBytes {
            cache: c.served_bytes(Source::Cache),
            peer: c.served_bytes(Source::Peer),
            origin: c.served_bytes(Source::Origin),
        };
        StatusSnapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: self.cfg.node.clone(),
            mode: self.cfg.mode,
            uptime_secs: self.started.elapsed().as_secs(),
            cache: CacheStatus {
                capacity: self.cfg.cache_allocated,
                used: self.cache_used.load(Ordering::Relaxed),
            },
            hit_ratio: bytes.hit_ratio(),
            bytes,
            requests: c.requests_by_class(),
            inflight_downloads: c.inflight.get().max(0) as u64,
            evictions: c.evictions.get(),
            integrity_failures: c.integrity_failures.get(),
            origin_retries: c.origin_retries.get(),
            audit_lines_dropped: c.audit_dropped.get(),
            peers: Vec::new(),
        }
    }

    /// Writes out every audit line queued so far and stops the writer; lines offered after
    /// this are counted as dropped.
    pub async fn shutdown(&self) {
        if let Some(handle) = &self.audit {
            handle.stop().await;
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
