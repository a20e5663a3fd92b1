//! Writing one piece: bytes stream into a temp file at their final offsets while the chunk
//! checksums are computed on the way, so no piece is ever held whole in memory. `commit`
//! writes the header last and renames the file into place, which is the moment the piece
//! becomes visible. Dropping an uncommitted writer deletes the temp file and gives the
//! reserved bytes back, so a failed or abandoned download leaves nothing behind.
//!
//! Small writes (network frames are often 16 KiB) are gathered into a 64 KiB buffer before
//! they go to the backend, so a 2 MiB piece costs about 32 positioned writes instead of one
//! per frame; slices of that size or more go straight through. That buffer is the only
//! memory a writer holds.
//!
//! While the piece is written, [`Growing`] lets readers have the bytes already handed to the
//! backend: they sit in the temp file (in the page cache), so a reader waiting for the start
//! of a piece gets it as soon as it arrives instead of after the whole piece. Those bytes came
//! from the remote in this process and have not been through a checksum; once committed,
//! reads go through the piece's chunk checksums as usual.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::format::{ChunkSummer, Header, HEADER_LEN, MAX_PIECE_LEN};
use super::index::disk_bytes;
use super::{CacheError, Inner, PieceId, PieceRef};

/// Bytes gathered before one positioned write.
const WRITE_BATCH: usize = 64 * 1024;

pub struct PieceWriter {
    inner: Arc<Inner>,
    id: PieceId,
    len: u64,
    /// Bytes accepted from the caller: `flushed` plus those still in `pending`.
    written: u64,
    /// Bytes handed to the backend, all contiguous from the start of the data.
    flushed: u64,
    pending: Vec<u8>,
    gen: u64,
    tmp: PathBuf,
    file: Arc<File>,
    sums: ChunkSummer,
    /// Set while a write is in flight and left set if it fails or is cancelled half-way,
    /// which poisons the piece.
    broken: bool,
    /// Cleared once the piece is committed (or its bytes handed over).
    reserved: u64,
    /// `flushed`, for the [`Growing`] views; closed when the writer goes away.
    progress: watch::Sender<u64>,
}

/// A view of a piece being written: the bytes flushed so far, readable while more arrive.
#[derive(Clone)]
pub struct Growing {
    inner: Arc<Inner>,
    file: Arc<File>,
    len: u64,
    ready: watch::Receiver<u64>,
}

impl std::fmt::Debug for Growing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Growing")
            .field("len", &self.len)
            .field("ready", &*self.ready.borrow())
            .finish()
    }
}

impl Growing {
    /// Bytes readable now, from the start of the piece.
    pub fn ready(&self) -> u64 {
        *self.ready.borrow()
    }

    /// Waits until more than `offset` bytes are readable; `false` once the writer has gone
    /// (committed or failed) without getting that far.
    pub async fn wait_past(&mut self, offset: u64) -> bool {
        self.ready.wait_for(|r| *r > offset).await.is_ok()
    }

    /// Reads `len` bytes at `offset`, all of which must be readable already.
    pub async fn read(&self, offset: u64, len: usize) -> Result<Bytes, CacheError> {
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= self.ready());
        if end.is_none() {
            return Err(CacheError::OutOfRange {
                offset,
                len,
                piece_len: self.ready(),
            });
        }
        let data = self
            .inner
            .io
            .read_at(self.file.clone(), HEADER_LEN + offset, len)
            .await?;
        Ok(Bytes::from(data))
    }
}

impl PieceWriter {
    pub(super) fn begin(inner: Arc<Inner>, id: PieceId, len: u64) -> Result<Self, CacheError> {
        if len == 0 || len > MAX_PIECE_LEN {
            return Err(CacheError::InvalidLength(len));
        }
        let need = disk_bytes(len);
        let capacity = inner.index().capacity;
        let gone = inner
            .index()
            .reserve(need)
            .map_err(|(need, evictable)| CacheError::Full {
                need,
                evictable,
                capacity,
            })?;
        inner.delete(gone);
        let gen = inner.next_gen.fetch_add(1, Ordering::Relaxed);
        let tmp = inner.layout.tmp(gen);
        let opened = std::fs::create_dir_all(inner.layout.blob_dir(&id.blob)).and_then(|()| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
        });
        let file = match opened {
            Ok(f) => Arc::new(f),
            Err(e) => {
                inner.index().release(need);
                return Err(e.into());
            }
        };
        Ok(PieceWriter {
            inner,
            id,
            len,
            progress: watch::Sender::new(0),
            written: 0,
            flushed: 0,
            pending: Vec::new(),
            gen,
            tmp,
            file,
            sums: ChunkSummer::default(),
            broken: false,
            reserved: need,
        })
    }

    pub fn id(&self) -> &PieceId {
        &self.id
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// A view of the bytes written so far that follows the writer as it goes on.
    pub fn growing(&self) -> Growing {
        Growing {
            inner: self.inner.clone(),
            file: self.file.clone(),
            len: self.len,
            ready: self.progress.subscribe(),
        }
    }

    /// Appends bytes to the piece. After any failed write the writer only fails: the piece
    /// can no longer be trusted and must be dropped.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), CacheError> {
        if self.broken {
            return Err(CacheError::Incomplete {
                written: self.written,
                len: self.len,
            });
        }
        if self.written + data.len() as u64 > self.len {
            self.broken = true;
            return Err(CacheError::Overflow { len: self.len });
        }
        if data.is_empty() {
            return Ok(());
        }
        self.broken = true;
        self.sums.update(data);
        self.written += data.len() as u64;
        let mut data = data;
        if !self.pending.is_empty() {
            let take = (WRITE_BATCH - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == WRITE_BATCH {
                self.flush().await?;
            }
        }
        if data.len() >= WRITE_BATCH {
            self.put(data.to_vec()).await?;
        } else if !data.is_empty() {
            self.pending.reserve_exact(WRITE_BATCH);
            self.pending.extend_from_slice(data);
        }
        self.broken = false;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), CacheError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.pending);
        self.put(buf).await
    }

    async fn put(&mut self, buf: Vec<u8>) -> Result<(), CacheError> {
        let (at, n) = (HEADER_LEN + self.flushed, buf.len() as u64);
        self.inner.io.write_at(self.file.clone(), at, buf).await?;
        self.flushed += n;
        self.progress.send_replace(self.flushed);
        Ok(())
    }

    /// Makes the piece visible, pinned for the caller. Fails (and discards it) unless exactly
    /// the declared length was written.
    pub async fn commit(mut self) -> Result<PieceRef, CacheError> {
        if self.broken || self.written != self.len {
            return Err(CacheError::Incomplete {
                written: self.written,
                len: self.len,
            });
        }
        self.broken = true;
        self.flush().await?;
        debug_assert_eq!(self.flushed, self.len);
        let header = Header {
            index: self.id.index,
            len: self.len,
            gen: self.gen,
            crcs: std::mem::take(&mut self.sums).finish(),
        };
        self.inner
            .io
            .write_at(self.file.clone(), 0, header.encode())
            .await?;
        let layout_dir = self.inner.layout.blob_dir(&self.id.blob);
        let dest = self
            .inner
            .layout
            .piece(&self.id.blob, self.id.index, self.gen);
        let tmp = self.tmp.clone();
        tokio::task::spawn_blocking(move || match std::fs::rename(&tmp, &dest) {
            // The blob directory may have been removed by `remove_blob` since `begin`.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&layout_dir)?;
                std::fs::rename(&tmp, &dest)
            }
            other => other,
        })
        .await
        .map_err(std::io::Error::other)??;
        let (pinned, replaced) = self.inner.index().insert(
            &self.id.blob,
            self.id.index,
            self.gen,
            self.len,
            self.reserved,
            true,
        );
        self.reserved = 0;
        self.broken = false;
        self.inner.delete(replaced);
        let (blob, piece, bytes) = (&self.id.blob, self.id.index, self.len);
        tracing::debug!(%blob, piece, bytes, "piece committed");
        Ok(self.inner.pin_ref(self.id.clone(), pinned))
    }
}

impl Drop for PieceWriter {
    fn drop(&mut self) {
        if self.reserved > 0 {
            self.inner.index().release(self.reserved);
            let _ = std::fs::remove_file(&self.tmp);
            // A commit cancelled during its rename may have moved the file already; the
            // name is unique to this writer, so removing it cannot hit another piece.
            let l = &self.inner.layout;
            let _ = std::fs::remove_file(l.piece(&self.id.blob, self.id.index, self.gen));
        }
    }
}
