//! Container environment (k8s `ValidateEnv`, `validateEnvVarValueFrom`).

use k8s_openapi::api::core::v1::EnvVar;

use super::invalid_each;
use super::names;
use crate::api::FieldError;

const FIELD_PATHS: [&str; 11] = [
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

pub fn env_var(e: &EnvVar, f: &str, errs: &mut Vec<FieldError>) {
    if e.name.is_empty() {
        errs.push(FieldError::required(format!("{f}.name"), ""));
    } else {
        invalid_each(
            errs,
            &format!("{f}.name"),
            &e.name,
            names::env_var_name(&e.name),
        );
    }
    let Some(vf) = e.value_from.as_ref() else {
        return;
    };
    let fv = format!("{f}.valueFrom");
    let n = [
        vf.field_ref.is_some(),
        vf.resource_field_ref.is_some(),
        vf.config_map_key_ref.is_some(),
        vf.secret_key_ref.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
        errs.push(FieldError::invalid(
            &fv,
            "",
            "may not be specified when `value` is not empty",
        ));
    }
    match n {
        0 => errs.push(FieldError::invalid(
            &fv,
            "",
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        )),
        1 => {}
        _ => errs.push(FieldError::invalid(
            &fv,
            "",
            "may not have more than one field specified at a time",
        )),
    }
    if let Some(r) = vf.field_ref.as_ref() {
        let p = r.field_path.as_str();
        let fp = format!("{fv}.fieldRef.fieldPath");
        if p.is_empty() {
            errs.push(FieldError::required(fp, ""));
        } else if !(FIELD_PATHS.contains(&p)
            || ["metadata.labels['", "metadata.annotations['"]
                .iter()
                .any(|pre| p.starts_with(pre) && p.ends_with("']")))
            || p == "metadata.labels"
            || p == "metadata.annotations"
        {
            errs.push(FieldError::not_supported(fp, p, &FIELD_PATHS));
        }
        if let Some(v) = r.api_version.as_deref()
            && !v.is_empty()
            && v != "v1"
        {
            errs.push(FieldError::not_supported(
                format!("{fv}.fieldRef.apiVersion"),
                v,
                &["v1"],
            ));
        }
    }
    if let Some(r) = vf.resource_field_ref.as_ref() {
        const R: [&str; 6] = [
            "limits.cpu",
            "limits.ephemeral-storage",
            "limits.memory",
            "requests.cpu",
            "requests.ephemeral-storage",
            "requests.memory",
        ];
        if !R.contains(&r.resource.as_str()) && !r.resource.starts_with("limits.hugepages-") {
            errs.push(FieldError::not_supported(
                format!("{fv}.resourceFieldRef.resource"),
                &r.resource,
                &R,
            ));
        }
    }
    for (name, key, sub) in [
        (
            vf.config_map_key_ref.as_ref().map(|r| r.name.as_str()),
            vf.config_map_key_ref.as_ref().map(|r| r.key.as_str()),
            "configMapKeyRef",
        ),
        (
            vf.secret_key_ref.as_ref().map(|r| r.name.as_str()),
            vf.secret_key_ref.as_ref().map(|r| r.key.as_str()),
            "secretKeyRef",
        ),
    ] {
        let (Some(name), Some(key)) = (name, key) else {
            continue;
        };
        if name.is_empty() {
            errs.push(FieldError::required(format!("{fv}.{sub}.name"), ""));
        }
        if key.is_empty() {
            errs.push(FieldError::required(format!("{fv}.{sub}.key"), ""));
        } else {
            invalid_each(
                errs,
                &format!("{fv}.{sub}.key"),
                key,
                names::config_map_key(key),
            );
        }
    }
}
