//! The pull secret controller against an API stand-in (see `fake_api`): copies are created on
//! request, follow changes to their original, wait for originals created later, and never
//! replace a Secret of the same name that someone else made. Writes that meet another
//! replica's are not failures, failed writes are retried, and copies that drifted without a
//! watch event are repaired by the periodic resync.

mod fake_api;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use dadi_p2p_admission::config::{HostPattern, Settings};
use dadi_p2p_admission::metrics::Metrics;
use dadi_p2p_admission::secrets::controller::{Reconciled, SecretController, Timing, ATTEMPTS};
use dadi_p2p_admission::secrets::copy;
use dadi_p2p_admission::secrets::requests::Requests;
use dadi_p2p_admission::webhook::SecretRef;
use fake_api::FakeApi;
use serde_json::{json, Value};
use tokio::sync::oneshot;

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

/// The copy the controller would write for the stored original `name`, as JSON; what another
/// replica with the same settings writes.
fn desired_copy(api: &FakeApi, ns: &str, name: &str) -> Value {
    let source = api.get(ns, name).unwrap();
    serde_json::to_value(copy::desired(&source, &settings()).unwrap()).unwrap()
}

/// How many reconciles ended with `outcome`, from the encoded metrics.
fn copies(metrics: &Metrics, outcome: &str) -> u64 {
    let prefix = format!("dadi_p2p_admission_secret_copies_total{{outcome=\"{outcome}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

/// Waits (bounded) until at least `n` reconciles ended with `outcome`.
async fn wait_for_copies(metrics: &Metrics, outcome: &str, n: u64) {
    let mut changes = metrics.subscribe();
    let wait = async {
        while copies(metrics, outcome) < n {
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("never counted {n} {outcome}:\n{}", metrics.encode()));
}

/// A controller running against `api` until dropped or stopped.
struct Running {
    requests: Arc<Requests>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        (&mut self.task).await.unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const NEVER: Duration = Duration::from_secs(3600);

async fn start(api: &FakeApi, metrics: &Metrics, timing: Timing) -> Running {
    let controller =
        SecretController::new(api.client(), settings(), metrics.clone()).with_timing(timing);
    let requests = Arc::new(Requests::new());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(controller.run(requests.clone(), async {
        let _ = stopped.await;
    }));
    api.wait_for_watch("secrets").await;
    Running {
        requests,
        stop: Some(stop),
        task,
    }
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
    let running = start(&api, &metrics, Timing::default()).await;

    running.requests.push(r("apps", "test-registry"));
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

    // A Pod that refers to an original not created yet: once the controller has found it
    // missing, the copy comes when it appears.
    running.requests.push(r("apps", "late"));
    wait_for_copies(&metrics, "source-missing", 1).await;
    assert!(api.get("apps", "acr-credential-late-p2p").is_none());
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

    assert_eq!(copies(&metrics, "created"), 2, "{}", metrics.encode());
    running.stop().await;
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

#[tokio::test]
async fn another_replica_writing_the_same_copy_is_no_failure() {
    let api = FakeApi::new();
    api.put(pull_secret("apps", "reg", json!({"reg.example.com": {}})));
    // The other replica creates the copy between this one's read and its create.
    let theirs = desired_copy(&api, "apps", "reg");
    api.before_writes(1, move |a| {
        a.put(theirs.clone());
    });
    let metrics = Metrics::new();
    let running = start(&api, &metrics, Timing::default()).await;
    running.requests.push(r("apps", "reg"));
    // The request's reconcile is the first to count (watch events wait for it to end).
    wait_for_copies(&metrics, "current", 1).await;
    assert_eq!(copies(&metrics, "failed"), 0, "{}", metrics.encode());
    assert_eq!(copies(&metrics, "created"), 0);
    assert_eq!(
        auths_of(&api, "apps", "acr-credential-reg-p2p").unwrap(),
        json!({"reg.distributed.example.com:65001": {}})
    );
    running.stop().await;
}

#[tokio::test]
async fn a_different_copy_written_meanwhile_is_corrected_at_once() {
    let api = FakeApi::new();
    api.put(pull_secret("apps", "reg", json!({"reg.example.com": {}})));
    let c = SecretController::new(api.client(), settings(), Metrics::new());

    // Create meets a copy made from an older original: read again and replaced.
    api.put(pull_secret("apps", "old", json!({"old.example.com": {}})));
    let mut stale = desired_copy(&api, "apps", "old");
    stale["metadata"]["name"] = json!("acr-credential-reg-p2p");
    stale["metadata"]["ownerReferences"] =
        desired_copy(&api, "apps", "reg")["metadata"]["ownerReferences"].clone();
    let stale_for_hook = stale.clone();
    api.before_writes(1, move |a| {
        a.put(stale_for_hook.clone());
    });
    assert_eq!(
        c.reconcile(&r("apps", "reg")).await.unwrap(),
        Reconciled::Replaced
    );
    assert_eq!(
        auths_of(&api, "apps", "acr-credential-reg-p2p").unwrap(),
        json!({"reg.distributed.example.com:65001": {}})
    );

    // Update meets the other replica's update to the right content: current, not written.
    api.put(pull_secret("apps", "reg", json!({"reg2.example.com": {}})));
    let theirs = desired_copy(&api, "apps", "reg");
    api.before_writes(1, move |a| {
        a.put(theirs.clone());
    });
    assert_eq!(
        c.reconcile(&r("apps", "reg")).await.unwrap(),
        Reconciled::UpToDate
    );
    assert_eq!(
        auths_of(&api, "apps", "acr-credential-reg-p2p").unwrap(),
        json!({"reg2.distributed.example.com:65001": {}})
    );

    // A writer that always gets there first: given up after ATTEMPTS, for the retry.
    let writes = Arc::new(AtomicUsize::new(0));
    let seen = writes.clone();
    api.put(pull_secret("apps", "reg", json!({"reg3.example.com": {}})));
    api.before_writes(ATTEMPTS + 1, move |a| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let mut s = stale.clone();
        s["data"][".dockerconfigjson"] = json!(b64(
            &json!({"auths": {format!("x{n}.example.com"): {}}}).to_string()
        ));
        a.put(s);
    });
    assert!(c.reconcile(&r("apps", "reg")).await.is_err());
    assert_eq!(writes.load(Ordering::SeqCst), ATTEMPTS);
}

#[tokio::test]
async fn a_failed_update_is_retried() {
    let api = FakeApi::new();
    api.put(pull_secret("apps", "reg", json!({"reg.example.com": {}})));
    let metrics = Metrics::new();
    let timing = Timing {
        retry: Duration::from_millis(50),
        resync: NEVER,
    };
    let running = start(&api, &metrics, timing).await;
    running.requests.push(r("apps", "reg"));
    let copy = "acr-credential-reg-p2p";
    api.wait_until("copy created", |a| a.get("apps", copy).is_some())
        .await;

    // The original changes and the update that follows fails once: retried, not forgotten.
    api.fail_writes(1);
    api.put(pull_secret("apps", "reg", json!({"reg2.example.com": {}})));
    api.wait_until("copy updated after a failure", |a| {
        auths_of(a, "apps", copy) == Some(json!({"reg2.distributed.example.com:65001": {}}))
    })
    .await;
    assert_eq!(copies(&metrics, "failed"), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_copy_changed_behind_the_watch_is_repaired() {
    let api = FakeApi::new();
    api.put(pull_secret("apps", "reg", json!({"reg.example.com": {}})));
    let metrics = Metrics::new();
    let timing = Timing {
        retry: NEVER,
        resync: Duration::from_millis(50),
    };
    let running = start(&api, &metrics, timing).await;
    running.requests.push(r("apps", "reg"));
    let copy = "acr-credential-reg-p2p";
    api.wait_until("copy created", |a| a.get("apps", copy).is_some())
        .await;
    let good = auths_of(&api, "apps", copy).unwrap();

    // The copy is changed and the watch never says so.
    let mut tampered = serde_json::to_value(api.get("apps", copy).unwrap()).unwrap();
    tampered["data"][".dockerconfigjson"] =
        json!(b64(&json!({"auths": {"evil.example.org": {}}}).to_string()));
    api.put_unwatched(tampered);
    assert_ne!(auths_of(&api, "apps", copy).unwrap(), good);
    api.wait_until("copy repaired", |a| {
        auths_of(a, "apps", copy).as_ref() == Some(&good)
    })
    .await;
    running.stop().await;
}
