//! Every refusal: a clear message, its own exit status, and the file left
//! exactly as it was (bytes, mtime, inode, mode, and no new files beside it).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{fixture, Node};

/// Runs `args` and asserts a refusal with `code` whose stderr contains `needle`.
fn refused(node: &Node, args: &[&str], code: i32, needle: &str) {
    let before = node.snapshot();
    let run = node.run(args);
    assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
    assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    assert_eq!(node.snapshot(), before, "{args:?} changed the file");
}

#[test]
fn malformed_json_names_line_and_column() {
    let text =
        fixture("overlaybd-shipped.json").replacen("\"ioEngine\": 0,", "\"ioEngine\": 0,,", 1);
    let node = Node::with(&text);
    refused(
        &node,
        &["enable"],
        5,
        "malformed JSON at line 20, column 17",
    );
    refused(&node, &["status"], 5, "line 20, column 17");
}

#[test]
fn trailing_comma_is_refused() {
    let node = Node::with("{\n  \"p2pConfig\": {\"enable\": false},\n}\n");
    refused(&node, &["disable"], 5, "line 3, column 1");
}

#[test]
fn top_level_value_that_is_not_an_object() {
    for (text, what) in [("[]", "an array"), ("\"x\"", "a string"), ("null", "null")] {
        refused(&Node::with(text), &["enable"], 5, what);
    }
}

#[test]
fn p2p_that_is_not_an_object_and_duplicate_keys() {
    refused(
        &Node::with("{\"p2pConfig\": true}"),
        &["enable"],
        5,
        "not an object",
    );
    let dup = "{\"p2pConfig\": {\"enable\": false, \"enable\": false}}";
    refused(&Node::with(dup), &["enable"], 5, "more than once");
}

#[test]
fn address_without_scheme_or_with_bad_port() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    refused(
        &node,
        &["enable", "--address", "localhost:19145/dadip2p"],
        3,
        "http:// or https://",
    );
    refused(
        &node,
        &["enable", "--address", "127.0.0.1:65001/accelerator"],
        3,
        "bypass",
    );
    refused(
        &node,
        &["enable", "--address", "http://127.0.0.1:port/accelerator"],
        3,
        "not a number",
    );
    refused(
        &node,
        &["enable", "--address", "http://127.0.0.1:99999/accelerator"],
        3,
        "1-65535",
    );
}

#[test]
fn read_only_mode_is_refused_even_for_root() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    fs::set_permissions(&node.config, fs::Permissions::from_mode(0o444)).unwrap();
    refused(&node, &["enable"], 6, "read-only (mode 0444)");
    refused(&node, &["enable", "--dry-run"], 6, "read-only");
    // Nothing to change is not a refusal, even on a read-only file.
    let run = node.run(&["disable"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// `chattr +i` makes even root's rename fail; cleared again on drop so the
/// temp dir can be removed.
struct Immutable<'a>(&'a std::path::Path);

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(self.0).status();
    }
}

#[test]
fn immutable_file_is_refused_when_the_filesystem_supports_it() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    let set = Command::new("chattr").arg("+i").arg(&node.config).status();
    if !set.is_ok_and(|s| s.success()) {
        eprintln!("chattr +i unavailable here; the read-only mode test covers refusal");
        return;
    }
    let _guard = Immutable(&node.config);
    refused(&node, &["enable"], 6, "not writable");
}

#[test]
fn missing_file_without_create() {
    let node = Node::empty();
    for args in [&["enable"][..], &["disable"], &["status"]] {
        let run = node.run(args);
        assert_eq!(run.code, 4, "{args:?}");
        assert!(run.stderr.contains("file not found"), "{}", run.stderr);
        assert_eq!(run.stderr.contains("--create"), args[0] != "status");
        assert!(!node.config.exists());
    }
}

#[test]
fn json_errors_are_machine_readable() {
    let node = Node::with("{");
    let before = node.snapshot();
    let run = node.run(&["enable", "--json"]);
    assert_eq!(run.code, 5);
    let v = run.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 5);
    assert_eq!(v["error"], "config_invalid");
    assert!(v["message"].as_str().unwrap().contains("line 1, column 1"));
    assert_eq!(node.snapshot(), before);
}

#[test]
fn usage_errors_exit_2() {
    let node = Node::with("{}");
    assert_eq!(node.run(&["enable", "--no-such-flag"]).code, 2);
    assert_eq!(node.run(&["frobnicate"]).code, 2);
}

#[test]
fn empty_and_non_utf8_files_are_invalid() {
    refused(&Node::with(""), &["enable"], 5, "line 1, column 0");
    let node = Node::with("");
    fs::write(&node.config, b"{\"userAgent\": \"\xff\"}").unwrap();
    refused(&node, &["enable"], 5, "not UTF-8");
}
