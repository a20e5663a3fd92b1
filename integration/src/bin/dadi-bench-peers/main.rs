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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,dadi_bench_peers=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = args::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.generator_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dadi-bench-peers: cannot build runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Daemons are started from this thread, which outlives them, so that they get the
    // parent-death signal if this program is killed.
    let summary = match runtime.block_on(scenario::run(&args)) {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("dadi-bench-peers: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report::table(&summary));
    match bench::write_json(&summary, &args.out) {
        Ok(()) => {
            println!("wrote {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("dadi-bench-peers: {error:#}");
            ExitCode::FAILURE
        }
    }
}
