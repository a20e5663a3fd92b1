//! The daemon's life: SIGTERM in the middle of a response, start-up refused for bad
//! configuration or a busy port, and the service over TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dadi_p2p_integration::http::range;
use dadi_p2p_integration::{free_port, Accelerator, ProcessGuard};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::common::{eventually, options, KIB, MIB, PIECE};
use super::registry_with_blob;

const BIN: &str = env!("CARGO_BIN_EXE_dadi-p2p");
/// Bound on any single step of these tests.
const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_response_in_flight_then_exits_zero() {
    let (registry, digest, bytes) = registry_with_blob(None, 3 * MIB as usize, 21).await;
    // 1 MB/s downstream: the 3 MiB answer takes seconds, so SIGTERM lands in the middle.
    let yaml = format!(
        "cache:\n  capacity: {}\n  pieceSize: {PIECE}\nthrottleLimitMB: 1\n",
        64 * MIB
    );
    let mut acc = Accelerator::start(options().config_yaml(yaml)).unwrap();
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
    let mut body = response.into_body();
    let mut got = Vec::with_capacity(bytes.len());
    while got.is_empty() {
        let frame = tokio::time::timeout(STEP, body.frame()).await.unwrap();
        if let Some(data) = frame.unwrap().unwrap().data_ref() {
            got.extend_from_slice(data);
        }
    }

    let pid = acc.pid().unwrap() as libc::pid_t;
    // SAFETY: kill(2) on the daemon this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let at_signal = got.len();
    assert!(at_signal < bytes.len(), "the answer was already complete");

    // The listener closes at once: a new connection is refused while the answer streams on.
    let refused = eventually(Duration::from_secs(10), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "still accepting connections after SIGTERM");

    while let Some(frame) = tokio::time::timeout(STEP, body.frame()).await.unwrap() {
        if let Some(data) = frame.unwrap().data_ref() {
            got.extend_from_slice(data);
        }
    }
    assert_eq!(got.len(), bytes.len());
    assert!(got == bytes, "bytes differ after shutdown began");

    let status = acc.terminate().unwrap();
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
    let cases: [(&str, &[&str]); 5] = [
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

    // The service port taken by someone else.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    std::fs::write(&config, "").unwrap();
    let (status, stderr) = run_to_exit(
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--cache-dir".as_ref(),
            cache.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
        ],
        dir.path(),
    );
    assert!(!status.success());
    assert!(
        stderr.contains(&listen) && stderr.contains("in use"),
        "{stderr:?}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
}

/// A self-signed certificate for 127.0.0.1 made by `openssl`, as `(cert.pem, key.pem)`.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "[req]\ndistinguished_name = dn\nx509_extensions = leaf\nprompt = no\n\
         [dn]\nCN = dadi-p2p test\n\
         [leaf]\nsubjectAltName = IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-config"])
        .arg(&ext)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// One HTTPS GET to the daemon, trusting only `roots`; `None` when the connection fails.
async fn https_get(
    port: u16,
    tls: &tokio_rustls::TlsConnector,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(StatusCode, http::HeaderMap, Bytes)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let stream = tls.connect(name, tcp).await.ok()?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", format!("127.0.0.1:{port}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = tokio::time::timeout(STEP, async {
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .ok()?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some((parts.status, parts.headers, body))
    });
    response.await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_speaks_tls_with_the_given_certificate() {
    let (registry, digest, bytes) = registry_with_blob(None, 500 * KIB as usize + 3, 31).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("cache:\n  capacity: {}\n  pieceSize: {PIECE}\n", 64 * MIB),
    )
    .unwrap();
    let port = free_port().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let mut daemon = ProcessGuard::spawn("dadi-p2p", cmd, dir.path()).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&cert).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client));

    let ready = eventually(Duration::from_secs(30), || {
        assert!(daemon.try_wait().unwrap().is_none(), "{}", daemon.logs());
        let tls = &tls;
        async move {
            https_get(port, tls, "/healthz", &[])
                .await
                .is_some_and(|(status, _, _)| status == StatusCode::OK)
        }
    })
    .await;
    assert!(ready, "no HTTPS answer\n{}", daemon.logs());

    let path = format!("/accelerator/{}", registry.blob_url("app", &digest));
    let (status, headers, body) = https_get(port, &tls, &path, &[("range", &range(1, 300_000))])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        headers["content-range"],
        format!("bytes 1-300000/{}", bytes.len()).as_str()
    );
    assert!(body[..] == bytes[1..=300_000]);
    let (status, _, body) = https_get(port, &tls, &path, &[]).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body[..] == bytes[..]);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain =
        dadi_p2p_integration::http::get(&format!("http://127.0.0.1:{port}/healthz"), &[]).await;
    assert!(plain.is_err(), "{plain:?}");
}
