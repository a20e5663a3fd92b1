//! `status` against an `https://` accelerator stand-in on 127.0.0.1 whose
//! certificate comes from a CA made at test time, as a cluster CA would
//! issue it: verified handshake, unknown issuer, wrong name, a failing
//! `/healthz` behind good TLS, and unusable `--cacert` files.

use std::path::PathBuf;

use crate::accelerator::Accelerator;
use crate::pki::Ca;
use crate::status::node_with;
use crate::support::Node;

/// A node enabled for `https://<host>:<port>/accelerator`, with the CA's
/// certificate written beside it.
fn https_node(host: &str, port: u16, ca: &Ca) -> (Node, PathBuf) {
    let node = node_with(true, &format!("https://{host}:{port}/accelerator"));
    let cacert = node.file("cluster-ca.pem", &ca.pem);
    (node, cacert)
}

#[test]
fn verified_tls_and_healthy_with_cacert() {
    let ca = Ca::new("test cluster CA");
    let acc = Accelerator::start_tls("200 OK", ca.server(&["localhost", "127.0.0.1"]));
    let (node, cacert) = https_node("localhost", acc.port, &ca);
    let cacert = cacert.to_str().unwrap();

    let run = node.run(&["status", "--cacert", cacert]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let get = format!("GET https://localhost:{}/healthz -> 200", acc.port);
    assert!(
        run.stdout.contains(&format!("health:     ok ({get})")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("certificate verified for localhost"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("hint:"), "{}", run.stdout);

    let v = node.run(&["status", "--json", "--cacert", cacert]).json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["verdict"], "accelerated");
    assert_eq!(v["health"]["outcome"], "ok");
    assert_eq!(v["health"]["status"], 200);
    assert_eq!(v["health"]["tls"]["verified"], true);
    assert_eq!(v["health"]["tls"]["server_name"], "localhost");
    assert!(v["health"]["tls"].get("reason").is_none(), "{v}");

    let all = acc.all();
    assert_eq!(all.len(), 2, "{all:?}");
    for r in all {
        assert_eq!(r.line, "GET /healthz HTTP/1.1");
        assert_eq!(r.sni.as_deref(), Some("localhost"), "host name sent as SNI");
    }
}

#[test]
fn ip_literal_is_verified_as_an_ip_address() {
    let ca = Ca::new("test cluster CA");
    let acc = Accelerator::start_tls("200 OK", ca.server(&["127.0.0.1"]));
    let (node, cacert) = https_node("127.0.0.1", acc.port, &ca);
    let run = node.run(&["status", "--json", "--cacert", cacert.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(v["verdict"], "accelerated");
    assert_eq!(v["health"]["tls"]["server_name"], "127.0.0.1");
    assert_eq!(acc.all()[0].sni, None, "no SNI for an IP address");
}

#[test]
fn unknown_issuer_without_cacert_is_unhealthy_with_a_hint() {
    let ca = Ca::new("test cluster CA");
    let acc = Accelerator::start_tls("200 OK", ca.server(&["localhost"]));
    let (node, _) = https_node("localhost", acc.port, &ca);

    let run = node.run(&["status"]);
    assert_eq!(run.code, 9, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("reachable:  yes"), "{}", run.stdout);
    assert!(
        run.stdout.contains("TLS handshake with localhost failed"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("UnknownIssuer"), "{}", run.stdout);
    let hint = run.stdout.lines().find(|l| l.starts_with("hint:"));
    assert!(
        hint.is_some_and(|h| h.contains("--cacert")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("unhealthy"), "{}", run.stdout);

    let run = node.run(&["status", "--json"]);
    assert_eq!(run.code, 9);
    let v = run.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"], "accelerator_unavailable");
    assert_eq!(v["verdict"], "unhealthy");
    assert_eq!(v["health"]["checked"], true);
    assert_eq!(v["health"]["ok"], false);
    assert_eq!(v["health"]["outcome"], "tls_failed");
    assert!(v["health"].get("status").is_none(), "{v}");
    assert_eq!(v["health"]["tls"]["verified"], false);
    assert_eq!(v["health"]["tls"]["reason"], "unknown_issuer");
    assert!(v["health"]["tls"]["hint"]
        .as_str()
        .unwrap()
        .contains("--cacert"));
    assert!(acc.requests().is_empty(), "no request sent without trust");
}

#[test]
fn a_cacert_from_another_ca_is_still_an_unknown_issuer() {
    let ca = Ca::new("test cluster CA");
    let other = Ca::new("some other CA");
    let acc = Accelerator::start_tls("200 OK", ca.server(&["localhost"]));
    let (node, cacert) = https_node("localhost", acc.port, &other);
    let cacert = cacert.to_str().unwrap();
    let run = node.run(&["status", "--json", "--cacert", cacert]);
    assert_eq!(run.code, 9, "{}{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(v["health"]["tls"]["reason"], "unknown_issuer");
    let hint = v["health"]["tls"]["hint"].as_str().unwrap();
    assert!(hint.contains(cacert), "{hint}");
}

#[test]
fn certificate_for_another_name_is_a_name_mismatch() {
    let ca = Ca::new("test cluster CA");
    let acc = Accelerator::start_tls("200 OK", ca.server(&["localhost"]));
    let (node, cacert) = https_node("127.0.0.1", acc.port, &ca);
    let run = node.run(&["status", "--json", "--cacert", cacert.to_str().unwrap()]);
    assert_eq!(run.code, 9, "{}{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(v["verdict"], "unhealthy");
    assert_eq!(v["health"]["outcome"], "tls_failed");
    assert_eq!(v["health"]["tls"]["reason"], "name_mismatch");
    assert!(acc.requests().is_empty());
}

#[test]
fn healthz_500_over_verified_tls_is_unhealthy() {
    let ca = Ca::new("test cluster CA");
    let acc = Accelerator::start_tls("500 Internal Server Error", ca.server(&["localhost"]));
    let (node, cacert) = https_node("localhost", acc.port, &ca);
    let cacert = cacert.to_str().unwrap();

    let run = node.run(&["status", "--cacert", cacert]);
    assert_eq!(run.code, 9, "{}{}", run.stdout, run.stderr);
    let get = format!("GET https://localhost:{}/healthz -> 500", acc.port);
    assert!(
        run.stdout.contains(&format!("failing ({get})")),
        "{}",
        run.stdout
    );

    let v = node.run(&["status", "--json", "--cacert", cacert]).json();
    assert_eq!(v["verdict"], "unhealthy");
    assert_eq!(v["health"]["outcome"], "bad_status");
    assert_eq!(v["health"]["status"], 500);
    assert_eq!(v["health"]["tls"]["verified"], true);
    assert_eq!(acc.requests().len(), 2);
}

#[test]
fn unusable_cacert_is_a_usage_error_naming_flag_and_path() {
    let ca = Ca::new("test cluster CA");
    let node = node_with(true, "https://localhost:1/accelerator");
    let missing = node.file("x", "").with_file_name("missing.pem");
    let no_certs = node.file(
        "key-only.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let text = node.file("notes.txt", "not a certificate\n");
    let broken = node.file(
        "broken.pem",
        &ca.pem.replace("-----END CERTIFICATE-----", ""),
    );
    let before = node.snapshot();
    for (path, needle) in [
        (&missing, "cannot read"),
        (&no_certs, "no PEM certificates"),
        (&text, "no PEM certificates"),
        (&broken, "not PEM: a CERTIFICATE section has no END line"),
    ] {
        let path = path.to_str().unwrap();
        let run = node.run(&["status", "--cacert", path]);
        assert_eq!(run.code, 2, "{path}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(&format!("--cacert {path}: {needle}")),
            "{path}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{path}: {}", run.stdout);

        let run = node.run(&["status", "--json", "--cacert", path]);
        assert_eq!(run.code, 2);
        let v = run.json();
        assert_eq!(
            (v["ok"].clone(), v["exit_code"].clone()),
            (false.into(), 2.into())
        );
        assert_eq!(v["error"], "usage");
        assert!(v["message"].as_str().unwrap().contains(path), "{v}");
        assert!(v.get("verdict").is_none(), "no check made: {v}");
    }
    assert_eq!(node.snapshot(), before, "status never writes");
}
