//! The shipped manifests under packaging/admission: every document deserialises into its
//! k8s-openapi type without losing a field, the pieces agree with each other and with the
//! binary, `kubernetes-validate --strict` accepts them, and make-ca.sh produces a certificate
//! the webhook loads and a caBundle patch that applies to the shipped configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/admission")
}

fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "manifests missing: {files:?}");
    files
}

/// Every document of every file, as JSON, keyed by `Kind/name`.
fn documents() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for file in yaml_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = serde_yaml_ng::Value::deserialize(doc).unwrap();
            let v: Value = serde_json::to_value(v).unwrap();
            let key = format!(
                "{}/{}",
                v["kind"].as_str().unwrap(),
                v["metadata"]["name"].as_str().unwrap()
            );
            assert!(out.insert(key.clone(), v).is_none(), "{key} defined twice");
        }
    }
    out
}

/// Deserialises into `T` and checks that serialising again gives the same document, so a
/// misspelt or misplaced field (which serde would drop) fails the test.
fn typed<T: DeserializeOwned + Serialize>(docs: &BTreeMap<String, Value>, key: &str) -> T {
    let v = docs.get(key).unwrap_or_else(|| panic!("no {key}"));
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(
        &serde_json::to_value(&t).unwrap(),
        v,
        "{key} does not round-trip"
    );
    t
}

const NS: &str = "dadi-p2p-system";
const NAME: &str = "dadi-p2p-admission";

#[test]
fn documents_are_typed_and_consistent() {
    let docs = documents();
    let known = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "MutatingWebhookConfiguration",
        "Issuer",
        "Certificate",
    ];
    for key in docs.keys() {
        assert!(
            known.contains(&key.split('/').next().unwrap()),
            "unexpected document {key}"
        );
    }
    let _: Namespace = typed(&docs, &format!("Namespace/{NS}"));
    let sa: ServiceAccount = typed(&docs, &format!("ServiceAccount/{NAME}"));
    let role: ClusterRole = typed(&docs, &format!("ClusterRole/{NAME}"));
    let binding: ClusterRoleBinding = typed(&docs, &format!("ClusterRoleBinding/{NAME}"));
    let deploy: Deployment = typed(&docs, &format!("Deployment/{NAME}"));
    let _: PodDisruptionBudget = typed(&docs, &format!("PodDisruptionBudget/{NAME}"));
    let svc: Service = typed(&docs, &format!("Service/{NAME}"));
    let hook: MutatingWebhookConfiguration =
        typed(&docs, &format!("MutatingWebhookConfiguration/{NAME}"));

    // RBAC: exactly read namespaces, and read + create/update secrets; nothing else.
    let rules: Vec<(Vec<String>, Vec<String>)> = role
        .rules
        .unwrap()
        .into_iter()
        .map(|r| (r.resources.unwrap(), r.verbs))
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rules,
        [
            (s(&["namespaces"]), s(&["get", "list", "watch"])),
            (
                s(&["secrets"]),
                s(&["get", "list", "watch", "create", "update"])
            ),
        ]
    );
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        (NAME, Some(NS))
    );
    assert_eq!(sa.metadata.namespace.as_deref(), Some(NS));

    // Deployment: two replicas, the service account, the TLS Secret, the flags the binary takes.
    let spec = deploy.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(NAME));
    let tls_secret = pod.volumes.unwrap()[0]
        .secret
        .clone()
        .unwrap()
        .secret_name
        .unwrap();
    assert_eq!(tls_secret, "dadi-p2p-admission-tls");
    let c = &pod.containers[0];
    let env: BTreeMap<String, String> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    // No registry is listed as shipped; the commented example is one the binary takes.
    let parse = dadi_p2p_admission::config::Settings::parse_registries;
    assert_eq!(parse(&env["DADI_P2P_REGISTRIES"]), Ok(Vec::new()));
    let text = std::fs::read_to_string(dir().join("deployment.yaml")).unwrap();
    let example = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("#   value: "))
        .expect("a commented registry example");
    let example: String = serde_yaml_ng::from_str(example).unwrap();
    assert!(!parse(&example).unwrap().is_empty());
    assert_eq!(env["DADI_P2P_PORT"], "65001");
    let mount = &c.volume_mounts.as_ref().unwrap()[0].mount_path;
    for arg in c.args.iter().flatten().filter(|a| a.starts_with("--tls-")) {
        assert!(arg.contains(mount.as_str()), "{arg} outside {mount}");
    }
    assert!(c
        .args
        .iter()
        .flatten()
        .any(|a| a == "--listen=0.0.0.0:9443"));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 9443);

    // Service points at the pods' https port.
    let svc_spec = svc.spec.unwrap();
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in svc_spec.selector.unwrap() {
        assert_eq!(pod_labels.get(&k), Some(&v));
    }
    let port = &svc_spec.ports.unwrap()[0];
    assert_eq!(port.port, 443);

    // Webhook: the documented safety settings, pointed at the Service.
    let w = &hook.webhooks.unwrap()[0];
    assert_eq!(w.side_effects, "NoneOnDryRun");
    assert_eq!(w.timeout_seconds, Some(5));
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(w.admission_review_versions, ["v1"]);
    let target = w.client_config.service.as_ref().unwrap();
    assert_eq!(
        (
            target.namespace.as_str(),
            target.name.as_str(),
            target.path.as_deref(),
            target.port
        ),
        (NS, NAME, Some("/mutate"), Some(443))
    );
    let rules = w.rules.as_ref().unwrap();
    assert_eq!(rules[0].operations.as_deref(), Some(&s(&["CREATE"])[..]));
    assert_eq!(rules[0].resources.as_deref(), Some(&s(&["pods"])[..]));
    let excluded = &w
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(excluded.key, "kubernetes.io/metadata.name");
    assert_eq!(excluded.operator, "NotIn");
    assert_eq!(
        excluded.values.as_deref(),
        Some(&s(&["kube-system", NS])[..])
    );

    // cert-manager: the serving Certificate fills the mounted Secret, names the Service, and
    // is the one whose CA is injected into the webhook.
    let cert = &docs[&format!("Certificate/{NAME}")];
    assert_eq!(cert["apiVersion"], "cert-manager.io/v1");
    assert_eq!(cert["spec"]["secretName"], tls_secret.as_str());
    assert_eq!(cert["spec"]["dnsNames"][0], format!("{NAME}.{NS}.svc"));
    let inject = &hook.metadata.annotations.unwrap()["cert-manager.io/inject-ca-from"];
    assert_eq!(inject, &format!("{NS}/{NAME}"));
    let issuer = cert["spec"]["issuerRef"]["name"].as_str().unwrap();
    let ca_issuer = &docs[&format!("Issuer/{issuer}")];
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"].as_str().unwrap();
    let ca_cert = docs
        .values()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == ca_secret)
        .expect("a Certificate fills the CA issuer's Secret");
    assert_eq!(ca_cert["spec"]["isCA"], true);
    let root = ca_cert["spec"]["issuerRef"]["name"].as_str().unwrap();
    assert!(docs[&format!("Issuer/{root}")]["spec"]
        .get("selfSigned")
        .is_some());
}

fn kubernetes_validate(files: &[PathBuf]) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate not runnable ({e}): install it with `pip install kubernetes-validate` (scripts/deps does)")
        })
}

#[test]
fn kubernetes_validate_accepts_the_manifests() {
    // cert-manager's kinds are CRDs the tool has no schema for; they are checked above.
    let files: Vec<PathBuf> = yaml_files()
        .into_iter()
        .filter(|p| !p.ends_with("cert-manager.yaml"))
        .collect();
    let out = kubernetes_validate(&files);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The tool does reject a broken document, so the pass above means something.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.yaml");
    let text = std::fs::read_to_string(dir().join("webhook.yaml")).unwrap();
    std::fs::write(
        &broken,
        text.replace("timeoutSeconds: 5", "timeoutSecond: 5"),
    )
    .unwrap();
    assert!(!kubernetes_validate(&[broken]).status.success());
}

const KUBECTL_STUB: &str = r#"#!/bin/sh
echo "$*" >> "$STUB_DIR/calls"
case "$*" in
  *"create secret tls"*) echo "kind: Secret" ;;
  "apply -f -") cat > "$STUB_DIR/applied" ;;
esac
"#;

#[test]
fn make_ca_script_issues_a_usable_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let stub = tmp.path().join("kubectl");
    std::fs::write(&stub, KUBECTL_STUB).unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&stub)
        .status()
        .unwrap();
    let out_dir = tmp.path().join("pki");
    let run = |extra: &[&str]| {
        Command::new("bash")
            .arg(dir().join("make-ca.sh"))
            .args(["--out", out_dir.to_str().unwrap()])
            .args(extra)
            .env("KUBECTL", &stub)
            .env("STUB_DIR", tmp.path())
            .output()
            .unwrap()
    };
    let bad = run(&["--days", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--days"));
    assert!(
        !tmp.path().join("calls").exists(),
        "nothing applied on bad input"
    );

    let ok = run(&[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // The pair loads in the webhook and chains to the CA, for the Service's DNS name.
    dadi_p2p_admission::tls::load(&out_dir.join("tls.crt"), &out_dir.join("tls.key")).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out_dir.join("ca.crt"))
        .arg(out_dir.join("tls.crt"))
        .output()
        .unwrap();
    assert!(verify.status.success());
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(out_dir.join("tls.crt"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("DNS:{NAME}.{NS}.svc")));

    // kubectl was asked to store the Secret and to patch caBundle with this CA.
    let calls = std::fs::read_to_string(tmp.path().join("calls")).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 3, "{calls}");
    // The first two run as one pipeline, in either order.
    let create = format!("-n {NS} create secret tls dadi-p2p-admission-tls");
    assert!(lines[..2].iter().any(|l| l.starts_with(&create)), "{calls}");
    assert!(lines[..2].contains(&"apply -f -"), "{calls}");
    assert!(std::fs::read_to_string(tmp.path().join("applied"))
        .unwrap()
        .contains("kind: Secret"));
    let patch = lines[2]
        .strip_prefix(&format!(
            "patch mutatingwebhookconfiguration {NAME} --type=json -p "
        ))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_str(patch).unwrap();
    let mut hook = documents()[&format!("MutatingWebhookConfiguration/{NAME}")].clone();
    json_patch::patch(&mut hook, &patch).unwrap();
    let hook: MutatingWebhookConfiguration = serde_json::from_value(hook).unwrap();
    let bundle = hook.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap();
    assert_eq!(bundle.0, std::fs::read(out_dir.join("ca.crt")).unwrap());
}
