//! The VXLAN device itself: finding the underlay, creating, checking,
//! recreating and deleting the device, and its one address.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};

use super::{DeviceChange, VxlanConfig};
use crate::NetError;
use crate::error::errno;
use crate::links::validate_ifname;

/// Delete the VXLAN device `name` (its routes, neighbours and fdb entries go
/// with it). Idempotent; a link of another kind is a
/// [`NetError::LinkConflict`] and is not deleted.
pub async fn remove_vxlan(handle: &rtnetlink::Handle, name: &str) -> Result<(), NetError> {
    validate_ifname("vxlan device name", name)?;
    let Some(link) = get_link(handle, LinkKey::Name(name)).await? else {
        return Ok(());
    };
    if link.kind != Some(InfoKind::Vxlan) {
        return Err(not_vxlan(name, &link));
    }
    match handle.link().del(link.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(NetError::netlink(format!("delete vxlan {name}"), e)),
    }
}

/// A link as found, with its VXLAN attributes when it is one.
#[derive(Debug, Default)]
pub(super) struct Link {
    pub index: u32,
    mac: [u8; 6],
    pub mtu: u32,
    up: bool,
    kind: Option<InfoKind>,
    vni: Option<u32>,
    port: Option<u16>,
    local: Option<Ipv4Addr>,
    underlay: Option<u32>,
    learning: Option<bool>,
}

fn parse_link(msg: &LinkMessage) -> Link {
    let mut l = Link {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..Link::default()
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Address(a) if a.len() == 6 => l.mac.copy_from_slice(a),
            LinkAttribute::Mtu(m) => l.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => l.kind = Some(k.clone()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            for a in v {
                                match a {
                                    InfoVxlan::Id(id) => l.vni = Some(*id),
                                    InfoVxlan::Port(p) => l.port = Some(*p),
                                    InfoVxlan::Local(ip) => l.local = Some(*ip),
                                    InfoVxlan::Link(i) => l.underlay = Some(*i),
                                    InfoVxlan::Learning(b) => l.learning = Some(*b),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

enum LinkKey<'a> {
    Name(&'a str),
    Index(u32),
}

async fn get_link(handle: &rtnetlink::Handle, key: LinkKey<'_>) -> Result<Option<Link>, NetError> {
    let (req, what) = match key {
        LinkKey::Name(n) => (handle.link().get().match_name(n.to_string()), n.to_string()),
        LinkKey::Index(i) => (handle.link().get().match_index(i), format!("index {i}")),
    };
    match req.execute().try_next().await {
        Ok(msg) => Ok(msg.as_ref().map(parse_link)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(NetError::netlink(format!("get link {what}"), e)),
    }
}

fn not_vxlan(name: &str, link: &Link) -> NetError {
    conflict(name, format!("kind is {:?}, not vxlan", link.kind))
}

fn conflict(name: &str, reason: String) -> NetError {
    NetError::LinkConflict {
        name: name.to_string(),
        netns: PathBuf::from("(the netns of the netlink handle)"),
        reason,
    }
}

/// Every IPv4 address of the netns: (address, prefix length, link index).
async fn all_ipv4(handle: &rtnetlink::Handle) -> Result<Vec<(Ipv4Addr, u8, u32)>, NetError> {
    let mut stream = handle.address().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| NetError::netlink("get addresses", e))?
    {
        let find = |local: bool| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) if local => Some(*ip),
                AddressAttribute::Address(IpAddr::V4(ip)) if !local => Some(*ip),
                _ => None,
            })
        };
        if let Some(ip) = find(true).or_else(|| find(false)) {
            out.push((ip, msg.header.prefix_len, msg.header.index));
        }
    }
    Ok(out)
}

/// For each of `addrs`, whether it lies in a directly connected subnet of
/// this netns (an address with a prefix shorter than /32 contains it), as
/// host-gw requires ([`crate::sync_node_routes`]). A caller mixing the two
/// (flannel's "DirectRouting") sends the `true` peers to host-gw and the
/// `false` ones to [`super::sync_vxlan`].
pub async fn directly_connected(
    handle: &rtnetlink::Handle,
    addrs: &[Ipv4Addr],
) -> Result<Vec<bool>, NetError> {
    let nets: Vec<Ipv4Net> = all_ipv4(handle)
        .await?
        .into_iter()
        .filter(|(_, len, _)| *len < 32)
        .filter_map(|(ip, len, _)| Ipv4Net::new(ip, len).ok())
        .collect();
    Ok(addrs
        .iter()
        .map(|a| nets.iter().any(|n| n.contains(a)))
        .collect())
}

/// The link holding `cfg.local`.
pub(super) async fn find_underlay(
    handle: &rtnetlink::Handle,
    cfg: &VxlanConfig,
) -> Result<Link, NetError> {
    let index = all_ipv4(handle)
        .await?
        .into_iter()
        .find(|(ip, _, _)| *ip == cfg.local)
        .map(|(_, _, index)| index);
    let missing = || NetError::VxlanUnderlay {
        name: cfg.name.clone(),
        local: cfg.local,
    };
    let index = index.ok_or_else(missing)?;
    get_link(handle, LinkKey::Index(index))
        .await?
        .ok_or_else(missing)
}

/// Why an existing VXLAN device cannot be kept, if it cannot.
fn mismatch(link: &Link, cfg: &VxlanConfig, underlay: u32) -> Option<String> {
    if link.vni != Some(cfg.vni) {
        return Some(format!("vni {:?}, want {}", link.vni, cfg.vni));
    }
    if link.port != Some(cfg.port) {
        return Some(format!("port {:?}, want {}", link.port, cfg.port));
    }
    if link.local != Some(cfg.local) {
        return Some(format!("local {:?}, want {}", link.local, cfg.local));
    }
    if link.underlay != Some(underlay) {
        return Some(format!(
            "underlay link {:?}, want {underlay}",
            link.underlay
        ));
    }
    if link.learning != Some(false) {
        return Some("learning is on".into());
    }
    None
}

pub(super) async fn ensure_device(
    handle: &rtnetlink::Handle,
    cfg: &VxlanConfig,
    underlay: u32,
    mtu: u32,
) -> Result<(u32, DeviceChange), NetError> {
    let name = &cfg.name;
    let mut change = DeviceChange::Created;
    let link = match get_link(handle, LinkKey::Name(name)).await? {
        Some(l) if l.kind != Some(InfoKind::Vxlan) => return Err(not_vxlan(name, &l)),
        Some(l) => match mismatch(&l, cfg, underlay) {
            None => Some(l),
            Some(reason) => {
                remove_vxlan(handle, name).await?;
                change = DeviceChange::Recreated(reason);
                None
            }
        },
        None => None,
    };
    let link = match link {
        Some(l) => l,
        None => {
            let msg = rtnetlink::LinkVxlan::new(name, cfg.vni)
                .dev(underlay)
                .local(cfg.local)
                .port(cfg.port)
                .learning(false)
                .mtu(mtu)
                .address(cfg.mac.to_vec())
                .up()
                .build();
            let added = handle.link().add(msg).execute().await;
            let made = get_link(handle, LinkKey::Name(name)).await?;
            let l = match (added, made) {
                (Ok(()), Some(l)) => l,
                // A concurrent sync made it first: check it like any other.
                (Err(e), Some(l)) if errno(&e) == Some(libc::EEXIST) => {
                    if l.kind != Some(InfoKind::Vxlan) {
                        return Err(not_vxlan(name, &l));
                    }
                    if let Some(reason) = mismatch(&l, cfg, underlay) {
                        return Err(conflict(name, reason));
                    }
                    l
                }
                // The kernel allows one device per (vni, port, local).
                (Err(e), None) if errno(&e) == Some(libc::EEXIST) => {
                    return Err(conflict(
                        name,
                        format!(
                            "another vxlan device already uses vni {} port {} (a renamed herd device? remove it first)",
                            cfg.vni, cfg.port
                        ),
                    ));
                }
                (Err(e), _) => return Err(NetError::netlink(format!("add vxlan {name}"), e)),
                (Ok(()), None) => {
                    return Err(NetError::LinkNotFound {
                        name: name.clone(),
                        where_: " after creating it".into(),
                    });
                }
            };
            ensure_address(handle, cfg, l.index).await?;
            return Ok((l.index, change));
        }
    };
    let mut fixed = Vec::new();
    let mut set = rtnetlink::LinkUnspec::new_with_index(link.index);
    if link.mac != cfg.mac {
        set = set.address(cfg.mac.to_vec());
        fixed.push("mac");
    }
    if link.mtu != mtu {
        set = set.mtu(mtu);
        fixed.push("mtu");
    }
    if !link.up {
        set = set.up();
        fixed.push("up");
    }
    if !fixed.is_empty() {
        handle
            .link()
            .set(set.build())
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(format!("set {} on vxlan {name}", fixed.join(",")), e)
            })?;
    }
    if ensure_address(handle, cfg, link.index).await? {
        fixed.push("address");
    }
    let change = if fixed.is_empty() {
        DeviceChange::Unchanged
    } else {
        DeviceChange::Updated(fixed)
    };
    Ok((link.index, change))
}

/// Make `<pod_cidr network>/32` the only IPv4 address of the device;
/// returns whether anything was written.
async fn ensure_address(
    handle: &rtnetlink::Handle,
    cfg: &VxlanConfig,
    index: u32,
) -> Result<bool, NetError> {
    let want = cfg.device_address();
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut present = false;
    let mut stale = Vec::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| NetError::netlink(format!("get addresses of {}", cfg.name), e))?
    {
        if msg.header.index != index {
            continue;
        }
        let ip = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        match ip {
            Some(ip) if ip == want && msg.header.prefix_len == 32 => present = true,
            Some(ip) => stale.push((ip, msg)),
            None => {}
        }
    }
    let changed = !present || !stale.is_empty();
    for (ip, msg) in stale {
        match handle.address().del(msg).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => {
                return Err(NetError::netlink(
                    format!("delete {ip} from {}", cfg.name),
                    e,
                ));
            }
        }
    }
    if !present {
        handle
            .address()
            .add(index, want.into(), 32)
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("add {want}/32 to {}", cfg.name), e))?;
    }
    Ok(changed)
}
