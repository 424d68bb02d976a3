//! herd-net: node networking over netlink.
//!
//! - [`netns`]: named network namespaces (bind mounts like `ip netns`).
//! - [`bridge`]: the node bridge, forwarding sysctls, optional masquerade.
//! - [`ipam`]: durable host-local address allocation.
//! - [`pod`]: one veth pair per pod interface, configured inside the pod
//!   netns.
//! - [`NodeNetwork`]: the agent's in-process path tying them together.
//! - [`routes`]: host-gw routes to other nodes' pod CIDRs; [`vxlan`]: the
//!   overlay for nodes on other subnets; [`service`]: Service virtual IPs
//!   on nftables.
//!
//! Everything that touches the kernel takes the namespace to work in as a
//! parameter, so several simulated nodes can live on one machine.
//!
//! # Failpoint (test-only)
//! With `HERD_NET_FAILPOINT=after-allocate` in the environment, the process
//! aborts (`std::process::abort`) right after an IPAM allocation became
//! durable and before the address is returned. It exists only for crash
//! tests (of `NodeNetwork::add_pod` and of the herd-cni ADD, which both go
//! through [`Ipam::allocate`]); never set it in production.

pub mod bridge;
mod error;
pub mod ipam;
mod links;
pub mod netns;
pub mod pod;
pub mod routes;
pub mod service;
pub mod vxlan;

use std::path::Path;

pub use bridge::{BridgeConfig, BridgeInfo, apply_node_settings, ensure_bridge, remove_masquerade};
pub use error::NetError;
pub use ipam::{Allocation, Ipam};
pub use netns::{NetNs, NetlinkConn, connect_in, handle_in};
pub use pod::{PodAttach, PodNetwork, attach, check, detach, host_veth_name, pod_mac, quiesce};
pub use routes::{HERD_ROUTE_PROTOCOL, NodeRoute, RouteOwner, RouteSyncReport, sync_node_routes};
pub use service::{Protocol, ProxyConfig, ServicePort, ServiceProxy, ServiceSpec};
pub use vxlan::{
    HERD_VXLAN_ROUTE_PROTOCOL, VxlanConfig, VxlanPeer, VxlanReport, directly_connected,
    remove_vxlan, sync_vxlan, vtep_mac,
};

/// The failpoint environment variable (see crate docs).
pub const FAILPOINT_ENV: &str = "HERD_NET_FAILPOINT";

/// Abort the process if the `after-allocate` failpoint is set (test-only).
pub fn failpoint_after_allocate() {
    if std::env::var_os(FAILPOINT_ENV).is_some_and(|v| v == "after-allocate") {
        std::process::abort();
    }
}

/// A node's pod network: the bridge in the node netns plus the IPAM state.
#[derive(Debug)]
pub struct NodeNetwork {
    host: Option<NetNs>,
    conn: NetlinkConn,
    cfg: BridgeConfig,
    bridge: BridgeInfo,
    ipam: Ipam,
}

impl NodeNetwork {
    /// Ensure the bridge in `host` (None = the caller's netns) and open the
    /// IPAM state under `state_dir/ipam`.
    pub async fn new(
        host: Option<NetNs>,
        cfg: BridgeConfig,
        state_dir: &Path,
    ) -> Result<Self, NetError> {
        cfg.validate()?;
        // Closed when this value drops, so the node netns is not pinned.
        let conn = connect_in(host.as_ref()).await?;
        let bridge = ensure_bridge(conn.handle(), host.as_ref(), &cfg).await?;
        let ipam = Ipam::open(&state_dir.join("ipam"), cfg.subnet, cfg.gateway())?;
        Ok(NodeNetwork {
            host,
            conn,
            cfg,
            bridge,
            ipam,
        })
    }

    pub fn bridge(&self) -> &BridgeInfo {
        &self.bridge
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    pub fn handle(&self) -> &rtnetlink::Handle {
        self.conn.handle()
    }

    pub fn host(&self) -> Option<&NetNs> {
        self.host.as_ref()
    }

    fn attach_args<'a>(
        &self,
        id: &'a str,
        netns: &'a NetNs,
        ifname: &'a str,
        ip: std::net::Ipv4Addr,
    ) -> Result<PodAttach<'a>, NetError> {
        let address = ipnet::Ipv4Net::new(ip, self.cfg.subnet.prefix_len())
            .map_err(|e| NetError::InvalidConfig(format!("address {ip}: {e}")))?;
        Ok(PodAttach {
            id,
            netns,
            ifname,
            address,
            gateway: self.bridge.gateway,
            mtu: self.cfg.mtu,
            hairpin: self.cfg.hairpin,
            bridge_index: self.bridge.index,
        })
    }

    /// Allocate an address and wire the pod. Idempotent per (id, ifname);
    /// on a wiring failure the address is released.
    pub async fn add_pod(
        &self,
        id: &str,
        netns: &NetNs,
        ifname: &str,
    ) -> Result<PodNetwork, NetError> {
        let ip = self.blocking_ipam(id, ifname, Ipam::allocate).await?;
        let attached = match self.attach_args(id, netns, ifname, ip) {
            Ok(a) => attach(self.handle(), &a).await,
            Err(e) => Err(e),
        };
        if attached.is_err() {
            let _ = self.blocking_ipam(id, ifname, Ipam::release).await;
        }
        attached
    }

    /// Run an IPAM call (flock + fsync: milliseconds) off the async
    /// threads.
    async fn blocking_ipam<T: Send + 'static>(
        &self,
        id: &str,
        ifname: &str,
        op: fn(&Ipam, &str, &str) -> Result<T, NetError>,
    ) -> Result<T, NetError> {
        let (ipam, id, ifname) = (self.ipam.clone(), id.to_string(), ifname.to_string());
        tokio::task::spawn_blocking(move || op(&ipam, &id, &ifname))
            .await
            .map_err(|e| NetError::Thread {
                path: self.ipam.dir().to_path_buf(),
                reason: format!("ipam task: {e}"),
            })?
    }

    /// Verify a pod's wiring (CNI CHECK semantics).
    pub async fn check_pod(&self, id: &str, netns: &NetNs, ifname: &str) -> Result<(), NetError> {
        let ip = self
            .ipam
            .lookup(id, ifname)?
            .ok_or_else(|| NetError::CheckFailed {
                id: id.to_string(),
                ifname: ifname.to_string(),
                what: "no address allocated".into(),
            })?;
        check(self.handle(), &self.attach_args(id, netns, ifname, ip)?).await
    }

    /// Unwire and release. `netns = None` when the caller deletes the
    /// netns (fast path). Idempotent.
    pub async fn del_pod(
        &self,
        id: &str,
        ifname: &str,
        netns: Option<&NetNs>,
    ) -> Result<(), NetError> {
        detach(self.handle(), id, ifname, netns).await?;
        self.blocking_ipam(id, ifname, Ipam::release).await?;
        Ok(())
    }

    /// Release allocations whose owner is not live (start-up reconcile).
    pub fn reconcile(
        &self,
        live: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Vec<Allocation>, NetError> {
        self.ipam.retain(live)
    }
}
