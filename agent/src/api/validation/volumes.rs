//! Pod volumes and container volume mounts (k8s `ValidateVolumes`,
//! `ValidateVolumeMounts`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{KeyToPath, Volume, VolumeMount};

use super::invalid_each;
use super::names;
use crate::api::{FieldError, FieldErrorKind, quantity};

const MODE_DETAIL: &str = "must be a number between 0 and 0777 (octal), both inclusive";

fn mode(m: Option<i32>, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(m) = m
        && !(0..=0o777).contains(&m)
    {
        errs.push(FieldError::invalid(field, m, MODE_DETAIL));
    }
}

fn items(list: Option<&Vec<KeyToPath>>, field: &str, errs: &mut Vec<FieldError>) {
    for (i, it) in list.into_iter().flatten().enumerate() {
        let f = format!("{field}.items[{i}]");
        if it.key.is_empty() {
            errs.push(FieldError::required(format!("{f}.key"), ""));
        } else {
            invalid_each(
                errs,
                &format!("{f}.key"),
                &it.key,
                names::config_map_key(&it.key),
            );
        }
        path(&it.path, &format!("{f}.path"), errs);
        mode(it.mode, &format!("{f}.mode"), errs);
    }
}

fn path(p: &str, field: &str, errs: &mut Vec<FieldError>) {
    if p.is_empty() {
        errs.push(FieldError::required(field, ""));
    } else {
        invalid_each(errs, field, p, names::local_descending_path(p));
    }
}

const HOST_PATH_TYPES: [&str; 8] = [
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

/// Checks `spec.volumes`; returns the volume names.
pub fn volumes(vols: Option<&Vec<Volume>>, errs: &mut Vec<FieldError>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (i, v) in vols.into_iter().flatten().enumerate() {
        let f = format!("spec.volumes[{i}]");
        if v.name.is_empty() {
            errs.push(FieldError::required(format!("{f}.name"), ""));
        } else {
            invalid_each(
                errs,
                &format!("{f}.name"),
                &v.name,
                names::dns1123_label(&v.name),
            );
            if !seen.insert(v.name.clone()) {
                errs.push(FieldError::duplicate(format!("{f}.name"), &v.name));
            }
        }
        // The source fields are the JSON keys other than `name`.
        let sources: Vec<String> = match serde_json::to_value(v) {
            Ok(serde_json::Value::Object(m)) => {
                m.keys().filter(|k| *k != "name").cloned().collect()
            }
            _ => Vec::new(),
        };
        match sources.as_slice() {
            [] => errs.push(FieldError::required(&f, "must specify a volume type")),
            [_] => {}
            [_, rest @ ..] => {
                for s in rest {
                    errs.push(FieldError::forbidden(
                        format!("{f}.{s}"),
                        "may not specify more than 1 volume type",
                    ));
                }
            }
        }
        volume_source(v, &f, errs);
    }
    seen
}

fn volume_source(v: &Volume, f: &str, errs: &mut Vec<FieldError>) {
    if let Some(e) = v.empty_dir.as_ref() {
        let medium = e.medium.as_deref().unwrap_or("");
        if !(medium.is_empty() || medium == "Memory" || medium.starts_with("HugePages")) {
            errs.push(FieldError::not_supported(
                format!("{f}.emptyDir.medium"),
                medium,
                &["", "Memory", "HugePages"],
            ));
        }
        if let Some(q) = e.size_limit.as_ref() {
            let field = format!("{f}.emptyDir.sizeLimit");
            match quantity::parse(&q.0) {
                Ok(p) if p.milli() < 0 => errs.push(FieldError::invalid(
                    field,
                    &q.0,
                    "must be greater than or equal to 0",
                )),
                Ok(_) => {}
                Err(e) => errs.push(FieldError::invalid(field, &q.0, e.to_string())),
            }
        }
    }
    if let Some(h) = v.host_path.as_ref() {
        path_host(&h.path, &format!("{f}.hostPath.path"), errs);
        let t = h.type_.as_deref().unwrap_or("");
        if !HOST_PATH_TYPES.contains(&t) {
            errs.push(FieldError::not_supported(
                format!("{f}.hostPath.type"),
                t,
                &HOST_PATH_TYPES,
            ));
        }
    }
    if let Some(c) = v.config_map.as_ref() {
        let name = c.name.as_str();
        if name.is_empty() {
            errs.push(FieldError::required(format!("{f}.configMap.name"), ""));
        } else {
            invalid_each(
                errs,
                &format!("{f}.configMap.name"),
                name,
                names::dns1123_subdomain(name),
            );
        }
        mode(c.default_mode, &format!("{f}.configMap.defaultMode"), errs);
        items(c.items.as_ref(), &format!("{f}.configMap"), errs);
    }
    if let Some(s) = v.secret.as_ref() {
        match s.secret_name.as_deref().unwrap_or("") {
            "" => errs.push(FieldError::required(format!("{f}.secret.secretName"), "")),
            name => invalid_each(
                errs,
                &format!("{f}.secret.secretName"),
                name,
                names::dns1123_subdomain(name),
            ),
        }
        mode(s.default_mode, &format!("{f}.secret.defaultMode"), errs);
        items(s.items.as_ref(), &format!("{f}.secret"), errs);
    }
    if let Some(d) = v.downward_api.as_ref() {
        mode(
            d.default_mode,
            &format!("{f}.downwardAPI.defaultMode"),
            errs,
        );
        for (i, it) in d.items.iter().flatten().enumerate() {
            let fi = format!("{f}.downwardAPI.items[{i}]");
            path(&it.path, &format!("{fi}.path"), errs);
            mode(it.mode, &format!("{fi}.mode"), errs);
            if it.field_ref.is_some() == it.resource_field_ref.is_some() {
                errs.push(FieldError::invalid(
                    &fi,
                    "",
                    "fieldRef and resourceFieldRef can not be specified simultaneously",
                ));
            }
        }
    }
    if let Some(p) = v.projected.as_ref() {
        mode(p.default_mode, &format!("{f}.projected.defaultMode"), errs);
    }
}

fn path_host(p: &str, field: &str, errs: &mut Vec<FieldError>) {
    if p.is_empty() {
        errs.push(FieldError::required(field, ""));
    } else if p.split('/').any(|e| e == "..") {
        errs.push(FieldError::invalid(field, p, "must not contain '..'"));
    }
}

/// Checks one container's `volumeMounts` at `field`.
pub fn mounts(
    list: Option<&Vec<VolumeMount>>,
    field: &str,
    volumes: &BTreeSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let mut paths = BTreeSet::new();
    for (i, m) in list.into_iter().flatten().enumerate() {
        let f = format!("{field}[{i}]");
        if m.name.is_empty() {
            errs.push(FieldError::required(format!("{f}.name"), ""));
        } else if !volumes.contains(&m.name) {
            errs.push(FieldError {
                kind: FieldErrorKind::NotFound,
                field: format!("{f}.name"),
                value: Some(m.name.clone()),
                detail: String::new(),
            });
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(format!("{f}.mountPath"), ""));
        } else {
            if !m.mount_path.starts_with('/') {
                errs.push(FieldError::invalid(
                    format!("{f}.mountPath"),
                    &m.mount_path,
                    "must be an absolute path",
                ));
            }
            if !paths.insert(m.mount_path.trim_end_matches('/').to_string()) {
                errs.push(FieldError::invalid(
                    format!("{f}.mountPath"),
                    &m.mount_path,
                    "must be unique",
                ));
            }
        }
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            invalid_each(
                errs,
                &format!("{f}.subPath"),
                sp,
                names::local_descending_path(sp),
            );
        }
        if let Some(mp) = m.mount_propagation.as_deref() {
            const P: [&str; 3] = ["Bidirectional", "HostToContainer", "None"];
            if !P.contains(&mp) {
                errs.push(FieldError::not_supported(
                    format!("{f}.mountPropagation"),
                    mp,
                    &P,
                ));
            }
        }
    }
}
