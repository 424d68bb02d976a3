//! The node's own `Node` object: registered (created, or its status
//! refreshed) when the agent starts, as the kubelet registers itself.
//!
//! Capacity is read from the host (CPUs the agent may use, `MemTotal` from
//! `<proc_root>/meminfo`, 110 pods as the kubelet's default); allocatable
//! equals capacity (no reservations yet). The `Ready` condition is `True`
//! while this agent runs; in a cluster, the membership layer sets it to
//! `Unknown` when gossip declares the node down (the node lifecycle
//! controller then taints it and evicts its pods).

use std::net::IpAddr;
use std::path::Path;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::Resource;
use crate::store::{Datastore, Key, StoreError, update_with};

/// The kubelet's default `maxPods`.
pub const MAX_PODS: u32 = 110;

/// Creates this node's `Node` object or refreshes its status, labels and
/// addresses (spec fields others own, such as taints and podCIDR, are
/// kept).
pub fn register(
    store: &dyn Datastore,
    node_name: &str,
    host_ip: Option<IpAddr>,
    proc_root: &Path,
    now: Timestamp,
) -> Result<Value, StoreError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = mem_total(proc_root).unwrap_or(0);
    let resources = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", memory / 1024),
        "pods": MAX_PODS.to_string(),
    });
    let time = now.to_string();
    let status = json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "herd agent is posting ready status",
            "lastHeartbeatTime": time, "lastTransitionTime": time,
        }],
        "addresses": addresses(node_name, host_ip),
        "nodeInfo": {
            "architecture": std::env::consts::ARCH, "operatingSystem": std::env::consts::OS,
            "kubeletVersion": concat!("herd-", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "", "bootID": "", "machineID": "", "systemUUID": "",
            "containerRuntimeVersion": super::status::runtime_version(),
            "kernelVersion": "", "osImage": "",
        },
    });
    let labels = json!({
        "kubernetes.io/hostname": node_name,
        "kubernetes.io/os": std::env::consts::OS,
        "kubernetes.io/arch": go_arch(),
    });
    let key = Key::cluster(Resource::Nodes, node_name);
    match store.get(&key) {
        Err(StoreError::NotFound { .. }) => {
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {
                    "name": node_name, "labels": labels,
                    "uid": uuid(node_name, now), "creationTimestamp": time,
                },
                "spec": {},
                "status": status,
            });
            match store.create(&key, node) {
                Err(StoreError::AlreadyExists { .. }) => refresh(store, &key, &labels, &status),
                other => other,
            }
        }
        Err(e) => Err(e),
        Ok(_) => refresh(store, &key, &labels, &status),
    }
}

fn refresh(
    store: &dyn Datastore,
    key: &Key,
    labels: &Value,
    status: &Value,
) -> Result<Value, StoreError> {
    update_with(store, key, |mut node| {
        if let Some(l) = labels.as_object() {
            for (k, v) in l {
                node["metadata"]["labels"][k] = v.clone();
            }
        }
        node["status"] = status.clone();
        Ok(Some(node))
    })
}

fn addresses(node_name: &str, host_ip: Option<IpAddr>) -> Value {
    let mut a = vec![json!({"type": "Hostname", "address": node_name})];
    if let Some(ip) = host_ip {
        a.insert(0, json!({"type": "InternalIP", "address": ip.to_string()}));
    }
    Value::Array(a)
}

/// `MemTotal` in bytes.
fn mem_total(proc_root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join("meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Kubernetes' (Go's) name of this architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A stable uid for this node's object (name and first registration).
fn uuid(node_name: &str, now: Timestamp) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{node_name}/{}", now.as_nanosecond()).as_bytes());
    let x = hex::encode(&h[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    #[test]
    fn registers_then_refreshes_keeping_spec() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            LocalStore::open(&dir.path().join("s.redb"), &dir.path().join("x.redb")).unwrap();
        let proc_root = dir.path().join("proc");
        std::fs::create_dir_all(&proc_root).unwrap();
        std::fs::write(
            proc_root.join("meminfo"),
            "MemTotal:  2048 kB\nMemFree: 1 kB\n",
        )
        .unwrap();
        let n = register(
            &store,
            "n1",
            "10.0.0.5".parse().ok(),
            &proc_root,
            Timestamp::now(),
        )
        .unwrap();
        assert_eq!(n["status"]["capacity"]["memory"], "2048Ki");
        assert_eq!(n["status"]["conditions"][0]["status"], "True");
        assert_eq!(n["status"]["addresses"][0]["address"], "10.0.0.5");
        let key = Key::cluster(Resource::Nodes, "n1");
        update_with(&store, &key, |mut n| {
            n["spec"]["podCIDR"] = json!("10.244.1.0/24");
            Ok(Some(n))
        })
        .unwrap();
        let again = register(&store, "n1", None, &proc_root, Timestamp::now()).unwrap();
        assert_eq!(again["spec"]["podCIDR"], "10.244.1.0/24");
        assert_eq!(again["metadata"]["uid"], n["metadata"]["uid"]);
    }
}
