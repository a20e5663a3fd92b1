//! The end-to-end check of a complete blob: its pieces, read in order through the normal
//! checksummed read path, must hash to the digest the blob is named by. Chunk checksums
//! only prove a piece is what was stored; this proves what was stored is what was asked
//! for. It reads in 256 KiB slices, so verifying a large blob costs no large buffer.

use sha2::{Digest, Sha256};

use super::{BlobId, Cache, CacheError, PieceId, MAX_PIECE_LEN};

const SLICE: u64 = 256 * 1024;

pub(super) async fn verify_sha256(
    cache: &Cache,
    blob: &BlobId,
    piece_size: u64,
    expected_hex: &str,
) -> Result<bool, CacheError> {
    let expected = hex::decode(expected_hex)
        .ok()
        .filter(|d| d.len() == 32)
        .ok_or_else(|| CacheError::InvalidDigest(expected_hex.chars().take(80).collect()))?;
    if piece_size == 0 || piece_size > MAX_PIECE_LEN {
        return Err(CacheError::InvalidLength(piece_size));
    }
    let incomplete = || CacheError::BlobIncomplete(blob.to_string());
    let size = cache.blob_size(blob).ok_or_else(incomplete)?;
    let mut hasher = Sha256::new();
    let mut lengths_ok = true;
    for i in 0..size.div_ceil(piece_size) {
        let piece = cache
            .lookup(&PieceId::new(blob.clone(), i))
            .ok_or_else(incomplete)?;
        let want_len = piece_size.min(size - i * piece_size);
        if piece.len() != want_len {
            lengths_ok = false;
            break;
        }
        let mut off = 0;
        while off < want_len {
            let n = SLICE.min(want_len - off);
            hasher.update(cache.read(&piece, off, n as usize).await?);
            off += n;
        }
    }
    if lengths_ok && hasher.finalize().as_slice() == expected.as_slice() {
        return Ok(true);
    }
    cache.inner.index().counters.integrity_failures += 1;
    tracing::warn!(blob = %blob, bytes = size, "blob failed sha256 verification; dropped");
    cache.remove_blob(blob);
    Ok(false)
}
