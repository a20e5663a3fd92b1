//! The pull secret controller against an API stand-in (see `fake_api`): copies are created on
//! request, follow changes to their original, wait for originals created later, and never
//! replace a Secret of the same name that someone else made.

mod fake_api;

use std::sync::Arc;

use base64::Engine;
use dadi_p2p_admission::config::{HostPattern, Settings};
use dadi_p2p_admission::metrics::Metrics;
use dadi_p2p_admission::secrets::controller::{Reconciled, SecretController};
use dadi_p2p_admission::webhook::SecretRef;
use fake_api::FakeApi;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn pull_secret(ns: &str, name: &str, auths: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": b64(&json!({"auths": auths}).to_string())},
    })
}

fn auths_of(api: &FakeApi, ns: &str, name: &str) -> Option<Value> {
    let s = api.get(ns, name)?;
    let doc = &s.data.as_ref()?.get(".dockerconfigjson")?.0;
    Some(serde_json::from_slice::<Value>(doc).unwrap()["auths"].clone())
}

fn r(ns: &str, name: &str) -> SecretRef {
    SecretRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn settings() -> Arc<Settings> {
    Arc::new(Settings {
        registries: vec![HostPattern::parse("registries", "*.example.com").unwrap()],
        ..Settings::default()
    })
}

#[tokio::test]
async fn copies_are_created_followed_and_made_late() {
    let api = FakeApi::new();
    let source = api.put(pull_secret(
        "apps",
        "test-registry",
        json!({"reg.example.com": {"auth": b64("u:p1")}, "quay.io": {"auth": b64("q:q")}}),
    ));
    let metrics = Metrics::new();
    let controller = SecretController::new(api.client(), settings(), metrics.clone());
    let (tx, rx) = mpsc::channel(8);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(controller.run(rx, async {
        let _ = stopped.await;
    }));
    api.wait_for_watch("secrets").await;

    tx.send(r("apps", "test-registry")).await.unwrap();
    let copy = "acr-credential-test-registry-p2p";
    api.wait_until("copy created", |a| a.get("apps", copy).is_some())
        .await;
    let made = api.get("apps", copy).unwrap();
    assert_eq!(
        made.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(
        made.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "dadi-p2p-admission"
    );
    let owner = &made.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.name, "test-registry");
    assert_eq!(owner.uid, source["metadata"]["uid"].as_str().unwrap());
    assert_eq!(
        auths_of(&api, "apps", copy).unwrap(),
        json!({"reg.distributed.example.com:65001": {"auth": b64("u:p1")}, "quay.io": {"auth": b64("q:q")}})
    );

    // The original changes: the copy follows through the watch, without a new request.
    api.put(pull_secret(
        "apps",
        "test-registry",
        json!({"reg.example.com": {"auth": b64("u:p2")}}),
    ));
    api.wait_until("copy updated", |a| {
        auths_of(a, "apps", copy)
            == Some(json!({"reg.distributed.example.com:65001": {"auth": b64("u:p2")}}))
    })
    .await;

    // A Pod that refers to an original not created yet: the copy comes when it appears.
    tx.send(r("apps", "late")).await.unwrap();
    api.put(pull_secret(
        "apps",
        "late",
        json!({"late.example.com": {"auth": b64("l:l")}}),
    ));
    api.wait_until("late copy created", |a| {
        a.get("apps", "acr-credential-late-p2p").is_some()
    })
    .await;
    assert_eq!(
        auths_of(&api, "apps", "acr-credential-late-p2p").unwrap(),
        json!({"late.distributed.example.com:65001": {"auth": b64("l:l")}})
    );

    // An original nobody asked for gets no copy; its change is ignored.
    api.put(pull_secret(
        "apps",
        "unused",
        json!({"reg.example.com": {}}),
    ));
    api.put(pull_secret(
        "apps",
        "test-registry",
        json!({"reg.example.com": {"auth": b64("u:p3")}}),
    ));
    api.wait_until("copy updated again", |a| {
        auths_of(a, "apps", copy)
            == Some(json!({"reg.distributed.example.com:65001": {"auth": b64("u:p3")}}))
    })
    .await;
    assert!(api.get("apps", "acr-credential-unused-p2p").is_none());

    let text = metrics.encode();
    assert!(
        text.contains("dadi_p2p_admission_secret_copies_total{outcome=\"created\"} 2"),
        "{text}"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn reconcile_outcomes() {
    let api = FakeApi::new();
    let c = SecretController::new(api.client(), settings(), Metrics::new());
    assert_eq!(
        c.reconcile(&r("apps", "missing")).await.unwrap(),
        Reconciled::SourceMissing
    );

    api.put(pull_secret("apps", "reg", json!({"reg.example.com": {}})));
    assert_eq!(
        c.reconcile(&r("apps", "reg")).await.unwrap(),
        Reconciled::Created
    );
    assert_eq!(
        c.reconcile(&r("apps", "reg")).await.unwrap(),
        Reconciled::UpToDate
    );
    api.put(pull_secret("apps", "reg", json!({"reg2.example.com": {}})));
    assert_eq!(
        c.reconcile(&r("apps", "reg")).await.unwrap(),
        Reconciled::Replaced
    );
    assert_eq!(
        auths_of(&api, "apps", "acr-credential-reg-p2p").unwrap(),
        json!({"reg2.distributed.example.com:65001": {}})
    );

    // A copy the user made by hand, as the documentation suggests, is left alone.
    api.put(pull_secret("apps", "mine", json!({"reg.example.com": {}})));
    let theirs = api.put(pull_secret(
        "apps",
        "acr-credential-mine-p2p",
        json!({"x.example.com": {}}),
    ));
    assert_eq!(
        c.reconcile(&r("apps", "mine")).await.unwrap(),
        Reconciled::NotOurs
    );
    assert_eq!(
        api.get("apps", "acr-credential-mine-p2p")
            .unwrap()
            .metadata
            .resource_version
            .as_deref(),
        theirs["metadata"]["resourceVersion"].as_str()
    );

    // Not a pull secret: refused with a clear error, nothing written.
    api.put(
        json!({"metadata": {"name": "opaque", "namespace": "apps"}, "type": "Opaque", "data": {}}),
    );
    let err = c.reconcile(&r("apps", "opaque")).await.unwrap_err();
    assert!(err.to_string().contains("Opaque"), "{err}");
    assert!(api.get("apps", "acr-credential-opaque-p2p").is_none());
}
