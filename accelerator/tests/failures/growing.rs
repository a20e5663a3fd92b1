//! Pieces read while they download: a reader is served its part of a piece before the rest
//! arrives, a size probe is the first piece's download, and a piece a reader took as it came
//! is committed even when the daemon is stopped meanwhile. The upstream holds each answer
//! part-way, so every step is seen while the download is still running.

use std::sync::Arc;
use std::time::Duration;

use dadi_p2p_integration::http::{self, range};

use super::common::upstream::{Behaviour, HandUpstream};
use super::common::{downloads_settled, eventually, metric, KIB, MIB};
use super::start;

/// A daemon with 1 MiB pieces and no read-ahead in front of an upstream that holds each
/// answer after its first bytes until `gate` gives a permit: the pieces are large enough
/// that the daemon writes each in several steps, so a reader can be seen taking the start
/// of a piece whose rest has not arrived.
struct Holding {
    piece: u64,
    data: Arc<Vec<u8>>,
    gate: Arc<tokio::sync::Semaphore>,
    upstream: HandUpstream,
    acc: dadi_p2p_integration::Accelerator,
    /// The blob through the daemon.
    url: String,
}

impl Holding {
    /// A blob of `pieces` pieces (bytes from `seed`), answers held after `first` bytes;
    /// `cache_extra` goes under `cache:`, `extra` at the top of the config.
    async fn start(pieces: u64, seed: u64, first: u64, cache_extra: &str, extra: &str) -> Holding {
        let piece = MIB;
        let data = Arc::new(super::blob_bytes((pieces * piece) as usize, seed));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let upstream = HandUpstream::start(Behaviour::Hold {
            data: data.clone(),
            first: first as usize,
            gate: gate.clone(),
        })
        .await;
        let acc = start(&format!(
            "cache:\n  capacity: {}\n  pieceSize: {piece}\n{cache_extra}ExporterConfig:\n  \
             enable: true\n  standaloneExporterPort: false\nthrottleLimitMB: 0\nreadAhead: 0\n\
             {extra}",
            256 * MIB
        ));
        let url = acc.accelerator_url(&upstream.url("/layer.bin"));
        Holding {
            piece,
            data,
            gate,
            upstream,
            acc,
            url,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_gets_its_part_of_a_piece_before_the_rest_of_it_arrives() {
    part_of_a_piece_before_the_rest(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_gets_its_part_of_a_piece_before_the_rest_of_it_arrives_with_io_uring() {
    part_of_a_piece_before_the_rest(1).await;
}

async fn part_of_a_piece_before_the_rest(aio: u8) {
    let Holding {
        piece,
        data,
        gate,
        upstream,
        acc,
        url,
    } = Holding::start(
        2,
        23,
        300 * KIB,
        &format!("  aioEnable: {aio}\n"),
        "coldRandomReadKiB: 0\n",
    )
    .await;

    // The piece's first 300 KiB have arrived and the rest is held back: a read within them
    // is answered while the download is still running.
    let early = http::get(&url, &[("range", &range(1000, 200_000))])
        .await
        .unwrap();
    assert_eq!(early.status, 206);
    assert!(early.body[..] == data[1000..=200_000]);
    assert_eq!(
        metric(&acc, "dadi_p2p_inflight_downloads", &[]).await,
        Some(1.0)
    );
    assert_eq!(
        upstream.requests(),
        1,
        "one request for the size and the piece"
    );

    // A read reaching past what has arrived gets all of its bytes once they have.
    let late = tokio::spawn({
        let url = url.clone();
        async move {
            http::get(&url, &[("range", &range(200_000, 700_000))])
                .await
                .unwrap()
        }
    });
    gate.add_permits(1);
    let late = late.await.unwrap();
    assert_eq!(late.status, 206);
    assert!(late.body[..] == data[200_000..=700_000]);

    // The piece was cached once it was complete; reading it again asks nobody.
    let settled = downloads_settled(&acc, Duration::from_secs(10)).await;
    assert!(settled, "the piece download never ended");
    let again = http::get(&url, &[("range", &range(0, piece - 1))])
        .await
        .unwrap();
    assert_eq!(again.status, 206);
    assert!(again.body[..] == data[..piece as usize]);
    assert_eq!(upstream.requests(), 1);

    // The piece came from the origin once: its first reader counts origin bytes, the reader
    // that joined the same download and the one after it count cache hits.
    let served = |source: &'static str| {
        let acc = &acc;
        async move { metric(acc, "dadi_p2p_served_bytes_total", &[("source", source)]).await }
    };
    assert_eq!(served("origin").await, Some(199_001.0));
    assert_eq!(served("cache").await, Some((500_001 + piece) as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_asked_for_again_from_where_it_stopped() {
    let first = 300 * KIB;
    let Holding {
        piece,
        data,
        gate: _gate,
        upstream,
        acc: _acc,
        url,
    } = Holding::start(
        1,
        37,
        first,
        "",
        "upstream:\n  readTimeoutMs: 300\n  retries: 3\n",
    )
    .await;

    // Each answer stops after 300 KiB and never goes on: every retry resumes at the first
    // byte not yet had, so four answers make the 1 MiB piece.
    let whole = http::get(&url, &[("range", &range(0, piece - 1))])
        .await
        .unwrap();
    assert_eq!(whole.status, 206);
    assert!(whole.body[..] == data[..piece as usize]);
    let asked: Vec<_> = (0..4)
        .map(|i| Some(format!("bytes={}-{}", i * first, piece - 1)))
        .collect();
    assert_eq!(upstream.ranges(), asked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_requests_wait_for_a_download_slot_like_pieces() {
    let Holding {
        data,
        gate,
        upstream,
        acc,
        url,
        ..
    } = Holding::start(2, 43, 100 * KIB, "", "proxyConcurrencyLimit: 1\n").await;

    // The one slot goes to the first blob, whose first piece is held upstream.
    let first = http::get(&url, &[("range", &range(0, 999))]).await.unwrap();
    assert_eq!(first.status, 206);
    assert!(first.body[..] == data[..1000]);

    // Another blob's size request waits for that slot instead of going upstream.
    let other_url = acc.accelerator_url(&upstream.url("/other.bin"));
    let other = tokio::spawn(async move {
        http::get(&other_url, &[("range", &range(0, 999))])
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        upstream.requests(),
        1,
        "a second blob went upstream at once"
    );

    // The first download ends, its slot passes on, and the other blob is read.
    gate.add_permits(2);
    let other = other.await.unwrap();
    assert_eq!(other.status, 206);
    assert!(other.body[..] == data[..1000]);
    assert_eq!(upstream.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_probe_is_the_first_pieces_download_and_is_answered_as_it_arrives() {
    let Holding {
        piece,
        data,
        gate,
        upstream,
        acc,
        url,
    } = Holding::start(3, 29, 100 * KIB, "", "").await;

    // overlaybd's size probe: one origin request, for the size and the first piece at once,
    // answered while the piece is still held back upstream.
    let probe = http::get(&url, &[("range", "bytes=0-0")]).await.unwrap();
    assert_eq!(probe.status, 206);
    let total = format!("bytes 0-0/{}", data.len());
    assert_eq!(probe.header("content-range"), Some(total.as_str()));
    assert_eq!(probe.body[..], data[..1]);
    assert_eq!(
        metric(&acc, "dadi_p2p_inflight_downloads", &[]).await,
        Some(1.0)
    );
    assert_eq!(
        upstream.requests(),
        1,
        "one request for the size and piece 0"
    );
    assert_eq!(
        upstream.ranges(),
        vec![Some(format!("bytes=0-{}", piece - 1))]
    );

    // The read that follows a probe is served from the same download.
    let read = http::get(&url, &[("range", &range(0, 65_535))])
        .await
        .unwrap();
    assert_eq!(read.status, 206);
    assert!(read.body[..] == data[..65_536]);
    gate.add_permits(1);
    let settled = downloads_settled(&acc, Duration::from_secs(10)).await;
    assert!(settled, "the piece download never ended");
    let whole = http::get(&url, &[("range", &range(0, piece - 1))])
        .await
        .unwrap();
    assert!(whole.body[..] == data[..piece as usize]);
    assert_eq!(upstream.requests(), 1);

    // A HEAD asks for the size alone.
    let other = HandUpstream::start(Behaviour::Blob {
        data: data.clone(),
        truncate: false,
    })
    .await;
    let head = http::head(&acc.accelerator_url(&other.url("/other.bin")), &[])
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    let size = data.len().to_string();
    assert_eq!(head.header("content-length"), Some(size.as_str()));
    assert_eq!(other.ranges(), vec![Some("bytes=0-0".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_piece_already_being_read_finish_into_the_cache() {
    let Holding {
        piece,
        data,
        gate,
        upstream,
        acc,
        url,
    } = Holding::start(3, 31, 100 * KIB, "", "service:\n  graceMs: 30000\n").await;
    let r = http::get(&url, &[("range", &range(0, 999))]).await.unwrap();
    assert!(r.body[..] == data[..1000]);

    // Stopped while the rest of the piece is held upstream; then the rest arrives.
    let pid = acc.pid().unwrap() as libc::pid_t;
    // SAFETY: kill(2) on the daemon this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let port = acc.port();
    let closed = eventually(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    })
    .await;
    assert!(closed, "still accepting after SIGTERM");
    gate.add_permits(1);
    let (mut acc, status) = tokio::task::spawn_blocking(move || {
        let mut acc = acc;
        let status = acc.terminate().unwrap();
        (acc, status)
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status}");

    // The piece was committed before the daemon exited: after a restart it is served
    // without asking the origin.
    tokio::task::block_in_place(|| acc.restart().unwrap());
    let url = acc.accelerator_url(&upstream.url("/layer.bin"));
    let whole = http::get(&url, &[("range", &range(0, piece - 1))])
        .await
        .unwrap();
    assert!(whole.body[..] == data[..piece as usize]);
    assert_eq!(upstream.requests(), 1, "the piece was fetched again");
}
