//! Finding a blob's size: from the cache's record, else from the origin, once for all the
//! readers that want it at the same time. When the reader starts in the first piece, the
//! request that finds the size asks for that whole piece and its body becomes the piece's
//! download, so a cold first read costs one origin round trip instead of two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::HeaderValue;
use tokio::sync::watch;

use super::blob_slots::SlotGuard;
use super::flight::Start;
use super::{lock, Blob, Engine, EngineError};
use crate::cache::{BlobId, PieceId};
use crate::origin::Opened;
use crate::plan;
use crate::target::Target;
use crate::telemetry::AuditOp;

impl Engine {
    /// Resolves a target to a blob of known size: from the cache's record, else from the
    /// origin. When the reader starts at byte `start` of the first piece, the request that
    /// finds the size is also that piece's download, so a cold read costs one round trip
    /// to the origin instead of two.
    pub async fn open(
        self: &Arc<Self>,
        target: Target,
        auth: Option<HeaderValue>,
        start: Option<u64>,
    ) -> Result<Arc<Blob>, EngineError> {
        let id = BlobId::new(&target.key.name()).map_err(|e| EngineError::Cache(e.to_string()))?;
        let shown = target.redacted();
        let probed = match self.cache.blob_size(&id) {
            Some(size) => Probed::Known(size),
            None => {
                self.probe_size(&id, &target.uri, auth.as_ref(), &shown, start)
                    .await?
            }
        };
        let size = match &probed {
            Probed::Known(size) => *size,
            Probed::Led { opened, .. } => opened.size,
        };
        let layout = self.layout(size);
        let blob = Arc::new(Blob::new(target, id, auth, layout, shown, false));
        match probed {
            Probed::Known(_) => {}
            Probed::Led {
                opened,
                slot,
                tx,
                _entry,
            } => {
                if past_the_end(start, size) {
                    self.origin.discard(opened).await;
                } else {
                    if size > 0 {
                        let first = PieceId::new(blob.id.clone(), 0);
                        let _ = self.start_flight(&blob, first, Start::Opened(opened, slot));
                    }
                    // Only now is the size told, to the readers waiting for it and through
                    // the cache to those yet to come: all of them find the first piece
                    // already downloading instead of asking for it again.
                    self.record_size(&blob.id, size);
                }
                let _ = tx.send(Some(size));
            }
        }
        Ok(blob)
    }

    /// Asks the origin for a blob's size, once for all the readers that want it at the same
    /// time. Only a success is shared: a reader whose turn failed (a 401 for its credentials,
    /// say) does not make the others fail, they ask with their own. With `first_piece`, the
    /// reader that asks gets the open answer, whose body is the blob's first piece, and
    /// tells the others once that piece is downloading.
    async fn probe_size(
        &self,
        id: &BlobId,
        uri: &http::Uri,
        auth: Option<&HeaderValue>,
        shown: &str,
        start: Option<u64>,
    ) -> Result<Probed<'_>, EngineError> {
        let leader = {
            let mut probes = lock(&self.probes);
            match probes.get(id) {
                Some(rx) => Err(rx.clone()),
                None => {
                    // A probe that ended between the caller's cache lookup and this lock has
                    // recorded the size before leaving the table.
                    if let Some(size) = self.cache.blob_size(id) {
                        return Ok(Probed::Known(size));
                    }
                    let (tx, rx) = watch::channel(None);
                    probes.insert(id.clone(), rx);
                    Ok((
                        tx,
                        ProbeEntry {
                            probes: &self.probes,
                            id: id.clone(),
                        },
                    ))
                }
            }
        };
        let (tx, entry) = match leader {
            Ok(leading) => leading,
            Err(mut rx) => {
                if let Ok(done) = rx.wait_for(|r| r.is_some()).await {
                    if let Some(size) = *done {
                        return Ok(Probed::Known(size));
                    }
                }
                // That probe failed or was abandoned: this reader asks with its own
                // credentials, without taking the lead.
                let size = self.size_only(id, uri, auth, shown, start).await?;
                return Ok(Probed::Known(size));
            }
        };
        // The first piece comes with the size only when this node is the one to ask the
        // origin for it (another owner is asked instead) and does not have it or have it
        // coming yet: a peer's request may have started its download, and a second copy
        // would be thrown away once its bytes had left the origin.
        let owned_elsewhere = self
            .peers
            .as_ref()
            .is_some_and(|p| p.owner(id, 0).is_some());
        let first = PieceId::new(id.clone(), 0);
        let cached = self.cache.lookup(&first).is_some();
        let coming = lock(&self.flights).contains_key(&first);
        if owned_elsewhere
            || cached
            || coming
            || !plan::probe_takes_first_piece(start, self.cfg.piece_size)
        {
            let size = self.size_only(id, uri, auth, shown, start).await?;
            let _ = tx.send(Some(size));
            return Ok(Probed::Known(size));
        }
        let (opened, slot) = self
            .ask_size(id, uri, auth, shown, self.cfg.piece_size)
            .await?;
        Ok(Probed::Led {
            opened,
            slot,
            tx,
            _entry: entry,
        })
    }

    /// A blob's size from a `bytes=0-0` request, recorded in the cache unless the reader
    /// starting at `start` is to be refused.
    async fn size_only(
        &self,
        id: &BlobId,
        uri: &http::Uri,
        auth: Option<&HeaderValue>,
        shown: &str,
        start: Option<u64>,
    ) -> Result<u64, EngineError> {
        let (opened, _slot) = self.ask_size(id, uri, auth, shown, 1).await?;
        let size = opened.size;
        self.origin.discard(opened).await;
        if !past_the_end(start, size) {
            self.record_size(id, size);
        }
        Ok(size)
    }

    fn record_size(&self, id: &BlobId, size: u64) {
        if let Err(e) = self.cache.set_blob_size(id, size) {
            tracing::warn!(blob = %id.as_str(), error = %e, "cannot record blob size");
        }
    }

    /// One request for the first `len` bytes of a blob, in the blob's download slot
    /// (`proxyConcurrencyLimit`), which it returns for as long as the answer is read; the
    /// caller records the size.
    async fn ask_size(
        &self,
        id: &BlobId,
        uri: &http::Uri,
        auth: Option<&HeaderValue>,
        shown: &str,
        len: u64,
    ) -> Result<(Opened, SlotGuard), EngineError> {
        let slot = self.slots.enter(id).await;
        let started = Instant::now();
        let result = self.origin.open_first(uri, auth, len).await;
        let size = result.as_ref().map(|o| o.size as i64).unwrap_or(-1);
        self.telemetry
            .audit(AuditOp::RpcStat, shown, 0, size, started.elapsed());
        Ok((result?, slot))
    }
}

/// Whether a read starting at `start` lies past the end of a blob of `size` bytes: it is
/// refused with a 416, and the probe that found the size keeps nothing, neither the size
/// nor the first piece.
fn past_the_end(start: Option<u64>, size: u64) -> bool {
    start.is_some_and(|s| s >= size)
}

/// What a size probe found: a size, or (for the reader that asked the origin) the open
/// answer and the means to tell the readers waiting for it.
enum Probed<'a> {
    Known(u64),
    Led {
        opened: Opened,
        slot: SlotGuard,
        tx: watch::Sender<Option<u64>>,
        _entry: ProbeEntry<'a>,
    },
}

/// A size probe's place in the table, removed however the probe ends (the reader may go
/// away mid-way), so later readers never wait on a probe nobody runs.
struct ProbeEntry<'a> {
    probes: &'a Mutex<HashMap<BlobId, watch::Receiver<Option<u64>>>>,
    id: BlobId,
}

impl Drop for ProbeEntry<'_> {
    fn drop(&mut self) {
        lock(self.probes).remove(&self.id);
    }
}
