//! Debian's Prometheus scrapes a rendered body over loopback and the series are read back
//! through its query API: the check that the server which will really scrape the exporter
//! accepts every line, not only that a parser does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use super::tests::config;
use super::*;

/// Serves `render()` for every request until dropped.
struct Exporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    fn start(t: Arc<Telemetry>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let _ = serve(conn, &t);
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, t: &Telemetry) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let body = t.render();
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        Telemetry::CONTENT_TYPE,
        body.len(),
        body
    )
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Self {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: dadi\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus from Debian's prometheus package (scripts/deps installs it)");
        Self { child, addr }
    }

    /// An instant query; `None` when the server is not up yet or the request failed.
    fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let mut conn = TcpStream::connect(self.addr).ok()?;
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        write!(
            conn,
            "GET /api/v1/query?query={q} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut resp = String::new();
        conn.read_to_string(&mut resp).ok()?;
        let (_, body) = resp.split_once("\r\n\r\n")?;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["data"]["result"].as_array().cloned()
    }

    /// Polls until `promql` returns at least `n` series: bounded to about 60 seconds.
    fn wait_for(&self, promql: &str, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..300 {
            if let Some(r) = self.query(promql) {
                if r.len() >= n {
                    return r;
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!("prometheus never returned {n} series for {promql}");
    }
}

fn value_of(series: &serde_json::Value) -> f64 {
    series["value"][1].as_str().unwrap().parse().unwrap()
}

#[test]
fn prometheus_scrapes_every_line_and_reads_the_counts_back() {
    let t = Telemetry::new(config(AuditSink::Off)).unwrap();
    t.record(Kind::Download, 3 << 20, Duration::from_millis(30));
    t.record(Kind::Pread, 1 << 20, Duration::from_millis(2));
    t.served(Source::Origin, 1 << 20);
    let samples = t.render().lines().filter(|l| !l.starts_with('#')).count();
    let exporter = Exporter::start(t.clone());
    let tmp = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(tmp.path(), exporter.addr);

    let up = prom.wait_for(r#"up{job="dadi"} == 1"#, 1);
    assert_eq!(value_of(&up[0]), 1.0);
    // Every sample line of the body was ingested, none rejected.
    let scraped = prom.wait_for(r#"scrape_samples_scraped{job="dadi"}"#, 1);
    assert_eq!(value_of(&scraped[0]) as usize, samples);

    let counts = prom.wait_for("DADIP2P_Count", 5);
    for s in &counts {
        let m = &s["metric"];
        assert_eq!(m["node"], "127.0.0.1:65001");
        assert_eq!(m["mode"], "agent");
        let expected = match m["type"].as_str().unwrap() {
            "download" => (3 << 20) as f64,
            "pread" => (1 << 20) as f64,
            _ => 0.0,
        };
        assert_eq!(value_of(s), expected, "{s}");
    }
    for family in [
        "DADIP2P_Alive",
        "DADIP2P_Read_Throughtput",
        "DADIP2P_QPS",
        "DADIP2P_MaxLatency",
        "DADIP2P_Cache",
        "DADIP2P_Label",
    ] {
        assert!(!prom.wait_for(family, 1).is_empty());
    }
    let origin = prom.wait_for(r#"dadi_p2p_served_bytes_total{source="origin"}"#, 1);
    assert_eq!(value_of(&origin[0]), (1 << 20) as f64);
    drop(prom);
    drop(exporter);
}
