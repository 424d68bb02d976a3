//! ADD: bridge, address, veth pair, result.
//!
//! Order: open the pod netns (missing: code 3), ensure the bridge, allocate
//! (own IPAM: durable before use; delegated: IPAM plugin ADD), attach the
//! pod. If attaching fails the address is released again. A retried ADD for
//! the same (container, ifname) gets the same address and the same links.
//! With a `prevResult` (herd-cni not first in a chain) the previous
//! interfaces, IPs and routes are kept and ours are appended.

use std::net::{IpAddr, Ipv4Addr};

use herd_net::bridge::{BridgeConfig, BridgeInfo, ensure_bridge};
use herd_net::ipam::Ipam;
use herd_net::netns::NetNs;
use herd_net::pod::{PodAttach, PodNetwork, attach};
use ipnet::{IpNet, Ipv4Net};

use super::config::{HerdConf, IpamMode};
use super::env::Command;
use super::{Request, delegate};
use crate::error::{CniError, ErrorCode};
use crate::types::{CniResult, Interface, IpConfig, Route};

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(ErrorCode::Io, "cannot start runtime").with_details(e.to_string())
        })
}

pub(super) fn open_netns(path: &std::path::Path) -> Result<NetNs, CniError> {
    NetNs::open(path).map_err(|e| {
        CniError::new(
            ErrorCode::UnknownContainer,
            format!("network namespace {} does not exist", path.display()),
        )
        .with_details(e.to_string())
    })
}

pub(super) fn bridge_config(c: &HerdConf, subnet: Ipv4Net, gateway: Ipv4Addr) -> BridgeConfig {
    BridgeConfig {
        name: c.bridge.clone(),
        subnet,
        gateway: Some(gateway),
        mtu: c.mtu,
        hairpin: c.hairpin,
        masquerade: c.masquerade,
        masquerade_exclude: Vec::new(),
    }
}

/// An address handed out for this ADD, and how to give it back.
struct Lease {
    address: Ipv4Net,
    gateway: Ipv4Addr,
    info: BridgeInfo,
    ipam_result: Option<CniResult>,
}

pub(super) fn add(req: &Request) -> Result<CniResult, CniError> {
    let c = &req.parsed.herd;
    let env = &req.env;
    let netns_path = env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_env("required env variables [CNI_NETNS] missing"))?;
    let prev = req
        .parsed
        .conf
        .prev_result
        .as_ref()
        .map(CniResult::from_value)
        .transpose()?;
    let ns = open_netns(netns_path)?;
    let rt = runtime()?;
    rt.block_on(async {
        let handle = herd_net::netns::handle_in(None).await?;
        let lease = match &c.ipam {
            IpamMode::Own => own_lease(req, &handle).await?,
            IpamMode::Delegate(plugin) => delegated_lease(req, plugin, &handle).await?,
        };
        let pa = PodAttach {
            id: env.id(),
            netns: &ns,
            ifname: env.ifname(),
            address: lease.address,
            gateway: lease.gateway,
            mtu: c.mtu,
            hairpin: c.hairpin,
            bridge_index: lease.info.index,
        };
        match attach(&handle, &pa).await {
            Ok(pod) => Ok(result(req, prev, &lease, &pod)),
            Err(e) => {
                rollback(req);
                Err(CniError::from(e))
            }
        }
    })
}

async fn own_lease(req: &Request, handle: &rtnetlink::Handle) -> Result<Lease, CniError> {
    let c = &req.parsed.herd;
    let env = &req.env;
    let subnet = c
        .subnet
        .ok_or_else(|| CniError::invalid_config("subnet is required"))?;
    let info = ensure_bridge(
        handle,
        None,
        &bridge_config(c, subnet, c.gateway_for(subnet)),
    )
    .await?;
    let ipam = Ipam::open(&c.ipam_dir(), subnet, info.gateway)?;
    let ip = match env.arg("IP") {
        None => ipam.allocate(env.id(), env.ifname())?,
        Some(s) => {
            let want: Ipv4Addr = s.parse().map_err(|_| {
                CniError::invalid_env(format!("CNI_ARGS IP={s} is not an IPv4 address"))
            })?;
            ipam.allocate_specific(env.id(), env.ifname(), want)?
        }
    };
    // Test-only (HERD_NET_FAILPOINT=after-allocate): a crash right after
    // the allocation became durable; also covers allocate_specific.
    herd_net::failpoint_after_allocate();
    let address = Ipv4Net::new(ip, subnet.prefix_len())
        .map_err(|e| CniError::invalid_config(format!("bad prefix: {e}")))?;
    Ok(Lease {
        address,
        gateway: info.gateway,
        info,
        ipam_result: None,
    })
}

async fn delegated_lease(
    req: &Request,
    plugin: &str,
    handle: &rtnetlink::Handle,
) -> Result<Lease, CniError> {
    let c = &req.parsed.herd;
    let raw = delegate::exec(plugin, Command::Add, &req.env, &req.raw)?.ok_or_else(|| {
        CniError::new(
            ErrorCode::Delegate,
            format!("ipam plugin {plugin} printed no result"),
        )
    })?;
    let r = CniResult::from_value(&raw)?;
    let found = r.ips.iter().find_map(|ip| match (ip.address, ip.gateway) {
        (IpNet::V4(a), Some(IpAddr::V4(g))) => Some((a, Some(g))),
        (IpNet::V4(a), _) => Some((a, None)),
        _ => None,
    });
    let Some((address, gw)) = found else {
        rollback(req);
        return Err(CniError::new(
            ErrorCode::Delegate,
            format!("ipam plugin {plugin} returned no IPv4 address"),
        ));
    };
    let subnet = c.subnet.unwrap_or_else(|| address.trunc());
    let gateway = gw.or(c.gateway).unwrap_or_else(|| c.gateway_for(subnet));
    match ensure_bridge(handle, None, &bridge_config(c, subnet, gateway)).await {
        Ok(info) => Ok(Lease {
            address,
            gateway: info.gateway,
            info,
            ipam_result: Some(r),
        }),
        Err(e) => {
            rollback(req);
            Err(CniError::from(e))
        }
    }
}

/// Give the address back after a failed ADD; errors here are secondary to
/// the one being reported.
fn rollback(req: &Request) {
    let env = &req.env;
    let c = &req.parsed.herd;
    match &c.ipam {
        IpamMode::Own => {
            if let Some(subnet) = c.subnet
                && let Ok(ipam) = Ipam::open(&c.ipam_dir(), subnet, c.gateway_for(subnet))
            {
                let _ = ipam.release(env.id(), env.ifname());
            }
        }
        IpamMode::Delegate(plugin) => {
            let _ = delegate::exec(plugin, Command::Del, env, &req.raw);
        }
    }
}

pub(super) fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn result(req: &Request, prev: Option<CniResult>, lease: &Lease, pod: &PodNetwork) -> CniResult {
    let c = &req.parsed.herd;
    let mut r = prev.unwrap_or_else(|| CniResult::new(req.parsed.version));
    let base = r.interfaces.len();
    r.interfaces.push(Interface {
        name: c.bridge.clone(),
        mac: Some(fmt_mac(lease.info.mac)),
        ..Default::default()
    });
    r.interfaces.push(Interface {
        name: pod.host_veth.clone(),
        ..Default::default()
    });
    r.interfaces.push(Interface {
        name: pod.ifname.clone(),
        mac: Some(fmt_mac(pod.mac)),
        mtu: Some(c.mtu),
        sandbox: req.env.netns.as_ref().map(|p| p.display().to_string()),
        ..Default::default()
    });
    r.ips.push(IpConfig {
        version: None,
        address: IpNet::V4(pod.address),
        gateway: Some(IpAddr::V4(pod.gateway)),
        interface: Some(base + 2),
    });
    r.routes.push(Route {
        dst: IpNet::V4(Ipv4Net::default()),
        gw: Some(IpAddr::V4(pod.gateway)),
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    });
    if !c.dns.is_empty() {
        r.dns = c.dns.clone();
    } else if let Some(ipam) = &lease.ipam_result
        && !ipam.dns.is_empty()
    {
        r.dns = ipam.dns.clone();
    }
    r
}
