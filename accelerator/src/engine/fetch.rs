//! Getting a piece's bytes from a remote: into the cache (the one download of a piece,
//! with the whole-blob digest check once the last piece lands) or into memory (a small
//! random read's own bytes, or a piece the full cache cannot take). `fetch_from` is the one
//! place a planned remote (the origin, or the peer that owns the piece) becomes bytes. The
//! one piece that skips it is a blob's first piece when the origin's answer to the size
//! request is already bringing it: that answer is read into the piece rather than asked
//! for again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::flight::{Flight, Start};
use super::{lock, Blob, Engine, EngineError, FRESH_MEMORY};
use crate::cache::{PieceId, PieceWriter};
use crate::origin::{OriginError, Sink};
use crate::plan::Remote;
use crate::target::BlobKey;
use crate::telemetry::{AuditOp, Kind, Source};

impl Engine {
    /// The one place a planned remote turns into bytes, counted as download (origin) or
    /// peer bytes; returns where they came from. A peer that fails is left out of placement
    /// for a while and the origin brings the rest: a reader never fails for a peer.
    pub(super) async fn fetch_from<S: Sink>(
        &self,
        remote: Remote,
        blob: &Blob,
        start: u64,
        len: u64,
        sink: &mut S,
    ) -> Result<Source, OriginError> {
        let started = Instant::now();
        let mut from_peer = 0;
        if let (Remote::Peer(peer), Some(peers)) = (remote, &self.peers) {
            let index = start / self.cfg.piece_size;
            let (got, result) = peers.client.fetch(peer, blob, index, len, sink).await;
            peers
                .traffic(peer.ip())
                .received
                .fetch_add(got, Ordering::Relaxed);
            from_peer = got;
            match result {
                Ok(()) => {
                    self.telemetry.record(Kind::Peer, got, started.elapsed());
                    return Ok(Source::Peer);
                }
                Err(e) => {
                    // A refusal the owner relays (the origin's 401, say) is not the peer
                    // failing; anything else leaves it out of placement for a while.
                    if !e.is_refusal() {
                        peers.failed(peer);
                    }
                    tracing::warn!(blob = %blob.shown, piece = index, %peer, error = %e, "peer failed: the origin brings the rest");
                    if got > 0 {
                        self.telemetry.record(Kind::Peer, got, started.elapsed());
                    }
                }
            }
        }
        let (start, len) = (start + from_peer, len - from_peer);
        let started = Instant::now();
        self.origin
            .fetch(&blob.target.uri, blob.auth.as_ref(), start, len, sink)
            .await?;
        self.telemetry
            .record(Kind::Download, len, started.elapsed());
        Ok(Source::Origin)
    }

    /// Downloads `len` bytes at `start` into memory, outside the cache.
    pub(super) async fn fetch_bytes(
        &self,
        remote: Remote,
        blob: &Blob,
        start: u64,
        len: u64,
    ) -> Result<Bytes, EngineError> {
        let _slot = self.slots.enter(&blob.id).await;
        let _inflight = self.telemetry.download_started();
        let started = Instant::now();
        let mut sink = MemorySink(BytesMut::with_capacity(len as usize));
        let fetched = self.fetch_from(remote, blob, start, len, &mut sink).await;
        let size = if fetched.is_ok() { len as i64 } else { -1 };
        self.telemetry.audit(
            AuditOp::Download,
            &blob.shown,
            start,
            size,
            started.elapsed(),
        );
        fetched?;
        Ok(sink.0.freeze())
    }

    /// Fetches one piece into the cache; nothing is kept unless all of it arrived. Readers
    /// see the bytes written so far through `flight` while it runs. Returns where the
    /// piece came from.
    pub(super) async fn download(
        self: &Arc<Self>,
        blob: &Arc<Blob>,
        id: &PieceId,
        begin: Start,
        flight: &watch::Sender<Flight>,
    ) -> Result<Source, EngineError> {
        // An open answer comes with the slot it was asked in, held until it is read.
        let _slot = match &begin {
            Start::Remote(_) => Some(self.slots.enter(&blob.id).await),
            Start::Opened(..) => None,
        };
        let _inflight = self.telemetry.download_started();
        let (start, len) = blob.layout.piece(id.index);
        let started = Instant::now();
        let writer = self.cache.begin(id.clone(), len)?;
        flight.send_modify(|f| f.growing = Some(writer.growing()));
        let mut sink = WriterSink(writer);
        let fetched = match begin {
            Start::Remote(remote) => self.fetch_from(remote, blob, start, len, &mut sink).await,
            Start::Opened(opened, _held) => {
                let (uri, auth) = (&blob.target.uri, blob.auth.as_ref());
                let fetched = self
                    .origin
                    .fetch_opened(opened, uri, auth, len, &mut sink)
                    .await;
                if fetched.is_ok() {
                    self.telemetry
                        .record(Kind::Download, len, started.elapsed());
                }
                fetched.map(|()| Source::Origin)
            }
        };
        let elapsed = started.elapsed();
        self.telemetry.audit(
            AuditOp::Download,
            &blob.shown,
            start,
            if fetched.is_ok() { len as i64 } else { -1 },
            elapsed,
        );
        let source = fetched?;
        let write_started = Instant::now();
        let committed = sink.0.commit().await;
        let write_elapsed = write_started.elapsed();
        self.telemetry.audit(
            AuditOp::FileWrite,
            &blob.shown,
            start,
            if committed.is_ok() { len as i64 } else { -1 },
            write_elapsed,
        );
        committed?;
        // The bytes went to disk while they arrived; the commit is the part a write waits on.
        self.telemetry.record(Kind::Disk, len, write_elapsed);
        self.after_commit(blob);
        Ok(source)
    }

    /// Remembers a downloaded piece until its first read, which counts as bytes from
    /// `source`.
    pub(super) fn mark_fresh(&self, id: &PieceId, source: Source) {
        let mut fresh = lock(&self.fresh);
        if fresh.len() >= FRESH_MEMORY {
            fresh.clear();
        }
        fresh.insert(id.clone(), source);
    }

    /// Verifies a digest-keyed blob once all its pieces are cached; a mismatch drops it.
    pub(super) fn after_commit(self: &Arc<Self>, blob: &Arc<Blob>) {
        let BlobKey::Digest(hex) = &blob.target.key else {
            return;
        };
        if !self
            .cache
            .has_all_pieces(&blob.id, blob.layout.piece_count())
        {
            return;
        }
        if !lock(&self.verifying).insert(blob.id.clone()) {
            return;
        }
        let engine = self.clone();
        let blob = blob.clone();
        let hex = hex.clone();
        tokio::spawn(async move {
            match engine
                .cache
                .verify_sha256(&blob.id, engine.cfg.piece_size, &hex)
                .await
            {
                Ok(true) => tracing::debug!(blob = %blob.shown, "blob digest verified"),
                Ok(false) => {
                    engine.telemetry.integrity_failure();
                    tracing::warn!(blob = %blob.shown, "blob digest mismatch: dropped from cache");
                }
                Err(e) => {
                    tracing::warn!(blob = %blob.shown, error = %e, "blob digest check failed")
                }
            }
            lock(&engine.verifying).remove(&blob.id);
        });
    }
}

struct MemorySink(BytesMut);

impl Sink for MemorySink {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
}

struct WriterSink(PieceWriter);

impl Sink for WriterSink {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write(data).await.map_err(std::io::Error::other)
    }
}
