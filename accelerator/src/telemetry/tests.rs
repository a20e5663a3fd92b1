//! Telemetry as a whole: recording through the public methods, then reading back what the
//! exporter renders, the status snapshot and the audit file.

use std::fs;

use super::audit::tests::line_regex;
use super::*;

pub(crate) fn config(audit: AuditSink) -> TelemetryConfig {
    TelemetryConfig {
        node: "127.0.0.1:65001".into(),
        mode: Mode::Agent,
        cache_allocated: 4 << 30,
        audit,
        window: DEFAULT_WINDOW,
    }
}

/// The value of the sample line starting with `prefix` (name and labels), without timestamp.
pub(crate) fn value(body: &str, prefix: &str) -> f64 {
    let line = body
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{body}"));
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn dadi(family: &str, ty: &str) -> String {
    format!("{family}{{node=\"127.0.0.1:65001\",type=\"{ty}\",mode=\"agent\"}} ")
}

#[test]
fn counts_are_exact_bytes_per_type() {
    let t = Telemetry::new(config(AuditSink::Off)).unwrap();
    // A cold read: 3 pieces fetched from the origin, the range served downstream.
    for _ in 0..3 {
        t.record(Kind::Download, 2 << 20, Duration::from_millis(40));
    }
    t.record(Kind::Pread, 5_000_000, Duration::from_millis(130));
    // The same range warm: only pread grows.
    t.record(Kind::Pread, 5_000_000, Duration::from_micros(900));
    let body = t.render();
    assert_eq!(
        value(&body, &dadi("DADIP2P_Count", "download")),
        (6 << 20) as f64
    );
    assert_eq!(value(&body, &dadi("DADIP2P_Count", "pread")), 10_000_000.0);
    assert_eq!(value(&body, &dadi("DADIP2P_Count", "peer")), 0.0);
    assert_eq!(
        value(
            &body,
            "dadi_p2p_operation_duration_seconds_count{type=\"download\"} "
        ),
        3.0
    );
}

#[test]
fn rates_and_max_latency_cover_the_window() {
    let t = Telemetry::new(config(AuditSink::Off)).unwrap();
    t.record_at(30, Kind::Peer, 4000, Duration::from_micros(250));
    t.record_at(31, Kind::Peer, 6000, Duration::from_micros(80));
    t.record_at(31, Kind::Peer, 0, Duration::from_micros(10));
    let body = t.render_at(32, 1);
    assert_eq!(
        value(&body, &dadi("DADIP2P_Read_Throughtput", "peer")),
        1000.0
    );
    assert_eq!(value(&body, &dadi("DADIP2P_QPS", "peer")), 0.3);
    assert_eq!(value(&body, &dadi("DADIP2P_MaxLatency", "peer")), 250.0);
    // A second scrape at the same moment sees the same values.
    assert_eq!(t.render_at(32, 1), body);
    // Ten seconds later the window has moved past both seconds; the count stays.
    let later = t.render_at(42, 2);
    assert_eq!(value(&later, &dadi("DADIP2P_QPS", "peer")), 0.0);
    assert_eq!(value(&later, &dadi("DADIP2P_MaxLatency", "peer")), 0.0);
    assert_eq!(value(&later, &dadi("DADIP2P_Count", "peer")), 10000.0);
}

#[test]
fn cache_gauges_sources_and_snapshot_agree() {
    let t = Telemetry::new(config(AuditSink::Off)).unwrap();
    t.set_cache_used(123456);
    t.served(Source::Cache, 300);
    t.served(Source::Origin, 100);
    t.request_done(206, Duration::from_millis(2));
    t.request_done(502, Duration::from_millis(2));
    t.eviction(3);
    t.integrity_failure();
    t.origin_retry();
    t.origin_retry();
    let body = t.render();
    let cache = "DADIP2P_Cache{node=\"127.0.0.1:65001\",type=";
    assert_eq!(
        value(&body, &format!("{cache}\"allocated\",mode=\"agent\"}} ")),
        (4u64 << 30) as f64
    );
    assert_eq!(
        value(&body, &format!("{cache}\"used\",mode=\"agent\"}} ")),
        123456.0
    );
    assert_eq!(value(&body, "dadi_p2p_cache_used_bytes "), 123456.0);
    assert_eq!(
        value(&body, "dadi_p2p_served_bytes_total{source=\"cache\"} "),
        300.0
    );
    assert_eq!(value(&body, "dadi_p2p_requests_total{code=\"5xx\"} "), 1.0);
    assert_eq!(value(&body, "dadi_p2p_cache_evictions_total "), 3.0);
    assert_eq!(value(&body, "dadi_p2p_origin_retries_total "), 2.0);

    let s = t.snapshot();
    assert_eq!(
        s.cache,
        CacheStatus {
            capacity: 4 << 30,
            used: 123456
        }
    );
    assert_eq!(
        s.bytes,
        SourceBytes {
            cache: 300,
            peer: 0,
            origin: 100
        }
    );
    assert_eq!(s.hit_ratio, Some(0.75));
    assert_eq!((s.requests["2xx"], s.requests["5xx"]), (1, 1));
    assert_eq!(
        (s.evictions, s.integrity_failures, s.origin_retries),
        (3, 1, 2)
    );
    assert_eq!(s.mode, Mode::Agent);
    assert!(s.peers.is_empty());
}

#[test]
fn inflight_guard_lowers_the_gauge_on_drop() {
    let t = Telemetry::new(config(AuditSink::Off)).unwrap();
    let a = t.download_started();
    let b = t.download_started();
    assert_eq!(t.snapshot().inflight_downloads, 2);
    assert_eq!(value(&t.render(), "dadi_p2p_inflight_downloads "), 2.0);
    drop(a);
    assert_eq!(t.snapshot().inflight_downloads, 1);
    drop(b);
    assert_eq!(value(&t.render(), "dadi_p2p_inflight_downloads "), 0.0);
}

#[test]
fn bad_config_is_rejected_with_the_value() {
    let mut c = config(AuditSink::Off);
    c.window = Duration::from_millis(1500);
    let e = Telemetry::new(c).err().unwrap();
    assert!(e.to_string().contains("1.5s"), "{e}");

    let mut c = config(AuditSink::Off);
    c.node.clear();
    assert!(matches!(Telemetry::new(c), Err(TelemetryError::EmptyNode)));

    let tmp = tempfile::tempdir().unwrap();
    let c = config(AuditSink::File {
        dir: tmp.path().into(),
        max_bytes: 100,
        keep: 1,
    });
    assert!(matches!(
        Telemetry::new(c),
        Err(TelemetryError::AuditMaxBytes(100))
    ));
    // Nothing was created for a rejected config.
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);

    let file = tmp.path().join("not-a-dir");
    fs::write(&file, "").unwrap();
    let c = config(AuditSink::File {
        dir: file.clone(),
        max_bytes: 1 << 20,
        keep: 1,
    });
    let e = Telemetry::new(c).err().unwrap();
    assert!(e.to_string().contains("not-a-dir/audit.log"), "{e}");
}

#[tokio::test]
async fn audit_file_sink_writes_strict_lines_and_rotates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let t = Telemetry::new(config(AuditSink::File {
        dir: dir.clone(),
        max_bytes: MIN_AUDIT_FILE_BYTES,
        keep: 2,
    }))
    .unwrap();
    let url = "https://reg.example/v2/app/blobs/sha256:0123456789abcdef0123456789abcdef";
    // About 190 bytes a line, 21 to a file: 50 lines make three files.
    for i in 0..50u64 {
        let size = if i == 7 { -1 } else { 65536 };
        t.audit(
            AuditOp::HttpPread,
            &format!("/{url}?sig={i}"),
            i * 65536,
            size,
            Duration::from_micros(21),
        );
    }
    t.shutdown().await;
    let re = line_regex();
    let mut all = Vec::new();
    for name in ["audit.log.2", "audit.log.1", "audit.log"] {
        let text = fs::read_to_string(dir.join(name)).unwrap();
        assert!(
            text.len() as u64 <= MIN_AUDIT_FILE_BYTES,
            "{name} is {} bytes",
            text.len()
        );
        all.extend(text.lines().map(str::to_owned));
    }
    assert!(!dir.join("audit.log.3").exists());
    assert_eq!(all.len(), 50, "no line lost or duplicated");
    for (i, l) in all.iter().enumerate() {
        assert!(re.is_match(l), "{l}");
        assert!(l.contains(&format!(
            "[pathname=/{url}?<redacted>][offset={}]",
            i as u64 * 65536
        )));
        assert!(!l.contains("sig="), "{l}");
    }
    assert!(all[7].contains("[size=-1]"));
    assert_eq!(t.snapshot().audit_lines_dropped, 0);
}

#[test]
fn audit_off_writes_nothing_and_counts_nothing() {
    let t = Telemetry::new(config(AuditSink::Off)).unwrap();
    t.audit(AuditOp::Download, "/x", 0, 1, Duration::ZERO);
    assert_eq!(t.snapshot().audit_lines_dropped, 0);
}
