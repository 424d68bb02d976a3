//! Routes to the other nodes' pod CIDRs, from the Node objects.
//!
//! Every node keeps, in its own network namespace, one route per other
//! node to `<its spec.podCIDR>`, resynced on every Node change and every
//! [`RESYNC`]:
//! - host-gw (`via <its InternalIP>`, [`herd_net::sync_node_routes`]) when
//!   that address is on a directly connected subnet;
//! - otherwise through the VXLAN overlay ([`herd_net::sync_vxlan`]: device
//!   `herd.vxlan`, VNI 1, UDP 8472, each node's VTEP MAC derived from its
//!   name with [`herd_net::vtep_mac`], so no extra state is exchanged).
//!
//! [`Overlay`] forces one or the other. Each kind of route carries its own
//! protocol number, so neither sync touches the other's routes or any
//! foreign route.
//!
//! The service CIDR gets a route through the pod bridge as well
//! ([`ensure_service_route`]): the node's own processes reach ClusterIPs
//! even on a host without a default route (the nftables rules rewrite the
//! destination; the source is the bridge address, which every node routes
//! back through host-gw).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use herd_net::{NodeRoute, RouteOwner};
use ipnet::Ipv4Net;
use serde_json::Value;
use tokio::sync::watch;

use crate::api::Resource;
use crate::store::Datastore;

const RESYNC: Duration = Duration::from_secs(10);

/// How other nodes' pod CIDRs are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Overlay {
    /// host-gw where the node is on a connected subnet, VXLAN elsewhere.
    Auto,
    /// host-gw only (unreachable nodes are skipped with a log line).
    HostGw,
    /// VXLAN for every node.
    Vxlan,
}

/// What the routes loop needs to know about this node.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub me: String,
    pub overlay: Overlay,
    /// This node's underlay address and pod CIDR (the VXLAN device's).
    pub local: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
}

/// The routes this node wants: every other Node with a pod CIDR and an
/// IPv4 InternalIP.
pub fn desired(nodes: &[Value], me: &str) -> Vec<NodeRoute> {
    desired_named(nodes, me)
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

/// [`desired`] with each route's node name.
fn desired_named(nodes: &[Value], me: &str) -> Vec<(NodeRoute, String)> {
    let mut out: Vec<(NodeRoute, String)> = nodes
        .iter()
        .filter(|n| n.pointer("/metadata/name").and_then(Value::as_str) != Some(me))
        .filter_map(|n| {
            let cidr: Ipv4Net = n.pointer("/spec/podCIDR")?.as_str()?.parse().ok()?;
            let via: Ipv4Addr = n
                .pointer("/status/addresses")?
                .as_array()?
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))?
                .get("address")?
                .as_str()?
                .parse()
                .ok()?;
            let name = n.pointer("/metadata/name")?.as_str()?.to_string();
            Some((
                NodeRoute {
                    pod_cidr: cidr.trunc(),
                    via,
                    dev: None,
                },
                name,
            ))
        })
        .collect();
    out.sort_by_key(|(r, _)| r.pod_cidr);
    out.dedup_by_key(|(r, _)| r.pod_cidr);
    out
}

/// Splits `want` between host-gw and the overlay and applies both.
async fn apply(
    handle: &rtnetlink::Handle,
    cfg: &RouteConfig,
    want: &[(NodeRoute, String)],
    vxlan_up: &mut bool,
) -> Result<(), herd_net::NetError> {
    let direct = match cfg.overlay {
        Overlay::Vxlan => vec![false; want.len()],
        Overlay::HostGw => vec![true; want.len()],
        Overlay::Auto => {
            let ips: Vec<Ipv4Addr> = want.iter().map(|(r, _)| r.via).collect();
            herd_net::directly_connected(handle, &ips).await?
        }
    };
    let (mut gw, mut peers) = (Vec::new(), Vec::new());
    for ((route, name), direct) in want.iter().zip(direct) {
        if direct {
            gw.push(route.clone());
        } else {
            peers.push(herd_net::VxlanPeer {
                pod_cidr: route.pod_cidr,
                node_ip: route.via,
                mac: herd_net::vtep_mac(name),
            });
        }
    }
    // The overlay first: a node moving from host-gw to VXLAN keeps a route.
    if !peers.is_empty() || *vxlan_up {
        let vcfg = herd_net::VxlanConfig::new(cfg.local, herd_net::vtep_mac(&cfg.me), cfg.pod_cidr);
        let report = herd_net::sync_vxlan(handle, &vcfg, &peers).await?;
        *vxlan_up = true;
        if report.changed() {
            tracing::info!(
                peers = peers.len(),
                mtu = report.mtu,
                "vxlan overlay synced"
            );
        }
    }
    sync(handle, &gw).await
}

/// Keeps the routes equal to the Node objects until `stop`.
pub async fn run(store: Arc<dyn Datastore>, cfg: RouteConfig, mut stop: watch::Receiver<bool>) {
    let conn = match herd_net::connect_in(None).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "node routes disabled: no netlink");
            return;
        }
    };
    let mut last: Option<Vec<(NodeRoute, String)>> = None;
    let mut vxlan_up = false;
    loop {
        let mut watch = store.watch(Resource::Nodes, None, None).ok();
        match store.list(Resource::Nodes, None) {
            Ok((nodes, _)) => {
                let want = desired_named(&nodes, &cfg.me);
                if last.as_ref() != Some(&want) {
                    match apply(conn.handle(), &cfg, &want, &mut vxlan_up).await {
                        Ok(()) => last = Some(want),
                        Err(e) => tracing::warn!(error = %e, "node routes"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "node routes: listing nodes"),
        }
        let next = async {
            match watch.as_mut() {
                Some(w) => {
                    let _ = w.next().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = next => {}
            _ = tokio::time::sleep(RESYNC) => last = None,
        }
    }
}

/// `<service_cidr> dev <bridge> scope link src <bridge address>`
/// (static protocol, replaced if present; idempotent).
pub async fn ensure_service_route(
    handle: &rtnetlink::Handle,
    service_cidr: Ipv4Net,
    bridge: &str,
    bridge_ip: Ipv4Addr,
) -> Result<(), String> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
    let link = handle
        .link()
        .get()
        .match_name(bridge.to_string())
        .execute()
        .try_next()
        .await
        .map_err(|e| format!("bridge {bridge}: {e}"))?
        .ok_or_else(|| format!("bridge {bridge} not found"))?;
    let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(service_cidr.network(), service_cidr.prefix_len())
        .output_interface(link.header.index)
        .scope(RouteScope::Link)
        .pref_source(bridge_ip)
        .protocol(RouteProtocol::Static)
        .build();
    handle
        .route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(|e| format!("route {service_cidr} dev {bridge}: {e}"))
}

async fn sync(handle: &rtnetlink::Handle, want: &[NodeRoute]) -> Result<(), herd_net::NetError> {
    match herd_net::sync_node_routes(handle, want, RouteOwner::default()).await {
        Ok(r) => {
            if !(r.added.is_empty() && r.replaced.is_empty() && r.removed.is_empty()) {
                tracing::info!(added = ?r.added, replaced = ?r.replaced, removed = ?r.removed, "node routes");
            }
            Ok(())
        }
        Err(herd_net::NetError::GatewayNotDirect { .. }) if want.len() > 1 => {
            // Apply the routes that can be applied, one by one is not
            // possible with a whole-set sync: keep only direct gateways.
            let mut ok = Vec::new();
            for r in want {
                let one = [r.clone()];
                let mut probe = ok.clone();
                probe.extend_from_slice(&one);
                match herd_net::sync_node_routes(handle, &probe, RouteOwner::default()).await {
                    Ok(_) => ok = probe,
                    Err(e) => {
                        tracing::warn!(cidr = %r.pod_cidr, via = %r.via, error = %e, "node route skipped")
                    }
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_to_other_nodes_with_cidr_and_internal_ip() {
        let n = |name: &str, cidr: Option<&str>, ip: &str| {
            json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr},
                   "status": {"addresses": [{"type": "Hostname", "address": name},
                                            {"type": "InternalIP", "address": ip}]}})
        };
        let nodes = vec![
            n("a", Some("10.244.0.0/24"), "10.250.0.1"),
            n("b", Some("10.244.1.0/24"), "10.250.0.2"),
            n("c", None, "10.250.0.3"),
            n("d", Some("10.244.3.0/24"), "fd00::1"),
        ];
        let r = desired(&nodes, "a");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].pod_cidr.to_string(), "10.244.1.0/24");
        assert_eq!(r[0].via, "10.250.0.2".parse::<Ipv4Addr>().unwrap());
    }
}
