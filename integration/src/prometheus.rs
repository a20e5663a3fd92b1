//! Debian's `prometheus` scraping given loopback targets every second, with its own storage
//! directory and config written here, and a helper for its instant-query API.
//!
//! Prometheus always scrapes itself as job `prometheus` as well, so a test has one series that
//! is certain to exist once the first scrape is done.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{free_port, ProcessGuard};
use crate::{HarnessError, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two queries of `wait_for`.
const QUERY_INTERVAL: Duration = Duration::from_millis(250);

/// One scrape job: `job` name, `host` as `127.0.0.1:<port>`, and the metrics path.
#[derive(Clone, Debug)]
pub struct ScrapeTarget {
    pub job: String,
    pub host: String,
    pub metrics_path: String,
}

impl ScrapeTarget {
    /// A target at `/metrics`.
    pub fn new(job: &str, host: &str) -> Self {
        Self {
            job: job.to_owned(),
            host: host.to_owned(),
            metrics_path: "/metrics".to_owned(),
        }
    }
}

/// One sample of an instant vector: the series' labels (with `__name__`) and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A running Prometheus; stopped and its storage deleted on drop.
pub struct Prometheus {
    process: ProcessGuard,
    port: u16,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (plus itself) every second.
    pub fn start(targets: &[ScrapeTarget]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("dadi-prometheus-")
            .tempdir()
            .map_err(|e| HarnessError::io("create prometheus dir", e))?;
        let port = free_port()?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n",
        );
        let own = ScrapeTarget::new("prometheus", &format!("127.0.0.1:{port}"));
        for target in std::iter::once(&own).chain(targets) {
            if !target.host.starts_with("127.") {
                return Err(HarnessError::unexpected(
                    "scrape target",
                    format!("{} is not a loopback address", target.host),
                ));
            }
            config.push_str(&format!(
                "  - job_name: {job:?}\n    metrics_path: {path:?}\n    static_configs:\n      \
                 - targets: [{host:?}]\n",
                job = target.job,
                path = target.metrics_path,
                host = target.host,
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| HarnessError::io("write prometheus config", e))?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let mut process = ProcessGuard::spawn("prometheus", cmd, dir.path())?;
        process.wait_ready(
            &format!("http://127.0.0.1:{port}/-/ready"),
            &[200],
            None,
            READY_TIMEOUT,
        )?;
        tracing::info!(port, "prometheus ready");
        Ok(Self { process, port, dir })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs an instant query (`/api/v1/query`) and returns its vector.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let url = format!("{}/api/v1/query?query={}", self.base_url(), encode(promql));
        let response = crate::http::get(&url, &[]).await?;
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| HarnessError::unexpected("prometheus query", e.to_string()))?;
        if body["status"] != "success" {
            return Err(HarnessError::unexpected(
                "prometheus query",
                format!("{promql}: {body}"),
            ));
        }
        let results = body["data"]["result"]
            .as_array()
            .ok_or_else(|| HarnessError::unexpected("prometheus query", "result is no vector"))?;
        results.iter().map(parse_sample).collect()
    }

    /// Queries until the answer is a non-empty vector, at most `timeout` long.
    pub async fn wait_for(&self, promql: &str, timeout: Duration) -> Result<Vec<Sample>> {
        let deadline = Instant::now() + timeout;
        let max_attempts = (timeout.as_millis() / QUERY_INTERVAL.as_millis()).max(1) as u32;
        for _ in 0..max_attempts {
            let samples = self.query(promql).await?;
            if !samples.is_empty() || Instant::now() >= deadline {
                return Ok(samples);
            }
            tokio::time::sleep(QUERY_INTERVAL).await;
        }
        self.query(promql).await
    }

    /// The Prometheus process, for its pid and logs.
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.process
    }

    /// Prometheus' temporary directory (config, logs, storage).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

fn parse_sample(value: &serde_json::Value) -> Result<Sample> {
    let bad = || HarnessError::unexpected("prometheus sample", value.to_string());
    let labels = value["metric"]
        .as_object()
        .ok_or_else(bad)?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let number = value["value"][1].as_str().ok_or_else(bad)?;
    let value = number.parse().map_err(|_| bad())?;
    Ok(Sample { labels, value })
}

/// Percent-encodes a query parameter (everything but unreserved characters).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_promql() {
        assert_eq!(
            super::encode("up{job=\"a b\"}"),
            "up%7Bjob%3D%22a%20b%22%7D"
        );
    }
}
