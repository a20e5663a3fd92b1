//! `dadi-bench-peers`: how much the registry sends when N `dadi-p2p` daemons read the same
//! blob at once, without peers and with them, in one run on loopback; prints a table and
//! writes one JSON object. See `scenario.rs` for what is measured and why.

mod args;
mod report;
mod scenario;

use std::process::ExitCode;

use clap::Parser;
use dadi_p2p_integration::bench;

fn main() -> ExitCode {
    let args = args::Args::parse();
    bench::main(
        "dadi-bench-peers",
        "warn,dadi_bench_peers=info",
        args.generator_threads,
        &args.out,
        || scenario::run(&args),
        report::table,
    )
}
