//! The human table of a benchmark run; `bench::write_json` writes its JSON.

use std::fmt::Write as _;

use crate::scenario::Summary;

/// A fixed-width table of the headline figures and the warm matrix.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let _ = writeln!(
        out,
        "blob {} MiB, piece {}, {} cores shared by generator ({} threads) and servers",
        s.blob_size >> 20,
        s.piece_size.map_or("default".to_owned(), |p| p.to_string()),
        s.cores,
        s.generator_threads
    );
    let _ = writeln!(
        out,
        "setup: generate {:.1} s, {} {:.1} s",
        s.generate_seconds, s.push, s.push_seconds
    );
    let _ = writeln!(
        out,
        "direct seq 1 MiB {:.0} MB/s, plain GET {:.0} MB/s; warm plain GET via dadi-p2p {} MB/s",
        s.direct_mbps,
        s.direct_get_mbps,
        opt(s.warm_get_mbps)
    );
    let _ = writeln!(
        out,
        "cold dadi-p2p {} MB/s (x{} of direct), nginx-cache cold {:.0} MB/s (x{:.2})",
        opt(s.cold_mbps),
        opt(s.cold_vs_direct),
        s.nginx_cold_mbps,
        s.nginx_cold_vs_direct
    );
    let _ = writeln!(
        out,
        "cold random 64 KiB, 1 connection: dadi-p2p p50 {} us p99 {} us, registry directly p50 {} us p99 {} us",
        opt(s.cold_64k.as_ref().map(|r| r.p50_us as f64)),
        opt(s.cold_64k.as_ref().map(|r| r.p99_us as f64)),
        s.direct_64k.p50_us,
        s.direct_64k.p99_us
    );
    let _ = writeln!(
        out,
        "cold sequential 64 KiB, 1 connection: dadi-p2p p50 {} us p99 {} us {} MB/s, registry directly p50 {} us p99 {} us {:.0} MB/s",
        opt(s.cold_seq_64k.as_ref().map(|r| r.p50_us as f64)),
        opt(s.cold_seq_64k.as_ref().map(|r| r.p99_us as f64)),
        opt(s.cold_seq_64k.as_ref().map(|r| r.mbps)),
        s.direct_seq_64k.p50_us,
        s.direct_seq_64k.p99_us,
        s.direct_seq_64k.mbps
    );
    let _ = writeln!(
        out,
        "size probe then first 64 KiB of a layer: dadi-p2p p50 {} us max {} us, registry directly p50 {} us max {} us",
        opt(s.cold_first_64k_us.map(|(p50, _)| p50 as f64)),
        opt(s.cold_first_64k_us.map(|(_, max)| max as f64)),
        s.direct_first_64k_us.0,
        s.direct_first_64k_us.1
    );
    let _ = writeln!(
        out,
        "dadi-p2p peak RSS {} MiB, CPU s/GiB cold {} warm {}, whole blob exact: {}",
        opt(s.peak_rss_mib),
        opt(s.cpu_seconds_per_gib_cold),
        opt(s.cpu_seconds_per_gib_warm),
        s.dadi_exact_blob
            .map_or("-".to_owned(), |ok| ok.to_string())
    );
    let _ = writeln!(
        out,
        "\n{:<13} {:<8} {:>5} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>7}",
        "target",
        "pattern",
        "conns",
        "requests",
        "MB/s",
        "p50 us",
        "p99 us",
        "errors",
        "capped",
        "gen cpu"
    );
    for c in &s.matrix {
        let r = &c.result;
        let _ = writeln!(
            out,
            "{:<13} {:<8} {:>5} {:>9} {:>9.0} {:>9} {:>9} {:>7} {:>6} {:>7.2}",
            c.target,
            c.pattern,
            c.connections,
            r.requests,
            r.mbps,
            r.p50_us,
            r.p99_us,
            r.errors,
            if r.capped { "yes" } else { "no" },
            c.generator_cpu_seconds
        );
    }
    out
}
