//! Pod networking for the pod workers: herd-net's in-agent path.
//!
//! The node bridge lives in the agent's own network namespace; each pod
//! gets a veth into its sandbox netns and an address from the node's pod
//! CIDR (durable IPAM under the run dir). Everything is idempotent per pod
//! uid, so a worker can call [`PodNetworking::setup`] on every sync and
//! after an agent restart gets the address it had.

use std::net::IpAddr;
use std::path::Path;

use herd_net::{BridgeConfig, NetError, NetNs, NodeNetwork};

/// The interface name inside pods.
pub const POD_IFNAME: &str = "eth0";

/// The node's pod network.
#[derive(Debug)]
pub struct PodNetworking {
    net: NodeNetwork,
}

impl PodNetworking {
    /// Ensures the bridge in the caller's netns; IPAM state under
    /// `state_dir`.
    pub async fn new(cfg: BridgeConfig, state_dir: &Path) -> Result<PodNetworking, NetError> {
        Ok(PodNetworking {
            net: NodeNetwork::new(None, cfg, state_dir).await?,
        })
    }

    /// The node's address on the pod network (the bridge gateway).
    pub fn gateway(&self) -> IpAddr {
        IpAddr::V4(self.net.bridge().gateway)
    }

    /// Wires the pod's netns and returns its address. Idempotent.
    pub async fn setup(&self, uid: &str, netns: &Path) -> Result<IpAddr, NetError> {
        if let Some(ip) = self.net.ipam().lookup(uid, POD_IFNAME)? {
            let ns = NetNs::open(netns)?;
            if self.net.check_pod(uid, &ns, POD_IFNAME).await.is_ok() {
                return Ok(IpAddr::V4(ip));
            }
        }
        let ns = NetNs::open(netns)?;
        let wired = self.net.add_pod(uid, &ns, POD_IFNAME).await?;
        Ok(IpAddr::V4(wired.address.addr()))
    }

    /// Unwires the pod and releases its address. With `netns = None` the
    /// caller deletes the namespace (the kernel then removes the veth).
    /// Idempotent.
    pub async fn teardown(&self, uid: &str, netns: Option<&Path>) -> Result<(), NetError> {
        let ns = match netns {
            Some(p) if p.exists() => NetNs::open(p).ok(),
            _ => None,
        };
        self.net.del_pod(uid, POD_IFNAME, ns.as_ref()).await
    }

    /// Releases addresses of pods that are gone (start-up reconcile).
    pub fn release_unknown(&self, live: &dyn Fn(&str) -> bool) -> Result<usize, NetError> {
        Ok(self.net.reconcile(&|id, _| live(id))?.len())
    }
}
