//! The two checks behind `status`: would overlaybd use the accelerator, and
//! is the accelerator healthy.
//!
//! overlaybd decides per device, when the device is created, by a plain TCP
//! connect to the address; if that fails it quietly reads from the origin.
//! The first check repeats exactly that connect. A connect can succeed on a
//! port held by something that is not a working accelerator, so the second
//! check asks the accelerator's `GET /healthz` on the same host and port and
//! wants a 200. The request is hand-written HTTP/1.1 over std's TcpStream:
//! one request, no keep-alive, nothing to pull in an HTTP stack for.
//! For an `https://` address only the TCP connect is checked; the health
//! request is not sent, since that would need a TLS client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

use crate::address::{Endpoint, Scheme};

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub url: String,
    /// False when the check was not made (https address, or no connection).
    pub checked: bool,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Health {
    /// A health check that was not made, and why.
    pub fn not_checked(ep: &Endpoint, reason: &str) -> Health {
        Health {
            url: ep.health_url(),
            checked: false,
            ok: false,
            status: None,
            error: Some(reason.to_string()),
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

/// `GET /healthz` on the address's host and port.
pub fn health_check(ep: &Endpoint, timeout: Duration) -> Health {
    if ep.scheme == Scheme::Https {
        return Health::not_checked(ep, "not checked for https addresses (TCP connect only)");
    }
    let url = ep.health_url();
    let result = connect(ep, timeout).and_then(|s| request(s, ep, timeout));
    tracing::debug!(%url, ?result, "health check");
    match result {
        Ok(code) => Health {
            url,
            checked: true,
            ok: code == 200,
            status: Some(code),
            error: None,
        },
        Err(error) => Health {
            url,
            checked: true,
            ok: false,
            status: None,
            error: Some(error),
        },
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

fn request(mut s: TcpStream, ep: &Endpoint, timeout: Duration) -> Result<u16, String> {
    let io = |e: std::io::Error| format!("health request: {e}");
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nUser-Agent: overlaybd-p2p/{}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        ep.authority(),
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(req.as_bytes()).map_err(io)?;
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

    #[test]
    fn https_health_is_not_checked() {
        let ep = Endpoint::parse("https://127.0.0.1:1/accelerator").unwrap();
        let h = health_check(&ep, Duration::from_secs(1));
        assert!(!h.checked && !h.ok);
        assert_eq!(h.url, "https://127.0.0.1:1/healthz");
    }
}
