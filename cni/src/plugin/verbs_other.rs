//! DEL, CHECK, STATUS and GC.
//!
//! DEL never fails for what is already gone: an unknown container, a
//! missing netns or a missing link is success. With a live netns the pod
//! interface is removed (which removes the pair); without one, links are
//! left to the kernel, which reaps the veth with the namespace. The address
//! is released after the links are gone, so it cannot be handed out while
//! still configured.

use std::collections::HashSet;
use std::ffi::CString;
use std::net::IpAddr;

use herd_net::ipam::Ipam;
use herd_net::pod::{PodAttach, check as pod_check, detach};
use ipnet::{IpNet, Ipv4Net};

use super::config::{HerdConf, IpamMode};
use super::env::Command;
use super::verbs_add::{open_netns, runtime};
use super::{Request, delegate};
use crate::error::{CniError, ErrorCode};
use crate::types::{CniResult, ValidAttachment};

fn open_ipam(c: &HerdConf) -> Result<Option<Ipam>, CniError> {
    match (&c.ipam, c.subnet) {
        (IpamMode::Own, Some(subnet)) => Ok(Some(Ipam::open(
            &c.ipam_dir(),
            subnet,
            c.gateway_for(subnet),
        )?)),
        _ => Ok(None),
    }
}

pub(super) fn del(req: &Request) -> Result<(), CniError> {
    let env = &req.env;
    let c = &req.parsed.herd;
    // Clean up as much as possible: the address is released even when the
    // link could not be removed; the first error is reported (DEL is
    // retried by runtimes and every step is idempotent).
    let detached = match env.netns.as_deref() {
        Some(path) => match herd_net::netns::NetNs::open(path) {
            Ok(ns) => runtime()?.block_on(async {
                if c.delete_link {
                    let handle = herd_net::netns::handle_in(None).await?;
                    detach(&handle, env.id(), env.ifname(), Some(&ns)).await
                } else {
                    // The runtime deletes the netns next; the kernel reaps
                    // the veth then, without a 10-40 ms synchronous wait.
                    herd_net::quiesce(env.id(), env.ifname(), &ns).await
                }
            }),
            Err(_) => Ok(()),
        },
        None => Ok(()),
    };
    let released = match &c.ipam {
        IpamMode::Own => match open_ipam(c) {
            Ok(Some(ipam)) => ipam
                .release(env.id(), env.ifname())
                .map(|_| ())
                .map_err(CniError::from),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        },
        IpamMode::Delegate(plugin) => {
            delegate::exec(plugin, Command::Del, env, &req.raw).map(|_| ())
        }
    };
    detached.map_err(CniError::from)?;
    released
}

fn check_failed(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::CheckFailed, msg)
}

fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // if_nametoindex only reads it.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

pub(super) fn check(req: &Request) -> Result<(), CniError> {
    let env = &req.env;
    let c = &req.parsed.herd;
    let prev = req
        .parsed
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("CHECK requires prevResult"))?;
    let prev = CniResult::from_value(prev)?;
    let recorded = match &c.ipam {
        IpamMode::Own => {
            let ipam =
                open_ipam(c)?.ok_or_else(|| CniError::invalid_config("subnet is required"))?;
            let ip = ipam.lookup(env.id(), env.ifname())?.ok_or_else(|| {
                CniError::new(
                    ErrorCode::UnknownContainer,
                    format!(
                        "container {} has no address on {} in network {}",
                        env.id(),
                        env.ifname(),
                        c.network
                    ),
                )
            })?;
            Some(ip)
        }
        IpamMode::Delegate(plugin) => {
            delegate::exec(plugin, Command::Check, env, &req.raw)?;
            None
        }
    };
    let sandbox = env
        .netns
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname() && i.sandbox.as_deref() == Some(sandbox.as_str()))
        .ok_or_else(|| {
            check_failed(format!(
                "prevResult has no interface {} in sandbox {sandbox}",
                env.ifname()
            ))
        })?;
    let ip = prev
        .ips
        .iter()
        .find_map(|ip| match ip.address {
            IpNet::V4(a) if ip.interface == Some(idx) => Some((a, ip.gateway)),
            _ => None,
        })
        .ok_or_else(|| {
            check_failed(format!(
                "prevResult has no IPv4 address for {}",
                env.ifname()
            ))
        })?;
    let (address, gw) = ip;
    if let Some(rec) = recorded
        && rec != address.addr()
    {
        return Err(check_failed(format!(
            "prevResult says {address}, ipam has {rec} for {}/{}",
            env.id(),
            env.ifname()
        )));
    }
    let gateway = match gw {
        Some(IpAddr::V4(g)) => g,
        _ => c.gateway_for(c.subnet.unwrap_or_else(|| address.trunc())),
    };
    let netns_path = env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_env("required env variables [CNI_NETNS] missing"))?;
    let ns = open_netns(netns_path)?;
    let bridge_index = ifindex(&c.bridge)
        .ok_or_else(|| check_failed(format!("bridge {} does not exist", c.bridge)))?;
    let pa = PodAttach {
        id: env.id(),
        netns: &ns,
        ifname: env.ifname(),
        address,
        gateway,
        mtu: c.mtu,
        hairpin: c.hairpin,
        bridge_index,
    };
    runtime()?.block_on(async {
        let handle = herd_net::netns::handle_in(None).await?;
        pod_check(&handle, &pa)
            .await
            .map_err(|e| check_failed(format!("pod network differs: {e}")))
    })
}

fn usable_hosts(subnet: Ipv4Net) -> u64 {
    // Network and broadcast are never handed out; neither is the gateway.
    (1u64 << (32 - u32::from(subnet.prefix_len()))).saturating_sub(3)
}

pub(super) fn status(req: &Request) -> Result<(), CniError> {
    let c = &req.parsed.herd;
    let unavailable =
        |msg: String, d: String| CniError::new(ErrorCode::NotAvailable, msg).with_details(d);
    let dir = c.ipam_dir();
    let probe = dir.join(format!(".status-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            unavailable(
                format!("data dir {} is not writable", dir.display()),
                e.to_string(),
            )
        })?;
    match &c.ipam {
        IpamMode::Own => {
            let subnet = c
                .subnet
                .ok_or_else(|| CniError::invalid_config("subnet is required"))?;
            let ipam = Ipam::open(&dir, subnet, c.gateway_for(subnet))
                .map_err(|e| unavailable("ipam state unreadable".into(), e.to_string()))?;
            let used = ipam
                .allocations()
                .map_err(|e| unavailable("ipam state unreadable".into(), e.to_string()))?
                .len();
            let cap = usable_hosts(subnet);
            if u64::try_from(used).unwrap_or(u64::MAX) >= cap {
                return Err(unavailable(
                    format!("no addresses left in {subnet}"),
                    format!("{used} of {cap} allocated"),
                ));
            }
            Ok(())
        }
        IpamMode::Delegate(plugin) => {
            delegate::exec(plugin, Command::Status, &req.env, &req.raw).map(|_| ())
        }
    }
}

pub(super) fn gc(req: &Request) -> Result<(), CniError> {
    let c = &req.parsed.herd;
    let raw = req
        .parsed
        .conf
        .plugin
        .get("cni.dev/valid-attachments")
        .ok_or_else(|| CniError::invalid_config("GC requires cni.dev/valid-attachments"))?;
    let valid: Vec<ValidAttachment> = serde_json::from_value(raw.clone()).map_err(|e| {
        CniError::decode("failed to decode cni.dev/valid-attachments").with_details(e.to_string())
    })?;
    let live: HashSet<(String, String)> = valid
        .into_iter()
        .map(|a| (a.container_id, a.ifname))
        .collect();
    match &c.ipam {
        IpamMode::Own => {
            if let Some(ipam) = open_ipam(c)? {
                ipam.retain(&|id: &str, ifname: &str| {
                    live.contains(&(id.to_string(), ifname.to_string()))
                })?;
            }
            Ok(())
        }
        IpamMode::Delegate(plugin) => {
            delegate::exec(plugin, Command::Gc, &req.env, &req.raw).map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity() {
        assert_eq!(usable_hosts("10.0.0.0/24".parse().unwrap()), 253);
        assert_eq!(usable_hosts("10.0.0.0/30".parse().unwrap()), 1);
    }
}
