//! Observability end to end, with real processes: Debian's `prometheus` scraping the daemon's
//! exporter, the audit log written by the daemon while it serves reads from a real registry,
//! and `/status` with the `dadi-p2p status` command.
//!
//! Read-ahead is off in these tests so that the bytes fetched from the origin are exactly
//! the pieces the reads touch: with 64 KiB pieces, a read of `a..=b` downloads every piece
//! from `a / 64 KiB` to `b / 64 KiB` once, the last piece of the blob being short. The
//! registry's own Prometheus endpoint gives a count of the bytes it sent that owes nothing to
//! the daemon.
//!
//! `observability/metrics.rs` has the exporter (Prometheus, exporter settings, the `node`
//! label, request durations), `observability/audit.rs` the audit log,
//! `observability/rotation.rs` the audit file's rotation and line accounting, and
//! `observability/status.rs` `/status` and `dadi-p2p status`.

#[path = "observability/audit.rs"]
mod audit;
mod common;
#[path = "observability/metrics.rs"]
mod metrics;
#[path = "observability/rotation.rs"]
mod rotation;
#[path = "observability/status.rs"]
mod status;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use dadi_p2p_integration::{Accelerator, Prometheus};

/// Longest wait for Prometheus to have scraped a value.
pub(crate) const SCRAPED: Duration = Duration::from_secs(30);

/// Reads of a blob of `size` bytes (layer 0 is a tar a little over 1 MiB): one in the middle
/// over pieces 1 to 4, and one over the end of the blob, whose last piece is short.
pub(crate) fn reads(size: u64) -> [(u64, u64); 2] {
    [(100_000, 300_000), (size - 50_000, size - 1)]
}

/// A config with `exporter` as the `ExporterConfig` block and read-ahead off.
pub(crate) fn obs_config(exporter: &str, extra: &str) -> String {
    format!(
        "cache:\n  capacity: {}\n  pieceSize: {PIECE}\nExporterConfig:\n{exporter}\
         throttleLimitMB: 0\nreadAhead: 0\n{extra}",
        256 * MIB
    )
}

/// What [`reads`] move when done once cold and once warm.
pub(crate) struct Expected {
    pub download: u64,
    pub served_once: u64,
    pub pieces: Vec<(u64, u64)>,
}

pub(crate) fn expected(size: u64) -> Expected {
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
pub(crate) async fn read_cold_then_warm(acc: &Accelerator, url: &str, blob: &[u8]) {
    for _ in 0..2 {
        for (s, e) in reads(blob.len() as u64) {
            let got = read_range(acc, url, s, e).await;
            assert!(got == blob[s as usize..=e as usize], "bytes {s}-{e} differ");
        }
    }
}

/// The one sample `promql` selects, once Prometheus has it.
pub(crate) async fn scraped(prom: &Prometheus, promql: &str) -> BTreeMap<String, String> {
    let samples = prom.wait_for(promql, SCRAPED).await.unwrap();
    assert_eq!(samples.len(), 1, "{promql}: {samples:?}");
    samples[0].labels.clone()
}

/// Waits until `promql` has the single value `want`; returns what it last had.
pub(crate) async fn settle(prom: &Prometheus, promql: &str, want: f64) -> Option<f64> {
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
