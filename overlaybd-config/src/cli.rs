//! Command line of `overlaybd-p2p`. Flags common to all commands are global
//! so they may be written before or after the command name, as
//! configuration-management templates tend to do either.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::address::DEFAULT_ADDRESS;
use crate::exit::HELP_TABLE;
use crate::restart::DEFAULT_SERVICE;

/// Where overlaybd reads its configuration.
pub const DEFAULT_CONFIG: &str = "/etc/overlaybd/overlaybd.json";

/// Seconds `status` waits for a connect or an answer.
pub const DEFAULT_STATUS_TIMEOUT_SECS: u64 = 3;

/// Longest `--timeout` accepted. A zero timeout cannot be set on a socket,
/// and one longer than an hour is a typo rather than a wish.
pub const MAX_STATUS_TIMEOUT_SECS: u64 = 3600;

#[derive(Debug, Parser)]
#[command(
    name = "overlaybd-p2p",
    version,
    about = "Point overlaybd at the dadi-p2p accelerator by editing p2pConfig in overlaybd.json",
    after_help = HELP_TABLE
)]
pub struct Cli {
    /// overlaybd's configuration file.
    #[arg(long, global = true, env = "OVERLAYBD_P2P_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set p2pConfig.enable to true and p2pConfig.address.
    Enable {
        /// Accelerator address overlaybd sends reads to (http:// or https:// required).
        #[arg(long, default_value = DEFAULT_ADDRESS)]
        address: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Set p2pConfig.enable to false; the address is kept.
    Disable {
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Show p2pConfig and check the accelerator the way overlaybd would.
    Status {
        /// Seconds to wait for the TCP connect and the health answer.
        #[arg(
            long,
            value_name = "SECS",
            default_value_t = DEFAULT_STATUS_TIMEOUT_SECS,
            value_parser = parse_timeout
        )]
        timeout: u64,
        /// PEM file of a CA trusted, besides the system roots, for an https:// accelerator.
        #[arg(long, value_name = "PATH")]
        cacert: Option<PathBuf>,
    },
}

/// Rejected values become usage errors naming the flag and the value.
fn parse_timeout(s: &str) -> Result<u64, String> {
    let secs: u64 = s
        .parse()
        .map_err(|_| "not a whole number of seconds".to_string())?;
    if (1..=MAX_STATUS_TIMEOUT_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("must be 1 to {MAX_STATUS_TIMEOUT_SECS} seconds"))
    }
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Restart overlaybd after a change (systemctl, falling back to service).
    #[arg(long)]
    pub restart: bool,
    /// Unit restarted by --restart.
    #[arg(long, default_value = DEFAULT_SERVICE)]
    pub service: String,
    /// Print the change as a diff and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Create the file (and its directory) when it does not exist.
    #[arg(long)]
    pub create: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_on_either_side() {
        let a = Cli::parse_from(["overlaybd-p2p", "--json", "--config", "/x", "disable"]);
        let b = Cli::parse_from(["overlaybd-p2p", "disable", "--config", "/x", "--json"]);
        assert_eq!((a.config, a.json), (b.config, b.json));
        let c = Cli::parse_from(["overlaybd-p2p", "enable"]);
        match c.command {
            Command::Enable { address, change } => {
                assert_eq!(address, DEFAULT_ADDRESS);
                assert_eq!(change.service, DEFAULT_SERVICE);
                assert!(!change.restart && !change.dry_run && !change.create);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_timeout_must_be_one_second_to_an_hour() {
        let timeout = |v: &str| {
            let flag = format!("--timeout={v}");
            Cli::try_parse_from(["overlaybd-p2p", "status", &flag]).map(|c| c.command)
        };
        for ok in ["1", "3", "3600"] {
            match timeout(ok) {
                Ok(Command::Status { timeout, .. }) => assert_eq!(timeout.to_string(), ok),
                other => panic!("{ok}: {other:?}"),
            }
        }
        for bad in ["0", "3601", "-1", "1.5", "", "18446744073709551615"] {
            let err = timeout(bad).expect_err(bad);
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            let msg = err.to_string();
            assert!(
                msg.contains("--timeout") && msg.contains(&format!("'{bad}'")),
                "{msg}"
            );
        }
    }
}
