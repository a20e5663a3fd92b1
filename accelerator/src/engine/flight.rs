//! One download per missing piece: the table of downloads under way, how a download
//! begins (a request to a remote, or an origin answer already open) and ends, and what a
//! reader that took a piece as it came learns when it does. Readers find a running
//! download here and join it instead of starting another.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::HeaderValue;
use tokio::sync::watch;

use super::blob_slots::SlotGuard;
use super::{lock, Blob, Engine, EngineError};
use crate::cache::{Growing, PieceId, PieceRef};
use crate::origin::Opened;
use crate::plan::Remote;
use crate::telemetry::Source;

/// One piece download as its readers see it.
#[derive(Clone)]
pub(crate) struct Flight {
    /// The piece's bytes as they arrive, from the moment its cache file is open until the
    /// download ends.
    pub(super) growing: Option<Growing>,
    /// How the download ended.
    pub(super) result: Option<Result<(), EngineError>>,
    /// The credentials the download asks with: those of the reader that started it.
    pub(super) auth: Option<HeaderValue>,
    /// Set by the first reader served from `growing`, while it holds the flight's lock:
    /// that reader counts the piece as coming from `source`, every later one as a cache hit.
    pub(super) read_while_growing: Arc<AtomicBool>,
    /// Where the download asks first: the origin, or the peer that owns the piece.
    pub(super) source: Source,
}

impl Engine {
    /// Waits for the end of a download whose bytes a reader was taking as they came, and
    /// hands it the committed piece for the rest; `None` if the piece was evicted meanwhile.
    /// With `may_retry`, a download the origin refused for another reader's credentials is
    /// `Retry`.
    pub(super) async fn finished(
        &self,
        blob: &Blob,
        id: &PieceId,
        flight: &mut watch::Receiver<Flight>,
        may_retry: bool,
    ) -> Result<Finished, EngineError> {
        let ended = match flight.wait_for(|f| f.result.is_some()).await {
            Ok(f) => f.clone(),
            Err(_) => return Err(abandoned()),
        };
        match ended.result {
            Some(Ok(())) => Ok(Finished::Committed(self.cache.lookup(id))),
            Some(Err(e)) if may_retry && refused_for_other(&e, &ended, blob) => Ok(Finished::Retry),
            Some(Err(e)) => Err(e),
            None => Err(abandoned()),
        }
    }

    /// The download of `id`: joined when running, started from `remote` otherwise.
    pub(super) fn flight(
        self: &Arc<Self>,
        blob: &Arc<Blob>,
        id: PieceId,
        remote: Remote,
    ) -> watch::Receiver<Flight> {
        self.start_flight(blob, id, Start::Remote(remote))
    }

    /// [`Engine::flight`], for any way a download can begin.
    pub(super) fn start_flight(
        self: &Arc<Self>,
        blob: &Arc<Blob>,
        id: PieceId,
        start: Start,
    ) -> watch::Receiver<Flight> {
        let mut flights = lock(&self.flights);
        // A download that has ended but not yet left the table is not joined: its reader
        // is here because it wants another try.
        if let Some(rx) = flights.get(&id).filter(|rx| rx.borrow().result.is_none()) {
            return rx.clone();
        }
        let source = match &start {
            Start::Remote(Remote::Peer(_)) => Source::Peer,
            _ => Source::Origin,
        };
        let (tx, rx) = watch::channel(Flight {
            auth: blob.auth.clone(),
            source,
            growing: None,
            result: None,
            read_while_growing: Arc::default(),
        });
        if self.cache.lookup(&id).is_some() {
            // Committed between the caller's lookup and this lock.
            tx.send_modify(|f| f.result = Some(Ok(())));
            return rx;
        }
        flights.insert(id.clone(), rx.clone());
        drop(flights);
        let engine = self.clone();
        let blob = blob.clone();
        let own = rx.clone();
        tokio::spawn(async move {
            let result = engine.download(&blob, &id, start, &tx).await;
            if let Err(e) = &result {
                tracing::warn!(blob = %blob.shown, piece = id.index, error = %e, "piece download failed");
            }
            tx.send_modify(|f| {
                // No reader can take the growing piece past this point, and one that did
                // has said so: a piece nobody read yet counts as origin (or peer) bytes for
                // its first reader, which is marked before any reader can see the download
                // ended.
                if let Ok(source) = &result {
                    if !f.read_while_growing.load(Ordering::Relaxed) {
                        engine.mark_fresh(&id, *source);
                    }
                }
                f.result = Some(result.map(|_| ()));
                f.growing = None;
            });
            let mut flights = lock(&engine.flights);
            if flights.get(&id).is_some_and(|rx| rx.same_channel(&own)) {
                flights.remove(&id);
            }
        });
        rx
    }

    /// Waits until no piece download is running, or until `deadline`; whether they all
    /// ended.
    pub async fn downloads_settled(&self, deadline: tokio::time::Instant) -> bool {
        const POLL: std::time::Duration = std::time::Duration::from_millis(10);
        loop {
            if lock(&self.flights).is_empty() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// How a piece download begins: a request to a remote, or an origin answer already open
/// with the blob's download slot it was asked in.
pub(super) enum Start {
    Remote(Remote),
    Opened(Opened, SlotGuard),
}

/// Whether a download failed because the origin refused the credentials of the reader that
/// started it, where this reader has other credentials to try.
pub(super) fn refused_for_other(e: &EngineError, flight: &Flight, blob: &Blob) -> bool {
    e.is_refusal() && flight.auth != blob.auth
}

pub(super) fn abandoned() -> EngineError {
    EngineError::Cache("download abandoned".into())
}

/// How a download a reader was taking as it came ended, for that reader.
pub(super) enum Finished {
    /// The piece is in the cache (`None`: evicted since).
    Committed(Option<PieceRef>),
    /// The origin refused the credentials the download asked with; the reader's own may do.
    Retry,
}
