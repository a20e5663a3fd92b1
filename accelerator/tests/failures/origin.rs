//! The origin side: redirects to storage, registry auth, kept-alive origin connections, and
//! an origin that is down, silent, refusing, failing with 5xx or cutting a download short.

use std::sync::Arc;
use std::time::Duration;

use dadi_p2p_integration::http::{self, range};
use dadi_p2p_integration::{free_port, Credentials, Nginx};

use super::common::upstream::{Behaviour, HandUpstream};
use super::common::{config, downloads_settled, eventually, metric, KIB, PIECE};
use super::{cached_pieces, one_line_reason, registry_with_blob, sha256_hex, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_storage_are_followed_without_the_registry_credentials() {
    let creds = Credentials::new("reader", "s3cret");
    let (registry, digest, bytes) =
        registry_with_blob(Some(creds.clone()), 700 * KIB as usize + 5, 11).await;
    let front = Nginx::redirecting_front(&registry).unwrap();
    let auth = creds.basic_header();

    // The storage side refuses a request that carries credentials, as S3 does for a
    // presigned URL: a client that kept Authorization across the redirect would fail here.
    let redirect = http::get(&front.blob_url("app", &digest), &[])
        .await
        .unwrap();
    assert_eq!(redirect.status, 307);
    let location = redirect.header("location").unwrap().to_owned();
    let leaked = http::get(&location, &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(leaked.status, 400);

    let acc = start(&config(""));
    let url = acc.accelerator_url(&front.blob_url("app", &digest));
    // Cold reads carrying the registry's credentials, as overlaybd sends them for a registry
    // URL: the daemon follows the 307 to the storage port and drops Authorization on the way.
    let part = http::get(
        &url,
        &[("authorization", &auth), ("range", &range(1000, 300_000))],
    )
    .await
    .unwrap();
    assert_eq!(part.status, 206, "{}", String::from_utf8_lossy(&part.body));
    assert!(part.body[..] == bytes[1000..=300_000]);
    let whole = http::get(&url, &[("authorization", &auth)]).await.unwrap();
    assert_eq!(whole.status, 200);
    assert!(whole.body[..] == bytes[..]);
    let downloaded = metric(&acc, "DADIP2P_Count", &[("type", "download")])
        .await
        .unwrap();
    assert_eq!(
        downloaded,
        bytes.len() as f64,
        "every piece came via the 307"
    );

    // The storage URL itself, signature and all, is served and keyed by the same digest.
    let direct = http::get(&acc.accelerator_url(&location), &[("range", "bytes=0-99")])
        .await
        .unwrap();
    assert_eq!(direct.status, 206);
    assert!(direct.body[..] == bytes[..100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_auth_passes_through_and_refusals_keep_their_status() {
    let creds = Credentials::new("reader", "s3cret");
    let (registry, digest, bytes) =
        registry_with_blob(Some(creds.clone()), 200 * KIB as usize + 1, 12).await;
    let acc = start(&config(""));
    let url = acc.accelerator_url(&registry.blob_url("app", &digest));
    let size = bytes.len();

    let anonymous = http::get(&url, &[("range", "bytes=0-0")]).await.unwrap();
    assert_eq!(anonymous.status, 401);
    let challenge = anonymous.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic"), "{challenge:?}");
    one_line_reason(&anonymous);

    let wrong = Credentials::new("reader", "guess").basic_header();
    let refused = http::get(&url, &[("authorization", &wrong), ("range", "bytes=0-0")])
        .await
        .unwrap();
    assert_eq!(refused.status, 401);
    let name = format!("sha256-{}", digest.trim_start_matches("sha256:"));
    assert!(cached_pieces(acc.cache_dir(), &name).is_empty());

    let auth = creds.basic_header();
    let probe = http::get(&url, &[("authorization", &auth), ("range", "bytes=0-0")])
        .await
        .unwrap();
    assert_eq!(probe.status, 206);
    assert_eq!(
        probe.header("content-range"),
        Some(format!("bytes 0-0/{size}").as_str())
    );
    let part = http::get(
        &url,
        &[("authorization", &auth), ("range", &range(70_000, 150_000))],
    )
    .await
    .unwrap();
    assert_eq!(part.status, 206);
    assert!(part.body[..] == bytes[70_000..=150_000]);
    let whole = http::get(&url, &[("authorization", &auth)]).await.unwrap();
    assert_eq!(whole.status, 200);
    assert!(whole.body[..] == bytes[..]);

    let unknown = format!("sha256:{}", sha256_hex(b"no such blob"));
    let missing = http::get(
        &acc.accelerator_url(&registry.blob_url("app", &unknown)),
        &[("authorization", &auth), ("range", "bytes=0-0")],
    )
    .await
    .unwrap();
    assert_eq!(missing.status, 404);
    one_line_reason(&missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_joining_a_download_refused_for_other_credentials_asks_with_its_own() {
    let data = Arc::new(super::blob_bytes((4 * PIECE) as usize, 41));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let token = "Bearer good";
    let upstream = HandUpstream::start(Behaviour::Guarded {
        data: data.clone(),
        token: token.into(),
        gate: gate.clone(),
    })
    .await;
    let acc = start(&config("readAhead: 0\ncoldRandomReadKiB: 0\n"));
    let url = acc.accelerator_url(&upstream.url("/layer.bin"));
    let with_token = [("authorization", token)];
    let probe = http::get(&url, &[with_token[0], ("range", "bytes=0-0")])
        .await
        .unwrap();
    assert_eq!(probe.status, 206);

    // A reader without credentials starts the download of piece 2; its refusal is held
    // upstream while a reader with good credentials asks for the same piece and joins it.
    let (s, e) = (2 * PIECE + 10, 2 * PIECE + 5000);
    let anonymous = tokio::spawn({
        let url = url.clone();
        async move { http::get(&url, &[("range", &range(s, e))]).await.unwrap() }
    });
    let asked = eventually(Duration::from_secs(10), || async {
        upstream.requests() == 2
    })
    .await;
    assert!(asked, "the anonymous read never reached the upstream");
    let entitled = tokio::spawn({
        let url = url.clone();
        async move {
            http::get(&url, &[with_token[0], ("range", &range(s, e))])
                .await
                .unwrap()
        }
    });
    // Time for the second reader to join the held download; had it not, it would start its
    // own and pass without the retry under test.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.add_permits(1);

    assert_eq!(anonymous.await.unwrap().status, 401);
    let entitled = entitled.await.unwrap();
    assert_eq!(
        entitled.status,
        206,
        "refused for another reader's credentials: {:?} {:?}",
        upstream.requests(),
        upstream.ranges()
    );
    assert!(entitled.body[..] == data[s as usize..=e as usize]);
    assert_eq!(upstream.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_silent_upstreams_answer_502_and_504() {
    let acc = start(&config("upstream:\n  readTimeoutMs: 500\n  retries: 2\n"));
    let hex = sha256_hex(b"anything");

    // Nothing listens on a port that was free a moment ago.
    let down = free_port().unwrap();
    let blob = format!("http://127.0.0.1:{down}/v2/app/blobs/sha256:{hex}");
    let r = http::get(&acc.accelerator_url(&blob), &[("range", "bytes=0-0")])
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    one_line_reason(&r);

    // Accepts, reads the request, never answers.
    let silent = HandUpstream::start(Behaviour::Silent).await;
    let r = http::get(
        &acc.accelerator_url(&silent.url("/layer.bin")),
        &[("range", "bytes=0-0")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 504);
    one_line_reason(&r);
    assert_eq!(
        silent.requests(),
        1,
        "an upstream that never answers is not asked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_completes_the_handshake_answers_504() {
    // A listener that never accepts, with its accept queue full: the kernel drops further
    // SYNs, so a connect hangs the way it does to a host that is down but routed.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    let mut full = false;
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(stream) => fillers.push(stream),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
                full = true;
                break;
            }
        }
    }
    assert!(full, "the accept queue never filled");

    let acc = start(&config(
        "upstream:\n  connectTimeoutMs: 300\n  readTimeoutMs: 30000\n  retries: 0\n",
    ));
    let blob = format!("http://{addr}/layer.bin");
    let r = http::get(&acc.accelerator_url(&blob), &[("range", "bytes=0-0")])
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    one_line_reason(&r);
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_5xx_is_retried_a_bounded_number_of_times() {
    let retries = 2;
    let acc = start(&config(&format!("upstream:\n  retries: {retries}\n")));
    let failing = HandUpstream::start(Behaviour::Status(503)).await;
    let retried = || metric(&acc, "dadi_p2p_origin_retries_total", &[]);
    let before = retried().await.unwrap();

    let url = acc.accelerator_url(&failing.url("/layer.bin"));
    let r = http::get(&url, &[("range", "bytes=0-0")]).await.unwrap();
    assert_eq!(r.status, 502);
    one_line_reason(&r);
    assert_eq!(failing.requests(), retries + 1);
    assert_eq!(retried().await.unwrap() - before, retries as f64);

    // Each request gets its own bounded series of attempts.
    let r = http::get(&url, &[("range", "bytes=0-0")]).await.unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(failing.requests(), 2 * (retries + 1));
    assert_eq!(retried().await.unwrap() - before, 2.0 * retries as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_short_caches_nothing() {
    let data = Arc::new(super::blob_bytes(300 * KIB as usize + 7, 13));
    let hex = sha256_hex(&data);
    let upstream = HandUpstream::start(Behaviour::Blob {
        data: data.clone(),
        truncate: true,
    })
    .await;
    // Default retries: each retry resumes where the last attempt broke off, and the upstream
    // cuts every answer in half again, so the piece never completes.
    let acc = start(&config(""));
    let url = acc.accelerator_url(&upstream.url(&format!("/v2/app/blobs/sha256:{hex}")));
    let name = format!("sha256-{hex}");

    // The first piece never completes, so the answer is a status, not a broken body.
    let cut = http::get(&url, &[]).await.unwrap();
    assert_eq!(cut.status, 502);
    one_line_reason(&cut);
    let ranged = http::get(&url, &[("range", &range(10, 100_000))])
        .await
        .unwrap();
    assert_eq!(ranged.status, 502);

    // Every download started, read-ahead included, has given up...
    let settled = downloads_settled(&acc, Duration::from_secs(30)).await;
    assert!(settled, "downloads still running");
    // ...and left nothing behind, neither a piece nor a temp file.
    assert_eq!(
        cached_pieces(acc.cache_dir(), &name),
        Vec::<std::path::PathBuf>::new()
    );
    let pieces = data.len().div_ceil(PIECE as usize);
    // One size probe, then at most 1 + retries (3) attempts per piece: every piece for the
    // whole read, two more for the ranged one.
    assert!(
        upstream.requests() <= 1 + 4 * (pieces + 2),
        "{} upstream requests",
        upstream.requests()
    );

    // The same URL from an upstream that now answers in full: exact bytes, and now cached.
    upstream.set(Behaviour::Blob {
        data: data.clone(),
        truncate: false,
    });
    let whole = http::get(&url, &[]).await.unwrap();
    assert_eq!(whole.status, 200);
    assert!(whole.body[..] == data[..]);
    let part = http::get(&url, &[("range", &range(65_000, 200_000))])
        .await
        .unwrap();
    assert_eq!(part.status, 206);
    assert!(part.body[..] == data[65_000..=200_000]);
    assert_eq!(cached_pieces(acc.cache_dir(), &name).len(), pieces);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_refusals_keep_their_status_and_are_not_retried() {
    let acc = start(&config("upstream:\n  retries: 1\n"));
    // What overlaybd maps to EPERM, ENOENT and EBUSY must arrive as the same status, and so
    // must a loop another daemon refused.
    for status in [401, 403, 404, 410, 429, 508] {
        let upstream = HandUpstream::start(Behaviour::Status(status)).await;
        let r = http::get(
            &acc.accelerator_url(&upstream.url("/layer.bin")),
            &[("range", "bytes=0-0")],
        )
        .await
        .unwrap();
        assert_eq!(r.status, status);
        one_line_reason(&r);
        assert_eq!(upstream.requests(), 1, "{status} was retried");
    }
    // A server error is retried, then reported as a bad gateway.
    let upstream = HandUpstream::start(Behaviour::Status(500)).await;
    let r = http::get(
        &acc.accelerator_url(&upstream.url("/layer.bin")),
        &[("range", "bytes=0-0")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(upstream.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_are_kept_alive_and_reused() {
    let pieces = 10;
    let data = Arc::new(super::blob_bytes(pieces * PIECE as usize, 14));
    let upstream = HandUpstream::start(Behaviour::Blob {
        data: data.clone(),
        truncate: false,
    })
    .await;
    let acc = start(&config("readAhead: 0\n"));
    let url = acc.accelerator_url(&upstream.url("/layer.bin"));
    // One piece at a time, one request per piece: the first also brings the size.
    for piece in 0..pieces as u64 {
        let first = piece * PIECE;
        let r = http::get(&url, &[("range", &range(first, first + PIECE - 1))])
            .await
            .unwrap();
        assert_eq!(r.status, 206);
        assert!(r.body[..] == data[first as usize..(first + PIECE) as usize]);
    }
    assert_eq!(upstream.requests(), pieces);
    // A connection goes back to the pool from a task of its own, so a request that follows
    // at once may find it not yet returned and open a second one; without reuse there would
    // be one connection per request.
    assert!(
        upstream.connections() <= 3,
        "origin connections were not reused: {} for {} requests",
        upstream.connections(),
        pieces
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_killed_mid_read_is_retried_and_leaves_only_whole_pieces() {
    let retries = 2;
    let (mut registry, digest, bytes) = registry_with_blob(None, 2 << 20, 15).await;
    // 1 MB/s downstream and no read-ahead: pieces are fetched as the answer reaches them, so
    // most of them are still to come when the registry dies.
    let acc = start(&format!(
        "cache:\n  capacity: {}\n  pieceSize: {PIECE}\nExporterConfig:\n  enable: true\n  \
         standaloneExporterPort: false\nthrottleLimitMB: 1\nreadAhead: 0\n\
         upstream:\n  retries: {retries}\n",
        64 << 20
    ));
    let url = acc.accelerator_url(&registry.blob_url("app", &digest));
    let reader = tokio::spawn({
        let url = url.clone();
        async move { http::get(&url, &[]).await }
    });
    let name = format!("sha256-{}", digest.trim_start_matches("sha256:"));
    let started = eventually(Duration::from_secs(30), || async {
        !cached_pieces(acc.cache_dir(), &name).is_empty()
    })
    .await;
    assert!(started, "no piece arrived");
    registry.process().kill();

    let cut = reader.await.unwrap();
    assert!(cut.is_err(), "the answer completed without its origin");
    let retried = metric(&acc, "dadi_p2p_origin_retries_total", &[])
        .await
        .unwrap();
    assert!(retried >= retries as f64, "{retried} retries");
    let settled = downloads_settled(&acc, Duration::from_secs(30)).await;
    assert!(settled, "downloads still running");

    // What is cached is whole pieces only, and served without the origin.
    let cached = cached_pieces(acc.cache_dir(), &name);
    let total = bytes.len().div_ceil(PIECE as usize);
    assert!(
        !cached.is_empty() && cached.len() < total,
        "{} pieces",
        cached.len()
    );
    for file in &cached {
        assert!(
            file.starts_with(acc.cache_dir().join("v1/blobs")),
            "{}",
            file.display()
        );
        let index = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .and_then(|i| u64::from_str_radix(i, 16).ok())
            .unwrap_or_else(|| panic!("not a piece file: {}", file.display()));
        let first = index * PIECE;
        let r = http::get(&url, &[("range", &range(first, first + PIECE - 1))])
            .await
            .unwrap();
        assert_eq!(r.status, 206);
        assert!(r.body[..] == bytes[first as usize..(first + PIECE) as usize]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_piece_that_cannot_be_had_gets_a_status_not_a_broken_answer() {
    let data = Arc::new(super::blob_bytes(4 * PIECE as usize, 16));
    let upstream = HandUpstream::start(Behaviour::Blob {
        data: data.clone(),
        truncate: false,
    })
    .await;
    let acc = start(&config(
        "readAhead: 0\nupstream:\n  readTimeoutMs: 500\n  retries: 0\n",
    ));
    let url = acc.accelerator_url(&upstream.url("/layer.bin"));
    // The size is known from here on; only piece 0 is cached.
    let probe = http::get(&url, &[("range", "bytes=0-0")]).await.unwrap();
    assert_eq!(probe.status, 206);

    let piece2 = range(2 * PIECE + 5, 2 * PIECE + 100);
    upstream.set(Behaviour::Silent);
    let slow = http::get(&url, &[("range", &piece2)]).await.unwrap();
    assert_eq!(slow.status, 504);
    one_line_reason(&slow);
    // The piece download started beside that small read ends on its own timeout; a read
    // made before then would join it and get its 504 too.
    let settled = downloads_settled(&acc, Duration::from_secs(10)).await;
    assert!(settled, "the piece download never ended");

    upstream.set(Behaviour::Status(404));
    let gone = http::get(&url, &[("range", &piece2)]).await.unwrap();
    assert_eq!(gone.status, 404);
    one_line_reason(&gone);

    // Cached bytes are still served, and the piece once the origin answers again.
    upstream.set(Behaviour::Blob {
        data: data.clone(),
        truncate: false,
    });
    let r = http::get(&url, &[("range", &piece2)]).await.unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body[..] == data[2 * PIECE as usize + 5..=2 * PIECE as usize + 100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_readers_share_one_request_for_the_size_and_the_piece() {
    let data = Arc::new(super::blob_bytes(3 * PIECE as usize, 17));
    let upstream = HandUpstream::start(Behaviour::Blob {
        data: data.clone(),
        truncate: false,
    })
    .await;
    let acc = start(&config("readAhead: 0\ncoldRandomReadKiB: 0\n"));
    let url = acc.accelerator_url(&upstream.url("/layer.bin"));
    let readers: Vec<_> = (0..8u64)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let (a, b) = (i * 100, i * 100 + 999);
                (
                    a,
                    b,
                    http::get(&url, &[("range", &range(a, b))]).await.unwrap(),
                )
            })
        })
        .collect();
    for reader in readers {
        let (a, b, r) = reader.await.unwrap();
        assert_eq!(r.status, 206);
        assert!(r.body[..] == data[a as usize..=b as usize]);
    }
    assert_eq!(
        upstream.requests(),
        1,
        "the size probe is the piece's download"
    );
}
