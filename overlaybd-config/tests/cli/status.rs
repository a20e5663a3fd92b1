//! `status` against a small accelerator stand-in on 127.0.0.1 that answers
//! `/healthz` with a chosen status and records the request lines it got.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::support::{fixture, replace_once, ClosedPort, Node};

struct Accelerator {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Accelerator {
    fn start(status_line: &'static str) -> Accelerator {
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
                serve(conn, status_line, &seen);
            }
        });
        Accelerator {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request head (a bare connect sends none) and answers it.
fn serve(conn: TcpStream, status_line: &str, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => head.push(line.trim_end().to_string()),
        }
    }
    if let Some(first) = head.first() {
        seen.lock().unwrap().push(first.clone());
        let body = "ok";
        let reply = format!(
            "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = (&conn).write_all(reply.as_bytes());
    }
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

fn node_with(enable: bool, address: &str) -> Node {
    Node::with(&replace_once(
        &fixture("overlaybd-shipped.json"),
        "\"enable\": false,\n    \"address\": \"localhost:19145/dadip2p\"",
        &format!("\"enable\": {enable},\n    \"address\": \"{address}\""),
    ))
}

#[test]
fn enabled_and_healthy() {
    let acc = Accelerator::start("200 OK");
    let node = node_with(true, &format!("http://127.0.0.1:{}/accelerator", acc.port));
    let before = node.snapshot();
    let run = node.run(&["status"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("reachable:  yes"), "{}", run.stdout);
    assert!(run.stdout.contains("-> 200"), "{}", run.stdout);
    assert_eq!(acc.requests(), ["GET /healthz HTTP/1.1"]);
    assert_eq!(node.snapshot(), before, "status never writes");

    let v = node.run(&["status", "--json"]).json();
    assert_eq!(v["verdict"], "accelerated");
    assert_eq!(v["reachability"]["reachable"], true);
    assert_eq!(v["health"]["status"], 200);
    assert_eq!(v["p2pConfig"]["enable"], true);
}

#[test]
fn enabled_but_unhealthy() {
    let acc = Accelerator::start("503 Service Unavailable");
    let node = node_with(true, &format!("http://127.0.0.1:{}/accelerator", acc.port));
    let run = node.run(&["status", "--json"]);
    assert_eq!(run.code, 9);
    let v = run.json();
    assert_eq!(v["verdict"], "unhealthy");
    assert_eq!(v["error"], "accelerator_unavailable");
    assert_eq!(v["health"]["status"], 503);
}

#[test]
fn enabled_but_unreachable_is_bypassed() {
    let closed = ClosedPort::new();
    let node = node_with(
        true,
        &format!("http://127.0.0.1:{}/accelerator", closed.port),
    );
    let run = node.run(&["status"]);
    assert_eq!(run.code, 9, "{}", run.stdout);
    assert!(run.stdout.contains("reachable:  no"), "{}", run.stdout);
    assert!(run.stdout.contains("bypass"), "{}", run.stdout);
}

#[test]
fn disabled_is_fine_whatever_the_accelerator_does() {
    let closed = ClosedPort::new();
    let node = node_with(
        false,
        &format!("http://127.0.0.1:{}/accelerator", closed.port),
    );
    let run = node.run(&["status", "--json"]);
    assert_eq!(run.code, 0);
    let v = run.json();
    assert_eq!(v["verdict"], "disabled");
    assert_eq!(v["reachability"]["reachable"], false);
}

#[test]
fn scheme_less_address_is_reported_as_bypassed() {
    let node = node_with(true, "localhost:19145/dadip2p");
    let run = node.run(&["status"]);
    assert_eq!(run.code, 9);
    assert!(run.stdout.contains("address:    invalid"), "{}", run.stdout);
}

#[test]
fn https_address_gets_the_tcp_check_only() {
    let acc = Accelerator::start("200 OK");
    let node = node_with(true, &format!("https://127.0.0.1:{}/accelerator", acc.port));
    let run = node.run(&["status", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let v = run.json();
    assert_eq!(v["verdict"], "accelerated");
    assert_eq!(v["health"]["checked"], false);
    assert!(
        acc.requests().is_empty(),
        "no HTTP request to an https address"
    );
}

#[test]
fn missing_address_is_checked_at_overlaybds_built_in_default() {
    let node = Node::with("{\"p2pConfig\": {\"enable\": false}}");
    let run = node.run(&["status", "--json"]);
    assert_eq!(run.code, 0, "disabled: {}", run.stdout);
    let v = run.json();
    assert_eq!(v["checked_address"], "http://localhost:9731/accelerator");
    assert_eq!(v["p2pConfig"], serde_json::json!({"enable": false}));
    let text = node.run(&["status"]).stdout;
    assert!(text.contains("built-in default"), "{text}");
}
