//! `status` against an accelerator stand-in on 127.0.0.1 speaking plain
//! HTTP (the TLS cases are in `status_tls`).

use crate::accelerator::Accelerator;
use crate::support::{fixture, replace_once, ClosedPort, Node};

pub fn node_with(enable: bool, address: &str) -> Node {
    Node::with(&replace_once(
        &fixture("overlaybd-shipped.json"),
        "\"enable\": false,\n    \"address\": \"localhost:19145/dadip2p\"",
        &format!("\"enable\": {enable},\n    \"address\": \"{address}\""),
    ))
}

#[test]
fn enabled_and_healthy() {
    let acc = Accelerator::start("200 OK");
    let node = node_with(true, &format!("http://127.0.0.1:{}/accelerator", acc.port));
    let before = node.snapshot();
    let run = node.run(&["status"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("reachable:  yes"), "{}", run.stdout);
    assert!(run.stdout.contains("-> 200"), "{}", run.stdout);
    assert_eq!(acc.requests(), ["GET /healthz HTTP/1.1"]);
    assert_eq!(node.snapshot(), before, "status never writes");

    let v = node.run(&["status", "--json"]).json();
    assert_eq!(v["verdict"], "accelerated");
    assert_eq!(v["reachability"]["reachable"], true);
    assert_eq!(v["health"]["status"], 200);
    assert_eq!(v["p2pConfig"]["enable"], true);
}

#[test]
fn enabled_but_unhealthy() {
    let acc = Accelerator::start("503 Service Unavailable");
    let node = node_with(true, &format!("http://127.0.0.1:{}/accelerator", acc.port));
    let run = node.run(&["status", "--json"]);
    assert_eq!(run.code, 9);
    let v = run.json();
    assert_eq!(v["verdict"], "unhealthy");
    assert_eq!(v["error"], "accelerator_unavailable");
    assert_eq!(v["health"]["status"], 503);
}

#[test]
fn enabled_but_unreachable_is_bypassed() {
    let closed = ClosedPort::new();
    let node = node_with(
        true,
        &format!("http://127.0.0.1:{}/accelerator", closed.port),
    );
    let run = node.run(&["status"]);
    assert_eq!(run.code, 9, "{}", run.stdout);
    assert!(run.stdout.contains("reachable:  no"), "{}", run.stdout);
    assert!(run.stdout.contains("bypass"), "{}", run.stdout);
}

#[test]
fn disabled_is_fine_whatever_the_accelerator_does() {
    let closed = ClosedPort::new();
    let node = node_with(
        false,
        &format!("http://127.0.0.1:{}/accelerator", closed.port),
    );
    let run = node.run(&["status", "--json"]);
    assert_eq!(run.code, 0);
    let v = run.json();
    assert_eq!(v["verdict"], "disabled");
    assert_eq!(v["reachability"]["reachable"], false);
}

#[test]
fn scheme_less_address_is_reported_as_bypassed() {
    let node = node_with(true, "localhost:19145/dadip2p");
    let run = node.run(&["status"]);
    assert_eq!(run.code, 9);
    assert!(run.stdout.contains("address:    invalid"), "{}", run.stdout);
}

#[test]
fn https_address_on_a_plain_http_port_is_unhealthy() {
    let acc = Accelerator::start("200 OK");
    let node = node_with(true, &format!("https://127.0.0.1:{}/accelerator", acc.port));
    let run = node.run(&["status", "--json", "--timeout", "2"]);
    assert_eq!(run.code, 9, "{}", run.stdout);
    let v = run.json();
    assert_eq!(v["verdict"], "unhealthy");
    assert_eq!(v["reachability"]["reachable"], true);
    assert_eq!(v["health"]["outcome"], "tls_failed");
    assert_eq!(v["health"]["tls"]["verified"], false);
    let hint = v["health"]["tls"]["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("http://"), "{}", run.stdout);
    assert!(acc.requests().is_empty(), "no HTTP request before TLS");
}

#[test]
fn missing_address_is_checked_at_overlaybds_built_in_default() {
    let node = Node::with("{\"p2pConfig\": {\"enable\": false}}");
    let run = node.run(&["status", "--json"]);
    assert_eq!(run.code, 0, "disabled: {}", run.stdout);
    let v = run.json();
    assert_eq!(v["checked_address"], "http://localhost:9731/accelerator");
    assert_eq!(v["p2pConfig"], serde_json::json!({"enable": false}));
    let text = node.run(&["status"]).stdout;
    assert!(text.contains("built-in default"), "{text}");
}

#[test]
fn zero_or_huge_timeout_is_a_usage_error_not_a_verdict() {
    let acc = Accelerator::start("200 OK");
    let node = node_with(true, &format!("http://127.0.0.1:{}/accelerator", acc.port));
    for bad in ["0", "3601", "18446744073709551615"] {
        for json in [false, true] {
            let mut args = vec!["status", "--timeout", bad];
            if json {
                args.push("--json");
            }
            let run = node.run(&args);
            assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
            assert!(run.stdout.is_empty(), "no verdict: {}", run.stdout);
            let flag_and_value = format!("'{bad}' for '--timeout <SECS>'");
            assert!(run.stderr.contains(&flag_and_value), "{}", run.stderr);
            assert!(run.stderr.contains("1 to 3600 seconds"), "{}", run.stderr);
        }
    }
    assert!(acc.requests().is_empty(), "nothing was checked");
}
