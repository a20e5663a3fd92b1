//! Command-line options of the benchmark. Sizes accept binary suffixes (`64M`, `1G`).

use std::path::PathBuf;

use clap::Parser;
use dadi_p2p_integration::bench::{parse_size, Push};

/// Serve benchmark: dadi-p2p vs registry direct vs nginx caching proxy, on loopback.
#[derive(Parser, Debug)]
#[command(name = "dadi-bench", version)]
pub struct Args {
    /// The dadi-p2p binary; without it only the registry and nginx rows are measured.
    #[arg(long, value_name = "PATH")]
    pub dadi_p2p: Option<PathBuf>,
    /// Blob size (content bytes of the one-file layer).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub size: u64,
    /// Piece size passed to dadi-p2p as --piece-size (its default when absent).
    #[arg(long, value_parser = parse_size)]
    pub piece_size: Option<u64>,
    /// Downstream throughput cap given to dadi-p2p as --throttle-mb (0: none, so that the
    /// serving path itself is measured rather than the token bucket).
    #[arg(long, default_value_t = 0)]
    pub throttle_mb: u64,
    /// Cache capacity given to dadi-p2p.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub cache_capacity: u64,
    /// Requests per cell of random 64 KiB reads.
    #[arg(long, default_value_t = 50_000)]
    pub requests_64k: u64,
    /// Requests per cell of sequential 1 MiB reads.
    #[arg(long, default_value_t = 4_096)]
    pub requests_1m: u64,
    /// Time cap per cell, in seconds.
    #[arg(long, default_value_t = 10)]
    pub cell_seconds: u64,
    /// Connection counts of the warm matrix.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    pub connections: Vec<usize>,
    /// Connection count the headline figures are taken from.
    #[arg(long, default_value_t = 64)]
    pub headline_connections: usize,
    /// How the blob gets into the registry: a monolithic upload or `skopeo copy`.
    #[arg(long, value_enum, default_value = "upload")]
    pub push: Push,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub generator_threads: usize,
    /// Where the JSON summary goes.
    #[arg(long, default_value = "target/bench/serve.json")]
    pub out: PathBuf,
}
