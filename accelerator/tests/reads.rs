//! Reads through the daemon against a real registry, the way overlaybd makes them: the size
//! probe, closed ranges across piece boundaries, open and suffix ranges, whole blobs, and
//! concurrent cold readers. Both cache I/O backends run the same checks.

mod common;

use common::*;
use dadi_p2p_integration::http::{self, range};

async fn exact_ranges(aio: u8) {
    let world = World::new();
    let acc = world.start(&config_with(
        &format!("  aioEnable: {aio}\n"),
        "readAhead: 2\n",
    ));
    let (digest, bytes) = world.layer(0);
    let size = bytes.len() as u64;
    let url = acc.accelerator_url(&world.blob_url(&digest));

    // The size probe overlaybd sends first.
    let probe = http::get(&url, &[("range", "bytes=0-0")]).await.unwrap();
    assert_eq!(probe.status, 206);
    assert_eq!(
        probe.header("content-range"),
        Some(format!("bytes 0-0/{size}").as_str())
    );
    assert_eq!(&probe.body[..], &bytes[..1]);

    // Closed ranges: inside a piece, across one and several boundaries, the last byte.
    for (a, b) in [
        (0, 65535),
        (100, 200),
        (65_000, 70_000),
        (PIECE - 1, PIECE),
        (3, 5 * PIECE + 17),
        (size - 1, size - 1),
        (size - 300, size + 5000),
    ] {
        let r = http::get(&url, &[("range", &range(a, b))]).await.unwrap();
        let end = b.min(size - 1);
        assert_eq!(r.status, 206, "{a}-{b}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{end}/{size}").as_str())
        );
        assert_eq!(r.body.len() as u64, end - a + 1, "{a}-{b}");
        assert!(
            r.body[..] == bytes[a as usize..=end as usize],
            "bytes differ for {a}-{b}"
        );
    }

    let open = http::get(&url, &[("range", "bytes=1000000-")])
        .await
        .unwrap();
    assert_eq!(open.status, 206);
    assert!(open.body[..] == bytes[1_000_000..]);
    let suffix = http::get(&url, &[("range", "bytes=-77")]).await.unwrap();
    assert_eq!(suffix.status, 206);
    assert!(suffix.body[..] == bytes[bytes.len() - 77..]);

    let whole = http::get(&url, &[]).await.unwrap();
    assert_eq!(whole.status, 200);
    assert_eq!(
        whole.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert!(whole.body[..] == bytes[..]);

    let head = http::head(&url, &[]).await.unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert!(head.body.is_empty());

    let unsatisfiable = http::get(&url, &[("range", &range(size, size + 10))])
        .await
        .unwrap();
    assert_eq!(unsatisfiable.status, 416);
    assert_eq!(
        unsatisfiable.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );

    for bad in ["bytes=5-1", "bytes=0-1,4-5", "items=0-1", "bytes=x-"] {
        let r = http::get(&url, &[("range", bad)]).await.unwrap();
        assert_eq!(r.status, 400, "{bad}");
        let reason = String::from_utf8_lossy(&r.body);
        assert_eq!(reason.trim().lines().count(), 1, "{bad}: {reason}");
    }

    // The gzip layer too, whole.
    let (digest, bytes) = world.layer(1);
    let r = http::get(&acc.accelerator_url(&world.blob_url(&digest)), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body[..] == bytes[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_return_exactly_the_bytes_asked_for_pread() {
    exact_ranges(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_return_exactly_the_bytes_asked_for_io_uring() {
    exact_ranges(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_readers_share_one_download_per_piece() {
    let world = World::new();
    let acc = world.start(&config(""));
    let (digest, bytes) = world.layer(0);
    let url = acc.accelerator_url(&world.blob_url(&digest));
    let readers = 16;
    let mut tasks = Vec::new();
    for i in 0..readers {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            // Half read the whole blob, half a range in the middle.
            let headers: Vec<(&str, String)> = if i % 2 == 0 {
                vec![]
            } else {
                vec![("range", range(70_000, 900_000))]
            };
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http::get(&url, &headers).await.unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        if i % 2 == 0 {
            assert_eq!(r.status, 200);
            assert!(r.body[..] == bytes[..]);
        } else {
            assert_eq!(r.status, 206);
            assert!(r.body[..] == bytes[70_000..=900_000]);
        }
    }
    let size = bytes.len() as f64;
    let downloaded = metric(&acc, "DADIP2P_Count", &[("type", "download")])
        .await
        .unwrap();
    assert_eq!(
        downloaded, size,
        "each piece must come from the origin exactly once"
    );
    let served = metric(&acc, "DADIP2P_Count", &[("type", "pread")])
        .await
        .unwrap();
    assert_eq!(
        served,
        (readers / 2) as f64 * (size + (900_000 - 70_000 + 1) as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_readers_get_the_next_pieces_fetched_ahead_and_random_ones_do_not() {
    let world = World::new();
    let acc = world.start(&config("readAhead: 3\n"));
    let (digest, bytes) = world.layer(0);
    let url = acc.accelerator_url(&world.blob_url(&digest));
    let downloaded = || async {
        assert!(downloads_settled(&acc, std::time::Duration::from_secs(10)).await);
        let count = metric(&acc, "DADIP2P_Count", &[("type", "download")]).await;
        count.unwrap() / PIECE as f64
    };
    let read = |s: u64, e: u64| {
        let url = url.clone();
        let want = bytes[s as usize..=e as usize].to_vec();
        async move {
            let r = http::get(&url, &[("range", &range(s, e))]).await.unwrap();
            assert_eq!(r.status, 206);
            assert!(r.body[..] == want[..], "bytes {s}-{e} differ");
        }
    };

    // A read from the start of a blob is sequential: pieces 1 to 3 follow piece 0.
    read(0, 999).await;
    assert_eq!(downloaded().await, 4.0);
    // A read elsewhere is random: only its own piece.
    read(10 * PIECE + 5, 10 * PIECE + 1005).await;
    assert_eq!(downloaded().await, 5.0);
    // Its continuation into the next piece is sequential again: 11, then 12 to 14.
    read(10 * PIECE + 1006, 11 * PIECE + 10).await;
    assert_eq!(downloaded().await, 9.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_reads_need_no_origin() {
    let mut world = World::new();
    let acc = world.start(&config(""));
    let (digest, bytes) = world.layer(0);
    let url = acc.accelerator_url(&world.blob_url(&digest));
    assert!(http::get(&url, &[]).await.unwrap().body[..] == bytes[..]);
    world.registry.process().kill();
    let again = http::get(&url, &[("range", &range(12_345, 600_000))])
        .await
        .unwrap();
    assert_eq!(again.status, 206);
    assert!(again.body[..] == bytes[12_345..=600_000]);
    // A blob never read before now needs the origin, which is down.
    let (other, _) = world.layer(1);
    let cold = http::get(
        &acc.accelerator_url(&world.blob_url(&other)),
        &[("range", "bytes=0-0")],
    )
    .await
    .unwrap();
    assert_eq!(cold.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_hit_the_cache_whatever_their_signature() {
    let world = World::new();
    // No read-ahead: the download count then says exactly which pieces were fetched.
    let acc = world.start(&config("readAhead: 0\n"));
    let (digest, bytes) = world.layer(0);
    let base = world.blob_url(&digest);
    for sig in ["one", "two", "three"] {
        let url = acc.accelerator_url(&format!("{base}?X-Amz-Signature={sig}&X-Amz-Expires=300"));
        let r = http::get(&url, &[("range", &range(0, 99_999))])
            .await
            .unwrap();
        assert_eq!(r.status, 206);
        assert!(r.body[..] == bytes[..100_000]);
    }
    let downloaded = metric(&acc, "DADIP2P_Count", &[("type", "download")])
        .await
        .unwrap();
    assert_eq!(downloaded, (2 * PIECE) as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_small_random_read_gets_its_bytes_straight_and_its_piece_beside() {
    let world = World::new();
    // Bypass reads of up to 16 KiB: the read below ends past its piece's first 16 KiB, so
    // it would otherwise wait for the download to get there.
    let acc = world.start(&config("readAhead: 0\ncoldRandomReadKiB: 16\n"));
    let (digest, bytes) = world.layer(0);
    let url = acc.accelerator_url(&world.blob_url(&digest));
    // The size probe starts a sequential reader at 0; this read, far from it, is random.
    http::get(&url, &[("range", "bytes=0-0")]).await.unwrap();
    let (a, b) = (5 * PIECE + 20_000, 5 * PIECE + 20_000 + 4095);
    let r = http::get(&url, &[("range", &range(a, b))]).await.unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body[..] == bytes[a as usize..=b as usize]);
    // Piece 0 for the probe, the 4 KiB read itself, and piece 5 downloaded beside it.
    let expected = (2 * PIECE + 4096) as f64;
    let all_in = eventually(std::time::Duration::from_secs(10), || async {
        metric(&acc, "DADIP2P_Count", &[("type", "download")]).await == Some(expected)
    })
    .await;
    assert!(all_in, "the piece was not downloaded beside the read");
    // The piece is cached now: the same read again costs the origin nothing.
    let again = http::get(&url, &[("range", &range(a, b))]).await.unwrap();
    assert!(again.body[..] == bytes[a as usize..=b as usize]);
    let downloaded = metric(&acc, "DADIP2P_Count", &[("type", "download")]).await;
    assert_eq!(downloaded, Some(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_bypass_off_a_cold_small_read_waits_for_its_piece() {
    let world = World::new();
    let acc = world.start(&config("readAhead: 0\ncoldRandomReadKiB: 0\n"));
    let (digest, bytes) = world.layer(0);
    let url = acc.accelerator_url(&world.blob_url(&digest));
    http::get(&url, &[("range", "bytes=0-0")]).await.unwrap();
    let (a, b) = (5 * PIECE + 1000, 5 * PIECE + 1000 + 4095);
    let r = http::get(&url, &[("range", &range(a, b))]).await.unwrap();
    assert!(r.body[..] == bytes[a as usize..=b as usize]);
    // Piece 0, fetched after the probe, and piece 5; nothing for the read itself.
    let settled = downloads_settled(&acc, std::time::Duration::from_secs(10)).await;
    assert!(settled, "downloads still running");
    let downloaded = metric(&acc, "DADIP2P_Count", &[("type", "download")]).await;
    assert_eq!(downloaded, Some((2 * PIECE) as f64));
}
