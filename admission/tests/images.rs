//! Which images the handler rewrites: listed registries only, never a host whose P2P name
//! would fall in someone else's domain, nothing without registries, tags, digests and ports
//! kept or refused, and re-admission that changes nothing twice.

mod review_harness;

use dadi_p2p_admission::config::{HostPattern, Settings};
use review_harness::*;
use serde_json::json;

#[tokio::test]
async fn only_listed_registries_are_rewritten() {
    let settings = Settings {
        registries: vec![
            HostPattern::parse("registries", "*.cr.aliyuncs.com").unwrap(),
            HostPattern::parse("registries", "docker.io").unwrap(),
        ],
        ..Settings::default()
    };
    let h = harness(settings, &["apps"]);
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["spec"]["containers"] = json!([
        {"name": "acr", "image": ORIGINAL},
        {"name": "quay", "image": "quay.io/prometheus/node-exporter:v1.8.0"},
        {"name": "hub", "image": "nginx:1.27"},
        {"name": "user", "image": "user/app"},
    ]);
    let a = admit(&h, &review).await;
    // Docker Hub is listed, but its P2P name would be in someone else's domain: left alone
    // and recorded, as are images of registries that are not listed (without a record).
    assert_eq!(
        images(&a.pod, "containers"),
        [
            P2P,
            "quay.io/prometheus/node-exporter:v1.8.0",
            "nginx:1.27",
            "user/app"
        ]
    );
    let config = p2p_config(&a.pod);
    assert_eq!(config["images"].as_array().unwrap().len(), 1);
    let skipped: Vec<(&str, &str)> = config["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["container"].as_str().unwrap(),
                s["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        skipped.iter().map(|s| s.0).collect::<Vec<_>>(),
        ["hub", "user"]
    );
    assert!(
        skipped.iter().all(|s| s.1.contains("domain")),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn two_label_hosts_keep_their_images_and_credentials() {
    // Even `*` never moves quay.io or Docker Hub into another domain: the Pod is not
    // accelerated, no P2P pull secret is asked for, and the annotation says why.
    let settings = Settings {
        registries: Settings::parse_registries("*").unwrap(),
        ..Settings::default()
    };
    let h = harness(settings, &["apps"]);
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["spec"]["containers"] = json!([
        {"name": "hub", "image": "docker.io/library/nginx:1.27"},
        {"name": "quay", "image": "quay.io/prometheus/node-exporter:v1.8.0"},
    ]);
    let original = review["request"]["object"].clone();
    let a = admit(&h, &review).await;
    assert_eq!(
        images(&a.pod, "containers"),
        images(&original, "containers")
    );
    assert_eq!(pull_secrets(&a.pod), ["test-registry"]);
    assert!(a.pod["metadata"]["annotations"].get(KEY).is_none());
    let config = p2p_config(&a.pod);
    assert_eq!(config["images"], json!([]));
    assert_eq!(config["pullSecrets"], json!([]));
    let skipped: Vec<&str> = config["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        [
            "docker.io/library/nginx:1.27",
            "quay.io/prometheus/node-exporter:v1.8.0"
        ]
    );
    assert_eq!(a.response["warnings"].as_array().unwrap().len(), 2);
    assert!(h.secrets.is_empty(), "no credentials copied");
    assert!(h
        .metrics
        .encode()
        .contains("dadi_p2p_admission_reviews_total{outcome=\"skipped\"} 1"));

    // Admitted again (a copied spec), the record is already there: no patch.
    review["request"]["object"] = a.pod.clone();
    assert!(!admit(&h, &review).await.patched);
}

#[tokio::test]
async fn nothing_listed_means_no_patch() {
    let settings = Settings {
        registries: vec![HostPattern::parse("registries", "reg.example.com").unwrap()],
        ..Settings::default()
    };
    let h = harness(settings, &["apps"]);
    let a = admit(&h, &fixture("deployment-pod.json")).await;
    assert!(!a.patched);
    assert!(
        h.secrets.is_empty(),
        "no copy for a Pod that was not changed"
    );
}

#[tokio::test]
async fn no_registries_configured_rewrites_nothing() {
    let h = harness(Settings::default(), &["apps"]);
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["spec"]["initContainers"] =
        json!([{"name": "init", "image": "reg.example.com/init:1"}]);
    let a = admit(&h, &review).await;
    assert!(!a.patched);
    assert!(a.response.get("warnings").is_none());
    assert!(h.secrets.is_empty());
}

#[tokio::test]
async fn init_containers_digests_and_ports() {
    let h = harness(settings(), &["apps"]);
    let mut review = fixture("deployment-pod.json");
    let spec = &mut review["request"]["object"]["spec"];
    spec["initContainers"] = json!([
        {"name": "migrate", "image": format!("reg.example.com/ns/migrate@{DIGEST}")},
        {"name": "seed", "image": format!("reg.example.com/ns/seed:2.0@{DIGEST}")},
    ]);
    spec["containers"] = json!([
        {"name": "app", "image": "reg.example.com:443/ns/app:1"},
        {"name": "local", "image": "reg.example.com:5000/ns/app:1"},
        {"name": "devreg", "image": "localhost:5000/app"},
    ]);
    let a = admit(&h, &review).await;
    assert_eq!(
        images(&a.pod, "initContainers"),
        [
            format!("reg.distributed.example.com:65001/ns/migrate@{DIGEST}"),
            format!("reg.distributed.example.com:65001/ns/seed:2.0@{DIGEST}"),
        ]
    );
    assert_eq!(
        images(&a.pod, "containers"),
        [
            "reg.distributed.example.com:65001/ns/app:1",
            "reg.example.com:5000/ns/app:1",
            "localhost:5000/app"
        ]
    );
    let config = p2p_config(&a.pod);
    let skipped: Vec<&str> = config["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["container"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["local", "devreg"]);
    let warnings = a.response["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0]
        .as_str()
        .unwrap()
        .contains("reg.example.com:5000/ns/app:1"));
}

#[tokio::test]
async fn readmission_is_idempotent() {
    let h = harness(settings(), &["apps"]);
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["spec"]["initContainers"] =
        json!([{"name": "init", "image": "reg.example.com/init:1"}]);
    let first = admit(&h, &review).await;
    assert_eq!(h.secrets.take().len(), 1);
    review["request"]["object"] = first.pod.clone();
    let second = admit(&h, &review).await;
    assert!(!second.patched);
    assert_eq!(second.pod, first.pod);
    assert!(h.secrets.is_empty());

    // A copied Pod spec gaining one more container: only the new one changes, the undo record
    // keeps the earlier entries, and no pull secret is listed twice.
    review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "reg.example.com/side:1"}));
    let third = admit(&h, &review).await;
    assert_eq!(
        images(&third.pod, "containers"),
        [P2P, "reg.distributed.example.com:65001/side:1"]
    );
    assert_eq!(
        pull_secrets(&third.pod),
        ["test-registry", "acr-credential-test-registry-p2p"]
    );
    let config = p2p_config(&third.pod);
    let originals: Vec<&str> = config["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["original"].as_str().unwrap())
        .collect();
    assert_eq!(
        originals,
        [ORIGINAL, "reg.example.com/init:1", "reg.example.com/side:1"]
    );
}
