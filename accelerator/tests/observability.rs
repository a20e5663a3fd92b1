//! Observability end to end, with real processes: Debian's `prometheus` scraping the daemon's
//! exporter, the audit log written by the daemon while it serves reads from a real registry,
//! and `/status` with the `dadi-p2p status` command.
//!
//! Read-ahead is off in these tests so that the bytes fetched from the origin are exactly
//! the pieces the reads touch: with 64 KiB pieces, a read of `a..=b` downloads every piece
//! from `a / 64 KiB` to `b / 64 KiB` once, the last piece of the blob being short. The
//! registry's own Prometheus endpoint gives a count of the bytes it sent that owes nothing to
//! the daemon.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::*;
use dadi_p2p::cache::HEADER_LEN;
use dadi_p2p_integration::{
    build_image, free_port, http, Accelerator, Compression, LayerSpec, ProcessGuard, Prometheus,
    Registry, ScrapeTarget,
};

/// Longest wait for Prometheus to have scraped a value.
const SCRAPED: Duration = Duration::from_secs(30);

/// Reads of a blob of `size` bytes (layer 0 is a tar a little over 1 MiB): one in the middle
/// over pieces 1 to 4, and one over the end of the blob, whose last piece is short.
fn reads(size: u64) -> [(u64, u64); 2] {
    [(100_000, 300_000), (size - 50_000, size - 1)]
}

/// A config with `exporter` as the `ExporterConfig` block and read-ahead off.
fn obs_config(exporter: &str, extra: &str) -> String {
    format!(
        "cache:\n  capacity: {}\n  pieceSize: {PIECE}\nExporterConfig:\n{exporter}\
         throttleLimitMB: 0\nreadAhead: 0\n{extra}",
        256 * MIB
    )
}

/// What [`reads`] move when done once cold and once warm.
struct Expected {
    download: u64,
    served_once: u64,
    pieces: Vec<(u64, u64)>,
}

fn expected(size: u64) -> Expected {
    assert!(size % PIECE != 0, "the last piece must be short");
    let pieces: Vec<(u64, u64)> = reads(size)
        .iter()
        .flat_map(|&(s, e)| pieces_of(size, s, e))
        .collect();
    Expected {
        download: pieces.iter().map(|p| p.1).sum(),
        served_once: reads(size).iter().map(|(s, e)| e - s + 1).sum(),
        pieces,
    }
}

/// Each of [`reads`] twice, checking the bytes against the blob.
async fn read_cold_then_warm(acc: &Accelerator, url: &str, blob: &[u8]) {
    for _ in 0..2 {
        for (s, e) in reads(blob.len() as u64) {
            let got = read_range(acc, url, s, e).await;
            assert!(got == blob[s as usize..=e as usize], "bytes {s}-{e} differ");
        }
    }
}

/// The one sample `promql` selects, once Prometheus has it.
async fn scraped(prom: &Prometheus, promql: &str) -> BTreeMap<String, String> {
    let samples = prom.wait_for(promql, SCRAPED).await.unwrap();
    assert_eq!(samples.len(), 1, "{promql}: {samples:?}");
    samples[0].labels.clone()
}

/// Waits until `promql` has the single value `want`; returns what it last had.
async fn settle(prom: &Prometheus, promql: &str, want: f64) -> Option<f64> {
    let mut last = None;
    let query = || async {
        let samples = prom.query(promql).await.unwrap();
        samples.first().map(|s| s.value)
    };
    for _ in 0..(SCRAPED.as_millis() / 250) {
        last = query().await;
        if last == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last
}

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

    // Every series the packaged Grafana dashboard plots is one Prometheus has.
    for name in dashboard_metrics() {
        let q = format!("count({{__name__=\"{name}\",job=\"dadi\"}})");
        let found = prom.wait_for(&q, SCRAPED).await.unwrap();
        assert!(
            !found.is_empty(),
            "the dashboard plots {name}, which is not exported"
        );
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
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/grafana/dadi-p2p.json"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let name = regex::Regex::new(r"\b(DADIP2P_[A-Za-z_]+|dadi_p2p_[a-z_]+)").unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
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
    assert_eq!(count, Some(3.0), "the readiness probe, the read, the first /metrics");
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

/// Parsed audit line: operation, pathname, offset, size.
type AuditLine = (String, String, u64, i64);

/// Checks every line against the documented shape and returns its fields.
fn parse_audit(text: &str) -> Vec<AuditLine> {
    let shape = regex::Regex::new(
        r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\|AUDIT\|th=[0-9A-F]{16}\|(http:pread|rpc:stat|rpc:pread|download|filewrite|fileread)\[pathname=(/[^\[\]\s]+)\]\[offset=(\d+)\]\[size=(-?\d+)\]\[latency=(\d+)\]$",
    )
    .unwrap();
    text.lines()
        .map(|line| {
            let c = shape
                .captures(line)
                .unwrap_or_else(|| panic!("audit line out of shape: {line:?}"));
            (
                c[1].to_string(),
                c[2].to_string(),
                c[3].parse().unwrap(),
                c[4].parse().unwrap(),
            )
        })
        .collect()
}

fn of_op<'a>(lines: &'a [AuditLine], op: &str) -> Vec<&'a AuditLine> {
    lines.iter().filter(|l| l.0 == op).collect()
}

/// Offsets and sizes of the lines with `op`, sorted.
fn spans(lines: &[AuditLine], op: &str) -> Vec<(u64, i64)> {
    let mut v: Vec<(u64, i64)> = of_op(lines, op).iter().map(|l| (l.2, l.3)).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_records_the_reads_and_never_a_signature() {
    let world = World::new();
    let (digest, blob) = world.layer(0);
    let size = blob.len() as u64;
    let log_dir = tempfile::tempdir().unwrap();
    let deploy = format!(
        "DeployConfig:\n  logAudit: true\n  logAuditMode: file\n  logDir: {}\n",
        log_dir.path().display()
    );
    let yaml = obs_config("  enable: true\n  standaloneExporterPort: false\n", &deploy);
    let mut acc =
        Accelerator::start(options().config_yaml(yaml).env("DADI_P2P_LOG", "debug")).unwrap();
    let secret = "X-Amz-Signature=s3cr3tsig&X-Amz-Credential=AKIDS3CR3T";
    let signed = format!("{}?{secret}", world.blob_url(&digest));
    let (s, e) = reads(size)[0];
    for _ in 0..2 {
        let got = read_range(&acc, &signed, s, e).await;
        assert!(got == blob[s as usize..=e as usize]);
    }
    let missing = format!("sha256:{}", "0".repeat(64));
    let missing_url = format!("{}?{secret}", world.blob_url(&missing));
    let resp = http::get(
        &acc.accelerator_url(&missing_url),
        &[("Range", "bytes=0-9")],
    )
    .await;
    assert_eq!(resp.unwrap().status, 404);
    // SIGTERM drains the audit writer, so the file is complete afterwards.
    assert!(acc.terminate().unwrap().success());

    let text = std::fs::read_to_string(log_dir.path().join("audit.log")).unwrap();
    let lines = parse_audit(&text);
    let shown = format!("/{}?<redacted>", world.blob_url(&digest));
    let shown_missing = format!("/{}?<redacted>", world.blob_url(&missing));
    for l in &lines {
        assert!(l.1 == shown || l.1 == shown_missing, "pathname {}", l.1);
    }
    let len = (e - s + 1) as i64;
    assert_eq!(spans(&lines, "http:pread"), vec![(s, len), (s, len)]);
    let pieces: Vec<(u64, i64)> = pieces_of(size, s, e)
        .into_iter()
        .map(|(o, l)| (o, l as i64))
        .collect();
    assert_eq!(spans(&lines, "download"), pieces, "one download per piece");
    assert_eq!(spans(&lines, "filewrite"), pieces, "one write per piece");
    let stats: Vec<(u64, i64, String)> = of_op(&lines, "rpc:stat")
        .iter()
        .map(|l| (l.2, l.3, l.1.clone()))
        .collect();
    assert_eq!(
        stats,
        vec![(0, size as i64, shown.clone()), (0, -1, shown_missing)]
    );
    // Cache reads cover the span exactly, once per request.
    let reads = spans(&lines, "fileread");
    let mut want_reads = Vec::new();
    for (o, l) in &pieces {
        let from = (*o).max(s);
        let to = (*o + *l as u64 - 1).min(e);
        want_reads.extend([(from, (to - from + 1) as i64); 2]);
    }
    want_reads.sort();
    assert_eq!(reads, want_reads);
    assert_eq!(
        lines.len(),
        2 + 2 * pieces.len() + 2 + want_reads.len(),
        "{text}"
    );

    let (stdout, stderr) = full_output(&acc);
    assert!(stderr.contains("DEBUG"), "debug logging is on: {stderr}");
    for (name, text) in [
        ("audit.log", &text),
        ("stdout", &stdout),
        ("stderr", &stderr),
    ] {
        for needle in ["s3cr3tsig", "AKIDS3CR3T", "X-Amz-Signature"] {
            assert!(!text.contains(needle), "{needle} in {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_stdout_mode_writes_lines_to_stdout() {
    let world = World::new();
    let (digest, _) = world.layer(1);
    let yaml = obs_config(
        "  enable: false\n",
        "DeployConfig:\n  logAudit: true\n  logAuditMode: stdout\n",
    );
    let mut acc = world.start(&yaml);
    read_range(&acc, &world.blob_url(&digest), 0, 9).await;
    assert!(acc.terminate().unwrap().success());
    let (stdout, _) = full_output(&acc);
    let lines = parse_audit(&stdout);
    assert_eq!(spans(&lines, "http:pread"), vec![(0, 10)]);
    assert_eq!(spans(&lines, "download"), vec![(0, PIECE as i64)]);
}

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
    let st = status().await;
    assert_eq!(st["cache"]["capacity"], 256 * MIB);
    let on_disk = want.download + want.pieces.len() as u64 * HEADER_LEN;
    assert_eq!(st["cache"]["used"], on_disk);
    assert_eq!(st["bytes"]["origin"], want.served_once);
    assert_eq!(st["bytes"]["cache"], want.served_once);
    assert_eq!(st["bytes"]["peer"], 0);
    assert_eq!(st["hit_ratio"].as_f64(), Some(0.5));
    assert_eq!(st["inflight_downloads"], 0);
    // The reads, the first /status and the harness's one successful readiness probe.
    assert_eq!(st["requests"]["2xx"], 2 * 2 + 2);

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
