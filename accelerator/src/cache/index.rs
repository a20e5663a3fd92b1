//! The in-memory index: which pieces exist, their LRU order, pins and byte accounting.
//! Pure bookkeeping under one mutex, no I/O: callers get back the files to delete and
//! unlink them after the lock is released.
//!
//! Compactness matters because small pieces can mean millions of entries: nodes live in a
//! slab (`Vec`) and the LRU list links them by `u32` slot, so a piece costs one 40-byte node
//! plus one hash-map entry; blob ids are interned once per blob, not stored per piece.
//!
//! A node is *live* (findable, in the LRU list) or *doomed* (removed from both but still
//! pinned by a reader, so its file stays until the last pin goes). Its bytes count towards
//! `used` until the file is deleted, because they still occupy the disk.

use std::collections::HashMap;

use super::format::HEADER_LEN;
use super::BlobId;

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Free,
    Live,
    Doomed,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    index: u64,
    gen: u64,
    blob: u32,
    len: u32,
    pins: u32,
    prev: u32,
    next: u32,
    state: State,
}

struct BlobEntry {
    id: BlobId,
    /// Forgotten with the blob's last piece, so sizes of blobs that left the cache do not
    /// pile up while the daemon runs.
    size: Option<u64>,
    /// Nodes (live or doomed) naming this blob; the entry is freed when this is zero and
    /// no size is recorded.
    refs: u32,
}

/// A file the caller must delete (and forget any open descriptor of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    pub blob: BlobId,
    pub index: u64,
    pub gen: u64,
    /// The blob's last piece: its size record goes too.
    pub last_of_blob: bool,
}

/// A pinned live piece, as handed out by [`Index::lookup`] and [`Index::insert`].
#[derive(Debug, Clone, Copy)]
pub struct Pinned {
    pub slot: u32,
    pub gen: u64,
    pub len: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub evictions: u64,
    pub corrupt_pieces: u64,
    pub integrity_failures: u64,
}

pub struct Index {
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Most recently used end of the list.
    head: u32,
    /// Least recently used end: eviction starts here.
    tail: u32,
    map: HashMap<(u32, u64), u32>,
    blobs: Vec<Option<BlobEntry>>,
    blob_map: HashMap<BlobId, u32>,
    free_blobs: Vec<u32>,
    pub capacity: u64,
    /// Bytes of piece files on disk (header included), live and doomed.
    pub used: u64,
    /// Bytes promised to writers that have not committed yet.
    pub reserved: u64,
    pub live: u64,
    pub counters: Counters,
}

/// Stores `v` in a free slot of `slab` if there is one, else at its end.
fn slab_put<T>(slab: &mut Vec<T>, free: &mut Vec<u32>, v: T) -> u32 {
    match free.pop() {
        Some(s) => {
            slab[s as usize] = v;
            s
        }
        None => {
            slab.push(v);
            (slab.len() - 1) as u32
        }
    }
}

pub fn disk_bytes(len: u64) -> u64 {
    HEADER_LEN + len
}

impl Index {
    pub fn new(capacity: u64) -> Self {
        Index {
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            map: HashMap::new(),
            blobs: Vec::new(),
            blob_map: HashMap::new(),
            free_blobs: Vec::new(),
            capacity,
            used: 0,
            reserved: 0,
            live: 0,
            counters: Counters::default(),
        }
    }

    fn blob_slot(&mut self, id: &BlobId) -> u32 {
        if let Some(&b) = self.blob_map.get(id) {
            return b;
        }
        let entry = Some(BlobEntry {
            id: id.clone(),
            size: None,
            refs: 0,
        });
        let b = slab_put(&mut self.blobs, &mut self.free_blobs, entry);
        self.blob_map.insert(id.clone(), b);
        b
    }

    fn blob(&self, b: u32) -> &BlobEntry {
        self.blobs[b as usize].as_ref().expect("blob entry in use")
    }

    fn blob_mut(&mut self, b: u32) -> &mut BlobEntry {
        self.blobs[b as usize].as_mut().expect("blob entry in use")
    }

    fn maybe_free_blob(&mut self, b: u32) {
        let e = self.blob(b);
        if e.refs == 0 && e.size.is_none() {
            let id = e.id.clone();
            self.blob_map.remove(&id);
            self.blobs[b as usize] = None;
            self.free_blobs.push(b);
        }
    }

    fn unlink(&mut self, s: u32) {
        let Node { prev, next, .. } = self.nodes[s as usize];
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, s: u32) {
        let old = self.head;
        self.nodes[s as usize].prev = NIL;
        self.nodes[s as usize].next = old;
        match old {
            NIL => self.tail = s,
            o => self.nodes[o as usize].prev = s,
        }
        self.head = s;
    }

    /// Finds a live piece, marks it most recently used and pins it.
    pub fn lookup(&mut self, blob: &BlobId, index: u64) -> Option<Pinned> {
        let b = *self.blob_map.get(blob)?;
        let s = *self.map.get(&(b, index))?;
        self.unlink(s);
        self.push_front(s);
        let n = &mut self.nodes[s as usize];
        n.pins += 1;
        Some(Pinned {
            slot: s,
            gen: n.gen,
            len: n.len as u64,
        })
    }

    /// Adds a pin to a piece already pinned by the caller (live or doomed).
    pub fn pin_again(&mut self, slot: u32) {
        let n = &mut self.nodes[slot as usize];
        debug_assert!(n.pins > 0 && n.state != State::Free);
        n.pins += 1;
    }

    /// Drops one pin; returns the file to delete if the piece was doomed and this was the
    /// last pin.
    pub fn unpin(&mut self, slot: u32) -> Option<Gone> {
        let n = &mut self.nodes[slot as usize];
        debug_assert!(n.pins > 0 && n.state != State::Free);
        n.pins -= 1;
        (n.pins == 0 && n.state == State::Doomed).then(|| self.free_node(slot))
    }

    fn free_node(&mut self, s: u32) -> Gone {
        let n = self.nodes[s as usize];
        self.nodes[s as usize].state = State::Free;
        self.free.push(s);
        self.used -= disk_bytes(n.len as u64);
        let entry = self.blob_mut(n.blob);
        entry.refs -= 1;
        let last_of_blob = entry.refs == 0;
        if last_of_blob {
            entry.size = None;
        }
        let gone = Gone {
            blob: self.blob(n.blob).id.clone(),
            index: n.index,
            gen: n.gen,
            last_of_blob,
        };
        self.maybe_free_blob(n.blob);
        gone
    }

    /// Takes a live piece out of the index: deleted now if unpinned, else when unpinned.
    fn detach(&mut self, s: u32) -> Option<Gone> {
        let n = self.nodes[s as usize];
        if n.state != State::Live {
            return None;
        }
        self.unlink(s);
        self.map.remove(&(n.blob, n.index));
        self.live -= 1;
        self.nodes[s as usize].state = State::Doomed;
        (n.pins == 0).then(|| self.free_node(s))
    }

    /// Drops a piece found corrupt; counts it once even if several readers report it.
    pub fn mark_corrupt(&mut self, slot: u32, gen: u64) -> Option<Gone> {
        let n = self.nodes[slot as usize];
        if n.state != State::Live || n.gen != gen {
            return None;
        }
        self.counters.corrupt_pieces += 1;
        self.detach(slot)
    }

    /// Reserves `need` disk bytes, choosing least-recently-used unpinned pieces to evict.
    /// Nothing changes when the space cannot be found.
    pub fn reserve(&mut self, need: u64) -> Result<Vec<Gone>, (u64, u64)> {
        let target = self.capacity.checked_sub(need);
        let mut victims = Vec::new();
        let mut freed = 0u64;
        let mut s = self.tail;
        let fits = |freed: u64| match target {
            Some(t) => self.used + self.reserved - freed <= t,
            None => false,
        };
        while !fits(freed) && s != NIL {
            let n = &self.nodes[s as usize];
            if n.pins == 0 {
                victims.push(s);
                freed += disk_bytes(n.len as u64);
            }
            s = n.prev;
        }
        if !fits(freed) {
            return Err((need, self.evictable()));
        }
        self.reserved += need;
        self.counters.evictions += victims.len() as u64;
        Ok(victims.into_iter().filter_map(|v| self.detach(v)).collect())
    }

    fn evictable(&self) -> u64 {
        let mut sum = 0;
        let mut s = self.tail;
        while s != NIL {
            let n = &self.nodes[s as usize];
            if n.pins == 0 {
                sum += disk_bytes(n.len as u64);
            }
            s = n.prev;
        }
        sum
    }

    pub fn release(&mut self, reserved: u64) {
        self.reserved -= reserved;
    }

    /// Evicts least-recently-used unpinned pieces until `used` fits the capacity.
    pub fn shrink_to_capacity(&mut self) -> Vec<Gone> {
        let mut gone = Vec::new();
        let mut s = self.tail;
        while self.used + self.reserved > self.capacity && s != NIL {
            let prev = self.nodes[s as usize].prev;
            if self.nodes[s as usize].pins == 0 {
                self.counters.evictions += 1;
                gone.extend(self.detach(s));
            }
            s = prev;
        }
        gone
    }

    /// Adds a committed piece as most recently used, converting `reserved` bytes into used
    /// ones; a piece already present under the same id is replaced (its file returned for
    /// deletion, or doomed while pinned). With `pin`, the new piece comes back pinned.
    pub fn insert(
        &mut self,
        blob: &BlobId,
        index: u64,
        gen: u64,
        len: u64,
        reserved: u64,
        pin: bool,
    ) -> (Pinned, Option<Gone>) {
        self.reserved -= reserved;
        self.used += disk_bytes(len);
        let b = self.blob_slot(blob);
        // Count the new node first, so replacing the blob's only piece keeps the entry.
        self.blob_mut(b).refs += 1;
        let replaced = self.map.get(&(b, index)).copied();
        let replaced = replaced.and_then(|old| self.detach(old));
        let node = Node {
            index,
            gen,
            blob: b,
            len: len as u32,
            pins: pin as u32,
            prev: NIL,
            next: NIL,
            state: State::Live,
        };
        let s = slab_put(&mut self.nodes, &mut self.free, node);
        self.map.insert((b, index), s);
        self.live += 1;
        self.push_front(s);
        (Pinned { slot: s, gen, len }, replaced)
    }

    /// Removes every piece of a blob and its size; pinned pieces go when unpinned.
    pub fn remove_blob(&mut self, blob: &BlobId) -> Vec<Gone> {
        let Some(&b) = self.blob_map.get(blob) else {
            return Vec::new();
        };
        self.blob_mut(b).size = None;
        self.blob_mut(b).refs += 1; // keep the entry while detaching
        let slots: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&s| {
                let n = &self.nodes[s as usize];
                n.state == State::Live && n.blob == b
            })
            .collect();
        let gone = slots.into_iter().filter_map(|s| self.detach(s)).collect();
        self.blob_mut(b).refs -= 1;
        self.maybe_free_blob(b);
        gone
    }

    pub fn set_blob_size(&mut self, blob: &BlobId, size: u64) {
        let b = self.blob_slot(blob);
        self.blob_mut(b).size = Some(size);
    }

    pub fn blob_size(&self, blob: &BlobId) -> Option<u64> {
        self.blob(*self.blob_map.get(blob)?).size
    }

    pub fn has_all_pieces(&self, blob: &BlobId, count: u64) -> bool {
        match self.blob_map.get(blob) {
            Some(&b) => (0..count).all(|i| self.map.contains_key(&(b, i))),
            None => count == 0,
        }
    }

    /// Generations of live pieces from least to most recently used.
    pub fn lru_order(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.live as usize);
        let mut s = self.tail;
        while s != NIL {
            out.push(self.nodes[s as usize].gen);
            s = self.nodes[s as usize].prev;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> BlobId {
        BlobId::new(s).unwrap()
    }

    const P: u64 = 1000;
    const D: u64 = HEADER_LEN + P;

    fn add(ix: &mut Index, b: &str, i: u64, gen: u64) -> Vec<Gone> {
        let gone = ix.reserve(D).expect("fits");
        let (p, _) = ix.insert(&id(b), i, gen, P, D, false);
        assert_eq!(p.gen, gen);
        gone
    }

    #[test]
    fn evicts_least_recently_used_first_and_skips_pinned() {
        let mut ix = Index::new(3 * D);
        for i in 0..3 {
            assert!(add(&mut ix, "a", i, i).is_empty());
        }
        // Touch 0 so 1 is now the oldest; pin 1 so 2 must go instead.
        let p0 = ix.lookup(&id("a"), 0).unwrap();
        ix.unpin(p0.slot);
        let p1 = ix.lookup(&id("a"), 1).unwrap();
        let gone = add(&mut ix, "a", 3, 3);
        assert_eq!(gone.iter().map(|g| g.index).collect::<Vec<_>>(), vec![2]);
        assert_eq!(ix.counters.evictions, 1);
        assert_eq!(ix.used, 3 * D);
        assert_eq!(ix.unpin(p1.slot), None);
        assert_eq!(ix.lru_order(), vec![0, 1, 3]);
    }

    #[test]
    fn full_when_all_pinned_and_nothing_changes() {
        let mut ix = Index::new(2 * D);
        add(&mut ix, "a", 0, 0);
        add(&mut ix, "a", 1, 1);
        let pins: Vec<_> = (0..2).map(|i| ix.lookup(&id("a"), i).unwrap()).collect();
        assert_eq!(ix.reserve(D), Err((D, 0)));
        assert_eq!((ix.used, ix.reserved, ix.live), (2 * D, 0, 2));
        assert_eq!(ix.reserve(3 * D), Err((3 * D, 0)));
        ix.unpin(pins[0].slot);
        assert_eq!(
            ix.reserve(3 * D),
            Err((3 * D, D)),
            "too big even when evicting"
        );
        assert_eq!(ix.live, 2);
        assert_eq!(ix.reserve(D).unwrap().len(), 1);
    }

    #[test]
    fn doomed_piece_is_deleted_at_last_unpin_only() {
        let mut ix = Index::new(10 * D);
        add(&mut ix, "a", 0, 5);
        let p = ix.lookup(&id("a"), 0).unwrap();
        let q = ix.lookup(&id("a"), 0).unwrap();
        assert!(ix.remove_blob(&id("a")).is_empty());
        assert!(ix.lookup(&id("a"), 0).is_none());
        assert_eq!(ix.used, D, "still on disk");
        assert_eq!(ix.unpin(p.slot), None);
        let gone = ix.unpin(q.slot).unwrap();
        assert_eq!((gone.blob.as_str(), gone.index, gone.gen), ("a", 0, 5));
        assert_eq!((ix.used, ix.live), (0, 0));
        assert!(ix.blob_map.is_empty(), "blob entry freed");
    }

    #[test]
    fn corrupt_counted_once_and_replacement_keeps_new_piece() {
        let mut ix = Index::new(10 * D);
        add(&mut ix, "a", 0, 1);
        let p = ix.lookup(&id("a"), 0).unwrap();
        assert_eq!(ix.mark_corrupt(p.slot, p.gen), None);
        assert_eq!(ix.mark_corrupt(p.slot, p.gen), None);
        assert_eq!(ix.counters.corrupt_pieces, 1);
        add(&mut ix, "a", 0, 2);
        assert_eq!(ix.unpin(p.slot).unwrap().gen, 1);
        assert_eq!(ix.lookup(&id("a"), 0).unwrap().gen, 2);
        // A second insert under the same id replaces the first at once when unpinned.
        let gone = ix.reserve(D).unwrap();
        assert!(gone.is_empty());
        let (_, replaced) = ix.insert(&id("a"), 1, 3, P, D, false);
        assert!(replaced.is_none());
        ix.reserve(D).unwrap();
        let (_, replaced) = ix.insert(&id("a"), 1, 4, P, D, false);
        assert_eq!(replaced.unwrap().gen, 3);
    }

    #[test]
    fn node_stays_compact() {
        assert!(std::mem::size_of::<Node>() <= 40);
    }

    #[test]
    fn sizes_and_completeness() {
        let mut ix = Index::new(10 * D);
        assert_eq!(ix.blob_size(&id("b")), None);
        ix.set_blob_size(&id("b"), 2500);
        assert_eq!(ix.blob_size(&id("b")), Some(2500));
        add(&mut ix, "b", 0, 1);
        add(&mut ix, "b", 2, 2);
        assert!(!ix.has_all_pieces(&id("b"), 3));
        add(&mut ix, "b", 1, 3);
        assert!(ix.has_all_pieces(&id("b"), 3));
        assert!(ix.has_all_pieces(&id("none"), 0));

        // The size goes with the blob's last piece, however that goes.
        ix.set_blob_size(&id("c"), 100);
        let c = add(&mut ix, "c", 0, 4);
        assert!(c.is_empty());
        let first = ix.lookup(&id("c"), 0).unwrap();
        let gone = ix.mark_corrupt(first.slot, first.gen);
        assert_eq!(gone, None, "pinned: deleted at unpin");
        assert_eq!(ix.blob_size(&id("c")), Some(100));
        let gone = ix.unpin(first.slot).unwrap();
        assert!(gone.last_of_blob);
        assert_eq!(ix.blob_size(&id("c")), None);

        assert_eq!(ix.remove_blob(&id("b")).len(), 3);
        assert_eq!(ix.blob_size(&id("b")), None);
        assert!(!ix.has_all_pieces(&id("b"), 1));
    }

    #[test]
    fn shrink_evicts_oldest_until_under_capacity() {
        let mut ix = Index::new(10 * D);
        for i in 0..5 {
            add(&mut ix, "a", i, i);
        }
        ix.capacity = 2 * D;
        let gone: Vec<u64> = ix.shrink_to_capacity().iter().map(|g| g.gen).collect();
        assert_eq!(gone, vec![0, 1, 2]);
        assert_eq!(ix.lru_order(), vec![3, 4]);
    }
}
