//! The CNI invoker: runs any network configuration list the way a container
//! runtime does (CNI spec 1.1.0, "Execution of Network Configurations").
//!
//! - ADD runs the plugins in order; each gets its own config plus the list's
//!   `name` and `cniVersion`, the previous plugin's result as `prevResult`,
//!   and `runtimeConfig` holding only the capabilities it declares. The first
//!   error stops the chain and is returned (the caller then runs DEL, as the
//!   spec expects). The final result is cached durably before `add` returns;
//!   if that write fails, `add` fails too (and the caller runs DEL).
//! - DEL runs the plugins in reverse with the cached result as `prevResult`
//!   (cniVersion >= 0.4.0); a missing cache entry still runs DEL. The entry
//!   is removed only when every plugin succeeded. DEL is idempotent.
//! - CHECK (>= 0.4.0; a no-op with `disableCheck`) runs the plugins in order
//!   with the cached result; without one it fails with
//!   [`InvokeError::NoCachedResult`].
//! - STATUS (>= 1.1.0; older lists succeed without running anything, like
//!   libcni) stops at the first plugin that reports an error.
//! - GC (no-op with `disableGC`) first runs DEL for every cached attachment of
//!   the network that is not in the valid set (with the config cached at its
//!   ADD) and, for lists >= 1.1.0, then runs GC on every plugin with
//!   `cni.dev/valid-attachments`. It goes through every step and returns all
//!   failures together.
//! - VERSION is asked of each plugin once per invoker before its first ADD;
//!   a list version a plugin does not support is refused before anything runs.
//!
//! Plugins run with a clean environment (`PATH` and the `CNI_*` variables
//! only), under a timeout that kills their process group, optionally inside
//! a "host" network namespace, opened once by the constructor (so a node
//! simulated in a netns, or a test, never touches the caller's namespace).
//! Every plugin error keeps the exit status, the plugin's error JSON and the
//! tail of its stderr.
//!
//! The spec forbids concurrent operations on one container; operations on
//! different containers may run concurrently on one invoker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), herd_cni::invoke::InvokeError> {
//! use herd_cni::invoke::{Attachment, CniInvoker, InvokerConfig};
//! use std::path::{Path, PathBuf};
//!
//! let inv = CniInvoker::new(InvokerConfig {
//!     conf_dir: PathBuf::from("/etc/cni/net.d"),
//!     host_netns: Some(PathBuf::from("/run/netns/node1")),
//!     ..InvokerConfig::default()
//! })?;
//! let mut pod = Attachment::new("pod1", Some(Path::new("/run/netns/pod1")), "eth0");
//! pod.runtime_config.insert(
//!     "portMappings".into(),
//!     serde_json::json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
//! );
//! let result = inv.add(&pod).await?; // final result, also cached
//! inv.check(&pod).await?;
//! inv.del(&pod).await?; // reverse order, prevResult from the cache
//! # let _ = result;
//! # Ok(())
//! # }
//! ```

mod cache;
mod conf;
mod error;
mod exec;
mod ops;
mod version;

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use cache::{CACHE_KIND, CachedAttachment, ResultCache};
pub use conf::{MAX_VERSION, NetworkConfigList, PluginConfig};
pub use error::{Exit, InvokeError, PluginErrorReply, PluginFailure, STDERR_KEEP};
pub use exec::{MAX_STDOUT, find_plugin};
pub use version::SpecVersion;

/// An attachment GC must keep (a `cni.dev/valid-attachments` entry): the
/// crate's shared type.
pub use crate::types::ValidAttachment;

/// Where configs, plugins and the cache are, and how plugins run.
#[derive(Debug, Clone)]
pub struct InvokerConfig {
    /// Directory of `.conflist` / `.conf` / `.json` files (e.g. `/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Network to use; `None` = the first file in lexical order.
    pub network: Option<String>,
    /// Plugin search path, in order (`CNI_PATH`).
    pub plugin_path: Vec<PathBuf>,
    /// Result cache root (entries under `results/`).
    pub cache_dir: PathBuf,
    /// Network namespace to run the plugins in (`None` = the caller's).
    pub host_netns: Option<PathBuf>,
    /// Limit for each plugin call.
    pub timeout: Duration,
}

impl Default for InvokerConfig {
    fn default() -> Self {
        InvokerConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            network: None,
            plugin_path: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cache_dir: PathBuf::from("/var/lib/herd/cni"),
            host_netns: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// One attachment of a container to the network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attachment {
    /// `CNI_CONTAINERID`: alphanumeric first, then alphanumerics, `_`, `.`, `-`.
    pub container_id: String,
    /// `CNI_NETNS`: required for ADD and CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`: a valid Linux interface name.
    pub ifname: String,
    /// `CNI_ARGS` pairs (`K=V;K2=V2`).
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`, `ips`, `mac`, …);
    /// each plugin gets only those its `capabilities` enable.
    pub runtime_config: Map<String, Value>,
}

impl Attachment {
    /// An attachment with no args and no runtime config.
    pub fn new(container_id: &str, netns: Option<&Path>, ifname: &str) -> Self {
        Attachment {
            container_id: container_id.to_owned(),
            netns: netns.map(Path::to_owned),
            ifname: ifname.to_owned(),
            ..Attachment::default()
        }
    }
}

/// What GC did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Stale cached attachments that were deleted (DEL ran, entry removed).
    pub deleted: Vec<ValidAttachment>,
    /// Whether the plugins' own GC ran (list version >= 1.1.0).
    pub plugins_gc: bool,
}

/// A plugin's answer to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Version of the reply.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Spec versions the plugin supports.
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

/// Runs one network configuration list. See the module docs.
#[derive(Debug)]
pub struct CniInvoker {
    network: NetworkConfigList,
    plugin_path: Vec<PathBuf>,
    cache: ResultCache,
    host_netns: Option<OwnedFd>,
    timeout: Duration,
    /// Binaries whose VERSION answer accepted the list's version.
    versions_ok: Mutex<HashSet<PathBuf>>,
}

impl CniInvoker {
    /// Loads the network from `cfg.conf_dir` and opens `cfg.host_netns`.
    pub fn new(cfg: InvokerConfig) -> Result<Self, InvokeError> {
        let network = NetworkConfigList::find(&cfg.conf_dir, cfg.network.as_deref())?;
        Self::with_network(cfg, network)
    }

    /// An invoker for a network given directly (`cfg.conf_dir` and `cfg.network` unused).
    pub fn with_network(
        cfg: InvokerConfig,
        network: NetworkConfigList,
    ) -> Result<Self, InvokeError> {
        let host_netns = match &cfg.host_netns {
            Some(p) => Some(OwnedFd::from(
                File::open(p).map_err(InvokeError::io("open host netns", p))?,
            )),
            None => None,
        };
        Ok(CniInvoker {
            network,
            plugin_path: cfg.plugin_path,
            cache: ResultCache::new(&cfg.cache_dir),
            host_netns,
            timeout: cfg.timeout,
            versions_ok: Mutex::new(HashSet::new()),
        })
    }

    /// The network this invoker runs.
    pub fn network(&self) -> &NetworkConfigList {
        &self.network
    }

    /// The result cache.
    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    /// The cached ADD result of one attachment.
    pub fn cached(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CachedAttachment>, InvokeError> {
        check_container_id(container_id)?;
        check_ifname(ifname)?;
        self.cache.read(&self.network.name, container_id, ifname)
    }
}

/// Container IDs: alphanumeric first, then alphanumerics, `_`, `.`, `-`.
fn check_container_id(id: &str) -> Result<(), InvokeError> {
    let bad = |reason: String| InvokeError::InvalidAttachment {
        field: "container_id",
        reason,
    };
    let mut chars = id.chars();
    match chars.next() {
        None => return Err(bad("must not be empty".into())),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(bad(format!("{id:?} must start with a letter or digit")));
        }
        _ => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(bad(format!(
            "{id:?} contains {c:?} (allowed: letters, digits, _ . -)"
        )));
    }
    Ok(())
}

/// Interface names: 1-15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
fn check_ifname(name: &str) -> Result<(), InvokeError> {
    let bad = |reason: String| InvokeError::InvalidAttachment {
        field: "ifname",
        reason,
    };
    if name.is_empty() {
        return Err(bad("must not be empty".into()));
    }
    if name.len() > 15 {
        return Err(bad(format!("{name:?} is longer than 15 bytes")));
    }
    if name == "." || name == ".." {
        return Err(bad(format!("{name:?} is not an interface name")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || *c == '\0' || c.is_whitespace())
    {
        return Err(bad(format!("{name:?} contains {c:?}")));
    }
    Ok(())
}

/// `CNI_ARGS`: keys and values without `;`, keys without `=`, keys not empty.
fn check_args(args: &[(String, String)]) -> Result<(), InvokeError> {
    for (k, v) in args {
        if k.is_empty() || k.contains(['=', ';', '\0']) || v.contains([';', '\0']) {
            return Err(InvokeError::InvalidAttachment {
                field: "args",
                reason: format!("{k:?}={v:?} cannot be written as CNI_ARGS"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_rules() {
        assert!(check_container_id("abc-1_2.3").is_ok());
        for bad in ["", "-a", "a/b", "a b", "ä"] {
            assert!(check_container_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("123456789012345").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "1234567890123456"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
        assert!(check_args(&[("K".into(), "V=x".into())]).is_ok());
        for (k, v) in [("", "v"), ("a=b", "v"), ("k", "a;b")] {
            assert!(check_args(&[(k.into(), v.into())]).is_err(), "{k:?}={v:?}");
        }
    }

    #[test]
    fn valid_attachment_json() {
        let v = ValidAttachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"containerID": "c1", "ifname": "eth0"})
        );
    }
}
