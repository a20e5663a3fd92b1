//! Requests the daemon must refuse before fetching anything: it is never an open proxy, and
//! bad input changes nothing on disk. The hand-written upstream counts connections, which
//! shows that a refused request sent nothing to it.

use std::sync::Arc;
use std::time::Duration;

use ::http::Method;
use dadi_p2p_integration::http::{self, empty, Conn};
use dadi_p2p_integration::{free_port, wait_ready};

use super::common::upstream::{Behaviour, HandUpstream};
use super::common::{config, downloads_settled, metric, piece_files};
use super::{blob_bytes, one_line_reason, raw_exchange, sha256_hex, start, KillOnDrop};

async fn serving_upstream() -> (HandUpstream, Arc<Vec<u8>>) {
    let data = Arc::new(blob_bytes(100_000, 41));
    let upstream = HandUpstream::start(Behaviour::Blob {
        data: data.clone(),
        truncate: false,
    })
    .await;
    (upstream, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_read_past_the_end_is_refused_and_keeps_nothing() {
    let (large, _) = serving_upstream().await;
    let small_data = Arc::new(blob_bytes(1000, 43));
    let small = HandUpstream::start(Behaviour::Blob {
        data: small_data.clone(),
        truncate: false,
    })
    .await;
    let acc = start(&config(""));
    let before = piece_files(acc.cache_dir());
    // Past the end of a blob smaller than a piece (the size request brings its first
    // piece) and of one whose size alone is asked for.
    for (upstream, size) in [(&small, 1000), (&large, 100_000)] {
        let start = size + 10;
        let r = http::get(
            &acc.accelerator_url(&upstream.url("/layer.bin")),
            &[("range", &format!("bytes={start}-{}", start + 100))],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 416, "{size}");
        let all = format!("bytes */{size}");
        assert_eq!(r.header("content-range"), Some(all.as_str()), "{size}");
        one_line_reason(&r);
    }
    assert!(downloads_settled(&acc, Duration::from_secs(10)).await);
    assert_eq!(
        piece_files(acc.cache_dir()),
        before,
        "a refused read left a size or a piece in the cache"
    );
    // Asked properly, the same blob is served and cached.
    let ok = http::get(
        &acc.accelerator_url(&small.url("/layer.bin")),
        &[("range", "bytes=0-99")],
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 206);
    assert!(ok.body[..] == small_data[..100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_get_a_reason_and_write_nothing() {
    let (upstream, _) = serving_upstream().await;
    let acc = start(&config(""));
    let before = piece_files(acc.cache_dir());
    let hex = sha256_hex(b"refused");
    let own = acc.port();
    let up = upstream.port();

    let cases: Vec<(String, u16, &str)> = vec![
        (format!("v2/app/blobs/sha256:{hex}"), 400, "relative URL"),
        (format!("127.0.0.1:{up}/layer.bin"), 400, "no scheme"),
        (format!("ftp://127.0.0.1:{up}/layer.bin"), 400, "ftp"),
        ("file:///etc/passwd".into(), 400, "file"),
        (
            format!("http://user:pw@127.0.0.1:{up}/layer.bin"),
            400,
            "credentials in URL",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            403,
            "link-local metadata",
        ),
        (
            "http://100.100.100.200/latest/meta-data/".into(),
            403,
            "metadata address",
        ),
        ("http://[fe80::1]/x".into(), 403, "IPv6 link-local"),
        (
            format!("http://127.0.0.1:{own}/v2/app/blobs/sha256:{hex}"),
            403,
            "own port",
        ),
        (
            format!("http://localhost:{own}/v2/app/blobs/sha256:{hex}"),
            403,
            "own port by name",
        ),
        (
            format!("http://localhost.:{own}/v2/app/blobs/sha256:{hex}"),
            403,
            "own port by qualified name",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{own}/v2/app/blobs/sha256:{hex}"),
            403,
            "own port, v4-mapped",
        ),
        (
            format!("http://127.0.0.1:{own}/accelerator/http://127.0.0.1:{up}/layer.bin"),
            403,
            "through itself",
        ),
        (String::new(), 400, "no URL"),
        (
            format!("http://127.0.0.1:{up}/{}", "a".repeat(9000)),
            400,
            "URL too long",
        ),
    ];
    for (blob, status, what) in &cases {
        let r = http::get(&acc.accelerator_url(blob), &[("range", "bytes=0-0")])
            .await
            .unwrap();
        assert_eq!(
            r.status,
            *status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let reason = one_line_reason(&r);
        assert!(
            !reason.contains("/tmp"),
            "{what}: internal path in {reason:?}"
        );
    }

    // A request that already passed through a dadi-p2p daemon is a loop.
    let hop = http::get(
        &acc.accelerator_url(&upstream.url("/layer.bin")),
        &[("x-dadi-p2p-hop", "1")],
    )
    .await
    .unwrap();
    assert_eq!(hop.status, 508);
    one_line_reason(&hop);

    let mut conn = Conn::connect(([127, 0, 0, 1], own).into()).await.unwrap();
    let path = format!("/accelerator/{}", upstream.url("/layer.bin"));
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let r = conn
            .request(method.clone(), &path, &[], empty())
            .await
            .unwrap();
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
        one_line_reason(&r);
    }
    for unknown in [
        "/",
        "/accelerator",
        "/v2/app/manifests/latest",
        "/nothing/here",
    ] {
        let r = conn.get(unknown, &[]).await.unwrap();
        assert_eq!(r.status, 404, "{unknown}");
        one_line_reason(&r);
    }

    // A 64 KiB header is more than the daemon reads of a request head.
    let request = format!(
        "GET /accelerator/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {}\r\n\
         Connection: close\r\n\r\n",
        upstream.url("/layer.bin"),
        "a".repeat(64 * 1024)
    );
    let answer = raw_exchange(own, request.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{:?}",
        answer.lines().next()
    );

    assert_eq!(
        upstream.connections(),
        0,
        "a refused request reached upstream"
    );
    assert_eq!(
        piece_files(acc.cache_dir()),
        before,
        "a refused request wrote to the cache"
    );
    // The daemon is still fine, and the same upstream is usable when asked properly.
    let ok = http::get(
        &acc.accelerator_url(&upstream.url("/layer.bin")),
        &[("range", "bytes=0-0")],
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 206);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_relayed_through_another_daemon_ends_as_a_loop() {
    let (upstream, _) = serving_upstream().await;
    let first = start(&config(""));
    let second = start(&config(""));
    // The first daemon's request reaches the second with the hop header: refused there with
    // 508, which comes back unchanged and is not retried.
    let relayed = second.accelerator_url(&upstream.url("/layer.bin"));
    let r = http::get(&first.accelerator_url(&relayed), &[("range", "bytes=0-0")])
        .await
        .unwrap();
    assert_eq!(r.status, 508);
    one_line_reason(&r);
    assert_eq!(upstream.connections(), 0);
    let retried = metric(&first, "dadi_p2p_origin_retries_total", &[]).await;
    assert_eq!(retried, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_the_allow_list_are_refused_before_connecting() {
    let (upstream, data) = serving_upstream().await;
    let acc = start(&config("upstream:\n  allowHosts: [\"127.0.0.1\"]\n"));

    let by_name = format!("http://localhost:{}/layer.bin", upstream.port());
    let r = http::get(&acc.accelerator_url(&by_name), &[("range", "bytes=0-9")])
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let reason = one_line_reason(&r);
    assert!(reason.contains("allowHosts"), "{reason}");
    assert_eq!(upstream.connections(), 0);

    let r = http::get(
        &acc.accelerator_url(&upstream.url("/layer.bin")),
        &[("range", "bytes=0-9")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body[..] == data[..10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_held_to_the_same_rules_as_requests() {
    let (target, _) = serving_upstream().await;
    let acc = start(&config("upstream:\n  allowHosts: [\"127.0.0.1\"]\n"));
    let own = acc.port();
    let forbidden = [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://100.100.100.200/latest/meta-data/".to_string(),
        format!(
            "http://127.0.0.1:{own}/accelerator/{}",
            target.url("/layer.bin")
        ),
        format!("http://localhost:{}/layer.bin", target.port()),
    ];
    for location in forbidden {
        let redirecting = HandUpstream::start(Behaviour::Redirect(location.clone())).await;
        let r = http::get(
            &acc.accelerator_url(&redirecting.url("/layer.bin")),
            &[("range", "bytes=0-0")],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 403, "redirect to {location}");
        one_line_reason(&r);
        assert_eq!(redirecting.requests(), 1);
    }
    assert_eq!(target.connections(), 0, "a forbidden redirect was followed");

    // A redirect to itself is followed a bounded number of times, as overlaybd does.
    let looping = HandUpstream::start(Behaviour::Status(200)).await;
    looping.set(Behaviour::Redirect(looping.url("/layer.bin")));
    let r = http::get(
        &acc.accelerator_url(&looping.url("/layer.bin")),
        &[("range", "bytes=0-0")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502);
    one_line_reason(&r);
    assert_eq!(looping.requests(), 9, "the first request and 8 redirects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_every_address_the_daemon_refuses_its_interface_addresses() {
    let Some(ip) = dadi_p2p::interfaces::addresses()
        .into_iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
    else {
        eprintln!("skipped: this machine has no interface address besides loopback");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_dadi-p2p"))
        .arg("--listen")
        .arg(format!("0.0.0.0:{port}"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env_remove("DADI_P2P_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/healthz"), Duration::from_secs(30)).unwrap();

    // The node's own address and the service port: refused before any connection, not
    // found out one hop later.
    let hex = sha256_hex(b"self");
    let own = format!("{base}/accelerator/http://{ip}:{port}/v2/app/blobs/sha256:{hex}");
    let r = http::get(&own, &[("range", "bytes=0-0")]).await.unwrap();
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    one_line_reason(&r);
}
