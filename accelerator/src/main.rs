//! `dadi-p2p`: the node daemon. Flags override the config file; the file overrides built-in
//! defaults. `dadi-p2p status` asks a running daemon for its status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dadi_p2p::config::{Config, Mode, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(
    name = "dadi-p2p",
    version,
    about = "P2P image acceleration for overlaybd and containerd"
)]
struct Cli {
    /// YAML config file; the built-in defaults apply when it is absent.
    #[arg(long, env = "DADI_P2P_CONFIG")]
    config: Option<PathBuf>,
    /// Service address, e.g. 127.0.0.1:65001.
    #[arg(long)]
    listen: Option<String>,
    #[arg(long, value_parser = ["agent", "root"])]
    mode: Option<String>,
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Cache capacity in bytes.
    #[arg(long)]
    cache_capacity: Option<u64>,
    #[arg(long)]
    piece_size: Option<u64>,
    /// Only fetch from these upstream hosts (repeatable; `*.suffix` allowed).
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// Use io_uring for cache I/O (same as `cache.aioEnable: 1`).
    #[arg(long)]
    aio: bool,
    /// Downstream throughput cap in MB/s, 0 for none.
    #[arg(long)]
    throttle_mb: Option<u64>,
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log filter, e.g. `info` or `dadi_p2p=debug`.
    #[arg(long, env = "DADI_P2P_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Show a running daemon's status.
    Status {
        #[arg(long, default_value = "http://127.0.0.1:65001")]
        address: String,
        /// Print the JSON as the daemon sent it.
        #[arg(long)]
        json: bool,
    },
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = match &cli.config {
        Some(path) => Config::load(path)?,
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Config::load(Path::new(DEFAULT_CONFIG_PATH))?
        }
        None => Config::default(),
    };
    if let Some(v) = &cli.listen {
        cfg.service.listen = v.clone();
    }
    if let Some(v) = &cli.mode {
        cfg.deploy.mode = if v == "root" { Mode::Root } else { Mode::Agent };
    }
    if let Some(v) = &cli.cache_dir {
        cfg.cache.dir = v.clone();
    }
    if let Some(v) = cli.cache_capacity {
        cfg.cache.capacity = v;
    }
    if let Some(v) = cli.piece_size {
        cfg.cache.piece_size = v;
    }
    if !cli.allow_hosts.is_empty() {
        cfg.upstream.allow_hosts = cli.allow_hosts.clone();
    }
    if cli.aio {
        cfg.cache.aio_enable = 1;
    }
    if let Some(v) = cli.throttle_mb {
        cfg.throttle_limit_mb = v;
    }
    if cli.tls_cert.is_some() {
        cfg.service.tls.cert = cli.tls_cert.clone();
        cfg.service.tls.key = cli.tls_key.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Installs the SIGTERM and SIGINT handlers now, so a signal that arrives while the cache
/// is still being scanned is not lost, and returns the future that completes on either.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Lifts the soft open-file limit to the hard one: each connection and each cached piece
/// file kept open takes a descriptor, and Debian's default soft limit is 1024.
fn raise_fd_limit() {
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match &cli.command {
        Some(Command::Status { address, json }) => {
            dadi_p2p::status_client::print(address, *json).map_err(Into::into)
        }
        None => load(&cli).and_then(|cfg| {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(async {
                let stop = stop_signal().context("cannot install signal handlers")?;
                Ok(dadi_p2p::daemon::run(cfg, stop).await?)
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dadi-p2p: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the line already
/// holds: many messages embed their source, which `{:#}` would then print twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_the_rest_of_the_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            "DeployConfig:\n  mode: agent\nthrottleLimitMB: 100\nreadAhead: 7\n\
             cache:\n  pieceSize: 1048576\n  capacity: 1073741824\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "dadi-p2p".as_ref(),
            "--config".as_ref(),
            file.as_os_str(),
            "--piece-size".as_ref(),
            "4194304".as_ref(),
            "--throttle-mb".as_ref(),
            "0".as_ref(),
            "--mode".as_ref(),
            "root".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:7000".as_ref(),
        ])
        .unwrap();
        let cfg = load(&cli).unwrap();
        assert_eq!(cfg.cache.piece_size, 4 << 20);
        assert_eq!(cfg.throttle_limit_mb, 0);
        assert_eq!(cfg.deploy.mode, Mode::Root);
        assert_eq!(cfg.service.listen, "127.0.0.1:7000");
        assert_eq!(cfg.cache.capacity, 1 << 30, "kept from the file");
        assert_eq!(cfg.read_ahead, 7, "kept from the file");
    }

    #[test]
    fn a_flag_that_makes_the_config_invalid_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "").unwrap();
        let cli = Cli::try_parse_from([
            "dadi-p2p".as_ref(),
            "--config".as_ref(),
            file.as_os_str(),
            "--piece-size".as_ref(),
            "3000".as_ref(),
        ])
        .unwrap();
        let err = load(&cli).unwrap_err().to_string();
        assert!(
            err.contains("cache.pieceSize") && err.contains("3000"),
            "{err}"
        );
    }
}
