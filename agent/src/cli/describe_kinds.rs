//! `herd describe` for Deployments, ReplicaSets, Services and Nodes, in
//! kubectl's layout (the fields an operator looks at first: replicas,
//! strategy, pod template, conditions; IPs, ports, endpoints; node
//! conditions, addresses, capacity). Other cluster kinds print as YAML.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::describe::{Out, annotations, multiline_map, rfc1123z};
use super::tabwriter::align;
use crate::api::label_selector;

fn header(o: &mut Out, m: &ObjectMeta, namespaced: bool) {
    o.w(
        0,
        &format!("Name:\t{}\n", m.name.clone().unwrap_or_default()),
    );
    if namespaced {
        o.w(
            0,
            &format!("Namespace:\t{}\n", m.namespace.clone().unwrap_or_default()),
        );
    }
    if let Some(t) = m.creation_timestamp.as_ref() {
        o.w(0, &format!("CreationTimestamp:\t{}\n", rfc1123z(&t.0)));
    }
    multiline_map(o, "Labels", m.labels.as_ref(), "=");
    annotations(o, m.annotations.as_ref());
}

fn int_or_string(v: Option<&IntOrString>) -> String {
    match v {
        Some(IntOrString::Int(i)) => i.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => String::new(),
    }
}

fn template(o: &mut Out, t: Option<&PodTemplateSpec>) {
    o.w(0, "Pod Template:\n");
    let labels = t
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let mut inner = Out::default();
    multiline_map(&mut inner, "Labels", labels, "=");
    for line in inner.text.lines() {
        o.w(1, &format!("{line}\n"));
    }
    o.w(1, "Containers:\n");
    for c in t
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
    {
        o.w(2, &format!("{}:\n", c.name));
        o.w(
            3,
            &format!("Image:\t{}\n", c.image.clone().unwrap_or_default()),
        );
        let ports: Vec<String> = c
            .ports
            .iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.container_port,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into())
                )
            })
            .collect();
        let ports = if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(", ")
        };
        o.w(3, &format!("Port:\t{ports}\n"));
    }
}

pub fn describe_deployment(d: &Deployment) -> String {
    let mut o = Out::default();
    header(&mut o, &d.metadata, true);
    let spec = d.spec.clone().unwrap_or_default();
    let st = d.status.clone().unwrap_or_default();
    o.w(
        0,
        &format!("Selector:\t{}\n", label_selector::to_query(&spec.selector)),
    );
    o.w(
        0,
        &format!(
            "Replicas:\t{} desired | {} updated | {} total | {} available | {} unavailable\n",
            spec.replicas.unwrap_or(0),
            st.updated_replicas.unwrap_or(0),
            st.replicas.unwrap_or(0),
            st.available_replicas.unwrap_or(0),
            st.unavailable_replicas.unwrap_or(0)
        ),
    );
    let strategy = spec.strategy.clone().unwrap_or_default();
    let type_ = strategy.type_.clone().unwrap_or_default();
    o.w(0, &format!("StrategyType:\t{type_}\n"));
    o.w(
        0,
        &format!(
            "MinReadySeconds:\t{}\n",
            spec.min_ready_seconds.unwrap_or(0)
        ),
    );
    if let Some(ru) = strategy.rolling_update.as_ref() {
        o.w(
            0,
            &format!(
                "RollingUpdateStrategy:\t{} max unavailable, {} max surge\n",
                int_or_string(ru.max_unavailable.as_ref()),
                int_or_string(ru.max_surge.as_ref())
            ),
        );
    }
    template(&mut o, Some(&spec.template));
    let conds = st.conditions.unwrap_or_default();
    if !conds.is_empty() {
        o.w(
            0,
            "Conditions:\n  Type\tStatus\tReason\n  ----\t------\t------\n",
        );
        for c in conds {
            o.w(
                1,
                &format!(
                    "{}\t{}\t{}\n",
                    c.type_,
                    c.status,
                    c.reason.unwrap_or_default()
                ),
            );
        }
    }
    align(&o.text, 0, 2)
}

pub fn describe_replica_set(r: &ReplicaSet) -> String {
    let mut o = Out::default();
    header(&mut o, &r.metadata, true);
    let spec = r.spec.clone().unwrap_or_default();
    let st = r.status.clone().unwrap_or_default();
    o.w(
        0,
        &format!("Selector:\t{}\n", label_selector::to_query(&spec.selector)),
    );
    let owner = r
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.name))
        .unwrap_or_else(|| "<none>".into());
    o.w(0, &format!("Controlled By:\t{owner}\n"));
    o.w(
        0,
        &format!(
            "Replicas:\t{} current / {} desired\n",
            st.replicas,
            spec.replicas.unwrap_or(0)
        ),
    );
    template(&mut o, spec.template.as_ref());
    align(&o.text, 0, 2)
}

pub fn describe_service(s: &Service, endpoints: Option<&[String]>) -> String {
    let mut o = Out::default();
    header(&mut o, &s.metadata, true);
    let spec = s.spec.clone().unwrap_or_default();
    let selector: Vec<String> = spec
        .selector
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    o.w(0, &format!("Selector:\t{}\n", selector.join(",")));
    o.w(
        0,
        &format!("Type:\t{}\n", spec.type_.clone().unwrap_or_default()),
    );
    if let Some(p) = spec.ip_family_policy.as_ref() {
        o.w(0, &format!("IP Family Policy:\t{p}\n"));
    }
    if let Some(f) = spec.ip_families.as_ref() {
        o.w(0, &format!("IP Families:\t{}\n", f.join(",")));
    }
    o.w(
        0,
        &format!("IP:\t{}\n", spec.cluster_ip.clone().unwrap_or_default()),
    );
    if let Some(ips) = spec.cluster_ips.as_ref() {
        o.w(0, &format!("IPs:\t{}\n", ips.join(",")));
    }
    for p in spec.ports.iter().flatten() {
        let name = p
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "<unset>".into());
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        o.w(0, &format!("Port:\t{name}\t{}/{proto}\n", p.port));
        o.w(
            0,
            &format!(
                "TargetPort:\t{}/{proto}\n",
                int_or_string(p.target_port.as_ref())
            ),
        );
        if let Some(n) = p.node_port {
            o.w(0, &format!("NodePort:\t{name}\t{n}/{proto}\n"));
        }
        if let Some(eps) = endpoints {
            let list = if eps.is_empty() {
                "<none>".to_string()
            } else {
                eps.join(",")
            };
            o.w(0, &format!("Endpoints:\t{list}\n"));
        }
    }
    o.w(
        0,
        &format!(
            "Session Affinity:\t{}\n",
            spec.session_affinity
                .clone()
                .unwrap_or_else(|| "None".into())
        ),
    );
    align(&o.text, 0, 2)
}

pub fn describe_node(n: &Node, now: Timestamp) -> String {
    let mut o = Out::default();
    header(&mut o, &n.metadata, false);
    let spec = n.spec.clone().unwrap_or_default();
    let st = n.status.clone().unwrap_or_default();
    let taints: Vec<String> = spec
        .taints
        .iter()
        .flatten()
        .map(|t| match t.value.as_deref() {
            Some(v) if !v.is_empty() => format!("{}={v}:{}", t.key, t.effect),
            _ => format!("{}:{}", t.key, t.effect),
        })
        .collect();
    let taints = if taints.is_empty() {
        "<none>".to_string()
    } else {
        taints.join("\n\t")
    };
    o.w(0, &format!("Taints:\t{taints}\n"));
    o.w(
        0,
        &format!("Unschedulable:\t{}\n", spec.unschedulable.unwrap_or(false)),
    );
    o.w(
        0,
        "Conditions:\n  Type\tStatus\tLastHeartbeatTime\tReason\tMessage\n  ----\t------\t-----------------\t------\t-------\n",
    );
    for c in st.conditions.iter().flatten() {
        let hb = c
            .last_heartbeat_time
            .as_ref()
            .map(|t| super::duration::since(Some(&t.0), now))
            .unwrap_or_default();
        o.w(
            1,
            &format!(
                "{}\t{}\t{hb}\t{}\t{}\n",
                c.type_,
                c.status,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ),
        );
    }
    o.w(0, "Addresses:\n");
    for a in st.addresses.iter().flatten() {
        o.w(1, &format!("{}:\t{}\n", a.type_, a.address));
    }
    for (title, map) in [("Capacity", &st.capacity), ("Allocatable", &st.allocatable)] {
        if let Some(m) = map {
            o.w(0, &format!("{title}:\n"));
            for (k, v) in m {
                o.w(1, &format!("{k}:\t{}\n", v.0));
            }
        }
    }
    if let Some(info) = st.node_info.as_ref() {
        o.w(0, "System Info:\n");
        for (k, v) in [
            ("Kernel Version", &info.kernel_version),
            ("OS Image", &info.os_image),
            ("Architecture", &info.architecture),
            ("Container Runtime Version", &info.container_runtime_version),
            ("Kubelet Version", &info.kubelet_version),
        ] {
            o.w(1, &format!("{k}:\t{v}\n"));
        }
    }
    if let Some(c) = spec.pod_cidr.as_ref() {
        o.w(0, &format!("PodCIDR:\t{c}\n"));
    }
    align(&o.text, 0, 2)
}
