//! Debian's `docker-registry` (CNCF distribution 2.8) on a free loopback port with its own
//! filesystem storage, optionally behind basic auth, plus its Prometheus endpoint on a second
//! port so that there is always a real exporter to scrape.
//!
//! The storage root is exposed because tests need to corrupt or inspect blobs where the
//! registry keeps them (`docker/registry/v2/blobs/sha256/<xx>/<hex>/data`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use tempfile::TempDir;

use crate::process::{free_port, run_command, ProcessGuard};
use crate::{HarnessError, Result};

/// How long the registry may take to answer `GET /v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A user name and password for basic auth.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    pub fn new(user: &str, password: &str) -> Self {
        Self {
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// The value of an `Authorization` header carrying these credentials.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// How to start a registry.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Basic auth (bcrypt htpasswd file written by `htpasswd -B`); none when absent.
    pub auth: Option<Credentials>,
}

/// A running registry; stopped and its storage deleted on drop.
pub struct Registry {
    process: ProcessGuard,
    port: u16,
    metrics_port: u16,
    auth: Option<Credentials>,
    // Dropped last: the process must be gone before its directory.
    dir: TempDir,
}

impl Registry {
    /// Starts a registry without auth.
    pub fn start() -> Result<Self> {
        Self::start_with(RegistryOptions::default())
    }

    /// Starts a registry as `opts` says and waits until `GET /v2/` answers 200.
    pub fn start_with(opts: RegistryOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("dadi-registry-")
            .tempdir()
            .map_err(|e| HarnessError::io("create registry dir", e))?;
        let port = free_port()?;
        let metrics_port = free_port()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(|e| HarnessError::io("create storage", e))?;

        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: dadi-harness\n  debug:\n    \
             addr: 127.0.0.1:{metrics_port}\n    prometheus:\n      enabled: true\n      \
             path: /metrics\n",
            data = data.display()
        );
        if let Some(creds) = &opts.auth {
            let htpasswd = dir.path().join("htpasswd");
            write_htpasswd(&htpasswd, creds)?;
            let _ = write!(
                config,
                "auth:\n  htpasswd:\n    realm: dadi-harness\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| HarnessError::io("write registry config", e))?;

        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config_path);
        let mut process = ProcessGuard::spawn("docker-registry", cmd, dir.path())?;
        let header = opts.auth.as_ref().map(Credentials::basic_header);
        process.wait_ready(
            &format!("http://127.0.0.1:{port}/v2/"),
            &[200],
            header.as_deref(),
            READY_TIMEOUT,
        )?;
        tracing::info!(port, "registry ready");
        Ok(Self {
            process,
            port,
            metrics_port,
            auth: opts.auth,
            dir,
        })
    }

    /// The registry's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, as used in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>/v2/<repo>/blobs/<digest>`, the URL overlaybd would read.
    pub fn blob_url(&self, repo: &str, digest: &str) -> String {
        format!("{}/v2/{repo}/blobs/{digest}", self.base_url())
    }

    /// `127.0.0.1:<port>` of the registry's Prometheus endpoint (`/metrics`).
    pub fn metrics_host(&self) -> String {
        format!("127.0.0.1:{}", self.metrics_port)
    }

    /// The credentials the registry demands, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.auth.as_ref()
    }

    /// The filesystem driver's root directory.
    pub fn storage_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let prefix = hex.get(..2).unwrap_or(hex);
        self.storage_root()
            .join("docker/registry/v2/blobs/sha256")
            .join(prefix)
            .join(hex)
            .join("data")
    }

    /// The registry process, for its pid and logs.
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.process
    }

    /// The registry's temporary directory (config, logs, storage).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn write_htpasswd(path: &Path, creds: &Credentials) -> Result<()> {
    let mut cmd = Command::new("htpasswd");
    cmd.args(["-B", "-b", "-n", &creds.user, &creds.password]);
    let entry = run_command(cmd, "htpasswd")?;
    std::fs::write(path, entry).map_err(|e| HarnessError::io("write htpasswd", e))
}
