//! The two checks behind `status`: would overlaybd use the accelerator, and
//! is the accelerator healthy.
//!
//! overlaybd decides per device, when the device is created, by a plain TCP
//! connect to the address; if that fails it quietly reads from the origin.
//! The first check repeats exactly that connect. A connect can succeed on a
//! port held by something that is not a working accelerator, so the second
//! check asks the accelerator's `GET /healthz` on the same host and port and
//! wants a 200: over plain TCP for `http://`, after a verified TLS handshake
//! for `https://` (see `tls` for what is trusted). The request is
//! hand-written HTTP/1.1 over a blocking socket: one request, no keep-alive,
//! nothing to pull in an HTTP stack for. The handshake and the request share
//! one deadline of `--timeout`, re-armed before every socket read and write,
//! so a peer that trickles bytes cannot stretch the check.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, ProtocolVersion};
use serde::Serialize;

use crate::address::{Endpoint, Scheme};
use crate::tls::{self, HandshakeFailure, Trust};

/// Enough for any status line; the rest of the answer is not read.
const MAX_STATUS_LINE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reachability {
    /// `host:port` as connected to.
    pub target: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One word for scripts, so they need not combine `checked`, `status` and `tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthOutcome {
    /// `/healthz` answered 200.
    Ok,
    /// `/healthz` answered, but not 200.
    BadStatus,
    /// The TLS handshake failed; `tls.reason` says why.
    TlsFailed,
    /// No usable answer: connect, send or read failed, or no status line.
    RequestFailed,
    /// The check was not made (no TCP connection).
    NotChecked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub url: String,
    /// False when the check was not made (no connection).
    pub checked: bool,
    pub ok: bool,
    pub outcome: HealthOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Present for `https://` addresses once a handshake was attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsReport>,
}

/// The TLS side of an `https://` health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsReport {
    /// The name the certificate was verified against (the address's host).
    pub server_name: String,
    /// The handshake completed and the certificate chain and name verified.
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    /// Why the handshake failed, e.g. `unknown_issuer`, `name_mismatch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// What to change, when the usual cause of the failure is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Health {
    /// A health check that was not made, and why.
    pub fn not_checked(ep: &Endpoint, reason: &str) -> Health {
        Health {
            url: ep.health_url(),
            checked: false,
            ok: false,
            outcome: HealthOutcome::NotChecked,
            status: None,
            error: Some(reason.to_string()),
            tls: None,
        }
    }
}

/// A TCP connect to the address, the way overlaybd checks it.
pub fn tcp_check(ep: &Endpoint, timeout: Duration) -> Reachability {
    let target = ep.authority();
    let result = connect(ep, timeout);
    tracing::debug!(%target, ok = result.is_ok(), "tcp check");
    Reachability {
        target,
        reachable: result.is_ok(),
        error: result.err(),
    }
}

/// `GET /healthz` on the address's host and port, over TLS for `https://`.
pub fn health_check(ep: &Endpoint, timeout: Duration, trust: &Trust) -> Health {
    let mut health = Health {
        url: ep.health_url(),
        checked: true,
        ok: false,
        outcome: HealthOutcome::RequestFailed,
        status: None,
        error: None,
        tls: None,
    };
    let result = connect(ep, timeout).and_then(|sock| {
        let mut io = Timed::new(&sock, timeout);
        match ep.scheme {
            Scheme::Http => exchange(&mut io, ep),
            Scheme::Https => over_tls(&mut io, ep, trust, &mut health),
        }
    });
    tracing::debug!(url = %health.url, ?result, "health check");
    match result {
        Ok(code) => {
            health.ok = code == 200;
            health.status = Some(code);
            health.outcome = if health.ok {
                HealthOutcome::Ok
            } else {
                HealthOutcome::BadStatus
            };
        }
        Err(error) => health.error = Some(error),
    }
    health
}

/// Handshakes, records the TLS outcome in `health`, then asks `/healthz`.
fn over_tls(
    io: &mut Timed<'_>,
    ep: &Endpoint,
    trust: &Trust,
    health: &mut Health,
) -> Result<u16, String> {
    let name = tls::server_name(&ep.host)?;
    let config = trust
        .client_config()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut conn = ClientConnection::new(config, name).map_err(|e| format!("TLS setup: {e}"))?;
    let mut report = TlsReport {
        server_name: ep.host.clone(),
        verified: false,
        version: None,
        reason: None,
        hint: None,
    };
    if let Err(e) = handshake(&mut conn, io) {
        let failure = HandshakeFailure::from_io(&e, &ep.host, trust);
        report.reason = Some(failure.reason);
        report.hint = failure.hint;
        health.tls = Some(report);
        health.outcome = HealthOutcome::TlsFailed;
        return Err(format!(
            "TLS handshake with {} failed: {}",
            ep.host, failure.error
        ));
    }
    report.verified = true;
    report.version = conn.protocol_version().and_then(version_name);
    health.tls = Some(report);
    exchange(&mut rustls::Stream::new(&mut conn, io), ep)
}

/// Drives the handshake to its end; rustls verifies the chain and the name.
fn handshake(conn: &mut ClientConnection, io: &mut Timed<'_>) -> io::Result<()> {
    while conn.is_handshaking() {
        let (read, written) = conn.complete_io(io)?;
        if read == 0 && written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the handshake",
            ));
        }
    }
    Ok(())
}

fn version_name(v: ProtocolVersion) -> Option<&'static str> {
    match v {
        ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        _ => None,
    }
}

/// The socket with the time left until one deadline as its timeout.
struct Timed<'a> {
    sock: &'a TcpStream,
    end: Instant,
    limit: Duration,
}

impl<'a> Timed<'a> {
    fn new(sock: &'a TcpStream, limit: Duration) -> Timed<'a> {
        Timed {
            sock,
            end: Instant::now() + limit,
            limit,
        }
    }

    fn timed_out(&self) -> io::Error {
        let secs = self.limit.as_secs_f64();
        io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {secs}s"))
    }

    fn arm(&self) -> io::Result<()> {
        let left = self.end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        self.sock.set_read_timeout(Some(left))?;
        self.sock.set_write_timeout(Some(left))
    }

    /// A socket timeout shows as WouldBlock on Unix; say what it means.
    fn explain(&self, e: io::Error) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timed_out(),
            _ => e,
        }
    }
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.sock.read(buf).map_err(|e| self.explain(e))
    }
}

impl Write for Timed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.sock.write(buf).map_err(|e| self.explain(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

fn connect(ep: &Endpoint, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", ep.host))?
        .collect();
    let mut last = format!("{} resolves to no address", ep.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connect {addr}: {e}"),
        }
    }
    Err(last)
}

/// Sends `GET /healthz` and reads the status code of the answer.
fn exchange(s: &mut (impl Read + Write), ep: &Endpoint) -> Result<u16, String> {
    let io = |e: io::Error| format!("health request: {e}");
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nUser-Agent: overlaybd-p2p/{}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        ep.authority(),
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(req.as_bytes()).map_err(io)?;
    s.flush().map_err(io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < MAX_STATUS_LINE {
        let n = s.read(&mut chunk).map_err(io)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status(&buf).ok_or_else(|| "health request: no HTTP status line in the answer".into())
}

fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20"), None);
        assert_eq!(parse_status(b""), None);
    }
}
