//! The `dadi-p2p-admission` binary as deployed: flags, a kubeconfig pointing at the API
//! stand-in served on 127.0.0.1, HTTPS with a test CA. A Deployment-created Pod in a labelled
//! namespace is rewritten, the P2P pull secret appears in the API, and SIGTERM drains and
//! exits cleanly.

mod fake_api;
mod tls_client;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use base64::Engine;
use fake_api::FakeApi;
use serde_json::{json, Value};
use tls_client::{ca, call, connect, leaf};

/// Kills the process if the test ends early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mutates_copies_and_drains() {
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

    let child = Command::new(env!("CARGO_BIN_EXE_dadi-p2p-admission"))
        .arg("--listen=127.0.0.1:0")
        .arg(format!(
            "--tls-cert={}",
            tmp.path().join("tls.crt").display()
        ))
        .arg(format!(
            "--tls-key={}",
            tmp.path().join("tls.key").display()
        ))
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Guard(child);

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
    let wait_for_line = |needle: &str| loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("binary never logged {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    };
    // The port the kernel chose, from the start-up line `... listen=127.0.0.1:PORT ...`.
    let line = wait_for_line("listening");
    let port: u16 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen=127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    api.wait_for_watch("namespaces").await;
    api.wait_for_watch("secrets").await;

    let (presented, mut http) = connect(([127, 0, 0, 1], port).into(), &authority.der)
        .await
        .unwrap();
    assert_eq!(presented, served);
    let fixture = format!(
        "{}/tests/fixtures/deployment-pod.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let review = std::fs::read(fixture).unwrap();
    let (status, body) = call(&mut http, "POST", "/mutate", review).await;
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
    let pid = libc::pid_t::try_from(child.0.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_for_line("stopped");
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}
