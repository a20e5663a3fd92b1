//! The `node` label of the documented families: `<ip>:<port>` of the service as other
//! machines reach it.
//!
//! A daemon on loopback or on every address (`0.0.0.0` or `::`) would otherwise label every
//! node of a cluster alike, and a dashboard that groups by `node` would add them all up as
//! one. `DADI_P2P_NODE_IP`, when set (a DaemonSet sets it from the pod's `status.hostIP`),
//! is therefore the label's IP whatever the service's address. Without it, a specific
//! address is the label; `0.0.0.0` or `::` take the first non-loopback IPv4 address of an
//! interface that is up, which on a node is its primary address. Nothing is sent to find it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::TelemetryError;

/// Environment variable naming the node's IP for the `node` label.
pub const NODE_IP_ENV: &str = "DADI_P2P_NODE_IP";

/// The `node` label for a service bound to `service`.
pub fn node_label(service: SocketAddr) -> Result<String, TelemetryError> {
    let env = std::env::var(NODE_IP_ENV).ok();
    resolve(service, env.as_deref(), interface_ipv4s)
}

fn resolve(
    service: SocketAddr,
    env: Option<&str>,
    interfaces: impl FnOnce() -> Vec<Ipv4Addr>,
) -> Result<String, TelemetryError> {
    let ip = match env.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => v
            .parse::<IpAddr>()
            .map_err(|_| TelemetryError::NodeIp(v.to_string()))?,
        None if !service.ip().is_unspecified() => service.ip(),
        None => interfaces()
            .into_iter()
            .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .map_or(service.ip(), IpAddr::V4),
    };
    Ok(SocketAddr::new(ip, service.port()).to_string())
}

/// IPv4 addresses of the interfaces that are up, in the kernel's order.
fn interface_ipv4s() -> Vec<Ipv4Addr> {
    crate::interfaces::addresses()
        .into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Vec<Ipv4Addr> {
        Vec::new()
    }

    #[test]
    fn a_specific_address_is_the_label_unless_the_variable_names_the_node() {
        let addr: SocketAddr = "10.1.2.3:65001".parse().unwrap();
        assert_eq!(resolve(addr, None, none).unwrap(), "10.1.2.3:65001");
        let lo: SocketAddr = "127.0.0.1:65001".parse().unwrap();
        assert_eq!(
            resolve(lo, Some("10.9.9.9"), none).unwrap(),
            "10.9.9.9:65001"
        );
    }

    #[test]
    fn an_unspecified_address_takes_the_variable_then_an_interface() {
        let any: SocketAddr = "0.0.0.0:65001".parse().unwrap();
        let ifs = || vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(192, 168, 69, 172)];
        assert_eq!(
            resolve(any, Some("10.0.0.7"), ifs).unwrap(),
            "10.0.0.7:65001"
        );
        assert_eq!(resolve(any, None, ifs).unwrap(), "192.168.69.172:65001");
        assert_eq!(resolve(any, Some(""), ifs).unwrap(), "192.168.69.172:65001");
        assert_eq!(resolve(any, None, none).unwrap(), "0.0.0.0:65001");
        let v6: SocketAddr = "[::]:65001".parse().unwrap();
        assert_eq!(resolve(v6, None, ifs).unwrap(), "192.168.69.172:65001");
    }

    #[test]
    fn a_bad_variable_is_refused_by_name() {
        let any: SocketAddr = "0.0.0.0:65001".parse().unwrap();
        let e = resolve(any, Some("node-1"), none).unwrap_err().to_string();
        assert!(e.contains(NODE_IP_ENV) && e.contains("node-1"), "{e}");
    }

    #[test]
    fn interfaces_include_loopback() {
        assert!(interface_ipv4s().contains(&Ipv4Addr::LOCALHOST));
    }
}
