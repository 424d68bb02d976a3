//! Service virtual IPs and node ports: allocation on create, checks on
//! update, release on delete (by the Service leaving the store).
//!
//! Guarantees:
//! - A clusterIP comes from the service CIDR (default `10.96.0.0/16`); the
//!   network address, the broadcast address and the first host (`.1`, kept
//!   for the `kubernetes` Service) are never handed out automatically. A
//!   requested `spec.clusterIP` is honoured if it is in the CIDR and free,
//!   else the create fails with 422 naming `spec.clusterIP`; `None` makes a
//!   headless Service (no IP).
//! - NodePort and LoadBalancer Services get a nodePort per port from
//!   30000-32767 (requested ones honoured if free and in range, else 422
//!   naming `spec.ports[i].nodePort`).
//! - "Free" means: held by no Service in the store and reserved by no other
//!   Service in the allocation ledger ([`super::service_ledger`]). Every
//!   allocation is reserved there with a compare-and-swap before the
//!   Service is written, so API servers on different nodes never hand out
//!   the same IP or port; within one process a lock also serialises the
//!   whole allocation and write.
//! - Nothing is kept outside the store: deleting a Service frees its IP and
//!   ports.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use serde_json::Value;

use super::service_ledger::{Ledger, ip_key, port_key};
use super::{ApiError, FieldError, Resource};
use crate::store::{Datastore, StoreError};

/// The default service CIDR (kubeadm's and k3s' default).
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";
/// The default nodePort range, inclusive.
pub const DEFAULT_NODE_PORTS: (u16, u16) = (30000, 32767);

/// Serialises allocation + store write within this process.
static ALLOCATION: Mutex<()> = Mutex::new(());

/// Why an IP or port could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("service cidr {cidr}: {reason}")]
    BadCidr { cidr: String, reason: String },
    #[error(
        "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {cidr}"
    )]
    IpOutOfRange { ip: String, cidr: Ipv4Net },
    #[error("failed to allocate IP {ip}: provided IP is already allocated")]
    IpInUse { ip: String },
    #[error("failed to allocate IP: range {cidr} is full")]
    IpsExhausted { cidr: Ipv4Net },
    #[error("provided port is not in the valid range. The range of valid ports is {first}-{last}")]
    PortOutOfRange { port: i32, first: u16, last: u16 },
    #[error("provided port is already allocated")]
    PortInUse { port: i32 },
    #[error("range {first}-{last} is full")]
    PortsExhausted { first: u16, last: u16 },
}

/// Where Service IPs and node ports come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetwork {
    pub cidr: Ipv4Net,
    pub node_ports: (u16, u16),
}

impl Default for ServiceNetwork {
    fn default() -> ServiceNetwork {
        ServiceNetwork {
            // Checked at compile time (a const).
            cidr: const { Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 16) },
            node_ports: DEFAULT_NODE_PORTS,
        }
    }
}

impl ServiceNetwork {
    /// A network from a CIDR like `10.96.0.0/16` (IPv4, at most /29).
    pub fn parse(cidr: &str) -> Result<ServiceNetwork, AllocError> {
        let bad = |reason: &str| AllocError::BadCidr {
            cidr: cidr.to_string(),
            reason: reason.to_string(),
        };
        let net: Ipv4Net = cidr.parse().map_err(|_| bad("not an IPv4 CIDR"))?;
        if net.prefix_len() > 29 {
            return Err(bad("too small: at most /29"));
        }
        Ok(ServiceNetwork {
            cidr: net.trunc(),
            node_ports: DEFAULT_NODE_PORTS,
        })
    }

    /// The address kept for the `kubernetes` Service (`.1`).
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()).saturating_add(1))
    }

    /// Allocates what a new Service needs, then runs `commit` (the store
    /// write) under the allocation lock.
    pub fn create<T>(
        &self,
        store: &dyn Datastore,
        svc: &mut Service,
        commit: impl FnOnce(&Service) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let _guard = ALLOCATION.lock().unwrap_or_else(|e| e.into_inner());
        *svc = reserve(store, &owner(svc), None, |used| {
            let mut picked = svc.clone();
            self.assign(&mut picked, used, None)?;
            Ok(picked)
        })?;
        commit(svc)
    }

    /// Keeps what an updated Service had (a client may leave clusterIP and
    /// nodePorts out), allocates new nodePorts, checks requested ones, then
    /// runs `commit` under the allocation lock.
    pub fn update<T>(
        &self,
        store: &dyn Datastore,
        old: &Service,
        svc: &mut Service,
        commit: impl FnOnce(&Service) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let _guard = ALLOCATION.lock().unwrap_or_else(|e| e.into_inner());
        keep_allocations(old, svc);
        let me = old.metadata.uid.as_deref();
        *svc = reserve(store, &owner(svc), me, |used| {
            let mut picked = svc.clone();
            self.assign(&mut picked, used, Some(old))?;
            Ok(picked)
        })?;
        commit(svc)
    }

    fn assign(
        &self,
        svc: &mut Service,
        used: &Used,
        old: Option<&Service>,
    ) -> Result<(), ApiError> {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let invalid = |field: String, value: String, e: AllocError| {
            ApiError::invalid(
                Resource::Services,
                &name,
                vec![FieldError::invalid(field, value, e.to_string())],
            )
        };
        let Some(spec) = svc.spec.as_mut() else {
            return Ok(());
        };
        let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
        if type_ != "ExternalName" {
            let requested = spec.cluster_ip.clone().filter(|ip| !ip.is_empty());
            let unchanged = old
                .and_then(|o| o.spec.as_ref())
                .and_then(|s| s.cluster_ip.as_ref())
                .is_some_and(|ip| Some(ip) == requested.as_ref());
            match requested.as_deref() {
                Some("None") => {}
                Some(_) if unchanged => {}
                Some(ip) => {
                    self.check_ip(ip, used)
                        .map_err(|e| invalid("spec.clusterIP".into(), ip.to_string(), e))?;
                }
                None => {
                    let ip = self
                        .pick_ip(used)
                        .map_err(|e| invalid("spec.clusterIP".into(), String::new(), e))?;
                    spec.cluster_ip = Some(ip.to_string());
                }
            }
            if let Some(ip) = spec.cluster_ip.clone() {
                spec.cluster_ips = Some(vec![ip]);
            }
        }
        if type_ != "NodePort" && type_ != "LoadBalancer" {
            return Ok(());
        }
        let old_ports: BTreeSet<i32> = old
            .and_then(|o| o.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| p.node_port)
            .collect();
        let mut taken = used.node_ports.clone();
        for (i, p) in spec.ports.iter_mut().flatten().enumerate() {
            match p.node_port.filter(|n| *n != 0) {
                Some(n) if old_ports.contains(&n) => {
                    taken.insert(n);
                }
                Some(n) => {
                    self.check_port(n, &taken).map_err(|e| {
                        invalid(format!("spec.ports[{i}].nodePort"), n.to_string(), e)
                    })?;
                    taken.insert(n);
                }
                None => {
                    let n = self.pick_port(&taken).map_err(|e| {
                        invalid(format!("spec.ports[{i}].nodePort"), String::new(), e)
                    })?;
                    taken.insert(n);
                    p.node_port = Some(n);
                }
            }
        }
        Ok(())
    }

    fn check_ip(&self, ip: &str, used: &Used) -> Result<(), AllocError> {
        let addr: Ipv4Addr = ip.parse().map_err(|_| AllocError::IpOutOfRange {
            ip: ip.to_string(),
            cidr: self.cidr,
        })?;
        if !self.cidr.contains(&addr)
            || addr == self.cidr.network()
            || addr == self.cidr.broadcast()
        {
            return Err(AllocError::IpOutOfRange {
                ip: ip.to_string(),
                cidr: self.cidr,
            });
        }
        if used.ips.contains(&addr) {
            return Err(AllocError::IpInUse { ip: ip.to_string() });
        }
        Ok(())
    }

    fn pick_ip(&self, used: &Used) -> Result<Ipv4Addr, AllocError> {
        // Hosts after the reserved `.1`, up to the last before broadcast.
        let first = u32::from(self.cidr.network()).saturating_add(2);
        let last = u32::from(self.cidr.broadcast()).saturating_sub(1);
        if last < first {
            return Err(AllocError::IpsExhausted { cidr: self.cidr });
        }
        let size = last - first + 1;
        let start = rand::random_range(0..size);
        (0..size)
            .map(|i| Ipv4Addr::from(first + (start + i) % size))
            .find(|a| !used.ips.contains(a))
            .ok_or(AllocError::IpsExhausted { cidr: self.cidr })
    }

    fn check_port(&self, port: i32, taken: &BTreeSet<i32>) -> Result<(), AllocError> {
        let (first, last) = self.node_ports;
        if port < i32::from(first) || port > i32::from(last) {
            return Err(AllocError::PortOutOfRange { port, first, last });
        }
        if taken.contains(&port) {
            return Err(AllocError::PortInUse { port });
        }
        Ok(())
    }

    fn pick_port(&self, taken: &BTreeSet<i32>) -> Result<i32, AllocError> {
        let (first, last) = self.node_ports;
        let (first, last) = (i32::from(first), i32::from(last));
        let size = last - first + 1;
        let exhausted = AllocError::PortsExhausted {
            first: self.node_ports.0,
            last: self.node_ports.1,
        };
        if size <= 0 {
            return Err(exhausted);
        }
        let start = rand::random_range(0..size);
        (0..size)
            .map(|i| first + (start + i) % size)
            .find(|p| !taken.contains(p))
            .ok_or(exhausted)
    }
}

/// Copies the old Service's clusterIP and nodePorts into an update that
/// left them out (the API server does the same).
fn keep_allocations(old: &Service, new: &mut Service) {
    let (Some(os), Some(ns)) = (old.spec.as_ref(), new.spec.as_mut()) else {
        return;
    };
    if ns.cluster_ip.as_deref().is_none_or(str::is_empty) {
        ns.cluster_ip = os.cluster_ip.clone();
        if ns.cluster_ips.as_ref().is_none_or(Vec::is_empty) {
            ns.cluster_ips = os.cluster_ips.clone();
        }
    }
    for p in ns.ports.iter_mut().flatten() {
        if p.node_port.is_none_or(|n| n == 0)
            && let Some(o) = os.ports.iter().flatten().find(|o| {
                o.port == p.port
                    && o.protocol.as_deref().unwrap_or("TCP")
                        == p.protocol.as_deref().unwrap_or("TCP")
            })
        {
            p.node_port = o.node_port;
        }
    }
}

/// IPs and ports held by the Services in the store.
/// `namespace/name` of a Service (the ledger's owner).
fn owner(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

/// The ledger keys of what `svc` holds.
fn keys_of(svc: &Service) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if let Some(spec) = &svc.spec {
        for ip in spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
        {
            if ip.parse::<Ipv4Addr>().is_ok() {
                keys.insert(ip_key(ip));
            }
        }
        for p in spec.ports.iter().flatten() {
            if let Some(n) = p.node_port {
                keys.insert(port_key(n));
            }
        }
    }
    keys
}

/// Picks with `pick` against the store's Services and the other
/// reservations, then reserves the result in the ledger; a lost
/// compare-and-swap (another API server reserved first) picks again.
fn reserve(
    store: &dyn Datastore,
    owner: &str,
    skip_uid: Option<&str>,
    mut pick: impl FnMut(&Used) -> Result<Service, ApiError>,
) -> Result<Service, ApiError> {
    for _ in 0..16 {
        let ledger = Ledger::load(store)?;
        let mut used = Used::scan(store, skip_uid)?;
        let now = jiff::Timestamp::now().as_second();
        for k in ledger.reserved_by_others(owner, &used.held, now) {
            if let Some(ip) = k.strip_prefix("ip/").and_then(|a| a.parse().ok()) {
                used.ips.insert(ip);
            } else if let Some(n) = k.strip_prefix("port/").and_then(|n| n.parse().ok()) {
                used.node_ports.insert(n);
            }
        }
        let picked = pick(&used)?;
        match ledger.reserve(store, owner, &keys_of(&picked), &used.held, now) {
            Ok(()) => return Ok(picked),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict {
        resource: Resource::ConfigMaps,
        name: super::service_ledger::LEDGER_NAME.into(),
        current: 0,
    }
    .into())
}

#[derive(Debug, Default)]
struct Used {
    ips: BTreeSet<Ipv4Addr>,
    node_ports: BTreeSet<i32>,
    /// Ledger keys of everything the scanned Services hold.
    held: BTreeSet<String>,
}

impl Used {
    /// Every Service's allocations, except the one with uid `skip`.
    fn scan(store: &dyn Datastore, skip: Option<&str>) -> Result<Used, StoreError> {
        let (items, _) = store.list(Resource::Services, None)?;
        let mut used = Used::default();
        for s in &items {
            if skip.is_some() && s.pointer("/metadata/uid").and_then(Value::as_str) == skip {
                continue;
            }
            let spec = &s["spec"];
            let ips = spec["clusterIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(&spec["clusterIP"]));
            for ip in ips {
                if let Some(a) = ip.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) {
                    used.ips.insert(a);
                    used.held.insert(ip_key(&a.to_string()));
                }
            }
            for p in spec["ports"].as_array().into_iter().flatten() {
                if let Some(n) = p["nodePort"].as_i64().and_then(|n| i32::try_from(n).ok()) {
                    used.node_ports.insert(n);
                    used.held.insert(port_key(n));
                }
            }
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_and_checks() {
        let net = ServiceNetwork::parse("10.0.0.0/29").unwrap();
        assert_eq!(net.kubernetes_ip(), Ipv4Addr::new(10, 0, 0, 1));
        let mut used = Used::default();
        for _ in 0..5 {
            let ip = net.pick_ip(&used).unwrap();
            assert!(ip != Ipv4Addr::new(10, 0, 0, 1) && ip != Ipv4Addr::new(10, 0, 0, 0));
            assert!(used.ips.insert(ip), "{ip} handed out twice");
        }
        assert!(matches!(
            net.pick_ip(&used),
            Err(AllocError::IpsExhausted { .. })
        ));
        assert!(matches!(
            net.check_ip("10.0.0.9", &used),
            Err(AllocError::IpOutOfRange { .. })
        ));
        assert!(matches!(
            net.check_ip("10.0.0.2", &used),
            Err(AllocError::IpInUse { .. })
        ));
        assert!(ServiceNetwork::parse("10.0.0.0/30").is_err());
        assert!(ServiceNetwork::parse("garbage").is_err());
        let taken = BTreeSet::from([30000]);
        assert!(net.check_port(80, &taken).is_err());
        assert!(net.check_port(30000, &taken).is_err());
        assert!(net.check_port(30001, &taken).is_ok());
        let p = net.pick_port(&taken).unwrap();
        assert!((30001..=32767).contains(&p));
    }
}
