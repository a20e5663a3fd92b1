//! The audit log written by the daemon: every line in the documented shape, one line per
//! operation with the offsets and sizes of the reads made, and no URL signature in the audit
//! log or in the daemon's own output.

use dadi_p2p::telemetry::AUDIT_LINE_PATTERN;
use dadi_p2p_integration::{http, Accelerator};

use super::*;

/// Parsed audit line: operation, pathname, offset, size.
pub(crate) type AuditLine = (String, String, u64, i64);

/// Checks every line against the daemon's strict pattern and returns its fields.
pub(crate) fn parse_audit(text: &str) -> Vec<AuditLine> {
    let shape = regex::Regex::new(AUDIT_LINE_PATTERN).unwrap();
    text.lines()
        .map(|line| {
            let c = shape
                .captures(line)
                .unwrap_or_else(|| panic!("audit line out of shape: {line:?}"));
            (
                c["op"].to_string(),
                c["pathname"].to_string(),
                c["offset"].parse().unwrap(),
                c["size"].parse().unwrap(),
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
    // The two reads, and the refused read of the missing blob with its size -1.
    assert_eq!(
        spans(&lines, "http:pread"),
        vec![(0, -1), (s, len), (s, len)]
    );
    let refused = of_op(&lines, "http:pread");
    assert!(
        refused.iter().any(|l| l.3 == -1 && l.1 == shown_missing),
        "{text}"
    );
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
        3 + 2 * pieces.len() + 2 + want_reads.len(),
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
