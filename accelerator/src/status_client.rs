//! `dadi-p2p status`: fetches `/status` from a running daemon and prints it for a person.
//! Plain HTTP/1.1 over a std socket: the daemon is local and this runs once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::telemetry::{render_status_table, StatusSnapshot};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("address must look like http://host:port, got {0:?}")]
    Address(String),
    #[error("cannot reach {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("daemon answered: {0}")]
    Http(String),
    #[error("unreadable status: {0}")]
    Json(#[from] serde_json::Error),
}

/// Returns the raw JSON body of `GET /status`.
pub fn fetch(address: &str) -> Result<String, StatusError> {
    let hostport = address
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or_default())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| StatusError::Address(address.to_string()))?;
    let connect = |e| StatusError::Connect(hostport.to_string(), e);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .map_err(connect)?
        .next()
        .ok_or_else(|| StatusError::Address(address.to_string()))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(connect)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(connect)?;
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .map_err(connect)?;
    let mut raw = Vec::new();
    stream
        .take(4 << 20)
        .read_to_end(&mut raw)
        .map_err(connect)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| StatusError::Http("malformed answer".into()))?;
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 200 ") {
        return Err(StatusError::Http(status_line.to_string()));
    }
    Ok(body.to_string())
}

pub fn print(address: &str, json: bool) -> Result<(), StatusError> {
    let body = fetch(address)?;
    if json {
        println!("{body}");
    } else {
        let snapshot: StatusSnapshot = serde_json::from_str(&body)?;
        print!("{}", render_status_table(&snapshot));
    }
    Ok(())
}
