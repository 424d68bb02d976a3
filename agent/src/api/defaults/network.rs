//! Defaults of Services, Endpoints and EndpointSlices (k8s
//! `SetDefaults_Service`, `SetDefaults_EndpointPort`). A Service's
//! clusterIP and nodePorts are not defaults: `api::services` allocates
//! them on create.

use k8s_openapi::api::core::v1::{ClientIPConfig, Endpoints, Service, SessionAffinityConfig};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::set;

/// `sessionAffinityConfig.clientIP.timeoutSeconds` default (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;

pub(super) fn service(s: &mut Service) {
    let Some(spec) = s.spec.as_mut() else {
        return;
    };
    set(&mut spec.type_, "ClusterIP".to_string());
    let type_ = spec.type_.clone().unwrap_or_default();
    set(&mut spec.session_affinity, "None".to_string());
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let cfg = spec
            .session_affinity_config
            .get_or_insert_with(SessionAffinityConfig::default)
            .client_ip
            .get_or_insert_with(ClientIPConfig::default);
        cfg.timeout_seconds.get_or_insert(DEFAULT_AFFINITY_TIMEOUT);
    }
    for p in spec.ports.iter_mut().flatten() {
        set(&mut p.protocol, "TCP".to_string());
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    if type_ != "ExternalName" {
        set(&mut spec.internal_traffic_policy, "Cluster".to_string());
    }
    if type_ == "NodePort" || type_ == "LoadBalancer" {
        set(&mut spec.external_traffic_policy, "Cluster".to_string());
    }
    if type_ == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
}

/// Fills `ipFamilies`, `ipFamilyPolicy` and `clusterIPs` once the
/// clusterIP is known (IPv4 single stack: the only family served).
pub fn service_ip_families(s: &mut Service) {
    let Some(spec) = s.spec.as_mut() else {
        return;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return;
    }
    if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
        spec.ip_families = Some(vec!["IPv4".to_string()]);
    }
    set(&mut spec.ip_family_policy, "SingleStack".to_string());
    if let Some(ip) = spec.cluster_ip.as_ref().filter(|ip| !ip.is_empty())
        && spec.cluster_ips.as_ref().is_none_or(Vec::is_empty)
    {
        spec.cluster_ips = Some(vec![ip.clone()]);
    }
}

pub(super) fn endpoints(e: &mut Endpoints) {
    for s in e.subsets.iter_mut().flatten() {
        for p in s.ports.iter_mut().flatten() {
            set(&mut p.protocol, "TCP".to_string());
        }
    }
}

pub(super) fn endpoint_slice(e: &mut EndpointSlice) {
    for p in e.ports.iter_mut().flatten() {
        set(&mut p.protocol, "TCP".to_string());
    }
}
