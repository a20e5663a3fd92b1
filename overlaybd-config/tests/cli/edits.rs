//! enable/disable on overlaybd's shipped file and on variants, asserting the
//! whole file byte for byte: only the owned values may differ.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::{fixture, lines, replace_once, Node, DEFAULT_ADDRESS};

const SHIPPED_P2P: &str = "\"enable\": false,\n    \"address\": \"localhost:19145/dadip2p\"";

fn shipped_enabled(address: &str) -> String {
    replace_once(
        &fixture("overlaybd-shipped.json"),
        SHIPPED_P2P,
        &format!("\"enable\": true,\n    \"address\": \"{address}\""),
    )
}

#[test]
fn enable_on_shipped_file_changes_only_p2p_values_and_keeps_mode_owner() {
    let original = fixture("overlaybd-shipped.json");
    let node = Node::with(&original);
    fs::set_permissions(&node.config, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&node.config, Some(1234), Some(5678)).unwrap();

    let run = node.run(&["enable"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(node.read(), shipped_enabled(DEFAULT_ADDRESS));
    assert_eq!(fs::read_to_string(node.backup()).unwrap(), original);
    for path in [&node.config, &node.backup()] {
        let m = fs::metadata(path).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1234, 5678));
    }
    assert!(
        run.stdout.contains("previous file saved as"),
        "{}",
        run.stdout
    );
}

#[test]
fn enabling_twice_writes_nothing_the_second_time() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    assert_eq!(node.run(&["enable"]).code, 0);
    let before = node.snapshot();
    let backup = fs::read(node.backup()).unwrap();
    let run = node.run(&["enable", "--json"]);
    assert_eq!(run.code, 0);
    assert_eq!(run.json()["changed"], false);
    assert_eq!(node.snapshot(), before);
    assert_eq!(fs::read(node.backup()).unwrap(), backup);
}

#[test]
fn disable_keeps_the_address_and_disable_of_disabled_is_a_no_op() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    let before = node.snapshot();
    assert_eq!(node.run(&["disable"]).code, 0);
    assert_eq!(node.snapshot(), before, "already disabled: nothing written");
    assert!(!node.backup().exists());

    let address = "https://localhost:65001/accelerator";
    assert_eq!(node.run(&["enable", "--address", address]).code, 0);
    assert_eq!(node.read(), shipped_enabled(address));
    assert_eq!(node.run(&["disable"]).code, 0);
    let expected = replace_once(
        &fixture("overlaybd-shipped.json"),
        "localhost:19145/dadip2p",
        address,
    );
    assert_eq!(node.read(), expected);
}

#[test]
fn compact_one_line_file() {
    let p2p_before = r#""p2pConfig":{"enable":false,"address":"localhost:19145/dadip2p"}"#;
    let p2p_after = format!(r#""p2pConfig":{{"enable":true,"address":"{DEFAULT_ADDRESS}"}}"#);
    let text = format!(r#"{{"logConfig":{{"logLevel":1}},{p2p_before},"ioEngine":0}}"#);
    let node = Node::with(&text);
    assert_eq!(node.run(&["enable"]).code, 0);
    assert_eq!(node.read(), replace_once(&text, p2p_before, &p2p_after));
}

#[test]
fn tab_indented_file_without_p2p_gets_a_tab_indented_p2p() {
    let node = Node::with(&lines(&[
        "{",
        "\t\"ioEngine\": 0,",
        "\t\"download\": {",
        "\t\t\"enable\": true",
        "\t}",
        "}",
    ]));
    assert_eq!(node.run(&["enable"]).code, 0);
    let address = format!("\t\t\"address\": \"{DEFAULT_ADDRESS}\"");
    let expected = lines(&[
        "{",
        "\t\"ioEngine\": 0,",
        "\t\"download\": {",
        "\t\t\"enable\": true",
        "\t},",
        "\t\"p2pConfig\": {",
        "\t\t\"enable\": true,",
        &address,
        "\t}",
        "}",
    ]);
    assert_eq!(node.read(), expected);
}

#[test]
fn shipped_file_without_p2p_gets_it_appended_in_two_space_style() {
    let shipped = fixture("overlaybd-shipped.json");
    let without = replace_once(
        &shipped,
        &format!("  \"p2pConfig\": {{\n    {SHIPPED_P2P}\n  }},\n"),
        "",
    );
    let node = Node::with(&without);
    assert_eq!(node.run(&["enable"]).code, 0);
    let tail = lines(&["    \"address\": \"http://127.0.0.1:9862\"", "  }", "}"]);
    let address = format!("    \"address\": \"{DEFAULT_ADDRESS}\"");
    let new_tail = lines(&[
        "    \"address\": \"http://127.0.0.1:9862\"",
        "  },",
        "  \"p2pConfig\": {",
        "    \"enable\": true,",
        &address,
        "  }",
        "}",
    ]);
    let expected = replace_once(&without, &tail, &new_tail);
    assert_eq!(node.read(), expected);
}

#[test]
fn unknown_keys_odd_spacing_and_key_order_survive() {
    let original = fixture("overlaybd-unknown-keys.json");
    let node = Node::with(&original);
    assert_eq!(node.run(&["enable"]).code, 0);
    let expected = replace_once(
        &original,
        "\"address\": \"localhost:19145/dadip2p\",\n        \"enable\": false",
        &format!("\"address\": \"{DEFAULT_ADDRESS}\",\n        \"enable\": true"),
    );
    assert_eq!(node.read(), expected);
}

#[test]
fn p2p_with_its_own_extra_keys_keeps_them_and_gets_missing_owned_keys() {
    let text = lines(&[
        "{",
        "  \"p2pConfig\": {",
        "    \"cacheSizeGB\": 8,",
        "    \"note\": \"kept\"",
        "  }",
        "}",
    ])
    .replace('\n', "\r\n");
    let node = Node::with(&text);
    let v = node.run(&["enable", "--json"]).json();
    assert_eq!(v["exit_code"], 0);
    assert_eq!(
        v["p2pConfig"]["cacheSizeGB"], 8,
        "JSON shows the whole object"
    );
    assert_eq!(v["p2pConfig"]["note"], "kept");
    let address = format!("    \"address\": \"{DEFAULT_ADDRESS}\"");
    let expected = lines(&[
        "{",
        "  \"p2pConfig\": {",
        "    \"cacheSizeGB\": 8,",
        "    \"note\": \"kept\",",
        "    \"enable\": true,",
        &address,
        "  }",
        "}",
    ]);
    assert_eq!(node.read(), expected.replace('\n', "\r\n"));
    let run = node.run(&["disable"]);
    assert!(
        run.stdout.contains("(also: cacheSizeGB, note)"),
        "{}",
        run.stdout
    );
}

#[test]
fn dry_run_prints_a_diff_and_touches_nothing() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    let before = node.snapshot();
    let run = node.run(&["enable", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(node.snapshot(), before);
    assert!(!node.backup().exists());
    for line in [
        "-    \"enable\": false,",
        "-    \"address\": \"localhost:19145/dadip2p\"",
        "+    \"enable\": true,",
        &format!("+    \"address\": \"{DEFAULT_ADDRESS}\""),
        "dry run:",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?} in:\n{}",
            run.stdout
        );
    }
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with(['-', '+']))
            .count(),
        6
    );
}

#[test]
fn json_output_describes_the_change() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    let run = node.run(&["--json", "enable"]);
    let v = run.json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["action"], "enable");
    assert_eq!(v["changed"], true);
    assert_eq!(v["p2pConfig"]["enable"], true);
    assert_eq!(v["p2pConfig"]["address"], DEFAULT_ADDRESS);
    assert_eq!(v["backup"], node.backup().to_str().unwrap());
    assert!(v["diff"]
        .as_str()
        .unwrap()
        .contains("+    \"enable\": true,"));
    assert!(v.get("restart").is_none());
}

#[test]
fn create_makes_a_minimal_file_once() {
    let node = Node::empty();
    let run = node.run(&["disable", "--create"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        node.read(),
        "{\n  \"p2pConfig\": {\n    \"enable\": false\n  }\n}\n"
    );
    assert_eq!(fs::metadata(&node.config).unwrap().mode() & 0o777, 0o644);
    assert!(!node.backup().exists());
    assert_eq!(node.run(&["enable", "--create"]).code, 0);
    let address = format!("    \"address\": \"{DEFAULT_ADDRESS}\"");
    let expected = lines(&[
        "{",
        "  \"p2pConfig\": {",
        "    \"enable\": true,",
        &address,
        "  }",
        "}",
    ]);
    assert_eq!(node.read(), expected);
}

#[test]
fn create_with_dry_run_creates_nothing() {
    let node = Node::empty();
    let run = node.run(&["enable", "--create", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("--- /dev/null"), "{}", run.stdout);
    assert!(!node.config.exists());
}
