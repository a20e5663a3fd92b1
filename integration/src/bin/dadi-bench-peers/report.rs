//! The human table of a peer benchmark run, and the spread of the nodes' throughput.

use std::fmt::Write as _;

use serde::Serialize;

use crate::scenario::{Phase, Summary};

/// Smallest, median and largest of a set of figures; all 0 for none.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// The median of an even count is the mean of the two middle figures.
    pub fn of(values: &[f64]) -> Spread {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return Spread {
                min: 0.0,
                median: 0.0,
                max: 0.0,
            };
        }
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Spread {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        }
    }
}

/// The figures of the table, one a row; byte counts are multiples of the blob's size.
const ROWS: [&str; 8] = [
    "registry blob bytes / blob",
    "wall time, s",
    "node MB/s min",
    "node MB/s median",
    "node MB/s max",
    "from origin, all daemons / blob",
    "from peers, all daemons / blob",
    "every node sent the exact blob",
];

/// One phase's cells of [`ROWS`].
fn column(p: &Phase, blob: f64) -> [String; 8] {
    [
        format!("{:.3}", p.registry_ratio),
        format!("{:.2}", p.wall_s),
        format!("{:.0}", p.node_mbps_spread.min),
        format!("{:.0}", p.node_mbps_spread.median),
        format!("{:.0}", p.node_mbps_spread.max),
        format!("{:.3}", p.download_bytes / blob),
        format!("{:.3}", p.peer_bytes / blob),
        (if p.exact_blob { "yes" } else { "NO" }).to_owned(),
    ]
}

/// Baseline and peers side by side; byte figures as multiples of the blob's size.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} nodes, blob {:.1} MiB ({} bytes), piece {}, {} cores shared by the registry, the \
         daemons and the load generator ({} threads)",
        s.nodes,
        s.blob_bytes as f64 / (1u64 << 20) as f64,
        s.blob_bytes,
        s.piece_size.map_or("default".to_owned(), |p| p.to_string()),
        s.cores,
        s.generator_threads
    );
    let _ = writeln!(
        out,
        "all nodes read the whole blob cold at once: {}; setup: generate {:.1} s, upload \
         {:.1} s\n",
        s.read, s.generate_seconds, s.push_seconds
    );
    let blob = s.blob_bytes as f64;
    let _ = writeln!(out, "{:<32} {:>10} {:>10}", "", "baseline", "peers");
    let rows = ROWS
        .iter()
        .zip(column(&s.baseline, blob))
        .zip(column(&s.peers, blob));
    for ((name, baseline), peers) in rows {
        let _ = writeln!(out, "{name:<32} {baseline:>10} {peers:>10}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn the_median_of_an_even_count_is_the_middle_mean() {
        let odd = Spread::of(&[30.0, 10.0, 20.0]);
        assert_eq!(
            odd,
            Spread {
                min: 10.0,
                median: 20.0,
                max: 30.0
            }
        );
        let even = Spread::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(even.median, 2.5);
        assert_eq!((even.min, even.max), (1.0, 4.0));
        assert_eq!(Spread::of(&[7.0]).median, 7.0);
        assert_eq!(Spread::of(&[]).median, 0.0);
    }
}
