//! The addresses of this machine's network interfaces that are up, in the kernel's order:
//! what a service bound to `0.0.0.0` or `::` is reachable at.

use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

/// IPv4 and IPv6 addresses of the interfaces that are up; empty if they cannot be listed.
pub fn addresses() -> Vec<IpAddr> {
    let Ok(all) = getifaddrs() else {
        return Vec::new();
    };
    all.filter(|i| i.flags.contains(InterfaceFlags::IFF_UP))
        .filter_map(|i| {
            let a = i.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        assert!(addresses().contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
