//! What the daemon's config decides for telemetry, checked once at start so a bad value
//! stops the daemon with a message naming it instead of misbehaving later.

use std::path::PathBuf;
use std::time::Duration;

use super::Mode;

/// Default span of the sliding window behind the rate and max-latency families.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Longest window accepted: one bucket per second is kept, so this bounds memory.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Smallest audit file size before rotation; below this rotation would churn on every line.
pub const MIN_AUDIT_FILE_BYTES: u64 = 4096;
/// Audit lines buffered between the data path and the writer before lines are dropped.
pub const AUDIT_BUFFER_LINES: usize = 8192;

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
    #[error("{env} must be an IP address, got {0:?}", env = super::NODE_IP_ENV)]
    NodeIp(String),
}

impl TelemetryConfig {
    pub(crate) fn validate(&self) -> Result<(), TelemetryError> {
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
