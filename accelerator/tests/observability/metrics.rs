//! The exporter seen from outside: Debian's Prometheus scraping it, where `/metrics` is
//! served for each `ExporterConfig`, the `node` label on a daemon listening on every
//! address, and request durations that run to the last byte.

use std::collections::BTreeSet;
use std::process::Command;

use dadi_p2p::cache::HEADER_LEN;
use dadi_p2p_integration::{
    build_image, free_port, http, Accelerator, Compression, LayerSpec, ProcessGuard, Prometheus,
    Registry, ScrapeTarget,
};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_documented_series_with_true_byte_counts() {
    let world = World::new();
    let (digest, blob) = world.layer(0);
    let url = world.blob_url(&digest);
    let exporter_port = free_port().unwrap();
    let acc = world.start(&obs_config(
        &format!("  enable: true\n  port: {exporter_port}\n  standaloneExporterPort: true\n"),
        "",
    ));
    let node = format!("127.0.0.1:{}", acc.port());
    let prom = Prometheus::start(&[
        ScrapeTarget::new("dadi", &format!("127.0.0.1:{exporter_port}")),
        ScrapeTarget::new("registry", &world.registry.metrics_host()),
    ])
    .unwrap();

    // Every documented family is there before any traffic, with the documented labels.
    let kinds: BTreeSet<String> = ["pread", "download", "peer", "disk", "http"]
        .map(String::from)
        .into();
    for family in [
        "DADIP2P_Read_Throughtput",
        "DADIP2P_QPS",
        "DADIP2P_MaxLatency",
        "DADIP2P_Count",
    ] {
        let q = format!("{family}{{job=\"dadi\"}}");
        let samples = prom.wait_for(&q, SCRAPED).await.unwrap();
        let types: BTreeSet<String> = samples.iter().map(|s| s.labels["type"].clone()).collect();
        assert_eq!(types, kinds, "{family}");
        for s in &samples {
            assert_eq!(s.labels["node"], node, "{family}");
            assert_eq!(s.labels["mode"], "agent", "{family}");
        }
    }
    let alive = scraped(&prom, "DADIP2P_Alive{job=\"dadi\"}").await;
    assert_eq!(
        (alive["node"].as_str(), alive["mode"].as_str()),
        (node.as_str(), "agent")
    );
    let label = scraped(&prom, "DADIP2P_Label{job=\"dadi\"}").await;
    assert_eq!(label["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(label["node"], node);
    for ty in ["allocated", "used"] {
        let cache = scraped(
            &prom,
            &format!("DADIP2P_Cache{{job=\"dadi\",type=\"{ty}\"}}"),
        )
        .await;
        assert_eq!(
            (cache["node"].as_str(), cache["mode"].as_str()),
            (node.as_str(), "agent")
        );
    }

    // Blob bytes the registry sent before the reads (the push's probes answered with bodies).
    let origin_sent = "sum(registry_http_response_size_bytes_sum{handler=\"blob\"})";
    let before = prom.wait_for(origin_sent, SCRAPED).await.unwrap()[0].value;

    read_cold_then_warm(&acc, &url, &blob).await;
    let want = expected(blob.len() as u64);

    let count = |ty: &str| format!("DADIP2P_Count{{job=\"dadi\",type=\"{ty}\"}}");
    let download = settle(&prom, &count("download"), want.download as f64).await;
    assert_eq!(
        download,
        Some(want.download as f64),
        "bytes fetched from the origin"
    );
    let served = (2 * want.served_once) as f64;
    // Disk is cache reads (every byte served) and cache writes (every piece downloaded).
    let disk = served + want.download as f64;
    assert_eq!(settle(&prom, &count("disk"), disk).await, Some(disk));
    for ty in ["pread", "http"] {
        let got = settle(&prom, &count(ty), served).await;
        assert_eq!(got, Some(served), "DADIP2P_Count type={ty}");
    }
    assert_eq!(prom.query(&count("peer")).await.unwrap()[0].value, 0.0);

    // The registry's own count of blob bytes sent: the pieces plus the 1-byte size probe.
    let sent_now = before + (want.download + 1) as f64;
    let sent = settle(&prom, origin_sent, sent_now).await;
    assert_eq!(
        sent,
        Some(sent_now),
        "registry's blob bytes, {before} before"
    );

    let by_source = |s: &str| format!("dadi_p2p_served_bytes_total{{job=\"dadi\",source=\"{s}\"}}");
    let once = want.served_once as f64;
    assert_eq!(settle(&prom, &by_source("origin"), once).await, Some(once));
    assert_eq!(settle(&prom, &by_source("cache"), once).await, Some(once));
    assert_eq!(settle(&prom, &by_source("peer"), 0.0).await, Some(0.0));

    let allocated = "DADIP2P_Cache{job=\"dadi\",type=\"allocated\"}";
    assert_eq!(
        prom.query(allocated).await.unwrap()[0].value,
        (256 * MIB) as f64
    );
    // Each cached piece takes its bytes plus one header on disk.
    let on_disk = want.download + want.pieces.len() as u64 * HEADER_LEN;
    let used = "DADIP2P_Cache{job=\"dadi\",type=\"used\"}";
    assert_eq!(
        settle(&prom, used, on_disk as f64).await,
        Some(on_disk as f64)
    );

    // Every series the packaged Grafana dashboard plots is one Prometheus has, and every
    // query of it runs, with Grafana's variables as Grafana would fill them in.
    for name in dashboard_metrics() {
        let q = format!("count({{__name__=\"{name}\",job=\"dadi\"}})");
        let found = prom.wait_for(&q, SCRAPED).await.unwrap();
        assert!(
            !found.is_empty(),
            "the dashboard plots {name}, which is not exported"
        );
    }
    for expr in dashboard_exprs() {
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$node", ".*");
        if let Err(e) = prom.query(&q).await {
            panic!("a dashboard query does not run: {expr}: {e}");
        }
    }

    // The windowed families saw the reads at some scrape.
    for family in [
        "DADIP2P_Read_Throughtput",
        "DADIP2P_QPS",
        "DADIP2P_MaxLatency",
    ] {
        let q = format!("max_over_time({family}{{job=\"dadi\",type=\"pread\"}}[5m]) > 0");
        let seen = prom.wait_for(&q, SCRAPED).await.unwrap();
        assert_eq!(seen.len(), 1, "{family} never rose above 0");
    }
}

/// Names of the series queried by `packaging/grafana/dadi-p2p.json`, histogram suffixes kept.
/// The queries of the packaged Grafana dashboard, as written there.
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/grafana/dadi-p2p.json"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    exprs
}

fn dashboard_metrics() -> BTreeSet<String> {
    let name = regex::Regex::new(r"\b(DADIP2P_[A-Za-z_]+|dadi_p2p_[a-z_]+)").unwrap();
    let exprs = dashboard_exprs();
    let names: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| name.find_iter(e).map(|m| m.as_str().to_string()))
        .collect();
    assert!(names.len() >= 10, "dashboard queries: {names:?}");
    names
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v.as_str()) {
                    ("expr", Some(e)) => out.push(e.to_string()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_exporter_settings() {
    let world = World::new();
    let (digest, blob) = world.layer(0);

    let shared = world.start(&obs_config(
        "  enable: true\n  standaloneExporterPort: false\n",
        "",
    ));
    let (s, e) = reads(blob.len() as u64)[0];
    read_range(&shared, &world.blob_url(&digest), s, e).await;
    let pread = metric(&shared, "DADIP2P_Count", &[("type", "pread")]).await;
    assert_eq!(pread, Some((e - s + 1) as f64));
    let resp = http::get(&format!("{}/metrics", shared.base_url()), &[])
        .await
        .unwrap();
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(resp.body.to_vec()).unwrap();
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert!(parsed.samples.iter().any(|s| s.metric == "DADIP2P_Alive"));
    assert!(parsed
        .samples
        .iter()
        .any(|s| s.metric == "dadi_p2p_served_bytes_total"));

    let exporter_port = free_port().unwrap();
    let standalone = world.start(&obs_config(
        &format!("  enable: true\n  port: {exporter_port}\n  standaloneExporterPort: true\n"),
        "",
    ));
    let own = format!("http://127.0.0.1:{exporter_port}");
    let base = standalone.base_url();
    assert_eq!(status_of(&format!("{base}/metrics")).await, 404, "own port");
    assert_eq!(status_of(&format!("{own}/metrics")).await, 200);
    assert_eq!(status_of(&format!("{own}/healthz")).await, 404);

    let off = world.start(&obs_config("  enable: false\n", ""));
    let base = off.base_url();
    assert_eq!(status_of(&format!("{base}/metrics")).await, 404, "disabled");
    assert_eq!(status_of(&format!("{base}/healthz")).await, 200);
}

async fn status_of(url: &str) -> u16 {
    http::get(url, &[]).await.unwrap().status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_duration_runs_to_the_last_byte() {
    let layout = tempfile::tempdir().unwrap();
    let layer = LayerSpec {
        size: 3 * MIB,
        seed: 9,
        compression: Compression::None,
    };
    let image = build_image(layout.path(), "big", &[layer]).unwrap();
    let registry = Registry::start().unwrap();
    registry.push_image(&image, "big").unwrap();
    let digest = &image.layers[0].digest;
    let size = std::fs::metadata(image.blob_path(digest)).unwrap().len();
    // 1 MB/s downstream with a 1 MiB burst: the body cannot end before this many seconds.
    let floor = (size - MIB) as f64 / 1e6;
    assert!(floor > 2.0);
    let yaml = format!(
        "cache:\n  capacity: {}\n  pieceSize: {PIECE}\nExporterConfig:\n  enable: true\n  \
         standaloneExporterPort: false\nthrottleLimitMB: 1\n",
        256 * MIB
    );
    let acc = Accelerator::start(options().config_yaml(yaml)).unwrap();
    let url = acc.accelerator_url(&registry.blob_url("big", digest));
    let resp = http::get(&url, &[]).await.unwrap();
    assert_eq!((resp.status.as_u16(), resp.body.len() as u64), (200, size));
    let sum = metric(&acc, "dadi_p2p_request_duration_seconds_sum", &[]).await;
    assert!(sum.is_some_and(|s| s >= floor), "{sum:?} < {floor}");
    let count = metric(&acc, "dadi_p2p_request_duration_seconds_count", &[]).await;
    assert_eq!(
        count,
        Some(3.0),
        "the readiness probe, the read, the first /metrics"
    );
}

/// The daemon started by hand on every address, which the harness does not do, with
/// `DADI_P2P_NODE_IP` set to `node_ip`.
fn start_on_every_address(dir: &std::path::Path, port: u16, node_ip: &str) -> Command {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        obs_config("  enable: true\n  standaloneExporterPort: false\n", ""),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dadi-p2p"));
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", &format!("0.0.0.0:{port}"), "--cache-dir"])
        .arg(dir.join("cache"))
        .env("DADI_P2P_NODE_IP", node_ip);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_label_is_the_node_ip_when_listening_on_every_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let cmd = start_on_every_address(dir.path(), port, "198.18.0.7");
    let mut daemon = ProcessGuard::spawn("dadi-p2p", cmd, dir.path()).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    daemon
        .wait_ready(&format!("{base}/healthz"), &[200], None, SCRAPED)
        .unwrap();
    let body = http::get(&format!("{base}/metrics"), &[])
        .await
        .unwrap()
        .body;
    let text = String::from_utf8(body.to_vec()).unwrap();
    let alive = format!("DADIP2P_Alive{{node=\"198.18.0.7:{port}\",mode=\"agent\"}} 1.000000 ");
    assert!(text.contains(&alive), "{text}");
    daemon.kill();

    let bad = start_on_every_address(dir.path(), port, "node-1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("DADI_P2P_NODE_IP must be an IP address, got \"node-1\""),
        "{err}"
    );
}
