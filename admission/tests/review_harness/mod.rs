//! Shared by the handler tests: a webhook over fixed namespace labels, and `admit`, which
//! applies each answer as the API server would (base64 JSONPatch onto the object sent).

#![allow(dead_code)] // Each test binary uses a different part.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use dadi_p2p_admission::config::Settings;
use dadi_p2p_admission::metrics::Metrics;
use dadi_p2p_admission::secrets::requests::Requests;
use dadi_p2p_admission::webhook::Webhook;
use serde_json::{json, Value};

pub const KEY: &str = "k8s.aliyun.com/image-accelerate-mode";
pub const ORIGINAL: &str =
    "test-registry-vpc.cn-hangzhou.cr.aliyuncs.com/docker-builder/nginx:latest";
pub const P2P: &str =
    "test-registry-vpc.distributed.cn-hangzhou.cr.aliyuncs.com:65001/docker-builder/nginx:latest";
pub const DIGEST: &str = "sha256:3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";

/// The registries most tests list: the documented one's domain, the examples' and localhost.
pub fn settings() -> Settings {
    Settings {
        registries: Settings::parse_registries("*.cr.aliyuncs.com,*.example.com,localhost")
            .unwrap(),
        ..Settings::default()
    }
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub struct Harness {
    pub hook: Webhook,
    pub secrets: Arc<Requests>,
    pub metrics: Metrics,
}

pub fn harness(settings: Settings, labelled_namespaces: &[&str]) -> Harness {
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
pub struct Answer {
    pub response: Value,
    pub pod: Value,
    pub patched: bool,
}

pub async fn admit(h: &Harness, review: &Value) -> Answer {
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

pub fn with_pod_label(mut review: Value) -> Value {
    review["request"]["object"]["metadata"]["labels"][KEY] = json!("p2p");
    review
}

pub fn in_namespace(mut review: Value, ns: &str) -> Value {
    review["request"]["namespace"] = json!(ns);
    review["request"]["object"]["metadata"]["namespace"] = json!(ns);
    review
}

pub fn images(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["image"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn pull_secrets(pod: &Value) -> Vec<String> {
    pod["spec"]["imagePullSecrets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn p2p_config(pod: &Value) -> Value {
    serde_json::from_str(
        pod["metadata"]["annotations"]["k8s.aliyun.com/p2p-config"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

pub fn assert_documented_result(pod: &Value) {
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
