//! Services, Endpoints and EndpointSlices (k8s `ValidateService`,
//! `ValidateEndpoints`, `ValidateEndpointSlice`). Whether a requested
//! clusterIP or nodePort is in range and free is the allocator's check
//! (`api::services`), not this module's.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{invalid_each, names, objects};
use crate::api::FieldError;

const PORT_DETAIL: &str = "must be between 1 and 65535, inclusive";
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

fn port(field: &str, p: i32, errs: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&p) {
        errs.push(FieldError::invalid(field, p, PORT_DETAIL));
    }
}

fn protocol(field: &str, p: Option<&str>, errs: &mut Vec<FieldError>) {
    match p {
        None => {}
        Some(p) if PROTOCOLS.contains(&p) => {}
        Some(p) => errs.push(FieldError::not_supported(field, p, &PROTOCOLS)),
    }
}

fn ip(field: &str, s: &str, errs: &mut Vec<FieldError>) {
    if s.parse::<IpAddr>().is_err() {
        errs.push(FieldError::invalid(
            field,
            s,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
}

pub fn service(s: &Service, errs: &mut Vec<FieldError>) {
    let Some(spec) = s.spec.as_ref() else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&type_) {
        errs.push(FieldError::not_supported(
            "spec.type",
            type_,
            &SERVICE_TYPES,
        ));
    }
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let headless = cluster_ip == "None";
    if type_ == "ExternalName" {
        match spec.external_name.as_deref() {
            None | Some("") => errs.push(FieldError::required("spec.externalName", "")),
            Some(n) => invalid_each(errs, "spec.externalName", n, names::dns1123_subdomain(n)),
        }
        if !cluster_ip.is_empty() {
            errs.push(FieldError::forbidden(
                "spec.clusterIP",
                "may not be set for ExternalName services",
            ));
        }
    } else if !cluster_ip.is_empty() && !headless {
        ip("spec.clusterIP", cluster_ip, errs);
    }
    if headless && (type_ == "NodePort" || type_ == "LoadBalancer") {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            "None",
            format!("may not be set to 'None' for {type_} services"),
        ));
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless && type_ != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names_seen = BTreeSet::new();
    let mut ports_seen = BTreeSet::new();
    let mut node_ports_seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        match p.name.as_deref().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => errs.push(FieldError::required(format!("{f}.name"), "")),
            None => {}
            Some(n) => {
                invalid_each(errs, &format!("{f}.name"), n, names::dns1123_label(n));
                if !names_seen.insert(n.to_string()) {
                    errs.push(FieldError::duplicate(format!("{f}.name"), n));
                }
            }
        }
        port(&format!("{f}.port"), p.port, errs);
        protocol(&format!("{f}.protocol"), p.protocol.as_deref(), errs);
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        if !ports_seen.insert((p.port, proto.clone())) {
            errs.push(FieldError::duplicate(
                f.clone(),
                format!("{}/{proto}", p.port),
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) => port(&format!("{f}.targetPort"), *t, errs),
            Some(IntOrString::String(t)) => {
                invalid_each(errs, &format!("{f}.targetPort"), t, names::port_name(t))
            }
            None => {}
        }
        if let Some(np) = p.node_port.filter(|n| *n != 0) {
            if type_ != "NodePort" && type_ != "LoadBalancer" {
                errs.push(FieldError::forbidden(
                    format!("{f}.nodePort"),
                    format!("may not be used when `type` is '{type_}'"),
                ));
            } else {
                port(&format!("{f}.nodePort"), np, errs);
                if !node_ports_seen.insert((np, proto)) {
                    errs.push(FieldError::duplicate(format!("{f}.nodePort"), np));
                }
            }
        }
    }
    const AFFINITY: [&str; 2] = ["ClientIP", "None"];
    if let Some(a) = spec.session_affinity.as_deref()
        && !AFFINITY.contains(&a)
    {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            a,
            &AFFINITY,
        ));
    }
    if let Some(t) = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        && !(1..=86400).contains(&t)
    {
        errs.push(FieldError::invalid(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            t,
            "must be greater than 0 and less than 86400",
        ));
    }
    objects::labels(spec.selector.as_ref(), "spec.selector", errs);
    for (field, v, allowed) in [
        (
            "spec.internalTrafficPolicy",
            spec.internal_traffic_policy.as_deref(),
            ["Cluster", "Local"],
        ),
        (
            "spec.externalTrafficPolicy",
            spec.external_traffic_policy.as_deref(),
            ["Cluster", "Local"],
        ),
    ] {
        if let Some(v) = v
            && !allowed.contains(&v)
        {
            errs.push(FieldError::not_supported(field, v, &allowed));
        }
    }
    for (i, e) in spec.external_ips.iter().flatten().enumerate() {
        ip(&format!("spec.externalIPs[{i}]"), e, errs);
    }
}

pub fn endpoints(e: &Endpoints, errs: &mut Vec<FieldError>) {
    for (i, s) in e.subsets.iter().flatten().enumerate() {
        let f = format!("subsets[{i}]");
        for (list, addrs) in [
            ("addresses", s.addresses.as_deref()),
            ("notReadyAddresses", s.not_ready_addresses.as_deref()),
        ] {
            for (j, a) in addrs.unwrap_or_default().iter().enumerate() {
                ip(&format!("{f}.{list}[{j}].ip"), &a.ip, errs);
            }
        }
        let ports = s.ports.as_deref().unwrap_or_default();
        for (j, p) in ports.iter().enumerate() {
            let pf = format!("{f}.ports[{j}]");
            if ports.len() > 1 && p.name.as_deref().is_none_or(str::is_empty) {
                errs.push(FieldError::required(format!("{pf}.name"), ""));
            }
            port(&format!("{pf}.port"), p.port, errs);
            protocol(&format!("{pf}.protocol"), p.protocol.as_deref(), errs);
        }
    }
}

pub fn endpoint_slice(e: &EndpointSlice, errs: &mut Vec<FieldError>) {
    const TYPES: [&str; 3] = ["IPv4", "IPv6", "FQDN"];
    let t = e.address_type.as_str();
    if !TYPES.contains(&t) {
        errs.push(FieldError::not_supported("addressType", t, &TYPES));
    }
    if e.endpoints.len() > 1000 {
        errs.push(FieldError {
            kind: crate::api::FieldErrorKind::TooMany,
            field: "endpoints".into(),
            value: None,
            detail: "must have at most 1000 items".into(),
        });
    }
    for (i, ep) in e.endpoints.iter().enumerate() {
        let f = format!("endpoints[{i}].addresses");
        if ep.addresses.is_empty() || ep.addresses.len() > 100 {
            errs.push(FieldError::required(
                f.clone(),
                "must contain at least 1 and at most 100 addresses",
            ));
        }
        for (j, a) in ep.addresses.iter().enumerate() {
            let af = format!("{f}[{j}]");
            match (t, a.parse::<IpAddr>()) {
                ("IPv4", Ok(IpAddr::V4(_))) | ("IPv6", Ok(IpAddr::V6(_))) => {}
                ("IPv4" | "IPv6", _) => errs.push(FieldError::invalid(
                    af,
                    a,
                    format!("must be a valid {t} address"),
                )),
                _ => invalid_each(errs, &af, a, names::dns1123_subdomain(a)),
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (i, p) in e.ports.iter().flatten().enumerate() {
        let f = format!("ports[{i}]");
        let name = p.name.clone().unwrap_or_default();
        if !name.is_empty() {
            invalid_each(
                errs,
                &format!("{f}.name"),
                &name,
                names::dns1123_label(&name),
            );
        }
        if !seen.insert(name.clone()) {
            errs.push(FieldError::duplicate(format!("{f}.name"), name));
        }
        if let Some(n) = p.port
            && !(0..=65535).contains(&n)
        {
            errs.push(FieldError::invalid(format!("{f}.port"), n, PORT_DETAIL));
        }
        protocol(&format!("{f}.protocol"), p.protocol.as_deref(), errs);
    }
}

#[cfg(test)]
mod tests {
    use crate::api::manifest::decode;
    use crate::api::validation::collect;
    use serde_json::{Value, json};

    fn fields(v: Value) -> Vec<String> {
        let mut o = decode(v).unwrap();
        crate::api::defaults::apply_defaults(&mut o);
        o.meta_mut().namespace = Some("default".into());
        collect(&o).into_iter().map(|e| e.field).collect()
    }

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec})
    }

    #[test]
    fn service_rules() {
        assert!(fields(svc(json!({"ports": [{"port": 80}]}))).is_empty());
        assert!(fields(svc(json!({"clusterIP": "None"}))).is_empty());
        assert_eq!(fields(svc(json!({}))), ["spec.ports"]);
        assert_eq!(
            fields(svc(
                json!({"ports": [{"port": 80}, {"port": 80, "name": "b"}]})
            )),
            ["spec.ports[0].name", "spec.ports[1]"]
        );
        assert_eq!(
            fields(svc(
                json!({"type": "Magic", "ports": [{"port": 0, "protocol": "ICMP"}]})
            )),
            [
                "spec.type",
                "spec.ports[0].port",
                "spec.ports[0].protocol",
                // targetPort defaulted to the (invalid) port.
                "spec.ports[0].targetPort"
            ]
        );
        assert_eq!(
            fields(svc(json!({"clusterIP": "x.y", "sessionAffinity": "Sticky",
                "ports": [{"port": 1, "targetPort": "Not_A_Name"}]}))),
            [
                "spec.clusterIP",
                "spec.ports[0].targetPort",
                "spec.sessionAffinity"
            ]
        );
        assert_eq!(
            fields(svc(json!({"type": "ExternalName"}))),
            ["spec.externalName"]
        );
    }

    #[test]
    fn endpoint_slice_rules() {
        let v = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "e"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["fe80::1"]}, {"addresses": []}],
            "ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]});
        assert_eq!(
            fields(v),
            [
                "endpoints[1].addresses[0]",
                "endpoints[2].addresses",
                "ports[1].name"
            ]
        );
    }
}
