//! Pod side: one veth pair per (pod, ifname). The host end is enslaved to
//! the bridge; the peer is created directly inside the pod netns under its
//! final name, MAC and MTU (one RTM_NEWLINK, no rename or move), then is
//! set up (the kernel refuses IFF_UP on a veth peer at creation: ENOTCONN),
//! gets the address and a default route via the gateway; `lo` goes up.
//!
//! Names are deterministic: host end `veth<8 hex of sha256(id+ifname)>`,
//! pod MAC a locally administered address from the same digest. That makes
//! a retried ADD find its own work: `attach` is idempotent, and a stale
//! host veth left by a crash mid-ADD is deleted and recreated.
//!
//! Teardown: when the caller deletes the pod netns anyway, [`detach`] with
//! `netns = None` touches no link; the kernel reaps the pair with the
//! namespace (deleting a veth explicitly costs an RCU grace period).

use std::net::Ipv4Addr;

use futures_util::future::try_join3;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::fd::AsRawFd;

use crate::error::errno;
use crate::links::{default_route_v4, ipv4_addrs, link_by_name, validate_ifname};
use crate::netns::with_handle_in;
use crate::{NetError, NetNs};

/// Index of `lo` in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// What `attach` needs.
#[derive(Debug, Clone, Copy)]
pub struct PodAttach<'a> {
    /// Container or sandbox id.
    pub id: &'a str,
    pub netns: &'a NetNs,
    /// Interface name inside the pod, usually "eth0".
    pub ifname: &'a str,
    /// Pod address with the subnet's prefix length.
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub hairpin: bool,
    pub bridge_index: u32,
}

/// The wired pod interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    pub host_veth: String,
    pub host_veth_index: u32,
    pub ifname: String,
    pub mac: [u8; 6],
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
}

fn digest(id: &str, ifname: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(ifname.as_bytes());
    h.finalize().into()
}

/// Host-side veth name for `(id, ifname)`: "veth" + 8 hex digits.
pub fn host_veth_name(id: &str, ifname: &str) -> String {
    let d = digest(id, ifname);
    format!("veth{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

/// Pod-side MAC for `(id, ifname)`: stable, locally administered, unicast.
pub fn pod_mac(id: &str, ifname: &str) -> [u8; 6] {
    let d = digest(id, ifname);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d[4..10]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

fn validate(a: &PodAttach<'_>) -> Result<(), NetError> {
    if a.id.is_empty() {
        return Err(NetError::InvalidName {
            what: "pod id",
            value: String::new(),
            reason: "empty",
        });
    }
    validate_ifname("pod ifname", a.ifname)?;
    if !(68..=65535).contains(&a.mtu) {
        return Err(NetError::InvalidConfig(format!(
            "mtu {} out of range 68..=65535",
            a.mtu
        )));
    }
    if !a.address.contains(&a.gateway) || a.address.addr() == a.gateway {
        return Err(NetError::InvalidConfig(format!(
            "gateway {} is not a different address in {}",
            a.gateway, a.address
        )));
    }
    Ok(())
}

async fn create_pair(
    host: &rtnetlink::Handle,
    a: &PodAttach<'_>,
    name: &str,
    mac: [u8; 6],
) -> Result<(), rtnetlink::Error> {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(a.ifname.to_string())
        .address(mac.to_vec())
        .mtu(a.mtu)
        .setns_by_fd(a.netns.fd().as_raw_fd())
        .build();
    let msg = LinkVeth::new(name, a.ifname)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .mtu(a.mtu)
        .controller(a.bridge_index)
        .up()
        .build();
    host.link().add(msg).execute().await
}

async fn delete_link(handle: &rtnetlink::Handle, index: u32, what: &str) -> Result<(), NetError> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(NetError::netlink(format!("delete {what}"), e)),
    }
}

/// Create and configure the pod's interface (see module docs). Idempotent.
pub async fn attach(host: &rtnetlink::Handle, a: &PodAttach<'_>) -> Result<PodNetwork, NetError> {
    validate(a)?;
    with_handle_in(
        a.netns,
        |pod| async move { attach_with(host, &pod, a).await },
    )
    .await
}

async fn attach_with(
    host: &rtnetlink::Handle,
    pod: &rtnetlink::Handle,
    a: &PodAttach<'_>,
) -> Result<PodNetwork, NetError> {
    let name = host_veth_name(a.id, a.ifname);
    let mac = pod_mac(a.id, a.ifname);
    let mut created = false;
    match create_pair(host, a, &name, mac).await {
        Ok(()) => created = true,
        Err(e) if errno(&e) == Some(libc::EEXIST) => {
            match link_by_name(pod, a.ifname).await? {
                Some(l) if l.mac == mac => {} // a retried ADD: finish configuring
                Some(l) => {
                    return Err(NetError::LinkConflict {
                        name: a.ifname.to_string(),
                        netns: a.netns.path().to_path_buf(),
                        reason: format!("mac {} is not ours", fmt_mac(&l.mac)),
                    });
                }
                None => {
                    // Stale host end from a crash mid-ADD: replace it.
                    if let Some(stale) = link_by_name(host, &name).await? {
                        delete_link(host, stale.index, &format!("stale veth {name}")).await?;
                    }
                    create_pair(host, a, &name, mac).await.map_err(|e| {
                        NetError::netlink(format!("add veth {name}/{}", a.ifname), e)
                    })?;
                    created = true;
                }
            }
        }
        Err(e) => {
            return Err(NetError::netlink(
                format!("add veth {name}/{}", a.ifname),
                e,
            ));
        }
    }
    let configured = configure(host, pod, a, &name, mac, created).await;
    if configured.is_err()
        && created
        && let Ok(Some(l)) = link_by_name(host, &name).await
    {
        let _ = delete_link(host, l.index, &name).await;
    }
    configured
}

async fn configure(
    host: &rtnetlink::Handle,
    pod: &rtnetlink::Handle,
    a: &PodAttach<'_>,
    name: &str,
    mac: [u8; 6],
    created: bool,
) -> Result<PodNetwork, NetError> {
    let (hl, pl) =
        futures_util::future::try_join(link_by_name(host, name), link_by_name(pod, a.ifname))
            .await?;
    let not_found = |n: &str, w: &str| NetError::LinkNotFound {
        name: n.to_string(),
        where_: w.to_string(),
    };
    let hl = hl.ok_or_else(|| not_found(name, " in the host netns"))?;
    let pl = pl.ok_or_else(|| not_found(a.ifname, &format!(" in {}", a.netns.path().display())))?;
    let ip = a.address.addr();
    let prefix = a.address.prefix_len();

    let host_side = async {
        if !created && (hl.controller != Some(a.bridge_index) || !hl.up) {
            let msg = LinkUnspec::new_with_index(hl.index)
                .controller(a.bridge_index)
                .up()
                .build();
            host.link()
                .set(msg)
                .execute()
                .await
                .map_err(|e| NetError::netlink(format!("enslave {name}"), e))?;
        }
        if a.hairpin {
            let msg = LinkBridgePort::new(hl.index).hairpin(true).build();
            host.link()
                .set_port(msg)
                .execute()
                .await
                .map_err(|e| NetError::netlink(format!("hairpin on {name}"), e))?;
        }
        Ok::<(), NetError>(())
    };
    // Pipelined: the three requests are queued on the one pod socket in
    // this order before any answer arrives (try_join3 polls in order and
    // each request is sent on first poll); the kernel handles a socket's
    // requests in order, so the route sees the link up and the address.
    let set_up = async {
        if pl.up {
            return Ok(());
        }
        let msg = LinkUnspec::new_with_index(pl.index).up().build();
        pod.link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("set {} up", a.ifname), e))
    };
    let add_addr = async {
        pod.address()
            .add(pl.index, ip.into(), prefix)
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("add {} to {}", a.address, a.ifname), e))
    };
    let add_route = async {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(a.gateway)
            .output_interface(pl.index)
            .build();
        pod.route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("add default route via {}", a.gateway), e))
    };
    let pod_addr = async { try_join3(set_up, add_addr, add_route).await.map(|_| ()) };
    let lo = async {
        let msg = LinkUnspec::new_with_index(LOOPBACK_IFINDEX).up().build();
        pod.link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetError::netlink("set lo up", e))
    };
    try_join3(host_side, pod_addr, lo).await?;
    Ok(PodNetwork {
        host_veth: name.to_string(),
        host_veth_index: hl.index,
        ifname: a.ifname.to_string(),
        mac,
        address: a.address,
        gateway: a.gateway,
    })
}

fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Verify that the pod side matches `a` (CNI CHECK). The error names the
/// first difference found.
pub async fn check(host: &rtnetlink::Handle, a: &PodAttach<'_>) -> Result<(), NetError> {
    validate(a)?;
    with_handle_in(
        a.netns,
        |pod| async move { check_with(host, &pod, a).await },
    )
    .await
}

async fn check_with(
    host: &rtnetlink::Handle,
    pod: &rtnetlink::Handle,
    a: &PodAttach<'_>,
) -> Result<(), NetError> {
    let fail = |what: String| NetError::CheckFailed {
        id: a.id.to_string(),
        ifname: a.ifname.to_string(),
        what,
    };
    let name = host_veth_name(a.id, a.ifname);
    let mac = pod_mac(a.id, a.ifname);
    let hl = link_by_name(host, &name)
        .await?
        .ok_or_else(|| fail(format!("host veth {name} missing")))?;
    if hl.controller != Some(a.bridge_index) {
        return Err(fail(format!(
            "host veth {name} is on link {:?}, not bridge {}",
            hl.controller, a.bridge_index
        )));
    }
    let pl = link_by_name(pod, a.ifname).await?.ok_or_else(|| {
        fail(format!(
            "{} missing in {}",
            a.ifname,
            a.netns.path().display()
        ))
    })?;
    if pl.mac != mac {
        return Err(fail(format!(
            "mac is {}, want {}",
            fmt_mac(&pl.mac),
            fmt_mac(&mac)
        )));
    }
    if !pl.up {
        return Err(fail("interface is down".into()));
    }
    if pl.mtu != a.mtu {
        return Err(fail(format!("mtu is {}, want {}", pl.mtu, a.mtu)));
    }
    let addrs = ipv4_addrs(pod, pl.index).await?;
    if !addrs.contains(&(a.address.addr(), a.address.prefix_len())) {
        return Err(fail(format!(
            "address {} missing (has {addrs:?})",
            a.address
        )));
    }
    match default_route_v4(pod).await? {
        Some((gw, oif)) if gw == a.gateway && oif.is_none_or(|o| o == pl.index) => Ok(()),
        Some((gw, _)) => Err(fail(format!("default route via {gw}, want {}", a.gateway))),
        None => Err(fail("no default route".into())),
    }
}

/// Tear down `(id, ifname)`. With `netns = None` nothing is done to links
/// (the caller deletes the netns and the kernel reaps the pair). With a
/// netns that stays, the pod-side interface is deleted if it is ours (by
/// MAC), which removes the pair. Idempotent.
pub async fn detach(
    host: &rtnetlink::Handle,
    id: &str,
    ifname: &str,
    netns: Option<&NetNs>,
) -> Result<(), NetError> {
    let _ = host;
    validate_ifname("pod ifname", ifname)?;
    let Some(ns) = netns else {
        return Ok(());
    };
    with_handle_in(ns, |pod| async move {
        match link_by_name(&pod, ifname).await? {
            Some(l) if l.mac == pod_mac(id, ifname) => {
                delete_link(
                    &pod,
                    l.index,
                    &format!("{ifname} in {}", ns.path().display()),
                )
                .await
            }
            _ => Ok(()),
        }
    })
    .await
}

/// Cheap teardown of the pod side for when the caller deletes the netns
/// right after (every CNI runtime does): the interface is set down and its
/// addresses removed, so a released address can no longer answer, and the
/// veth pair itself is left for the kernel to reap with the netns. Deleting
/// a veth synchronously waits 10-40 ms for RCU; this takes well under 1 ms.
/// Idempotent: a missing interface (or one that is not ours) is fine.
pub async fn quiesce(id: &str, ifname: &str, netns: &NetNs) -> Result<(), NetError> {
    use futures_util::TryStreamExt;
    validate_ifname("pod ifname", ifname)?;
    with_handle_in(netns, |pod| async move {
        let Some(l) = link_by_name(&pod, ifname).await? else {
            return Ok(());
        };
        if l.mac != pod_mac(id, ifname) {
            return Ok(());
        }
        let mut addrs = pod.address().get().set_link_index_filter(l.index).execute();
        let mut found = Vec::new();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(|e| NetError::netlink(format!("list addresses of {ifname}"), e))?
        {
            found.push(msg);
        }
        for msg in found {
            pod.address()
                .del(msg)
                .execute()
                .await
                .map_err(|e| NetError::netlink(format!("remove address of {ifname}"), e))?;
        }
        let msg = LinkUnspec::new_with_index(l.index).down().build();
        pod.link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("set {ifname} down"), e))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_valid() {
        let n = host_veth_name("abc", "eth0");
        assert_eq!(n, host_veth_name("abc", "eth0"));
        assert_ne!(n, host_veth_name("abc", "eth1"));
        assert_eq!(n.len(), 12);
        validate_ifname("x", &n).unwrap();
        let m = pod_mac("abc", "eth0");
        assert_eq!(m[0] & 0x03, 0x02);
        assert_ne!(m, pod_mac("abd", "eth0"));
    }
}
