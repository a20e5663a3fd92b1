//! The config files that ship (the packages' /etc/dadi-p2p/config.yaml and the ConfigMap of
//! the DaemonSet) start the real daemon, and their values reach it. Only addresses change:
//! free loopback ports for the service (`--listen`), the exporter and the peer protocol, and
//! a temp cache.

use dadi_p2p_integration::{free_port, http, Accelerator, AcceleratorOptions};
use serde_json::Value;

use crate::common::{daemon_bin, packaging};

pub fn get(url: &str) -> http::Response {
    get_with(url, &[])
}

pub fn get_with(url: &str, headers: &[(&str, &str)]) -> http::Response {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(http::get(url, headers))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Starts the daemon with `yaml` (whose `ExporterConfig.port`, when set, is moved to a free
/// port); `/healthz` answered 200 once this returns. Returns the daemon and the exporter port.
pub fn start_with(yaml: &str) -> (Accelerator, u16) {
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let exporter_port = free_port().unwrap();
    if let Some(exporter) = doc.get_mut("ExporterConfig") {
        exporter["port"] = exporter_port.into();
    }
    let opts = AcceleratorOptions::new(daemon_bin())
        .config_yaml(serde_yaml_ng::to_string(&doc).unwrap())
        .env("DADI_P2P_NODE_IP", "127.0.0.1");
    let daemon = Accelerator::start(opts).unwrap_or_else(|e| panic!("daemon refused: {e}"));
    (daemon, exporter_port)
}

pub fn status(daemon: &Accelerator) -> Value {
    let resp = get(&format!("{}/status", daemon.base_url()));
    assert_eq!(resp.status, 200);
    serde_json::from_slice(&resp.body).unwrap()
}

#[test]
fn package_config_starts_the_daemon_with_its_values() {
    let text = std::fs::read_to_string(packaging().join("config/config.yaml")).unwrap();
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    // p2pPort moved to a free port, to see that nothing listens there without peers.
    let p2p_port = free_port().unwrap();
    let mut moved = yaml.clone();
    moved["p2pPort"] = p2p_port.into();
    let (daemon, exporter_port) = start_with(&serde_yaml_ng::to_string(&moved).unwrap());
    let healthz = get(&format!("{}/healthz", daemon.base_url()));
    assert_eq!(healthz.status, 200);

    let status = status(&daemon);
    assert_eq!(status["mode"], "agent");
    assert_eq!(
        status["cache"]["capacity"].as_u64(),
        yaml["cache"]["capacity"].as_u64()
    );
    assert_eq!(yaml["service"]["listen"], "127.0.0.1:65001");
    assert_eq!(yaml["cache"]["dir"], "/var/cache/dadi-p2p");
    assert_eq!(yaml["DeployConfig"]["logDir"], "/var/log/dadi-p2p");
    // The exporter is off by default, as documented: nothing listens on its port.
    assert_eq!(yaml["ExporterConfig"]["enable"], false);
    let metrics = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(http::get(
            &format!("http://127.0.0.1:{exporter_port}/metrics"),
            &[],
        ));
    assert!(metrics.is_err(), "exporter answered while disabled");

    // Peers are off as shipped: no members, no peer listener, no peers in the status.
    assert_eq!(
        yaml["peer"]["members"],
        serde_yaml_ng::Value::Sequence(vec![])
    );
    assert_eq!(yaml["p2pPort"], 65002);
    let peer_port = std::net::TcpStream::connect(("127.0.0.1", p2p_port));
    assert!(
        peer_port.is_err(),
        "something listens on p2pPort without peers"
    );
    assert_eq!(status["peers"], serde_json::json!([]));
}

#[test]
fn a_typo_in_the_package_config_stops_the_daemon() {
    // The same start path refuses a misspelt key, so the pass above is not vacuous.
    let text = std::fs::read_to_string(packaging().join("config/config.yaml")).unwrap();
    let broken = text.replacen("capacity:", "capacityy:", 1);
    let opts = AcceleratorOptions::new(daemon_bin())
        .config_yaml(broken)
        .ready_timeout(std::time::Duration::from_secs(10));
    let err = Accelerator::start(opts).err().expect("daemon started");
    assert!(err.to_string().contains("capacityy"), "{err}");
}
