//! Linux namespaces and sysctls of a container.
//!
//! Namespaces: pid, network, ipc, uts from the sandbox (New: no path, Join:
//! the held path, Host: omitted), mount always new, cgroup new on v2 hosts.
//! Sysctls come from the pod; a `net.*` sysctl with the host's network, or
//! an IPC one (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`)
//! with the host's IPC namespace, would change the host and is refused, as
//! is any sysctl the kernel does not namespace (`vm.*`, `kernel.panic`…) and
//! `kernel.hostname`/`kernel.domainname` (the pod sets the hostname).

use std::collections::HashMap;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::{NamespaceMode, SandboxNamespaces, SpecError};
use crate::types::PodSandboxConfig;

fn ns(typ: LinuxNamespaceType, mode: &NamespaceMode) -> Option<LinuxNamespace> {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    match mode {
        NamespaceMode::Host => return None,
        NamespaceMode::New => {}
        NamespaceMode::Join(path) => {
            n.set_path(Some(path.clone()));
        }
    }
    Some(n)
}

pub(super) fn build_namespaces(s: &SandboxNamespaces, cgroup_v2: bool) -> Vec<LinuxNamespace> {
    let new = NamespaceMode::New;
    let mut out: Vec<LinuxNamespace> = [
        ns(LinuxNamespaceType::Pid, &s.pid),
        ns(LinuxNamespaceType::Network, &s.network),
        ns(LinuxNamespaceType::Ipc, &s.ipc),
        ns(LinuxNamespaceType::Uts, &s.uts),
        ns(LinuxNamespaceType::Mount, &new),
    ]
    .into_iter()
    .flatten()
    .collect();
    if cgroup_v2 {
        out.extend(ns(LinuxNamespaceType::Cgroup, &new));
    }
    out
}

/// The namespaced sysctls a pod may set (runc also accepts the UTS ones).
fn is_namespaced(name: &str) -> bool {
    name.starts_with("net.") || is_ipc_sysctl(name)
}

fn is_ipc_sysctl(name: &str) -> bool {
    name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
        || name.starts_with("fs.mqueue.")
}

pub(super) fn build_sysctls(
    pod: &PodSandboxConfig,
    s: &SandboxNamespaces,
) -> Result<Option<HashMap<String, String>>, SpecError> {
    if pod.sysctls.is_empty() {
        return Ok(None);
    }
    let mut out = HashMap::with_capacity(pod.sysctls.len());
    for (name, value) in &pod.sysctls {
        let err = |reason| SpecError::Sysctl {
            name: name.clone(),
            reason,
        };
        if name.is_empty() || name.contains('\0') || name.contains("..") {
            return Err(err("invalid name"));
        }
        if name == "kernel.hostname" || name == "kernel.domainname" {
            return Err(err("set the hostname through the pod, not a sysctl"));
        }
        if !is_namespaced(name) {
            return Err(err("not a namespaced sysctl: it would change the host"));
        }
        if name.starts_with("net.") && s.network == NamespaceMode::Host {
            return Err(err("net.* sysctls are not allowed with the host's network"));
        }
        if is_ipc_sysctl(name) && s.ipc == NamespaceMode::Host {
            return Err(err(
                "IPC sysctls are not allowed with the host's IPC namespace",
            ));
        }
        out.insert(name.clone(), value.clone());
    }
    Ok(Some(out))
}
