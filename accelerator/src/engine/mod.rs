//! The read path: from "bytes a..b of this blob" to bytes, piece by piece.
//!
//! A blob is cut into fixed pieces (2 MiB by default). Each piece is either in the cache and
//! streamed from disk, or downloaded once — one flight per missing piece however many readers
//! wait for it — and written to the cache while it arrives. A reader of a piece being
//! downloaded does not wait for the whole piece: once its own part of the piece has arrived
//! it is served from the bytes written so far, so a 64 KiB read at the start of a cold piece
//! waits for 64 KiB, not 2 MiB. The reader's part must be complete before its first byte is
//! sent, so a download that fails before then is still answered with a status, not a broken
//! body. Where a piece comes from is decided by `plan`, which does no I/O; this module
//! carries the decisions out.
//!
//! Why 2 MiB pieces: each piece costs one upstream request, and a registry answers a ranged
//! blob request in about 4 ms before the first byte; a cold read that is not bypassed waits
//! for its piece up to the read's end. In the serve benchmark (512 MiB blob, loopback,
//! read-ahead 4), cold sequential reads ran at 0.89x a plain ranged download with 1 MiB
//! pieces, 1.34x with 2 MiB and 2.05x with 4 MiB; warm reads did not depend on the piece
//! size. 1 MiB misses the 0.9x goal; 4 MiB doubles what a cold read near the end of a piece
//! waits for (on a 1 Gbit/s link, about 34 ms instead of 17 ms) and halves the pieces a
//! layer can be spread across. 2 MiB is the middle that meets both; `cache.pieceSize`
//! changes it.
//!
//! Limits: `proxyConcurrencyLimit` bounds the blobs downloaded at once (further blobs wait
//! for a slot, pieces of a blob already downloading do not); read-ahead fetches the next
//! pieces for sequential readers; the optional throttle caps bytes sent downstream.

mod blob_slots;
mod error;
mod fetch;
mod probe;
mod stream;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;
use tokio::sync::watch;

use crate::cache::{BlobId, Cache, CacheError, Growing, PieceId, PieceRef};
use crate::origin::{Opened, Origin};
use crate::peer::Peers;
use crate::plan::{self, Decision, Layout, PieceState, Remote};
use crate::range::Span;
use crate::target::Target;
use crate::telemetry::{AuditOp, Kind, Source, Telemetry};
use crate::throttle::Throttle;

pub use error::EngineError;
pub use stream::BodyStream;

/// Blobs whose sequential position is remembered for read-ahead.
const SEQUENTIAL_MEMORY: usize = 1024;
/// Downloaded pieces remembered until their first read, so that bytes fetched ahead of a
/// reader count as coming from the origin, not as cache hits; past this many (pieces fetched
/// ahead and never read) the memory is cleared and some first reads count as hits.
const FRESH_MEMORY: usize = 65_536;
/// Whole pieces served from memory at once when the cache is full: 8 x 2 MiB at most.
const UNCACHED_PIECES: usize = 8;
/// Tries to get a piece into the cache before a reader is served from memory instead.
const MISS_ROUNDS: usize = 3;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub piece_size: u64,
    pub read_ahead: u32,
    pub proxy_concurrency: u32,
    pub throttle_mb: u64,
    /// Cold random reads up to this many bytes are fetched straight from the remote while
    /// their piece downloads; 0 makes every read wait for its piece.
    pub bypass_limit: u64,
}

/// One blob as a request sees it: where it lives upstream, the credentials to get it, its size.
pub struct Blob {
    pub target: Target,
    pub id: BlobId,
    pub auth: Option<HeaderValue>,
    pub layout: Layout,
    /// Redacted URL, for logs and audit lines.
    pub shown: String,
    /// Read on behalf of a peer: its pieces come from this node's cache or the origin,
    /// never from a third node.
    pub origin_only: bool,
}

impl Blob {
    /// `shown` is `target` redacted, which the caller has made already.
    fn new(
        target: Target,
        id: BlobId,
        auth: Option<HeaderValue>,
        layout: Layout,
        shown: String,
        origin_only: bool,
    ) -> Blob {
        Blob {
            target,
            id,
            auth,
            layout,
            shown,
            origin_only,
        }
    }
}

/// One piece download as its readers see it.
#[derive(Clone)]
pub(super) struct Flight {
    /// The piece's bytes as they arrive, from the moment its cache file is open until the
    /// download ends.
    growing: Option<Growing>,
    /// How the download ended.
    result: Option<Result<(), EngineError>>,
    /// The credentials the download asks with: those of the reader that started it.
    auth: Option<HeaderValue>,
    /// Set by the first reader served from `growing`, while it holds the flight's lock:
    /// that reader counts the piece as coming from `source`, every later one as a cache hit.
    read_while_growing: Arc<AtomicBool>,
    /// Where the download asks first: the origin, or the peer that owns the piece.
    source: Source,
}

pub struct Engine {
    cache: Arc<Cache>,
    origin: Arc<Origin>,
    telemetry: Arc<Telemetry>,
    cfg: EngineConfig,
    throttle: Option<Throttle>,
    flights: Mutex<HashMap<PieceId, watch::Receiver<Flight>>>,
    slots: blob_slots::BlobSlots,
    /// Last byte served per blob, to tell sequential readers from random ones.
    positions: Mutex<HashMap<BlobId, u64>>,
    verifying: Mutex<HashSet<BlobId>>,
    /// Pieces downloaded ahead of their first reader, with where they came from: that read
    /// still counts as origin (or peer) bytes.
    fresh: Mutex<HashMap<PieceId, Source>>,
    /// The other nodes pieces are shared with; `None` without peers.
    peers: Option<Arc<Peers>>,
    /// Size probes under way, by blob; a reader arriving meanwhile waits for the result.
    probes: Mutex<HashMap<BlobId, watch::Receiver<Option<u64>>>>,
    /// Bounds the whole pieces held in memory when the cache has no room for them.
    uncached: Arc<tokio::sync::Semaphore>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    pub fn new(
        cache: Arc<Cache>,
        origin: Arc<Origin>,
        telemetry: Arc<Telemetry>,
        cfg: EngineConfig,
        peers: Option<Arc<Peers>>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            throttle: Throttle::new(cfg.throttle_mb),
            slots: blob_slots::BlobSlots::new(cfg.proxy_concurrency as usize),
            cache,
            origin,
            telemetry,
            cfg,
            flights: Mutex::new(HashMap::new()),
            positions: Mutex::new(HashMap::new()),
            verifying: Mutex::new(HashSet::new()),
            fresh: Mutex::new(HashMap::new()),
            peers,
            probes: Mutex::new(HashMap::new()),
            uncached: Arc::new(tokio::sync::Semaphore::new(UNCACHED_PIECES)),
        })
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.peers.as_ref()
    }

    pub fn piece_size(&self) -> u64 {
        self.cfg.piece_size
    }

    /// The other node that owns piece `index` of `blob`, unless the blob is read for a peer.
    fn owner(&self, blob: &Blob, index: u64) -> Option<SocketAddr> {
        if blob.origin_only {
            return None;
        }
        self.peers.as_ref()?.owner(&blob.id, index)
    }

    /// A blob as a peer's request describes it (its size told, not probed).
    pub fn peer_blob(
        &self,
        target: Target,
        id: BlobId,
        auth: Option<HeaderValue>,
        size: u64,
    ) -> Arc<Blob> {
        let shown = target.redacted();
        Arc::new(Blob::new(target, id, auth, self.layout(size), shown, true))
    }

    fn layout(&self, size: u64) -> Layout {
        Layout {
            size,
            piece_size: self.cfg.piece_size,
        }
    }

    /// The whole piece `index` of `blob`, for a peer: no read-ahead, no bypass.
    pub fn peer_piece(self: &Arc<Self>, blob: Arc<Blob>, index: u64) -> BodyStream {
        let (start, len) = blob.layout.piece(index);
        let span = Span {
            start,
            end: start + len - 1,
        };
        BodyStream::new(self.clone(), blob, span, None)
    }

    /// Streams `span` of `blob`, starting read-ahead when the reader is sequential.
    pub fn read(self: &Arc<Self>, blob: Arc<Blob>, span: Span) -> BodyStream {
        let probe = plan::is_size_probe(span);
        let sequential = !probe && {
            let mut positions = lock(&self.positions);
            let previous = positions.get(&blob.id).copied();
            if positions.len() >= SEQUENTIAL_MEMORY && previous.is_none() {
                positions.clear();
            }
            positions.insert(blob.id.clone(), span.end);
            plan::is_sequential(previous, span.start, self.cfg.piece_size)
        };
        let last = span.end / self.cfg.piece_size;
        if sequential {
            for index in plan::read_ahead(blob.layout, last, self.cfg.read_ahead) {
                self.prefetch(&blob, index);
            }
        }
        let bypass = plan::small_random(blob.layout, span, sequential, self.cfg.bypass_limit)
            .then_some(span);
        BodyStream::new(self.clone(), blob, span, bypass)
    }

    /// Starts a download of `index` if it is neither cached nor already coming.
    fn prefetch(self: &Arc<Self>, blob: &Arc<Blob>, index: u64) {
        let id = PieceId::new(blob.id.clone(), index);
        let state = PieceState {
            cached: self.cache.lookup(&id).is_some(),
            in_flight: lock(&self.flights).contains_key(&id),
            small_random: false,
            owner: self.owner(blob, index),
        };
        if let Decision::Fetch(remote) = plan::decide(state) {
            let _ = self.flight(blob, id, remote);
        }
    }

    /// A pinned, cached piece to read now, or the one download of it to read as it arrives;
    /// with where its bytes came from as the reader sees it. `bypass` is the reader's span
    /// when it is a small random read: if the piece must be fetched, those bytes come
    /// straight from the remote, held in memory, while the piece downloads beside them.
    async fn piece(
        self: &Arc<Self>,
        blob: &Arc<Blob>,
        index: u64,
        bypass: Option<Span>,
    ) -> Result<(Held, Source), EngineError> {
        let id = PieceId::new(blob.id.clone(), index);
        if index == 0 {
            // A size request under way may be bringing this piece (a peer asks for it while
            // this node's own reader is finding the size): its download is joined once the
            // answer is in, rather than a second one started.
            let probing = lock(&self.probes).get(&blob.id).cloned();
            if let Some(mut probe) = probing {
                let _ = probe.wait_for(|size| size.is_some()).await;
            }
        }
        let mut misses = 0;
        // Whether this reader joined a download that the origin refused for another reader's
        // credentials and then asked with its own.
        let mut asked_with_own = false;
        while misses < MISS_ROUNDS {
            let cached = self.cache.lookup(&id);
            let in_flight = cached.is_none() && lock(&self.flights).contains_key(&id);
            let decision = plan::decide(PieceState {
                cached: cached.is_some(),
                in_flight,
                small_random: bypass.is_some(),
                owner: if cached.is_some() || in_flight {
                    None
                } else {
                    self.owner(blob, index)
                },
            });
            let remote = match (decision, bypass) {
                (Decision::Read, _) => {
                    if let Some(piece) = cached {
                        let source = lock(&self.fresh).remove(&id).unwrap_or(Source::Cache);
                        return Ok((Held::Cached(piece), source));
                    }
                    misses += 1;
                    continue;
                }
                (Decision::FetchAndBypass(remote), Some(span)) => {
                    let _ = self.flight(blob, id.clone(), remote);
                    let data = self
                        .fetch_bytes(remote, blob, span.start, span.len())
                        .await?;
                    let held = Held::Memory {
                        from: span.start - index * self.cfg.piece_size,
                        data,
                        _permit: None,
                    };
                    return Ok((held, Source::Origin));
                }
                (Decision::Fetch(remote) | Decision::FetchAndBypass(remote), _) => remote,
                // The running download is joined; the remote matters only if it ended meanwhile.
                (Decision::Join, _) => Remote::Origin,
            };
            let mut rx = self.flight(blob, id.clone(), remote);
            if blob.origin_only && rx.borrow().source == Source::Peer {
                // A peer asks for a piece this node is itself fetching from a peer: when the
                // two disagree about the owner, each would wait on the other until a
                // timeout. This answer comes from the origin instead, held in memory.
                return self.uncached(blob, index).await;
            }
            // A reader taking the piece as it grows says so while it looks, under the same
            // lock the end of the download takes to decide whether the piece is fresh. The
            // first such reader has the origin's bytes; later ones share what is on disk.
            let mut first_reader = false;
            let flight = match rx
                .wait_for(|f| {
                    if f.result.is_none() && f.growing.is_some() {
                        first_reader = !f.read_while_growing.swap(true, Ordering::Relaxed);
                    }
                    f.result.is_some() || f.growing.is_some()
                })
                .await
            {
                Ok(f) => f.clone(),
                Err(_) => return Err(abandoned()),
            };
            let retry_own = !asked_with_own
                && matches!(&flight.result, Some(Err(e)) if refused_for_other(e, &flight, blob));
            match (flight.result, flight.growing) {
                (Some(Err(EngineError::CacheFull)), _) => break,
                // The origin refused the credentials of the reader that started the
                // download; this reader's own may do better.
                (Some(Err(_)), _) if retry_own => {
                    asked_with_own = true;
                    continue;
                }
                (Some(Err(e)), _) => return Err(e),
                (None, Some(growing)) => {
                    let source = if first_reader {
                        flight.source
                    } else {
                        Source::Cache
                    };
                    return Ok((
                        Held::Growing {
                            growing,
                            flight: rx,
                        },
                        source,
                    ));
                }
                _ => {}
            }
            if let Some(piece) = self.cache.lookup(&id) {
                let source = lock(&self.fresh).remove(&id).unwrap_or(flight.source);
                return Ok((Held::Cached(piece), source));
            }
            // Evicted between the download and this read: try again.
            misses += 1;
        }
        // The cache has no room this piece can have (every piece pinned by readers, or
        // evicted as fast as it arrives): serve this reader from memory, uncached.
        tracing::warn!(blob = %blob.shown, piece = index, "cache full: serving a piece uncached");
        self.uncached(blob, index).await
    }

    /// Piece `index` of `blob` from the origin into memory, past the cache.
    async fn uncached(&self, blob: &Blob, index: u64) -> Result<(Held, Source), EngineError> {
        let permit = self.uncached.clone().acquire_owned().await.ok();
        let (start, len) = blob.layout.piece(index);
        let data = self.fetch_bytes(Remote::Origin, blob, start, len).await?;
        let held = Held::Memory {
            from: 0,
            data,
            _permit: permit,
        };
        Ok((held, Source::Origin))
    }

    /// Waits for the end of a download whose bytes a reader was taking as they came, and
    /// hands it the committed piece for the rest; `None` if the piece was evicted meanwhile.
    /// With `may_retry`, a download the origin refused for another reader's credentials is
    /// `Retry`.
    async fn finished(
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
    fn flight(
        self: &Arc<Self>,
        blob: &Arc<Blob>,
        id: PieceId,
        remote: Remote,
    ) -> watch::Receiver<Flight> {
        self.start_flight(blob, id, Start::Remote(remote))
    }

    /// [`Engine::flight`], for any way a download can begin.
    fn start_flight(
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

    /// Reads `len` bytes at `offset` of a cached piece, or of one being written, recording
    /// disk metrics.
    async fn read_piece(
        &self,
        blob: &Blob,
        piece: Readable<'_>,
        index: u64,
        offset: u64,
        len: usize,
    ) -> Result<bytes::Bytes, CacheError> {
        let started = Instant::now();
        let result = match piece {
            Readable::Cached(piece) => self.cache.read(piece, offset, len).await,
            Readable::Growing(growing) => growing.read(offset, len).await,
        };
        let elapsed = started.elapsed();
        let at = index * self.cfg.piece_size + offset;
        match &result {
            Ok(data) => {
                self.telemetry
                    .record(Kind::Disk, data.len() as u64, elapsed);
                self.telemetry.audit(
                    AuditOp::FileRead,
                    &blob.shown,
                    at,
                    data.len() as i64,
                    elapsed,
                );
            }
            Err(_) => self
                .telemetry
                .audit(AuditOp::FileRead, &blob.shown, at, -1, elapsed),
        }
        result
    }

    pub(crate) async fn throttle(&self, bytes: u64) {
        if let Some(t) = &self.throttle {
            t.take(bytes).await;
        }
    }
}

/// How a piece download begins: a request to a remote, or an origin answer already open
/// with the blob's download slot it was asked in.
pub(super) enum Start {
    Remote(Remote),
    Opened(Opened, blob_slots::SlotGuard),
}

/// Whether a download failed because the origin refused the credentials of the reader that
/// started it, where this reader has other credentials to try.
fn refused_for_other(e: &EngineError, flight: &Flight, blob: &Blob) -> bool {
    e.is_refusal() && flight.auth != blob.auth
}

fn abandoned() -> EngineError {
    EngineError::Cache("download abandoned".into())
}

/// How a download a reader was taking as it came ended, for that reader.
pub(super) enum Finished {
    /// The piece is in the cache (`None`: evicted since).
    Committed(Option<PieceRef>),
    /// The origin refused the credentials the download asked with; the reader's own may do.
    Retry,
}

/// A piece file a reader can read from.
pub(super) enum Readable<'a> {
    Cached(&'a PieceRef),
    Growing(&'a Growing),
}

/// A piece as a reader holds it: pinned in the cache, being downloaded (with the download
/// to follow), or (part of) it in memory, from offset `from` of the piece, when the cache
/// had no room or the read bypassed it.
pub(super) enum Held {
    Cached(PieceRef),
    Growing {
        growing: Growing,
        flight: watch::Receiver<Flight>,
    },
    Memory {
        from: u64,
        data: Bytes,
        /// Held with a whole piece, so that few of them are in memory at once.
        _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
}
