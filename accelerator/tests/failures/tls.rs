//! The service over TLS (`--tls-cert`/`--tls-key`), read by a rustls client that trusts only
//! a certificate `openssl` made for the test. The harness probes readiness over plain HTTP,
//! so these tests start the binary themselves and probe over HTTPS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dadi_p2p_integration::http::range;
use dadi_p2p_integration::{free_port, ProcessGuard};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::net::TcpStream;

use super::common::{eventually, KIB, MIB, PIECE};
use super::registry_with_blob;

/// Bound on one HTTPS exchange.
const STEP: Duration = Duration::from_secs(60);

/// A self-signed certificate for 127.0.0.1 made by `openssl`, as `(cert.pem, key.pem)`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
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

/// A daemon serving HTTPS on a free loopback port, and a client that trusts its certificate.
struct TlsDaemon {
    port: u16,
    tls: tokio_rustls::TlsConnector,
    process: ProcessGuard,
    _dir: TempDir,
}

impl TlsDaemon {
    async fn start(extra_yaml: &str) -> TlsDaemon {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "cache:\n  capacity: {}\n  pieceSize: {PIECE}\n{extra_yaml}",
                64 * MIB
            ),
        )
        .unwrap();
        let port = free_port().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dadi-p2p"));
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
        let mut process = ProcessGuard::spawn("dadi-p2p", cmd, dir.path()).unwrap();

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
            assert!(process.try_wait().unwrap().is_none(), "{}", process.logs());
            let tls = &tls;
            async move {
                https_get(port, tls, "/healthz", &[])
                    .await
                    .is_some_and(|(status, _, _)| status == StatusCode::OK)
            }
        })
        .await;
        assert!(ready, "no HTTPS answer\n{}", process.logs());
        TlsDaemon {
            port,
            tls,
            process,
            _dir: dir,
        }
    }

    async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        https_get(self.port, &self.tls, path, headers)
            .await
            .unwrap_or_else(|| panic!("no HTTPS answer for {path}\n{}", self.process.logs()))
    }
}

/// One HTTPS GET to `127.0.0.1:port`; `None` when the connection or the exchange fails.
async fn https_get(
    port: u16,
    tls: &tokio_rustls::TlsConnector,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(StatusCode, http::HeaderMap, Bytes)> {
    let exchange = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let stream = tls.connect(name, tcp).await.ok()?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(connection);
        let mut request = Request::get(path).header("host", format!("127.0.0.1:{port}"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .ok()?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some((parts.status, parts.headers, body))
    };
    tokio::time::timeout(STEP, exchange).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_speaks_tls_with_the_given_certificate() {
    let (registry, digest, bytes) = registry_with_blob(None, 500 * KIB as usize + 3, 31).await;
    let daemon = TlsDaemon::start("").await;

    let path = format!("/accelerator/{}", registry.blob_url("app", &digest));
    let (status, headers, body) = daemon.get(&path, &[("range", &range(1, 300_000))]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        headers["content-range"],
        format!("bytes 1-300000/{}", bytes.len()).as_str()
    );
    assert!(body[..] == bytes[1..=300_000]);
    let (status, _, body) = daemon.get(&path, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body[..] == bytes[..]);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain =
        dadi_p2p_integration::http::get(&format!("http://127.0.0.1:{}/healthz", daemon.port), &[])
            .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_during_the_handshake_cannot_hold_the_service() {
    // One connection at a time: a client that connects and never says hello holds the only
    // permit until the daemon gives up on its handshake.
    let daemon = TlsDaemon::start("service:\n  maxConnections: 1\n").await;
    let silent = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    let (status, _, _) = daemon.get("/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK);
    drop(silent);
}
