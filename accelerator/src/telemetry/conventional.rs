//! The `dadi_p2p_*` families for users without a legacy dashboard, kept in a
//! `prometheus-client` registry: counters ending in `_total`, latency histograms in seconds,
//! gauges for what is in flight and what the cache holds.
//!
//! `prometheus-client` writes OpenMetrics text, but the documented families need millisecond
//! timestamps and so the classic 0.0.4 format, and one body has one format. The encoder's
//! output is therefore rewritten into the classic dialect, which differs only in three
//! places: a counter family is named with its `_total` suffix, and there are no `# UNIT` and
//! no `# EOF` lines. Every label value is created up front so each series is present, at 0,
//! from the first scrape and dashboards never show "no data" for an idle node.

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::time::Duration;

use super::{clamp_i64, Kind, Source};

/// Bucket bounds in seconds: from a page-cache hit (100 µs) to a slow origin fetch (30 s).
const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// HTTP status classes used as the `code` label.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        latency_histogram()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub(crate) struct Conventional {
    registry: Registry,
    served: Family<SourceLabel, Counter>,
    requests: Family<CodeLabel, Counter>,
    request_seconds: Histogram,
    operation_seconds: Family<TypeLabel, Histogram, Buckets>,
    pub evictions: Counter,
    pub integrity_failures: Counter,
    pub origin_retries: Counter,
    pub audit_dropped: Counter,
    pub inflight: Gauge,
    pub cache_used: Gauge,
}

impl Conventional {
    pub fn new(cache_capacity: u64) -> Self {
        let mut c = Self {
            registry: Registry::with_prefix("dadi_p2p"),
            served: Family::default(),
            requests: Family::default(),
            request_seconds: latency_histogram(),
            operation_seconds: Family::new_with_constructor(Buckets),
            evictions: Counter::default(),
            integrity_failures: Counter::default(),
            origin_retries: Counter::default(),
            audit_dropped: Counter::default(),
            inflight: Gauge::default(),
            cache_used: Gauge::default(),
        };
        for s in Source::ALL {
            let _ = c.served.get_or_create(&SourceLabel { source: s.as_str() });
        }
        for code in CLASSES {
            let _ = c.requests.get_or_create(&CodeLabel { code });
        }
        for k in Kind::ALL {
            let _ = c
                .operation_seconds
                .get_or_create(&TypeLabel { r#type: k.as_str() });
        }
        let capacity = Gauge::<i64>::default();
        capacity.set(clamp_i64(cache_capacity));

        let r = &mut c.registry;
        r.register(
            "served_bytes",
            "Bytes returned to readers, by where they came from",
            c.served.clone(),
        );
        r.register(
            "requests",
            "HTTP requests by status class",
            c.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request received to last byte sent",
            c.request_seconds.clone(),
        );
        r.register(
            "operation_duration_seconds",
            "Latency of operations by documented type",
            c.operation_seconds.clone(),
        );
        r.register(
            "cache_evictions",
            "Pieces evicted from the cache",
            c.evictions.clone(),
        );
        r.register(
            "integrity_failures",
            "Cached data dropped for failing its check: a piece chunk's crc32c or a whole blob's sha256",
            c.integrity_failures.clone(),
        );
        r.register(
            "origin_retries",
            "Origin requests retried",
            c.origin_retries.clone(),
        );
        r.register(
            "audit_lines_dropped",
            "Audit lines dropped because the writer was behind or could not write",
            c.audit_dropped.clone(),
        );
        r.register(
            "inflight_downloads",
            "Origin downloads in progress",
            c.inflight.clone(),
        );
        r.register(
            "cache_used_bytes",
            "Bytes held in the piece cache",
            c.cache_used.clone(),
        );
        r.register(
            "cache_capacity_bytes",
            "Configured cache capacity",
            capacity,
        );
        c
    }

    pub fn served(&self, source: Source, bytes: u64) {
        let label = SourceLabel {
            source: source.as_str(),
        };
        self.served.get_or_create(&label).inc_by(bytes);
    }

    pub fn served_bytes(&self, source: Source) -> u64 {
        let label = SourceLabel {
            source: source.as_str(),
        };
        self.served.get_or_create(&label).get()
    }

    pub fn request_done(&self, status: u16, latency: Duration) {
        // Statuses outside 100..=599 are not valid HTTP and are counted as server errors.
        let code = match status {
            100..=199 => CLASSES[0],
            200..=299 => CLASSES[1],
            300..=399 => CLASSES[2],
            400..=499 => CLASSES[3],
            _ => CLASSES[4],
        };
        self.requests.get_or_create(&CodeLabel { code }).inc();
        self.request_seconds.observe(latency.as_secs_f64());
    }

    pub fn requests_by_class(&self) -> BTreeMap<String, u64> {
        CLASSES
            .iter()
            .map(|&code| {
                let n = self.requests.get_or_create(&CodeLabel { code }).get();
                (code.to_string(), n)
            })
            .collect()
    }

    pub fn operation(&self, kind: Kind, latency: Duration) {
        let label = TypeLabel {
            r#type: kind.as_str(),
        };
        self.operation_seconds
            .get_or_create(&label)
            .observe(latency.as_secs_f64());
    }

    /// Appends the registry in the classic text format.
    pub fn render_classic(&self, out: &mut String) {
        let mut open = String::with_capacity(4 * 1024);
        // Writing into a String cannot fail.
        let _ = text::encode_registry(&mut open, &self.registry);
        to_classic(&open, out);
    }
}

/// Rewrites OpenMetrics text from `prometheus-client` into the classic 0.0.4 dialect.
fn to_classic(open: &str, out: &mut String) {
    let mut pending_help: Option<&str> = None;
    for line in open.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let suffix = if ty == "counter" { "_total" } else { "" };
            if let Some(help) = pending_help.take() {
                let text = help.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {ty}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_and_no_openmetrics_markers_remain() {
        let c = Conventional::new(4096);
        c.served(Source::Peer, 10);
        c.served(Source::Peer, 5);
        let mut out = String::new();
        c.render_classic(&mut out);
        assert!(
            out.contains("# TYPE dadi_p2p_served_bytes_total counter\n"),
            "{out}"
        );
        assert!(out.contains("# HELP dadi_p2p_served_bytes_total Bytes returned"));
        assert!(out.contains("dadi_p2p_served_bytes_total{source=\"peer\"} 15\n"));
        assert!(out.contains("dadi_p2p_served_bytes_total{source=\"origin\"} 0\n"));
        assert!(out.contains("# TYPE dadi_p2p_cache_capacity_bytes gauge\n"));
        assert!(out.contains("dadi_p2p_cache_capacity_bytes 4096\n"));
        assert!(!out.contains("# EOF") && !out.contains("# UNIT"));
    }

    #[test]
    fn status_classes_and_histogram_buckets() {
        let c = Conventional::new(0);
        c.request_done(206, Duration::from_micros(300));
        c.request_done(404, Duration::from_secs(2));
        c.request_done(999, Duration::ZERO);
        let by = c.requests_by_class();
        assert_eq!((by["2xx"], by["4xx"], by["5xx"], by["1xx"]), (1, 1, 1, 0));
        let mut out = String::new();
        c.render_classic(&mut out);
        assert!(
            out.contains("dadi_p2p_request_duration_seconds_count 3\n"),
            "{out}"
        );
        assert!(out.contains("dadi_p2p_request_duration_seconds_bucket{le=\"0.0005\"} 2\n"));
        assert!(out.contains("dadi_p2p_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
    }

    #[test]
    fn operation_histogram_has_a_series_per_type() {
        let c = Conventional::new(0);
        c.operation(Kind::Disk, Duration::from_millis(3));
        let mut out = String::new();
        c.render_classic(&mut out);
        for k in Kind::ALL {
            let count = if k == Kind::Disk { 1 } else { 0 };
            let line = format!(
                "dadi_p2p_operation_duration_seconds_count{{type=\"{}\"}} {count}\n",
                k.as_str()
            );
            assert!(out.contains(&line), "missing {line} in {out}");
        }
    }

    #[test]
    fn classic_rewrite_keeps_empty_help_and_drops_markers() {
        let mut out = String::new();
        to_classic(
            "# HELP a_seconds x y\n# TYPE a_seconds counter\n# UNIT a_seconds seconds\n\
             a_seconds_total 1\n# EOF\n",
            &mut out,
        );
        assert_eq!(
            out,
            "# HELP a_seconds_total x y\n# TYPE a_seconds_total counter\na_seconds_total 1\n"
        );
    }
}
