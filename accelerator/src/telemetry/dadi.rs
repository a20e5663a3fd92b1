//! The documented `DADIP2P_*` families in the exact shape existing dashboards parse:
//! classic text format, every family a gauge, values with six decimals, labels in the order
//! `node`, `type`, `mode`, and a millisecond timestamp after every value.
//!
//! `DADIP2P_Label` is documented only by its `# HELP`/`# TYPE` lines. Here it carries one
//! info-style sample, value 1, with the `node` and `mode` labels plus `version`, so a
//! dashboard can show which build each node runs; a scraper that ignored it before still
//! can.

use std::fmt::Write;

use super::{Kind, Mode};

/// One `type` worth of values for the per-kind families.
pub(crate) struct KindRow {
    pub kind: Kind,
    pub throughput: f64,
    pub qps: f64,
    pub max_latency_us: f64,
    pub count: f64,
}

pub(crate) struct View<'a> {
    pub node: &'a str,
    pub mode: Mode,
    pub ts_ms: u64,
    pub rows: &'a [KindRow],
    pub allocated: u64,
    pub used: u64,
    pub version: &'a str,
}

/// Names and HELP texts of the per-kind families, as documented.
const PER_KIND: [(&str, &str); 4] = [
    ("DADIP2P_Read_Throughtput", " Bytes / sec"),
    ("DADIP2P_QPS", ""),
    ("DADIP2P_MaxLatency", " us"),
    ("DADIP2P_Count", " Bytes"),
];

pub(crate) fn render(out: &mut String, v: &View<'_>) {
    let node = escape(v.node);
    let mode = v.mode.as_str();
    let sample = |out: &mut String, name: &str, ty: Option<&str>, extra: &str, value: f64| {
        let _ = write!(out, "{name}{{node=\"{node}\",");
        if let Some(ty) = ty {
            let _ = write!(out, "type=\"{ty}\",");
        }
        let _ = writeln!(out, "mode=\"{mode}\"{extra}}} {value:.6} {}", v.ts_ms);
    };

    header(out, "DADIP2P_Alive", "");
    sample(out, "DADIP2P_Alive", None, "", 1.0);

    for (i, (name, help)) in PER_KIND.iter().enumerate() {
        header(out, name, help);
        for row in v.rows {
            let value = match i {
                0 => row.throughput,
                1 => row.qps,
                2 => row.max_latency_us,
                _ => row.count,
            };
            sample(out, name, Some(row.kind.as_str()), "", value);
        }
    }

    header(out, "DADIP2P_Cache", "");
    sample(
        out,
        "DADIP2P_Cache",
        Some("allocated"),
        "",
        v.allocated as f64,
    );
    sample(out, "DADIP2P_Cache", Some("used"), "", v.used as f64);

    header(out, "DADIP2P_Label", "");
    let version = format!(",version=\"{}\"", escape(v.version));
    sample(out, "DADIP2P_Label", None, &version, 1.0);
}

/// `help` is empty or starts with the separating space, so an empty HELP line has no
/// trailing blank, as in the documented output.
fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name}{help}\n# TYPE {name} gauge");
}

/// Label value escaping of the text format: backslash, double quote and newline.
fn escape(s: &str) -> String {
    let mut e = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => e.push_str("\\\\"),
            '"' => e.push_str("\\\""),
            '\n' => e.push_str("\\n"),
            c => e.push(c),
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero_rows() -> Vec<KindRow> {
        Kind::ALL
            .iter()
            .map(|&kind| KindRow {
                kind,
                throughput: 0.0,
                qps: 0.0,
                max_latency_us: 0.0,
                count: 0.0,
            })
            .collect()
    }

    /// The documented example, line for line, followed by the `DADIP2P_Label` sample this
    /// implementation adds.
    #[test]
    fn idle_agent_matches_the_documented_exposition() {
        let rows = zero_rows();
        let mut out = String::new();
        render(
            &mut out,
            &View {
                node: "192.168.69.172:65005",
                mode: Mode::Agent,
                ts_ms: 1692156721833,
                rows: &rows,
                allocated: 4294967296,
                used: 4294971392,
                version: "0.1.0",
            },
        );
        let mut expected = String::new();
        let n = r#"{node="192.168.69.172:65005","#;
        let ts = "0.000000 1692156721833";
        expected.push_str("# HELP DADIP2P_Alive\n# TYPE DADIP2P_Alive gauge\n");
        expected.push_str(&format!(
            "DADIP2P_Alive{n}mode=\"agent\"}} 1.000000 1692156721833\n"
        ));
        for (name, help) in PER_KIND {
            expected.push_str(&format!("# HELP {name}{help}\n# TYPE {name} gauge\n"));
            for t in ["pread", "download", "peer", "disk", "http"] {
                expected.push_str(&format!("{name}{n}type=\"{t}\",mode=\"agent\"}} {ts}\n"));
            }
        }
        expected.push_str("# HELP DADIP2P_Cache\n# TYPE DADIP2P_Cache gauge\n");
        expected.push_str(&format!(
            "DADIP2P_Cache{n}type=\"allocated\",mode=\"agent\"}} 4294967296.000000 1692156721833\n"
        ));
        expected.push_str(&format!(
            "DADIP2P_Cache{n}type=\"used\",mode=\"agent\"}} 4294971392.000000 1692156721833\n"
        ));
        expected.push_str("# HELP DADIP2P_Label\n# TYPE DADIP2P_Label gauge\n");
        expected.push_str(&format!(
            "DADIP2P_Label{n}mode=\"agent\",version=\"0.1.0\"}} 1.000000 1692156721833\n"
        ));
        assert_eq!(out, expected);
    }

    #[test]
    fn values_have_six_decimals_and_root_mode() {
        let mut rows = zero_rows();
        rows[1].throughput = 1234.5;
        rows[1].count = 4248808352.0;
        let mut out = String::new();
        render(
            &mut out,
            &View {
                node: "10.0.0.1:9877",
                mode: Mode::Root,
                ts_ms: 7,
                rows: &rows,
                allocated: 1,
                used: 0,
                version: "x",
            },
        );
        assert!(out.contains(
            "DADIP2P_Read_Throughtput{node=\"10.0.0.1:9877\",type=\"download\",mode=\"root\"} \
             1234.500000 7\n"
        ));
        assert!(out.contains(
            "DADIP2P_Count{node=\"10.0.0.1:9877\",type=\"download\",mode=\"root\"} \
             4248808352.000000 7\n"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), "a\\nb");
    }
}
