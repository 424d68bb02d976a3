//! kubectl's `get` columns for the cluster kinds: Deployments,
//! ReplicaSets, DaemonSets, Jobs, Services, Endpoints, Nodes,
//! ServiceAccounts, Leases, EndpointSlices (kubectl's
//! `printers/internalversion/printers.go`, rule for rule where it
//! matters: Job STATUS and COMPLETIONS, Service EXTERNAL-IP and PORT(S),
//! Node STATUS and ROLES, the "+ N more..." of endpoint lists).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, PodTemplateSpec, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

use super::duration::{human, since};
use super::printers::{PrintError, typed};
use crate::api::Resource;
use crate::api::label_selector;

const NONE: &str = "<none>";
const UNSET: &str = "<unset>";
const MAX_LISTED: usize = 3;

/// Headers of the kinds handled here (`None`: not one of them).
pub fn header(resource: Resource, wide: bool) -> Option<Vec<&'static str>> {
    let wide_workload = ["CONTAINERS", "IMAGES", "SELECTOR"];
    let mut h = match resource {
        Resource::Deployments => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        Resource::ReplicaSets => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        Resource::DaemonSets => vec![
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
        ],
        Resource::Jobs => vec!["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        Resource::Services => vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        Resource::Endpoints => vec!["NAME", "ENDPOINTS", "AGE"],
        Resource::Nodes => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        Resource::ServiceAccounts => vec!["NAME", "SECRETS", "AGE"],
        Resource::Leases => vec!["NAME", "HOLDER", "AGE"],
        Resource::EndpointSlices => vec!["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        _ => return None,
    };
    if wide {
        match resource {
            Resource::Deployments
            | Resource::ReplicaSets
            | Resource::DaemonSets
            | Resource::Jobs => h.extend(wide_workload),
            Resource::Services => h.push("SELECTOR"),
            Resource::Nodes => h.extend([
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ]),
            _ => {}
        }
    }
    Some(h)
}

fn name(m: &ObjectMeta) -> String {
    m.name.clone().unwrap_or_default()
}

fn age(m: &ObjectMeta, now: Timestamp) -> String {
    since(m.creation_timestamp.as_ref().map(|t| &t.0), now)
}

fn or_none(s: String) -> String {
    if s.is_empty() { NONE.to_string() } else { s }
}

/// CONTAINERS, IMAGES, SELECTOR of a workload.
fn workload_wide(t: Option<&PodTemplateSpec>, sel: Option<&LabelSelector>) -> [String; 3] {
    let containers = t
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or_default())
        .collect();
    [
        or_none(names.join(",")),
        or_none(images.join(",")),
        or_none(sel.map(label_selector::to_query).unwrap_or_default()),
    ]
}

fn map_text(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn listed(items: Vec<String>, empty: &str) -> String {
    if items.is_empty() {
        return empty.to_string();
    }
    let mut s = items[..items.len().min(MAX_LISTED)].join(",");
    if items.len() > MAX_LISTED {
        s.push_str(&format!(" + {} more...", items.len() - MAX_LISTED));
    }
    s
}

/// The row of an object of the kinds handled here (`Ok(None)`: not one).
pub fn row(
    resource: Resource,
    obj: &Value,
    now: Timestamp,
    wide: bool,
) -> Result<Option<Vec<String>>, PrintError> {
    let r = match resource {
        Resource::Deployments => {
            let d: Deployment = typed(resource, obj)?;
            let spec = d.spec.clone().unwrap_or_default();
            let st = d.status.clone().unwrap_or_default();
            let mut r = vec![
                name(&d.metadata),
                format!(
                    "{}/{}",
                    st.ready_replicas.unwrap_or(0),
                    spec.replicas.unwrap_or(0)
                ),
                st.updated_replicas.unwrap_or(0).to_string(),
                st.available_replicas.unwrap_or(0).to_string(),
                age(&d.metadata, now),
            ];
            if wide {
                r.extend(workload_wide(Some(&spec.template), Some(&spec.selector)));
            }
            r
        }
        Resource::ReplicaSets => {
            let rs: ReplicaSet = typed(resource, obj)?;
            let spec = rs.spec.clone().unwrap_or_default();
            let st = rs.status.clone().unwrap_or_default();
            let mut r = vec![
                name(&rs.metadata),
                spec.replicas.unwrap_or(0).to_string(),
                st.replicas.to_string(),
                st.ready_replicas.unwrap_or(0).to_string(),
                age(&rs.metadata, now),
            ];
            if wide {
                r.extend(workload_wide(spec.template.as_ref(), Some(&spec.selector)));
            }
            r
        }
        Resource::DaemonSets => {
            let ds: DaemonSet = typed(resource, obj)?;
            let spec = ds.spec.clone().unwrap_or_default();
            let st = ds.status.clone().unwrap_or_default();
            let node_selector = spec
                .template
                .spec
                .as_ref()
                .and_then(|s| s.node_selector.as_ref());
            let mut r = vec![
                name(&ds.metadata),
                st.desired_number_scheduled.to_string(),
                st.current_number_scheduled.to_string(),
                st.number_ready.to_string(),
                st.updated_number_scheduled.unwrap_or(0).to_string(),
                st.number_available.unwrap_or(0).to_string(),
                or_none(map_text(node_selector)),
                age(&ds.metadata, now),
            ];
            if wide {
                r.extend(workload_wide(Some(&spec.template), Some(&spec.selector)));
            }
            r
        }
        Resource::Jobs => job_row(&typed(resource, obj)?, now, wide),
        Resource::Services => service_row(&typed(resource, obj)?, now, wide),
        Resource::Endpoints => {
            let e: Endpoints = typed(resource, obj)?;
            let mut list = Vec::new();
            for s in e.subsets.iter().flatten() {
                let addrs = s.addresses.as_deref().unwrap_or_default();
                let ports = s.ports.as_deref().unwrap_or_default();
                if ports.is_empty() {
                    list.extend(addrs.iter().map(|a| a.ip.clone()));
                }
                for p in ports {
                    list.extend(addrs.iter().map(|a| format!("{}:{}", a.ip, p.port)));
                }
            }
            vec![name(&e.metadata), listed(list, NONE), age(&e.metadata, now)]
        }
        Resource::Nodes => node_row(&typed(resource, obj)?, now, wide),
        Resource::ServiceAccounts => {
            let sa: ServiceAccount = typed(resource, obj)?;
            vec![
                name(&sa.metadata),
                sa.secrets.as_ref().map_or(0, Vec::len).to_string(),
                age(&sa.metadata, now),
            ]
        }
        Resource::Leases => {
            let l: Lease = typed(resource, obj)?;
            let holder = l
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default();
            vec![name(&l.metadata), holder, age(&l.metadata, now)]
        }
        Resource::EndpointSlices => {
            let e: EndpointSlice = typed(resource, obj)?;
            let ports: Vec<String> = e
                .ports
                .iter()
                .flatten()
                .map(|p| p.port.map_or_else(|| UNSET.to_string(), |n| n.to_string()))
                .collect();
            let addrs: Vec<String> = e
                .endpoints
                .iter()
                .flat_map(|ep| ep.addresses.iter().cloned())
                .collect();
            vec![
                name(&e.metadata),
                e.address_type.clone(),
                listed(ports, UNSET),
                listed(addrs, UNSET),
                age(&e.metadata, now),
            ]
        }
        _ => return Ok(None),
    };
    Ok(Some(r))
}

fn condition_true(j: &Job, type_: &str) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// kubectl's `printJob`.
pub fn job_row(j: &Job, now: Timestamp, wide: bool) -> Vec<String> {
    let spec = j.spec.clone().unwrap_or_default();
    let st = j.status.clone().unwrap_or_default();
    let status = if condition_true(j, "Complete") {
        "Complete"
    } else if condition_true(j, "Failed") {
        "Failed"
    } else if j.metadata.deletion_timestamp.is_some() {
        "Terminating"
    } else if condition_true(j, "Suspended") {
        "Suspended"
    } else if condition_true(j, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let succeeded = st.succeeded.unwrap_or(0);
    let completions = match spec.completions {
        Some(c) => format!("{succeeded}/{c}"),
        None => match spec.parallelism.unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (st.start_time.as_ref(), st.completion_time.as_ref()) {
        (None, _) => String::new(),
        (Some(s), None) => human(now.as_second() - s.0.as_second()),
        (Some(s), Some(c)) => human(c.0.as_second() - s.0.as_second()),
    };
    let mut r = vec![
        name(&j.metadata),
        status.to_string(),
        completions,
        duration,
        age(&j.metadata, now),
    ];
    if wide {
        r.extend(workload_wide(Some(&spec.template), spec.selector.as_ref()));
    }
    r
}

/// kubectl's `printService`.
pub fn service_row(s: &Service, now: Timestamp, wide: bool) -> Vec<String> {
    let spec = s.spec.clone().unwrap_or_default();
    let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let cluster_ip = spec
        .cluster_ips
        .clone()
        .filter(|l| !l.is_empty())
        .map(|l| l.join(","))
        .or(spec.cluster_ip.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| NONE.into());
    let external: Vec<String> = spec.external_ips.clone().unwrap_or_default();
    let external_ip = match type_.as_str() {
        "ClusterIP" | "NodePort" => or_none(external.join(",")),
        "LoadBalancer" => {
            let mut ips: Vec<String> = s
                .status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.clone().or(i.hostname.clone()))
                .collect();
            ips.extend(external);
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => spec.external_name.clone().unwrap_or_default(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            match p.node_port.filter(|n| *n != 0) {
                Some(n) => format!("{}:{n}/{proto}", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    let mut r = vec![
        name(&s.metadata),
        type_,
        cluster_ip,
        external_ip,
        or_none(ports.join(",")),
        age(&s.metadata, now),
    ];
    if wide {
        r.push(or_none(map_text(spec.selector.as_ref())));
    }
    r
}

/// kubectl's `printNode`.
pub fn node_row(n: &Node, now: Timestamp, wide: bool) -> Vec<String> {
    let st = n.status.clone().unwrap_or_default();
    let ready = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str());
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = Vec::new();
    for (k, v) in n.metadata.labels.iter().flatten() {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.push(role.to_string());
            }
        } else if k == "kubernetes.io/role" && !v.is_empty() {
            roles.push(v.clone());
        }
    }
    roles.sort();
    roles.dedup();
    let info = st.node_info.clone().unwrap_or_default();
    let mut r = vec![
        name(&n.metadata),
        status,
        or_none(roles.join(",")),
        age(&n.metadata, now),
        info.kubelet_version.clone(),
    ];
    if wide {
        let addr = |t: &str| {
            st.addresses
                .iter()
                .flatten()
                .find(|a| a.type_ == t)
                .map(|a| a.address.clone())
                .unwrap_or_else(|| NONE.into())
        };
        let or_unknown = |s: &str| {
            if s.is_empty() {
                "<unknown>".to_string()
            } else {
                s.to_string()
            }
        };
        r.extend([
            addr("InternalIP"),
            addr("ExternalIP"),
            or_unknown(&info.os_image),
            or_unknown(&info.kernel_version),
            or_unknown(&info.container_runtime_version),
        ]);
    }
    r
}
