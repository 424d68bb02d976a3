//! Object metadata, ConfigMaps, Secrets (k8s `ValidateObjectMeta`,
//! `ValidateConfigMap`, `ValidateSecret`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::invalid_each;
use super::names;
use crate::api::FieldError;

/// Total size of all annotation keys and values (256 KiB).
pub const ANNOTATIONS_MAX_BYTES: usize = 256 << 10;
/// Total size of a ConfigMap's or Secret's data (1 MiB).
pub const DATA_MAX_BYTES: usize = 1 << 20;

/// `ValidateObjectMeta`: `namespaced` objects need a namespace (a DNS
/// label), cluster-scoped ones must not have one; `label_names` selects
/// DNS-1123 labels (namespaces) instead of subdomains for names.
pub fn object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    label_names: bool,
    errs: &mut Vec<FieldError>,
) {
    let check = |s: &str| {
        if label_names {
            names::dns1123_label(s)
        } else {
            names::dns1123_subdomain(s)
        }
    };
    let generate = meta.generate_name.as_deref().unwrap_or("");
    if !generate.is_empty() {
        invalid_each(
            errs,
            "metadata.generateName",
            generate,
            names::name_prefix(generate, label_names),
        );
    }
    match meta.name.as_deref().unwrap_or("") {
        "" if generate.is_empty() => errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
        "" => {}
        name => invalid_each(errs, "metadata.name", name, check(name)),
    }
    let ns = meta.namespace.as_deref().unwrap_or("");
    if namespaced {
        if ns.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            invalid_each(errs, "metadata.namespace", ns, names::dns1123_label(ns));
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    labels(meta.labels.as_ref(), "metadata.labels", errs);
    annotations(meta.annotations.as_ref(), errs);
    if let Some(g) = meta.generation
        && g < 0
    {
        errs.push(FieldError::invalid(
            "metadata.generation",
            g,
            "must be greater than or equal to 0",
        ));
    }
}

/// `ValidateLabels`: qualified-name keys, label-value values.
pub fn labels(labels: Option<&BTreeMap<String, String>>, field: &str, errs: &mut Vec<FieldError>) {
    for (k, v) in labels.into_iter().flatten() {
        invalid_each(errs, field, k, names::qualified_name(k));
        invalid_each(errs, field, v, names::label_value(v));
    }
}

fn annotations(ann: Option<&BTreeMap<String, String>>, errs: &mut Vec<FieldError>) {
    let mut total = 0usize;
    for (k, v) in ann.into_iter().flatten() {
        invalid_each(
            errs,
            "metadata.annotations",
            k,
            names::qualified_name(&k.to_ascii_lowercase()),
        );
        total += k.len() + v.len();
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errs.push(FieldError::too_long(
            "metadata.annotations",
            ANNOTATIONS_MAX_BYTES,
        ));
    }
}

fn keys<'a>(
    field: &str,
    keys: impl Iterator<Item = &'a String>,
    errs: &mut Vec<FieldError>,
) -> usize {
    let mut n = 0;
    for k in keys {
        invalid_each(errs, &format!("{field}[{k}]"), k, names::config_map_key(k));
        n += 1;
    }
    n
}

/// `ValidateConfigMap`: keys, no key in both `data` and `binaryData`,
/// total size at most 1 MiB.
pub fn config_map(cm: &ConfigMap, errs: &mut Vec<FieldError>) {
    let mut total = 0usize;
    if let Some(d) = cm.data.as_ref() {
        keys("data", d.keys(), errs);
        total += d.values().map(String::len).sum::<usize>();
    }
    if let Some(b) = cm.binary_data.as_ref() {
        keys("binaryData", b.keys(), errs);
        for (k, v) in b {
            if cm.data.as_ref().is_some_and(|d| d.contains_key(k)) {
                errs.push(FieldError::invalid(
                    format!("binaryData[{k}]"),
                    k,
                    "duplicate of key present in data",
                ));
            }
            total += v.0.len();
        }
    }
    if total > DATA_MAX_BYTES {
        errs.push(FieldError::too_long("data", DATA_MAX_BYTES));
    }
}

/// Keys a typed Secret must carry (k8s `ValidateSecret`).
fn required_keys(type_: &str) -> &'static [&'static str] {
    match type_ {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    }
}

/// `ValidateSecret`: keys, the type's required keys and annotations, type
/// syntax, total size at most 1 MiB.
pub fn secret(s: &Secret, errs: &mut Vec<FieldError>) {
    let mut total = 0usize;
    let mut all: Vec<&String> = Vec::new();
    if let Some(d) = s.data.as_ref() {
        keys("data", d.keys(), errs);
        total += d.values().map(|v| v.0.len()).sum::<usize>();
        all.extend(d.keys());
    }
    if let Some(d) = s.string_data.as_ref() {
        keys("stringData", d.keys(), errs);
        total += d.values().map(String::len).sum::<usize>();
        all.extend(d.keys());
    }
    let type_ = s.type_.as_deref().unwrap_or("Opaque");
    if type_.is_empty() {
        errs.push(FieldError::required("type", ""));
    } else if type_ != "Opaque" {
        invalid_each(errs, "type", type_, names::qualified_name(type_));
    }
    for key in required_keys(type_) {
        if !all.iter().any(|k| k.as_str() == *key) {
            errs.push(FieldError::required(format!("data[{key}]"), ""));
        }
    }
    if type_ == "kubernetes.io/basic-auth"
        && !all.iter().any(|k| *k == "username" || *k == "password")
    {
        errs.push(FieldError::required(
            "data[username]",
            "either username or password is required",
        ));
    }
    if type_ == "kubernetes.io/service-account-token"
        && s.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("kubernetes.io/service-account.name"))
    {
        errs.push(FieldError::required(
            "metadata.annotations[kubernetes.io/service-account.name]",
            "",
        ));
    }
    if total > DATA_MAX_BYTES {
        errs.push(FieldError::too_long("data", DATA_MAX_BYTES));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            ..Default::default()
        }
    }

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn metadata_rules() {
        let mut errs = Vec::new();
        object_meta(&meta("ok.name", Some("default")), true, false, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        object_meta(&meta("", None), true, false, &mut errs);
        assert_eq!(fields(&errs), ["metadata.name", "metadata.namespace"]);
        errs.clear();
        object_meta(&meta("a.b", Some("x")), false, true, &mut errs);
        assert_eq!(fields(&errs), ["metadata.name", "metadata.namespace"]);
        errs.clear();
        let mut m = meta("a", Some("d"));
        m.labels = Some(BTreeMap::from([("bad key".into(), "v v".into())]));
        m.annotations = Some(BTreeMap::from([("a".into(), "x".repeat(300 << 10))]));
        object_meta(&m, true, false, &mut errs);
        assert_eq!(
            fields(&errs),
            ["metadata.labels", "metadata.labels", "metadata.annotations"]
        );
        assert_eq!(errs[1].value.as_deref(), Some("v v"));
    }

    #[test]
    fn config_map_rules() {
        let cm = ConfigMap {
            data: Some(BTreeMap::from([
                ("ok".into(), "v".into()),
                ("b/d".into(), "v".into()),
            ])),
            binary_data: Some(BTreeMap::from([(
                "ok".into(),
                k8s_openapi::ByteString(vec![1]),
            )])),
            ..Default::default()
        };
        let mut errs = Vec::new();
        config_map(&cm, &mut errs);
        assert_eq!(fields(&errs), ["data[b/d]", "binaryData[ok]"]);
    }

    #[test]
    fn secret_rules() {
        let s = Secret {
            type_: Some("kubernetes.io/tls".into()),
            string_data: Some(BTreeMap::from([("tls.crt".into(), "x".into())])),
            ..Default::default()
        };
        let mut errs = Vec::new();
        secret(&s, &mut errs);
        assert_eq!(fields(&errs), ["data[tls.key]"]);
    }
}
