//! The handler on AdmissionReview fixtures: selection by Pod and namespace labels, the
//! annotations and pull secrets of the documented result, pull secret requests, debug
//! containers, dry runs and damaged requests. Every answer is applied as the API server would
//! apply it (see `review_harness`) and the resulting Pod is checked.

mod review_harness;

use dadi_p2p_admission::config::{HostPattern, Settings};
use dadi_p2p_admission::secrets::requests::MAX_PENDING;
use dadi_p2p_admission::webhook::SecretRef;
use review_harness::*;
use serde_json::{json, Value};

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
