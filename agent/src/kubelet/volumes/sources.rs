//! Payloads of the API-data volumes: configMap, secret, downwardAPI and
//! projected, built as the kubelet builds them (`items` select and rename
//! keys, `mode` over `defaultMode` over 0644; a missing source or key that
//! is not `optional` is an error, an optional missing source is empty).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, VolumeProjection};

use super::VolumeError;
use super::atomic::{FileData, Payload, valid_payload_path};
use crate::kubelet::env::{
    self, ObjectSource, config_map_data, metadata_field, resource_field, secret_data,
};

/// The file mode when neither `mode` nor `defaultMode` is set.
pub const DEFAULT_MODE: i32 = 0o644;

/// Where a payload's data comes from, for errors.
pub struct Ctx<'a> {
    pub volume: &'a str,
    pub namespace: &'a str,
    pub objects: &'a dyn ObjectSource,
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("volume", &self.volume)
            .finish_non_exhaustive()
    }
}

fn mode_of(volume: &str, m: Option<i32>, default: i32) -> Result<u32, VolumeError> {
    let m = m.unwrap_or(default);
    u32::try_from(m)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| VolumeError::Invalid {
            volume: volume.to_string(),
            reason: format!("file mode {m:#o} out of range"),
        })
}

fn insert(
    payload: &mut Payload,
    volume: &str,
    path: &str,
    data: Vec<u8>,
    mode: u32,
) -> Result<(), VolumeError> {
    if !valid_payload_path(path) {
        return Err(VolumeError::Invalid {
            volume: volume.to_string(),
            reason: format!("invalid path {path:?}: must be relative and not contain '..'"),
        });
    }
    payload.insert(path.to_string(), FileData { data, mode });
    Ok(())
}

/// Keys → files (`items` or every key).
fn keyed(
    ctx: &Ctx,
    payload: &mut Payload,
    kind: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: i32,
) -> Result<(), VolumeError> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                let Some(bytes) = data.get(&it.key) else {
                    if optional {
                        continue;
                    }
                    return Err(VolumeError::MissingKey {
                        volume: ctx.volume.to_string(),
                        kind: kind.to_string(),
                        key: it.key.clone(),
                    });
                };
                let mode = mode_of(ctx.volume, it.mode, default_mode)?;
                insert(payload, ctx.volume, &it.path, bytes.clone(), mode)?;
            }
        }
        _ => {
            let mode = mode_of(ctx.volume, None, default_mode)?;
            for (k, v) in data {
                insert(payload, ctx.volume, k, v.clone(), mode)?;
            }
        }
    }
    Ok(())
}

fn source_err(ctx: &Ctx, reason: String) -> VolumeError {
    VolumeError::Source {
        volume: ctx.volume.to_string(),
        reason,
    }
}

pub fn config_map(
    ctx: &Ctx,
    payload: &mut Payload,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: i32,
) -> Result<(), VolumeError> {
    let cm = ctx
        .objects
        .config_map(ctx.namespace, name)
        .map_err(|r| source_err(ctx, r))?;
    let Some(cm) = cm else {
        if optional {
            return Ok(());
        }
        return Err(VolumeError::NotFound {
            volume: ctx.volume.to_string(),
            kind: "configmap",
            name: name.to_string(),
        });
    };
    let data = config_map_data(&cm);
    keyed(ctx, payload, "config", &data, items, optional, default_mode)
}

pub fn secret(
    ctx: &Ctx,
    payload: &mut Payload,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: i32,
) -> Result<(), VolumeError> {
    let s = ctx
        .objects
        .secret(ctx.namespace, name)
        .map_err(|r| source_err(ctx, r))?;
    let Some(s) = s else {
        if optional {
            return Ok(());
        }
        return Err(VolumeError::NotFound {
            volume: ctx.volume.to_string(),
            kind: "secret",
            name: name.to_string(),
        });
    };
    let data = secret_data(&s);
    keyed(ctx, payload, "secret", &data, items, optional, default_mode)
}

/// `key="value"` lines, sorted, as the kubelet formats labels/annotations.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for (k, v) in m.into_iter().flatten() {
        let quoted = serde_json::to_string(v).unwrap_or_default();
        out.push_str(&format!("{k}={quoted}\n"));
    }
    out.trim_end_matches('\n').to_string()
}

pub fn downward_api(
    ctx: &Ctx,
    payload: &mut Payload,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
) -> Result<(), VolumeError> {
    let to_err = |e: env::EnvError| VolumeError::Invalid {
        volume: ctx.volume.to_string(),
        reason: e.to_string(),
    };
    for it in items {
        let value =
            if let Some(f) = &it.field_ref {
                match f.field_path.as_str() {
                    "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
                    "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
                    p => metadata_field(pod, f).map_err(to_err)?.ok_or_else(|| {
                        VolumeError::Invalid {
                            volume: ctx.volume.to_string(),
                            reason: format!("unsupported fieldPath: {p}"),
                        }
                    })?,
                }
            } else if let Some(r) = &it.resource_field_ref {
                resource_field(pod, None, r, ctx.node_cpu_millis, ctx.node_memory_bytes)
                    .map_err(to_err)?
            } else {
                return Err(VolumeError::Invalid {
                    volume: ctx.volume.to_string(),
                    reason: format!(
                        "item {:?} has neither fieldRef nor resourceFieldRef",
                        it.path
                    ),
                });
            };
        let mode = mode_of(ctx.volume, it.mode, default_mode)?;
        insert(payload, ctx.volume, &it.path, value.into_bytes(), mode)?;
    }
    Ok(())
}

pub fn projected(
    ctx: &Ctx,
    payload: &mut Payload,
    pod: &Pod,
    sources: &[VolumeProjection],
    default_mode: i32,
) -> Result<(), VolumeError> {
    for s in sources {
        if let Some(c) = &s.config_map {
            config_map(
                ctx,
                payload,
                &c.name,
                c.items.as_ref(),
                c.optional == Some(true),
                default_mode,
            )?;
        } else if let Some(c) = &s.secret {
            secret(
                ctx,
                payload,
                &c.name,
                c.items.as_ref(),
                c.optional == Some(true),
                default_mode,
            )?;
        } else if let Some(d) = &s.downward_api {
            downward_api(
                ctx,
                payload,
                pod,
                d.items.as_deref().unwrap_or_default(),
                default_mode,
            )?;
        } else if s.service_account_token.is_some() {
            // No service accounts or token issuer yet: the token file is
            // left out, the rest of the volume is served.
            tracing::debug!(
                volume = ctx.volume,
                "serviceAccountToken projection skipped"
            );
        } else {
            return Err(VolumeError::Unsupported {
                volume: ctx.volume.to_string(),
                kind: "projected source (clusterTrustBundle)".to_string(),
            });
        }
    }
    Ok(())
}
