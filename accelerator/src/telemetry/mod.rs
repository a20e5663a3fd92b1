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
mod config;
mod conventional;
mod dadi;
mod labels;
mod node;
mod status;
mod window;

#[cfg(test)]
mod exposition_tests;
#[cfg(test)]
mod scrape_tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use audit::{redact_url, AuditOp, AUDIT_LINE_PATTERN};
pub use config::{
    AuditSink, TelemetryConfig, TelemetryError, AUDIT_BUFFER_LINES, DEFAULT_WINDOW, MAX_WINDOW,
    MIN_AUDIT_FILE_BYTES,
};
pub use labels::{Kind, Mode, Source};
pub use node::{node_label, NODE_IP_ENV};
pub use status::{render_status_table, CacheStatus, PeerStatus, SourceBytes, StatusSnapshot};

use audit::{AuditHandle, AuditRecord};
use conventional::Conventional;
use window::Window;

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

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("node", &self.cfg.node)
            .field("mode", &self.cfg.mode)
            .field("audit", &self.cfg.audit)
            .finish_non_exhaustive()
    }
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
        cfg.validate()?;
        let conventional = Conventional::new(cfg.cache_allocated);
        let dropped = conventional.audit_dropped.clone();
        let audit = audit::start(&cfg.audit, AUDIT_BUFFER_LINES, dropped)?;
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

    /// Bytes moved by an operation still under way (a long response body), counted in the
    /// second they moved; [`Telemetry::end`] counts the operation itself.
    pub fn progress(&self, kind: Kind, bytes: u64) {
        let stats = &self.kinds[kind.index()];
        stats.count.fetch_add(bytes, Ordering::Relaxed);
        stats.window.add_bytes(self.now_sec(), bytes);
    }

    /// The end of an operation whose bytes went through [`Telemetry::progress`].
    pub fn end(&self, kind: Kind, latency: Duration) {
        let stats = &self.kinds[kind.index()];
        stats.window.end_op(self.now_sec(), micros(latency));
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
            // Filled in by the service from the peer list, which telemetry does not hold.
            peers: Vec::new(),
        }
    }

    /// Writes out every audit line queued so far and stops the writer; lines offered after
    /// this are counted as dropped. A sink stalled for good (a stdout pipe nobody reads)
    /// stalls this too, so the caller bounds it with its drain grace period.
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
