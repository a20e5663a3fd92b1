//! The daemon's configuration: one YAML file plus command-line overrides.
//!
//! The documented names (`DeployConfig`, `ExporterConfig`, `proxyConcurrencyLimit`,
//! `throttleLimitMB`, `p2pPort`, `cache.capacity`, `cache.aioEnable`) are accepted as they
//! are spelled in the service's documentation, so an operator can paste from it. The helm
//! form `exporter:` is accepted as another name for `ExporterConfig`. Keys of our own use the
//! same camelCase style. Unknown keys and bad values are rejected at start with the key, the
//! value and what is allowed: a typo must never silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `DeployConfig.mode`; the same value labels the metrics.
pub use crate::telemetry::Mode;

/// Where the service listens when neither the file nor a flag says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:65001";
/// Default location of the config file when the daemon is installed.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dadi-p2p/config.yaml";
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/dadi-p2p";
pub const DEFAULT_LOG_DIR: &str = "/var/log/dadi-p2p";
/// 4 GiB, as documented for `cache.capacity`.
pub const DEFAULT_CACHE_CAPACITY: u64 = 4 << 30;
/// See `engine` for why 2 MiB.
pub const DEFAULT_PIECE_SIZE: u64 = 2 << 20;
pub const MIN_PIECE_SIZE: u64 = 64 << 10;
pub const MAX_PIECE_SIZE: u64 = crate::cache::MAX_PIECE_LEN;
pub const DEFAULT_PROXY_CONCURRENCY: u32 = 128;
pub const DEFAULT_THROTTLE_MB: u64 = 512;
pub const DEFAULT_P2P_PORT: u16 = 65002;
pub const DEFAULT_EXPORTER_PORT: u16 = 65003;
/// Longest window the exporter's rates and maximum latency are taken over.
pub const MAX_WINDOW_SECS: u64 = 3600;
/// Pieces fetched ahead of a sequential reader.
pub const DEFAULT_READ_AHEAD: u32 = 4;
/// overlaybd reads compressed layers 64 KiB at a time; twice that leaves room.
pub const DEFAULT_COLD_RANDOM_READ_KIB: u64 = 128;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Longest silence tolerated from the origin, for headers or between body chunks.
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 20_000;
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_GRACE_MS: u64 = 10_000;
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {key}: {value:?}: {allowed}")]
    Invalid {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditMode {
    #[default]
    Stdout,
    File,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DeployConfig {
    pub mode: Mode,
    pub log_dir: PathBuf,
    pub log_audit: bool,
    pub log_audit_mode: AuditMode,
    /// Size at which `audit.log` is rotated.
    pub log_audit_max_mb: u64,
    /// Rotated audit files kept beside the current one.
    pub log_audit_keep: u32,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            mode: Mode::Agent,
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            log_audit: false,
            log_audit_mode: AuditMode::Stdout,
            log_audit_max_mb: 100,
            log_audit_keep: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ExporterConfig {
    pub enable: bool,
    pub port: u16,
    /// `true`: metrics on their own port; `false`: at `/metrics` on the service port.
    pub standalone_exporter_port: bool,
    /// IP address the standalone exporter listens on; the service's when unset. A DaemonSet
    /// sets `0.0.0.0` so Prometheus reaches the metrics while the service stays on loopback.
    pub address: Option<String>,
    /// Window over which the documented rates and maximum latency are computed.
    pub window_secs: u64,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            enable: false,
            port: DEFAULT_EXPORTER_PORT,
            standalone_exporter_port: true,
            address: None,
            window_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheConfig {
    /// Bytes of disk the piece cache may use.
    pub capacity: u64,
    /// `1` selects io_uring for cache I/O (fast local disks), `0` positioned reads and writes.
    pub aio_enable: u8,
    pub dir: PathBuf,
    pub piece_size: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: DEFAULT_CACHE_CAPACITY,
            aio_enable: 0,
            dir: PathBuf::from(DEFAULT_CACHE_DIR),
            piece_size: DEFAULT_PIECE_SIZE,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceConfig {
    pub listen: String,
    pub tls: TlsConfig,
    /// Time in-flight responses get to finish after SIGTERM.
    pub grace_ms: u64,
    pub max_connections: u32,
    /// Longest a response may wait for the client to take more bytes; a client that reads
    /// nothing for this long is cut off, so it cannot pin cached pieces and a connection
    /// slot for good.
    pub write_timeout_ms: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: DEFAULT_LISTEN.to_string(),
            tls: TlsConfig::default(),
            grace_ms: DEFAULT_GRACE_MS,
            max_connections: 4096,
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerConfig {
    /// Peer endpoints (`host:port`, the `p2pPort` of each node, this one included or not);
    /// names are resolved again every `refreshSecs`, so a headless Service's name lists
    /// every node. Empty: no peers, every piece comes from the origin.
    pub members: Vec<String>,
    /// Where this node's peer protocol listens; `0.0.0.0:<p2pPort>` when unset.
    pub listen: Option<String>,
    /// File holding the token every peer request carries; required with `members`.
    pub token_file: Option<PathBuf>,
    pub refresh_secs: u64,
    /// Time a peer that failed a request is left out of placement.
    pub down_secs: u64,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            members: Vec::new(),
            listen: None,
            token_file: None,
            refresh_secs: 30,
            down_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MirrorConfig {
    /// Registries (`host[:port]`, as containerd names them) reached over plain HTTP.
    pub plain_http_hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamConfig {
    /// When not empty, only these hosts (exact, or `*.suffix`) may be fetched from.
    pub allow_hosts: Vec<String>,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    /// Further attempts after a connection error or a 5xx answer.
    pub retries: u32,
    /// Extra PEM bundle trusted for upstream TLS besides the system roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            allow_hosts: Vec::new(),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            read_timeout_ms: DEFAULT_READ_TIMEOUT_MS,
            retries: DEFAULT_RETRIES,
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(rename = "DeployConfig")]
    pub deploy: DeployConfig,
    #[serde(rename = "ExporterConfig", alias = "exporter")]
    pub exporter: ExporterConfig,
    /// Blobs downloaded from upstream at once; further ones wait.
    #[serde(rename = "proxyConcurrencyLimit")]
    pub proxy_concurrency_limit: u32,
    /// Downstream throughput cap in MB/s; 0 turns the cap off.
    #[serde(rename = "throttleLimitMB")]
    pub throttle_limit_mb: u64,
    #[serde(rename = "p2pPort")]
    pub p2p_port: u16,
    pub cache: CacheConfig,
    pub service: ServiceConfig,
    pub upstream: UpstreamConfig,
    /// The registry mirror containerd pulls through.
    pub mirror: MirrorConfig,
    /// The other nodes pieces are shared with.
    pub peer: PeerConfig,
    /// Pieces fetched ahead of a sequential reader; 0 turns read-ahead off.
    #[serde(rename = "readAhead")]
    pub read_ahead: u32,
    /// Cold random reads up to this many KiB, ending past as many KiB into their piece,
    /// are fetched straight from the origin while their piece downloads; 0 makes them wait
    /// for the piece.
    #[serde(rename = "coldRandomReadKiB")]
    pub cold_random_read_kib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            deploy: DeployConfig::default(),
            exporter: ExporterConfig::default(),
            proxy_concurrency_limit: DEFAULT_PROXY_CONCURRENCY,
            throttle_limit_mb: DEFAULT_THROTTLE_MB,
            p2p_port: DEFAULT_P2P_PORT,
            cache: CacheConfig::default(),
            service: ServiceConfig::default(),
            upstream: UpstreamConfig::default(),
            mirror: MirrorConfig::default(),
            peer: PeerConfig::default(),
            read_ahead: DEFAULT_READ_AHEAD,
            cold_random_read_kib: DEFAULT_COLD_RANDOM_READ_KIB,
        }
    }
}

impl Config {
    /// Parses YAML text; `path` only names the source in errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text, path)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.service
            .listen
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "service.listen",
                value: self.service.listen.clone(),
                allowed: "an IP address and port such as 127.0.0.1:65001",
            })
    }

    /// Where the peer protocol listens when there are peers.
    pub fn peer_listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        match &self.peer.listen {
            None => Ok(SocketAddr::from(([0, 0, 0, 0], self.p2p_port))),
            Some(l) => l.parse().map_err(|_| ConfigError::Invalid {
                key: "peer.listen",
                value: l.clone(),
                allowed: "an IP address and port such as 0.0.0.0:65002",
            }),
        }
    }

    /// Checks the values serde cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let piece = self.cache.piece_size;
        if !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&piece) || !piece.is_power_of_two() {
            return Err(ConfigError::Invalid {
                key: "cache.pieceSize",
                value: piece.to_string(),
                allowed: "a power of two from 65536 to 8388608",
            });
        }
        if self.cache.capacity < piece * 4 {
            return Err(ConfigError::Invalid {
                key: "cache.capacity",
                value: self.cache.capacity.to_string(),
                allowed: "at least four pieces (cache.pieceSize x 4) in bytes",
            });
        }
        if self.cache.aio_enable > 1 {
            return Err(ConfigError::Invalid {
                key: "cache.aioEnable",
                value: self.cache.aio_enable.to_string(),
                allowed: "0 (positioned reads and writes) or 1 (io_uring)",
            });
        }
        if self.proxy_concurrency_limit == 0 || self.proxy_concurrency_limit > 65_536 {
            return Err(ConfigError::Invalid {
                key: "proxyConcurrencyLimit",
                value: self.proxy_concurrency_limit.to_string(),
                allowed: "1 to 65536",
            });
        }
        if self.read_ahead > 64 {
            return Err(ConfigError::Invalid {
                key: "readAhead",
                value: self.read_ahead.to_string(),
                allowed: "0 to 64 pieces",
            });
        }
        if self.cold_random_read_kib > 4096 {
            return Err(ConfigError::Invalid {
                key: "coldRandomReadKiB",
                value: self.cold_random_read_kib.to_string(),
                allowed: "0 to 4096",
            });
        }
        if self.upstream.connect_timeout_ms == 0 || self.upstream.read_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "upstream.connectTimeoutMs/readTimeoutMs",
                value: format!(
                    "{}/{}",
                    self.upstream.connect_timeout_ms, self.upstream.read_timeout_ms
                ),
                allowed: "a positive number of milliseconds",
            });
        }
        if self.upstream.retries > 10 {
            return Err(ConfigError::Invalid {
                key: "upstream.retries",
                value: self.upstream.retries.to_string(),
                allowed: "0 to 10",
            });
        }
        for host in &self.upstream.allow_hosts {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if bare.is_empty() || bare.contains(['/', ':', '*', ' ']) {
                return Err(ConfigError::Invalid {
                    key: "upstream.allowHosts",
                    value: host.clone(),
                    allowed: "a host name, or *.suffix, without scheme or port",
                });
            }
        }
        match (&self.service.tls.cert, &self.service.tls.key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "service.tls",
                    value: "only one of cert and key".into(),
                    allowed: "both cert and key, or neither",
                })
            }
            _ => {}
        }
        if let Some(address) = &self.exporter.address {
            if address.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::Invalid {
                    key: "ExporterConfig.address",
                    value: address.clone(),
                    allowed: "an IP address such as 0.0.0.0 or 127.0.0.1",
                });
            }
        }
        let window = self.exporter.window_secs;
        if window == 0 || window > MAX_WINDOW_SECS {
            return Err(ConfigError::Invalid {
                key: "ExporterConfig.windowSecs",
                value: window.to_string(),
                allowed: "1 to 3600 seconds",
            });
        }
        if self.service.write_timeout_ms < 100 {
            return Err(ConfigError::Invalid {
                key: "service.writeTimeoutMs",
                value: self.service.write_timeout_ms.to_string(),
                allowed: "at least 100 milliseconds",
            });
        }
        if !self.peer.members.is_empty() {
            for m in &self.peer.members {
                let port = m
                    .rsplit_once(':')
                    .and_then(|(h, p)| (!h.is_empty()).then_some(p.parse::<u16>().ok()).flatten());
                if port.is_none_or(|p| p == 0) {
                    return Err(ConfigError::Invalid {
                        key: "peer.members",
                        value: m.clone(),
                        allowed: "host:port entries, such as 10.0.0.5:65002",
                    });
                }
            }
            if self.peer.token_file.is_none() {
                return Err(ConfigError::Invalid {
                    key: "peer.tokenFile",
                    value: "unset".into(),
                    allowed: "a file holding the peers' shared token, required with peer.members",
                });
            }
            if self.peer.refresh_secs == 0 || self.peer.down_secs == 0 {
                return Err(ConfigError::Invalid {
                    key: "peer.refreshSecs/downSecs",
                    value: format!("{}/{}", self.peer.refresh_secs, self.peer.down_secs),
                    allowed: "a positive number of seconds",
                });
            }
        }
        self.peer_listen_addr()?;
        if self.service.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "service.maxConnections",
                value: "0".into(),
                allowed: "a positive number of connections",
            });
        }
        if self.deploy.log_audit && self.deploy.log_audit_max_mb == 0 {
            return Err(ConfigError::Invalid {
                key: "DeployConfig.logAuditMaxMb",
                value: "0".into(),
                allowed: "a positive size in MiB",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let c = Config::from_yaml(text, Path::new("t.yaml"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.cache.capacity, 4294967296);
        assert_eq!(c.proxy_concurrency_limit, 128);
        assert_eq!(c.throttle_limit_mb, 512);
        assert_eq!(c.p2p_port, 65002);
        assert_eq!(c.deploy.mode, Mode::Agent);
        assert_eq!(c.listen_addr().unwrap().port(), 65001);
    }

    #[test]
    fn documented_snippets_paste_as_they_are() {
        let c = parse(
            "DeployConfig:\n  mode: agent\n  logDir: /dadi-p2p/log\n  logAudit: true\n  \
             logAuditMode: stdout\nExporterConfig:\n  enable: true\n  port: 65006\n  \
             standaloneExporterPort: true\nproxyConcurrencyLimit: 128\np2pPort: 65002\n\
             cache:\n  capacity: 4294967296\n  aioEnable: 0\nthrottleLimitMB: 512\n",
        )
        .unwrap();
        assert!(c.deploy.log_audit);
        assert_eq!(c.deploy.log_dir, PathBuf::from("/dadi-p2p/log"));
        assert_eq!(c.exporter.port, 65006);
        assert!(c.exporter.standalone_exporter_port);
    }

    #[test]
    fn helm_exporter_spelling_is_accepted() {
        let c = parse("exporter:\n  enable: true\n  port: 65003\n").unwrap();
        assert!(c.exporter.enable);
        assert_eq!(c.exporter.port, 65003);
    }

    #[test]
    fn unknown_key_names_the_key() {
        let err = parse("cache:\n  capasity: 1\n").unwrap_err().to_string();
        assert!(err.contains("capasity"), "{err}");
        assert!(err.contains("capacity"), "{err}");
    }

    #[test]
    fn bad_enum_value_names_the_value_and_choices() {
        let err = parse("DeployConfig:\n  mode: leaf\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaf") && err.contains("agent"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_key_and_value() {
        for (yaml, key) in [
            ("cache:\n  pieceSize: 3000000\n", "cache.pieceSize"),
            ("cache:\n  aioEnable: 2\n", "cache.aioEnable"),
            ("proxyConcurrencyLimit: 0\n", "proxyConcurrencyLimit"),
            ("service:\n  listen: localhost\n", "service.listen"),
            (
                "upstream:\n  allowHosts: [\"http://x\"]\n",
                "upstream.allowHosts",
            ),
            ("cache:\n  capacity: 1000\n", "cache.capacity"),
            ("service:\n  maxConnections: 0\n", "service.maxConnections"),
            ("peer:\n  members: [\"10.0.0.5:65002\"]\n", "peer.tokenFile"),
            (
                "peer:\n  members: [\"10.0.0.5\"]\n  tokenFile: /t\n",
                "peer.members",
            ),
            ("peer:\n  listen: anywhere\n", "peer.listen"),
            (
                "ExporterConfig:\n  windowSecs: 18446744073709551615\n",
                "ExporterConfig.windowSecs",
            ),
            (
                "ExporterConfig:\n  enable: false\n  windowSecs: 0\n",
                "ExporterConfig.windowSecs",
            ),
        ] {
            let err = parse(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }
}
