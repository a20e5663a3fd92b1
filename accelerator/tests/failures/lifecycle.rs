//! The daemon's life: SIGTERM or SIGINT in the middle of a response, and start-up refused
//! for bad configuration, a busy port, a cache directory it cannot use or a missing
//! certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dadi_p2p_integration::{free_port, Accelerator, ProcessGuard};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::common::{eventually, options, MIB, PIECE};
use super::{registry_with_blob, KillOnDrop};

const BIN: &str = env!("CARGO_BIN_EXE_dadi-p2p");
/// Bound on any single step of these tests.
const STEP: Duration = Duration::from_secs(60);

/// A daemon in the middle of a slow whole-blob answer: 1 MB/s downstream for a 3 MiB blob,
/// so a signal sent now lands seconds before the answer would end.
struct Streaming {
    acc: Accelerator,
    addr: SocketAddr,
    bytes: Vec<u8>,
    body: hyper::body::Incoming,
    got: Vec<u8>,
    _registry: dadi_p2p_integration::Registry,
}

impl Streaming {
    async fn start(extra_yaml: &str) -> Streaming {
        let (registry, digest, bytes) = registry_with_blob(None, 3 * MIB as usize, 21).await;
        let yaml = format!(
            "cache:\n  capacity: {}\n  pieceSize: {PIECE}\nthrottleLimitMB: 1\n{extra_yaml}",
            64 * MIB
        );
        let acc = Accelerator::start(options().config_yaml(yaml)).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], acc.port()).into();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let request = Request::get(format!(
            "/accelerator/{}",
            registry.blob_url("app", &digest)
        ))
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
        let response = tokio::time::timeout(STEP, sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut streaming = Streaming {
            acc,
            addr,
            bytes,
            body: response.into_body(),
            got: Vec::new(),
            _registry: registry,
        };
        while streaming.got.is_empty() {
            let frame = tokio::time::timeout(STEP, streaming.body.frame())
                .await
                .unwrap();
            if let Some(data) = frame.unwrap().unwrap().data_ref() {
                streaming.got.extend_from_slice(data);
            }
        }
        streaming
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.acc.pid().unwrap() as libc::pid_t;
        // SAFETY: kill(2) on the daemon this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        assert!(
            self.got.len() < self.bytes.len(),
            "the answer was complete before the signal"
        );
    }

    /// Reads the rest of the body; `Err` when the connection broke off before its end.
    async fn finish(&mut self) -> Result<(), hyper::Error> {
        while let Some(frame) = tokio::time::timeout(STEP, self.body.frame()).await.unwrap() {
            if let Some(data) = frame?.data_ref() {
                self.got.extend_from_slice(data);
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_response_in_flight_then_exits_zero() {
    let mut s = Streaming::start("").await;
    s.signal(libc::SIGTERM);

    // The listener closes at once: a new connection is refused while the answer streams on.
    let addr = s.addr;
    let refused = eventually(Duration::from_secs(10), || async move {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "still accepting connections after SIGTERM");

    s.finish().await.unwrap();
    assert_eq!(s.got.len(), s.bytes.len());
    assert!(s.got == s.bytes, "bytes differ after shutdown began");
    let status = s.acc.terminate().unwrap();
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(s.acc.dir().join("dadi-p2p.err")).unwrap();
    assert!(log.contains("cache index flushed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_for_the_grace_period_only() {
    // Far less grace than the answer needs: it is cut when the grace is over, and the daemon
    // still stops cleanly instead of waiting for it.
    let mut s = Streaming::start("service:\n  graceMs: 300\n").await;
    s.signal(libc::SIGINT);
    let ended = s.finish().await;
    assert!(
        ended.is_err() && s.got.len() < s.bytes.len(),
        "{} of {} bytes, {ended:?}",
        s.got.len(),
        s.bytes.len()
    );
    assert!(
        s.got[..] == s.bytes[..s.got.len()],
        "the bytes sent were wrong"
    );
    let status = s.acc.terminate().unwrap();
    assert!(status.success(), "exit status {status}");
}

/// Runs the daemon with `args` and returns how it exited and what it wrote to stderr; kills
/// it if it has not exited after a bounded time.
fn run_to_exit(args: &[&std::ffi::OsStr], dir: &Path) -> (ExitStatus, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("DADI_P2P_CONFIG");
    let mut process = ProcessGuard::spawn("dadi-p2p", cmd, dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = process.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running with {args:?}\n{}",
            process.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(dir.join("dadi-p2p.err")).unwrap_or_default();
    std::fs::remove_file(dir.join("dadi-p2p.err")).unwrap();
    (status, stderr)
}

#[test]
fn bad_configuration_stops_the_daemon_at_start_naming_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = dir.path().join("config.yaml");
    let token = dir.path().join("token");
    std::fs::write(&token, "t\u{f6}ken\n").unwrap();
    let peers = format!(
        "peer:\n  members: [\"127.0.0.1:1\"]\n  tokenFile: {}\n",
        token.display()
    );
    let missing = "peer:\n  members: [\"127.0.0.1:1\"]\n  tokenFile: /nonexistent/token\n";
    let cases: [(&str, &[&str]); 7] = [
        (&peers, &["peer.tokenFile", "printable ASCII"]),
        (missing, &["peer.tokenFile", "/nonexistent/token"]),
        ("cache:\n  capasity: 1\n", &["capasity"]),
        ("DeployConfig:\n  mode: leaf\n", &["mode", "leaf"]),
        (
            "cache:\n  pieceSize: 3000000\n",
            &["cache.pieceSize", "3000000"],
        ),
        (
            "service:\n  listen: \"nowhere:port\"\n",
            &["service.listen", "nowhere:port"],
        ),
        ("throttleLimitMB: lots\n", &["throttleLimitMB", "lots"]),
    ];
    for (yaml, expected) in cases {
        std::fs::write(&config, yaml).unwrap();
        let (status, stderr) = run_to_exit(
            &[
                "--config".as_ref(),
                config.as_os_str(),
                "--cache-dir".as_ref(),
                cache.as_os_str(),
            ],
            dir.path(),
        );
        assert!(!status.success(), "{yaml:?} was accepted");
        for word in expected {
            assert!(
                stderr.contains(word),
                "{yaml:?}: {word:?} not in {stderr:?}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !cache.exists(),
            "{yaml:?}: cache created before the config was checked"
        );
    }

    // The service port taken by someone else, a cache directory that cannot be made, and
    // a certificate that is not there: each named in one line.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, "").unwrap();
    let bad_cache = not_a_dir.join("cache");
    let missing_cert = dir.path().join("missing-cert.pem");
    let free = format!("127.0.0.1:{}", free_port().unwrap());
    std::fs::write(&config, "").unwrap();
    let runs: [(Vec<&std::ffi::OsStr>, Vec<String>); 3] = [
        (
            vec!["--listen".as_ref(), listen.as_ref()],
            vec![listen.clone(), "in use".into()],
        ),
        (
            vec![
                "--listen".as_ref(),
                free.as_ref(),
                "--cache-dir".as_ref(),
                bad_cache.as_os_str(),
            ],
            vec!["cache.dir".into(), bad_cache.display().to_string()],
        ),
        (
            vec![
                "--listen".as_ref(),
                free.as_ref(),
                "--tls-cert".as_ref(),
                missing_cert.as_os_str(),
                "--tls-key".as_ref(),
                missing_cert.as_os_str(),
            ],
            vec![missing_cert.display().to_string()],
        ),
    ];
    for (extra, expected) in runs {
        let mut args: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), config.as_os_str()];
        args.extend(extra);
        if !args.contains(&"--cache-dir".as_ref()) {
            args.extend(["--cache-dir".as_ref(), cache.as_os_str()]);
        }
        let (status, stderr) = run_to_exit(&args, dir.path());
        assert!(!status.success(), "{args:?} started");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("dadi-p2p: "))
            .unwrap_or_else(|| panic!("no error line in {stderr:?}"));
        for word in &expected {
            assert!(line.contains(word.as_str()), "{word:?} not in {line:?}");
        }
        assert!(
            line.matches("os error").count() <= 1,
            "repeated cause: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_daemon_even_when_nobody_reads_its_audit_stdout() {
    let (registry, digest, _) = registry_with_blob(None, 64 * 1024, 43).await;
    let blob = registry.blob_url("app", &digest);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "DeployConfig:\n  logAudit: true\n  logAuditMode: stdout\nservice:\n  graceMs: 500\n",
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    // Standard output is a pipe this test holds and never reads: once its buffer is full,
    // every write of the audit writer blocks for good.
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env_remove("DADI_P2P_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    dadi_p2p_integration::wait_ready(&format!("http://{addr}/healthz"), STEP).unwrap();

    // Far more audit lines than a pipe buffer (64 KiB) holds.
    let mut conn = dadi_p2p_integration::http::Conn::connect(addr)
        .await
        .unwrap();
    let path = format!("/accelerator/{blob}");
    for _ in 0..2000 {
        let r = conn.get(&path, &[("range", "bytes=0-0")]).await.unwrap();
        assert_eq!(r.status, 206);
    }
    drop(conn);

    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after SIGTERM with its audit output stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    let len = 16 * MIB as usize;
    let (registry, digest, _) = registry_with_blob(None, len, 47).await;
    let yaml = format!(
        "cache:\n  capacity: {}\n  pieceSize: {PIECE}\nthrottleLimitMB: 0\n\
         service:\n  writeTimeoutMs: 300\n",
        256 * MIB
    );
    let acc = Accelerator::start(options().config_yaml(yaml)).unwrap();
    let url = acc.accelerator_url(&registry.blob_url("app", &digest));
    let path = &url[acc.base_url().len()..];

    // A small receive buffer: the daemon's writes stop being taken after a few MiB.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: SocketAddr = acc.base_url()["http://".len()..].parse().unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    // Reads nothing for far longer than the write timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut got = Vec::new();
    let read = tokio::time::timeout(
        STEP,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut got),
    )
    .await
    .expect("the connection was neither cut off nor finished");
    assert!(
        got.len() < len,
        "the whole body arrived ({} bytes, {read:?}): the stalled client was never cut off",
        got.len()
    );
}
