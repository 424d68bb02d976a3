//! Network configuration (`NetConf`) and configuration lists.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// DNS settings, in configurations and results alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The `ipam` dictionary: `type` names the IPAM plugin; everything else is
/// that plugin's business and is kept verbatim.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub plugin_type: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One plugin's network configuration, as received on stdin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(rename = "ipMasq", default, skip_serializing_if = "Option::is_none")]
    pub ip_masq: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(
        rename = "runtimeConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime_config: Option<Value>,
    /// Kept raw: its shape depends on `cniVersion`; decode it with
    /// [`crate::types::CniResult::from_value`].
    #[serde(
        rename = "prevResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_result: Option<Value>,
    /// Plugin-specific and unknown keys, preserved.
    #[serde(flatten)]
    pub plugin: Map<String, Value>,
}

/// A configuration list (`.conflist`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfList {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// 1.1.0: versions the list may be run with; the runtime picks one.
    #[serde(rename = "cniVersions", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    pub name: String,
    #[serde(rename = "disableCheck", default)]
    pub disable_check: bool,
    #[serde(rename = "disableGC", default)]
    pub disable_gc: bool,
    pub plugins: Vec<Map<String, Value>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One entry of GC's `cni.dev/valid-attachments`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The spec's charset for network names and container ids: an alphanumeric
/// first character, then alphanumerics, `_`, `.` or `-`.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_roundtrip() {
        let raw = serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "herd-cni",
            "bridge": "b0", "custom": {"x": [1, 2]},
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"},
            "args": {"labels": {"a": "b"}}
        });
        let c: NetConf = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(c.plugin["bridge"], "b0");
        assert_eq!(
            c.ipam.as_ref().unwrap().plugin_type.as_deref(),
            Some("host-local")
        );
        assert_eq!(serde_json::to_value(&c).unwrap(), raw);
    }

    #[test]
    fn names() {
        assert!(valid_name("a"));
        assert!(valid_name("pod-1_x.y"));
        assert!(!valid_name(""));
        assert!(!valid_name("-a"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("../x"));
    }
}
