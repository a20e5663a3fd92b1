//! `--restart` with fake `systemctl` and `service` on PATH that record their
//! arguments and exit as told.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::support::{fixture, Node};

fn shipped() -> Node {
    Node::with(&fixture("overlaybd-shipped.json"))
}

#[test]
fn systemctl_restarts_after_a_change() {
    let node = shipped();
    node.fake("systemctl", 0);
    node.fake("service", 0);
    let run = node.run(&["enable", "--restart"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(node.calls("systemctl"), ["restart overlaybd-tcmu"]);
    assert!(node.calls("service").is_empty());
    assert!(
        run.stdout.contains("restarted overlaybd-tcmu"),
        "{}",
        run.stdout
    );
    assert!(!node.marker().exists(), "nothing pending after a restart");
}

#[test]
fn failing_systemctl_falls_back_to_service() {
    let node = shipped();
    node.fake("systemctl", 1);
    node.fake("service", 0);
    let run = node.run(&["enable", "--restart", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(node.calls("systemctl"), ["restart overlaybd-tcmu"]);
    assert_eq!(node.calls("service"), ["overlaybd-tcmu restart"]);
    let v = run.json();
    assert_eq!(v["restart"]["ok"], true);
    let attempts = v["restart"]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["result"], "failed");
    assert_eq!(attempts[0]["code"], 1);
    assert_eq!(attempts[1]["result"], "succeeded");
}

#[test]
fn missing_systemctl_falls_back_to_service() {
    let node = shipped();
    node.fake("service", 0);
    let run = node.run(&["disable", "--restart", "--service", "overlaybd-custom"]);
    // The shipped file is already disabled: nothing changes, nothing restarts.
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(node.calls("service").is_empty());

    let run = node.run(&["enable", "--restart", "--service", "overlaybd-custom"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(node.calls("service"), ["overlaybd-custom restart"]);
    assert!(
        run.stdout.contains("was not found on PATH"),
        "{}",
        run.stdout
    );
}

#[test]
fn failed_restart_keeps_the_new_file_and_says_what_to_do() {
    let node = shipped();
    node.fake("systemctl", 3);
    node.fake("service", 4);
    let run = node.run(&["enable", "--restart", "--json"]);
    assert_eq!(run.code, 8, "{}", run.stderr);
    assert_eq!(node.calls("systemctl"), ["restart overlaybd-tcmu"]);
    assert_eq!(node.calls("service"), ["overlaybd-tcmu restart"]);
    assert!(node.read().contains("\"enable\": true"), "new file stays");
    assert_eq!(
        fs::read_to_string(node.backup()).unwrap(),
        fixture("overlaybd-shipped.json")
    );
    for needle in [
        "was updated",
        "exited with status 3",
        "exited with status 4",
        "journalctl -u overlaybd-tcmu",
        "systemctl restart overlaybd-tcmu",
        "cp -p",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing {needle:?}: {}",
            run.stderr
        );
    }
    let v = run.json();
    assert_eq!(
        (v["ok"].clone(), v["error"].clone()),
        (false.into(), "restart_failed".into())
    );
    assert_eq!(v["changed"], true);
    assert_eq!(v["restart"]["ok"], false);
    assert_eq!(v["restart_pending"], true);
    assert_eq!(
        fs::read_to_string(node.marker()).unwrap(),
        "overlaybd-tcmu\n"
    );
    assert!(
        run.stderr.contains("restart stays pending"),
        "{}",
        run.stderr
    );
}

/// Content, inode and mtime of the config file and of its backup.
fn written(node: &Node) -> Vec<(Vec<u8>, u64, i64, i64)> {
    [node.config.clone(), node.backup()]
        .iter()
        .map(|p| {
            let m = fs::metadata(p).unwrap();
            (fs::read(p).unwrap(), m.ino(), m.mtime(), m.mtime_nsec())
        })
        .collect()
}

/// Leaves the node as a failed `enable --restart` does: new file, restart owed.
fn after_a_failed_restart() -> Node {
    let node = shipped();
    node.fake("systemctl", 1);
    node.fake("service", 1);
    assert_eq!(node.run(&["enable", "--restart"]).code, 8);
    assert!(node.marker().exists());
    node
}

#[test]
fn a_retry_after_a_failed_restart_restarts_though_nothing_changes() {
    let node = after_a_failed_restart();
    let status = node.run(&["status", "--json"]).json();
    assert_eq!(status["restart_pending"], true);
    let text = node.run(&["status"]).stdout;
    assert!(text.contains("restart:    pending"), "{text}");

    node.fake("systemctl", 0);
    let before = written(&node);
    let run = node.run(&["enable", "--restart", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["changed"], false);
    assert_eq!(v["restart"]["ok"], true);
    assert_eq!(v["restart_pending"], false);
    assert_eq!(node.calls("systemctl").len(), 2, "retried once more");
    assert!(!node.marker().exists(), "removed once restarted");
    assert_eq!(written(&node), before, "neither file nor backup rewritten");

    // Now nothing is owed: the next pass neither writes nor restarts.
    assert_eq!(node.run(&["enable", "--restart"]).code, 0);
    assert_eq!(node.calls("systemctl").len(), 2);
    assert_eq!(
        node.run(&["status", "--json"]).json()["restart_pending"],
        false
    );
}

/// With no restart pending, a run that changes nothing does not restart.
#[test]
fn no_restart_without_a_change_or_on_a_dry_run() {
    let node = shipped();
    node.fake("systemctl", 0);
    assert_eq!(node.run(&["enable", "--dry-run", "--restart"]).code, 0);
    assert_eq!(node.run(&["disable", "--restart"]).code, 0);
    assert!(node.calls("systemctl").is_empty());
    assert_eq!(node.run(&["enable", "--restart"]).code, 0);
    assert_eq!(node.run(&["enable", "--restart"]).code, 0);
    assert_eq!(node.calls("systemctl"), ["restart overlaybd-tcmu"]);
    assert!(!node.marker().exists());
}

#[test]
fn restart_is_only_done_when_asked() {
    let node = shipped();
    node.fake("systemctl", 0);
    assert_eq!(node.run(&["enable"]).code, 0);
    assert!(node.calls("systemctl").is_empty());
}

#[test]
fn a_pending_restart_that_fails_again_stays_pending() {
    let node = after_a_failed_restart();
    let before = written(&node);
    let run = node.run(&["enable", "--restart", "--json"]);
    assert_eq!(run.code, 8, "{}", run.stderr);
    let v = run.json();
    assert_eq!(
        (v["changed"].clone(), v["restart_pending"].clone()),
        (false.into(), true.into())
    );
    assert!(v.get("backup").is_none());
    for needle in [
        "needed no change",
        "pending from an earlier run",
        "stays pending",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing {needle:?}: {}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("cp -p"), "no backup written this run");
    assert_eq!(node.calls("systemctl").len(), 2);
    assert!(node.marker().exists());
    assert_eq!(written(&node), before);
}

#[test]
fn a_change_with_a_successful_restart_settles_a_pending_one() {
    let node = after_a_failed_restart();
    node.fake("systemctl", 0);
    let run = node.run(&["disable", "--restart"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(node.read().contains("\"enable\": false"));
    assert!(!node.marker().exists());
    assert!(!run.stdout.contains("pending"), "{}", run.stdout);
}

#[test]
fn dry_runs_and_runs_without_restart_only_report_a_pending_restart() {
    let node = after_a_failed_restart();
    node.fake("systemctl", 0);
    let marker = || {
        let m = fs::metadata(node.marker()).unwrap();
        (
            fs::read(node.marker()).unwrap(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
        )
    };
    let before = (marker(), node.snapshot());
    for args in [
        &["enable", "--dry-run", "--restart"][..],
        &["disable", "--dry-run", "--restart"],
        &["enable"],
    ] {
        let run = node.run(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("restart pending"),
            "{args:?}: {}",
            run.stdout
        );
        let mut json = args.to_vec();
        json.push("--json");
        assert_eq!(node.run(&json).json()["restart_pending"], true, "{args:?}");
    }
    assert_eq!(node.calls("systemctl").len(), 1, "only the failed run");
    assert_eq!(
        (marker(), node.snapshot()),
        before,
        "marker and file untouched"
    );
}

#[test]
fn a_dry_run_never_creates_the_marker() {
    let node = shipped();
    node.fake("systemctl", 1);
    node.fake("service", 1);
    let before = node.snapshot();
    let run = node.run(&["enable", "--dry-run", "--restart", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["restart_pending"], false);
    assert!(node.calls("systemctl").is_empty());
    assert_eq!(node.snapshot(), before, "no marker, no write");
}
