//! Restarting overlaybd so it reads the new p2pConfig (overlaybd reads its
//! configuration only at start).
//!
//! `systemctl restart <unit>` is tried first; when systemctl is missing or
//! fails, `service <unit> restart` is tried, which covers hosts without
//! systemd. On a systemd host `service` forwards to systemctl, so a unit that
//! fails to start is tried twice; that is harmless for a restart. Both
//! commands are found through `PATH`. Their output goes to this tool's
//! stderr so it never mixes with `--json` output on stdout, and a command
//! that hangs is killed after [`TIMEOUT`].

use std::io;
use std::os::fd::AsFd;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The unit overlaybd runs as.
pub const DEFAULT_SERVICE: &str = "overlaybd-tcmu";

/// Longer than systemd's default stop timeout (90 s), so a slow but working
/// restart is not cut short.
pub const TIMEOUT: Duration = Duration::from_secs(120);

const POLL: Duration = Duration::from_millis(50);

/// How one restart command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// Non-zero exit; `code` is absent when a signal ended it.
    Failed {
        code: Option<i32>,
    },
    NotFound,
    TimedOut,
    SpawnError {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub command: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Every command tried, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restart {
    pub service: String,
    pub ok: bool,
    pub attempts: Vec<Attempt>,
}

impl Restart {
    /// One line per attempt for messages.
    pub fn summary(&self) -> String {
        self.attempts
            .iter()
            .map(|a| format!("`{}` {}", a.command, a.outcome))
            .collect::<Vec<_>>()
            .join(", then ")
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Succeeded => write!(f, "succeeded"),
            Outcome::Failed { code: Some(c) } => write!(f, "exited with status {c}"),
            Outcome::Failed { code: None } => write!(f, "was killed by a signal"),
            Outcome::NotFound => write!(f, "was not found on PATH"),
            Outcome::TimedOut => write!(f, "timed out after {}s", TIMEOUT.as_secs()),
            Outcome::SpawnError { error } => write!(f, "could not start: {error}"),
        }
    }
}

/// Restarts `service`, falling back from systemctl to service.
pub fn restart(service: &str, timeout: Duration) -> Restart {
    let mut attempts = vec![run("systemctl", &["restart", service], timeout)];
    if attempts[0].outcome != Outcome::Succeeded {
        attempts.push(run("service", &[service, "restart"], timeout));
    }
    let ok = attempts
        .last()
        .is_some_and(|a| a.outcome == Outcome::Succeeded);
    Restart {
        service: service.to_string(),
        ok,
        attempts,
    }
}

fn run(program: &str, args: &[&str], timeout: Duration) -> Attempt {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let outcome = match spawn_and_wait(program, args, timeout) {
        Ok(Some(status)) if status.success() => Outcome::Succeeded,
        Ok(Some(status)) => Outcome::Failed {
            code: status.code(),
        },
        Ok(None) => Outcome::TimedOut,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Outcome::NotFound,
        Err(e) => Outcome::SpawnError {
            error: e.to_string(),
        },
    };
    tracing::debug!(%command, %outcome, "restart attempt");
    Attempt { command, outcome }
}

/// `Ok(None)` means the command was killed after `timeout`.
fn spawn_and_wait(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> io::Result<Option<ExitStatus>> {
    let stdout = io::stderr().as_fd().try_clone_to_owned()?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .spawn()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_of_single_commands() {
        let t = Duration::from_secs(30);
        assert_eq!(run("true", &[], t).outcome, Outcome::Succeeded);
        assert_eq!(
            run("sh", &["-c", "exit 3"], t).outcome,
            Outcome::Failed { code: Some(3) }
        );
        assert_eq!(
            run("overlaybd-p2p-no-such-command", &[], t).outcome,
            Outcome::NotFound
        );
    }

    #[test]
    fn a_hanging_command_is_killed() {
        let a = run("sleep", &["600"], Duration::from_millis(200));
        assert_eq!(a.outcome, Outcome::TimedOut);
        assert_eq!(a.command, "sleep 600");
    }
}
