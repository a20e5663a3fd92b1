//! Identities of cached data. A [`BlobId`] is chosen by the engine (a digest or a hash of
//! a URL) and becomes a directory name on disk, so it is validated to a small alphabet that
//! can never form a path component like `..`, a separator or a hidden file.

use std::fmt;
use std::sync::Arc;

use super::CacheError;

/// Longest accepted blob id; `sha256-` plus 64 hex digits is 71.
pub const MAX_BLOB_ID_LEN: usize = 100;

/// Filesystem-safe identity of a blob: only `[a-z0-9-]`, 1 to 100 characters.
///
/// Cheap to clone (shared string), because every piece reference carries one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(Arc<str>);

impl BlobId {
    pub fn new(s: &str) -> Result<Self, CacheError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_BLOB_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(BlobId(Arc::from(s)))
        } else {
            Err(CacheError::InvalidBlobId(s.chars().take(120).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.0)
    }
}

/// One piece of a blob: pieces are numbered from 0 at the blob's start.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PieceId {
    pub blob: BlobId,
    pub index: u64,
}

impl PieceId {
    pub fn new(blob: BlobId, index: u64) -> Self {
        PieceId { blob, index }
    }
}

impl fmt::Display for PieceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.blob, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_engine_shapes() {
        let hex = "0123456789abcdef".repeat(4);
        assert!(BlobId::new(&format!("sha256-{hex}")).is_ok());
        assert!(BlobId::new(&format!("url-{hex}")).is_ok());
        assert!(BlobId::new("a").is_ok());
        assert!(BlobId::new(&"a".repeat(MAX_BLOB_ID_LEN)).is_ok());
    }

    #[test]
    fn rejects_unsafe_or_malformed() {
        for bad in [
            "",
            "..",
            ".",
            "../etc",
            "a/b",
            "/abs",
            "a\\b",
            "Sha256-ab",
            "ABC",
            "sha256:ab",
            "a b",
            "a\0b",
            ".hidden",
            "é",
        ] {
            assert!(
                matches!(BlobId::new(bad), Err(CacheError::InvalidBlobId(_))),
                "{bad:?} accepted"
            );
        }
        assert!(BlobId::new(&"a".repeat(MAX_BLOB_ID_LEN + 1)).is_err());
    }
}
