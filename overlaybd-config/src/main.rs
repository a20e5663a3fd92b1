//! `overlaybd-p2p enable|disable|status`: see the crate README for usage,
//! exit statuses and the manual procedure it replaces.

use clap::Parser;
use overlaybd_p2p::{app, cli::Cli, report};

fn main() {
    let cli = Cli::parse();
    // Quiet unless asked: the report is the output; RUST_LOG=debug shows the steps.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = app::run(&cli);
    let exit = report::print(&result, cli.json);
    std::process::exit(exit.code());
}
