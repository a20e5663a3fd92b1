//! Decisions about pieces, as pure functions: which pieces a range covers, where a piece
//! should come from, whether a reader is sequential and what to fetch ahead of it.
//!
//! Nothing here does I/O or reads a clock, so every rule is tested on its own: the read
//! path carries out whatever is decided through one match in the engine.
//!
//! Placement: each piece has one owner among the peers, by rendezvous (highest random
//! weight) hashing of the piece against every member. A node asks the owner for a piece it
//! lacks, and the owner alone asks the origin, so the origin sends each piece about once
//! per cluster however many nodes read it. Every node computes the same owner from the same
//! member list without talking to the others, and when a member leaves or is left out for
//! failing, only the pieces it owned move, each to the member that scored next.

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use sha2::{Digest, Sha256};

use crate::range::Span;

/// Where a missing piece can be downloaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    Origin,
    /// The peer that owns the piece; it answers from its cache or from the origin.
    Peer(SocketAddr),
}

/// A peer as placement sees it: its endpoint and a stable hash of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub addr: SocketAddr,
    pub hash: u64,
}

impl Member {
    pub fn new(addr: SocketAddr) -> Member {
        Member {
            addr,
            hash: stable_hash(addr.to_string().as_bytes()),
        }
    }
}

/// A hash every node computes alike, whatever its build or platform.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let d = Sha256::digest(bytes);
    u64::from_le_bytes(d[..8].try_into().expect("a sha256 has 32 bytes"))
}

/// The key placement hashes a piece by.
pub fn piece_key(blob: &str, index: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(blob.as_bytes());
    h.update(index.to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("32 bytes"))
}

/// The member that owns the piece with key `piece`: the highest score; ties, which need
/// equal 64-bit scores, go to the lower address so every node agrees.
pub fn owner(piece: u64, members: &[Member]) -> Option<SocketAddr> {
    members
        .iter()
        .max_by(|a, b| {
            let (sa, sb) = (score(piece, a.hash), score(piece, b.hash));
            sa.cmp(&sb).then_with(|| b.addr.cmp(&a.addr))
        })
        .map(|m| m.addr)
}

/// splitmix64 of the two hashes together: a well-mixed weight per (piece, member).
fn score(piece: u64, member: u64) -> u64 {
    let mut z = (piece ^ member.rotate_left(32)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
    /// The peer that owns the piece, when that is another node.
    pub owner: Option<SocketAddr>,
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

/// A piece owned by another node comes from it, whole: the origin is not asked for its
/// bytes, not even a small random read's.
pub fn decide(state: PieceState) -> Decision {
    match state {
        PieceState { cached: true, .. } => Decision::Read,
        PieceState {
            in_flight: true, ..
        } => Decision::Join,
        PieceState {
            owner: Some(peer), ..
        } => Decision::Fetch(Remote::Peer(peer)),
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

    fn members(n: u16) -> Vec<Member> {
        (0..n)
            .map(|i| {
                Member::new(SocketAddr::from((
                    [198, 18, (i >> 8) as u8, i as u8],
                    65002,
                )))
            })
            .collect()
    }

    #[test]
    fn every_piece_has_one_owner_and_the_load_is_even() {
        let m = members(10);
        let mut load = [0u32; 10];
        for i in 0..10_000 {
            let owner = owner(piece_key("sha256-abc", i), &m).unwrap();
            let at = m.iter().position(|x| x.addr == owner).unwrap();
            load[at] += 1;
        }
        // 1000 each on average; rendezvous hashing keeps each within a few percent.
        for l in load {
            assert!((850..1150).contains(&l), "{load:?}");
        }
        assert_eq!(owner(1, &[]), None);
    }

    #[test]
    fn the_order_of_the_list_does_not_matter() {
        let m = members(7);
        let mut r = m.clone();
        r.reverse();
        for i in 0..500 {
            let k = piece_key("b", i);
            assert_eq!(owner(k, &m), owner(k, &r));
        }
    }

    proptest! {
        #[test]
        fn a_member_leaving_moves_only_its_own_pieces(gone in 0usize..9, blob in "[a-z0-9-]{1,20}") {
            let m = members(9);
            let mut rest = m.clone();
            let left = rest.remove(gone).addr;
            for i in 0..200 {
                let k = piece_key(&blob, i);
                let before = owner(k, &m).unwrap();
                let after = owner(k, &rest).unwrap();
                prop_assert!(before == left || before == after);
            }
        }
    }

    #[test]
    fn pieces_owned_elsewhere_come_from_their_owner() {
        let peer = SocketAddr::from(([198, 18, 0, 2], 65002));
        let s = PieceState {
            cached: false,
            in_flight: false,
            small_random: true,
            owner: Some(peer),
        };
        assert_eq!(decide(s), Decision::Fetch(Remote::Peer(peer)));
        let cached = PieceState { cached: true, ..s };
        assert_eq!(decide(cached), Decision::Read);
        let coming = PieceState {
            in_flight: true,
            ..s
        };
        assert_eq!(decide(coming), Decision::Join);
    }

    #[test]
    fn decisions() {
        let state = |cached, in_flight, small_random| PieceState {
            cached,
            in_flight,
            small_random,
            owner: None,
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
