//! The measurement plan, run once against one registry and one blob.
//!
//! 1. Generate a one-layer blob of random bytes and upload it to a fresh registry, once.
//! 2. Baseline: start N daemons without peers, each with an empty cache, and have all of
//!    them read the whole blob at the same moment: sequential 1 MiB ranges on one
//!    connection per daemon, the way overlaybd reads a layer it needs whole.
//! 3. Peers: stop those, start N fresh daemons that list each other as peers (one token
//!    file), and make the same concurrent cold read.
//!
//! Each phase records the blob bytes the registry sent, by the registry's own metrics before
//! and after (nothing a daemon counts can flatter it), the wall time from the first request
//! to the last byte, each node's MB/s, the sum of the daemons' `DADIP2P_Count` of origin
//! and peer bytes, and, once everything is counted, whether each node sends exactly the
//! blob (length and sha256). The registry's storage is in the page cache for both phases.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dadi_p2p_integration::bench::{self, serves_exact_blob};
use dadi_p2p_integration::{free_port, metrics, Accelerator, AcceleratorOptions, Registry};
use serde::Serialize;

use crate::args::Args;
use crate::report::Spread;

const REPO: &str = "bench/peers";
const SEED: u64 = 0x9ee5;
/// The token every daemon of the peer phase shares; only loopback can reach them.
const TOKEN: &str = "dadi-bench-peers";
/// Longest wait for a daemon's downloads to end once its reader has every byte.
const SETTLE: Duration = Duration::from_secs(60);
/// Pause between two looks at a counter that is expected to settle.
const POLL: Duration = Duration::from_millis(100);

/// One phase: N daemons reading the blob at once.
#[derive(Serialize)]
pub struct Phase {
    /// Blob bytes the registry sent during the phase.
    pub registry_bytes: f64,
    pub registry_ratio: f64,
    pub wall_s: f64,
    pub node_mbps: Vec<f64>,
    pub node_mbps_spread: Spread,
    /// Sums over the daemons of `DADIP2P_Count{type="download"}` and `{type="peer"}`.
    pub download_bytes: f64,
    pub peer_bytes: f64,
    /// Whether every node sent exactly the blob when asked for it whole afterwards.
    pub exact_blob: bool,
}

/// Everything measured, as written to JSON.
#[derive(Serialize)]
pub struct Summary {
    pub nodes: usize,
    pub blob_bytes: u64,
    pub piece_size: Option<u64>,
    pub cores: usize,
    pub generator_threads: usize,
    pub read: &'static str,
    pub note: &'static str,
    pub generate_seconds: f64,
    pub push_seconds: f64,
    pub baseline_registry_ratio: f64,
    pub peers_registry_ratio: f64,
    pub baseline_wall_s: f64,
    pub peers_wall_s: f64,
    pub baseline_node_mbps_median: f64,
    pub peers_node_mbps_median: f64,
    pub baseline: Phase,
    pub peers: Phase,
}

pub async fn run(args: &Args) -> Result<Summary> {
    let registry = Registry::start().context("start registry")?;
    let pushed = bench::put_blob(&registry, REPO, args.size, SEED, bench::Push::Upload)
        .await
        .context("put blob")?;
    let blob = &pushed.blob;
    tracing::info!(digest = %blob.digest, bytes = blob.size, "blob in registry");

    let baseline = phase(&registry, blob, args, false)
        .await
        .context("baseline")?;
    let peers = phase(&registry, blob, args, true).await.context("peers")?;
    Ok(Summary {
        nodes: usize::from(args.nodes),
        blob_bytes: blob.size,
        piece_size: args.piece_size,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        generator_threads: args.generator_threads,
        read: "sequential 1 MiB ranges, one connection per node",
        note: "registry, daemons and load generator share the same cores on loopback: \
               throughput is CPU-bound, the registry ratio carries over to a real cluster",
        generate_seconds: pushed.generate_seconds,
        push_seconds: pushed.push_seconds,
        baseline_registry_ratio: baseline.registry_ratio,
        peers_registry_ratio: peers.registry_ratio,
        baseline_wall_s: baseline.wall_s,
        peers_wall_s: peers.wall_s,
        baseline_node_mbps_median: baseline.node_mbps_spread.median,
        peers_node_mbps_median: peers.node_mbps_spread.median,
        baseline,
        peers,
    })
}

/// Starts the daemons, reads the blob through all of them at once, counts, and stops them.
async fn phase(
    registry: &Registry,
    blob: &dadi_p2p_integration::BlobInfo,
    args: &Args,
    with_peers: bool,
) -> Result<Phase> {
    let dir = tempfile::Builder::new()
        .prefix("dadi-bench-peers-")
        .tempdir()?;
    let nodes = start_nodes(args, with_peers.then_some(dir.path()))?;
    let blob_url = registry.blob_url(REPO, &blob.digest);
    let before = registry_blob_bytes(registry).await?;

    let urls: Vec<String> = nodes.iter().map(|n| n.accelerator_url(&blob_url)).collect();
    let cap = Duration::from_secs(args.pass_seconds);
    let started = Instant::now();
    let passes = urls
        .iter()
        .map(|url| bench::sequential_pass(url, blob.size, cap));
    let results = futures_util::future::try_join_all(passes).await?;
    let wall_s = started.elapsed().as_secs_f64();

    let mut download_bytes = 0.0;
    let mut peer_bytes = 0.0;
    for node in &nodes {
        let text = settled_metrics(node).await?;
        download_bytes += metrics::sum(&text, "DADIP2P_Count", &[("type", "download")]);
        peer_bytes += metrics::sum(&text, "DADIP2P_Count", &[("type", "peer")]);
    }
    let registry_bytes = settled_registry_bytes(registry).await? - before;
    let mut exact_blob = true;
    for url in &urls {
        exact_blob &= serves_exact_blob(url, blob).await?;
    }
    let node_mbps: Vec<f64> = results.iter().map(|r| r.mbps).collect();
    let phase = Phase {
        registry_bytes,
        registry_ratio: registry_bytes / blob.size as f64,
        wall_s,
        node_mbps_spread: Spread::of(&node_mbps),
        node_mbps,
        download_bytes,
        peer_bytes,
        exact_blob,
    };
    tracing::info!(
        peers = with_peers,
        registry_ratio = phase.registry_ratio,
        wall_s,
        median_mbps = phase.node_mbps_spread.median,
        exact_blob,
        "phase done"
    );
    Ok(phase)
}

/// `args.nodes` daemons with empty caches; with `token_dir`, listing each other as peers
/// with a token file written there.
fn start_nodes(args: &Args, token_dir: Option<&Path>) -> Result<Vec<Accelerator>> {
    let mut common = format!("cache:\n  capacity: {}\n", args.cache_capacity);
    if let Some(piece) = args.piece_size {
        common.push_str(&format!("  pieceSize: {piece}\n"));
    }
    common.push_str(
        "ExporterConfig:\n  enable: true\n  standaloneExporterPort: false\nthrottleLimitMB: 0\n",
    );
    let mut configs = vec![common.clone(); usize::from(args.nodes)];
    if let Some(dir) = token_dir {
        let token = dir.join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).context("write token file")?;
        let ports = (0..args.nodes)
            .map(|_| free_port())
            .collect::<Result<Vec<u16>, _>>()?;
        let members: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        for (config, port) in configs.iter_mut().zip(&ports) {
            config.push_str(&format!(
                "peer:\n  listen: 127.0.0.1:{port}\n  members: [{}]\n  tokenFile: {}\n",
                members.join(", "),
                token.display()
            ));
        }
    }
    configs
        .into_iter()
        .map(|yaml| {
            let opts = AcceleratorOptions::new(&args.dadi_p2p)
                .env("DADI_P2P_LOG", "warn")
                .config_yaml(yaml);
            Accelerator::start(opts).context("start dadi-p2p")
        })
        .collect()
}

/// The daemon's `/metrics` once it has no download in flight, so that every piece it
/// fetched is counted.
async fn settled_metrics(node: &Accelerator) -> Result<String> {
    let url = format!("{}/metrics", node.base_url());
    let deadline = Instant::now() + SETTLE;
    loop {
        let text = metrics::scrape(&url).await?;
        if metrics::sum(&text, "dadi_p2p_inflight_downloads", &[]) == 0.0 {
            return Ok(text);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "downloads of {url} still in flight"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Blob bytes the registry has sent, by its own metrics.
async fn registry_blob_bytes(registry: &Registry) -> Result<f64> {
    let url = format!("http://{}/metrics", registry.metrics_host());
    let text = metrics::scrape(&url).await?;
    Ok(metrics::sum(
        &text,
        "registry_http_response_size_bytes_sum",
        &[("handler", "blob")],
    ))
}

/// [`registry_blob_bytes`] once two looks in a row agree: the registry records a response
/// when its handler returns, which may be a moment after the reader had the last byte.
async fn settled_registry_bytes(registry: &Registry) -> Result<f64> {
    let deadline = Instant::now() + SETTLE;
    let mut last = registry_blob_bytes(registry).await?;
    loop {
        tokio::time::sleep(POLL).await;
        let now = registry_blob_bytes(registry).await?;
        if now == last || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}
