//! Container resources (k8s `ValidateContainerResourceRequirements`):
//! resource names, quantities, requests at most limits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::names;
use crate::api::{FieldError, quantity};

fn standard(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

/// An extended resource: `domain/name`, not in the kubernetes.io domains.
fn extended(name: &str) -> bool {
    match name.split_once('/') {
        Some((domain, _)) => {
            !(domain == "kubernetes.io" || domain.ends_with(".kubernetes.io"))
                && names::qualified_name(name).is_empty()
        }
        None => false,
    }
}

fn check_names(
    map: Option<&BTreeMap<String, Quantity>>,
    field: &str,
    errs: &mut Vec<FieldError>,
) -> BTreeMap<String, i128> {
    let mut parsed = BTreeMap::new();
    for (k, q) in map.into_iter().flatten() {
        let path = format!("{field}[{k}]");
        if !standard(k) && !extended(k) {
            if !k.contains('/') {
                errs.push(FieldError::invalid(
                    &path,
                    k,
                    "must be a standard resource type or fully qualified",
                ));
            } else {
                errs.push(FieldError::invalid(
                    &path,
                    k,
                    "must be a standard resource for containers",
                ));
            }
            continue;
        }
        if let Some(size) = k.strip_prefix("hugepages-")
            && quantity::bytes(size).is_err()
        {
            errs.push(FieldError::invalid(
                &path,
                k,
                "must be a standard resource type or fully qualified",
            ));
            continue;
        }
        match quantity::parse(&q.0) {
            Ok(p) if p.milli() < 0 => errs.push(FieldError::invalid(
                &path,
                &q.0,
                "must be greater than or equal to 0",
            )),
            Ok(p) => {
                if extended(k) && p.milli() % 1000 != 0 {
                    errs.push(FieldError::invalid(&path, &q.0, "must be an integer"));
                }
                parsed.insert(k.clone(), p.milli());
            }
            Err(e) => errs.push(FieldError::invalid(&path, &q.0, e.to_string())),
        }
    }
    parsed
}

/// Checks `resources` of a container at `field`
/// (`spec.containers[0].resources`).
pub fn requirements(r: &ResourceRequirements, field: &str, errs: &mut Vec<FieldError>) {
    let limits = check_names(r.limits.as_ref(), &format!("{field}.limits"), errs);
    let requests = check_names(r.requests.as_ref(), &format!("{field}.requests"), errs);
    for (k, req) in &requests {
        let path = format!("{field}.requests[{k}]");
        let shown = r
            .requests
            .as_ref()
            .and_then(|m| m.get(k))
            .map(|q| q.0.as_str())
            .unwrap_or("");
        match limits.get(k) {
            Some(lim) if req > lim => {
                let lim_s = r
                    .limits
                    .as_ref()
                    .and_then(|m| m.get(k))
                    .map(|q| q.0.as_str())
                    .unwrap_or("");
                errs.push(FieldError::invalid(
                    &path,
                    shown,
                    format!("must be less than or equal to {k} limit of {lim_s}"),
                ));
            }
            Some(lim) if req != lim && (k.starts_with("hugepages-") || extended(k)) => {
                errs.push(FieldError::invalid(
                    &path,
                    shown,
                    format!("must be equal to {k} limit"),
                ));
            }
            None if k.starts_with("hugepages-") => errs.push(FieldError::forbidden(
                &path,
                "HugePages require cpu or memory",
            )),
            None if extended(k) => errs.push(FieldError::invalid(
                &path,
                shown,
                format!("must be equal to {k} limit"),
            )),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(m: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        Some(
            m.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn names_quantities_and_order() {
        let r = ResourceRequirements {
            limits: q(&[("cpu", "1"), ("memory", "1x"), ("gpu", "1")]),
            requests: q(&[("cpu", "2"), ("example.com/dev", "1")]),
            ..Default::default()
        };
        let mut errs = Vec::new();
        requirements(&r, "r", &mut errs);
        let f: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            f,
            [
                "r.limits[gpu]",
                "r.limits[memory]",
                "r.requests[cpu]",
                "r.requests[example.com/dev]"
            ]
        );
        assert_eq!(
            errs[2].detail,
            "must be less than or equal to cpu limit of 1"
        );
    }
}
