//! `dadi-bench`: measures how `dadi-p2p` serves a blob on loopback against the registry read
//! directly and against nginx as a caching proxy, all in one run on the same blob; prints a
//! table and writes one JSON object. See `scenario.rs` for what is measured and why.

mod args;
mod report;
mod scenario;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,dadi_bench=info".into()),
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
            eprintln!("dadi-bench: cannot build runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(scenario::run(&args)) {
        Ok(summary) => {
            print!("{}", report::table(&summary));
            match dadi_p2p_integration::bench::write_json(&summary, &args.out) {
                Ok(()) => {
                    println!("wrote {}", args.out.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("dadi-bench: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("dadi-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
