//! Behaviour of the whole cache against a real temp directory. Every test runs once per
//! I/O backend, so pread and io_uring are held to the same contract.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::*;

const P: u64 = 3 * CHUNK + 123;

fn blob(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

fn pid(b: &str, i: u64) -> PieceId {
    PieceId::new(blob(b), i)
}

/// Deterministic bytes that differ per blob and piece.
fn pattern(b: &str, index: u64, len: u64) -> Vec<u8> {
    let mut x =
        crc32c::crc32c(b.as_bytes()) as u64 ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn open(dir: &tempfile::TempDir, capacity: u64, io: IoBackend) -> Arc<Cache> {
    open_cut(dir, capacity, io, P).await
}

/// [`open`], for pieces of `piece_size`.
async fn open_cut(
    dir: &tempfile::TempDir,
    capacity: u64,
    io: IoBackend,
    piece_size: u64,
) -> Arc<Cache> {
    Cache::open(CacheConfig {
        dir: dir.path().to_path_buf(),
        capacity,
        io,
        piece_size,
    })
    .await
    .expect("open cache")
}

/// Writes a piece in uneven slices and commits it.
async fn put(cache: &Cache, b: &str, i: u64, len: u64) -> PieceRef {
    put_sliced(cache, b, i, len, &[50_000]).await
}

/// Writes a piece in slices of the given sizes, cycling through them.
async fn put_sliced(cache: &Cache, b: &str, i: u64, len: u64, sizes: &[usize]) -> PieceRef {
    let data = pattern(b, i, len);
    let mut w = cache.begin(pid(b, i), len).unwrap();
    let (mut at, mut k) = (0, 0);
    while at < data.len() {
        let n = sizes[k % sizes.len()].min(data.len() - at);
        w.write(&data[at..at + n]).await.unwrap();
        assert_eq!(w.written(), (at + n) as u64);
        (at, k) = (at + n, k + 1);
    }
    w.commit().await.unwrap()
}

async fn read_all(cache: &Cache, p: &PieceRef) -> Result<Bytes, CacheError> {
    cache.read(p, 0, p.len() as usize).await
}

fn piece_path(cache: &Cache, p: &PieceRef) -> PathBuf {
    cache.inner.layout.piece(&p.id.blob, p.id.index, p.gen)
}

fn tmp_entries(dir: &tempfile::TempDir) -> usize {
    std::fs::read_dir(dir.path().join("v1/tmp"))
        .unwrap()
        .count()
}

async fn round_trip(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    assert!(cache.lookup(&pid("a", 0)).is_none());
    for (i, len) in [1, CHUNK, P, 64 * 1024, (2 << 20) + 7]
        .into_iter()
        .enumerate()
    {
        let want = pattern("a", i as u64, len);
        drop(put(&cache, "a", i as u64, len).await);
        let p = cache.lookup(&pid("a", i as u64)).expect("committed piece");
        assert_eq!(p.len(), len);
        assert_eq!(read_all(&cache, &p).await.unwrap(), want);
        for (off, n) in [
            (0, 1),
            (len - 1, 1),
            (len / 3, (len / 2) as usize),
            (len, 0),
        ] {
            let got = cache.read(&p, off, n).await.unwrap();
            assert_eq!(
                got,
                want[off as usize..off as usize + n],
                "len {len} at {off}+{n}"
            );
        }
        let past = cache.read(&p, len, 1).await;
        assert!(matches!(past, Err(CacheError::OutOfRange { .. })));
    }
    // Frames smaller than, equal to and straddling chunk boundaries, and empty ones.
    let c = CHUNK as usize;
    for (i, sizes) in [[1, 999, 16384, 0], [c, c - 1, 3 * c + 5, 2]]
        .iter()
        .enumerate()
    {
        let i = 10 + i as u64;
        let p = put_sliced(&cache, "a", i, P, sizes).await;
        assert_eq!(read_all(&cache, &p).await.unwrap(), pattern("a", i, P));
    }
    let s = cache.stats();
    assert_eq!(s.pieces, 7);
    assert_eq!(s.reserved, 0);
    assert_eq!(tmp_entries(&dir), 0);
    assert!(matches!(
        cache.begin(pid("a", 9), 0),
        Err(CacheError::InvalidLength(0))
    ));
    let too_big = MAX_PIECE_LEN + 1;
    assert!(matches!(
        cache.begin(pid("a", 9), too_big),
        Err(CacheError::InvalidLength(_))
    ));
}

async fn largest_piece(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let p = put(&cache, "big", 0, MAX_PIECE_LEN).await;
    let want = pattern("big", 0, MAX_PIECE_LEN);
    let at = MAX_PIECE_LEN - CHUNK - 5;
    let got = cache.read(&p, at, CHUNK as usize).await.unwrap();
    assert_eq!(got, want[at as usize..(at + CHUNK) as usize]);
}

async fn eviction_order_and_pins(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 3 * (HEADER_LEN + P), io).await;
    let mut paths = Vec::new();
    for i in 0..3 {
        let p = put(&cache, "a", i, P).await;
        paths.push(piece_path(&cache, &p));
    }
    drop(cache.lookup(&pid("a", 0))); // 1 is now the coldest
    let pinned = cache.lookup(&pid("a", 1)).unwrap(); // ...but pinned, so 2 goes
    drop(put(&cache, "a", 3, P).await);
    assert!(cache.lookup(&pid("a", 2)).is_none());
    assert!(!paths[2].exists(), "evicted file deleted");
    assert_eq!(cache.stats().evictions, 1);
    assert_eq!(read_all(&cache, &pinned).await.unwrap(), pattern("a", 1, P));
    drop(pinned);
    // Now 0 is the coldest unpinned piece (1 was touched after it).
    drop(put(&cache, "a", 4, P).await);
    assert!(cache.lookup(&pid("a", 0)).is_none());
    assert!(!paths[0].exists());
    for i in [1, 3, 4] {
        assert!(cache.lookup(&pid("a", i)).is_some(), "piece {i}");
    }
    let s = cache.stats();
    assert_eq!(
        (s.evictions, s.pieces, s.used),
        (2, 3, 3 * (HEADER_LEN + P))
    );
}

async fn full_when_everything_pinned(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 2 * (HEADER_LEN + P), io).await;
    let a = put(&cache, "a", 0, P).await;
    let b = put(&cache, "a", 1, P).await;
    let before = cache.stats();
    assert!(matches!(
        cache.begin(pid("a", 2), P),
        Err(CacheError::Full { .. })
    ));
    assert_eq!(
        cache.stats(),
        before,
        "a refused reservation changes nothing"
    );
    // A writer in progress holds its reservation too.
    drop(a);
    let w = cache.begin(pid("a", 2), P).unwrap();
    assert!(matches!(
        cache.begin(pid("a", 3), P),
        Err(CacheError::Full { .. })
    ));
    drop(w);
    assert_eq!(cache.stats().reserved, 0);
    assert_eq!(read_all(&cache, &b).await.unwrap(), pattern("a", 1, P));
}

async fn abort_on_drop(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let mut w = cache.begin(pid("a", 0), P).unwrap();
    w.write(&pattern("a", 0, P)[..1000]).await.unwrap();
    assert_eq!(tmp_entries(&dir), 1);
    assert_eq!(cache.stats().reserved, HEADER_LEN + P);
    drop(w);
    assert_eq!(tmp_entries(&dir), 0);
    assert_eq!(cache.stats().reserved, 0);
    assert!(cache.lookup(&pid("a", 0)).is_none());

    let mut w = cache.begin(pid("a", 0), P).unwrap();
    w.write(&[1, 2, 3]).await.unwrap();
    let short = w.commit().await;
    assert!(matches!(
        short,
        Err(CacheError::Incomplete { written: 3, .. })
    ));
    let mut w = cache.begin(pid("a", 0), 4).unwrap();
    assert!(matches!(
        w.write(&[0; 5]).await,
        Err(CacheError::Overflow { .. })
    ));
    assert!(
        w.write(&[0; 4]).await.is_err(),
        "an overflowed writer stays failed"
    );
    assert!(
        w.commit().await.is_err(),
        "an overflowed writer never commits"
    );
    assert_eq!(tmp_entries(&dir), 0);
    assert!(cache.lookup(&pid("a", 0)).is_none());
    let s = cache.stats();
    assert_eq!((s.used, s.reserved, s.pieces), (0, 0, 0));
}

async fn reopen_rebuilds_and_rejects_damage(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let mut paths = Vec::new();
    for i in 0..5 {
        let p = put(&cache, "sha256-aa", i, P).await;
        paths.push(piece_path(&cache, &p));
    }
    cache.set_blob_size(&blob("sha256-aa"), 5 * P).unwrap();
    drop(put(&cache, "url-bb", 0, 10).await);
    // An abandoned write, as if the process died mid-piece.
    let mut w = cache.begin(pid("url-bb", 1), P).unwrap();
    w.write(&[7; 100]).await.unwrap();
    std::mem::forget(w);
    drop(cache);

    let cache = open(&dir, 64 << 20, io).await;
    assert_eq!(tmp_entries(&dir), 0, "temp files deleted at open");
    assert_eq!(cache.blob_size(&blob("sha256-aa")), Some(5 * P));
    for i in 0..5 {
        let p = cache.lookup(&pid("sha256-aa", i)).unwrap();
        assert_eq!(
            read_all(&cache, &p).await.unwrap(),
            pattern("sha256-aa", i, P)
        );
    }
    assert_eq!(cache.stats().pieces, 6);
    assert_eq!(cache.stats().used, 5 * (HEADER_LEN + P) + HEADER_LEN + 10);
    drop(cache);

    // Damage: 0 truncated, 1 header byte flipped, 2 data byte flipped in its second chunk,
    // 3 renamed to a different index than its header says; plus junk in the directories.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&paths[0])
        .unwrap();
    f.set_len(HEADER_LEN + P - 1).unwrap();
    flip(&paths[1], 20);
    flip(&paths[2], HEADER_LEN + CHUNK + 5);
    let renamed = paths[3].with_file_name(format!(
        "63.{}",
        paths[3].extension().unwrap().to_str().unwrap()
    ));
    std::fs::rename(&paths[3], &renamed).unwrap();
    std::fs::write(dir.path().join("v1/tmp/1.tmp"), b"partial").unwrap();
    std::fs::write(dir.path().join("v1/blobs/sha256-aa/stray"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("v1/blobs/NOT-VALID")).unwrap();

    let cache = open(&dir, 64 << 20, io).await;
    assert_eq!(tmp_entries(&dir), 0);
    assert!(!dir.path().join("v1/blobs/NOT-VALID").exists());
    assert!(!dir.path().join("v1/blobs/sha256-aa/stray").exists());
    for i in [0, 1, 3] {
        assert!(
            cache.lookup(&pid("sha256-aa", i)).is_none(),
            "damaged piece {i} kept"
        );
    }
    assert!(cache.lookup(&pid("sha256-aa", 0x63)).is_none());
    assert!(!paths[0].exists() && !paths[1].exists() && !renamed.exists());
    let p4 = cache.lookup(&pid("sha256-aa", 4)).unwrap();
    assert_eq!(
        read_all(&cache, &p4).await.unwrap(),
        pattern("sha256-aa", 4, P)
    );
    // Piece 2 passes the header check; its flipped chunk is caught when read.
    let p2 = cache.lookup(&pid("sha256-aa", 2)).unwrap();
    let first_chunk = cache.read(&p2, 0, CHUNK as usize).await.unwrap();
    assert_eq!(first_chunk, pattern("sha256-aa", 2, P)[..CHUNK as usize]);
    let bad = cache.read(&p2, CHUNK, 10).await;
    assert!(matches!(bad, Err(CacheError::Corrupt(ref id)) if id.index == 2));
    assert!(matches!(
        read_all(&cache, &p2).await,
        Err(CacheError::Corrupt(_))
    ));
    assert!(cache.lookup(&pid("sha256-aa", 2)).is_none());
    assert!(paths[2].exists(), "kept while pinned");
    drop(p2);
    assert!(!paths[2].exists(), "deleted at last unpin");
    assert_eq!(cache.stats().corrupt_pieces, 1);
    assert_eq!(cache.stats().pieces, 2);
    assert_eq!(cache.stats().used, HEADER_LEN + P + HEADER_LEN + 10);
}

fn flip(path: &std::path::Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
}

async fn corrupt_then_refetch_while_pinned(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let old = put(&cache, "a", 0, P).await;
    read_all(&cache, &old).await.unwrap(); // the descriptor is cached now
    let old_path = piece_path(&cache, &old);
    flip(&old_path, HEADER_LEN + 1);
    assert!(matches!(
        cache.read(&old, 0, 1).await,
        Err(CacheError::Corrupt(_))
    ));
    // The engine refetches while a reader still holds the corrupt one.
    let new = put(&cache, "a", 0, P).await;
    assert_ne!(piece_path(&cache, &new), old_path);
    assert!(matches!(
        cache.read(&old, 0, 1).await,
        Err(CacheError::Corrupt(_))
    ));
    drop(old);
    assert!(!old_path.exists());
    let p = cache.lookup(&pid("a", 0)).unwrap();
    assert_eq!(read_all(&cache, &p).await.unwrap(), pattern("a", 0, P));
    assert_eq!(cache.stats().corrupt_pieces, 1);
    assert_eq!(cache.stats().used, HEADER_LEN + P);
}

async fn replacing_a_piece_deletes_the_old_file(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let first = put(&cache, "a", 0, P).await;
    let first_path = piece_path(&cache, &first);
    drop(first);
    let second = put(&cache, "a", 0, P).await;
    assert!(!first_path.exists());
    assert!(piece_path(&cache, &second).exists());
    assert_eq!(cache.stats().pieces, 1);
}

async fn concurrent_readers(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let len = 4 * CHUNK + 17;
    for i in 0..4 {
        drop(put(&cache, "c", i, len).await);
    }
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..20u64 {
                let i = (t + k) % 4;
                let want = pattern("c", i, len);
                let p = cache.lookup(&pid("c", i)).unwrap();
                let off = (t * 7919 + k * 104_729) % len;
                let n = ((len - off) as usize).min(70_000);
                let got = cache.read(&p, off, n).await.unwrap();
                assert_eq!(got, want[off as usize..off as usize + n]);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(cache.stats().corrupt_pieces, 0);
}

async fn open_files_stay_bounded(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let n = files::OPEN_FILES as u64 + 20;
    for i in 0..n {
        let p = put(&cache, "f", i, 1).await;
        assert_eq!(read_all(&cache, &p).await.unwrap(), pattern("f", i, 1));
    }
    assert_eq!(cache.inner.files.len(), files::OPEN_FILES);
}

async fn verify_sha256_match_and_mismatch(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let piece = CHUNK + 1000;
    let size = 4 * piece + 333;
    let content: Vec<u8> = pattern("whole", 0, size);
    let b = blob("sha256-cc");
    for (i, part) in content.chunks(piece as usize).enumerate() {
        let mut w = cache
            .begin(PieceId::new(b.clone(), i as u64), part.len() as u64)
            .unwrap();
        w.write(part).await.unwrap();
        drop(w.commit().await.unwrap());
    }
    let digest = hex::encode(Sha256::digest(&content));
    let incomplete = cache.verify_sha256(&b, piece, &digest).await;
    assert!(
        matches!(incomplete, Err(CacheError::BlobIncomplete(_))),
        "size unknown"
    );
    cache.set_blob_size(&b, size).unwrap();
    assert!(cache.has_all_pieces(&b, 5));
    assert!(cache.verify_sha256(&b, piece, &digest).await.unwrap());
    let bad_hex = cache.verify_sha256(&b, piece, "zz").await;
    assert!(matches!(bad_hex, Err(CacheError::InvalidDigest(_))));
    assert_eq!(cache.stats().integrity_failures, 0);

    let wrong = hex::encode(Sha256::digest(b"something else"));
    assert!(!cache.verify_sha256(&b, piece, &wrong).await.unwrap());
    let s = cache.stats();
    assert_eq!((s.integrity_failures, s.pieces, s.used), (1, 0, 0));
    assert!(!cache.has_all_pieces(&b, 5));
    assert_eq!(cache.blob_size(&b), None);
    drop(cache);
    let cache = open(&dir, 64 << 20, io).await;
    assert_eq!(cache.blob_size(&b), None, "removal survives restart");
    assert_eq!(cache.stats().pieces, 0);
}

async fn verify_detects_wrong_piece_lengths(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let b = blob("sha256-dd");
    drop(put(&cache, "sha256-dd", 0, 100).await);
    cache.set_blob_size(&b, 100).unwrap();
    let digest = hex::encode(Sha256::digest(pattern("sha256-dd", 0, 100)));
    // Same bytes, but the engine says pieces are 50 bytes: piece 0 has the wrong length.
    assert!(!cache.verify_sha256(&b, 50, &digest).await.unwrap());
    assert_eq!(cache.stats().integrity_failures, 1);
}

async fn another_piece_size_empties_the_cache(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    drop(put(&cache, "sha256-aa", 1, P).await);
    cache.set_blob_size(&blob("sha256-aa"), 3 * P).unwrap();
    cache.flush().await;
    drop(cache);

    // Same piece size: everything stays.
    let cache = open(&dir, 64 << 20, io).await;
    assert!(cache.lookup(&pid("sha256-aa", 1)).is_some());
    drop(cache);

    // Another: piece 1 would be other bytes of the blob, so nothing of it is kept.
    let cache = open_cut(&dir, 64 << 20, io, 2 * P).await;
    assert!(cache.lookup(&pid("sha256-aa", 1)).is_none());
    assert_eq!(cache.blob_size(&blob("sha256-aa")), None);
    assert_eq!(cache.stats().used, 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("v1/blobs"))
            .unwrap()
            .count(),
        0
    );
    drop(put(&cache, "sha256-aa", 0, 2 * P).await);
    drop(cache);

    // The new size is the one recorded now; a record that cannot be read counts as none.
    let cache = open_cut(&dir, 64 << 20, io, 2 * P).await;
    assert!(cache.lookup(&pid("sha256-aa", 0)).is_some());
    drop(cache);
    std::fs::write(dir.path().join("v1/piece-size"), b"garbage").unwrap();
    let cache = open_cut(&dir, 64 << 20, io, 2 * P).await;
    assert_eq!(cache.stats().pieces, 0);
}

async fn reopen_shrinks_in_saved_lru_order(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    for i in 0..4 {
        drop(put(&cache, "a", i, P).await);
    }
    // Make 0 and 1 the hottest, so 2 and 3 are evicted first later.
    drop(cache.lookup(&pid("a", 0)));
    drop(cache.lookup(&pid("a", 1)));
    cache.flush().await;
    drop(cache);
    let cache = open(&dir, 2 * (HEADER_LEN + P), io).await;
    assert!(cache.lookup(&pid("a", 2)).is_none());
    assert!(cache.lookup(&pid("a", 3)).is_none());
    assert!(cache.lookup(&pid("a", 0)).is_some());
    assert!(cache.lookup(&pid("a", 1)).is_some());
    assert_eq!(cache.stats().evictions, 2);
    let left = std::fs::read_dir(dir.path().join("v1/blobs/a"))
        .unwrap()
        .count();
    assert_eq!(left, 2, "evicted files deleted at open");
}

async fn remove_blob_waits_for_pins(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let p = put(&cache, "a", 0, P).await;
    drop(put(&cache, "a", 1, P).await);
    cache.set_blob_size(&blob("a"), 2 * P).unwrap();
    let path = piece_path(&cache, &p);
    cache.remove_blob(&blob("a"));
    assert!(cache.lookup(&pid("a", 0)).is_none());
    assert_eq!(cache.blob_size(&blob("a")), None);
    assert_eq!(
        read_all(&cache, &p).await.unwrap(),
        pattern("a", 0, P),
        "pinned still readable"
    );
    assert!(path.exists());
    drop(p);
    assert!(!path.exists());
    assert_eq!(cache.stats().used, 0);
    // The blob can come back afterwards.
    drop(put(&cache, "a", 0, P).await);
    assert!(cache.lookup(&pid("a", 0)).is_some());
}

async fn clones_pin_too(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    let p = put(&cache, "a", 0, P).await;
    let path = piece_path(&cache, &p);
    let q = p.clone();
    cache.remove_blob(&blob("a"));
    drop(p);
    assert!(path.exists(), "the clone still pins it");
    assert_eq!(read_all(&cache, &q).await.unwrap(), pattern("a", 0, P));
    drop(q);
    assert!(!path.exists());
}

async fn sizes_without_pieces_are_forgotten_at_open(io: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, 64 << 20, io).await;
    cache.set_blob_size(&blob("lonely"), 5).unwrap();
    cache.set_blob_size(&blob("kept"), 10).unwrap();
    drop(put(&cache, "kept", 0, 10).await);
    assert_eq!(cache.blob_size(&blob("lonely")), Some(5));
    drop(cache);
    let cache = open(&dir, 64 << 20, io).await;
    assert_eq!(cache.blob_size(&blob("lonely")), None);
    assert!(!dir.path().join("v1/blobs/lonely").exists());
    assert_eq!(cache.blob_size(&blob("kept")), Some(10));

    // While running too: the last piece of a blob takes its size with it when evicted.
    let per_piece = HEADER_LEN + P;
    let cache = open(&dir, 3 * per_piece, io).await;
    cache.set_blob_size(&blob("old"), P).unwrap();
    drop(put(&cache, "old", 0, P).await);
    for i in 0..3 {
        drop(put(&cache, "new", i, P).await);
    }
    assert!(cache.lookup(&pid("old", 0)).is_none(), "evicted");
    assert_eq!(cache.blob_size(&blob("old")), None);
    assert!(!dir.path().join("v1/blobs/old").exists());
}

const KILL9_DIR: &str = "DADI_P2P_CACHE_KILL9_DIR";
const KILL9_IO: &str = "DADI_P2P_CACHE_KILL9_IO";
const KILL9_PIECES: u64 = 20;

/// Entry point of the child process that [`survives_kill_9`] starts and kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run only as the child process of survives_kill_9"]
async fn kill9_child() {
    let dir = std::env::var(KILL9_DIR).expect("started by survives_kill_9");
    let io = match std::env::var(KILL9_IO).as_deref() {
        Ok("io_uring") => IoBackend::IoUring,
        _ => IoBackend::Pread,
    };
    let cfg = CacheConfig {
        dir: dir.into(),
        capacity: 64 << 20,
        io,
        piece_size: P,
    };
    let cache = Cache::open(cfg).await.unwrap();
    cache.set_blob_size(&blob("k"), KILL9_PIECES * P).unwrap();
    for i in 0..KILL9_PIECES {
        drop(put(&cache, "k", i, P).await);
        println!("committed {i}");
    }
    let mut w = cache.begin(pid("k", KILL9_PIECES), P).unwrap();
    w.write(&pattern("k", KILL9_PIECES, P)[..P as usize / 2])
        .await
        .unwrap();
    println!("mid-write");
    // Wait to be killed; returns only if the parent went away first.
    let _ = std::io::stdin().read_line(&mut String::new());
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn survives_kill_9(io: IoBackend) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let name = if io == IoBackend::IoUring {
        "io_uring"
    } else {
        "pread"
    };
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cache::tests::kill9_child",
            "--ignored",
            "--nocapture",
        ])
        .env(KILL9_DIR, dir.path())
        .env(KILL9_IO, name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut committed = 0;
    for line in out.lines() {
        let line = line.unwrap();
        if line.starts_with("committed ") {
            committed += 1;
        } else if line == "mid-write" {
            break;
        }
    }
    assert_eq!(committed, KILL9_PIECES, "child stopped early");
    child.0.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.0.wait().unwrap();

    let cache = open(&dir, 64 << 20, io).await;
    assert_eq!(tmp_entries(&dir), 0, "the interrupted write left nothing");
    assert_eq!(cache.stats().pieces, KILL9_PIECES);
    assert!(cache.has_all_pieces(&blob("k"), KILL9_PIECES));
    assert!(cache.lookup(&pid("k", KILL9_PIECES)).is_none());
    assert_eq!(cache.blob_size(&blob("k")), Some(KILL9_PIECES * P));
    for i in 0..KILL9_PIECES {
        let p = cache.lookup(&pid("k", i)).unwrap();
        assert_eq!(read_all(&cache, &p).await.unwrap(), pattern("k", i, P));
    }
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Cache>();
    send_sync::<PieceRef>();
    send_sync::<PieceWriter>();
    // The futures must be spawnable on a multi-threaded runtime.
    let _ = |c: Arc<Cache>, p: PieceRef, mut w: PieceWriter| async move {
        let r = c.read(&p, 0, 1);
        send(&r);
        let _ = r.await;
        let v = c.verify_sha256(&p.id.blob, 1, "");
        send(&v);
        let _ = v.await;
        let wr = w.write(&[]);
        send(&wr);
        let _ = wr.await;
        let cm = w.commit();
        send(&cm);
        let fl = c.flush();
        send(&fl);
        send(&Cache::open(CacheConfig {
            dir: PathBuf::new(),
            capacity: 0,
            io: IoBackend::Pread,
            piece_size: P,
        }));
    };
}

macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod pread {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::IoBackend::Pread).await
                }
            )*
        }
        mod io_uring {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::IoBackend::IoUring).await
                }
            )*
        }
    };
}

for_each_backend!(
    round_trip,
    largest_piece,
    eviction_order_and_pins,
    full_when_everything_pinned,
    abort_on_drop,
    reopen_rebuilds_and_rejects_damage,
    corrupt_then_refetch_while_pinned,
    replacing_a_piece_deletes_the_old_file,
    concurrent_readers,
    open_files_stay_bounded,
    verify_sha256_match_and_mismatch,
    verify_detects_wrong_piece_lengths,
    reopen_shrinks_in_saved_lru_order,
    another_piece_size_empties_the_cache,
    remove_blob_waits_for_pins,
    clones_pin_too,
    sizes_without_pieces_are_forgotten_at_open,
    survives_kill_9,
);
