//! What the operator or a script sees: short text by default, one JSON
//! object on stdout with `--json`.
//!
//! Every JSON object carries `ok` and `exit_code`, so a script can read the
//! outcome without also capturing the process status. Errors always go to
//! stderr as one line as well, so a human watching a `--json` run sees them.

use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::app::{ChangeReport, Error, Outcome, StatusReport, Verdict};
use crate::document::P2pState;
use crate::exit::Exit;
use crate::pending;
use crate::probe::{Health, HealthOutcome};

/// Prints the result and returns the exit status to end with.
pub fn print(result: &Result<Outcome, Error>, json: bool) -> Exit {
    let exit = match result {
        Ok(o) => o.exit(),
        Err(e) => e.exit(),
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = result {
        eprintln!("overlaybd-p2p: error: {e}");
    }
    let text = if json {
        render_json(result, exit)
    } else {
        match result {
            Ok(Outcome::Change(c)) => change_text(c),
            Err(Error::RestartFailed(c, _) | Error::NotDurable(c, _)) => change_text(c),
            Ok(Outcome::Status(s)) => status_text(s),
            Err(_) => String::new(),
        }
    };
    // A closed stdout (e.g. piped into `head`) must not turn success into a panic.
    let _ = out.write_all(text.as_bytes());
    exit
}

fn render_json(result: &Result<Outcome, Error>, exit: Exit) -> String {
    let failed = result.is_err() || exit != Exit::Ok;
    let mut obj = Map::new();
    obj.insert("ok".into(), Value::Bool(!failed));
    obj.insert("exit_code".into(), exit.code().into());
    if failed {
        obj.insert("error".into(), to_value(exit));
    }
    if let Err(e) = result {
        obj.insert("message".into(), e.to_string().into());
    }
    let body = match result {
        Ok(Outcome::Change(c)) => to_value(c),
        Err(Error::RestartFailed(c, _) | Error::NotDurable(c, _)) => to_value(c),
        Ok(Outcome::Status(s)) => to_value(s),
        Err(_) => Value::Null,
    };
    if let Value::Object(body) = body {
        obj.extend(body);
    }
    format!("{}\n", Value::Object(obj))
}

/// The report types hold only strings, numbers and maps, which always serialize.
fn to_value(v: impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn p2p_text(p: &P2pState) -> String {
    if !p.present() {
        return "p2pConfig absent".to_string();
    }
    let show = |v: Option<&Value>| v.map_or("(unset)".to_string(), Value::to_string);
    let mut out = format!("enable={} address={}", show(p.enable()), show(p.address()));
    let others = p.other_keys();
    if !others.is_empty() {
        out.push_str(&format!(" (also: {})", others.join(", ")));
    }
    out
}

fn change_text(c: &ChangeReport) -> String {
    let path = c.config.display();
    let p2p = p2p_text(&c.p2p);
    let mut out = String::new();
    if c.dry_run {
        if let Some(d) = &c.diff {
            out.push_str(d);
        }
        if c.changed {
            out.push_str(&format!("dry run: {path} not changed; would set {p2p}\n"));
        } else {
            out.push_str(&format!("{path}: already {p2p}; nothing to do\n"));
        }
        out.push_str(&pending_text(c));
        return out;
    }
    match (c.changed, c.created, &c.backup) {
        (false, _, _) => out.push_str(&format!("{path}: already {p2p}; nothing written\n")),
        (true, true, _) => out.push_str(&format!("{path}: created with {p2p}\n")),
        (true, false, Some(b)) => out.push_str(&format!(
            "{path}: set {p2p}; previous file saved as {}\n",
            b.display()
        )),
        (true, false, None) => out.push_str(&format!("{path}: set {p2p}\n")),
    }
    match c.restart.as_ref().filter(|r| r.ok) {
        Some(r) if c.changed => {
            out.push_str(&format!("restarted {}: {}\n", r.service, r.summary()));
        }
        Some(r) => out.push_str(&format!(
            "restarted {} (pending from an earlier run): {}\n",
            r.service,
            r.summary()
        )),
        None => {}
    }
    out.push_str(&pending_text(c));
    out
}

/// A line about a restart still owed, unless this run just attempted it
/// (a failed attempt is explained by the error message).
fn pending_text(c: &ChangeReport) -> String {
    if !c.restart_pending || c.restart.is_some() {
        return String::new();
    }
    format!(
        "restart pending: overlaybd has not been restarted since the file was written ({}); \
         a run with --restart restarts it\n",
        pending::path(&c.config).display()
    )
}

/// The `health:` line, plus a `tls:` line for https and a `hint:` line when
/// a failed handshake has a known usual cause.
fn health_text(h: &Health) -> String {
    let get = format!("GET {}", h.url);
    let line = match (h.outcome, h.status, &h.error) {
        (HealthOutcome::Ok, Some(code), _) => format!("ok ({get} -> {code})"),
        (HealthOutcome::BadStatus, Some(code), _) => format!("failing ({get} -> {code})"),
        (HealthOutcome::NotChecked, _, e) => e.as_deref().unwrap_or("not checked").to_string(),
        (_, _, e) => format!("failing ({})", e.as_deref().unwrap_or("no answer")),
    };
    let mut out = format!("health:     {line}\n");
    if let Some(t) = h.tls.as_ref().filter(|t| t.verified) {
        let version = t.version.map(|v| format!("{v}, ")).unwrap_or_default();
        out.push_str(&format!(
            "tls:        {version}certificate verified for {}\n",
            t.server_name
        ));
    }
    if let Some(hint) = h.tls.as_ref().and_then(|t| t.hint.as_ref()) {
        out.push_str(&format!("hint:       {hint}\n"));
    }
    out
}

fn status_text(s: &StatusReport) -> String {
    let mut out = format!("config:     {}\n", s.config.display());
    out.push_str(&format!("p2pConfig:  {}\n", p2p_text(&s.p2p)));
    if let Some(e) = &s.address_error {
        out.push_str(&format!("address:    invalid: {e}\n"));
    } else if !matches!(s.p2p.address(), Some(Value::String(_))) {
        if let Some(a) = &s.checked_address {
            out.push_str(&format!(
                "address:    not set; overlaybd's built-in default is {a}\n"
            ));
        }
    }
    if let Some(r) = &s.reachability {
        let line = match &r.error {
            None => format!("yes (TCP connect to {})", r.target),
            Some(e) => format!("no ({e})"),
        };
        out.push_str(&format!("reachable:  {line}\n"));
    }
    if let Some(h) = &s.health {
        out.push_str(&health_text(h));
    }
    if s.restart_pending {
        out.push_str(&format!(
            "restart:    pending; overlaybd was not restarted after the last change ({}), \
             so it may run on older settings; rerun enable or disable with --restart\n",
            pending::path(&s.config).display()
        ));
    }
    let verdict = match s.verdict {
        Verdict::Disabled => "P2P disabled; overlaybd reads from its own cache and the registry",
        Verdict::Accelerated => "new overlaybd devices read through the accelerator",
        Verdict::Bypassed => "P2P enabled but overlaybd would bypass the accelerator",
        Verdict::Unhealthy => "P2P enabled but the accelerator is unhealthy; reads may fail",
    };
    out.push_str(&format!("verdict:    {verdict}\n"));
    out
}
