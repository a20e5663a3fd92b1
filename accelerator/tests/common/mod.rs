//! Shared set-up for the daemon's end-to-end tests: a real registry with a pushed image, and
//! the `dadi-p2p` binary of this build started against it.

#![allow(dead_code)]

pub mod upstream;

use std::path::Path;
use std::time::Duration;

use dadi_p2p_integration::http;
use dadi_p2p_integration::{
    build_image, Accelerator, AcceleratorOptions, Compression, LayerSpec, OciImage, Registry,
};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;

/// Small pieces so that small layers span many of them.
pub const PIECE: u64 = 64 * KIB;

pub fn options() -> AcceleratorOptions {
    AcceleratorOptions::new(env!("CARGO_BIN_EXE_dadi-p2p"))
}

/// Config for tests: small pieces, metrics on the service port, no throughput cap.
pub fn config(extra: &str) -> String {
    config_with("", extra)
}

/// [`config`] with further lines under `cache:` (indented by two spaces).
pub fn config_with(cache_extra: &str, extra: &str) -> String {
    format!(
        "cache:\n  capacity: {}\n  pieceSize: {PIECE}\n{cache_extra}\
         ExporterConfig:\n  enable: true\n  standaloneExporterPort: false\n\
         throttleLimitMB: 0\n{extra}",
        256 * MIB,
    )
}

pub struct World {
    pub layout: tempfile::TempDir,
    pub image: OciImage,
    pub registry: Registry,
}

impl World {
    /// A registry holding `app:v1` with an uncompressed layer of 1 MiB + 123 bytes and a gzip one.
    pub fn new() -> World {
        let layout = tempfile::tempdir().unwrap();
        let layers = [
            LayerSpec {
                size: MIB + 123,
                seed: 7,
                compression: Compression::None,
            },
            LayerSpec {
                size: 300 * KIB,
                seed: 8,
                compression: Compression::Gzip,
            },
        ];
        let image = build_image(layout.path(), "v1", &layers).unwrap();
        let registry = Registry::start().unwrap();
        registry.push_image(&image, "app").unwrap();
        World {
            layout,
            image,
            registry,
        }
    }

    pub fn layer(&self, i: usize) -> (String, Vec<u8>) {
        let info = &self.image.layers[i];
        (
            info.digest.clone(),
            std::fs::read(self.image.blob_path(&info.digest)).unwrap(),
        )
    }

    pub fn blob_url(&self, digest: &str) -> String {
        self.registry.blob_url("app", digest)
    }

    pub fn start(&self, yaml: &str) -> Accelerator {
        Accelerator::start(options().config_yaml(yaml)).unwrap()
    }
}

/// One sample of the daemon's /metrics, by family name and label subset.
pub async fn metric(acc: &Accelerator, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let body = http::get(&format!("{}/metrics", acc.base_url()), &[])
        .await
        .unwrap();
    assert_eq!(body.status, 200);
    let text = String::from_utf8(body.body.to_vec()).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, rest) = line.split_once(' ')?;
            let (family, label_text) = match series.split_once('{') {
                Some((f, l)) => (f, l.trim_end_matches('}')),
                None => (series, ""),
            };
            if family != name {
                return None;
            }
            let all_match = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            if !all_match {
                return None;
            }
            rest.split_whitespace().next()?.parse().ok()
        })
}

/// Whether the daemon's piece downloads have all ended within `timeout`: then every piece
/// it fetched is committed and its audit lines written.
pub async fn downloads_settled(acc: &Accelerator, timeout: Duration) -> bool {
    eventually(timeout, || async {
        metric(acc, "dadi_p2p_inflight_downloads", &[]).await == Some(0.0)
    })
    .await
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn piece_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The daemon's whole stdout and stderr as written so far (also after it stopped), unlike
/// `Accelerator::logs`, which shows a tail and nothing once the process is gone.
pub fn full_output(acc: &Accelerator) -> (String, String) {
    let read = |name: &str| std::fs::read_to_string(acc.dir().join(name)).unwrap_or_default();
    (read("dadi-p2p.out"), read("dadi-p2p.err"))
}

/// `GET` of the inclusive byte range `start..=end` through the daemon; panics unless 206.
pub async fn read_range(acc: &Accelerator, blob_url: &str, start: u64, end: u64) -> Vec<u8> {
    let range = http::range(start, end);
    let resp = http::get(&acc.accelerator_url(blob_url), &[("Range", &range)])
        .await
        .unwrap();
    assert_eq!(resp.status, 206, "{blob_url} {range}: {:?}", resp.body);
    resp.body.to_vec()
}

/// `(offset, length)` of every piece of a `size`-byte blob that `start..=end` touches: what a
/// cold read of that span fetches from the origin when read-ahead is off.
pub fn pieces_of(size: u64, start: u64, end: u64) -> Vec<(u64, u64)> {
    (start / PIECE..=end / PIECE)
        .map(|i| (i * PIECE, PIECE.min(size - i * PIECE)))
        .collect()
}

/// Deterministic bytes that do not repeat within a piece (xorshift).
pub fn blob_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
