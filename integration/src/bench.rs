//! What the benchmark programs share: size arguments, the one blob each run reads, a
//! whole-blob pass read the way overlaybd reads a cold layer, the digest check of what a
//! server sends, the JSON file a run leaves, and the skeleton every program's `main` is.
//!
//! A pass is sequential 1 MiB ranges on one keep-alive connection, because that is how
//! overlaybd reads a layer it needs whole; a plain `GET` would measure a path it does not
//! take. Passes are timed, digest checks are not: hashing would take a share of the cores
//! the servers measured need.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::load::{self, LoadResult, LoadSpec, Pattern};
use crate::{build_image, http, BlobInfo, Compression, HarnessError, LayerSpec, Registry, Result};

const MIB: u64 = 1 << 20;

/// How the blob gets into the registry.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Push {
    /// A monolithic `POST` + `PUT` of the layer file.
    Upload,
    /// `skopeo copy` of the whole image, manifest included.
    Skopeo,
}

/// A blob in the registry, with what it took to get it there.
pub struct PushedBlob {
    pub blob: BlobInfo,
    pub generate_seconds: f64,
    pub push_seconds: f64,
}

/// Parses a byte count with an optional binary suffix (`4096`, `64M`, `1G`), for clap.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or with K/M/G)"))?;
    n.checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

/// Generates a one-layer image whose file holds `size` bytes from `seed`, and puts the layer
/// into `registry` under `repo`.
pub async fn put_blob(
    registry: &Registry,
    repo: &str,
    size: u64,
    seed: u64,
    push: Push,
) -> Result<PushedBlob> {
    let layout = tempfile::Builder::new()
        .prefix("dadi-bench-layout-")
        .tempdir()
        .map_err(|e| HarnessError::io("create layout dir", e))?;
    let started = Instant::now();
    let layer = LayerSpec {
        size,
        seed,
        compression: Compression::None,
    };
    let image = build_image(layout.path(), "bench", &[layer])?;
    let generate_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let blob = image.layers[0].clone();
    match push {
        Push::Skopeo => registry.push_image(&image, repo)?,
        Push::Upload => {
            let uploaded = registry
                .upload_blob(repo, &image.blob_path(&blob.digest))
                .await?;
            if uploaded.digest != blob.digest {
                return Err(HarnessError::unexpected(
                    "blob upload",
                    format!("digest {} for {}", uploaded.digest, blob.digest),
                ));
            }
        }
    }
    Ok(PushedBlob {
        blob,
        generate_seconds,
        push_seconds: started.elapsed().as_secs_f64(),
    })
}

/// One sequential pass of 1 MiB ranges over the whole `size`-byte blob at `url`, on one
/// connection, stopped after `time_cap`; an error unless every byte arrived.
pub async fn sequential_pass(url: &str, size: u64, time_cap: Duration) -> Result<LoadResult> {
    let spec = LoadSpec {
        url: url.to_owned(),
        headers: Vec::new(),
        blob_size: size,
        pattern: Pattern::Sequential { block: MIB },
        connections: 1,
        requests: size.div_ceil(MIB),
        time_cap,
        seed: 0,
    };
    let result = load::run(&spec).await?;
    if result.errors != 0 || result.bytes != size {
        return Err(HarnessError::unexpected(
            url,
            format!(
                "pass read {} of {size} bytes with {} errors",
                result.bytes, result.errors
            ),
        ));
    }
    Ok(result)
}

/// Whether one plain `GET` of `url` yields exactly the blob (length and digest); untimed.
pub async fn serves_exact_blob(url: &str, blob: &BlobInfo) -> Result<bool> {
    let (addr, path) = http::split_loopback_url(url)?;
    let mut conn = http::Conn::connect(addr).await?;
    let mut hasher = Sha256::new();
    let (status, bytes) = conn.get_each(&path, &[], |b| hasher.update(b)).await?;
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    Ok(status == 200 && bytes == blob.size && digest == blob.digest)
}

/// A benchmark program's whole life: logs to stderr (`filter` unless `RUST_LOG` says
/// otherwise), `run` on a runtime of `threads` workers started from this thread (which
/// outlives the servers it starts, so they get the parent-death signal if the program is
/// killed), then the table on stdout and the JSON object in `out`.
pub fn main<S, Fut>(
    program: &str,
    filter: &str,
    threads: usize,
    out: &Path,
    run: impl FnOnce() -> Fut,
    table: impl FnOnce(&S) -> String,
) -> std::process::ExitCode
where
    S: Serialize,
    Fut: std::future::Future<Output = anyhow::Result<S>>,
{
    use std::process::ExitCode;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{program}: cannot build runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let summary = match runtime.block_on(run()) {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("{program}: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", table(&summary));
    match write_json(&summary, out) {
        Ok(()) => {
            println!("wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{program}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `value` as one JSON object on one line to `path`, creating its directory.
pub fn write_json(value: &impl Serialize, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| HarnessError::io(format!("create {}", dir.display()), e))?;
    }
    let mut line = serde_json::to_string(value)
        .map_err(|e| HarnessError::unexpected("summary", e.to_string()))?;
    line.push('\n');
    std::fs::write(path, line).map_err(|e| HarnessError::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1T").is_err());
    }
}
