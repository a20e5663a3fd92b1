//! `GET /status` against the reads made, and the `dadi-p2p status` command.

use std::process::Command;

use dadi_p2p::cache::HEADER_LEN;
use dadi_p2p_integration::{free_port, http};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_reads_and_the_cli_prints_it() {
    let world = World::new();
    let (digest, blob) = world.layer(0);
    let url = world.blob_url(&digest);
    let acc = world.start(&obs_config("  enable: false\n", ""));

    let status = || async {
        let resp = http::get(&format!("{}/status", acc.base_url()), &[])
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        serde_json::from_slice::<serde_json::Value>(&resp.body).unwrap()
    };
    let idle = status().await;
    assert_eq!(idle["mode"], "agent");
    assert_eq!(idle["node"], format!("127.0.0.1:{}", acc.port()));
    assert_eq!(idle["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(idle["cache"]["used"], 0);
    assert!(idle["hit_ratio"].is_null(), "no byte served yet");

    read_cold_then_warm(&acc, &url, &blob).await;
    let want = expected(blob.len() as u64);
    // A reader can have its bytes before their piece is committed: ask until the
    // downloads have ended, counting the asking.
    let mut asked = 0;
    let st = loop {
        let st = status().await;
        asked += 1;
        if st["inflight_downloads"] == 0 || asked == 100 {
            break st;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(st["cache"]["capacity"], 256 * MIB);
    let on_disk = want.download + want.pieces.len() as u64 * HEADER_LEN;
    assert_eq!(st["cache"]["used"], on_disk);
    assert_eq!(st["bytes"]["origin"], want.served_once);
    assert_eq!(st["bytes"]["cache"], want.served_once);
    assert_eq!(st["bytes"]["peer"], 0);
    assert_eq!(st["hit_ratio"].as_f64(), Some(0.5));
    assert_eq!(st["inflight_downloads"], 0);
    // The reads, the first /status, the harness's one successful readiness probe and the
    // asking before this answer.
    assert_eq!(st["requests"]["2xx"], 2 * 2 + 2 + (asked - 1));

    let cli = Command::new(env!("CARGO_BIN_EXE_dadi-p2p"))
        .args(["status", "--address", &acc.base_url()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{table} {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(table.contains("(agent)"), "{table}");
    assert!(table.contains("hit ratio  50.0%"), "{table}");
    assert!(table.contains("of 256.0 MiB"), "{table}");

    let closed = free_port().unwrap();
    let cli = Command::new(env!("CARGO_BIN_EXE_dadi-p2p"))
        .args(["status", "--address", &format!("http://127.0.0.1:{closed}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success());
    assert!(
        err.contains(&format!("cannot reach 127.0.0.1:{closed}")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}
