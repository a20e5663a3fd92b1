//! The one error type of the harness. Start-up failures carry the tail of the process's output,
//! since that is almost always where the reason is.

use std::io;
use std::process::ExitStatus;

/// Everything that can go wrong while starting, driving or querying a real process.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{name} not ready at {url} after {attempts} attempts\n{logs}")]
    NotReady {
        name: String,
        url: String,
        attempts: u32,
        logs: String,
    },
    #[error("{name} exited with {status} before it was ready\n{logs}")]
    Exited {
        name: String,
        status: ExitStatus,
        logs: String,
    },
    #[error("{name} is not running")]
    NotRunning { name: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed with {status}: {stderr}")]
    Command {
        program: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("http {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("unexpected answer from {what}: {detail}")]
    Unexpected { what: String, detail: String },
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn http(url: impl Into<String>, reason: impl ToString) -> Self {
        Self::Http {
            url: url.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn unexpected(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Unexpected {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
