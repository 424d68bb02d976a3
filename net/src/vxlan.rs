//! VXLAN overlay for nodes that are not on one L2 segment: flannel's
//! `vxlan` backend, done over rtnetlink.
//!
//! Each node has one VXLAN device (default `herd.vxlan`, VNI 1, UDP port
//! 8472) bound to its underlay address and link, with learning off, a
//! stable VTEP MAC ([`vtep_mac`]) and the network address of its pod CIDR
//! as a /32. For every other node, [`sync_vxlan`] keeps three entries:
//!
//! ```text
//! route  <pod_cidr> via <pod_cidr network> dev herd.vxlan onlink proto 0x4f
//! neigh  <pod_cidr network> lladdr <vtep mac> dev herd.vxlan nud permanent
//! fdb    <vtep mac> dst <node ip> dev herd.vxlan self permanent
//! ```
//!
//! The next hop resolves to the peer's VTEP MAC without ARP and the MAC to
//! the peer's underlay address without flooding: there is no all-zero
//! (default) fdb entry, so frames to unknown MACs are dropped.
//!
//! Guarantees:
//! - Checked before any change: names, VNI (1..=2^24-1), port, addresses,
//!   MACs, MTU, the peer list (no overlapping CIDRs, no duplicate MACs), the
//!   underlay (some link of this netns holds `local`) and route conflicts.
//! - Ownership: routes are recognised by protocol
//!   [`HERD_VXLAN_ROUTE_PROTOCOL`] (`0x4f`) in the main table on our device.
//!   host-gw ([`crate::routes`]) uses `0x4e`, so each of the two syncs owns
//!   and prunes only its own routes and they run side by side. A CIDR
//!   belongs in only one of the two lists: a route of any other protocol for
//!   a wanted CIDR is a [`NetError::RouteConflict`], never overwritten (to
//!   move a node from host-gw to the overlay, drop it from the host-gw list
//!   first). Neighbour and fdb entries are pruned only on our device and
//!   only when permanent.
//! - Device: an existing VXLAN device with another VNI, port, local address,
//!   underlay link or learning setting is deleted and recreated (its entries
//!   go with it); a link of another kind with the name is a
//!   [`NetError::LinkConflict`] and is left alone. MAC, MTU, addresses and
//!   the up flag are corrected in place; the only IPv4 address kept on the
//!   device is `<pod_cidr network>/32`.
//! - Idempotent: a second call with the same input sends no write
//!   ([`VxlanReport::changed`] is false).
//! - MTU: default underlay MTU - 50 (outer IPv4 20 + UDP 8 + VXLAN 8 +
//!   inner Ethernet 14); a larger one is refused. Pod interfaces must not
//!   exceed [`VxlanReport::mtu`] (the caller sets the bridge/veth MTU).
//! - One device per (VNI, port) per netns (a kernel rule): another VXLAN
//!   device holding them (e.g. ours under an old name) is a
//!   [`NetError::LinkConflict`]; to rename, [`remove_vxlan`] the old name
//!   first.
//! - Not atomic: a failure midway leaves a partial state that the next call
//!   completes. Callers serialise calls for one device (level-triggered:
//!   the last call wins). IPv4 only.

mod device;
mod entries;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

pub use device::{directly_connected, remove_vxlan};

use crate::NetError;
use crate::links::validate_ifname;

/// rtnetlink protocol number marking overlay routes made by herd (host-gw
/// uses [`crate::HERD_ROUTE_PROTOCOL`], `0x4e`).
pub const HERD_VXLAN_ROUTE_PROTOCOL: u8 = 0x4f;
/// Default device name.
pub const DEFAULT_VXLAN_NAME: &str = "herd.vxlan";
/// Default VXLAN network identifier.
pub const DEFAULT_VNI: u32 = 1;
/// Default UDP port (the Linux and flannel default, not IANA's 4789).
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// Bytes of encapsulation over IPv4: outer IP, UDP, VXLAN, inner Ethernet.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The VXLAN device of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// Default [`DEFAULT_VXLAN_NAME`].
    pub name: String,
    /// Default [`DEFAULT_VNI`]; 1..=[`MAX_VNI`].
    pub vni: u32,
    /// Default [`DEFAULT_VXLAN_PORT`].
    pub port: u16,
    /// This node's underlay address; a link of the netns must hold it.
    pub local: Ipv4Addr,
    /// This node's VTEP MAC (stable: e.g. [`vtep_mac`] of the node name).
    pub mac: [u8; 6],
    /// This node's pod CIDR: the device gets `<network address>/32`.
    pub pod_cidr: Ipv4Net,
    /// Default: underlay link MTU - [`VXLAN_OVERHEAD`].
    pub mtu: Option<u32>,
}

impl VxlanConfig {
    /// A config with the default name, VNI, port and MTU.
    pub fn new(local: Ipv4Addr, mac: [u8; 6], pod_cidr: Ipv4Net) -> Self {
        VxlanConfig {
            name: DEFAULT_VXLAN_NAME.into(),
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            local,
            mac,
            pod_cidr,
            mtu: None,
        }
    }

    /// The device's own address: the network address of the pod CIDR.
    pub fn device_address(&self) -> Ipv4Addr {
        self.pod_cidr.network()
    }

    /// Check names and ranges (no I/O).
    pub fn validate(&self) -> Result<(), NetError> {
        validate_ifname("vxlan device name", &self.name)?;
        if !(1..=MAX_VNI).contains(&self.vni) {
            return Err(invalid(format!(
                "vxlan {}: vni {} out of range 1..={MAX_VNI}",
                self.name, self.vni
            )));
        }
        if self.port == 0 {
            return Err(invalid(format!("vxlan {}: udp port 0", self.name)));
        }
        check_unicast(&self.name, "local address", self.local)?;
        check_mac(&self.name, "vtep mac", self.mac)?;
        check_pod_cidr(&self.name, self.pod_cidr)?;
        if let Some(mtu) = self.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(invalid(format!(
                "vxlan {}: mtu {mtu} out of range 68..=65535",
                self.name
            )));
        }
        Ok(())
    }
}

/// Locally administered unicast MAC derived from the node name, so a node
/// keeps its VTEP MAC across restarts and peers need not re-learn it.
pub fn vtep_mac(node_name: &str) -> [u8; 6] {
    let d = Sha256::digest(format!("herd-vtep:{node_name}").as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// One remote node reached through the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanPeer {
    pub pod_cidr: Ipv4Net,
    /// The peer's underlay address (its [`VxlanConfig::local`]).
    pub node_ip: Ipv4Addr,
    /// The peer's VTEP MAC (its [`VxlanConfig::mac`]).
    pub mac: [u8; 6],
}

/// What happened to the device itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceChange {
    Unchanged,
    Created,
    /// Deleted and made again; the reason names the attribute that differed.
    Recreated(String),
    /// Fixed in place: which of "mac", "mtu", "up", "address".
    Updated(Vec<&'static str>),
}

/// Changes to one kind of entry, keyed by what identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes<K> {
    pub added: Vec<K>,
    pub replaced: Vec<K>,
    pub removed: Vec<K>,
    pub unchanged: usize,
}

impl<K> Default for Changes<K> {
    fn default() -> Self {
        Changes {
            added: Vec::new(),
            replaced: Vec::new(),
            removed: Vec::new(),
            unchanged: 0,
        }
    }
}

impl<K> Changes<K> {
    /// Nothing was added, replaced or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty()
    }
}

/// What one [`sync_vxlan`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanReport {
    pub index: u32,
    pub mtu: u32,
    pub device: DeviceChange,
    /// Keyed by peer pod CIDR.
    pub routes: Changes<Ipv4Net>,
    /// Keyed by peer pod CIDR network address.
    pub neighbours: Changes<Ipv4Addr>,
    /// Keyed by (VTEP MAC, underlay address).
    pub fdb: Changes<([u8; 6], Ipv4Addr)>,
}

impl VxlanReport {
    /// Whether anything was written to the kernel.
    pub fn changed(&self) -> bool {
        self.device != DeviceChange::Unchanged
            || !self.routes.is_empty()
            || !self.neighbours.is_empty()
            || !self.fdb.is_empty()
    }
}

/// Make the device of `cfg` exist as configured and its peer entries equal
/// `peers`, in the netns of `handle` (see module docs).
pub async fn sync_vxlan(
    handle: &rtnetlink::Handle,
    cfg: &VxlanConfig,
    peers: &[VxlanPeer],
) -> Result<VxlanReport, NetError> {
    cfg.validate()?;
    let peers = validate_peers(cfg, peers)?;
    let underlay = device::find_underlay(handle, cfg).await?;
    let max_mtu = underlay.mtu.saturating_sub(VXLAN_OVERHEAD);
    let mtu = cfg.mtu.unwrap_or(max_mtu);
    if mtu > max_mtu || mtu < 68 {
        return Err(invalid(format!(
            "vxlan {}: mtu {mtu} does not fit the underlay (link {} mtu {} - {VXLAN_OVERHEAD})",
            cfg.name, underlay.index, underlay.mtu
        )));
    }
    let existing_routes = entries::dump_routes(handle).await?;
    entries::check_route_conflicts(&existing_routes, &peers)?;

    let (index, device) = device::ensure_device(handle, cfg, underlay.index, mtu).await?;
    let fdb = entries::sync_fdb(handle, index, &peers).await?;
    let neighbours = entries::sync_neighbours(handle, index, &peers).await?;
    // A recreated device took its routes with it: dump again.
    let existing_routes = if matches!(device, DeviceChange::Unchanged | DeviceChange::Updated(_)) {
        existing_routes
    } else {
        entries::dump_routes(handle).await?
    };
    let routes = entries::sync_routes(handle, index, &peers, existing_routes).await?;
    Ok(VxlanReport {
        index,
        mtu,
        device,
        routes,
        neighbours,
        fdb,
    })
}

/// Peers after validation, keyed by pod CIDR.
pub(crate) type PeerMap = BTreeMap<Ipv4Net, VxlanPeer>;

fn validate_peers(cfg: &VxlanConfig, peers: &[VxlanPeer]) -> Result<PeerMap, NetError> {
    let name = &cfg.name;
    let mut out = PeerMap::new();
    let mut macs = BTreeMap::new();
    macs.insert(cfg.mac, "this node".to_string());
    for p in peers {
        let cidr = p.pod_cidr.trunc();
        check_pod_cidr(name, cidr)?;
        check_unicast(name, "peer node address", p.node_ip)?;
        check_mac(name, "peer vtep mac", p.mac)?;
        if p.node_ip == cfg.local {
            return Err(invalid(format!(
                "vxlan {name}: peer {cidr} has this node's address {}",
                p.node_ip
            )));
        }
        if let Some(other) = macs.insert(p.mac, cidr.to_string()) {
            return Err(invalid(format!(
                "vxlan {name}: peer {cidr} has the vtep mac {} of {other}",
                fmt_mac(p.mac)
            )));
        }
        let peer = VxlanPeer {
            pod_cidr: cidr,
            ..*p
        };
        if out.insert(cidr, peer).is_some() {
            return Err(invalid(format!(
                "vxlan {name}: pod cidr {cidr} is listed twice"
            )));
        }
    }
    // CIDRs nest or are disjoint, so sorted by network any overlap shows up
    // between neighbours.
    let mut all: Vec<Ipv4Net> = out.keys().copied().collect();
    all.push(cfg.pod_cidr.trunc());
    all.sort();
    for w in all.windows(2) {
        if let [a, b] = w
            && (a.contains(&b.network()) || b.contains(&a.network()))
        {
            return Err(invalid(format!(
                "vxlan {name}: pod cidrs {a} and {b} overlap"
            )));
        }
    }
    Ok(out)
}

fn invalid(msg: String) -> NetError {
    NetError::InvalidConfig(msg)
}

fn check_unicast(name: &str, what: &str, ip: Ipv4Addr) -> Result<(), NetError> {
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(invalid(format!(
            "vxlan {name}: {what} {ip} is not a unicast address"
        )));
    }
    Ok(())
}

fn check_mac(name: &str, what: &str, mac: [u8; 6]) -> Result<(), NetError> {
    if mac == [0; 6] || mac[0] & 1 == 1 {
        return Err(invalid(format!(
            "vxlan {name}: {what} {} is not a unicast MAC",
            fmt_mac(mac)
        )));
    }
    Ok(())
}

fn check_pod_cidr(name: &str, cidr: Ipv4Net) -> Result<(), NetError> {
    if !(8..=30).contains(&cidr.prefix_len()) {
        return Err(invalid(format!(
            "vxlan {name}: pod cidr {cidr}: prefix must be between /8 and /30"
        )));
    }
    Ok(())
}

pub(crate) fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn cfg() -> VxlanConfig {
        VxlanConfig::new(
            Ipv4Addr::new(192, 0, 2, 1),
            vtep_mac("a"),
            "10.244.1.0/24".parse().unwrap(),
        )
    }

    fn peer(cidr: &str, ip: [u8; 4], node: &str) -> VxlanPeer {
        VxlanPeer {
            pod_cidr: cidr.parse().unwrap(),
            node_ip: ip.into(),
            mac: vtep_mac(node),
        }
    }

    #[test]
    fn vtep_mac_is_stable_local_unicast_and_distinct() {
        let m = vtep_mac("node-a");
        assert_eq!(m, vtep_mac("node-a"));
        assert_ne!(m, vtep_mac("node-b"));
        assert_eq!(m[0] & 0x03, 0x02);
    }

    #[test]
    fn config_validation() {
        let c = cfg();
        c.validate().unwrap();
        assert_eq!(c.device_address(), Ipv4Addr::new(10, 244, 1, 0));
        for bad in [
            VxlanConfig { vni: 0, ..cfg() },
            VxlanConfig {
                vni: MAX_VNI + 1,
                ..cfg()
            },
            VxlanConfig { port: 0, ..cfg() },
            VxlanConfig {
                local: Ipv4Addr::UNSPECIFIED,
                ..cfg()
            },
            VxlanConfig {
                mac: [1, 0, 0, 0, 0, 1],
                ..cfg()
            },
            VxlanConfig {
                mtu: Some(10),
                ..cfg()
            },
            VxlanConfig {
                pod_cidr: "10.244.1.0/31".parse().unwrap(),
                ..cfg()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(NetError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
        for name in ["", "a/b", "has space", "sixteen-bytes-xx"] {
            let bad = VxlanConfig {
                name: name.into(),
                ..cfg()
            };
            assert!(matches!(bad.validate(), Err(NetError::InvalidName { .. })));
        }
        VxlanConfig {
            vni: MAX_VNI,
            ..cfg()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn peer_validation() {
        let c = cfg();
        let ok = [
            peer("10.244.2.0/24", [192, 0, 2, 2], "b"),
            peer("10.244.3.7/24", [192, 0, 2, 3], "c"),
        ];
        let m = validate_peers(&c, &ok).unwrap();
        assert!(m.contains_key(&"10.244.3.0/24".parse().unwrap()));
        let err = |p: &[VxlanPeer]| validate_peers(&c, p).unwrap_err().to_string();
        assert!(err(&[peer("10.244.0.0/16", [192, 0, 2, 2], "b")]).contains("overlap"));
        assert!(err(&[ok[0], peer("10.244.2.0/25", [192, 0, 2, 3], "c")]).contains("overlap"));
        assert!(err(&[ok[0], peer("10.244.2.0/24", [192, 0, 2, 3], "c")]).contains("twice"));
        assert!(err(&[ok[0], peer("10.244.4.0/24", [192, 0, 2, 3], "b")]).contains("mac"));
        assert!(err(&[peer("10.244.2.0/24", [192, 0, 2, 2], "a")]).contains("mac"));
        assert!(err(&[peer("10.244.2.0/24", [192, 0, 2, 1], "b")]).contains("this node"));
        assert!(err(&[peer("10.244.2.0/24", [224, 0, 0, 1], "b")]).contains("unicast"));
    }
}
