//! Rebuilding the index from the cache directory at open, and saving the LRU order at
//! shutdown. Everything here is blocking I/O, run once on the blocking pool.
//!
//! Open trusts nothing it finds: temp files are deleted, a piece file is kept only if its
//! name parses, its header checksum holds, the header agrees with the name and the file is
//! exactly header plus length long; anything else under `blobs/` is deleted. Two files for
//! the same piece (a crash between a replacement's rename and the old file's deletion)
//! keep the newer generation. A blob size with no piece beside it is forgotten, so sizes
//! of blobs that left the cache do not pile up over restarts. The order of eviction comes
//! from the saved LRU file where it names a piece, then from file modification time (older
//! is colder).
//!
//! The piece size the pieces were cut with is recorded beside them: opened with another
//! (or with none recorded, as a cache written before the record existed), the cache empties
//! itself, since piece `i` would otherwise be served as the bytes at another offset.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::SystemTime;

use super::format::{self, Header, HEADER_LEN};
use super::index::{disk_bytes, Index};
use super::{BlobId, Layout};

struct Found {
    blob: BlobId,
    index: u64,
    gen: u64,
    len: u64,
    mtime: SystemTime,
}

#[derive(Default)]
struct Tally {
    kept: u64,
    dropped: u64,
    temps: u64,
}

pub(super) fn rebuild(
    layout: Layout,
    capacity: u64,
    piece_size: u64,
) -> io::Result<(Index, u64, Layout)> {
    fs::create_dir_all(&layout.blobs)?;
    fs::create_dir_all(&layout.tmp)?;
    let mut tally = Tally::default();
    for e in fs::read_dir(&layout.tmp)? {
        remove_any(&e?.path());
        tally.temps += 1;
    }
    keep_piece_size(&layout, piece_size)?;
    let mut index = Index::new(capacity);
    let mut found: HashMap<(BlobId, u64), Found> = HashMap::new();
    let mut max_gen = 0u64;
    for e in fs::read_dir(&layout.blobs)? {
        let e = e?;
        let name = e.file_name();
        let blob = match name.to_str().map(BlobId::new) {
            Some(Ok(b)) if e.file_type()?.is_dir() => b,
            _ => {
                tracing::warn!(entry = ?name, "removing foreign entry in cache directory");
                remove_any(&e.path());
                continue;
            }
        };
        let mut has_any = false;
        let mut size_file = None;
        for f in fs::read_dir(e.path())? {
            let f = f?;
            let path = f.path();
            let fname = f.file_name();
            let fname = fname.to_str().unwrap_or("");
            if fname == "size" {
                size_file = Some(path);
                continue;
            }
            let Some(piece) = check_piece(&blob, fname, &path) else {
                tally.dropped += 1;
                remove_any(&path);
                continue;
            };
            has_any = true;
            max_gen = max_gen.max(piece.gen);
            let key = (blob.clone(), piece.index);
            match found.remove(&key) {
                Some(old) if old.gen > piece.gen => {
                    remove_any(&layout.piece(&blob, piece.index, piece.gen));
                    found.insert(key, old);
                }
                Some(old) => {
                    remove_any(&layout.piece(&blob, old.index, old.gen));
                    found.insert(key, piece);
                }
                None => {
                    found.insert(key, piece);
                }
            }
        }
        // A size is kept only next to pieces, so blobs that left the cache do not pile up.
        let size = size_file.as_ref().and_then(|p| fs::read_to_string(p).ok());
        match size.and_then(|t| format::decode_size(&t)) {
            Some(size) if has_any => index.set_blob_size(&blob, size),
            _ => {
                if let Some(p) = &size_file {
                    remove_any(p);
                }
            }
        }
        if !has_any {
            let _ = fs::remove_dir(e.path());
        }
    }
    let rank = load_lru(&layout.lru);
    let mut pieces: Vec<Found> = found.into_values().collect();
    pieces.sort_by_key(|p| {
        (
            rank.get(&p.gen).copied().unwrap_or(usize::MAX),
            p.mtime,
            p.gen,
        )
    });
    for p in &pieces {
        let need = disk_bytes(p.len);
        index.reserved += need;
        index.insert(&p.blob, p.index, p.gen, p.len, need, false);
        tally.kept += 1;
    }
    let gone = index.shrink_to_capacity();
    for g in &gone {
        remove_any(&layout.piece(&g.blob, g.index, g.gen));
    }
    tracing::info!(
        pieces = index.live,
        bytes = index.used,
        dropped = tally.dropped,
        temp_files = tally.temps,
        evicted = gone.len(),
        "cache rebuilt"
    );
    Ok((index, max_gen + 1, layout))
}

fn check_piece(blob: &BlobId, name: &str, path: &Path) -> Option<Found> {
    let (index, gen) = format::parse_piece_file_name(name)?;
    let mut file = fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    let mut page = vec![0u8; HEADER_LEN as usize];
    file.read_exact(&mut page).ok()?;
    let h = Header::decode(&page).ok()?;
    let ok = h.index == index && h.gen == gen && meta.len() == HEADER_LEN + h.len;
    if !ok {
        tracing::warn!(%blob, piece = index, "dropping piece with a bad header or length");
        return None;
    }
    Some(Found {
        blob: blob.clone(),
        index,
        gen,
        len: h.len,
        mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

/// Empties the cache unless its pieces were cut with `piece_size`, then records it. The
/// pieces go before the record changes, so a crash in between empties the cache again at
/// the next open rather than keeping pieces under the wrong size.
fn keep_piece_size(layout: &Layout, piece_size: u64) -> io::Result<()> {
    let recorded = fs::read_to_string(&layout.piece_size)
        .ok()
        .and_then(|t| format::decode_size(&t));
    if recorded == Some(piece_size) {
        return Ok(());
    }
    let mut removed = 0u64;
    for e in fs::read_dir(&layout.blobs)? {
        remove_any(&e?.path());
        removed += 1;
    }
    remove_any(&layout.lru);
    if removed > 0 {
        tracing::warn!(
            recorded = ?recorded,
            piece_size,
            blobs = removed,
            "cache pieces were cut with another piece size: emptied"
        );
    }
    let tmp = layout.tmp.join("piece-size.tmp");
    fs::write(&tmp, format::encode_size(piece_size))?;
    fs::rename(&tmp, &layout.piece_size)
}

fn remove_any(path: &Path) {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    if let Err(e) = res {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove cache entry");
        }
    }
}

/// Saved order: a `v1` line, then one generation (hex) per line, coldest first.
fn load_lru(path: &Path) -> HashMap<u64, usize> {
    let Ok(text) = fs::read_to_string(path) else {
        return HashMap::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some("v1") {
        return HashMap::new();
    }
    lines
        .filter_map(|l| u64::from_str_radix(l, 16).ok())
        .enumerate()
        .map(|(rank, gen)| (gen, rank))
        .collect()
}

pub(super) fn save_lru(layout: &Layout, order: &[u64], tmp_gen: u64) -> io::Result<usize> {
    use std::fmt::Write;
    let mut text = String::with_capacity(8 + order.len() * 9);
    text.push_str("v1\n");
    for g in order {
        let _ = writeln!(text, "{g:x}");
    }
    let tmp = layout.tmp(tmp_gen);
    fs::write(&tmp, text)?;
    fs::rename(&tmp, &layout.lru)?;
    Ok(order.len())
}
