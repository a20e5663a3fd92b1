//! Command-line options of the peer benchmark. Sizes accept binary suffixes (`64M`, `1G`).

use std::path::PathBuf;

use clap::Parser;
use dadi_p2p_integration::bench::parse_size;

/// Peer benchmark: N dadi-p2p daemons read one blob concurrently, without and with peers.
/// A flag given twice takes its last value, so `scripts/bench peers --out FILE` overrides the
/// script's own `--out`.
#[derive(Parser, Debug)]
#[command(name = "dadi-bench-peers", version, args_override_self = true)]
pub struct Args {
    /// The dadi-p2p binary.
    #[arg(long, value_name = "PATH")]
    pub dadi_p2p: PathBuf,
    /// Daemons, each with its own cache, reading the blob at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(2..=32))]
    pub nodes: u16,
    /// Blob size (content bytes of the one-file layer).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub size: u64,
    /// Piece size given to every daemon (`cache.pieceSize`; its default when absent).
    #[arg(long, value_parser = parse_size)]
    pub piece_size: Option<u64>,
    /// Cache capacity given to every daemon.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub cache_capacity: u64,
    /// Time cap of one node's pass over the blob, in seconds.
    #[arg(long, default_value_t = 600)]
    pub pass_seconds: u64,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub generator_threads: usize,
    /// Where the JSON summary goes.
    #[arg(long, default_value = "target/bench/peers.json")]
    pub out: PathBuf,
}
