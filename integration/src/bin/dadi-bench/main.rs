//! `dadi-bench`: measures how `dadi-p2p` serves a blob on loopback against the registry read
//! directly and against nginx as a caching proxy, all in one run on the same blob; prints a
//! table and writes one JSON object. See `scenario.rs` for what is measured and why.

mod args;
mod report;
mod scenario;

use std::process::ExitCode;

use clap::Parser;
use dadi_p2p_integration::bench;

fn main() -> ExitCode {
    let args = args::Args::parse();
    bench::main(
        "dadi-bench",
        "warn,dadi_bench=info",
        args.generator_threads,
        &args.out,
        || scenario::run(&args),
        report::table,
    )
}
