//! Decoding stdin into a validated request.
//!
//! Order (as libcni's skel does it): bounded read, JSON syntax (code 6),
//! `cniVersion` supported (code 1) and allowed for the verb (CHECK needs
//! 0.4.0+, STATUS and GC need 1.1.0+: code 1), the typed configuration
//! (wrong JSON types: code 6), then values (code 7; a value of a known field
//! that herd-cni cannot serve, such as an IPv6 subnet: code 2).
//! Unknown keys are ignored, as the spec allows.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
use serde_json::Value;

use super::env::{Command, valid_ifname};
use crate::error::CniError;
use crate::types::{Dns, NetConf, valid_name};
use crate::version::CniVersion;

/// Largest accepted stdin.
pub const MAX_STDIN: usize = 1 << 20;
/// Default state directory; the IPAM state of a network lives in
/// `<dataDir>/<network name>`.
/// Allocations live on tmpfs: pods (and their network namespaces) do not
/// survive a reboot, so neither should their addresses; and an fsync on
/// tmpfs is free where on disk it costs several ms per ADD.
pub const DEFAULT_DATA_DIR: &str = "/run/herd/cni";

/// Where addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpamMode {
    /// herd_net::Ipam over `subnet`, state in `<dataDir>/<name>`.
    Own,
    /// Delegate to the IPAM plugin of this name, found in CNI_PATH.
    Delegate(String),
}

/// herd-cni's validated settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HerdConf {
    pub network: String,
    pub bridge: String,
    /// Required with own IPAM; with a delegated IPAM it may be derived from
    /// the address the IPAM plugin returns.
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
    pub hairpin: bool,
    pub masquerade: bool,
    /// DEL deletes the pod's veth at once (`"deleteLink": true`) instead of
    /// downing it and leaving it for the kernel to reap with the netns.
    pub delete_link: bool,
    pub data_dir: PathBuf,
    pub ipam: IpamMode,
    pub dns: Dns,
}

impl HerdConf {
    /// IPAM state directory of this network.
    pub fn ipam_dir(&self) -> PathBuf {
        self.data_dir.join(&self.network)
    }

    /// The configured gateway, or the first host of `subnet`.
    pub fn gateway_for(&self, subnet: Ipv4Net) -> Ipv4Addr {
        self.gateway
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1)))
    }
}

#[derive(Deserialize)]
struct RawHerd {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    mtu: Option<u64>,
    #[serde(rename = "hairpinMode", default)]
    hairpin: Option<bool>,
    #[serde(rename = "deleteLink", default)]
    delete_link: Option<bool>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
}

/// A decoded, validated request body.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub version: CniVersion,
    pub conf: NetConf,
    pub herd: HerdConf,
}

/// Only the version, for VERSION and for choosing the error's cniVersion.
pub fn peek_version(input: &[u8]) -> Option<CniVersion> {
    let v: Value = serde_json::from_slice(input).ok()?;
    CniVersion::parse(v.get("cniVersion")?.as_str()?)
}

/// Decode and validate stdin for `command`.
pub fn parse(command: Command, input: &[u8]) -> Result<Parsed, CniError> {
    if input.len() > MAX_STDIN {
        return Err(CniError::decode(format!(
            "network configuration larger than {MAX_STDIN} bytes"
        )));
    }
    let value: Value = serde_json::from_slice(input).map_err(|e| {
        CniError::decode("failed to decode network configuration").with_details(e.to_string())
    })?;
    let Some(obj) = value.as_object() else {
        return Err(CniError::decode(
            "network configuration is not a JSON object",
        ));
    };
    let version = match obj.get("cniVersion") {
        None => {
            return Err(
                CniError::incompatible_version("network configuration has no cniVersion")
                    .with_details(supported()),
            );
        }
        Some(Value::String(s)) => CniVersion::parse(s).ok_or_else(|| {
            CniError::incompatible_version(format!("incompatible CNI version {s:?}"))
                .with_details(supported())
        })?,
        Some(other) => {
            return Err(CniError::decode(format!(
                "cniVersion must be a string, got {other}"
            )));
        }
    };
    match command {
        Command::Check if !version.supports_check() => {
            return Err(CniError::incompatible_version(format!(
                "config version {version} does not allow CHECK"
            ))
            .with_details("CHECK needs cniVersion 0.4.0 or later"));
        }
        Command::Status | Command::Gc if !version.supports_status_gc() => {
            return Err(CniError::incompatible_version(format!(
                "config version {version} does not allow {}",
                command.as_str()
            ))
            .with_details("STATUS and GC need cniVersion 1.1.0 or later"));
        }
        _ => {}
    }
    let conf: NetConf = serde_json::from_value(value.clone()).map_err(|e| {
        CniError::decode("failed to decode network configuration").with_details(e.to_string())
    })?;
    if !valid_name(&conf.name) {
        return Err(CniError::invalid_config(format!(
            "invalid network name {:?}",
            conf.name
        ))
        .with_details(
            "must start with an alphanumeric character, followed by alphanumerics, '_', '.' or '-'",
        ));
    }
    if conf.plugin_type.is_empty() {
        return Err(CniError::invalid_config(
            "network configuration has no type",
        ));
    }
    let herd = herd_conf(&conf)?;
    Ok(Parsed {
        version,
        conf,
        herd,
    })
}

fn supported() -> String {
    format!(
        "plugin supports [{}]",
        CniVersion::supported_strings().join(" ")
    )
}

fn herd_conf(conf: &NetConf) -> Result<HerdConf, CniError> {
    let raw: RawHerd = serde_json::from_value(Value::Object(conf.plugin.clone())).map_err(|e| {
        CniError::decode("failed to decode herd-cni settings").with_details(e.to_string())
    })?;
    let bridge = raw.bridge.unwrap_or_else(|| "herd0".to_string());
    if !valid_ifname(&bridge) {
        return Err(CniError::invalid_config(format!(
            "invalid bridge name {bridge:?}"
        )));
    }
    let ipam = match conf.ipam.as_ref().and_then(|i| i.plugin_type.as_deref()) {
        Some(t) if !t.is_empty() => {
            if !valid_name(t) {
                return Err(CniError::invalid_config(format!("invalid ipam type {t:?}")));
            }
            IpamMode::Delegate(t.to_string())
        }
        _ => IpamMode::Own,
    };
    let subnet = raw.subnet.as_deref().map(parse_subnet).transpose()?;
    if subnet.is_none() && ipam == IpamMode::Own {
        return Err(CniError::invalid_config(
            "subnet is required unless ipam.type names an IPAM plugin",
        ));
    }
    let gateway = match raw.gateway.as_deref() {
        None => None,
        Some(g) => Some(parse_gateway(g, subnet)?),
    };
    let mtu = raw.mtu.unwrap_or(1500);
    if !(68..=65535).contains(&mtu) {
        return Err(CniError::invalid_config(format!(
            "mtu {mtu} out of range 68..=65535"
        )));
    }
    let data_dir = PathBuf::from(raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()));
    if !data_dir.is_absolute() {
        return Err(CniError::invalid_config(format!(
            "dataDir {} is not an absolute path",
            data_dir.display()
        )));
    }
    Ok(HerdConf {
        network: conf.name.clone(),
        bridge,
        subnet,
        gateway,
        // Checked against 65535 above.
        mtu: u32::try_from(mtu).unwrap_or(1500),
        hairpin: raw.hairpin.unwrap_or(true),
        delete_link: raw.delete_link.unwrap_or(false),
        masquerade: conf.ip_masq.unwrap_or(false),
        data_dir,
        ipam,
        dns: conf.dns.clone().unwrap_or_default(),
    })
}

fn parse_subnet(s: &str) -> Result<Ipv4Net, CniError> {
    let net: IpNet = s
        .parse()
        .map_err(|_| CniError::invalid_config(format!("invalid subnet {s:?}")))?;
    let IpNet::V4(v4) = net else {
        return Err(CniError::unsupported_field(
            "subnet",
            s,
            "herd-cni supports IPv4 subnets only",
        ));
    };
    if v4.prefix_len() > 30 {
        return Err(CniError::invalid_config(format!(
            "subnet {s} is too small (prefix longer than /30)"
        )));
    }
    if v4.addr() != v4.network() {
        return Err(CniError::invalid_config(format!(
            "subnet {s} has host bits set (network is {})",
            v4.trunc()
        )));
    }
    Ok(v4)
}

fn parse_gateway(s: &str, subnet: Option<Ipv4Net>) -> Result<Ipv4Addr, CniError> {
    let ip: IpAddr = s
        .parse()
        .map_err(|_| CniError::invalid_config(format!("invalid gateway {s:?}")))?;
    let IpAddr::V4(gw) = ip else {
        return Err(CniError::unsupported_field(
            "gateway",
            s,
            "herd-cni supports IPv4 only",
        ));
    };
    if let Some(net) = subnet
        && (!net.contains(&gw) || gw == net.network() || gw == net.broadcast())
    {
        return Err(CniError::invalid_config(format!(
            "gateway {gw} is not a host address of subnet {net}"
        )));
    }
    Ok(gw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(cmd: Command, v: Value) -> Result<Parsed, CniError> {
        parse(cmd, v.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({"cniVersion": "1.0.0", "name": "net1", "type": "herd-cni",
               "subnet": "10.88.0.0/24"})
    }

    #[test]
    fn defaults() {
        let r = p(Command::Add, base()).unwrap();
        assert_eq!(r.herd.bridge, "herd0");
        assert_eq!(r.herd.mtu, 1500);
        assert!(r.herd.hairpin);
        assert!(!r.herd.masquerade);
        assert_eq!(r.herd.ipam, IpamMode::Own);
        assert_eq!(r.herd.ipam_dir(), PathBuf::from("/run/herd/cni/net1"));
        assert_eq!(
            r.herd.gateway_for(r.herd.subnet.unwrap()),
            "10.88.0.1".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn codes() {
        let code = |cmd, v: Value| p(cmd, v).unwrap_err().code.code();
        assert_eq!(parse(Command::Add, b"{nope").unwrap_err().code.code(), 6);
        assert_eq!(parse(Command::Add, b"[]").unwrap_err().code.code(), 6);
        let mut v = base();
        v["cniVersion"] = json!("0.2.0");
        assert_eq!(code(Command::Add, v), 1);
        let mut v = base();
        v["cniVersion"] = json!("0.3.1");
        assert_eq!(code(Command::Check, v), 1);
        let mut v = base();
        v["cniVersion"] = json!("1.0.0");
        assert_eq!(code(Command::Status, v.clone()), 1);
        assert_eq!(code(Command::Gc, v), 1);
        let mut v = base();
        v["subnet"] = json!("10.88.0.0/33");
        assert_eq!(code(Command::Add, v), 7);
        let mut v = base();
        v["subnet"] = json!("fd00::/64");
        assert_eq!(code(Command::Add, v), 2);
        let mut v = base();
        v["mtu"] = json!("big");
        assert_eq!(code(Command::Add, v), 6);
        let mut v = base();
        v["mtu"] = json!(10);
        assert_eq!(code(Command::Add, v), 7);
        let mut v = base();
        v["gateway"] = json!("10.99.0.1");
        assert_eq!(code(Command::Add, v), 7);
        let mut v = base();
        v["name"] = json!("../etc");
        assert_eq!(code(Command::Add, v), 7);
        let mut v = base();
        v.as_object_mut().unwrap().remove("subnet");
        assert_eq!(code(Command::Add, v.clone()), 7);
        v["ipam"] = json!({"type": "host-local", "subnet": "10.1.0.0/24"});
        assert_eq!(
            p(Command::Add, v).unwrap().herd.ipam,
            IpamMode::Delegate("host-local".into())
        );
    }
}
