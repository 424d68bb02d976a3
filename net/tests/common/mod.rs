//! Shared helpers for herd-net's root tests: skip guard, unique names,
//! drop guards that delete every namespace by exact name.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use herd_net::NetNs;

pub const NETNS_DIR: &str = "/run/netns";

pub fn root_or_skip(test: &str) -> bool {
    herd_integration::root_or_skip(test, "netns, netlink")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A netns under /run/netns deleted (by exact name) on drop.
pub struct NsGuard {
    pub name: String,
    pub ns: Option<NetNs>,
}

impl NsGuard {
    pub fn new(prefix: &str) -> NsGuard {
        let name = unique(prefix);
        let ns = NetNs::create(Path::new(NETNS_DIR), &name).unwrap();
        NsGuard { name, ns: Some(ns) }
    }

    pub fn ns(&self) -> &NetNs {
        self.ns.as_ref().unwrap()
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Open another handle on the same namespace.
    pub fn open(&self) -> NetNs {
        NetNs::open(&self.path()).unwrap()
    }

    /// Drop our fd and delete the bind mount now.
    pub fn delete(&mut self) {
        self.ns = None;
        NetNs::delete(Path::new(NETNS_DIR), &self.name).unwrap();
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        self.ns = None;
        let _ = NetNs::delete(Path::new(NETNS_DIR), &self.name);
    }
}

/// `ip -n <ns> -j <args>` parsed (independent view; tests only).
/// `ip -n <ns> <args>`, which must succeed.
pub fn ip(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ip_json(ns: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["-n", ns, "-j"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {ns} -j {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    if s.trim().is_empty() {
        return serde_json::Value::Array(vec![]);
    }
    serde_json::from_str(&s).unwrap()
}

/// Does link `name` exist in netns `ns` (per iproute2)?
pub fn ip_link_exists(ns: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", "dev", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// Poll `cond` until true or `deadline` passes; returns elapsed time.
pub fn poll_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
