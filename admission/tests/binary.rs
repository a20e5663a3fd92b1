//! The `dadi-p2p-admission` binary as deployed: flags, a kubeconfig pointing at the API
//! stand-in served on 127.0.0.1, HTTPS with a test CA. A Deployment-created Pod in a labelled
//! namespace is rewritten, the P2P pull secret appears in the API, and SIGTERM drains and
//! exits cleanly. Started without registries, it says so at start and rewrites nothing.

mod fake_api;
mod tls_client;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use base64::Engine;
use fake_api::FakeApi;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use tls_client::{ca, call, connect, leaf, Ca, Sender};

/// Kills the process if the test ends early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running binary, its log lines and its HTTPS port.
struct Running {
    child: Guard,
    lines: std_mpsc::Receiver<String>,
    port: u16,
    authority: Ca,
    served: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Waits for the next log line containing `needle`; returns it and the lines before it.
    fn wait_for_line(&self, needle: &str) -> (String, Vec<String>) {
        let mut before = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("binary never logged {needle:?}; saw {before:?}"));
            if line.contains(needle) {
                return (line, before);
            }
            before.push(line);
        }
    }

    /// An HTTPS connection that checked the certificate the binary was given.
    async fn connect(&self) -> Sender {
        let (presented, http) = connect(([127, 0, 0, 1], self.port).into(), &self.authority.der)
            .await
            .unwrap();
        assert_eq!(presented, self.served);
        http
    }

    /// SIGTERM, then the drain and a clean exit.
    async fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.0.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        self.wait_for_line("stopped");
        let status = tokio::task::spawn_blocking(move || self.child.0.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

/// Starts the binary against `api` with `args` added; returns once it is listening and
/// watching, with the log lines before "listening".
async fn start(api: &FakeApi, args: &[&str]) -> (Running, Vec<String>) {
    let api_addr = api.serve_http().await;
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\n\
             clusters: [{{name: t, cluster: {{server: 'http://{api_addr}'}}}}]\n\
             users: [{{name: t, user: {{}}}}]\n\
             contexts: [{{name: t, context: {{cluster: t, user: t}}}}]\n"
        ),
    )
    .unwrap();
    let authority = ca("test CA");
    let (cert, key, served) = leaf(&authority);
    std::fs::write(tmp.path().join("tls.crt"), cert).unwrap();
    std::fs::write(tmp.path().join("tls.key"), key).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_dadi-p2p-admission"));
    child
        .arg("--listen=127.0.0.1:0")
        .arg(format!(
            "--tls-cert={}",
            tmp.path().join("tls.crt").display()
        ))
        .arg(format!(
            "--tls-key={}",
            tmp.path().join("tls.key").display()
        ))
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("DADI_P2P_REGISTRIES")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = Guard(child.spawn().unwrap());

    // Log lines, read on a thread; the test waits for the ones it needs.
    let (lines_tx, lines) = std_mpsc::channel::<String>();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut running = Running {
        child,
        lines,
        port: 0,
        authority,
        served,
        _dir: tmp,
    };
    // The port the kernel chose, from the start-up line `... listen=127.0.0.1:PORT ...`.
    let (line, before) = running.wait_for_line("listening");
    running.port = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen=127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    api.wait_for_watch("namespaces").await;
    api.wait_for_watch("secrets").await;
    (running, before)
}

fn labelled_api() -> FakeApi {
    let api = FakeApi::new();
    api.put_namespace(
        "apps",
        json!({"k8s.aliyun.com/image-accelerate-mode": "p2p"}),
    );
    let auths =
        json!({"auths": {"test-registry-vpc.cn-hangzhou.cr.aliyuncs.com": {"auth": "dTpw"}}});
    api.put(json!({
        "metadata": {"name": "test-registry", "namespace": "apps"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(auths.to_string())},
    }));
    api
}

fn deployment_pod() -> Vec<u8> {
    let fixture = format!(
        "{}/tests/fixtures/deployment-pod.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(fixture).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mutates_copies_and_drains() {
    let api = labelled_api();
    let (running, before) = start(&api, &["--registries=*.cr.aliyuncs.com"]).await;
    assert!(
        !before.iter().any(|l| l.contains("WARN")),
        "a listed registry gives no start-up warning: {before:?}"
    );
    let mut http = running.connect().await;
    let (status, body) = call(&mut http, "POST", "/mutate", deployment_pod()).await;
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        out["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    let patch = base64::engine::general_purpose::STANDARD
        .decode(out["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch = String::from_utf8(patch).unwrap();
    assert!(patch.contains("test-registry-vpc.distributed.cn-hangzhou.cr.aliyuncs.com:65001"));
    assert!(patch.contains("acr-credential-test-registry-p2p"));

    api.wait_until("p2p pull secret created", |a| {
        a.get("apps", "acr-credential-test-registry-p2p").is_some()
    })
    .await;
    let copy = api.get("apps", "acr-credential-test-registry-p2p").unwrap();
    let doc = String::from_utf8(copy.data.unwrap()[".dockerconfigjson"].0.clone()).unwrap();
    assert!(
        doc.contains("test-registry-vpc.distributed.cn-hangzhou.cr.aliyuncs.com:65001"),
        "{doc}"
    );

    drop(http);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_registries_it_warns_and_rewrites_nothing() {
    let api = labelled_api();
    let (running, before) = start(&api, &[]).await;
    assert!(
        before
            .iter()
            .any(|l| l.contains("WARN") && l.contains("no registries configured")),
        "{before:?}"
    );
    let mut http = running.connect().await;
    let (status, body) = call(&mut http, "POST", "/mutate", deployment_pod()).await;
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("patch").is_none(), "{out}");
    drop(http);
    running.stop().await;
    assert!(api
        .get("apps", "acr-credential-test-registry-p2p")
        .is_none());
}
