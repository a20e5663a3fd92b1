//! A small accelerator stand-in on 127.0.0.1: answers `/healthz` with a
//! chosen status line, over plain TCP or TLS, and records the request lines
//! it got and, for TLS, the server name the client asked for (SNI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Upper bound on one connection, so a stuck client cannot hang a test.
const CONN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub line: String,
    /// The SNI of a TLS connection; None for plain TCP or no SNI sent.
    pub sni: Option<String>,
}

pub struct Accelerator {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Accelerator {
    /// Plain HTTP.
    pub fn start(status_line: &'static str) -> Accelerator {
        Accelerator::spawn(status_line, None)
    }

    /// HTTPS with the given server configuration.
    pub fn start_tls(status_line: &'static str, tls: Arc<ServerConfig>) -> Accelerator {
        Accelerator::spawn(status_line, Some(tls))
    }

    fn spawn(status_line: &'static str, tls: Option<Arc<ServerConfig>>) -> Accelerator {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(CONN_LIMIT));
                let _ = conn.set_write_timeout(Some(CONN_LIMIT));
                match &tls {
                    None => {
                        let mut conn = conn;
                        if let Some(line) = read_head(&mut conn) {
                            record(&seen, line, None);
                            answer(&mut conn, status_line);
                        }
                    }
                    Some(config) => {
                        let Ok(tls) = ServerConnection::new(config.clone()) else {
                            continue;
                        };
                        let mut stream = StreamOwned::new(tls, conn);
                        if let Some(line) = read_head(&mut stream) {
                            let sni = stream.conn.server_name().map(str::to_string);
                            record(&seen, line, sni);
                            if answer(&mut stream, status_line) {
                                stream.conn.send_close_notify();
                                let _ = stream.flush();
                            }
                        }
                    }
                }
            }
        });
        Accelerator {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The first line of every request received, in order.
    pub fn requests(&self) -> Vec<String> {
        self.all().into_iter().map(|r| r.line).collect()
    }

    pub fn all(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn record(seen: &Mutex<Vec<Request>>, line: String, sni: Option<String>) {
    seen.lock().unwrap().push(Request { line, sni });
}

/// The first line of one request head; None when the client sent none (a
/// bare connect) or the TLS handshake failed.
fn read_head(conn: &mut impl Read) -> Option<String> {
    let mut reader = BufReader::new(conn);
    let mut first = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if line == "\r\n" => return first,
            Ok(_) => {
                first.get_or_insert_with(|| line.trim_end().to_string());
            }
        }
    }
}

/// Sends the answer; true when it was written out.
fn answer(conn: &mut impl Write, status_line: &str) -> bool {
    let body = "ok";
    let reply = format!(
        "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(reply.as_bytes()).is_ok() && conn.flush().is_ok()
}

impl Drop for Accelerator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
