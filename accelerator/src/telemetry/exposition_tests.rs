//! The whole `/metrics` body checked by real parsers: Prometheus' own `promtool` (Debian's
//! `prometheus` package) and the `prometheus-parse` crate; and the Grafana dashboard checked
//! against what the body contains.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};

use regex::Regex;

use super::tests::config;
use super::*;

const DOCUMENTED: [&str; 7] = [
    "DADIP2P_Alive",
    "DADIP2P_Read_Throughtput",
    "DADIP2P_QPS",
    "DADIP2P_MaxLatency",
    "DADIP2P_Count",
    "DADIP2P_Cache",
    "DADIP2P_Label",
];

fn busy_body() -> String {
    let t = Telemetry::new(config(AuditSink::Off)).unwrap();
    for k in Kind::ALL {
        t.record(k, 65536, Duration::from_micros(21));
    }
    for s in Source::ALL {
        t.served(s, 1000);
    }
    t.request_done(206, Duration::from_millis(3));
    t.request_done(404, Duration::from_millis(1));
    t.set_cache_used(1 << 20);
    t.eviction(1);
    let _guard = t.download_started();
    t.render()
}

/// `promtool check metrics` exits 0 when clean, 3 when it only has lint remarks, and 1 on a
/// parse error.
#[test]
fn promtool_parses_the_body_and_only_remarks_on_documented_names() {
    let body = busy_body();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("metrics.prom");
    std::fs::write(&path, &body).unwrap();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool from Debian's prometheus package (scripts/deps installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&path).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let code = out.status.code();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(code, Some(0) | Some(3)),
        "exit {code:?}: {report}\n{body}"
    );
    // The spelling of the documented names is fixed (`MaxLatency` is camelCase, `Count` a
    // gauge), so remarks about them are expected; the dadi_p2p set must lint clean.
    for remark in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            remark.starts_with("DADIP2P_"),
            "unexpected remark: {remark}\n{body}"
        );
    }
}

#[test]
fn prometheus_parse_reads_every_documented_series_with_its_labels_and_timestamp() {
    let body = busy_body();
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let mut seen: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for s in &scrape.samples {
        if s.metric.starts_with("DADIP2P_") {
            assert_eq!(s.labels.get("node"), Some("127.0.0.1:65001"), "{s:?}");
            assert_eq!(s.labels.get("mode"), Some("agent"), "{s:?}");
            // The millisecond timestamp was read as such: a date in this century.
            assert!(s.timestamp.timestamp() > 1_600_000_000, "{s:?}");
            let ty = s.labels.get("type").unwrap_or("-").to_string();
            seen.entry(DOCUMENTED.iter().find(|d| **d == s.metric).unwrap())
                .or_default()
                .insert(ty);
        }
    }
    let kinds: BTreeSet<String> = Kind::ALL.iter().map(|k| k.as_str().to_string()).collect();
    for family in &DOCUMENTED[1..5] {
        assert_eq!(seen[family], kinds, "{family}");
    }
    let cache: BTreeSet<String> = ["allocated", "used"].map(String::from).into();
    assert_eq!(seen["DADIP2P_Cache"], cache);
    assert_eq!(seen["DADIP2P_Alive"].len(), 1);
    assert_eq!(seen["DADIP2P_Label"].len(), 1);
    let count = scrape
        .samples
        .iter()
        .find(|s| s.metric == "DADIP2P_Count" && s.labels.get("type") == Some("pread"))
        .unwrap();
    assert!(matches!(count.value, prometheus_parse::Value::Gauge(v) if v == 65536.0));

    for (name, ty) in [
        ("dadi_p2p_served_bytes_total", "counter"),
        ("dadi_p2p_requests_total", "counter"),
        ("dadi_p2p_request_duration_seconds", "histogram"),
        ("dadi_p2p_inflight_downloads", "gauge"),
    ] {
        assert!(body.contains(&format!("# TYPE {name} {ty}\n")), "{name}");
    }
    let served = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "dadi_p2p_served_bytes_total" && s.labels.get("source") == Some("peer")
        })
        .unwrap();
    assert!(matches!(served.value, prometheus_parse::Value::Counter(v) if v == 1000.0));
    assert_eq!(scrape.docs["DADIP2P_Read_Throughtput"], "Bytes / sec");
}

/// Names of every series the body has: sample names, which include `_bucket` and friends.
fn rendered_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_plots_only_metrics_the_exporter_renders() {
    let text = include_str!("../../../packaging/grafana/dadi-p2p.json");
    let dash: serde_json::Value = serde_json::from_str(text).expect("dashboard is valid JSON");
    let panels = dash["panels"].as_array().unwrap();
    let mut queries = Vec::new();
    collect_queries(&dash, &mut queries);
    let names = rendered_names(&busy_body());
    let metric = Regex::new(r"\b(DADIP2P_[A-Za-z_]+|dadi_p2p_[a-z_]+)\b").unwrap();
    let mut used = BTreeSet::new();
    for q in &queries {
        let found: Vec<&str> = metric.find_iter(q).map(|m| m.as_str()).collect();
        assert!(!found.is_empty(), "query names no dadi-p2p metric: {q}");
        for name in found {
            assert!(names.contains(name), "{name} in `{q}` is not rendered");
            used.insert(name.to_string());
        }
    }
    for family in DOCUMENTED {
        assert!(used.contains(family), "{family} is not plotted");
    }
    // Every non-row panel has a query.
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().map_or(0, Vec::len);
        assert!(targets > 0, "panel {} has no target", p["title"]);
    }
}
