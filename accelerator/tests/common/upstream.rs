//! An upstream written by hand on a loopback `TcpListener`, for the failures a real registry
//! will not produce on demand: a server that never answers, one that answers a fixed status
//! or redirect to everything, one that announces a whole range but closes half-way through
//! it, and one that pauses each answer part-way until the test lets it go on.
//!
//! It counts accepted connections and parsed requests, which is how the tests see that a
//! refused request sent nothing upstream and that retries are bounded. Its behaviour can be
//! switched while it runs, so the same URL can first fail and then succeed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Longest request head read before the connection is dropped.
const MAX_HEAD: usize = 64 * 1024;

/// What the upstream does with each request.
#[derive(Clone)]
pub enum Behaviour {
    /// Reads the request and never answers, holding the connection open.
    Silent,
    /// Answers every request with this status and an empty body, keeping the connection.
    Status(u16),
    /// Answers every request with a 307 to this URL.
    Redirect(String),
    /// Serves `data` with Range support; when `truncate` is set, a response of more than one
    /// byte announces its full length but the connection closes after half of it.
    Blob { data: Arc<Vec<u8>>, truncate: bool },
    /// Serves `data` like `Blob`, but each answer longer than `first` bytes (and than one
    /// byte: size probes pass) stops after them until `gate` gives a permit (one per
    /// answer), then sends the rest.
    Hold {
        data: Arc<Vec<u8>>,
        first: usize,
        gate: Arc<tokio::sync::Semaphore>,
    },
    /// Serves `data` like `Blob` to requests whose `Authorization` is `token`; any other
    /// gets a 401, sent only once `gate` gives a permit (one per refusal).
    Guarded {
        data: Arc<Vec<u8>>,
        token: String,
        gate: Arc<tokio::sync::Semaphore>,
    },
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    connections: AtomicUsize,
    requests: AtomicUsize,
    /// The Range header of each request, in order.
    ranges: Mutex<Vec<Option<String>>>,
}

/// A running hand-written upstream; its tasks end when it is dropped.
pub struct HandUpstream {
    port: u16,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl HandUpstream {
    pub async fn start(behaviour: Behaviour) -> HandUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            connections: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            ranges: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        HandUpstream {
            port,
            shared,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The Range header of each request so far (`None` without one), in arrival order.
    pub fn ranges(&self) -> Vec<Option<String>> {
        self.shared.ranges.lock().unwrap().clone()
    }
}

impl Drop for HandUpstream {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        connections.spawn(serve(stream, shared.clone()));
        // Reap finished connections so the set does not grow with every one ever accepted.
        while connections.try_join_next().is_some() {}
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        shared.ranges.lock().unwrap().push(range_header(&head));
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let behaviour = shared.behaviour.lock().unwrap().clone();
        let keep = match behaviour {
            Behaviour::Silent => {
                std::future::pending::<()>().await;
                false
            }
            Behaviour::Status(code) => {
                let answer = format!(
                    "HTTP/1.1 {code} Status\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"
                );
                stream.write_all(answer.as_bytes()).await.is_ok()
            }
            Behaviour::Redirect(location) => {
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n\
                     Content-Length: 0\r\n\r\n"
                );
                stream.write_all(answer.as_bytes()).await.is_ok()
            }
            Behaviour::Blob { data, truncate } => {
                answer_blob(&mut stream, &head, &data, Cut::None(truncate)).await
            }
            Behaviour::Hold { data, first, gate } => {
                answer_blob(&mut stream, &head, &data, Cut::Hold { first, gate }).await
            }
            Behaviour::Guarded { data, token, gate } => {
                if header(&head, "authorization") == Some(token.as_str()) {
                    answer_blob(&mut stream, &head, &data, Cut::None(false)).await
                } else {
                    match gate.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => return,
                    }
                    let answer = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
                    stream.write_all(answer.as_bytes()).await.is_ok()
                }
            }
        };
        if !keep {
            return;
        }
    }
}

/// Reads one request head (up to the blank line) out of `buf` and the stream; GET requests
/// carry no body, so what follows the head stays in `buf` for the next request.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The value of the request's Range header.
fn range_header(head: &str) -> Option<String> {
    header(head, "range").map(str::to_owned)
}

/// The value of the request header `wanted` (any case).
fn header<'a>(head: &'a str, wanted: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(wanted)
            .then_some(value.trim())
    })
}

/// The `(first, last)` byte positions a `Range: bytes=a-b` or `bytes=a-` header asks for.
fn requested(head: &str, size: u64) -> Option<(u64, u64)> {
    let value = range_header(head)?;
    let (a, b) = value.strip_prefix("bytes=")?.split_once('-')?;
    let first: u64 = a.parse().ok()?;
    let last = match b {
        "" => size - 1,
        b => b.parse::<u64>().ok()?.min(size - 1),
    };
    Some((first, last))
}

/// How an answer's body deviates from a plain one.
enum Cut {
    /// `true`: the connection closes after half the body.
    None(bool),
    /// The body pauses after `first` bytes until `gate` gives a permit.
    Hold {
        first: usize,
        gate: Arc<tokio::sync::Semaphore>,
    },
}

/// Answers one read of `data`; returns whether the connection may serve another request.
async fn answer_blob(stream: &mut TcpStream, head: &str, data: &[u8], cut: Cut) -> bool {
    let size = data.len() as u64;
    let (status, first, last) = match requested(head, size) {
        Some((first, last)) if first <= last && first < size => {
            ("206 Partial Content", first, last)
        }
        Some(_) => {
            let answer = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            return stream.write_all(answer.as_bytes()).await.is_ok();
        }
        None => ("200 OK", 0, size - 1),
    };
    let len = last - first + 1;
    let mut answer = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\n");
    if status.starts_with("206") {
        answer.push_str(&format!("Content-Range: bytes {first}-{last}/{size}\r\n"));
    }
    answer.push_str("Content-Type: application/octet-stream\r\n\r\n");
    let body = &data[first as usize..=last as usize];
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return false;
    }
    match cut {
        Cut::None(true) if len > 1 => {
            let _ = stream.write_all(&body[..body.len() / 2]).await;
            let _ = stream.shutdown().await;
            false
        }
        Cut::None(_) => stream.write_all(body).await.is_ok(),
        Cut::Hold { first, gate } => {
            let first = if body.len() == 1 { 1 } else { first };
            let (head, rest) = body.split_at(first.min(body.len()));
            if stream.write_all(head).await.is_err() {
                return false;
            }
            if rest.is_empty() {
                return true;
            }
            match gate.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return false,
            }
            stream.write_all(rest).await.is_ok()
        }
    }
}
