//! The label values shared by both metric sets and the status document: the documented
//! `type` and `mode` values and the `source` of served bytes. Their spelling is what
//! dashboards match on, so it lives in one place.

use serde::{Deserialize, Serialize};

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

    pub(crate) fn index(self) -> usize {
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
