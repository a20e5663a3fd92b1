//! Errors at the cache boundary. Messages are short and lowercase; none carries a path,
//! so the HTTP layer may log them but must map them to a status without echoing them.

use std::io;

use super::PieceId;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("invalid blob id {0:?}: allowed are 1..=100 of [a-z0-9-]")]
    InvalidBlobId(String),
    #[error("invalid piece length {0}: allowed are 1..=8388608 bytes")]
    InvalidLength(u64),
    #[error("cache full: {need} bytes wanted, {evictable} evictable of {capacity}")]
    Full {
        need: u64,
        evictable: u64,
        capacity: u64,
    },
    #[error("piece {0} failed its checksum and was dropped")]
    Corrupt(PieceId),
    #[error("read of {len} bytes at {offset} is outside piece of {piece_len} bytes")]
    OutOfRange {
        offset: u64,
        len: usize,
        piece_len: u64,
    },
    #[error("piece write too long: {len} bytes declared")]
    Overflow { len: u64 },
    #[error("piece incomplete: {written} of {len} bytes written")]
    Incomplete { written: u64, len: u64 },
    #[error("blob {0} is not complete in cache")]
    BlobIncomplete(String),
    #[error("invalid sha256 hex {0:?}")]
    InvalidDigest(String),
    #[error("io_uring unavailable (kernel refused it; use positioned I/O instead): {0}")]
    IoUringUnavailable(#[source] io::Error),
    #[error("cache i/o failed: {0}")]
    Io(#[from] io::Error),
}
