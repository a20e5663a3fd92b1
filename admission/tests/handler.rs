//! The handler on AdmissionReview fixtures: every answer is applied as the API server would
//! apply it (base64 JSONPatch onto the object sent) and the resulting Pod is checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use dadi_p2p_admission::config::{HostPattern, Settings};
use dadi_p2p_admission::metrics::Metrics;
use dadi_p2p_admission::secrets::requests::{Requests, MAX_PENDING};
use dadi_p2p_admission::webhook::{SecretRef, Webhook};
use serde_json::{json, Value};

const KEY: &str = "k8s.aliyun.com/image-accelerate-mode";
const ORIGINAL: &str = "test-registry-vpc.cn-hangzhou.cr.aliyuncs.com/docker-builder/nginx:latest";
const P2P: &str =
    "test-registry-vpc.distributed.cn-hangzhou.cr.aliyuncs.com:65001/docker-builder/nginx:latest";
const DIGEST: &str = "sha256:3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";

/// The registries most tests list: the documented one's domain, the examples' and localhost.
fn settings() -> Settings {
    Settings {
        registries: Settings::parse_registries("*.cr.aliyuncs.com,*.example.com,localhost")
            .unwrap(),
        ..Settings::default()
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

struct Harness {
    hook: Webhook,
    secrets: Arc<Requests>,
    metrics: Metrics,
}

fn harness(settings: Settings, labelled_namespaces: &[&str]) -> Harness {
    let mut namespaces = BTreeMap::new();
    for ns in ["apps", "plain", "other"] {
        let mut labels =
            BTreeMap::from([("kubernetes.io/metadata.name".to_string(), ns.to_string())]);
        if labelled_namespaces.contains(&ns) {
            labels.insert(KEY.to_string(), "p2p".to_string());
        }
        namespaces.insert(ns.to_string(), labels);
    }
    let requests = Arc::new(Requests::new());
    let metrics = Metrics::new();
    let hook = Webhook::new(
        Arc::new(settings),
        Arc::new(namespaces),
        Some(requests.clone()),
        metrics.clone(),
    );
    Harness {
        hook,
        secrets: requests,
        metrics,
    }
}

/// The answer, and the object after applying its patch (the object unchanged if none).
struct Answer {
    response: Value,
    pod: Value,
    patched: bool,
}

async fn admit(h: &Harness, review: &Value) -> Answer {
    let out = h.hook.review(&serde_json::to_vec(review).unwrap()).await;
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = out["response"].clone();
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    let mut pod = review["request"]["object"].clone();
    let patched = response.get("patch").is_some();
    if patched {
        assert_eq!(response["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    Answer {
        response,
        pod,
        patched,
    }
}

fn with_pod_label(mut review: Value) -> Value {
    review["request"]["object"]["metadata"]["labels"][KEY] = json!("p2p");
    review
}

fn in_namespace(mut review: Value, ns: &str) -> Value {
    review["request"]["namespace"] = json!(ns);
    review["request"]["object"]["metadata"]["namespace"] = json!(ns);
    review
}

fn images(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["image"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn pull_secrets(pod: &Value) -> Vec<String> {
    pod["spec"]["imagePullSecrets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn p2p_config(pod: &Value) -> Value {
    serde_json::from_str(
        pod["metadata"]["annotations"]["k8s.aliyun.com/p2p-config"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

fn assert_documented_result(pod: &Value) {
    assert_eq!(pod["metadata"]["annotations"][KEY], "p2p");
    assert_eq!(images(pod, "containers"), [P2P]);
    assert_eq!(
        pull_secrets(pod),
        ["test-registry", "acr-credential-test-registry-p2p"]
    );
    let config = p2p_config(pod);
    assert_eq!(config["version"], 1);
    assert_eq!(
        config["endpoint"],
        json!({"label": "distributed", "port": 65001})
    );
    assert_eq!(
        config["images"],
        json!([{"kind": "containers", "container": "test", "original": ORIGINAL, "image": P2P}])
    );
    assert_eq!(
        config["pullSecrets"],
        json!([{"original": "test-registry", "p2p": "acr-credential-test-registry-p2p"}])
    );
}

#[tokio::test]
async fn namespace_label_only() {
    let h = harness(settings(), &["apps"]);
    let a = admit(&h, &fixture("deployment-pod.json")).await;
    assert_documented_result(&a.pod);
    assert!(
        a.pod["metadata"].get("name").is_none(),
        "generated names stay to the API server"
    );
    assert_eq!(
        h.secrets.take(),
        [SecretRef {
            namespace: "apps".into(),
            name: "test-registry".into()
        }]
    );
    assert!(h
        .metrics
        .encode()
        .contains("dadi_p2p_admission_reviews_total{outcome=\"mutated\"} 1"));
}

#[tokio::test]
async fn a_rollout_asks_for_each_pull_secret_once() {
    // More Pods than any fixed queue would hold, while the controller takes nothing: one
    // pending request per original, and none dropped.
    let h = harness(settings(), &["apps"]);
    let mut review = fixture("deployment-pod.json");
    for i in 0..2_000 {
        review["request"]["uid"] = json!(format!("uid-{i}"));
        assert!(admit(&h, &review).await.patched);
    }
    assert_eq!(h.secrets.len(), 1);
    let text = h.metrics.encode();
    assert!(
        text.contains("dadi_p2p_admission_secret_requests_dropped_total 0"),
        "{text}"
    );
}

#[tokio::test]
async fn requests_beyond_the_limit_are_dropped_and_counted() {
    let h = harness(settings(), &["apps"]);
    for i in 0..MAX_PENDING - 1 {
        h.secrets.push(SecretRef {
            namespace: "other".into(),
            name: format!("s{i}"),
        });
    }
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["spec"]["imagePullSecrets"] =
        json!([{"name": "first"}, {"name": "second"}]);
    let a = admit(&h, &review).await;
    assert_eq!(
        pull_secrets(&a.pod),
        [
            "first",
            "second",
            "acr-credential-first-p2p",
            "acr-credential-second-p2p"
        ],
        "the Pod is patched whatever happens to the request"
    );
    assert_eq!(h.secrets.len(), MAX_PENDING);
    assert!(h
        .metrics
        .encode()
        .contains("dadi_p2p_admission_secret_requests_dropped_total 1"));
}

#[tokio::test]
async fn pod_label_only() {
    let h = harness(settings(), &[]);
    let a = admit(&h, &with_pod_label(fixture("deployment-pod.json"))).await;
    assert_documented_result(&a.pod);
    assert_eq!(a.pod["metadata"]["labels"]["app"], "nginx");
}

#[tokio::test]
async fn pod_and_namespace_labels() {
    let h = harness(settings(), &["apps"]);
    let a = admit(&h, &with_pod_label(fixture("deployment-pod.json"))).await;
    assert_documented_result(&a.pod);
}

#[tokio::test]
async fn neither_label_leaves_the_pod_alone() {
    let h = harness(settings(), &["apps"]);
    let a = admit(&h, &in_namespace(fixture("deployment-pod.json"), "plain")).await;
    assert!(!a.patched);
    assert_eq!(
        a.pod,
        fixture("deployment-pod.json")["request"]["object"]
            .as_object()
            .map(|o| {
                let mut o = Value::Object(o.clone());
                o["metadata"]["namespace"] = json!("plain");
                o
            })
            .unwrap()
    );
    assert!(h.secrets.is_empty());
    let unknown = admit(&h, &in_namespace(fixture("deployment-pod.json"), "missing")).await;
    assert!(!unknown.patched);
}

#[tokio::test]
async fn a_pod_can_opt_out_in_a_labelled_namespace() {
    let h = harness(settings(), &["apps"]);
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["metadata"]["labels"][KEY] = json!("none");
    assert!(!admit(&h, &review).await.patched);
}

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
async fn ephemeral_containers_added_later() {
    let h = harness(settings(), &[]);
    let a = admit(&h, &fixture("ephemeral-update.json")).await;
    assert_eq!(
        images(&a.pod, "ephemeralContainers"),
        [
            "reg.example.com:5000/old/tool:1",
            "reg.distributed.example.com:65001/tools/busybox:1.36"
        ]
    );
    assert_eq!(
        images(&a.pod, "containers"),
        ["reg.distributed.example.com:65001/ns/app:1"]
    );
    assert_eq!(
        a.pod["metadata"],
        fixture("ephemeral-update.json")["request"]["object"]["metadata"]
    );

    let mut unmarked = fixture("ephemeral-update.json");
    unmarked["request"]["object"]["metadata"]["annotations"] = json!({});
    assert!(
        !admit(&h, &unmarked).await.patched,
        "Pods not accelerated at creation stay so"
    );
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

#[tokio::test]
async fn pods_without_annotations_or_pull_secrets() {
    let h = harness(settings(), &["apps"]);
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("imagePullSecrets");
    review["request"]["object"]["metadata"]["annotations"] = json!({"team": "web"});
    let a = admit(&h, &review).await;
    assert_eq!(a.pod["metadata"]["annotations"]["team"], "web");
    assert_eq!(a.pod["metadata"]["annotations"][KEY], "p2p");
    assert!(a.pod["spec"].get("imagePullSecrets").is_none());
    assert_eq!(images(&a.pod, "containers"), [P2P]);
    assert!(h.secrets.is_empty());
}

#[tokio::test]
async fn dry_run_gets_the_patch_but_no_secret() {
    let h = harness(settings(), &["apps"]);
    let mut review = fixture("deployment-pod.json");
    review["request"]["dryRun"] = json!(true);
    let a = admit(&h, &review).await;
    assert_documented_result(&a.pod);
    assert!(h.secrets.is_empty());
    assert!(h.metrics.encode().contains("outcome=\"dry-run\""));
}

#[tokio::test]
async fn malformed_requests_are_allowed_unchanged() {
    let h = harness(settings(), &["apps"]);
    let out: Value = serde_json::from_slice(&h.hook.review(b"{not json").await).unwrap();
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("patch").is_none());
    assert!(out["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("not JSON"));

    let mut bad_pod = fixture("deployment-pod.json");
    bad_pod["request"]["object"]["spec"]["containers"] = json!("nope");
    let a = admit(&h, &bad_pod).await;
    assert!(!a.patched);
    assert!(a.response["warnings"][0]
        .as_str()
        .unwrap()
        .contains("not a valid Pod"));

    let mut deployment = fixture("deployment-pod.json");
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    assert!(!admit(&h, &deployment).await.patched);

    let mut old_version = fixture("deployment-pod.json");
    old_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let a = admit(&h, &old_version).await;
    assert!(!a.patched);
    assert!(h
        .metrics
        .encode()
        .contains("dadi_p2p_admission_reviews_total{outcome=\"invalid\"} 4"));
}

/// Every prefix of a real review and a spread of single-byte corruptions: the handler answers
/// each with a well-formed `allowed: true` review and never panics.
#[tokio::test]
async fn damaged_reviews_never_panic() {
    let settings = Settings {
        registries: vec![HostPattern::parse("registries", "*.example.com").unwrap()],
        ..Settings::default()
    };
    let h = harness(settings, &["apps"]);
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["spec"]["initContainers"] =
        json!([{"name": "i", "image": "xé.éxample.com/ünï:cödé@sha256:x"}]);
    let body = serde_json::to_vec(&review).unwrap();
    let mut cases: Vec<Vec<u8>> = (0..body.len()).map(|n| body[..n].to_vec()).collect();
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..2000 {
        // xorshift: a fixed, reproducible spread of positions and byte values.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let mut damaged = body.clone();
        damaged[x as usize % body.len()] = (x >> 24) as u8;
        cases.push(damaged);
    }
    for case in cases {
        let out: Value = serde_json::from_slice(&h.hook.review(&case).await).unwrap();
        assert_eq!(out["response"]["allowed"], true);
    }
}
