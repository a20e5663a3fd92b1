//! The piece cache: pieces of blobs stored as files on local disk, found through a compact
//! in-memory index, evicted least-recently-used by bytes, never evicted or deleted while a
//! [`PieceRef`] pins them, and never served unless their checksums match.
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/v1/blobs/<blob-id>/<index>.<gen>   one piece: 4 KiB header, then its bytes
//! <dir>/v1/blobs/<blob-id>/size            the blob's total size (text, checksummed)
//! <dir>/v1/tmp/<gen>.tmp                   pieces being written; all deleted at open
//! <dir>/v1/lru                             LRU order saved by `flush` (a hint only)
//! ```
//! `<index>` and `<gen>` are hex. The generation is unique per file within the cache (a
//! counter restarted above the highest one found at open), so a piece rewritten after
//! corruption gets a new file name while readers of the old one keep reading the old file,
//! and the open-file cache can never confuse the two. The header format is in the `format`
//! module.
//!
//! # Why per-chunk crc32c
//!
//! The header holds one crc32c per 16 KiB chunk. A read verifies exactly the chunks it
//! touches, so a 64 KiB random read checks at most 80 KiB (crc32c runs at many GB/s with
//! SSE4.2) instead of rehashing a whole 2 MiB piece; a sequential reader verifies each byte
//! once. A mismatch drops the piece and returns [`CacheError::Corrupt`], so the engine
//! refetches it; corrupt bytes are never returned. The whole-blob sha256 is a separate,
//! end-to-end check ([`Cache::verify_sha256`]) made once the blob is complete.
//!
//! # Crash safety
//!
//! A piece is written to `tmp/`, its header (length, chunk checksums, header checksum) is
//! written last, and only then is the file renamed into its blob directory: the rename is
//! atomic, so a piece file either is complete or does not exist. After `kill -9` the page
//! cache still holds everything written, so reopening finds every committed piece intact;
//! leftover temp files are deleted. Pieces are not fsynced: after a power loss the rename
//! may reach the disk before the data, but then the header checksum or the file length
//! fails at open, or a chunk checksum fails at read, and the piece is dropped and fetched
//! again. A cache can always refetch, so paying an fsync per piece on the cold path would
//! buy nothing. At open every piece header is read and checked (not the data: that would
//! read the whole cache), and the cache is then evicted down to its capacity.
//!
//! # Accounting and memory
//!
//! Capacity counts file bytes, headers included (0.2% of a 2 MiB piece). `begin` reserves
//! a piece's bytes before any are written, evicting unpinned least-recently-used pieces,
//! so concurrent writers can never overshoot the capacity. Reads allocate only the chunks
//! they cover (the requested length plus at most 128 KiB), so memory follows the number
//! and size of concurrent reads, not piece or cache size. Callers streaming a large range
//! should read it in slices (e.g. 256 KiB) rather than a whole piece at once. The index
//! costs about 80 bytes per piece (measured: 100,000 pieces grew the RSS by 7.5 MiB), so
//! a 4 GiB cache of 2 MiB pieces needs well under a megabyte.
//!
//! Open reads the piece headers one after another: about 14 us per piece with a warm page
//! cache (100,000 pieces in 1.4 s), so a cache of millions of small pieces opens in seconds.
//!
//! # I/O
//!
//! Positioned reads and writes by default: page-cache hits are read inline with
//! `preadv2(RWF_NOWAIT)`, everything else on tokio's blocking pool. With `IoBackend::IoUring`
//! one ring is owned by a dedicated thread; requests reach it over a bounded channel, an
//! eventfd read kept armed in the ring wakes it, and each answer goes back on a oneshot
//! channel. If the kernel refuses io_uring, open fails with
//! [`CacheError::IoUringUnavailable`] naming the kernel's error, and the caller decides
//! whether to fall back to positioned I/O. The `io` module has the details of both.
//!
//! Descriptors are kept in a bounded LRU (the `files` module): a warm hit then costs one
//! read and no `open`/`close` pair or header read. The index lock is held only for
//! bookkeeping; files are unlinked after it is released.

mod error;
mod files;
mod format;
mod id;
mod index;
mod io;
mod rebuild;
#[cfg(test)]
mod tests;
mod verify;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

pub use error::CacheError;
pub use format::{CHUNK, HEADER_LEN, MAX_PIECE_LEN};
pub use id::{BlobId, PieceId};
pub use io::IoBackend;
pub use writer::{Growing, PieceWriter};

use files::{Files, OpenPiece};
use format::Header;
use index::{Gone, Index};

/// Where the cache lives and how large it may grow.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub dir: PathBuf,
    /// Bytes of piece files (headers included) kept at most.
    pub capacity: u64,
    pub io: IoBackend,
    /// Bytes of blob a piece holds (the last piece of a blob may hold fewer). Piece `i` is
    /// only the same bytes under the same piece size, so the cache records it and empties
    /// itself when it is opened with another.
    pub piece_size: u64,
}

/// A snapshot for metrics and status; counters are cumulative since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub capacity: u64,
    pub used: u64,
    /// Bytes promised to pieces still being written.
    pub reserved: u64,
    pub pieces: u64,
    pub evictions: u64,
    pub corrupt_pieces: u64,
    pub integrity_failures: u64,
}

pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    index: Mutex<Index>,
    files: Files,
    io: io::Io,
    next_gen: AtomicU64,
}

/// Paths inside the cache directory.
struct Layout {
    blobs: PathBuf,
    tmp: PathBuf,
    lru: PathBuf,
    piece_size: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Self {
        let root = dir.join("v1");
        Layout {
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
            lru: root.join("lru"),
            piece_size: root.join("piece-size"),
        }
    }

    fn blob_dir(&self, blob: &BlobId) -> PathBuf {
        self.blobs.join(blob.as_str())
    }

    fn piece(&self, blob: &BlobId, index: u64, gen: u64) -> PathBuf {
        self.blob_dir(blob)
            .join(format::piece_file_name(index, gen))
    }

    fn size(&self, blob: &BlobId) -> PathBuf {
        self.blob_dir(blob).join("size")
    }

    fn tmp(&self, gen: u64) -> PathBuf {
        self.tmp.join(format!("{gen:x}.tmp"))
    }
}

/// A pinned piece: while it lives the piece is neither evicted nor deleted.
pub struct PieceRef {
    inner: Arc<Inner>,
    id: PieceId,
    slot: u32,
    gen: u64,
    len: u64,
}

impl PieceRef {
    pub fn id(&self) -> &PieceId {
        &self.id
    }

    /// The piece's length in bytes, as stored in its header.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Another pin on the same piece, e.g. one per waiter on a shared download.
impl Clone for PieceRef {
    fn clone(&self) -> Self {
        self.inner.index().pin_again(self.slot);
        PieceRef {
            inner: self.inner.clone(),
            id: self.id.clone(),
            slot: self.slot,
            gen: self.gen,
            len: self.len,
        }
    }
}

impl std::fmt::Debug for PieceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PieceRef({}, {} bytes)", self.id, self.len)
    }
}

impl Drop for PieceRef {
    fn drop(&mut self) {
        let gone = self.inner.index().unpin(self.slot);
        self.inner.delete(gone);
    }
}

impl Inner {
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes piece files the index gave up; call without the index lock held.
    fn delete(&self, gone: impl IntoIterator<Item = Gone>) {
        for g in gone {
            self.files.forget(g.gen);
            let path = self.layout.piece(&g.blob, g.index, g.gen);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    let (blob, piece) = (&g.blob, g.index);
                    tracing::warn!(%blob, piece, error = %e, "cannot delete piece");
                }
            }
            if g.last_of_blob {
                // The index forgot the size with the last piece; the record goes too, and
                // the directory when nothing else is in it.
                let _ = std::fs::remove_file(self.layout.size(&g.blob));
                let _ = std::fs::remove_dir(self.layout.blob_dir(&g.blob));
            }
        }
    }

    fn pin_ref(self: &Arc<Self>, id: PieceId, p: index::Pinned) -> PieceRef {
        PieceRef {
            inner: self.clone(),
            id,
            slot: p.slot,
            gen: p.gen,
            len: p.len,
        }
    }

    /// The open file and checksum table of a piece, from the descriptor cache or by opening
    /// the file and checking its header against what the index says.
    async fn open(&self, piece: &PieceRef) -> std::io::Result<Arc<OpenPiece>> {
        if let Some(open) = self.files.get(piece.gen) {
            return Ok(open);
        }
        let path = self.layout.piece(&piece.id.blob, piece.id.index, piece.gen);
        // Opened inline: the dentry is hot (every piece file was listed at open or written
        // since), so this is a microsecond syscall, where a hop to the blocking pool costs
        // milliseconds of tail latency under load.
        let file = Arc::new(File::open(path)?);
        let page = self
            .io
            .read_at(file.clone(), 0, HEADER_LEN as usize)
            .await?;
        let h = Header::decode(&page)?;
        if (h.index, h.len, h.gen) != (piece.id.index, piece.len, piece.gen) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "piece header does not match its name",
            ));
        }
        let open = Arc::new(OpenPiece {
            file,
            crcs: h.crcs.into_boxed_slice(),
        });
        self.files.put(piece.gen, open.clone());
        Ok(open)
    }

    /// Records a piece as corrupt: dropped from the index now, its file deleted once
    /// unpinned.
    fn corrupt(&self, piece: &PieceRef, why: &dyn std::fmt::Display) -> CacheError {
        let (blob, index) = (&piece.id.blob, piece.id.index);
        tracing::warn!(%blob, piece = index, reason = %why, "corrupt piece dropped");
        self.files.forget(piece.gen);
        let gone = self.index().mark_corrupt(piece.slot, piece.gen);
        self.delete(gone);
        CacheError::Corrupt(piece.id.clone())
    }
}

/// Errors that mean the file is not what was committed, as opposed to the disk failing.
fn is_damage(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), InvalidData | UnexpectedEof | NotFound)
}

impl Cache {
    /// Opens (creating if needed) the cache directory and rebuilds the index from it.
    pub async fn open(cfg: CacheConfig) -> Result<Arc<Cache>, CacheError> {
        let io = io::Io::new(cfg.io)?;
        let layout = Layout::new(&cfg.dir);
        let (index, next_gen, layout) = tokio::task::spawn_blocking(move || {
            rebuild::rebuild(layout, cfg.capacity, cfg.piece_size)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(Arc::new(Cache {
            inner: Arc::new(Inner {
                layout,
                index: Mutex::new(index),
                files: Files::new(files::OPEN_FILES),
                io,
                next_gen: AtomicU64::new(next_gen),
            }),
        }))
    }

    /// Finds a piece, marks it recently used and pins it for as long as the result lives.
    pub fn lookup(&self, id: &PieceId) -> Option<PieceRef> {
        let p = self.inner.index().lookup(&id.blob, id.index)?;
        Some(self.inner.pin_ref(id.clone(), p))
    }

    /// Reads `len` bytes at `offset` of a piece, verifying every chunk the range touches.
    pub async fn read(
        &self,
        piece: &PieceRef,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, CacheError> {
        let end = offset.checked_add(len as u64).filter(|&e| e <= piece.len);
        if end.is_none() {
            return Err(CacheError::OutOfRange {
                offset,
                len,
                piece_len: piece.len,
            });
        }
        if len == 0 {
            return Ok(Bytes::new());
        }
        let inner = &self.inner;
        let open = match inner.open(piece).await {
            Ok(open) => open,
            Err(e) if is_damage(&e) => return Err(inner.corrupt(piece, &e)),
            Err(e) => return Err(e.into()),
        };
        let (first, last) = format::chunk_span(offset, len as u64);
        let start = first * CHUNK;
        let stop = ((last + 1) * CHUNK).min(piece.len);
        let buf = match inner
            .io
            .read_at(
                open.file.clone(),
                HEADER_LEN + start,
                (stop - start) as usize,
            )
            .await
        {
            Ok(buf) => buf,
            Err(e) if is_damage(&e) => return Err(inner.corrupt(piece, &e)),
            Err(e) => return Err(e.into()),
        };
        for (i, chunk) in buf.chunks(CHUNK as usize).enumerate() {
            let want = open.crcs[first as usize + i];
            if crc32c::crc32c(chunk) != want {
                let why = format!("chunk {} checksum mismatch", first as usize + i);
                return Err(inner.corrupt(piece, &why));
            }
        }
        let skip = (offset - start) as usize;
        Ok(Bytes::from(buf).slice(skip..skip + len))
    }

    /// Starts writing a piece of `len` bytes, reserving its space now (evicting if needed).
    pub fn begin(&self, id: PieceId, len: u64) -> Result<PieceWriter, CacheError> {
        PieceWriter::begin(self.inner.clone(), id, len)
    }

    /// Records a blob's total size, durably (temp file, then rename). It survives a restart
    /// when at least one piece of the blob is cached by then.
    pub fn set_blob_size(&self, blob: &BlobId, size: u64) -> Result<(), CacheError> {
        let l = &self.inner.layout;
        let gen = self.inner.next_gen.fetch_add(1, Ordering::Relaxed);
        let tmp = l.tmp(gen);
        std::fs::create_dir_all(l.blob_dir(blob))?;
        std::fs::write(&tmp, format::encode_size(size))?;
        if let Err(e) = std::fs::rename(&tmp, l.size(blob)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        self.inner.index().set_blob_size(blob, size);
        Ok(())
    }

    pub fn blob_size(&self, blob: &BlobId) -> Option<u64> {
        self.inner.index().blob_size(blob)
    }

    /// Whether pieces `0..piece_count` are all present.
    pub fn has_all_pieces(&self, blob: &BlobId, piece_count: u64) -> bool {
        self.inner.index().has_all_pieces(blob, piece_count)
    }

    /// Checks a complete blob against its sha256, dropping it on mismatch.
    pub async fn verify_sha256(
        &self,
        blob: &BlobId,
        piece_size: u64,
        expected_hex: &str,
    ) -> Result<bool, CacheError> {
        verify::verify_sha256(self, blob, piece_size, expected_hex).await
    }

    /// Forgets a blob: its size now, its pieces now or, if pinned, when unpinned.
    pub fn remove_blob(&self, blob: &BlobId) {
        let gone = self.inner.index().remove_blob(blob);
        self.inner.delete(gone);
        let dir = self.inner.layout.blob_dir(blob);
        let _ = std::fs::remove_file(self.inner.layout.size(blob));
        // Fails harmlessly while pinned pieces remain; open removes empty directories.
        let _ = std::fs::remove_dir(dir);
    }

    pub fn stats(&self) -> CacheStats {
        let ix = self.inner.index();
        CacheStats {
            capacity: ix.capacity,
            used: ix.used,
            reserved: ix.reserved,
            pieces: ix.live,
            evictions: ix.counters.evictions,
            corrupt_pieces: ix.counters.corrupt_pieces,
            integrity_failures: ix.counters.integrity_failures,
        }
    }

    /// Saves the LRU order so the next open evicts in the same order; call at shutdown.
    pub async fn flush(&self) {
        let order = self.inner.index().lru_order();
        let inner = self.inner.clone();
        let res = tokio::task::spawn_blocking(move || {
            let gen = inner.next_gen.fetch_add(1, Ordering::Relaxed);
            rebuild::save_lru(&inner.layout, &order, gen)
        })
        .await;
        match res {
            Ok(Ok(n)) => tracing::info!(pieces = n, "cache index flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot save cache lru order"),
            Err(e) => tracing::warn!(error = %e, "cannot save cache lru order"),
        }
    }
}
