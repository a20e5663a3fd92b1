//! `--restart` with fake `systemctl` and `service` on PATH that record their
//! arguments and exit as told.

use std::fs;

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
}

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
}

#[test]
fn restart_is_only_done_when_asked() {
    let node = shipped();
    node.fake("systemctl", 0);
    assert_eq!(node.run(&["enable"]).code, 0);
    assert!(node.calls("systemctl").is_empty());
}
