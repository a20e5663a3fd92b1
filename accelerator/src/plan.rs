//! Decisions about pieces, as pure functions: which pieces a range covers, where a piece
//! should come from, whether a reader is sequential and what to fetch ahead of it.
//!
//! Nothing here does I/O or reads a clock, so every rule is tested on its own and the peer
//! engine can add sources by extending [`Remote`] and [`decide`]: the read path carries out
//! whatever is decided through one match in the engine.

use std::ops::RangeInclusive;

use crate::range::Span;

/// Where a missing piece can be downloaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    Origin,
}

/// What the read path knows about a piece at the moment it needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceState {
    pub cached: bool,
    /// A download of this piece is already running on this node.
    pub in_flight: bool,
    /// The reader wants only a small part of this piece and is not reading sequentially
    /// (overlaybd's lazy reads of a compressed layer), within the configured size.
    pub small_random: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve from the local cache now.
    Read,
    /// Another reader's download will bring it: wait for that one.
    Join,
    /// Start a download from there.
    Fetch(Remote),
    /// Start a download of the piece from there, and meanwhile fetch the reader's own bytes
    /// from there too: a small random read then waits for its bytes, not for the piece.
    FetchAndBypass(Remote),
}

pub fn decide(state: PieceState) -> Decision {
    match state {
        PieceState { cached: true, .. } => Decision::Read,
        PieceState {
            in_flight: true, ..
        } => Decision::Join,
        PieceState {
            small_random: true, ..
        } => Decision::FetchAndBypass(Remote::Origin),
        _ => Decision::Fetch(Remote::Origin),
    }
}

/// Whether a read of `span` is one the bypass serves: inside one piece, at most `limit`
/// bytes, not continuing a sequential stream (those are served by read-ahead), and ending
/// past the piece's first `limit` bytes: a read nearer the start has its bytes from the
/// piece's own download as soon as a separate request would bring them.
pub fn small_random(layout: Layout, span: Span, sequential: bool, limit: u64) -> bool {
    let piece = span.start / layout.piece_size;
    !sequential
        && span.len() <= limit
        && piece == span.end / layout.piece_size
        && span.end - piece * layout.piece_size >= limit
}

/// Geometry of one blob cut into pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub size: u64,
    pub piece_size: u64,
}

impl Layout {
    pub fn piece_count(&self) -> u64 {
        self.size.div_ceil(self.piece_size)
    }

    /// Offset and length of piece `index`; the last piece may be short.
    pub fn piece(&self, index: u64) -> (u64, u64) {
        let start = index * self.piece_size;
        (start, self.piece_size.min(self.size - start))
    }

    pub fn pieces(&self, span: Span) -> RangeInclusive<u64> {
        span.start / self.piece_size..=span.end / self.piece_size
    }
}

/// Whether the request that finds a blob's size should also download its first piece: it
/// does when the reader starts there (`start`, when known before the size is).
pub fn probe_takes_first_piece(start: Option<u64>, piece_size: u64) -> bool {
    start.is_some_and(|s| s < piece_size)
}

/// Whether a read is the `bytes=0-0` size probe overlaybd sends before any other read of a
/// blob. It says nothing about how the blob will be read, so it neither starts nor
/// continues a sequential stream.
pub fn is_size_probe(span: Span) -> bool {
    span.start == 0 && span.end == 0
}

/// A read continues a sequential stream when it starts after the previous read's end and
/// no more than one piece beyond it: overlaybd's reads of a compressed layer skip small gaps.
pub fn is_sequential(previous_end: Option<u64>, start: u64, piece_size: u64) -> bool {
    match previous_end {
        Some(end) => start > end && start - end <= piece_size,
        None => start == 0,
    }
}

/// Pieces to fetch ahead of a sequential reader now at piece `current`; empty at the end.
pub fn read_ahead(layout: Layout, current: u64, window: u32) -> std::ops::Range<u64> {
    let end = (current + 1 + u64::from(window)).min(layout.piece_count());
    (current + 1)..end.max(current + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decisions() {
        let state = |cached, in_flight, small_random| PieceState {
            cached,
            in_flight,
            small_random,
        };
        assert_eq!(decide(state(true, true, true)), Decision::Read);
        assert_eq!(decide(state(false, true, true)), Decision::Join);
        assert_eq!(
            decide(state(false, false, false)),
            Decision::Fetch(Remote::Origin)
        );
        assert_eq!(
            decide(state(false, false, true)),
            Decision::FetchAndBypass(Remote::Origin)
        );
    }

    #[test]
    fn the_probe_takes_the_first_piece_for_a_reader_starting_in_it() {
        assert!(probe_takes_first_piece(Some(0), 10));
        assert!(probe_takes_first_piece(Some(9), 10));
        assert!(!probe_takes_first_piece(Some(10), 10));
        assert!(
            !probe_takes_first_piece(None, 10),
            "a suffix range or a HEAD"
        );
    }

    #[test]
    fn only_the_first_byte_is_a_size_probe() {
        assert!(is_size_probe(Span { start: 0, end: 0 }));
        assert!(!is_size_probe(Span { start: 0, end: 1 }));
        assert!(!is_size_probe(Span { start: 1, end: 1 }));
    }

    #[test]
    fn small_random_reads() {
        let l = Layout {
            size: 100,
            piece_size: 10,
        };
        assert!(small_random(l, Span { start: 12, end: 15 }, false, 4));
        assert!(small_random(l, Span { start: 14, end: 14 }, false, 4));
        assert!(
            !small_random(l, Span { start: 10, end: 13 }, false, 4),
            "within the piece's first bytes"
        );
        assert!(
            !small_random(l, Span { start: 11, end: 12 }, false, 4),
            "within the piece's first bytes"
        );
        assert!(
            !small_random(l, Span { start: 12, end: 16 }, false, 4),
            "over the limit"
        );
        assert!(
            !small_random(l, Span { start: 12, end: 15 }, true, 4),
            "sequential"
        );
        assert!(
            !small_random(l, Span { start: 8, end: 11 }, false, 4),
            "two pieces"
        );
        assert!(
            !small_random(l, Span { start: 12, end: 15 }, false, 0),
            "off"
        );
    }

    #[test]
    fn layout() {
        let l = Layout {
            size: 10,
            piece_size: 4,
        };
        assert_eq!(l.piece_count(), 3);
        assert_eq!(l.piece(2), (8, 2));
        assert_eq!(l.pieces(Span { start: 3, end: 8 }), 0..=2);
        assert_eq!(l.pieces(Span { start: 4, end: 4 }), 1..=1);
    }

    #[test]
    fn sequential_detection() {
        assert!(is_sequential(None, 0, 4));
        assert!(!is_sequential(None, 100, 4));
        assert!(is_sequential(Some(9), 10, 4));
        assert!(is_sequential(Some(9), 13, 4));
        assert!(!is_sequential(Some(9), 14, 4));
        assert!(!is_sequential(Some(9), 5, 4));
    }

    #[test]
    fn read_ahead_stays_in_the_blob() {
        let l = Layout {
            size: 10 * 4,
            piece_size: 4,
        };
        assert_eq!(read_ahead(l, 0, 4), 1..5);
        assert_eq!(read_ahead(l, 8, 4), 9..10);
        assert!(read_ahead(l, 9, 4).is_empty());
        assert!(read_ahead(l, 0, 0).is_empty());
    }

    proptest! {
        #[test]
        fn pieces_cover_the_span_exactly(size in 1u64..10_000, ps in 1u64..512, a in 0u64..10_000, b in 0u64..10_000) {
            let l = Layout { size, piece_size: ps };
            let (a, b) = (a.min(b) % size, a.max(b) % size);
            let (a, b) = (a.min(b), a.max(b));
            let pieces = l.pieces(Span { start: a, end: b });
            let (first_start, _) = l.piece(*pieces.start());
            let (last_start, last_len) = l.piece(*pieces.end());
            prop_assert!(first_start <= a && a < first_start + ps);
            prop_assert!(last_start <= b && b < last_start + last_len);
            prop_assert!(*pieces.end() < l.piece_count());
        }
    }
}
