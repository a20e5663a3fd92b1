//! The audit writer: line shape against a strict pattern, redaction, rotation, and the drop
//! counter when the bounded buffer is full or the sink refuses a line.

use std::io;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use regex::Regex;

use super::writer::{AuditHandle, LineSink};
use super::*;

pub(crate) fn line_regex() -> Regex {
    Regex::new(AUDIT_LINE_PATTERN).unwrap()
}

fn line(op: AuditOp, path: &str, offset: u64, size: i64, latency: u64) -> String {
    let mut s = String::new();
    AuditRecord::now(op, path, offset, size, latency).format_into(&mut s);
    s
}

#[test]
fn every_op_code_makes_a_line_the_strict_pattern_accepts() {
    let re = line_regex();
    let url = "https://reg/v2/app/blobs/sha256:dd65726c224b09836aeb6ecebd6baf58c96be727";
    let ops = [
        (AuditOp::HttpPread, "http:pread"),
        (AuditOp::RpcStat, "rpc:stat"),
        (AuditOp::RpcPread, "rpc:pread"),
        (AuditOp::Download, "download"),
        (AuditOp::FileWrite, "filewrite"),
        (AuditOp::FileRead, "fileread"),
    ];
    for (op, code) in ops {
        let l = line(op, url, 127467520, 65536, 21);
        let body = l.strip_suffix('\n').expect("one newline-terminated line");
        assert!(re.is_match(body), "{body}");
        let tail = format!("|{code}[pathname=/{url}][offset=127467520][size=65536][latency=21]");
        assert!(body.ends_with(&tail), "{body}");
    }
}

#[test]
fn the_documented_examples_match_the_pattern() {
    let re = line_regex();
    let doc = "2022/08/30 15:44:52|AUDIT|th=00007FBA247C5280|download[pathname=/https://cri-pi840la*****-registry.oss-cn-hangzhou.aliyuncs.com/docker/registry/v2/blobs/sha256/dd/dd65726c224b09836aeb6ecebd6baf58c96be727ba86da14e62835569896008a/data][offset=125829120][size=2097152][latency=267172]";
    assert!(re.is_match(doc));
    // And a malformed one does not.
    assert!(!re.is_match(&doc.replace("th=00007FBA247C5280", "th=7fba247c5280")));
    assert!(!re.is_match(&doc.replace("][size=", "][sz=")));
}

#[test]
fn thread_is_the_callers_pthread_and_failure_size_is_negative() {
    let l = line(AuditOp::Download, "/x", 0, -5, 7);
    // SAFETY: no preconditions.
    let me = unsafe { libc::pthread_self() } as usize as u64;
    assert!(l.contains(&format!("|AUDIT|th={me:016X}|")), "{l}");
    assert!(l.contains("[size=-5][latency=7]"), "{l}");
    // A leading slash is not doubled.
    assert!(l.contains("[pathname=/x]"), "{l}");
}

#[test]
fn timestamp_is_local_time_to_the_second() {
    let rec = AuditRecord::now(AuditOp::FileRead, "p", 0, 1, 1);
    let mut l = String::new();
    rec.format_into(&mut l);
    let local: chrono::DateTime<chrono::Local> = rec.at.into();
    assert!(l.starts_with(&local.format("%Y/%m/%d %H:%M:%S|").to_string()));
}

#[test]
fn queries_userinfo_and_line_breaks_never_reach_the_line() {
    let presigned = "https://bucket.oss.example/docker/registry/v2/blobs/sha256/dd/dd65/data\
                     ?OSSAccessKeyId=AKID&Expires=1&Signature=abc%2Bdef&security-token=tok";
    let l = line(AuditOp::HttpPread, presigned, 0, 1, 1);
    assert!(
        l.contains("[pathname=/https://bucket.oss.example/docker/registry/v2/blobs/sha256/dd/dd65/data?<redacted>]"),
        "{l}"
    );
    for secret in ["AKID", "Signature", "abc", "tok", "Expires"] {
        assert!(!l.contains(secret), "{secret} leaked: {l}");
    }

    let l = line(
        AuditOp::Download,
        "/https://user:pw@reg:5000/v2/a/blobs/sha256:1",
        0,
        1,
        1,
    );
    assert!(
        l.contains("[pathname=/https://<redacted>@reg:5000/v2/a/blobs/sha256:1]"),
        "{l}"
    );
    assert!(!l.contains("pw"), "{l}");

    let l = line(AuditOp::Download, "/a\nb]c [d#frag", 0, 1, 1);
    assert_eq!(l.matches('\n').count(), 1, "{l}");
    assert!(l.contains("[pathname=/a%0Ab%5Dc%20%5Bd?<redacted>]"), "{l}");
    assert!(line_regex().is_match(l.trim_end()), "{l}");
}

#[test]
fn redact_url_keeps_what_identifies_the_blob() {
    assert_eq!(
        redact_url("https://reg/v2/a/blobs/sha256:1"),
        "https://reg/v2/a/blobs/sha256:1"
    );
    assert_eq!(redact_url("https://reg/p?x=1"), "https://reg/p?<redacted>");
    assert_eq!(
        redact_url("https://u@reg/p@q"),
        "https://<redacted>@reg/p@q"
    );
    assert_eq!(redact_url("mytest"), "mytest");
}

/// A sink that announces each write and then waits for permission to finish it.
struct GatedSink {
    entered: std_mpsc::Sender<()>,
    release: Arc<Mutex<std_mpsc::Receiver<()>>>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LineSink for GatedSink {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let _ = self.entered.send(());
        let _ = self.release.lock().unwrap().recv();
        self.lines
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(line).into_owned());
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_stalled_writer_drops_and_counts_instead_of_blocking() {
    const CAPACITY: usize = 4;
    const EXTRA: u64 = 3;
    let (entered_tx, entered) = std_mpsc::channel();
    let (release, release_rx) = std_mpsc::channel();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = GatedSink {
        entered: entered_tx,
        release: Arc::new(Mutex::new(release_rx)),
        lines: lines.clone(),
    };
    let dropped = Counter::default();
    let handle = AuditHandle::spawn(Box::new(sink), CAPACITY, dropped.clone()).unwrap();
    let rec = |i: u64| AuditRecord::now(AuditOp::FileRead, &format!("/blob{i}"), i, 1, 1);

    // The writer takes the first line and stalls inside the sink: the channel is empty.
    handle.send(rec(0));
    entered.recv().unwrap();
    for i in 1..=CAPACITY as u64 {
        handle.send(rec(i));
    }
    assert_eq!(dropped.get(), 0);
    for i in 0..EXTRA {
        handle.send(rec(100 + i));
    }
    assert_eq!(dropped.get(), EXTRA);

    // Let every pending write through, then stop: all accepted lines are written in order.
    for _ in 0..=CAPACITY {
        release.send(()).unwrap();
    }
    handle.stop().await;
    let written = lines.lock().unwrap().clone();
    assert_eq!(written.len(), CAPACITY + 1);
    for (i, l) in written.iter().enumerate() {
        assert!(
            l.contains(&format!("[pathname=/blob{i}][offset={i}]")),
            "{l}"
        );
    }
    // After stop, lines are counted as dropped rather than queued forever.
    handle.send(rec(999));
    assert_eq!(dropped.get(), EXTRA + 1);
}

/// A sink that refuses every line, like a full disk.
struct FailingSink;

impl LineSink for FailingSink {
    fn write_line(&mut self, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("no space left"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_line_the_sink_refuses_is_counted_as_dropped() {
    let dropped = Counter::default();
    let handle = AuditHandle::spawn(Box::new(FailingSink), 16, dropped.clone()).unwrap();
    for i in 0..3 {
        handle.send(AuditRecord::now(AuditOp::Download, "/b", i, 1, 1));
    }
    handle.stop().await;
    assert_eq!(dropped.get(), 3);
}
