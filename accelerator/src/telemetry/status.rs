//! The `GET /status` document and its rendering as a short table for `dadi-p2p status`.
//!
//! The JSON is for scripts and so keeps raw numbers (bytes, seconds); the table is for a
//! person and so rounds to binary units and percentages. `hit_ratio` is `null` until a byte
//! has been served, because 0 would claim every read missed.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::Mode;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub version: String,
    pub node: String,
    pub mode: Mode,
    pub uptime_secs: u64,
    pub cache: CacheStatus,
    /// Bytes served to readers by where they came from.
    pub bytes: SourceBytes,
    /// Share of served bytes that came from the local cache.
    pub hit_ratio: Option<f64>,
    /// Finished HTTP requests by status class (`"2xx"` …).
    pub requests: BTreeMap<String, u64>,
    pub inflight_downloads: u64,
    pub evictions: u64,
    pub integrity_failures: u64,
    pub origin_retries: u64,
    pub audit_lines_dropped: u64,
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStatus {
    pub capacity: u64,
    pub used: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SourceBytes {
    pub cache: u64,
    pub peer: u64,
    pub origin: u64,
}

impl SourceBytes {
    pub fn total(&self) -> u64 {
        self.cache
            .saturating_add(self.peer)
            .saturating_add(self.origin)
    }

    pub fn hit_ratio(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.cache as f64 / total as f64)
    }
}

/// A peer this node exchanged pieces with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// `<ip>:<port>` of the peer.
    pub address: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// False while the peer is left out of placement after a failure.
    pub up: bool,
}

/// A few aligned lines, widest label first column.
pub fn render_status_table(s: &StatusSnapshot) -> String {
    let mut t = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(t, "{label:<11}{value}");
    };
    row(
        "dadi-p2p",
        format!(
            "{} ({}) on {}, up {}",
            s.version,
            s.mode.as_str(),
            s.node,
            duration(s.uptime_secs)
        ),
    );
    row(
        "cache",
        format!(
            "{} used of {}{}",
            bytes(s.cache.used),
            bytes(s.cache.capacity),
            percent_of(s.cache.used, s.cache.capacity)
        ),
    );
    let total = s.bytes.total();
    row(
        "served",
        format!(
            "cache {}{}, peer {}{}, origin {}{}",
            bytes(s.bytes.cache),
            percent_of(s.bytes.cache, total),
            bytes(s.bytes.peer),
            percent_of(s.bytes.peer, total),
            bytes(s.bytes.origin),
            percent_of(s.bytes.origin, total),
        ),
    );
    row(
        "hit ratio",
        s.hit_ratio
            .map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0)),
    );
    let requests: Vec<String> = s
        .requests
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(class, n)| format!("{class} {n}"))
        .collect();
    row(
        "requests",
        if requests.is_empty() {
            "none".to_string()
        } else {
            requests.join(", ")
        },
    );
    row("downloads", format!("{} in flight", s.inflight_downloads));
    row(
        "events",
        format!(
            "{} evictions, {} integrity failures, {} origin retries, {} audit lines dropped",
            s.evictions, s.integrity_failures, s.origin_retries, s.audit_lines_dropped
        ),
    );
    if s.peers.is_empty() {
        row("peers", "none".to_string());
    }
    for p in &s.peers {
        row(
            "peer",
            format!(
                "{} received {}, sent {}{}",
                p.address,
                bytes(p.bytes_received),
                bytes(p.bytes_sent),
                if p.up { "" } else { ", down" }
            ),
        );
    }
    t
}

fn percent_of(part: u64, whole: u64) -> String {
    if whole == 0 {
        String::new()
    } else {
        format!(" ({:.1}%)", part as f64 * 100.0 / whole as f64)
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatusSnapshot {
        StatusSnapshot {
            version: "0.1.0".into(),
            node: "127.0.0.1:65001".into(),
            mode: Mode::Agent,
            uptime_secs: 3723,
            cache: CacheStatus {
                capacity: 4 << 30,
                used: 1 << 30,
            },
            bytes: SourceBytes {
                cache: 3 << 20,
                peer: 0,
                origin: 1 << 20,
            },
            hit_ratio: Some(0.75),
            requests: [
                ("2xx".to_string(), 12),
                ("4xx".to_string(), 1),
                ("5xx".to_string(), 0),
            ]
            .into_iter()
            .collect(),
            inflight_downloads: 2,
            evictions: 5,
            integrity_failures: 0,
            origin_retries: 1,
            audit_lines_dropped: 0,
            peers: vec![],
        }
    }

    #[test]
    fn table_for_a_person() {
        let t = render_status_table(&sample());
        let expected = "\
dadi-p2p   0.1.0 (agent) on 127.0.0.1:65001, up 1h02m03s
cache      1.0 GiB used of 4.0 GiB (25.0%)
served     cache 3.0 MiB (75.0%), peer 0 B (0.0%), origin 1.0 MiB (25.0%)
hit ratio  75.0%
requests   2xx 12, 4xx 1
downloads  2 in flight
events     5 evictions, 0 integrity failures, 1 origin retries, 0 audit lines dropped
peers      none
";
        assert_eq!(t, expected);
    }

    #[test]
    fn idle_node_shows_no_ratio_and_peers_are_listed() {
        let mut s = sample();
        s.bytes = SourceBytes::default();
        s.hit_ratio = s.bytes.hit_ratio();
        s.requests.clear();
        s.peers.push(PeerStatus {
            address: "198.18.0.2:65002".into(),
            bytes_received: 2048,
            bytes_sent: 0,
            up: true,
        });
        let t = render_status_table(&s);
        assert!(t.contains("hit ratio  -\n"), "{t}");
        assert!(t.contains("requests   none\n"), "{t}");
        assert!(
            t.contains("peer       198.18.0.2:65002 received 2.0 KiB, sent 0 B\n"),
            "{t}"
        );
        assert!(!t.contains("peers"), "{t}");
    }

    #[test]
    fn json_round_trips_with_lowercase_mode() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""mode":"agent""#), "{json}");
        assert!(json.contains(r#""cache":{"capacity":4294967296,"used":1073741824}"#));
        let back: StatusSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let idle = serde_json::to_value(StatusSnapshot {
            hit_ratio: None,
            ..s
        })
        .unwrap();
        assert!(idle["hit_ratio"].is_null());
    }

    #[test]
    fn units_and_durations() {
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(90061), "1d01h01m");
    }
}
