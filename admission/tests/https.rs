//! The server end to end over HTTPS on 127.0.0.1:0, called the way the API server calls it:
//! TLS verified against the CA that would sit in `caBundle`, server name of the Service,
//! `POST /mutate` with an AdmissionReview. The certificate is rotated on disk the way the
//! kubelet updates a Secret volume (a new directory behind an atomically swapped symlink).

mod tls_client;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use dadi_p2p_admission::config::Settings;
use dadi_p2p_admission::metrics::Metrics;
use dadi_p2p_admission::server::{self, App};
use dadi_p2p_admission::tls::ReloadingCert;
use dadi_p2p_admission::webhook::Webhook;
use serde_json::{json, Value};
use tls_client::{ca, call, connect, leaf};
use tokio::sync::oneshot;

/// Writes a pair the way the kubelet lays out a Secret volume.
fn publish(dir: &Path, version: &str, cert: &str, key: &str) {
    let data = dir.join(version);
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), cert).unwrap();
    std::fs::write(data.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if !dir.join(f).exists() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    metrics: Metrics,
}

async fn start(dir: &Path) -> Running {
    let metrics = Metrics::new();
    let cert =
        ReloadingCert::new(dir.join("tls.crt"), dir.join("tls.key"), metrics.clone()).unwrap();
    let labels = BTreeMap::from([(
        "apps".to_string(),
        BTreeMap::from([(
            "k8s.aliyun.com/image-accelerate-mode".to_string(),
            "p2p".to_string(),
        )]),
    )]);
    let hook = Webhook::new(
        Arc::new(Settings {
            registries: Settings::parse_registries("*.example.com").unwrap(),
            ..Settings::default()
        }),
        Arc::new(labels),
        None,
        metrics.clone(),
    );
    let app = Arc::new(App {
        webhook: hook,
        metrics: metrics.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let config = Arc::new(Arc::new(cert).server_config());
    let task = tokio::spawn(server::serve(listener, config, app, async {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
        metrics,
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn review() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "e2e-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "apps",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-", "namespace": "apps"},
                "spec": {"containers": [{"name": "web", "image": "reg.example.com/ns/web:1"}]}
            }
        }
    }))
    .unwrap()
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().to_path_buf();
    (t, p)
}

#[tokio::test]
async fn mutate_over_https_and_follow_rotation() {
    let (_guard, dir) = tempdir();
    let first_ca = ca("first CA");
    let (cert, key, first_der) = leaf(&first_ca);
    publish(&dir, "..v1", &cert, &key);
    let mut running = start(&dir).await;

    let (presented, mut http) = connect(running.addr, &first_ca.der).await.unwrap();
    assert_eq!(presented, first_der);
    let (status, body) = call(&mut http, "POST", "/mutate", review()).await;
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["response"]["uid"], "e2e-1");
    assert_eq!(out["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(out["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert!(patch
        .to_string()
        .contains("reg.distributed.example.com:65001/ns/web:1"));

    assert_eq!(
        call(&mut http, "GET", "/healthz", vec![]).await,
        (200, Bytes::from("ok\n"))
    );
    assert_eq!(call(&mut http, "GET", "/nope", vec![]).await.0, 404);
    assert_eq!(call(&mut http, "GET", "/mutate", vec![]).await.0, 405);
    let (status, garbage) = call(&mut http, "POST", "/mutate", b"\x00garbage".to_vec()).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&garbage).unwrap()["response"]["allowed"],
        true
    );
    let (_, metrics) = call(&mut http, "GET", "/metrics", vec![]).await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("dadi_p2p_admission_reviews_total{outcome=\"mutated\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("dadi_p2p_admission_images_rewritten_total 1"));
    assert!(
        metrics.contains("dadi_p2p_admission_review_seconds_count 2"),
        "{metrics}"
    );

    // Rotation to a certificate from a new CA: the next connection gets it.
    let second_ca = ca("second CA");
    let (cert, key, second_der) = leaf(&second_ca);
    publish(&dir, "..v2", &cert, &key);
    let (presented, mut http2) = connect(running.addr, &second_ca.der).await.unwrap();
    assert_eq!(presented, second_der);
    assert_eq!(call(&mut http2, "POST", "/mutate", review()).await.0, 200);
    assert!(
        connect(running.addr, &first_ca.der).await.is_err(),
        "old CA no longer trusted"
    );

    // A broken pair is refused and the last good one kept.
    let (other_cert, _, _) = leaf(&second_ca);
    let (_, mismatched_key, _) = leaf(&second_ca);
    publish(&dir, "..v3", &other_cert, &mismatched_key);
    let (presented, _) = connect(running.addr, &second_ca.der).await.unwrap();
    assert_eq!(presented, second_der);
    let (_, metrics) = call(&mut http2, "GET", "/metrics", vec![]).await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("dadi_p2p_admission_certificate_reloads_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("dadi_p2p_admission_certificate_reloads_total{outcome=\"failed\"} 1"));
    assert!(running.metrics.encode().contains("outcome=\"failed\""));

    drop(http);
    drop(http2);
    running.stop.take().unwrap().send(()).unwrap();
    (&mut running.task).await.unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (_guard, dir) = tempdir();
    let ca = ca("CA");
    let (cert, key, _) = leaf(&ca);
    publish(&dir, "..v1", &cert, &key);
    let running = start(&dir).await;
    let (_, mut http) = connect(running.addr, &ca.der).await.unwrap();
    let (status, _) = call(
        &mut http,
        "POST",
        "/mutate",
        vec![b' '; server::MAX_BODY + 1],
    )
    .await;
    assert_eq!(status, 413);
}

#[test]
fn start_fails_on_a_missing_or_broken_pair() {
    let (_guard, dir) = tempdir();
    let err =
        ReloadingCert::new(dir.join("tls.crt"), dir.join("tls.key"), Metrics::new()).unwrap_err();
    assert!(err.to_string().contains("tls.crt"), "{err}");
    std::fs::write(dir.join("tls.crt"), "not pem").unwrap();
    std::fs::write(dir.join("tls.key"), "not pem").unwrap();
    let err =
        ReloadingCert::new(dir.join("tls.crt"), dir.join("tls.key"), Metrics::new()).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}
