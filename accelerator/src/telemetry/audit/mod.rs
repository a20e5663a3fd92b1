//! The audit log in the documented line shape:
//! `2026/12/03 15:44:52|AUDIT|th=00007FBA247C5280|http:pread[pathname=/https://…][offset=0][size=65536][latency=21]`.
//!
//! The timestamp is local time to the second, `th` the `pthread_self` of the thread that did
//! the operation as 16 upper-case hex digits (what the original prints; useful to tell
//! concurrent streams apart), latency in microseconds, size negative on failure.
//!
//! The pathname is the blob URL behind a `/`. Presigned object-storage URLs carry their
//! signature and sometimes a token in the query, and a URL may carry userinfo, so both are
//! replaced by `<redacted>` before anything is written; control characters are
//! percent-encoded so a crafted URL cannot forge a second line. The record is taken on the
//! data path with no formatting beyond copying the pathname; redaction and formatting happen
//! on the writer thread.

mod rotate;
mod writer;

use std::fmt::Write as _;
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;

use super::{AuditSink, TelemetryError};

pub(crate) use writer::AuditHandle;

/// The documented audit line as a regular expression, strict: no field may be missing,
/// reordered or padded, and the date and time must be real ones. The groups `op`,
/// `pathname`, `offset`, `size` and `latency` name the fields, so a consumer can parse with
/// the same expression the tests check against. Matched per line, without the newline.
pub const AUDIT_LINE_PATTERN: &str = concat!(
    r"^\d{4}/(0[1-9]|1[0-2])/(0[1-9]|[12]\d|3[01]) ([01]\d|2[0-3]):[0-5]\d:[0-5]\d",
    r"\|AUDIT\|th=[0-9A-F]{16}\|",
    r"(?P<op>http:pread|rpc:stat|rpc:pread|download|filewrite|fileread)",
    r"\[pathname=(?P<pathname>/[^\[\]\s]*)\]\[offset=(?P<offset>\d+)\]",
    r"\[size=(?P<size>-?\d+)\]\[latency=(?P<latency>\d+)\]$",
);

/// The documented operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditOp {
    /// A read answered over the HTTP endpoint.
    HttpPread,
    /// A peer asked for a blob's size.
    RpcStat,
    /// A read answered to a peer.
    RpcPread,
    /// A range fetched from the origin.
    Download,
    /// A piece written to the cache.
    FileWrite,
    /// A piece read from the cache.
    FileRead,
}

impl AuditOp {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOp::HttpPread => "http:pread",
            AuditOp::RpcStat => "rpc:stat",
            AuditOp::RpcPread => "rpc:pread",
            AuditOp::Download => "download",
            AuditOp::FileWrite => "filewrite",
            AuditOp::FileRead => "fileread",
        }
    }
}

/// What the data path hands over; everything costly is left to the writer.
#[derive(Debug, Clone)]
pub(crate) struct AuditRecord {
    at: SystemTime,
    thread: u64,
    op: AuditOp,
    pathname: String,
    offset: u64,
    size: i64,
    latency_us: u64,
}

impl AuditRecord {
    pub fn now(op: AuditOp, pathname: &str, offset: u64, size: i64, latency_us: u64) -> Self {
        Self {
            at: SystemTime::now(),
            thread: current_thread(),
            op,
            pathname: pathname.to_owned(),
            offset,
            size,
            latency_us,
        }
    }

    /// Appends the line, with its newline, to `out`.
    pub fn format_into(&self, out: &mut String) {
        let local: chrono::DateTime<chrono::Local> = self.at.into();
        let _ = write!(
            out,
            "{}|AUDIT|th={:016X}|{}[pathname=",
            local.format("%Y/%m/%d %H:%M:%S"),
            self.thread,
            self.op.as_str()
        );
        if !self.pathname.starts_with('/') {
            out.push('/');
        }
        push_sanitized(out, &redact_url(&self.pathname));
        let _ = writeln!(
            out,
            "][offset={}][size={}][latency={}]",
            self.offset, self.size, self.latency_us
        );
    }
}

fn current_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions and always succeeds.
    let t = unsafe { libc::pthread_self() };
    t as usize as u64
}

/// Replaces the query (and fragment) and any userinfo of a URL with `<redacted>`, keeping
/// scheme, host and path, which is what an operator needs to find the blob. Use it for every
/// URL that reaches a log, not only the audit log.
pub fn redact_url(url: &str) -> String {
    let (base, had_query) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], true),
        None => (url, false),
    };
    let mut out = String::with_capacity(base.len() + 22);
    match base.find("://") {
        Some(i) => {
            let (scheme, rest) = base.split_at(i + 3);
            let authority_end = rest.find('/').unwrap_or(rest.len());
            out.push_str(scheme);
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    out.push_str("<redacted>");
                    out.push_str(&rest[at..]);
                }
                None => out.push_str(rest),
            }
        }
        None => out.push_str(base),
    }
    if had_query {
        out.push_str("?<redacted>");
    }
    out
}

/// Keeps a pathname on one line and its field closed: control characters, space, `[` and
/// `]` are percent-encoded.
fn push_sanitized(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_control() || c == ' ' || c == '[' || c == ']' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

/// Starts the writer for `sink`; `None` when auditing is off.
pub(crate) fn start(
    sink: &AuditSink,
    lines: usize,
    dropped: Counter,
) -> Result<Option<AuditHandle>, TelemetryError> {
    let out: Box<dyn writer::LineSink> = match sink {
        AuditSink::Off => return Ok(None),
        AuditSink::Stdout => Box::new(writer::StdoutSink::default()),
        AuditSink::File {
            dir,
            max_bytes,
            keep,
        } => {
            let file = rotate::RotatingFile::open(dir, *max_bytes, *keep).map_err(|source| {
                TelemetryError::OpenAudit {
                    path: dir.join(rotate::FILE_NAME),
                    source,
                }
            })?;
            Box::new(file)
        }
    };
    AuditHandle::spawn(out, lines, dropped)
        .map(Some)
        .map_err(TelemetryError::SpawnWriter)
}

#[cfg(test)]
pub(crate) mod tests;
