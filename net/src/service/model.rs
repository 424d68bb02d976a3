//! What the proxy is asked to do: Services with their ports and ready
//! endpoints, and their validation. No I/O here.
//!
//! A spec set that passes [`validate_all`] always yields a ruleset nft
//! accepts: names are limited to DNS-label characters (so they are safe in
//! nftables object names), addresses are unicast, ports non-zero, and no
//! two ports (or node ports) collide.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use crate::NetError;

/// Longest sessionAffinity timeout Kubernetes accepts (one day).
pub const MAX_AFFINITY: Duration = Duration::from_secs(86_400);

/// Transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The nftables / Kubernetes lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parse the nftables name (as printed by `nft -j list`).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One port of a Service and the ready endpoints behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub protocol: Protocol,
    pub port: u16,
    /// NodePort on every local address of the node (not 127.0.0.0/8).
    pub node_port: Option<u16>,
    /// Ready endpoints; empty means the port rejects connections.
    pub endpoints: Vec<SocketAddrV4>,
}

/// A Service as the proxy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    /// sessionAffinity ClientIP with this timeout (whole seconds, 1 s to
    /// one day); None = no affinity.
    pub affinity: Option<Duration>,
}

impl ServiceSpec {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Check this spec alone.
    pub fn validate(&self) -> Result<(), NetError> {
        let bad = |reason: String| NetError::InvalidService {
            service: self.key(),
            reason,
        };
        check_label("namespace", &self.namespace).map_err(bad)?;
        check_label("name", &self.name).map_err(bad)?;
        check_unicast("cluster ip", self.cluster_ip).map_err(bad)?;
        if self.ports.is_empty() {
            return Err(bad("no ports".into()));
        }
        if let Some(t) = self.affinity
            && (t < Duration::from_secs(1) || t > MAX_AFFINITY || t.subsec_nanos() != 0)
        {
            return Err(bad(format!(
                "affinity timeout {t:?} must be whole seconds between 1s and {}s",
                MAX_AFFINITY.as_secs()
            )));
        }
        let mut seen = HashSet::new();
        for p in &self.ports {
            if p.port == 0 {
                return Err(bad(format!("{} port 0", p.protocol)));
            }
            if !seen.insert((p.protocol, p.port)) {
                return Err(bad(format!("duplicate port {}/{}", p.protocol, p.port)));
            }
            if p.node_port == Some(0) {
                return Err(bad(format!("node port 0 on {}/{}", p.protocol, p.port)));
            }
            let mut eps = HashSet::new();
            for ep in &p.endpoints {
                check_unicast("endpoint", *ep.ip()).map_err(bad)?;
                if ep.port() == 0 {
                    return Err(bad(format!("endpoint {ep} has port 0")));
                }
                if !eps.insert(*ep) {
                    return Err(bad(format!(
                        "endpoint {ep} listed twice on {}/{}",
                        p.protocol, p.port
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Check every spec and the collisions between them (same name, same
/// cluster ip:port, same node port).
pub fn validate_all(specs: &[ServiceSpec]) -> Result<(), NetError> {
    let mut names = HashSet::new();
    let mut vips = HashSet::new();
    let mut node_ports = HashSet::new();
    for s in specs {
        s.validate()?;
        let bad = |reason: String| NetError::InvalidService {
            service: s.key(),
            reason,
        };
        if !names.insert((&s.namespace, &s.name)) {
            return Err(bad("listed twice".into()));
        }
        for p in &s.ports {
            if !vips.insert((s.cluster_ip, p.protocol, p.port)) {
                return Err(bad(format!(
                    "{}:{}/{} is used by another service",
                    s.cluster_ip, p.port, p.protocol
                )));
            }
            if let Some(np) = p.node_port
                && !node_ports.insert((p.protocol, np))
            {
                return Err(bad(format!(
                    "node port {np}/{} is already used",
                    p.protocol
                )));
            }
        }
    }
    Ok(())
}

/// A DNS-1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
fn check_label(what: &str, s: &str) -> Result<(), String> {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends = s
        .bytes()
        .next()
        .zip(s.bytes().last())
        .is_some_and(|(a, z)| a != b'-' && z != b'-');
    if s.is_empty() || s.len() > 63 || !ok_chars || !ends {
        return Err(format!(
            "{what} {s:?} is not a DNS label (1-63 of a-z, 0-9, '-')"
        ));
    }
    Ok(())
}

fn check_unicast(what: &str, ip: Ipv4Addr) -> Result<(), String> {
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(format!("{what} {ip} is not a usable unicast address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
            ports: vec![ServicePort {
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30080),
                endpoints: vec!["10.244.1.2:8080".parse().unwrap()],
            }],
            affinity: None,
        }
    }

    fn reason(specs: &[ServiceSpec]) -> String {
        match validate_all(specs) {
            Err(NetError::InvalidService { reason, .. }) => reason,
            other => panic!("expected InvalidService, got {other:?}"),
        }
    }

    #[test]
    fn good_spec_passes() {
        validate_all(&[spec()]).unwrap();
    }

    #[test]
    fn bad_specs_are_rejected_with_reasons() {
        let mut s = spec();
        s.ports.push(s.ports[0].clone());
        assert!(reason(&[s]).contains("duplicate port"));
        let mut s = spec();
        s.cluster_ip = Ipv4Addr::new(127, 0, 0, 1);
        assert!(reason(&[s]).contains("cluster ip"));
        let mut s = spec();
        s.name = "Web_1".into();
        assert!(reason(&[s]).contains("DNS label"));
        let mut s = spec();
        let first = s.ports[0].endpoints[0];
        s.ports[0].endpoints.push(first);
        assert!(reason(&[s]).contains("listed twice"));
        let mut s = spec();
        s.ports[0].endpoints = vec!["0.0.0.0:80".parse().unwrap()];
        assert!(reason(&[s]).contains("endpoint"));
        let mut s = spec();
        s.affinity = Some(Duration::from_millis(1500));
        assert!(reason(&[s]).contains("whole seconds"));
        let mut s = spec();
        s.ports.clear();
        assert!(reason(&[s]).contains("no ports"));
    }

    #[test]
    fn collisions_between_services_are_rejected() {
        let a = spec();
        let mut b = spec();
        b.name = "web2".into();
        b.ports[0].node_port = None;
        assert!(reason(&[a.clone(), b.clone()]).contains("used by another service"));
        b.cluster_ip = Ipv4Addr::new(10, 96, 0, 11);
        b.ports[0].node_port = Some(30080);
        assert!(reason(&[a.clone(), b]).contains("node port"));
        assert!(reason(&[a.clone(), a]).contains("listed twice"));
    }
}
