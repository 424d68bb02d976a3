//! Nodes and Leases (k8s `ValidateNode`, `ValidateLease`): CIDRs, taints,
//! lease durations.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;

use super::{invalid_each, names};
use crate::api::FieldError;

pub fn node(n: &Node, errs: &mut Vec<FieldError>) {
    let Some(spec) = n.spec.as_ref() else {
        return;
    };
    for (i, c) in spec
        .pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .enumerate()
    {
        if c.parse::<ipnet::IpNet>().is_err() {
            let field = if spec.pod_cidrs.as_ref().is_some_and(|l| i < l.len()) {
                format!("spec.podCIDRs[{i}]")
            } else {
                "spec.podCIDR".to_string()
            };
            errs.push(FieldError::invalid(field, c, "must be a valid CIDR"));
        }
    }
    const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    for (i, t) in spec.taints.iter().flatten().enumerate() {
        let f = format!("spec.taints[{i}]");
        invalid_each(
            errs,
            &format!("{f}.key"),
            &t.key,
            names::qualified_name(&t.key),
        );
        if let Some(v) = t.value.as_deref() {
            invalid_each(errs, &format!("{f}.value"), v, names::label_value(v));
        }
        if !EFFECTS.contains(&t.effect.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{f}.effect"),
                &t.effect,
                &EFFECTS,
            ));
        }
    }
}

pub fn lease(l: &Lease, errs: &mut Vec<FieldError>) {
    let Some(spec) = l.spec.as_ref() else {
        return;
    };
    if let Some(d) = spec.lease_duration_seconds
        && d <= 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec.lease_transitions
        && t < 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseTransitions",
            t,
            "must be greater than or equal to 0",
        ));
    }
}
