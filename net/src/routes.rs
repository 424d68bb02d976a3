//! Node-to-node routes for pod CIDRs ("host-gw"): one route per other node,
//! `<pod_cidr> via <node address>`, in a given netns.
//!
//! Guarantees:
//! - Ownership is the rtnetlink protocol number (default
//!   [`HERD_ROUTE_PROTOCOL`], `0x4e`) in one table: [`sync_node_routes`]
//!   only ever replaces or deletes routes carrying that protocol in that
//!   table. A foreign route for a wanted CIDR is a
//!   [`NetError::RouteConflict`], never overwritten.
//! - Idempotent: a second call with the same input sends no change.
//! - Every gateway must be on a directly connected subnet (an IPv4 address
//!   of this netns, on `dev` when given, has a prefix containing it).
//!   Otherwise [`NetError::GatewayNotDirect`] is returned before anything
//!   is changed: such nodes go through the VXLAN overlay
//!   ([`crate::vxlan`], whose routes carry another protocol number, so the
//!   two syncs never prune each other's routes).
//! - IPv4 only.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
};

use crate::NetError;
use crate::links::{link_by_name, validate_ifname};

/// rtnetlink protocol number marking routes made by herd ("N" for node).
pub const HERD_ROUTE_PROTOCOL: u8 = 0x4e;

/// One wanted route: another node's pod CIDR through that node's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRoute {
    pub pod_cidr: Ipv4Net,
    pub via: Ipv4Addr,
    /// Output link; default: the link holding the connected subnet of `via`.
    pub dev: Option<String>,
}

/// Which routes belong to us: one table and one protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteOwner {
    pub table: u32,
    pub protocol: u8,
}

impl Default for RouteOwner {
    fn default() -> Self {
        RouteOwner {
            table: u32::from(RouteHeader::RT_TABLE_MAIN),
            protocol: HERD_ROUTE_PROTOCOL,
        }
    }
}

/// What one sync changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteSyncReport {
    pub added: Vec<Ipv4Net>,
    pub replaced: Vec<Ipv4Net>,
    pub removed: Vec<Ipv4Net>,
    pub unchanged: usize,
}

/// A route as found in the kernel (only what the syncs compare); shared
/// with the VXLAN overlay's sync.
#[derive(Clone, Debug)]
pub(crate) struct Existing {
    pub(crate) dst: Ipv4Net,
    pub(crate) gateway: Option<Ipv4Addr>,
    pub(crate) oif: Option<u32>,
    pub(crate) onlink: bool,
    pub(crate) protocol: u8,
    pub(crate) msg: RouteMessage,
}

/// Make the routes of `owner` in the netns of `handle` equal `desired`
/// (see module docs).
pub async fn sync_node_routes(
    handle: &rtnetlink::Handle,
    desired: &[NodeRoute],
    owner: RouteOwner,
) -> Result<RouteSyncReport, NetError> {
    // Below 5 are the kernel's own (unspec, redirect, kernel, boot, static).
    if owner.protocol <= 4 {
        return Err(NetError::InvalidConfig(format!(
            "route protocol {} is reserved; pick one above 4",
            owner.protocol
        )));
    }
    let wanted = resolve(handle, desired).await?;
    let existing = dump(handle, owner.table).await?;
    let mut report = RouteSyncReport::default();
    for (dst, (via, oif)) in &wanted {
        let found: Vec<&Existing> = existing.iter().filter(|e| e.dst == *dst).collect();
        if let Some(foreign) = found.iter().find(|e| e.protocol != owner.protocol) {
            return Err(NetError::RouteConflict {
                cidr: *dst,
                reason: format!(
                    "table {} already has a route with protocol {} (not ours)",
                    owner.table, foreign.protocol
                ),
            });
        }
        match found.first() {
            Some(e) if e.gateway == Some(*via) && e.oif == Some(*oif) => report.unchanged += 1,
            Some(_) => {
                add(handle, *dst, *via, *oif, owner, true).await?;
                report.replaced.push(*dst);
            }
            None => {
                add(handle, *dst, *via, *oif, owner, false).await?;
                report.added.push(*dst);
            }
        }
    }
    for e in existing {
        if e.protocol == owner.protocol && !wanted.contains_key(&e.dst) {
            match handle.route().del(e.msg).execute().await {
                Ok(()) => {}
                Err(err) if crate::error::errno(&err) == Some(libc::ESRCH) => {}
                Err(err) => {
                    return Err(NetError::netlink(format!("delete route {}", e.dst), err));
                }
            }
            report.removed.push(e.dst);
        }
    }
    Ok(report)
}

/// Validate `desired` and find each gateway's output link. Nothing is
/// changed when this fails.
async fn resolve(
    handle: &rtnetlink::Handle,
    desired: &[NodeRoute],
) -> Result<BTreeMap<Ipv4Net, (Ipv4Addr, u32)>, NetError> {
    let connected = connected_subnets(handle).await?;
    let mut out = BTreeMap::new();
    let mut seen = HashSet::new();
    for r in desired {
        let dst = r.pod_cidr.trunc();
        if !seen.insert(dst) {
            return Err(NetError::InvalidConfig(format!(
                "pod cidr {dst} is listed twice"
            )));
        }
        if r.via.is_unspecified() || r.via.is_multicast() || r.via.is_broadcast() {
            return Err(NetError::InvalidConfig(format!(
                "route to {dst}: gateway {} is not a unicast address",
                r.via
            )));
        }
        let dev_index = match &r.dev {
            Some(name) => {
                validate_ifname("route device", name)?;
                let link =
                    link_by_name(handle, name)
                        .await?
                        .ok_or_else(|| NetError::LinkNotFound {
                            name: name.clone(),
                            where_: format!(" (device of the route to {dst})"),
                        })?;
                Some(link.index)
            }
            None => None,
        };
        let oif = connected
            .iter()
            .find(|(net, idx)| net.contains(&r.via) && dev_index.is_none_or(|d| d == *idx))
            .map(|(_, idx)| *idx)
            .ok_or_else(|| NetError::GatewayNotDirect {
                cidr: dst,
                via: r.via,
                dev: r.dev.clone(),
            })?;
        out.insert(dst, (r.via, oif));
    }
    Ok(out)
}

/// (subnet, link index) of every IPv4 address with a prefix shorter than
/// /32 in this netns.
async fn connected_subnets(handle: &rtnetlink::Handle) -> Result<Vec<(Ipv4Net, u32)>, NetError> {
    let mut stream = handle.address().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| NetError::netlink("get addresses", e))?
    {
        if msg.header.prefix_len >= 32 {
            continue;
        }
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        });
        if let Some(ip) = addr
            && let Ok(net) = Ipv4Net::new(ip, msg.header.prefix_len)
        {
            out.push((net.trunc(), msg.header.index));
        }
    }
    Ok(out)
}

/// All IPv4 unicast routes of `table` with a non-zero prefix.
pub(crate) async fn dump(
    handle: &rtnetlink::Handle,
    table: u32,
) -> Result<Vec<Existing>, NetError> {
    let req = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut stream = handle.route().get(req).execute();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| NetError::netlink("get routes", e))?
    {
        if msg.header.address_family != AddressFamily::Inet {
            continue;
        }
        let mut tbl = u32::from(msg.header.table);
        let mut dst = None;
        let mut gateway = None;
        let mut oif = None;
        for a in &msg.attributes {
            match a {
                RouteAttribute::Table(t) => tbl = *t,
                RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        let len = msg.header.destination_prefix_length;
        let (Some(dst), true) = (dst, tbl == table && len > 0) else {
            continue;
        };
        let Ok(dst) = Ipv4Net::new(dst, len) else {
            continue;
        };
        out.push(Existing {
            dst,
            gateway,
            oif,
            onlink: msg.header.flags.contains(RouteFlags::Onlink),
            protocol: u8::from(msg.header.protocol),
            msg,
        });
    }
    Ok(out)
}

async fn add(
    handle: &rtnetlink::Handle,
    dst: Ipv4Net,
    via: Ipv4Addr,
    oif: u32,
    owner: RouteOwner,
    replace: bool,
) -> Result<(), NetError> {
    let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .gateway(via)
        .output_interface(oif)
        .table_id(owner.table)
        .protocol(RouteProtocol::from(owner.protocol))
        .build();
    let req = handle.route().add(msg);
    let req = if replace { req.replace() } else { req };
    req.execute().await.map_err(|e| {
        NetError::netlink(
            format!(
                "{} route {dst} via {via} (table {})",
                if replace { "replace" } else { "add" },
                owner.table
            ),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_owner_is_main_table_and_herd_protocol() {
        let o = RouteOwner::default();
        assert_eq!(o.table, 254);
        assert_eq!(o.protocol, 0x4e);
        assert_eq!(
            u8::from(RouteProtocol::from(HERD_ROUTE_PROTOCOL)),
            HERD_ROUTE_PROTOCOL
        );
    }
}
