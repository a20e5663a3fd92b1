//! Self-tests of the harness against the real processes it starts: the registry (with and
//! without auth, skopeo push and monolithic upload), nginx as redirecting front and as caching
//! proxy, Prometheus scraping the registry, and the daemon guard's failure reporting.

use std::path::Path;
use std::time::Duration;

use dadi_p2p_integration::http::{self, range};
use dadi_p2p_integration::load::{self, LoadSpec, Pattern};
use dadi_p2p_integration::{
    build_image, Accelerator, AcceleratorOptions, Compression, Credentials, HarnessError,
    LayerSpec, Nginx, OciImage, Prometheus, Registry, RegistryOptions, ScrapeTarget,
};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const SIGKILL: i32 = 9;

fn small_image(dir: &Path) -> OciImage {
    let layers = [
        LayerSpec {
            size: MIB + 123,
            seed: 1,
            compression: Compression::Gzip,
        },
        LayerSpec {
            size: 3 * MIB,
            seed: 2,
            compression: Compression::None,
        },
    ];
    build_image(dir, "v1", &layers).unwrap()
}

/// A registry (no auth) holding [`small_image`] as `app:v1`, with the layout it came from.
fn registry_with_image() -> (tempfile::TempDir, OciImage, Registry) {
    let layout = tempfile::tempdir().unwrap();
    let image = small_image(layout.path());
    let registry = Registry::start().unwrap();
    registry.push_image(&image, "app").unwrap();
    (layout, image, registry)
}

fn file_range(path: &Path, start: u64, end: u64) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    bytes[start as usize..=end as usize].to_vec()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn assert_manifest_served(base_url: &str, image: &OciImage) {
    let manifest = http::get(
        &format!("{base_url}/v2/app/manifests/{}", image.tag),
        &[("accept", "application/vnd.oci.image.manifest.v1+json")],
    )
    .await
    .unwrap();
    assert_eq!(manifest.status, 200);
    assert_eq!(sha256(&manifest.body), image.manifest.digest);
}

#[tokio::test]
async fn registry_serves_pushed_layers_whole_and_by_range() {
    let (_layout, image, registry) = registry_with_image();

    for layer in &image.layers {
        let url = registry.blob_url("app", &layer.digest);
        let whole = http::get(&url, &[]).await.unwrap();
        assert_eq!(whole.status, 200);
        assert_eq!(whole.body.len() as u64, layer.size);
        assert_eq!(sha256(&whole.body), layer.digest);

        let (start, end) = (100, layer.size - 7);
        let part = http::get(&url, &[("range", &range(start, end))])
            .await
            .unwrap();
        assert_eq!(part.status, 206);
        assert_eq!(
            part.body.as_ref(),
            file_range(&image.blob_path(&layer.digest), start, end)
        );
        let stored = std::fs::read(registry.blob_path(&layer.digest)).unwrap();
        assert_eq!(sha256(&stored), layer.digest);
    }
    assert_manifest_served(&registry.base_url(), &image).await;
}

#[tokio::test]
async fn monolithic_upload_stores_the_exact_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    let content: Vec<u8> = (0..5 * MIB + 11).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let registry = Registry::start().unwrap();
    let blob = registry.upload_blob("raw", &path).await.unwrap();
    assert_eq!(blob.digest, sha256(&content));
    assert_eq!(blob.size, content.len() as u64);
    let head = http::head(&registry.blob_url("raw", &blob.digest), &[])
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(&*content.len().to_string())
    );
}

#[tokio::test]
async fn registry_with_auth_refuses_anonymous_reads() {
    let creds = Credentials::new("puller", "s3cret-pass");
    let registry = Registry::start_with(RegistryOptions {
        auth: Some(creds.clone()),
    })
    .unwrap();
    let layout = tempfile::tempdir().unwrap();
    let image = small_image(layout.path());
    registry.push_image(&image, "private").unwrap();

    let root = format!("{}/v2/", registry.base_url());
    assert_eq!(http::get(&root, &[]).await.unwrap().status, 401);
    let wrong = Credentials::new("puller", "wrong").basic_header();
    assert_eq!(
        http::get(&root, &[("authorization", &wrong)])
            .await
            .unwrap()
            .status,
        401
    );
    let blob = registry.blob_url("private", &image.layers[1].digest);
    assert_eq!(http::get(&blob, &[]).await.unwrap().status, 401);
    let auth = creds.basic_header();
    let got = http::get(&blob, &[("authorization", &auth)]).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(sha256(&got.body), image.layers[1].digest);
}

#[tokio::test]
async fn nginx_front_redirects_blobs_to_storage_urls_that_serve_exact_bytes() {
    let (_layout, image, registry) = registry_with_image();
    let front = Nginx::redirecting_front(&registry).unwrap();
    let layer = &image.layers[1];
    let storage = front.storage_base_url().unwrap();

    let first = http::get(&front.blob_url("app", &layer.digest), &[])
        .await
        .unwrap();
    assert_eq!(first.status, 307);
    let location = first.header("location").unwrap().to_owned();
    let hex = layer.digest.strip_prefix("sha256:").unwrap();
    let expected_prefix = format!(
        "{storage}/docker/registry/v2/blobs/sha256/{}/{hex}/data?",
        &hex[..2]
    );
    assert!(location.starts_with(&expected_prefix), "{location}");
    assert!(location.contains("X-Amz-Expires=300"), "{location}");
    let second = http::get(&front.blob_url("app", &layer.digest), &[])
        .await
        .unwrap();
    let signature = |l: &str| l.split("X-Amz-Signature=").nth(1).unwrap().to_owned();
    assert_ne!(
        signature(&location),
        signature(second.header("location").unwrap())
    );

    let part = http::get(&location, &[("range", &range(MIB - 5, 2 * MIB + 5))])
        .await
        .unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(
        part.body.as_ref(),
        file_range(&image.blob_path(&layer.digest), MIB - 5, 2 * MIB + 5)
    );
    let whole = http::get(&location, &[]).await.unwrap();
    assert_eq!(sha256(&whole.body), layer.digest);
    // Like S3 with a presigned URL, the storage side refuses requests carrying credentials.
    let leaked = http::get(&location, &[("authorization", "Basic dXNlcjpwdw==")])
        .await
        .unwrap();
    assert_eq!(leaked.status, 400);
    // Everything else still reaches the registry.
    assert_manifest_served(&front.base_url(), &image).await;
}

#[tokio::test]
async fn nginx_caching_proxy_serves_exact_ranges_from_its_cache() {
    let (_layout, image, registry) = registry_with_image();
    let cache = Nginx::caching_proxy(&registry, 64 * MIB).unwrap();
    let layer = &image.layers[1];
    let url = cache.blob_url("app", &layer.digest);
    let source = image.blob_path(&layer.digest);
    let ranges = [
        (0, 0),
        (MIB - 10, MIB + 10),
        (5, layer.size - 1),
        (2 * MIB, 2 * MIB + 4095),
    ];

    for &(start, end) in &ranges {
        let got = http::get(&url, &[("range", &range(start, end))])
            .await
            .unwrap();
        assert_eq!(got.status, 206, "{start}-{end}");
        assert_eq!(got.body.as_ref(), file_range(&source, start, end));
    }
    // With the blob gone from the registry, only the cache can answer.
    std::fs::remove_file(registry.blob_path(&layer.digest)).unwrap();
    for &(start, end) in &ranges {
        let got = http::get(&url, &[("range", &range(start, end))])
            .await
            .unwrap();
        assert_eq!(got.status, 206, "{start}-{end}");
        assert_eq!(got.header("x-cache-status"), Some("HIT"));
        assert_eq!(got.body.as_ref(), file_range(&source, start, end));
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_registry_exporter() {
    let registry = Registry::start().unwrap();
    let prometheus =
        Prometheus::start(&[ScrapeTarget::new("registry", &registry.metrics_host())]).unwrap();
    let up = prometheus
        .wait_for("up{job=\"registry\"} == 1", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].labels["instance"], registry.metrics_host());
    assert_eq!(up[0].value, 1.0);
    let goroutines = prometheus
        .query("go_goroutines{job=\"registry\"}")
        .await
        .unwrap();
    assert_eq!(goroutines.len(), 1);
    assert!(goroutines[0].value >= 1.0);
    assert!(prometheus
        .query("up{job=\"nonexistent\"}")
        .await
        .unwrap()
        .is_empty());
}

#[test]
fn accelerator_that_exits_at_start_is_reported_with_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("exits");
    std::fs::write(&fake, "#!/bin/sh\necho \"refusing: $*\" >&2\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = match Accelerator::start(AcceleratorOptions::new(&fake).arg("--piece-size=7")) {
        Ok(_) => panic!("a process that exits cannot be ready"),
        Err(e) => e,
    };
    match &err {
        HarnessError::Exited { status, logs, .. } => {
            assert_eq!(status.code(), Some(3));
            assert!(logs.contains("refusing: --listen 127.0.0.1:"), "{logs}");
            assert!(logs.contains("--cache-dir"), "{logs}");
            assert!(logs.contains("--piece-size=7"), "{logs}");
        }
        other => panic!("unexpected error {other}"),
    }
}

/// A stand-in daemon in Python that takes the same flags as dadi-p2p and answers /healthz;
/// it exercises the launcher's process control, not any dadi-p2p behaviour.
const STAND_IN: &str = r#"#!/usr/bin/env python3
import http.server, os, signal, sys
args = sys.argv[1:]
listen = args[args.index("--listen") + 1]
cache = args[args.index("--cache-dir") + 1]
with open(os.path.join(cache, "starts"), "a") as f:
    f.write(f"{os.getpid()} {' '.join(args)}\n")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
host, port = listen.rsplit(":", 1)
http.server.HTTPServer((host, int(port)), H).serve_forever()
"#;

#[test]
fn launcher_restarts_on_the_same_port_and_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("stand-in");
    std::fs::write(&script, STAND_IN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let opts = AcceleratorOptions::new(&script)
        .config_yaml("cache:\n  capacity: 1Gi\n")
        .arg("--piece-size")
        .arg("1048576");
    let mut acc = Accelerator::start(opts).unwrap();
    let port = acc.port();
    let first_pid = acc.pid().unwrap();
    assert!(acc.peak_rss_kib().unwrap() > 0);
    assert!(acc.cpu_seconds().unwrap() >= 0.0);
    assert_eq!(
        acc.accelerator_url("http://127.0.0.1:1/v2/a/blobs/sha256:00"),
        format!("http://127.0.0.1:{port}/accelerator/http://127.0.0.1:1/v2/a/blobs/sha256:00")
    );

    let status = acc.kill9().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(SIGKILL));
    assert!(acc.pid().is_err());
    acc.restart().unwrap();
    assert_eq!(acc.port(), port);
    assert_ne!(acc.pid().unwrap(), first_pid);
    let status = acc.terminate().unwrap();
    assert_eq!(status.code(), Some(0));
    acc.restart().unwrap();

    let starts = std::fs::read_to_string(acc.cache_dir().join("starts")).unwrap();
    let lines: Vec<&str> = starts.lines().collect();
    assert_eq!(lines.len(), 3, "{starts}");
    for line in &lines {
        assert!(
            line.contains(&format!("--listen 127.0.0.1:{port}")),
            "{line}"
        );
        assert!(line.contains("--config "), "{line}");
        assert!(line.ends_with("--piece-size 1048576"), "{line}");
    }
    let config_arg = lines[0].split("--config ").nth(1).unwrap();
    let config_path = config_arg.split(' ').next().unwrap();
    assert_eq!(
        std::fs::read_to_string(config_path).unwrap(),
        "cache:\n  capacity: 1Gi\n"
    );
}

#[tokio::test]
async fn load_generator_counts_exact_bytes_and_errors() {
    let (_layout, image, registry) = registry_with_image();
    let front = Nginx::redirecting_front(&registry).unwrap();
    let layer = &image.layers[1];
    let spec = LoadSpec {
        url: front.storage_blob_url(&layer.digest).unwrap(),
        headers: Vec::new(),
        blob_size: layer.size,
        pattern: Pattern::Sequential { block: MIB },
        connections: 3,
        requests: 10,
        time_cap: Duration::from_secs(60),
        seed: 1,
    };
    let done = load::run(&spec).await.unwrap();
    assert_eq!((done.requests, done.errors), (10, 0));
    // Three full 1 MiB blocks and the tail, wrapping: 0,1,2,3(tail),0,1,2,3,0,1.
    let tail = layer.size - 3 * MIB;
    assert_eq!(done.bytes, 8 * MIB + 2 * tail);
    assert!(!done.capped);
    assert!(done.p50_us <= done.p99_us && done.p99_us <= done.max_us);

    let random = LoadSpec {
        pattern: Pattern::Random { block: 64 * 1024 },
        requests: 40,
        ..spec.clone()
    };
    let done = load::run(&random).await.unwrap();
    assert_eq!(
        (done.requests, done.errors, done.bytes),
        (40, 0, 40 * 64 * 1024)
    );

    let missing = LoadSpec {
        url: front
            .storage_blob_url(&format!("sha256:{}", "ab".repeat(32)))
            .unwrap(),
        requests: 5,
        ..spec
    };
    let failed = load::run(&missing).await.unwrap();
    assert_eq!((failed.requests, failed.errors, failed.bytes), (0, 5, 0));
}
