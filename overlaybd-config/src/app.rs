//! The three commands, from validated flags to a report, with every refusal
//! happening before anything is written.
//!
//! Order of a change: check the address, read and parse the file, compute
//! the new text, stop after the diff on `--dry-run`, refuse a read-only
//! file, write unless the text is identical (idempotent: no write, no
//! backup), and only then restart. The directory lock is held from the read
//! to the write, not during the restart. A restart runs only when the file
//! changed or an earlier restart is still pending (see `pending`), so
//! re-running the same command from a configuration-management tool does
//! not bounce overlaybd on every pass, yet a retry after a failed restart
//! does restart. A failed restart does not roll the file back: the new file
//! is valid, and the cause (a unit that does not start) is usually unrelated
//! to the edit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::address::{AddressError, Endpoint};
use crate::cli::{ChangeArgs, Cli, Command};
use crate::document::{Document, DocumentError, P2pState};
use crate::edit::{self, Desired, EditError};
use crate::exit::Exit;
use crate::file::{self, FileError};
use crate::lock;
use crate::pending;
use crate::probe::{self, Health, Reachability};
use crate::restart::{self, Restart};
use crate::tls::{CaCertError, Trust};

/// Content the edit starts from when `--create` makes a new file.
const EMPTY_CONFIG: &str = "{}\n";

/// What overlaybd uses when p2pConfig has no address (its compiled-in default).
pub const OVERLAYBD_BUILTIN_ADDRESS: &str = "http://localhost:9731/accelerator";

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    CaCert(#[from] CaCertError),
    #[error("{path}: {source}")]
    Document {
        path: PathBuf,
        source: DocumentError,
    },
    #[error("{path}: refusing to write: {source}")]
    Edit { path: PathBuf, source: EditError },
    #[error("{}", restart_failed_message(.0, .1))]
    RestartFailed(Box<ChangeReport>, Restart),
    /// The new file is in place but may not be on disk; not restarted.
    #[error("{}", not_durable_message(.0, .1))]
    NotDurable(Box<ChangeReport>, FileError),
}

fn not_durable_message(report: &ChangeReport, e: &FileError) -> String {
    let mut msg = format!("{e}; check the disk (`dmesg`)");
    if report.restart_pending || report.marker_error.is_some() {
        msg.push_str(". overlaybd was not restarted");
        msg.push_str(&pending_note(report));
    }
    msg
}

/// Says what happened and what the operator can do next.
fn restart_failed_message(report: &ChangeReport, r: &Restart) -> String {
    let config = report.config.display();
    let unit = &r.service;
    let mut msg = if report.changed {
        format!("{config} was updated")
    } else {
        format!("{config} needed no change")
    };
    if let Some(b) = &report.backup {
        msg.push_str(&format!(" (previous file saved as {})", b.display()));
    }
    if !report.changed {
        msg.push_str(", and the restart pending from an earlier run was retried,");
    }
    msg.push_str(&format!(
        " but restarting {unit} failed: {}. overlaybd may be stopped or still on the old settings; \
         check `journalctl -u {unit}`, then run this command again or `systemctl restart {unit}` \
         (or `service {unit} restart`)",
        r.summary()
    ));
    if let Some(b) = &report.backup {
        msg.push_str(&format!(
            ", or put the previous file back with `cp -p {} {config}`",
            b.display()
        ));
    }
    msg.push_str(&pending_note(report));
    msg
}

/// What a rerun will do about the restart that did not happen.
fn pending_note(report: &ChangeReport) -> String {
    let marker = pending::path(&report.config);
    let marker = marker.display();
    match &report.marker_error {
        Some(e) => format!(
            ". Marking the restart as pending failed ({e}): a rerun that changes nothing \
             will not restart, so restart by hand"
        ),
        None if report.restart_pending => format!(
            ". The restart stays pending ({marker}): the next run with --restart restarts \
             even if nothing changes; after a restart by hand, remove that file"
        ),
        None => String::new(),
    }
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Address(_) => Exit::InvalidAddress,
            Error::CaCert(_) => Exit::Usage,
            Error::File(FileError::Missing { .. }) => Exit::ConfigMissing,
            Error::File(FileError::NotRegular(_) | FileError::Read { .. }) => Exit::Failure,
            Error::File(FileError::ReadOnlyMode { .. } | FileError::NotWritable { .. }) => {
                Exit::NotWritable
            }
            Error::File(FileError::Write { .. } | FileError::ChangedMeanwhile(_)) => {
                Exit::WriteFailed
            }
            Error::File(FileError::Locked { .. }) => Exit::Locked,
            Error::File(FileError::NotDurable { .. }) | Error::NotDurable(..) => Exit::NotDurable,
            Error::Document { .. } => Exit::ConfigInvalid,
            Error::Edit { .. } => Exit::Failure,
            Error::RestartFailed(..) => Exit::RestartFailed,
        }
    }
}

/// What `enable`/`disable` did.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeReport {
    pub action: &'static str,
    pub config: PathBuf,
    pub changed: bool,
    pub created: bool,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// p2pConfig as it is (or, on a dry run, would be) after the command.
    #[serde(rename = "p2pConfig")]
    pub p2p: P2pState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// After the run: a change written by a `--restart` run has not been
    /// followed by a successful restart yet (the marker exists).
    pub restart_pending: bool,
    /// Why the restart could not be marked as pending, when it could not.
    #[serde(skip)]
    pub marker_error: Option<String>,
}

/// Whether overlaybd would read through a working accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// p2pConfig absent or `enable` not true.
    Disabled,
    /// Enabled, reachable, and `/healthz` answered 200 (over verified TLS for https).
    Accelerated,
    /// Enabled but overlaybd would go to the origin: bad address or no connect.
    Bypassed,
    /// Enabled and reachable, but the health check failed (TLS handshake
    /// included): overlaybd would connect and then fail its reads.
    Unhealthy,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub config: PathBuf,
    #[serde(rename = "p2pConfig")]
    pub p2p: P2pState,
    pub verdict: Verdict,
    /// The address the checks used: p2pConfig.address, or overlaybd's
    /// built-in default when the key is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachability: Option<Reachability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// The file was changed by a `--restart` run whose restart has not
    /// succeeded yet, so overlaybd may still run on older settings.
    pub restart_pending: bool,
}

pub enum Outcome {
    Change(ChangeReport),
    Status(StatusReport),
}

impl Outcome {
    pub fn exit(&self) -> Exit {
        match self {
            Outcome::Status(s) if matches!(s.verdict, Verdict::Bypassed | Verdict::Unhealthy) => {
                Exit::AcceleratorUnavailable
            }
            _ => Exit::Ok,
        }
    }
}

pub fn run(cli: &Cli) -> Result<Outcome, Error> {
    match &cli.command {
        Command::Enable { address, change: c } => {
            Endpoint::parse(address)?;
            let want = Desired {
                enable: true,
                address: Some(address.clone()),
            };
            change(&cli.config, "enable", &want, c).map(Outcome::Change)
        }
        Command::Disable { change: c } => {
            let want = Desired {
                enable: false,
                address: None,
            };
            change(&cli.config, "disable", &want, c).map(Outcome::Change)
        }
        Command::Status { timeout, cacert } => {
            let trust = Trust::load(cacert.as_deref())?;
            status(&cli.config, Duration::from_secs(*timeout), &trust).map(Outcome::Status)
        }
    }
}

fn change(
    path: &Path,
    action: &'static str,
    want: &Desired,
    args: &ChangeArgs,
) -> Result<ChangeReport, Error> {
    let lock = lock::lock_dir(path)?;
    let loaded = file::load(path)?;
    if loaded.is_none() && !args.create {
        return Err(FileError::Missing {
            path: path.to_path_buf(),
            can_create: true,
        }
        .into());
    }
    let real = loaded
        .as_ref()
        .map_or(path, |l| l.path.as_path())
        .to_path_buf();
    let old = match &loaded {
        Some(l) => Document::parse_bytes(&l.bytes),
        None => Document::parse(EMPTY_CONFIG),
    }
    .map_err(|source| Error::Document {
        path: real.clone(),
        source,
    })?;
    let after = edit::apply(&old, want).map_err(|source| Error::Edit {
        path: real.clone(),
        source,
    })?;
    let new_text = &after.text;
    let created = loaded.is_none();
    let changed = created || *new_text != old.text;
    let mut report = ChangeReport {
        action,
        config: real.clone(),
        changed,
        created,
        dry_run: args.dry_run,
        backup: None,
        p2p: after.state(),
        diff: changed.then(|| unified_diff(&real, created, &old.text, new_text)),
        restart: None,
        restart_pending: pending::is_pending(&real),
        marker_error: None,
    };
    if args.dry_run {
        if let Some(l) = loaded.as_ref().filter(|_| changed) {
            file::check_writable(l)?;
        }
        return Ok(report);
    }
    let mut not_durable = None;
    if changed {
        let written = match &loaded {
            Some(l) => file::replace(l, new_text.as_bytes()).map(Some),
            None => file::create(&real, new_text.as_bytes()).map(|()| None),
        };
        match written {
            Ok(backup) => report.backup = backup,
            Err(e @ FileError::NotDurable { .. }) => {
                report.backup = loaded.as_ref().map(|_| file::backup_path(&real));
                not_durable = Some(e);
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(config = %real.display(), action, "p2pConfig written");
    }
    drop(lock);
    if let Some(e) = not_durable {
        // A disk that fails a sync is no place to carry on; the restart is
        // left for a rerun.
        if args.restart {
            mark_pending(&mut report, &args.service);
        }
        return Err(Error::NotDurable(Box::new(report), e));
    }
    if args.restart && (changed || report.restart_pending) {
        restart_tracked(&mut report, &args.service)?;
    }
    Ok(report)
}

/// Restarts `service`, keeping the restart marked as pending until it has
/// succeeded.
fn restart_tracked(report: &mut ChangeReport, service: &str) -> Result<(), Error> {
    let config = report.config.clone();
    mark_pending(report, service);
    let r = restart::restart(service, restart::TIMEOUT);
    report.restart = Some(r.clone());
    if !r.ok {
        return Err(Error::RestartFailed(Box::new(report.clone()), r));
    }
    match pending::clear(&config) {
        Ok(()) => report.restart_pending = false,
        Err(e) => tracing::warn!(
            error = %e,
            marker = %pending::path(&config).display(),
            "restarted, but the restart-pending marker stays; the next --restart run restarts again"
        ),
    }
    Ok(())
}

/// Marks a restart of `service` as owed, unless it already is.
fn mark_pending(report: &mut ChangeReport, service: &str) {
    if report.restart_pending {
        return;
    }
    match pending::mark(&report.config, service) {
        Ok(()) => report.restart_pending = true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot mark the restart as pending");
            report.marker_error = Some(e.to_string());
        }
    }
}

fn unified_diff(path: &Path, created: bool, old: &str, new: &str) -> String {
    let name = path.display().to_string();
    let from = if created { "/dev/null" } else { &name };
    let old = if created { "" } else { old };
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(from, &name)
        .to_string()
}

fn status(path: &Path, timeout: Duration, trust: &Trust) -> Result<StatusReport, Error> {
    let loaded = file::load(path)?.ok_or_else(|| FileError::Missing {
        path: path.to_path_buf(),
        can_create: false,
    })?;
    let doc = Document::parse_bytes(&loaded.bytes).map_err(|source| Error::Document {
        path: loaded.path.clone(),
        source,
    })?;
    let p2p = doc.state();
    let mut report = StatusReport {
        config: loaded.path.clone(),
        p2p: p2p.clone(),
        verdict: Verdict::Disabled,
        checked_address: None,
        address_error: None,
        reachability: None,
        health: None,
        restart_pending: pending::is_pending(&loaded.path),
    };
    let enabled = p2p.enable() == Some(&serde_json::Value::Bool(true));
    let endpoint = match p2p.address().map(|a| a.as_str()) {
        Some(Some(a)) => Endpoint::parse(a).map_err(|e| e.to_string()),
        Some(None) => Err("p2pConfig.address is not a string".to_string()),
        None => Endpoint::parse(OVERLAYBD_BUILTIN_ADDRESS).map_err(|e| e.to_string()),
    };
    let endpoint = match endpoint {
        Ok(e) => e,
        Err(e) => {
            report.address_error = Some(e);
            if enabled {
                report.verdict = Verdict::Bypassed;
            }
            return Ok(report);
        }
    };
    report.checked_address = Some(endpoint.to_string());
    let reach = probe::tcp_check(&endpoint, timeout);
    let health = if reach.reachable {
        probe::health_check(&endpoint, timeout, trust)
    } else {
        Health::not_checked(&endpoint, "not checked: no TCP connection")
    };
    if enabled {
        report.verdict = if !reach.reachable {
            Verdict::Bypassed
        } else if health.ok {
            Verdict::Accelerated
        } else {
            Verdict::Unhealthy
        };
    }
    report.reachability = Some(reach);
    report.health = Some(health);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(dir: &Path, restart_pending: bool, marker_error: Option<&str>) -> ChangeReport {
        ChangeReport {
            action: "enable",
            config: dir.join("overlaybd.json"),
            changed: true,
            created: false,
            dry_run: false,
            backup: Some(dir.join("overlaybd.json.bak")),
            p2p: Document::parse("{}").unwrap().state(),
            diff: None,
            restart: None,
            restart_pending,
            marker_error: marker_error.map(str::to_string),
        }
    }

    fn not_durable(dir: &Path) -> FileError {
        FileError::NotDurable {
            path: dir.join("overlaybd.json"),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        }
    }

    #[test]
    fn a_file_not_confirmed_on_disk_has_its_own_exit_and_says_it_changed() {
        let dir = Path::new("/etc/overlaybd");
        let plain = Error::NotDurable(Box::new(written(dir, false, None)), not_durable(dir));
        assert_eq!(plain.exit(), Exit::NotDurable);
        assert_eq!(Error::File(not_durable(dir)).exit(), Exit::NotDurable);
        let msg = plain.to_string();
        assert!(msg.contains("the new file is in place"), "{msg}");
        assert!(!msg.contains("unchanged"), "{msg}");
        assert!(!msg.contains("restart"), "no restart asked: {msg}");

        let pending = Error::NotDurable(Box::new(written(dir, true, None)), not_durable(dir));
        let msg = pending.to_string();
        assert!(msg.contains("overlaybd was not restarted"), "{msg}");
        assert!(
            msg.contains("/etc/overlaybd/overlaybd.json.restart-pending"),
            "{msg}"
        );

        let unmarked = written(dir, false, Some("disk full"));
        let msg = Error::NotDurable(Box::new(unmarked), not_durable(dir)).to_string();
        assert!(
            msg.contains("Marking the restart as pending failed (disk full)"),
            "{msg}"
        );
    }
}
