//! Node side: the pod bridge, forwarding sysctls and optional masquerade.
//!
//! [`ensure_bridge`] runs on every pod ADD, so its common path is cheap:
//! one link get and one address dump, no writes. The bridge is brought up
//! as the very last step of setup (after sysctls, masquerade and the
//! gateway address), so "bridge up with the gateway address" marks a node
//! that was fully set up. [`apply_node_settings`] re-applies sysctls and
//! masquerade unconditionally (agent start-up).
//!
//! Sysctls: only `net.ipv4.ip_forward=1` is written. `rp_filter` needs no
//! change: pod traffic arrives on the bridge and the route back to the pod
//! subnet is the bridge's connected route, so strict mode passes it.
//!
//! Masquerade uses nftables through `nft -f -` (the binary is the
//! interface; override its path with `HERD_NFT`): table `inet herd`, one
//! chain `masq_<bridge>` hooked at postrouting that masquerades traffic from
//! the subnet to outside it. Turning masquerade off later is not detected on
//! the fast path; call [`remove_masquerade`].

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;
use netlink_packet_route::link::InfoKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::links::{ipv4_addrs, link_by_name, validate_ifname};
use crate::{NetError, NetNs};

/// Root of the sysctl tree as seen by a thread of the target netns.
const PROC_SYS: &str = "/proc/sys";

/// Node bridge configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BridgeConfig {
    pub name: String,
    /// The node's pod CIDR.
    pub subnet: Ipv4Net,
    /// Default: the first host address of `subnet`.
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
    pub hairpin: bool,
    pub masquerade: bool,
    /// Destinations never masqueraded besides `subnet` (in a cluster: the
    /// cluster's pod CIDR and the service CIDR, so pod-to-pod traffic
    /// between nodes keeps its source address).
    pub masquerade_exclude: Vec<Ipv4Net>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            name: "herd0".into(),
            subnet: Ipv4Net::new_assert(Ipv4Addr::new(10, 88, 0, 0), 16),
            gateway: None,
            mtu: 1500,
            hairpin: true,
            masquerade: false,
            masquerade_exclude: Vec::new(),
        }
    }
}

impl BridgeConfig {
    /// The gateway: configured, or the first host of the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(self.subnet.network()).saturating_add(1)))
    }

    /// Check names and ranges; every ADD path calls this first.
    pub fn validate(&self) -> Result<(), NetError> {
        validate_ifname("bridge name", &self.name)?;
        let subnet = self.subnet.trunc();
        if !(8..=30).contains(&subnet.prefix_len()) {
            return Err(NetError::InvalidConfig(format!(
                "subnet {}: prefix must be between /8 and /30",
                self.subnet
            )));
        }
        let gw = self.gateway();
        if !subnet.contains(&gw) || gw == subnet.network() || gw == subnet.broadcast() {
            return Err(NetError::InvalidConfig(format!(
                "gateway {gw} is not a host address of {subnet}"
            )));
        }
        if !(68..=65535).contains(&self.mtu) {
            return Err(NetError::InvalidConfig(format!(
                "mtu {} out of range 68..=65535",
                self.mtu
            )));
        }
        Ok(())
    }
}

/// The bridge as found or made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeInfo {
    pub index: u32,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: [u8; 6],
}

/// Stable locally administered unicast MAC for the bridge, so it does not
/// change as ports come and go.
fn bridge_mac(name: &str) -> [u8; 6] {
    let d = Sha256::digest(format!("herd-bridge:{name}").as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// Make the bridge exist and be up with the gateway address (see module
/// docs for the fast path). `host` is the netns `handle` talks to (None =
/// the caller's); sysctls and nft run there.
pub async fn ensure_bridge(
    handle: &rtnetlink::Handle,
    host: Option<&NetNs>,
    cfg: &BridgeConfig,
) -> Result<BridgeInfo, NetError> {
    cfg.validate()?;
    let gateway = cfg.gateway();
    let prefix_len = cfg.subnet.prefix_len();
    if let Some(link) = link_by_name(handle, &cfg.name).await? {
        check_is_bridge(cfg, host, &link)?;
        if link.up {
            let addrs = ipv4_addrs(handle, link.index).await?;
            if addrs.contains(&(gateway, prefix_len)) {
                return Ok(BridgeInfo {
                    index: link.index,
                    gateway,
                    prefix_len,
                    mac: link.mac,
                });
            }
        }
    }
    apply_node_settings(host, cfg)?;
    setup_bridge(handle, host, cfg).await
}

fn check_is_bridge(
    cfg: &BridgeConfig,
    host: Option<&NetNs>,
    link: &crate::links::LinkState,
) -> Result<(), NetError> {
    if link.kind != Some(InfoKind::Bridge) {
        return Err(NetError::LinkConflict {
            name: cfg.name.clone(),
            netns: host.map_or_else(|| PathBuf::from("(current netns)"), |n| n.path().into()),
            reason: format!("kind is {:?}, not bridge", link.kind),
        });
    }
    Ok(())
}

async fn setup_bridge(
    handle: &rtnetlink::Handle,
    host: Option<&NetNs>,
    cfg: &BridgeConfig,
) -> Result<BridgeInfo, NetError> {
    let gateway = cfg.gateway();
    let prefix_len = cfg.subnet.prefix_len();
    let link = match link_by_name(handle, &cfg.name).await? {
        Some(l) => l,
        None => {
            let msg = rtnetlink::LinkMessageBuilder::<rtnetlink::LinkBridge>::new(&cfg.name)
                .mtu(cfg.mtu)
                .address(bridge_mac(&cfg.name).to_vec())
                .build();
            match handle.link().add(msg).execute().await {
                Ok(()) => {}
                // A concurrent ADD made it first.
                Err(e) if crate::error::errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(NetError::netlink(format!("add bridge {}", cfg.name), e)),
            }
            link_by_name(handle, &cfg.name)
                .await?
                .ok_or_else(|| NetError::LinkNotFound {
                    name: cfg.name.clone(),
                    where_: " after creating it".into(),
                })?
        }
    };
    check_is_bridge(cfg, host, &link)?;
    handle
        .address()
        .add(link.index, gateway.into(), prefix_len)
        .replace()
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("add {gateway}/{prefix_len} to {}", cfg.name), e))?;
    let up = rtnetlink::LinkUnspec::new_with_index(link.index)
        .up()
        .build();
    handle
        .link()
        .set(up)
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("set {} up", cfg.name), e))?;
    Ok(BridgeInfo {
        index: link.index,
        gateway,
        prefix_len,
        mac: link.mac,
    })
}

fn in_ns<T: Send>(host: Option<&NetNs>, f: impl FnOnce() -> T + Send) -> Result<T, NetError> {
    match host {
        Some(ns) => ns.run_scoped(f),
        None => Ok(f()),
    }
}

/// Write a sysctl (relative to /proc/sys) if it differs.
fn set_sysctl(rel: &str, value: &str) -> Result<(), NetError> {
    let path = Path::new(PROC_SYS).join(rel);
    let err = |source| NetError::Sysctl {
        path: path.clone(),
        source,
    };
    if std::fs::read_to_string(&path).map_err(err)?.trim() == value {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(err)
}

/// Apply sysctls (ip_forward=1) and, when configured, masquerade in
/// `host`. Idempotent; always writes what differs.
pub fn apply_node_settings(host: Option<&NetNs>, cfg: &BridgeConfig) -> Result<(), NetError> {
    cfg.validate()?;
    in_ns(host, || set_sysctl("net/ipv4/ip_forward", "1"))??;
    if cfg.masquerade {
        ensure_masquerade(host, cfg)?;
    }
    Ok(())
}

fn chain_name(bridge: &str) -> String {
    let clean: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("masq_{clean}")
}

fn nft_bin() -> PathBuf {
    std::env::var_os("HERD_NFT").map_or_else(|| PathBuf::from("nft"), PathBuf::from)
}

/// Run `nft <args>` with `script` on stdin in `host`; returns stdout.
fn nft(
    host: Option<&NetNs>,
    op: &'static str,
    args: &[&str],
    script: Option<&str>,
) -> Result<String, NetError> {
    let fail = |status: String, stderr: String| NetError::Nft { op, status, stderr };
    in_ns(host, || {
        let mut child = Command::new(nft_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail("spawn".into(), e.to_string()))?;
        if let (Some(s), Some(mut stdin)) = (script, child.stdin.take()) {
            stdin
                .write_all(s.as_bytes())
                .map_err(|e| fail("write stdin".into(), e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail("wait".into(), e.to_string()))?;
        if !out.status.success() {
            return Err(fail(
                out.status.to_string(),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })?
}

/// The nft expression of the destinations never masqueraded: the subnet
/// alone, or an anonymous set of it and the exclusions (a net inside
/// another is dropped: nft refuses overlapping intervals).
fn masquerade_exempt(subnet: Ipv4Net, exclude: &[Ipv4Net]) -> String {
    let mut nets: Vec<Ipv4Net> = std::iter::once(subnet)
        .chain(exclude.iter().map(Ipv4Net::trunc))
        .collect();
    nets.sort();
    nets.dedup();
    let kept: Vec<Ipv4Net> = nets
        .iter()
        .filter(|n| !nets.iter().any(|o| o != *n && o.contains(*n)))
        .copied()
        .collect();
    match kept.as_slice() {
        [one] => one.to_string(),
        many => format!(
            "{{ {} }}",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Install (or refresh, atomically) the masquerade chain for `cfg`.
pub fn ensure_masquerade(host: Option<&NetNs>, cfg: &BridgeConfig) -> Result<(), NetError> {
    cfg.validate()?;
    let chain = chain_name(&cfg.name);
    let subnet = cfg.subnet.trunc();
    let script = format!(
        "table inet herd {{\n  chain {chain} {{\n    type nat hook postrouting priority srcnat; policy accept;\n  }}\n}}\n\
         flush chain inet herd {chain}\n\
         add rule inet herd {chain} ip saddr {subnet} ip daddr != {} masquerade\n",
        masquerade_exempt(subnet, &cfg.masquerade_exclude)
    );
    nft(host, "install masquerade", &["-f", "-"], Some(&script)).map(|_| ())
}

/// Remove the masquerade chain of bridge `bridge` and the `herd` table
/// once it holds no chain. Idempotent.
pub async fn remove_masquerade(host: Option<&NetNs>, bridge: &str) -> Result<(), NetError> {
    validate_ifname("bridge name", bridge)?;
    let chain = chain_name(bridge);
    let listed = match nft(host, "list table", &["list", "table", "inet", "herd"], None) {
        Ok(s) => s,
        Err(NetError::Nft { stderr, .. }) if stderr.contains("No such file") => return Ok(()),
        Err(e) => return Err(e),
    };
    let has_chain = |name: &str| {
        listed.lines().any(|l| {
            l.trim()
                .strip_prefix("chain ")
                .is_some_and(|r| r.trim_end_matches([' ', '{']) == name)
        })
    };
    let others = listed
        .lines()
        .filter(|l| l.trim().starts_with("chain "))
        .count()
        - usize::from(has_chain(&chain));
    if others == 0 {
        nft(
            host,
            "delete table",
            &["delete", "table", "inet", "herd"],
            None,
        )?;
    } else if has_chain(&chain) {
        nft(
            host,
            "delete chain",
            &["delete", "chain", "inet", "herd", &chain],
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let cfg = BridgeConfig::default();
        assert_eq!(cfg.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        cfg.validate().unwrap();
        let bad = BridgeConfig {
            name: "a-name-that-is-too-long".into(),
            ..cfg.clone()
        };
        assert!(matches!(bad.validate(), Err(NetError::InvalidName { .. })));
        let bad = BridgeConfig {
            gateway: Some(Ipv4Addr::new(10, 89, 0, 1)),
            ..cfg.clone()
        };
        assert!(matches!(bad.validate(), Err(NetError::InvalidConfig(_))));
        let bad = BridgeConfig { mtu: 10, ..cfg };
        assert!(matches!(bad.validate(), Err(NetError::InvalidConfig(_))));
    }

    #[test]
    fn config_from_partial_json() {
        let cfg: BridgeConfig =
            serde_json::from_str(r#"{"subnet":"10.1.2.0/24","masquerade":true}"#).unwrap();
        assert_eq!(
            masquerade_exempt(cfg.subnet, &[]),
            "10.1.2.0/24",
            "no exclusions: the subnet alone"
        );
        let excl = [
            "10.1.0.0/16".parse().unwrap(),
            "10.96.0.0/16".parse().unwrap(),
        ];
        assert_eq!(
            masquerade_exempt(cfg.subnet, &excl),
            "{ 10.1.0.0/16, 10.96.0.0/16 }"
        );
        assert_eq!(cfg.name, "herd0");
        assert_eq!(cfg.gateway(), Ipv4Addr::new(10, 1, 2, 1));
        assert!(cfg.masquerade && cfg.hairpin);
    }

    #[test]
    fn bridge_mac_is_stable_and_local() {
        let m = bridge_mac("herd0");
        assert_eq!(m, bridge_mac("herd0"));
        assert_eq!(m[0] & 0x03, 0x02);
    }
}
