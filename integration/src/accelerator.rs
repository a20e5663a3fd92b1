//! The `dadi-p2p` daemon started from a binary path the caller gives (in the daemon's own
//! tests `env!("CARGO_BIN_EXE_dadi-p2p")`), on a free loopback port with a temporary cache
//! directory unless one is given, ready once `GET /healthz` answers 200.
//!
//! `restart` reuses the port and the cache directory, which is what the crash-safety tests
//! need: kill -9, start again, and the same URLs must hit the same cache. Resource figures
//! come from procfs: `VmHWM` (peak resident set) and `utime + stime`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{free_port, ProcessGuard, TERMINATE_GRACE};
use crate::{HarnessError, Result};

/// How to start the daemon.
#[derive(Clone, Debug)]
pub struct AcceleratorOptions {
    bin: PathBuf,
    config_yaml: Option<String>,
    cache_dir: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    ready_timeout: Duration,
}

impl AcceleratorOptions {
    /// Defaults: no config file, a temporary cache directory, 30 s to become ready.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            config_yaml: None,
            cache_dir: None,
            args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
        }
    }

    /// YAML text written to a file in the temp dir and passed with `--config`.
    pub fn config_yaml(mut self, yaml: impl Into<String>) -> Self {
        self.config_yaml = Some(yaml.into());
        self
    }

    /// Cache directory to use instead of a fresh temporary one.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// One extra command-line argument, after the harness's own.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Several extra command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the daemon, on top of the harness's own environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How long start-up may take before `/healthz` answers.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }
}

/// A running (or stopped, after `kill9`/`terminate`) daemon.
pub struct Accelerator {
    opts: AcceleratorOptions,
    port: u16,
    cache_dir: PathBuf,
    config_path: Option<PathBuf>,
    process: Option<ProcessGuard>,
    dir: TempDir,
}

impl Accelerator {
    /// Starts the daemon and waits for `/healthz`.
    pub fn start(opts: AcceleratorOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("dadi-accel-")
            .tempdir()
            .map_err(|e| HarnessError::io("create accelerator dir", e))?;
        let cache_dir = opts
            .cache_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("cache"));
        std::fs::create_dir_all(&cache_dir)
            .map_err(|e| HarnessError::io(format!("create {}", cache_dir.display()), e))?;
        let config_path = match &opts.config_yaml {
            Some(yaml) => {
                let path = dir.path().join("config.yaml");
                std::fs::write(&path, yaml)
                    .map_err(|e| HarnessError::io("write accelerator config", e))?;
                Some(path)
            }
            None => None,
        };
        let mut accelerator = Self {
            port: free_port()?,
            opts,
            cache_dir,
            config_path,
            process: None,
            dir,
        };
        accelerator.spawn()?;
        Ok(accelerator)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.opts.bin);
        if let Some(config) = &self.config_path {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(&self.opts.args)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        let mut process = ProcessGuard::spawn("dadi-p2p", cmd, self.dir.path())?;
        process.wait_ready(
            &format!("{}/healthz", self.base_url()),
            &[200],
            None,
            self.opts.ready_timeout,
        )?;
        tracing::info!(port = self.port, pid = process.pid(), "dadi-p2p ready");
        self.process = Some(process);
        Ok(())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The daemon's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>/accelerator/<blob_url>`, the URL overlaybd requests.
    pub fn accelerator_url(&self, blob_url: &str) -> String {
        format!("{}/accelerator/{blob_url}", self.base_url())
    }

    /// The cache directory passed with `--cache-dir`.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The directory holding the config file and the daemon's stdout/stderr files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The tail of the daemon's output.
    pub fn logs(&self) -> String {
        self.process
            .as_ref()
            .map(ProcessGuard::logs)
            .unwrap_or_default()
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Result<u32> {
        Ok(self.running()?.pid())
    }

    /// Kills the daemon with SIGKILL (a crash, as far as the daemon can tell) and reaps it.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        let mut process = self.process.take().ok_or_else(|| self.not_running())?;
        Ok(process.kill())
    }

    /// Sends SIGTERM and waits for exit (SIGKILL after 30 s); returns the exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut process = self.process.take().ok_or_else(|| self.not_running())?;
        process.terminate(TERMINATE_GRACE)
    }

    /// Starts the daemon again on the same port with the same cache directory and config,
    /// stopping it first (SIGTERM) if it still runs.
    pub fn restart(&mut self) -> Result<()> {
        if self.process.is_some() {
            self.terminate()?;
        }
        self.spawn()
    }

    /// Peak resident set size in KiB (`VmHWM` in `/proc/<pid>/status`).
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let pid = self.pid()?;
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).map_err(|e| HarnessError::io(&path, e))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| HarnessError::unexpected(path, "no VmHWM line"))
    }

    /// User plus system CPU time the daemon has used, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.pid()?)
    }

    fn running(&self) -> Result<&ProcessGuard> {
        self.process.as_ref().ok_or_else(|| self.not_running())
    }

    fn not_running(&self) -> HarnessError {
        HarnessError::NotRunning {
            name: "dadi-p2p".into(),
        }
    }
}

/// `utime + stime` of a process from `/proc/<pid>/stat`, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| HarnessError::io(&path, e))?;
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| HarnessError::unexpected(&path, "no ')'"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3 overall, utime 14 and stime 15 (1-based).
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
        return Err(HarnessError::unexpected(path, "short stat line"));
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((utime + stime) as f64 / hz)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_cpu_time() {
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let secs = super::cpu_seconds(std::process::id()).unwrap();
        assert!(secs > 0.0, "cpu seconds {secs}");
    }
}
