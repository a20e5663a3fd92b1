//! Read failures as the HTTP layer sees them. A download's error is cloned to every reader
//! waiting on it, so it holds plain values (a status, a message) rather than sources.

use http::{HeaderValue, StatusCode};

use crate::cache::CacheError;
use crate::origin::OriginError;

/// Why a read failed, in a form every waiter of a shared download can hold.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("upstream answered {status}")]
    UpstreamStatus {
        status: StatusCode,
        www_authenticate: Option<HeaderValue>,
    },
    #[error("{0}")]
    UpstreamDown(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    UpstreamProtocol(String),
    #[error("cache is full of pieces being read")]
    CacheFull,
    #[error("cache: {0}")]
    Cache(String),
}

impl EngineError {
    /// Whether the origin refused the request in a way other credentials may change: 401,
    /// 403, or the 404 some registries answer for a private repository.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            EngineError::UpstreamStatus { status, .. }
                if matches!(status.as_u16(), 401 | 403 | 404)
        )
    }
}

impl From<OriginError> for EngineError {
    fn from(e: OriginError) -> Self {
        match e {
            OriginError::Status {
                status,
                www_authenticate,
            } => EngineError::UpstreamStatus {
                status,
                www_authenticate,
            },
            OriginError::Unreachable(m) => EngineError::UpstreamDown(m),
            OriginError::Timeout | OriginError::Stalled(_) => EngineError::UpstreamTimeout,
            OriginError::Forbidden(t) => EngineError::Forbidden(t.to_string()),
            OriginError::Protocol(m) => EngineError::UpstreamProtocol(m),
        }
    }
}

impl From<CacheError> for EngineError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Full { .. } => EngineError::CacheFull,
            other => EngineError::Cache(other.to_string()),
        }
    }
}
