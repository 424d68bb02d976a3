//! Results (ADD output, prevResult, IPAM output) in every supported version.
//!
//! [`CniResult`] is a superset of all supported shapes. [`CniResult::to_value`]
//! writes exactly the fields of the requested version: `ips[].version` for
//! 0.3.x/0.4.0 and never for 1.x; the 1.1.0-only attributes are dropped for
//! older versions. [`CniResult::from_value`] reads any supported version.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::Dns;
use crate::error::CniError;
use crate::version::CniVersion;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// 1.1.0
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6"; present only before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

/// A CNI result in any supported version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// Output of the VERSION verb.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

impl CniResult {
    pub fn new(version: CniVersion) -> CniResult {
        CniResult {
            cni_version: version.as_str().to_string(),
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: Dns::default(),
        }
    }

    /// Decode a result of any supported version (prevResult, IPAM output).
    /// Unsupported `cniVersion` → code 1; bad shape → code 6; an `ips`
    /// entry whose `version` contradicts its address → code 6.
    pub fn from_value(v: &Value) -> Result<CniResult, CniError> {
        let version = v.get("cniVersion").and_then(Value::as_str).unwrap_or("");
        if CniVersion::parse(version).is_none() {
            return Err(CniError::incompatible_version(format!(
                "incompatible CNI version: result has cniVersion {version:?}"
            ))
            .with_details(format!(
                "supported: {}",
                CniVersion::supported_strings().join(", ")
            )));
        }
        let r: CniResult = serde_json::from_value(v.clone())
            .map_err(|e| CniError::decode("failed to decode result").with_details(e.to_string()))?;
        for ip in &r.ips {
            if let Some(fam) = &ip.version {
                let want = if ip.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                };
                if fam != want {
                    return Err(CniError::decode(format!(
                        "ips entry {} has version {fam:?}",
                        ip.address
                    )));
                }
            }
            if let Some(i) = ip.interface
                && i >= r.interfaces.len()
            {
                return Err(CniError::decode(format!(
                    "ips entry {} names interface {i}, result has {}",
                    ip.address,
                    r.interfaces.len()
                )));
            }
        }
        Ok(r)
    }

    /// This result expressed in `version` (fields added or dropped).
    pub fn convert(&self, version: CniVersion) -> CniResult {
        let mut r = self.clone();
        r.cni_version = version.as_str().to_string();
        for ip in &mut r.ips {
            ip.version = version.ips_have_version().then(|| {
                if ip.address.addr().is_ipv4() {
                    "4".to_string()
                } else {
                    "6".to_string()
                }
            });
        }
        if !version.supports_status_gc() {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for rt in &mut r.routes {
                rt.mtu = None;
                rt.advmss = None;
                rt.priority = None;
                rt.table = None;
                rt.scope = None;
            }
        }
        r
    }

    /// The JSON of this result in `version`.
    pub fn to_value(&self, version: CniVersion) -> Value {
        // Serializing plain strings, numbers and ipnet values cannot fail.
        serde_json::to_value(self.convert(version)).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        let mut r = CniResult::new(CniVersion::V1_1_0);
        r.interfaces.push(Interface {
            name: "eth0".into(),
            mac: Some("02:00:00:00:00:01".into()),
            mtu: Some(1500),
            sandbox: Some("/run/netns/x".into()),
            ..Default::default()
        });
        r.ips.push(IpConfig {
            version: None,
            address: "10.1.0.2/24".parse().unwrap(),
            gateway: Some("10.1.0.1".parse().unwrap()),
            interface: Some(0),
        });
        r.routes.push(Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some("10.1.0.1".parse().unwrap()),
            mtu: None,
            advmss: None,
            priority: Some(5),
            table: None,
            scope: None,
        });
        r
    }

    #[test]
    fn version_field_only_before_1_0() {
        let r = sample();
        for v in CniVersion::ALL {
            let j = r.to_value(v);
            assert_eq!(j["cniVersion"], v.as_str());
            if v.ips_have_version() {
                assert_eq!(j["ips"][0]["version"], "4");
            } else {
                assert!(j["ips"][0].get("version").is_none());
            }
            assert_eq!(
                j["interfaces"][0].get("mtu").is_some(),
                v.supports_status_gc()
            );
            assert_eq!(
                j["routes"][0].get("priority").is_some(),
                v.supports_status_gc()
            );
            let back = CniResult::from_value(&j).unwrap();
            assert_eq!(back.convert(v), r.convert(v));
        }
    }

    #[test]
    fn bad_results() {
        let e = CniResult::from_value(&json!({"cniVersion": "9.9.9"})).unwrap_err();
        assert_eq!(e.code.code(), 1);
        let e = CniResult::from_value(&json!({"cniVersion": "0.4.0",
            "ips": [{"version": "6", "address": "10.0.0.1/24"}]}))
        .unwrap_err();
        assert_eq!(e.code.code(), 6);
        let e = CniResult::from_value(&json!({"cniVersion": "1.0.0",
            "ips": [{"address": "10.0.0.1/24", "interface": 3}]}))
        .unwrap_err();
        assert_eq!(e.code.code(), 6);
        let e = CniResult::from_value(&json!({"cniVersion": "1.0.0", "ips": [{"address": 5}]}))
            .unwrap_err();
        assert_eq!(e.code.code(), 6);
    }
}
