//! The per-peer entries of the VXLAN device: routes, neighbours, fdb.
//! Each sync adds or replaces what is missing or different and then prunes
//! what no peer wants, touching only entries on our device (routes: only
//! with [`HERD_VXLAN_ROUTE_PROTOCOL`]; neighbours and fdb: only permanent).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteHeader, RouteProtocol};

use super::{Changes, HERD_VXLAN_ROUTE_PROTOCOL, PeerMap, fmt_mac};
use crate::NetError;
use crate::error::errno;

/// A route of the main table (only what we compare).
pub(super) type Route = crate::routes::Existing;

const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// IPv4 unicast routes of the main table with a non-zero prefix.
pub(super) async fn dump_routes(handle: &rtnetlink::Handle) -> Result<Vec<Route>, NetError> {
    crate::routes::dump(handle, MAIN).await
}

/// A route of another owner for a wanted CIDR is a conflict.
pub(super) fn check_route_conflicts(existing: &[Route], peers: &PeerMap) -> Result<(), NetError> {
    for r in existing {
        if peers.contains_key(&r.dst) && r.protocol != HERD_VXLAN_ROUTE_PROTOCOL {
            return Err(NetError::RouteConflict {
                cidr: r.dst,
                reason: format!(
                    "the main table already has a route with protocol {} (not the overlay's {HERD_VXLAN_ROUTE_PROTOCOL})",
                    r.protocol
                ),
            });
        }
    }
    Ok(())
}

pub(super) async fn sync_routes(
    handle: &rtnetlink::Handle,
    index: u32,
    peers: &PeerMap,
    existing: Vec<Route>,
) -> Result<Changes<Ipv4Net>, NetError> {
    check_route_conflicts(&existing, peers)?;
    let mut ch = Changes::default();
    for cidr in peers.keys() {
        let via = cidr.network();
        let found = existing.iter().find(|r| r.dst == *cidr);
        let replace = match found {
            Some(r) if r.gateway == Some(via) && r.oif == Some(index) && r.onlink => {
                ch.unchanged += 1;
                continue;
            }
            Some(_) => true,
            None => false,
        };
        let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(cidr.network(), cidr.prefix_len())
            .gateway(via)
            .output_interface(index)
            .onlink()
            .table_id(MAIN)
            .protocol(RouteProtocol::from(HERD_VXLAN_ROUTE_PROTOCOL))
            .build();
        let req = handle.route().add(msg);
        let req = if replace { req.replace() } else { req };
        req.execute().await.map_err(|e| {
            NetError::netlink(format!("add route {cidr} via {via} onlink (vxlan)"), e)
        })?;
        if replace {
            ch.replaced.push(*cidr);
        } else {
            ch.added.push(*cidr);
        }
    }
    for r in existing {
        let ours = r.protocol == HERD_VXLAN_ROUTE_PROTOCOL && r.oif == Some(index);
        if !ours || peers.contains_key(&r.dst) {
            continue;
        }
        match handle.route().del(r.msg).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::ESRCH) => {}
            Err(e) => return Err(NetError::netlink(format!("delete route {}", r.dst), e)),
        }
        ch.removed.push(r.dst);
    }
    Ok(ch)
}

/// One neighbour or fdb entry on our device.
struct Entry {
    ip: Option<Ipv4Addr>,
    mac: Option<[u8; 6]>,
    permanent: bool,
}

async fn dump_neigh(
    handle: &rtnetlink::Handle,
    family: AddressFamily,
    index: u32,
) -> Result<Vec<Entry>, NetError> {
    let mut stream = handle
        .neighbours()
        .get()
        .set_address_family(family)
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| NetError::netlink(format!("get neighbours ({family:?})"), e))?
    {
        if msg.header.ifindex != index || msg.header.family != family {
            continue;
        }
        let mut e = Entry {
            ip: None,
            mac: None,
            permanent: msg.header.state == NeighbourState::Permanent,
        };
        for a in &msg.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => e.ip = Some(*ip),
                // Bridge-family (fdb) destinations are left unparsed.
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                    if let Ok(o) = <[u8; 4]>::try_from(b.as_slice()) {
                        e.ip = Some(Ipv4Addr::from(o));
                    }
                }
                NeighbourAttribute::LinkLayerAddress(l) => {
                    e.mac = <[u8; 6]>::try_from(l.as_slice()).ok();
                }
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// A delete request for one entry (fdb: one remote of one MAC).
fn del_msg(
    family: AddressFamily,
    index: u32,
    ip: Ipv4Addr,
    mac: Option<[u8; 6]>,
) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    if let Some(mac) = mac {
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    m
}

async fn delete(
    handle: &rtnetlink::Handle,
    msg: NeighbourMessage,
    what: String,
) -> Result<(), NetError> {
    match handle.neighbours().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ESRCH)) => Ok(()),
        Err(e) => Err(NetError::netlink(format!("delete {what}"), e)),
    }
}

/// `neigh <pod_cidr network> lladdr <mac> nud permanent` for each peer.
pub(super) async fn sync_neighbours(
    handle: &rtnetlink::Handle,
    index: u32,
    peers: &PeerMap,
) -> Result<Changes<Ipv4Addr>, NetError> {
    let want: BTreeMap<Ipv4Addr, [u8; 6]> = peers
        .values()
        .map(|p| (p.pod_cidr.network(), p.mac))
        .collect();
    let existing = dump_neigh(handle, AddressFamily::Inet, index).await?;
    let mut ch = Changes::default();
    for (ip, mac) in &want {
        let found = existing.iter().find(|e| e.ip == Some(*ip));
        if found.is_some_and(|e| e.permanent && e.mac == Some(*mac)) {
            ch.unchanged += 1;
            continue;
        }
        handle
            .neighbours()
            .add(index, IpAddr::V4(*ip))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(format!("add neighbour {ip} lladdr {}", fmt_mac(*mac)), e)
            })?;
        if found.is_some() {
            ch.replaced.push(*ip);
        } else {
            ch.added.push(*ip);
        }
    }
    for e in existing {
        let Some(ip) = e.ip else { continue };
        if !e.permanent || want.contains_key(&ip) {
            continue;
        }
        let msg = del_msg(AddressFamily::Inet, index, ip, None);
        delete(handle, msg, format!("neighbour {ip}")).await?;
        ch.removed.push(ip);
    }
    Ok(ch)
}

/// `fdb <mac> dst <node ip> self permanent` for each peer, and no other
/// remote for that MAC.
pub(super) async fn sync_fdb(
    handle: &rtnetlink::Handle,
    index: u32,
    peers: &PeerMap,
) -> Result<Changes<([u8; 6], Ipv4Addr)>, NetError> {
    let want: BTreeMap<[u8; 6], Ipv4Addr> = peers.values().map(|p| (p.mac, p.node_ip)).collect();
    let existing = dump_neigh(handle, AddressFamily::Bridge, index).await?;
    let mut ch = Changes::default();
    // Stray remotes first, so a wanted MAC ends with exactly one.
    let mut kept = BTreeSet::new();
    for e in &existing {
        let (Some(mac), Some(ip)) = (e.mac, e.ip) else {
            continue;
        };
        match want.get(&mac) {
            Some(w) if *w == ip && e.permanent => {
                kept.insert(mac);
            }
            Some(w) if *w == ip => {}
            None if !e.permanent => {}
            _ => {
                let msg = del_msg(AddressFamily::Bridge, index, ip, Some(mac));
                delete(handle, msg, format!("fdb {} dst {ip}", fmt_mac(mac))).await?;
                ch.removed.push((mac, ip));
            }
        }
    }
    for (mac, ip) in &want {
        if kept.contains(mac) {
            ch.unchanged += 1;
            continue;
        }
        handle
            .neighbours()
            .add_bridge(index, mac)
            .destination(IpAddr::V4(*ip))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("add fdb {} dst {ip}", fmt_mac(*mac)), e))?;
        let had = existing
            .iter()
            .any(|e| e.mac == Some(*mac) && e.ip == Some(*ip));
        if had {
            ch.replaced.push((*mac, *ip));
        } else {
            ch.added.push((*mac, *ip));
        }
    }
    Ok(ch)
}
