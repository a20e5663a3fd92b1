//! Command-line flags (each with an environment variable) and their conversion to [`Settings`].
//!
//! Kept in the library so the flag names, defaults and validation are tested with the rest; the
//! binary only parses and runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{self, Endpoint, Settings};

/// Mutating webhook that points selected Pods at the node's P2P endpoint.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// Address the HTTPS server listens on.
    #[arg(
        long,
        env = "DADI_P2P_ADMISSION_LISTEN",
        default_value = "0.0.0.0:9443"
    )]
    pub listen: SocketAddr,
    /// PEM certificate chain; reloaded when it changes.
    #[arg(
        long,
        env = "DADI_P2P_ADMISSION_TLS_CERT",
        default_value = "/etc/dadi-p2p-admission/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// PEM private key; reloaded when it changes.
    #[arg(
        long,
        env = "DADI_P2P_ADMISSION_TLS_KEY",
        default_value = "/etc/dadi-p2p-admission/tls/tls.key"
    )]
    pub tls_key: PathBuf,
    /// Registries whose images are rewritten: comma-separated `host`, `*.domain` or `*`.
    /// None by default, and then no image is rewritten.
    #[arg(long, env = "DADI_P2P_REGISTRIES", default_value = "")]
    pub registries: String,
    /// Port of the P2P endpoint on every node.
    #[arg(long, env = "DADI_P2P_PORT", default_value_t = config::DEFAULT_P2P_PORT)]
    pub p2p_port: u16,
    /// Label inserted after the first label of the registry host.
    #[arg(long, env = "DADI_P2P_LABEL", default_value = config::DEFAULT_P2P_LABEL)]
    pub p2p_label: String,
    /// Label key (on Pods or namespaces) that turns acceleration on.
    #[arg(long, env = "DADI_P2P_SELECTOR_KEY", default_value = config::DEFAULT_SELECTOR_KEY)]
    pub selector_key: String,
    /// Value of the selector label that turns acceleration on.
    #[arg(long, env = "DADI_P2P_SELECTOR_VALUE", default_value = config::DEFAULT_SELECTOR_VALUE)]
    pub selector_value: String,
}

impl Args {
    pub fn settings(&self) -> Result<Settings, config::ConfigError> {
        let settings = Settings {
            selector_key: self.selector_key.clone(),
            selector_value: self.selector_value.clone(),
            registries: Settings::parse_registries(&self.registries)?,
            endpoint: Endpoint {
                label: self.p2p_label.clone(),
                port: self.p2p_port,
            },
        };
        settings.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let args = Args::try_parse_from(["dadi-p2p-admission"]).unwrap();
        let s = args.settings().unwrap();
        assert_eq!(s, Settings::default());
        assert!(s.registries.is_empty(), "no registry is listed by default");
    }

    #[test]
    fn flags_reach_the_settings() {
        let args = Args::try_parse_from([
            "dadi-p2p-admission",
            "--registries=*.example.com, reg.other.org",
            "--p2p-port=7000",
            "--p2p-label=p2p",
        ])
        .unwrap();
        let s = args.settings().unwrap();
        assert_eq!(s.registries.len(), 2);
        assert_eq!(
            s.endpoint,
            Endpoint {
                label: "p2p".into(),
                port: 7000
            }
        );
        let bad = Args::try_parse_from(["dadi-p2p-admission", "--registries=reg:5000"]).unwrap();
        assert!(bad.settings().unwrap_err().to_string().contains("reg:5000"));
    }
}
