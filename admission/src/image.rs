//! Image reference rewriting: `reg.example.com/ns/app:1` → `reg.distributed.example.com:65001/ns/app:1`.
//!
//! Only the registry host changes; the repository path, tag and digest are copied byte for
//! byte, so `name:tag@digest` keeps pinning the same content. The host follows the container
//! reference grammar: the first path component is a host when it contains `.` or `:` or is
//! `localhost`, otherwise the image lives on `docker.io`, a host the rule below leaves alone.
//!
//! Some hosts are left alone, because the P2P endpoint has no way to carry them back to the
//! origin or because the P2P name would not be the cluster owner's to use: a host with a port
//! other than 443 (the endpoint replaces the port with its own, so the origin port would be
//! lost); an IP address or `localhost` (there is no domain to put the P2P label into); and a
//! host with fewer than three labels, Docker Hub included. The P2P name of `quay.io` would be
//! `quay.distributed.io`, a name in the `distributed.io` domain that somebody else may own, and
//! the pull secret copies would hand that name the registry's credentials. A host whose second
//! label is already the P2P label is a P2P endpoint and is never rewritten twice.

use crate::config::{Endpoint, HostPattern};

/// Host used by references without an explicit registry.
pub const DOCKER_HUB: &str = "docker.io";

/// What happened to one image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The reference now points at the P2P endpoint.
    Rewritten(String),
    /// The reference already points at a P2P endpoint.
    AlreadyP2p,
    /// The registry is not in the configured list.
    NotListed,
    /// The registry is listed but cannot be reached through the P2P endpoint.
    Unsupported(&'static str),
}

/// Docker Hub's historic host names, which stand for [`DOCKER_HUB`].
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];

/// Splits a reference into its registry host (with port, if any) and the rest, filling in
/// the implicit Docker Hub host.
pub fn split(image: &str) -> Option<(String, String)> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    match image.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (!rest.is_empty()).then(|| (first.to_string(), rest.to_string()))
        }
        Some(_) => Some((DOCKER_HUB.to_string(), image.to_string())),
        None => Some((DOCKER_HUB.to_string(), format!("library/{image}"))),
    }
}

/// Whether a host name (without port) is Docker Hub under any of its names.
pub fn is_docker_hub(name: &str) -> bool {
    name.eq_ignore_ascii_case(DOCKER_HUB)
        || DOCKER_HUB_ALIASES
            .iter()
            .any(|a| name.eq_ignore_ascii_case(a))
}

/// The P2P endpoint for a registry host (`host` or `host:port`), or why there is none.
pub fn p2p_host(host: &str, endpoint: &Endpoint) -> Result<String, &'static str> {
    if host.starts_with('[') {
        return Err("an IP address has no domain to extend");
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    match port {
        None | Some("443") => {}
        Some(p) if p.parse::<u16>().is_ok() => {
            return Err("the registry port would be lost behind the P2P port")
        }
        Some(_) => return Err("the registry port is not a number"),
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err("the registry host is not a DNS name");
    }
    if labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return Err("an IP address has no domain to extend");
    }
    let last = labels[labels.len() - 1];
    if last.eq_ignore_ascii_case("localhost") {
        return Err("a localhost name has no domain to extend");
    }
    if is_docker_hub(name) {
        return Err("Docker Hub: the P2P name would be in someone else's domain");
    }
    if labels.len() < 3 {
        return Err("fewer than three host labels: the P2P name would be in someone else's domain");
    }
    let (first, domain) = name.split_once('.').expect("three labels");
    Ok(format!(
        "{first}.{}.{domain}:{}",
        endpoint.label, endpoint.port
    ))
}

/// Whether `host` already names a P2P endpoint (its second label is the P2P label).
pub fn is_p2p_host(host: &str, endpoint: &Endpoint) -> bool {
    let name = host.split(':').next().unwrap_or(host);
    name.split('.')
        .nth(1)
        .is_some_and(|l| l.eq_ignore_ascii_case(&endpoint.label))
}

/// Decides what becomes of a registry host (`host` or `host:port`); a rewrite yields the P2P
/// host with its port.
pub fn rewrite_host(host: &str, registries: &[HostPattern], endpoint: &Endpoint) -> Outcome {
    if is_p2p_host(host, endpoint) {
        return Outcome::AlreadyP2p;
    }
    let bare = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    if !registries.iter().any(|p| p.matches(&bare)) {
        return Outcome::NotListed;
    }
    match p2p_host(host, endpoint) {
        Ok(p2p) => Outcome::Rewritten(p2p),
        Err(why) => Outcome::Unsupported(why),
    }
}

/// Decides what becomes of `image` under the given registry list and endpoint.
pub fn rewrite(image: &str, registries: &[HostPattern], endpoint: &Endpoint) -> Outcome {
    let Some((host, rest)) = split(image) else {
        return Outcome::Unsupported("not a valid image reference");
    };
    match rewrite_host(&host, registries, endpoint) {
        Outcome::Rewritten(p2p) => Outcome::Rewritten(format!("{p2p}/{rest}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(image: &str) -> Outcome {
        rewrite(image, &[HostPattern::Any], &Endpoint::default())
    }

    fn ok(s: &str) -> Outcome {
        Outcome::Rewritten(s.to_string())
    }

    #[test]
    fn documented_example() {
        assert_eq!(
            any("test-registry-vpc.cn-hangzhou.cr.aliyuncs.com/docker-builder/nginx:latest"),
            ok("test-registry-vpc.distributed.cn-hangzhou.cr.aliyuncs.com:65001/docker-builder/nginx:latest")
        );
    }

    #[test]
    fn short_hosts_are_never_moved_into_another_domain() {
        // `*` lists every registry, so each of these reaches the host rule.
        for image in [
            "nginx",
            "library/nginx:1.27",
            "user/app",
            "docker.io/user/app:v2",
            "index.docker.io/library/nginx",
            "registry-1.docker.io/library/nginx",
            "quay.io/prometheus/node-exporter:v1.8.0",
            "ghcr.io/org/tool:1",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "example.com/app:1",
        ] {
            assert!(
                matches!(any(image), Outcome::Unsupported(why) if why.contains("domain")),
                "{image}: {:?}",
                any(image)
            );
        }
    }

    #[test]
    fn tags_and_digests_survive() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            any(&format!("reg.example.com/a/b@{d}")),
            ok(&format!("reg.distributed.example.com:65001/a/b@{d}"))
        );
        assert_eq!(
            any(&format!("reg.example.com/a/b:1.2@{d}")),
            ok(&format!("reg.distributed.example.com:65001/a/b:1.2@{d}"))
        );
        assert_eq!(
            any(&format!("a.b.example.com/c@{d}")),
            ok(&format!("a.distributed.b.example.com:65001/c@{d}"))
        );
    }

    #[test]
    fn ports_and_odd_hosts() {
        assert_eq!(
            any("reg.example.com:443/a:1"),
            ok("reg.distributed.example.com:65001/a:1")
        );
        assert!(matches!(
            any("reg.example.com:5000/a:1"),
            Outcome::Unsupported(_)
        ));
        assert!(matches!(any("localhost:5000/a:1"), Outcome::Unsupported(_)));
        assert!(matches!(any("localhost/a"), Outcome::Unsupported(_)));
        assert!(matches!(
            any("reg.dev.localhost/a"),
            Outcome::Unsupported(_)
        ));
        assert!(matches!(any("reg..example.com/a"), Outcome::Unsupported(_)));
        assert!(matches!(any("10.0.0.1:5000/a"), Outcome::Unsupported(_)));
        assert!(matches!(any("10.0.0.1/a"), Outcome::Unsupported(_)));
        assert!(matches!(any("[::1]:5000/a"), Outcome::Unsupported(_)));
        assert!(matches!(any(""), Outcome::Unsupported(_)));
        assert!(matches!(any("reg.example.com/"), Outcome::Unsupported(_)));
    }

    #[test]
    fn rewriting_is_idempotent() {
        let Outcome::Rewritten(once) = any("reg.example.com/a:1") else {
            panic!()
        };
        assert_eq!(any(&once), Outcome::AlreadyP2p);
        let Outcome::Rewritten(deep) = any("a.b.example.com/c") else {
            panic!()
        };
        assert_eq!(any(&deep), Outcome::AlreadyP2p);
    }

    #[test]
    fn unlisted_registries_are_left_alone() {
        let list = [HostPattern::parse("r", "*.example.com").unwrap()];
        let e = Endpoint::default();
        assert_eq!(rewrite("nginx", &list, &e), Outcome::NotListed);
        assert_eq!(rewrite("other.org/a", &list, &e), Outcome::NotListed);
        assert_eq!(
            rewrite("REG.example.com/a", &list, &e),
            ok("REG.distributed.example.com:65001/a")
        );
    }
}
