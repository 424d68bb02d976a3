//! Pod specs (k8s `ValidatePodSpec`, `validateContainers`,
//! `validateInitContainers`): containers, ports, env, probes, lifecycle
//! hooks and policies; the parts live in `env`, `probes`, `security`,
//! `resources` and `volumes`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::env::env_var;
use super::invalid_each;
use super::names;
use super::probes::{handler, lifecycle_handler, probe};
use super::security::{pod_security_context, security_context};
use super::{resources, volumes};
use crate::api::FieldError;

const NONNEG: &str = "must be greater than or equal to 0";
const PORT_DETAIL: &str = "must be between 1 and 65535, inclusive";

/// Checks `spec` of a Pod.
pub fn pod_spec(spec: &PodSpec, errs: &mut Vec<FieldError>) {
    let vols = volumes::volumes(spec.volumes.as_ref(), errs);
    let host_network = spec.host_network == Some(true);
    let mut names_seen = BTreeSet::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let f = format!("spec.initContainers[{i}]");
        container(c, &f, &vols, host_network, &mut names_seen, errs);
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        if let Some(rp) = c.restart_policy.as_deref()
            && rp != "Always"
        {
            errs.push(FieldError::not_supported(
                format!("{f}.restartPolicy"),
                rp,
                &["Always"],
            ));
        }
        if !sidecar {
            let why = "may not be set for init containers without restartPolicy=Always";
            for (set, name) in [
                (c.lifecycle.is_some(), "lifecycle"),
                (c.liveness_probe.is_some(), "livenessProbe"),
                (c.readiness_probe.is_some(), "readinessProbe"),
                (c.startup_probe.is_some(), "startupProbe"),
            ] {
                if set {
                    errs.push(FieldError::forbidden(format!("{f}.{name}"), why));
                }
            }
        }
    }
    if spec.containers.is_empty() {
        errs.push(FieldError::required("spec.containers", ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let f = format!("spec.containers[{i}]");
        container(c, &f, &vols, host_network, &mut names_seen, errs);
        if c.restart_policy.is_some() {
            errs.push(FieldError::forbidden(
                format!("{f}.restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    host_ports(spec, errs);
    if let Some(rp) = spec.restart_policy.as_deref() {
        const P: [&str; 3] = ["Always", "OnFailure", "Never"];
        if !P.contains(&rp) {
            errs.push(FieldError::not_supported("spec.restartPolicy", rp, &P));
        }
    }
    if let Some(dp) = spec.dns_policy.as_deref() {
        const P: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !P.contains(&dp) {
            errs.push(FieldError::not_supported("spec.dnsPolicy", dp, &P));
        } else if dp == "None"
            && spec
                .dns_config
                .as_ref()
                .is_none_or(|c| c.nameservers.as_ref().is_none_or(Vec::is_empty))
        {
            errs.push(FieldError::required(
                "spec.dnsConfig",
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.push(FieldError::invalid(
            "spec.terminationGracePeriodSeconds",
            g,
            NONNEG,
        ));
    }
    if let Some(a) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&a)
    {
        errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            a,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    for (field, v) in [
        ("spec.hostname", spec.hostname.as_deref()),
        ("spec.subdomain", spec.subdomain.as_deref()),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            invalid_each(errs, field, v, names::dns1123_label(v));
        }
    }
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        invalid_each(errs, "spec.nodeName", n, names::dns1123_subdomain(n));
    }
    if let Some(sc) = spec.security_context.as_ref() {
        pod_security_context(sc, errs);
    }
}

fn container(
    c: &Container,
    f: &str,
    vols: &BTreeSet<String>,
    host_network: bool,
    names_seen: &mut BTreeSet<String>,
    errs: &mut Vec<FieldError>,
) {
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{f}.name"), ""));
    } else {
        invalid_each(
            errs,
            &format!("{f}.name"),
            &c.name,
            names::dns1123_label(&c.name),
        );
        if !names_seen.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(format!("{f}.name"), &c.name));
        }
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        errs.push(FieldError::required(format!("{f}.image"), ""));
    }
    if let Some(p) = c.image_pull_policy.as_deref() {
        const P: [&str; 3] = ["Always", "IfNotPresent", "Never"];
        if !P.contains(&p) {
            errs.push(FieldError::not_supported(
                format!("{f}.imagePullPolicy"),
                p,
                &P,
            ));
        }
    }
    if let Some(p) = c.termination_message_policy.as_deref() {
        const P: [&str; 2] = ["File", "FallbackToLogsOnError"];
        if !P.contains(&p) {
            errs.push(FieldError::not_supported(
                format!("{f}.terminationMessagePolicy"),
                p,
                &P,
            ));
        }
    }
    ports(c, f, host_network, errs);
    for (i, e) in c.env.iter().flatten().enumerate() {
        env_var(e, &format!("{f}.env[{i}]"), errs);
    }
    for (i, e) in c.env_from.iter().flatten().enumerate() {
        let fi = format!("{f}.envFrom[{i}]");
        if let Some(p) = e.prefix.as_deref().filter(|p| !p.is_empty()) {
            invalid_each(errs, &format!("{fi}.prefix"), p, names::env_var_name(p));
        }
        match (e.config_map_ref.as_ref(), e.secret_ref.as_ref()) {
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                &fi,
                "",
                "may not have more than one field specified at a time",
            )),
            (None, None) => errs.push(FieldError::invalid(
                &fi,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
            (Some(r), None) if r.name.is_empty() => {
                errs.push(FieldError::required(format!("{fi}.configMapRef.name"), ""))
            }
            (None, Some(r)) if r.name.is_empty() => {
                errs.push(FieldError::required(format!("{fi}.secretRef.name"), ""))
            }
            _ => {}
        }
    }
    if let Some(r) = c.resources.as_ref() {
        resources::requirements(r, &format!("{f}.resources"), errs);
    }
    volumes::mounts(
        c.volume_mounts.as_ref(),
        &format!("{f}.volumeMounts"),
        vols,
        errs,
    );
    for (p, name, one) in [
        (c.liveness_probe.as_ref(), "livenessProbe", true),
        (c.readiness_probe.as_ref(), "readinessProbe", false),
        (c.startup_probe.as_ref(), "startupProbe", true),
    ] {
        if let Some(p) = p {
            probe(p, &format!("{f}.{name}"), one, errs);
        }
    }
    if let Some(l) = c.lifecycle.as_ref() {
        for (h, name) in [
            (l.post_start.as_ref(), "postStart"),
            (l.pre_stop.as_ref(), "preStop"),
        ] {
            if let Some(h) = h {
                let fh = format!("{f}.lifecycle.{name}");
                handler(
                    &fh,
                    &[
                        ("exec", h.exec.is_some()),
                        ("httpGet", h.http_get.is_some()),
                        ("tcpSocket", h.tcp_socket.is_some()),
                        ("sleep", h.sleep.is_some()),
                    ],
                    errs,
                );
                lifecycle_handler(h, &fh, errs);
            }
        }
    }
    if let Some(sc) = c.security_context.as_ref() {
        security_context(sc, &format!("{f}.securityContext"), errs);
    }
}

fn ports(c: &Container, f: &str, host_network: bool, errs: &mut Vec<FieldError>) {
    let mut port_names = BTreeSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let fp = format!("{f}.ports[{i}]");
        if !(1..=65535).contains(&p.container_port) {
            errs.push(FieldError::invalid(
                format!("{fp}.containerPort"),
                p.container_port,
                PORT_DETAIL,
            ));
        }
        if let Some(h) = p.host_port
            && h != 0
        {
            if !(1..=65535).contains(&h) {
                errs.push(FieldError::invalid(
                    format!("{fp}.hostPort"),
                    h,
                    PORT_DETAIL,
                ));
            } else if host_network && h != p.container_port {
                errs.push(FieldError::invalid(
                    format!("{fp}.hostPort"),
                    h,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        if let Some(proto) = p.protocol.as_deref() {
            const P: [&str; 3] = ["SCTP", "TCP", "UDP"];
            if !P.contains(&proto) {
                errs.push(FieldError::not_supported(
                    format!("{fp}.protocol"),
                    proto,
                    &P,
                ));
            }
        }
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            invalid_each(errs, &format!("{fp}.name"), n, names::port_name(n));
            if !port_names.insert(n.to_string()) {
                errs.push(FieldError::duplicate(format!("{fp}.name"), n));
            }
        }
        if let Some(ip) = p.host_ip.as_deref().filter(|s| !s.is_empty())
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            errs.push(FieldError::invalid(
                format!("{fp}.hostIP"),
                ip,
                "must be a valid IP address",
            ));
        }
    }
}

/// `AccumulateUniqueHostPorts`: one hostPort/protocol per pod.
fn host_ports(spec: &PodSpec, errs: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c)),
        );
    for (f, c) in all {
        for (i, p) in c.ports.iter().flatten().enumerate() {
            let Some(h) = p.host_port.filter(|h| *h != 0) else {
                continue;
            };
            let key = format!(
                "{}/{h}/{}",
                p.host_ip.as_deref().unwrap_or(""),
                p.protocol.as_deref().unwrap_or("TCP")
            );
            if !seen.insert(key) {
                errs.push(FieldError::duplicate(
                    format!("{f}.ports[{i}].hostPort"),
                    format!("{h}/{}", p.protocol.as_deref().unwrap_or("TCP")),
                ));
            }
        }
    }
}
