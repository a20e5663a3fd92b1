//! The measurement plan, run once against one registry and one blob.
//!
//! 1. Generate a one-layer image of random bytes and put it into a fresh registry.
//! 2. Direct: read the blob straight from the registry, sequential 1 MiB ranges over one
//!    connection (what overlaybd does for a cold layer), and as one plain GET.
//! 3. Cold: the same sequential pass through a freshly started dadi-p2p (empty cache); the
//!    ratio to the direct pass is `cold_vs_direct`.
//! 4. The same pass through nginx's caching proxy, which also warms its cache.
//! 5. Warm matrix: random 64 KiB and sequential 1 MiB ranges over 1/16/64 keep-alive
//!    connections, through dadi-p2p, through nginx's cache, and from nginx serving the file
//!    statically. The static row is the load generator's ceiling: if dadi-p2p and the cache
//!    proxy stay below it, the generator is not what limits them.
//! 6. Peak RSS and CPU seconds per GiB served, from procfs.
//!
//! Generator and servers share the machine's cores, which the summary records.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dadi_p2p_integration::bench::{self, serves_exact_blob};
use dadi_p2p_integration::http;
use dadi_p2p_integration::load::{self, LoadResult, LoadSpec, Pattern};
use dadi_p2p_integration::{cpu_seconds, Accelerator, AcceleratorOptions, Nginx, Registry};
use serde::Serialize;

use crate::args::Args;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;
const REPO: &str = "bench/blob";
/// Time cap of a whole-blob pass (cold or direct); a pass that slow is worth reporting anyway.
const PASS_CAP: Duration = Duration::from_secs(600);
const SEED: u64 = 0x5eed;

/// Everything measured, as written to JSON.
#[derive(Serialize)]
pub struct Summary {
    pub blob_size: u64,
    pub piece_size: Option<u64>,
    pub throttle_mb: u64,
    pub cache_capacity: u64,
    pub cores: usize,
    pub generator_threads: usize,
    pub note: String,
    pub generate_seconds: f64,
    pub push: String,
    pub push_seconds: f64,
    pub direct_mbps: f64,
    pub direct_get_mbps: f64,
    /// A warm plain GET of the whole blob through dadi-p2p.
    pub warm_get_mbps: Option<f64>,
    /// Whether dadi-p2p served the whole blob with the right digest at the end of the run.
    pub dadi_exact_blob: Option<bool>,
    pub cold_mbps: Option<f64>,
    pub cold_vs_direct: Option<f64>,
    pub nginx_cold_mbps: f64,
    pub nginx_cold_vs_direct: f64,
    pub headline_connections: usize,
    pub warm_1m_mbps: Option<f64>,
    pub nginx_1m_mbps: Option<f64>,
    pub static_1m_mbps: Option<f64>,
    pub warm_64k_p99_us: Option<u64>,
    pub nginx_64k_p99_us: Option<u64>,
    pub static_64k_p99_us: Option<u64>,
    pub peak_rss_mib: Option<f64>,
    pub cpu_seconds_per_gib_cold: Option<f64>,
    pub cpu_seconds_per_gib_warm: Option<f64>,
    /// Random 64 KiB reads on one connection against a dadi-p2p with an empty cache (what
    /// overlaybd's lazy reads meet on a fresh node), and the same reads straight from the
    /// registry.
    pub cold_64k: Option<LoadResult>,
    pub direct_64k: LoadResult,
    /// Sequential 64 KiB reads from the start of the blob on one connection against a
    /// dadi-p2p with an empty cache (overlaybd reading a compressed layer front to back on a
    /// fresh node), and the same reads straight from the registry.
    pub cold_seq_64k: Option<LoadResult>,
    pub direct_seq_64k: LoadResult,
    /// The first read of a layer as overlaybd makes it: the `bytes=0-0` size probe, then
    /// 64 KiB at offset 0 on the same connection; microseconds from the probe's request to
    /// the read's last byte, p50 and max over [`FIRST_READS`] fresh dadi-p2p daemons, and
    /// straight from the registry.
    pub cold_first_64k_us: Option<(u64, u64)>,
    pub direct_first_64k_us: (u64, u64),
    pub matrix: Vec<Cell>,
}

/// One cell of the warm matrix.
#[derive(Serialize)]
pub struct Cell {
    pub target: &'static str,
    pub pattern: &'static str,
    pub connections: usize,
    /// CPU seconds the load generator itself used during the cell.
    pub generator_cpu_seconds: f64,
    #[serde(flatten)]
    pub result: LoadResult,
}

struct Target {
    name: &'static str,
    url: String,
}

pub async fn run(args: &Args) -> Result<Summary> {
    let registry = Registry::start().context("start registry")?;
    let pushed = bench::put_blob(&registry, REPO, args.size, SEED, args.push)
        .await
        .context("put blob")?;
    let (blob, generate_seconds, push_seconds) =
        (pushed.blob, pushed.generate_seconds, pushed.push_seconds);
    tracing::info!(digest = %blob.digest, bytes = blob.size, "blob in registry");
    let direct_url = registry.blob_url(REPO, &blob.digest);
    let front = Nginx::redirecting_front(&registry).context("start nginx front")?;
    let cache =
        Nginx::caching_proxy(&registry, 2 * blob.size + 64 * MIB).context("start nginx cache")?;

    let direct = pass(&direct_url, blob.size).await?;
    let direct_get_mbps = plain_get(&direct_url, blob.size).await?;
    tracing::info!(mbps = direct.mbps, get_mbps = direct_get_mbps, "direct");

    let accelerator = match &args.dadi_p2p {
        Some(bin) => Some(start_accelerator(bin, args)?),
        None => None,
    };
    let mut cold = None;
    if let Some(acc) = &accelerator {
        let cpu = acc.cpu_seconds()?;
        let result = pass(&acc.accelerator_url(&direct_url), blob.size).await?;
        let cpu_per_gib = (acc.cpu_seconds()? - cpu) / (result.bytes as f64 / GIB);
        tracing::info!(mbps = result.mbps, cpu_per_gib, "cold through dadi-p2p");
        cold = Some((result, cpu_per_gib));
    }
    let nginx_url = cache.blob_url(REPO, &blob.digest);
    let nginx_cold = pass(&nginx_url, blob.size).await?;
    tracing::info!(mbps = nginx_cold.mbps, "cold through nginx cache");

    let mut targets = Vec::new();
    if let Some(acc) = &accelerator {
        targets.push(Target {
            name: "dadi-p2p",
            url: acc.accelerator_url(&direct_url),
        });
    }
    targets.push(Target {
        name: "nginx-cache",
        url: nginx_url,
    });
    targets.push(Target {
        name: "nginx-static",
        url: front
            .storage_blob_url(&blob.digest)
            .context("front has a storage URL")?,
    });
    let acc_cpu_before = match &accelerator {
        Some(acc) => Some(acc.cpu_seconds()?),
        None => None,
    };
    let matrix = warm_matrix(&targets, blob.size, args).await?;
    let cpu_seconds_per_gib_warm = match (&accelerator, acc_cpu_before) {
        (Some(acc), Some(before)) => {
            let served: u64 = matrix
                .iter()
                .filter(|c| c.target == "dadi-p2p")
                .map(|c| c.result.bytes)
                .sum();
            Some((acc.cpu_seconds()? - before) / (served as f64 / GIB))
        }
        _ => None,
    };
    // The whole blob once more through dadi-p2p, warm: timed, then checked by digest.
    let (warm_get_mbps, exact_blob) = match &accelerator {
        Some(acc) => {
            let url = acc.accelerator_url(&direct_url);
            let mbps = plain_get(&url, blob.size).await?;
            (Some(mbps), Some(serves_exact_blob(&url, &blob).await?))
        }
        None => (None, None),
    };
    let peak_rss_mib = match &accelerator {
        Some(acc) => Some(acc.peak_rss_kib()? as f64 / 1024.0),
        None => None,
    };
    drop(accelerator);

    let direct_64k = cold_random(&direct_url, blob.size).await?;
    let cold_64k = match &args.dadi_p2p {
        Some(bin) => {
            let fresh = start_accelerator(bin, args)?;
            Some(cold_random(&fresh.accelerator_url(&direct_url), blob.size).await?)
        }
        None => None,
    };
    tracing::info!(
        direct_p50_us = direct_64k.p50_us,
        cold_p50_us = cold_64k.as_ref().map(|r| r.p50_us),
        "cold random 64 KiB"
    );
    let direct_seq_64k = cold_sequential(&direct_url, blob.size).await?;
    let cold_seq_64k = match &args.dadi_p2p {
        Some(bin) => {
            let fresh = start_accelerator(bin, args)?;
            Some(cold_sequential(&fresh.accelerator_url(&direct_url), blob.size).await?)
        }
        None => None,
    };
    let direct_first_64k_us = first_reads(&direct_url, || Ok(None)).await?;
    let cold_first_64k_us = match &args.dadi_p2p {
        Some(bin) => {
            Some(first_reads(&direct_url, || start_accelerator(bin, args).map(Some)).await?)
        }
        None => None,
    };
    tracing::info!(
        direct_p99_us = direct_seq_64k.p99_us,
        cold_p99_us = cold_seq_64k.as_ref().map(|r| r.p99_us),
        "cold sequential 64 KiB"
    );

    let pick = |target: &str, pattern: &str| {
        matrix.iter().find(|c| {
            c.target == target && c.pattern == pattern && c.connections == args.headline_connections
        })
    };
    let mbps = |t: &str| pick(t, "seq1m").map(|c| c.result.mbps);
    let p99 = |t: &str| pick(t, "rand64k").map(|c| c.result.p99_us);
    Ok(Summary {
        blob_size: blob.size,
        piece_size: args.piece_size,
        throttle_mb: args.throttle_mb,
        cache_capacity: args.cache_capacity,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        generator_threads: args.generator_threads,
        note: "load generator and servers share the same cores on loopback; nginx-static is \
               the generator's ceiling"
            .into(),
        generate_seconds,
        push: format!("{:?}", args.push).to_lowercase(),
        push_seconds,
        direct_mbps: direct.mbps,
        direct_get_mbps,
        warm_get_mbps,
        dadi_exact_blob: exact_blob,
        cold_mbps: cold.as_ref().map(|(r, _)| r.mbps),
        cold_vs_direct: cold.as_ref().map(|(r, _)| r.mbps / direct.mbps),
        nginx_cold_mbps: nginx_cold.mbps,
        nginx_cold_vs_direct: nginx_cold.mbps / direct.mbps,
        headline_connections: args.headline_connections,
        warm_1m_mbps: mbps("dadi-p2p"),
        nginx_1m_mbps: mbps("nginx-cache"),
        static_1m_mbps: mbps("nginx-static"),
        warm_64k_p99_us: p99("dadi-p2p"),
        nginx_64k_p99_us: p99("nginx-cache"),
        static_64k_p99_us: p99("nginx-static"),
        peak_rss_mib,
        cpu_seconds_per_gib_cold: cold.as_ref().map(|(_, c)| *c),
        cpu_seconds_per_gib_warm,
        cold_64k,
        direct_64k,
        cold_seq_64k,
        direct_seq_64k,
        cold_first_64k_us,
        direct_first_64k_us,
        matrix,
    })
}

/// Random 64 KiB reads on one connection: few enough that most touch a piece for the
/// first time.
async fn cold_random(url: &str, size: u64) -> Result<LoadResult> {
    let spec = LoadSpec {
        url: url.to_owned(),
        headers: Vec::new(),
        blob_size: size,
        pattern: Pattern::Random { block: 64 * KIB },
        connections: 1,
        requests: COLD_RANDOM_READS,
        time_cap: Duration::from_secs(60),
        seed: SEED + 1,
    };
    Ok(load::run(&spec).await?)
}

/// Sequential 64 KiB reads from the start of the blob on one connection, over the first
/// [`COLD_SEQUENTIAL_BYTES`] at most.
async fn cold_sequential(url: &str, size: u64) -> Result<LoadResult> {
    let spec = LoadSpec {
        url: url.to_owned(),
        headers: Vec::new(),
        blob_size: size,
        pattern: Pattern::Sequential { block: 64 * KIB },
        connections: 1,
        requests: size.min(COLD_SEQUENTIAL_BYTES).div_ceil(64 * KIB),
        time_cap: Duration::from_secs(120),
        seed: SEED + 2,
    };
    let result = load::run(&spec).await?;
    anyhow::ensure!(result.errors == 0, "{} errors reading {url}", result.errors);
    Ok(result)
}

/// Times a size probe and the 64 KiB read at offset 0 after it, once per `fresh()` daemon
/// (or straight at `url` when it gives none); returns p50 and max in microseconds.
async fn first_reads(
    url: &str,
    mut fresh: impl FnMut() -> Result<Option<Accelerator>>,
) -> Result<(u64, u64)> {
    let mut micros = Vec::with_capacity(FIRST_READS);
    for _ in 0..FIRST_READS {
        let daemon = fresh()?;
        let target = match &daemon {
            Some(acc) => acc.accelerator_url(url),
            None => url.to_owned(),
        };
        let (addr, path) = http::split_loopback_url(&target)?;
        let mut conn = http::Conn::connect(addr).await?;
        let started = Instant::now();
        let probe = conn.get(&path, &[("range", "bytes=0-0")]).await?;
        anyhow::ensure!(
            probe.status == 206,
            "size probe of {target}: {}",
            probe.status
        );
        let read = conn.get(&path, &[("range", "bytes=0-65535")]).await?;
        micros.push(started.elapsed().as_micros() as u64);
        anyhow::ensure!(
            read.status == 206 && read.body.len() == 64 * KIB as usize,
            "first read of {target}: {}",
            read.status
        );
    }
    micros.sort_unstable();
    Ok((micros[micros.len() / 2], micros[micros.len() - 1]))
}

fn start_accelerator(bin: &std::path::Path, args: &Args) -> Result<Accelerator> {
    let mut opts = AcceleratorOptions::new(bin)
        .env("DADI_P2P_LOG", "warn")
        .arg("--cache-capacity")
        .arg(args.cache_capacity.to_string())
        .arg("--throttle-mb")
        .arg(args.throttle_mb.to_string());
    if let Some(piece) = args.piece_size {
        opts = opts.arg("--piece-size").arg(piece.to_string());
    }
    Accelerator::start(opts).context("start dadi-p2p")
}

/// Reads in the cold random cell; a 1 GiB blob has 512 pieces of 2 MiB.
const COLD_RANDOM_READS: u64 = 200;
/// Bytes read in the cold sequential 64 KiB cell: 64 pieces of 2 MiB.
const COLD_SEQUENTIAL_BYTES: u64 = 128 * MIB;
/// Fresh daemons in the first-read cell.
const FIRST_READS: usize = 15;

/// One sequential 1 MiB pass over the whole blob on one connection.
async fn pass(url: &str, size: u64) -> Result<LoadResult> {
    Ok(bench::sequential_pass(url, size, PASS_CAP).await?)
}

/// The whole blob as one GET without Range; returns MB/s.
async fn plain_get(url: &str, size: u64) -> Result<f64> {
    let (addr, path) = http::split_loopback_url(url)?;
    let mut conn = http::Conn::connect(addr).await?;
    let started = Instant::now();
    let (status, bytes) = conn.get_counted(&path, &[]).await?;
    anyhow::ensure!(
        status == 200 && bytes == size,
        "GET {url}: {status}, {bytes} bytes"
    );
    Ok(bytes as f64 / started.elapsed().as_secs_f64() / 1e6)
}

async fn warm_matrix(targets: &[Target], size: u64, args: &Args) -> Result<Vec<Cell>> {
    let patterns = [
        (
            "rand64k",
            Pattern::Random { block: 64 * KIB },
            args.requests_64k,
        ),
        (
            "seq1m",
            Pattern::Sequential { block: MIB },
            args.requests_1m,
        ),
    ];
    let mut cells = Vec::new();
    // Targets alternate within each load so that background noise on a shared machine hits
    // them alike; the matrix is sorted by target afterwards.
    for &(pattern_name, pattern, requests) in &patterns {
        for &connections in &args.connections {
            for target in targets {
                let spec = LoadSpec {
                    url: target.url.clone(),
                    headers: Vec::new(),
                    blob_size: size,
                    pattern,
                    connections,
                    requests,
                    time_cap: Duration::from_secs(args.cell_seconds),
                    seed: SEED,
                };
                let cpu = cpu_seconds(std::process::id())?;
                let result = load::run(&spec).await?;
                let generator_cpu_seconds = cpu_seconds(std::process::id())? - cpu;
                tracing::info!(
                    target = target.name,
                    pattern = pattern_name,
                    connections,
                    mbps = result.mbps,
                    p99_us = result.p99_us,
                    errors = result.errors,
                    "cell"
                );
                cells.push(Cell {
                    target: target.name,
                    pattern: pattern_name,
                    connections,
                    generator_cpu_seconds,
                    result,
                });
            }
        }
    }
    cells.sort_by_key(|c| targets.iter().position(|t| t.name == c.target));
    Ok(cells)
}
