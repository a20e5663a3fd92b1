//! The cache across crashes and damage: after `kill -9` the daemon serves what it had without
//! the origin; a piece damaged on disk is detected and fetched again, never served; a blob
//! whose bytes do not match its digest is dropped and counted; capacity holds under eviction.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use dadi_p2p_integration::http::{self, range};

/// Piece files of the cache (not the size records), sorted by path.
fn pieces(cache: &Path) -> Vec<PathBuf> {
    piece_files(cache)
        .into_iter()
        .filter(|p| {
            p.parent()
                .is_some_and(|d| d.parent().is_some_and(|b| b.ends_with("blobs")))
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains('.'))
        })
        .collect()
}

async fn survives_kill9(aio: u8) {
    let mut world = World::new();
    let mut acc = world.start(&config_with(&format!("  aioEnable: {aio}\n"), ""));
    let (digest, bytes) = world.layer(0);
    let url = acc.accelerator_url(&world.blob_url(&digest));
    assert!(http::get(&url, &[]).await.unwrap().body[..] == bytes[..]);
    // The last bytes can reach the reader just before their piece is renamed into place.
    let committed = downloads_settled(&acc, Duration::from_secs(10)).await;
    assert!(committed, "downloads still running");
    let stored = pieces(acc.cache_dir()).len() as u64;
    assert_eq!(stored, (bytes.len() as u64).div_ceil(PIECE));

    acc.kill9().unwrap();
    world.registry.process().kill();
    acc.restart().unwrap();

    let url = acc.accelerator_url(&world.blob_url(&digest));
    let probe = http::get(&url, &[("range", "bytes=0-0")]).await.unwrap();
    assert_eq!(
        probe.status, 206,
        "size must come from the cache: the origin is down"
    );
    let whole = http::get(&url, &[]).await.unwrap();
    assert_eq!(whole.status, 200);
    assert!(whole.body[..] == bytes[..]);
    let downloaded = metric(&acc, "DADIP2P_Count", &[("type", "download")])
        .await
        .unwrap();
    assert_eq!(downloaded, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_then_restart_serves_the_cache_without_origin_pread() {
    survives_kill9(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_then_restart_serves_the_cache_without_origin_io_uring() {
    survives_kill9(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_another_piece_size_serves_the_right_bytes() {
    let world = World::new();
    let mut acc = world.start(&config(""));
    let (digest, bytes) = world.layer(0);
    let url = acc.accelerator_url(&world.blob_url(&digest));
    assert!(http::get(&url, &[]).await.unwrap().body[..] == bytes[..]);
    assert!(downloads_settled(&acc, Duration::from_secs(10)).await);

    // Piece 1 of 64 KiB pieces is not piece 1 of 128 KiB pieces.
    let file = acc.dir().join("config.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    let doubled = format!("pieceSize: {}", 2 * PIECE);
    std::fs::write(
        &file,
        yaml.replace(&format!("pieceSize: {PIECE}"), &doubled),
    )
    .unwrap();
    acc.restart().unwrap();
    let (s, e) = (2 * PIECE + 100, 3 * PIECE + 100);
    let got = http::get(&url, &[("range", &range(s, e))]).await.unwrap();
    assert_eq!(got.status, 206);
    assert!(
        got.body[..] == bytes[s as usize..=e as usize],
        "bytes {s}-{e} differ"
    );
    let downloaded = metric(&acc, "DADIP2P_Count", &[("type", "download")])
        .await
        .unwrap();
    assert_eq!(
        downloaded,
        (2 * PIECE) as f64,
        "piece 1 fetched again at its new size"
    );
}

fn flip_byte(path: &Path, from_end: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.seek(SeekFrom::Start(len - from_end)).unwrap();
    let mut b = [0u8];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(len - from_end)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pieces_are_refetched_never_served_pread() {
    damaged_pieces_are_refetched_never_served(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pieces_are_refetched_never_served_io_uring() {
    damaged_pieces_are_refetched_never_served(1).await;
}

async fn damaged_pieces_are_refetched_never_served(aio: u8) {
    let world = World::new();
    let mut acc = world.start(&config_with(
        &format!("  aioEnable: {aio}\n"),
        "readAhead: 0\n",
    ));
    let (digest, bytes) = world.layer(0);
    let url = acc.accelerator_url(&world.blob_url(&digest));
    assert!(http::get(&url, &[]).await.unwrap().body[..] == bytes[..]);
    acc.terminate().unwrap();

    let files = pieces(acc.cache_dir());
    assert!(files.len() >= 3);
    // A flipped data byte (found at read), and a torn piece (found at open).
    flip_byte(&files[0], 100);
    let torn = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[1])
        .unwrap();
    let len = torn.metadata().unwrap().len();
    torn.set_len(len / 2).unwrap();
    drop(torn);

    acc.restart().unwrap();
    let url = acc.accelerator_url(&world.blob_url(&digest));
    let whole = http::get(&url, &[]).await.unwrap();
    assert_eq!(whole.status, 200);
    assert!(
        whole.body[..] == bytes[..],
        "damaged bytes reached the client"
    );
    let downloaded = metric(&acc, "DADIP2P_Count", &[("type", "download")])
        .await
        .unwrap();
    assert_eq!(
        downloaded,
        (2 * PIECE) as f64,
        "exactly the two damaged pieces are fetched again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_not_matching_its_digest_is_dropped_and_counted() {
    let world = World::new();
    let acc = world.start(&config(""));
    let (digest, bytes) = world.layer(0);
    // The registry serves whatever its storage holds: damage it behind its back.
    flip_byte(&world.registry.blob_path(&digest), 10);
    let url = acc.accelerator_url(&world.blob_url(&digest));
    let served = http::get(&url, &[]).await.unwrap();
    assert_eq!(served.body.len(), bytes.len());
    let counted = eventually(Duration::from_secs(10), || async {
        metric(&acc, "dadi_p2p_integrity_failures_total", &[]).await == Some(1.0)
    })
    .await;
    assert!(counted, "digest mismatch not counted");
    let dropped = eventually(Duration::from_secs(10), || async {
        pieces(acc.cache_dir()).is_empty()
    })
    .await;
    assert!(dropped, "a blob that failed its digest stayed in the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_holds_and_recent_pieces_stay() {
    let world = World::new();
    // Room for 8 pieces (headers included), far less than the 17-piece layer.
    let capacity = 8 * (PIECE + 4096);
    let yaml = format!(
        "cache:\n  capacity: {capacity}\n  pieceSize: {PIECE}\nExporterConfig:\n  enable: true\n  \
         standaloneExporterPort: false\nthrottleLimitMB: 0\nreadAhead: 0\n"
    );
    let acc = world.start(&yaml);
    let (digest, bytes) = world.layer(0);
    let url = acc.accelerator_url(&world.blob_url(&digest));
    let whole = http::get(&url, &[]).await.unwrap();
    assert!(whole.body[..] == bytes[..]);
    let on_disk: u64 = pieces(acc.cache_dir())
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(
        on_disk <= capacity,
        "{on_disk} bytes on disk for a capacity of {capacity}"
    );
    let evicted = metric(&acc, "dadi_p2p_cache_evictions_total", &[])
        .await
        .unwrap();
    assert!(evicted >= 9.0, "{evicted} evictions");
    // The last piece was read last: it is still cached, so reading it downloads nothing.
    let before = metric(&acc, "DADIP2P_Count", &[("type", "download")])
        .await
        .unwrap();
    let size = bytes.len() as u64;
    let tail = http::get(&url, &[("range", &range(size - 10, size - 1))])
        .await
        .unwrap();
    assert!(tail.body[..] == bytes[bytes.len() - 10..]);
    let after = metric(&acc, "DADIP2P_Count", &[("type", "download")])
        .await
        .unwrap();
    assert_eq!(before, after);
}

/// Pieces of the full-cache test.
const BIG: u64 = 8 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_of_pinned_pieces_still_serves_readers() {
    use tokio::io::AsyncWriteExt;

    let layout = tempfile::tempdir().unwrap();
    let spec = dadi_p2p_integration::LayerSpec {
        size: 5 * BIG + 77,
        seed: 11,
        compression: dadi_p2p_integration::Compression::None,
    };
    let image = dadi_p2p_integration::build_image(layout.path(), "v1", &[spec]).unwrap();
    let registry = dadi_p2p_integration::Registry::start().unwrap();
    registry.push_image(&image, "app").unwrap();
    let digest = image.layers[0].digest.clone();
    let bytes = std::fs::read(image.blob_path(&digest)).unwrap();

    // Room for exactly four pieces, each larger than loopback socket buffers can absorb.
    let yaml = format!(
        "cache:\n  capacity: {}\n  pieceSize: {BIG}\nExporterConfig:\n  enable: true\n  \
         standaloneExporterPort: false\nthrottleLimitMB: 0\nreadAhead: 0\ncoldRandomReadKiB: 0\n",
        4 * (BIG + 4096)
    );
    let acc = dadi_p2p_integration::Accelerator::start(options().config_yaml(yaml)).unwrap();
    let url = acc.accelerator_url(&registry.blob_url("app", &digest));
    let path = url.strip_prefix(&acc.base_url()).unwrap().to_string();

    // Four pieces in the cache, then four readers of them that never read their bodies keep
    // them pinned. (A reader of a piece still downloading reads the bytes as they arrive and
    // pins nothing, so the pieces are cached first.)
    for i in 0..4u64 {
        let r = http::get(&url, &[("range", &range(i * BIG, i * BIG))])
            .await
            .unwrap();
        assert_eq!(r.status, 206);
    }
    let cached = downloads_settled(&acc, Duration::from_secs(20)).await;
    assert!(cached, "the first four pieces never finished downloading");
    let mut stalled = Vec::new();
    for i in 0..4u64 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", acc.port()))
            .await
            .unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes={}-{}\r\n\r\n",
            i * BIG,
            (i + 1) * BIG - 1
        );
        s.write_all(req.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    let pinned = eventually(Duration::from_secs(20), || async {
        metric(&acc, "dadi_p2p_served_bytes_total", &[("source", "cache")])
            .await
            .is_some_and(|b| b >= 4.0 * 128.0 * 1024.0)
    })
    .await;
    assert!(pinned, "the stalled readers never started");

    let r = http::get(&url, &[("range", &range(4 * BIG + 5, 5 * BIG + 10))])
        .await
        .unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body[..] == bytes[(4 * BIG + 5) as usize..=(5 * BIG + 10) as usize]);
    assert!(
        acc.logs().contains("cache full: serving a piece uncached"),
        "{}",
        acc.logs()
    );
    drop(stalled);
}
