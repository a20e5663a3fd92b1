//! The peer protocol as shipped for Kubernetes: packaging/kubernetes/peers (a headless
//! Service, and the ConfigMap and DaemonSet with the peer lines) and the chart with
//! `peer.enabled`. The Service selects exactly the DaemonSet's pods on p2pPort, the config
//! names that Service, the token file lies in the Secret's volume, and the config starts the
//! real daemon, whose peer port then refuses requests without the token from that file.

use std::collections::BTreeMap;
use std::path::Path;

use dadi_p2p_integration::{free_port, Accelerator};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use crate::common::packaging;
use crate::config::{get_with, start_with, status};
use crate::helm::{
    assert_same_as_plain, render, rendered_documents, try_render, without_helm_labels,
};
use crate::kubernetes::{check_install, documents, plain_documents, typed, yaml_files, NAME, NS};

const TOKEN_HEADER: &str = "x-dadi-peer-token";

fn service_key() -> String {
    format!("Service/{NAME}-peers")
}

/// The documents of packaging/kubernetes/peers alone.
fn peer_files_documents() -> BTreeMap<String, Value> {
    let texts: Vec<String> = yaml_files(&packaging().join("kubernetes/peers"))
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    documents(texts.iter().map(String::as_str))
}

/// packaging/kubernetes with the objects of peers/ in place of those of the same name.
fn peer_documents() -> BTreeMap<String, Value> {
    let mut docs = plain_documents();
    docs.extend(peer_files_documents());
    docs
}

/// The peer objects of an install, checked against its DaemonSet and config (after
/// `check_install`). Returns the config text and the name of the Secret holding the token.
fn check_peers(docs: &BTreeMap<String, Value>, domain: &str) -> (String, String) {
    let config_text = check_install(docs, NS);
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&config_text).unwrap();
    let ds: DaemonSet = typed(docs, &format!("DaemonSet/{NAME}"));
    let svc: Service = typed(docs, &service_key());
    assert_eq!(svc.metadata.namespace.as_deref(), Some(NS));
    let svc_name = svc.metadata.name.unwrap();

    // Headless, over exactly the DaemonSet's pods: the name resolves to every node.
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "not headless");
    let selector = spec.selector.unwrap();
    assert_eq!(Some(&selector), ds.spec.selector.match_labels.as_ref());
    let template = ds.spec.template;
    let labels = template.metadata.unwrap().labels.unwrap();
    for (k, v) in &selector {
        assert_eq!(labels.get(k), Some(v), "the pods lack selector label {k}");
    }
    let pod = template.spec.unwrap();
    assert_eq!(
        pod.dns_policy.as_deref(),
        Some("ClusterFirstWithHostNet"),
        "on the host network only the cluster DNS knows the Service's name"
    );

    // One port, p2pPort, which the pods name and the daemon listens on.
    let p2p_port = config["p2pPort"].as_u64().expect("p2pPort");
    let ports = spec.ports.unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0].port as u64, p2p_port);
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    let c = &pod.containers[0];
    let peer_port = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("peer"))
        .expect("no container port named peer");
    assert_eq!(peer_port.container_port as u64, p2p_port);
    assert_eq!(peer_port.protocol.as_deref(), Some("TCP"));
    match ports[0].target_port.as_ref().unwrap() {
        IntOrString::String(name) => assert_eq!(name, "peer"),
        IntOrString::Int(n) => assert_eq!(*n as u64, p2p_port),
    }

    // The config's members are the Service's name; the listener is on every node address.
    let peer = &config["peer"];
    let members = peer["members"].as_sequence().expect("peer.members");
    let want = format!("{svc_name}.{NS}.svc.{domain}:{p2p_port}");
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].as_str(), Some(want.as_str()));
    assert_eq!(
        peer["listen"].as_str(),
        Some(format!("0.0.0.0:{p2p_port}").as_str())
    );

    // tokenFile is the Secret's `token` key in its read-only volume.
    let token_file = Path::new(peer["tokenFile"].as_str().expect("peer.tokenFile"));
    let volumes = pod.volumes.unwrap();
    let secret_volume = volumes
        .iter()
        .find(|v| v.secret.is_some())
        .expect("no Secret volume");
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == secret_volume.name)
        .expect("the Secret volume is not mounted");
    assert_eq!(mount.read_only, Some(true));
    let secret = secret_volume.secret.clone().unwrap();
    let items = secret.items.unwrap();
    let item = items
        .iter()
        .find(|i| i.key == "token")
        .expect("no token key");
    assert_eq!(token_file, Path::new(&mount.mount_path).join(&item.path));
    assert_eq!(secret.default_mode, Some(0o400));
    (config_text, secret.secret_name.unwrap())
}

/// Starts the daemon with a peer config as a pod runs it, with only addresses changed: the
/// token file where tokenFile points, its folder moved to a temp dir as the Secret's volume
/// would be, and the peer listener on a free loopback port. Returns the daemon, the peer
/// port and the temp dir.
fn start_with_token(config_text: &str, file_text: &str) -> (Accelerator, u16, tempfile::TempDir) {
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(config_text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = Path::new(doc["peer"]["tokenFile"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_owned();
    let token_file = dir.path().join(name);
    std::fs::write(&token_file, file_text).unwrap();
    let port = free_port().unwrap();
    doc["peer"]["tokenFile"] = token_file.to_str().unwrap().into();
    doc["peer"]["listen"] = format!("127.0.0.1:{port}").into();
    let (daemon, _) = start_with(&serde_yaml_ng::to_string(&doc).unwrap());
    (daemon, port, dir)
}

/// The status of a request to the peer port with `token`, or with none.
fn peer_port_answer(port: u16, token: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = token.map(|t| (TOKEN_HEADER, t)).into_iter().collect();
    get_with(&format!("http://127.0.0.1:{port}/"), &headers)
        .status
        .as_u16()
}

/// The peer port takes the token and refuses everything else; the first refusal comes before
/// any routing, so the 404 shows the token was accepted.
fn assert_peer_port_needs(port: u16, token: &str) {
    assert_eq!(peer_port_answer(port, None), 403);
    assert_eq!(peer_port_answer(port, Some("not-the-token")), 403);
    assert_eq!(peer_port_answer(port, Some(token)), 404);
}

#[test]
fn plain_peer_manifests_are_typed_and_consistent() {
    let own = peer_files_documents();
    assert_eq!(
        own.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "ConfigMap/dadi-p2p",
            "DaemonSet/dadi-p2p",
            "Service/dadi-p2p-peers"
        ]
    );
    let docs = peer_documents();
    let (_, secret) = check_peers(&docs, "cluster.local");
    // The Secret the comment tells to create is the one the pods mount.
    let service = std::fs::read_to_string(packaging().join("kubernetes/peers/service.yaml"));
    assert!(
        service
            .unwrap()
            .contains(&format!("create secret generic {secret} ")),
        "service.yaml does not say how to create {secret}"
    );

    // Without the peer lines, peers/ holds the objects of packaging/kubernetes.
    let plain = plain_documents();
    let mut cm = docs["ConfigMap/dadi-p2p"].clone();
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    let mut config: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(text).unwrap();
    assert!(config.remove("p2pPort").is_some() && config.remove("peer").is_some());
    let plain_text = plain["ConfigMap/dadi-p2p"]["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let plain_config: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(plain_text).unwrap();
    assert_eq!(config, plain_config);
    cm["data"] = plain["ConfigMap/dadi-p2p"]["data"].clone();
    assert_eq!(cm, plain["ConfigMap/dadi-p2p"]);

    let mut ds = docs["DaemonSet/dadi-p2p"].clone();
    let pod = &mut ds["spec"]["template"]["spec"];
    pod["dnsPolicy"] = json!("Default");
    let drop_named = |list: &mut Value, name: &str| {
        let list = list.as_array_mut().unwrap();
        let before = list.len();
        list.retain(|item| item["name"] != name);
        assert_eq!(list.len() + 1, before, "no {name}");
    };
    drop_named(&mut pod["volumes"], "peer-token");
    let c = &mut pod["containers"][0];
    drop_named(&mut c["ports"], "peer");
    drop_named(&mut c["volumeMounts"], "peer-token");
    assert_eq!(ds, plain["DaemonSet/dadi-p2p"]);
}

#[test]
fn plain_peer_config_starts_the_daemon_with_the_token() {
    let (config_text, _) = check_peers(&peer_documents(), "cluster.local");
    // A token file made by `openssl rand -hex 32 >file` ends in a newline.
    let token = "0123456789abcdef0123456789abcdef";
    let (daemon, port, _dir) = start_with_token(&config_text, &format!("{token}\n"));
    assert_peer_port_needs(port, token);
    // The Service's name resolves nowhere here: no peers, and every piece from the origin.
    assert_eq!(status(&daemon)["peers"], json!([]));
}

#[test]
fn chart_peers_render_the_plain_peer_manifests() {
    let overrides = json!({"peer": {"enabled": true, "existingSecret": "dadi-p2p-peer-token"}});
    let files = render(&overrides);
    assert!(!files.contains_key("peer-secret.yaml"), "{files:?}");
    assert!(files["NOTES.txt"].contains("TCP port 65002"));
    let mut rendered = rendered_documents(&files);
    without_helm_labels(&mut rendered);
    assert_same_as_plain(&rendered, peer_documents(), "packaging/kubernetes/peers");
}

#[test]
fn chart_peer_values_reach_the_objects_and_the_daemon() {
    let token = "token-from-values";
    let overrides = json!({"peer": {
        "enabled": true,
        "port": 65102,
        "token": token,
        "clusterDomain": "k8s.example",
        "refreshSecs": 10,
        "downSecs": 20,
    }});
    let docs = rendered_documents(&render(&overrides));
    let (config_text, secret_name) = check_peers(&docs, "k8s.example");
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&config_text).unwrap();
    assert_eq!(config["p2pPort"], 65102);
    assert_eq!(config["peer"]["refreshSecs"], 10);
    assert_eq!(config["peer"]["downSecs"], 20);

    // The chart's own Secret, the one the pods mount, holds the token under `token`.
    let secret: Secret = typed(&docs, &format!("Secret/{secret_name}"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some(NS));
    let data = secret.string_data.unwrap();
    assert_eq!(data["token"], token);

    let (_daemon, port, _dir) = start_with_token(&config_text, &data["token"]);
    assert_peer_port_needs(port, token);
}

#[test]
fn chart_peers_need_a_token() {
    let err = try_render(&json!({"peer": {"enabled": true}})).expect_err("rendered");
    assert!(
        err.starts_with("peer-secret.yaml: ")
            && err.contains("peer.token")
            && err.contains("peer.existingSecret"),
        "{err}"
    );
    // Off, as by default, no peer object is rendered and nothing is asked.
    let files = render(&json!({"peer": {"token": ""}}));
    assert!(!files.keys().any(|f| f.starts_with("peer-")), "{files:?}");
    let docs = rendered_documents(&render(&json!({"peer": {"enabled": true, "token": "t"}})));
    assert!(docs.contains_key(&service_key()));
}
