//! The manifests under packaging/kubernetes: every document deserialises into its k8s-openapi
//! type without losing a field, the DaemonSet agrees with its ConfigMap (ports, paths, probes),
//! the ConfigMap's config starts the real daemon, and `kubernetes-validate --strict` accepts
//! the manifests and the chart's rendering, the webhook's and the peers' templates included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::packaging;
use crate::config::{get, start_with, status};

pub const NS: &str = "dadi-p2p-system";
pub const NAME: &str = "dadi-p2p";

pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of the texts, as JSON, keyed by `Kind/name`.
pub fn documents<'a>(texts: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for text in texts {
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let v = serde_yaml_ng::Value::deserialize(doc).unwrap();
            let v: Value = serde_json::to_value(v).unwrap();
            let key = format!("{}/{}", v["kind"].as_str().unwrap(), v["metadata"]["name"]);
            let key = key.replace('"', "");
            assert!(out.insert(key.clone(), v).is_none(), "{key} defined twice");
        }
    }
    out
}

pub fn plain_documents() -> BTreeMap<String, Value> {
    let texts: Vec<String> = yaml_files(&packaging().join("kubernetes"))
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    documents(texts.iter().map(String::as_str))
}

/// Deserialises into `T` and checks that serialising again gives the same document, so a
/// misspelt or misplaced field (which serde would drop) fails.
pub fn typed<T: DeserializeOwned + Serialize>(docs: &BTreeMap<String, Value>, key: &str) -> T {
    let v = docs.get(key).unwrap_or_else(|| panic!("no {key}"));
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(
        &serde_json::to_value(&t).unwrap(),
        v,
        "{key} does not round-trip"
    );
    t
}

/// The objects of a DaemonSet install, checked against each other. Returns the config text.
pub fn check_install(docs: &BTreeMap<String, Value>, ns: &str) -> String {
    let sa: ServiceAccount = typed(docs, &format!("ServiceAccount/{NAME}"));
    let cm: ConfigMap = typed(docs, &format!("ConfigMap/{NAME}"));
    let ds: DaemonSet = typed(docs, &format!("DaemonSet/{NAME}"));
    for meta in [&sa.metadata, &cm.metadata, &ds.metadata] {
        assert_eq!(meta.namespace.as_deref(), Some(ns));
    }
    let config_text = cm.data.as_ref().unwrap()["config.yaml"].clone();
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&config_text).unwrap();

    let spec = ds.spec;
    let template_meta = spec.template.metadata.unwrap();
    let labels = template_meta.labels.unwrap();
    for (k, v) in spec.selector.match_labels.unwrap() {
        assert_eq!(labels.get(&k), Some(&v), "selector label {k}");
    }
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_ref(), sa.metadata.name.as_ref());
    assert_eq!(pod.automount_service_account_token, Some(false));
    let tolerations = pod.tolerations.unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "must tolerate every taint: {tolerations:?}"
    );
    let c = &pod.containers[0];

    // --config points into the ConfigMap's mount.
    let volumes = pod.volumes.unwrap();
    let mounts = c.volume_mounts.clone().unwrap();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("no mount of {volume}"))
            .mount_path
            .clone()
    };
    let config_volume = volumes.iter().find(|v| v.config_map.is_some()).unwrap();
    assert_eq!(
        config_volume.config_map.as_ref().unwrap().name,
        cm.metadata.name.clone().unwrap()
    );
    let config_arg = format!("--config={}/config.yaml", mount_of(&config_volume.name));
    assert_eq!(c.args.as_deref(), Some(&[config_arg][..]));

    // Cache and logs on the node, where the config says they are.
    let host_path = |name: &str| {
        let v = volumes.iter().find(|v| v.name == name).unwrap();
        let hp = v.host_path.as_ref().unwrap();
        assert_eq!(hp.type_.as_deref(), Some("DirectoryOrCreate"));
        hp.path.clone()
    };
    assert_eq!(
        config["cache"]["dir"].as_str(),
        Some(mount_of("cache").as_str())
    );
    assert_eq!(
        config["DeployConfig"]["logDir"].as_str(),
        Some(mount_of("log").as_str())
    );
    host_path("cache");
    host_path("log");

    // Ports: the service port from the config, the exporter's from the config, both named.
    let listen = config["service"]["listen"].as_str().unwrap();
    let (ip, port) = listen.rsplit_once(':').unwrap();
    assert_eq!(ip, "127.0.0.1", "the service is never on a node address");
    assert_eq!(config["ExporterConfig"]["address"], "0.0.0.0");
    let ports = c.ports.clone().unwrap();
    let port_named = |name: &str| {
        ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap()
            .container_port
    };
    assert_eq!(port_named("service").to_string(), port);
    let exporter_port = config["ExporterConfig"]["port"].as_u64().unwrap();
    assert_eq!(port_named("metrics") as u64, exporter_port);
    let annotations = template_meta.annotations.unwrap();
    assert_eq!(
        annotations["prometheus.io/scrape"],
        config["ExporterConfig"]["enable"]
            .as_bool()
            .unwrap()
            .to_string()
    );
    assert_eq!(annotations["prometheus.io/port"], exporter_port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(config["ExporterConfig"]["standaloneExporterPort"], true);

    // Probes: the daemon's status command against the loopback service.
    for probe in [&c.readiness_probe, &c.liveness_probe, &c.startup_probe] {
        let exec = probe.as_ref().unwrap().exec.as_ref().unwrap();
        let command = exec.command.clone().unwrap();
        assert_eq!(
            command,
            [
                "/usr/bin/dadi-p2p",
                "status",
                "--address",
                &format!("http://{listen}")
            ]
        );
    }

    // The node address for the metrics' node label.
    let env = c.env.as_ref().unwrap();
    let node_ip = env.iter().find(|e| e.name == "DADI_P2P_NODE_IP").unwrap();
    let field = node_ip
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "status.hostIP");

    // Longer than the daemon's drain.
    let grace = config["service"]["graceMs"].as_u64().unwrap_or(10_000);
    assert!(pod.termination_grace_period_seconds.unwrap() as u64 * 1000 > grace);
    config_text
}

#[test]
fn manifests_are_typed_and_consistent() {
    let docs = plain_documents();
    let keys: Vec<&str> = docs.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "ConfigMap/dadi-p2p",
            "DaemonSet/dadi-p2p",
            "Namespace/dadi-p2p-system",
            "ServiceAccount/dadi-p2p"
        ]
    );
    let ns: Namespace = typed(&docs, &format!("Namespace/{NS}"));
    assert_eq!(
        ns.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    check_install(&docs, NS);

    // The documented agent's size, as requests and limits.
    let ds: DaemonSet = typed(&docs, &format!("DaemonSet/{NAME}"));
    let c = &ds.spec.template.spec.unwrap().containers[0];
    let resources = c.resources.clone().unwrap();
    let one = |m: &BTreeMap<String, Quantity>| (m["cpu"].0.clone(), m["memory"].0.clone());
    let want = ("1".to_string(), "1Gi".to_string());
    assert_eq!(one(resources.requests.as_ref().unwrap()), want);
    assert_eq!(one(resources.limits.as_ref().unwrap()), want);
}

#[test]
fn configmap_config_starts_the_daemon() {
    let docs = plain_documents();
    let cm: ConfigMap = typed(&docs, &format!("ConfigMap/{NAME}"));
    let text = &cm.data.unwrap()["config.yaml"];
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
    let (daemon, exporter_port) = start_with(text);
    let status = status(&daemon);
    assert_eq!(
        status["cache"]["capacity"].as_u64(),
        yaml["cache"]["capacity"].as_u64()
    );
    // The exporter the pods' annotations point Prometheus at answers.
    let metrics = get(&format!("http://127.0.0.1:{exporter_port}/metrics"));
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("DADIP2P_Alive"));
}

/// `kubernetes-validate --strict` over the files: whether it accepted them, and what it said.
fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let mut cmd = Command::new("kubernetes-validate");
    cmd.arg("--strict").arg("--quiet").args(files);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("kubernetes-validate: {e} (scripts/deps installs it from PyPI)"),
    };
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

#[test]
fn kubernetes_validate_accepts_manifests_and_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = yaml_files(&packaging().join("kubernetes"));
    files.extend(yaml_files(&packaging().join("kubernetes/peers")));
    // With the webhook and the peers on, the chart renders every template. cert-manager's
    // kinds are CRDs the tool has no schema for; the chart test compares them with
    // packaging/admission.
    let chart = crate::helm::render(&serde_json::json!({
        "admission": {"enabled": true},
        "peer": {"enabled": true, "token": "t"},
    }));
    for (name, text) in chart {
        if name.ends_with(".yaml") && name != "admission-cert-manager.yaml" {
            let path = tmp.path().join(format!("chart-{name}"));
            std::fs::write(&path, text).unwrap();
            files.push(path);
        }
    }
    let (accepted, said) = kubernetes_validate(&files);
    assert!(accepted, "{said}");

    // A misspelt field fails, so the pass above means something.
    let broken = tmp.path().join("broken.yaml");
    let text = std::fs::read_to_string(packaging().join("kubernetes/daemonset.yaml")).unwrap();
    std::fs::write(&broken, text.replace("hostNetwork:", "hostNetwrok:")).unwrap();
    let (accepted, said) = kubernetes_validate(&[broken]);
    assert!(!accepted && said.contains("hostNetwrok"), "{said}");
}
