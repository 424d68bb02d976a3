//! Small netlink queries shared by the bridge and pod code.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};

use crate::NetError;
use crate::error::errno;

/// What we need to know about one link.
#[derive(Debug, Clone)]
pub(crate) struct LinkState {
    pub index: u32,
    pub mac: [u8; 6],
    pub up: bool,
    pub mtu: u32,
    pub kind: Option<InfoKind>,
    pub controller: Option<u32>,
}

fn parse(msg: &LinkMessage) -> LinkState {
    let mut st = LinkState {
        index: msg.header.index,
        mac: [0; 6],
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: 0,
        kind: None,
        controller: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Address(a) if a.len() == 6 => st.mac.copy_from_slice(a),
            LinkAttribute::Mtu(m) => st.mtu = *m,
            LinkAttribute::Controller(c) => st.controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        st.kind = Some(k.clone());
                    }
                }
            }
            _ => {}
        }
    }
    st
}

/// The link called `name`, or None when there is none (ENODEV).
pub(crate) async fn link_by_name(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<Option<LinkState>, NetError> {
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(parse(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(NetError::netlink(format!("get link {name}"), e)),
    }
}

/// IPv4 addresses (address, prefix) on link `index`.
pub(crate) async fn ipv4_addrs(
    handle: &rtnetlink::Handle,
    index: u32,
) -> Result<Vec<(Ipv4Addr, u8)>, NetError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut out = Vec::new();
    loop {
        match stream.try_next().await {
            Ok(Some(msg)) => {
                if msg.header.index != index {
                    continue;
                }
                for a in &msg.attributes {
                    if let AddressAttribute::Local(IpAddr::V4(ip)) = a {
                        out.push((*ip, msg.header.prefix_len));
                    }
                }
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(NetError::netlink(
                    format!("get addresses of link {index}"),
                    e,
                ));
            }
        }
    }
}

/// The gateway of the IPv4 default route in the main table, if any, with
/// its output link.
pub(crate) async fn default_route_v4(
    handle: &rtnetlink::Handle,
) -> Result<Option<(Ipv4Addr, Option<u32>)>, NetError> {
    let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut stream = handle.route().get(msg).execute();
    loop {
        match stream.try_next().await {
            Ok(Some(r)) => {
                if r.header.destination_prefix_length != 0 {
                    continue;
                }
                let mut gw = None;
                let mut oif = None;
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                if let Some(g) = gw {
                    return Ok(Some((g, oif)));
                }
            }
            Ok(None) => return Ok(None),
            Err(e) => return Err(NetError::netlink("get routes", e)),
        }
    }
}

/// Check an interface name against the kernel's rules (dev_valid_name).
pub(crate) fn validate_ifname(what: &'static str, name: &str) -> Result<(), NetError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes (IFNAMSIZ)")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        Some("contains '/', ':', whitespace or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetError::InvalidName {
            what,
            value: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}
