//! kubectl's output formats: the `get` tables (columns and the rules
//! behind them), `-o yaml|json|name`.
//!
//! The pod STATUS, READY and RESTARTS columns follow kubectl 1.32's
//! `printPod` rule for rule (init containers `Init:N/M`, sidecars,
//! waiting/terminated reasons, `Terminating`, `status.reason`). Times are
//! relative to a `now` passed in, so output is testable.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::Resource;

use super::duration::{human, since};
use super::tabwriter;

/// `-o` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Output, String> {
        Ok(match s {
            "wide" => Output::Wide,
            "yaml" => Output::Yaml,
            "json" => Output::Json,
            "name" => Output::Name,
            _ => {
                return Err(format!(
                    "unable to match a printer suitable for the output format \"{s}\", \
                     allowed formats are: json,name,wide,yaml"
                ));
            }
        })
    }
}

/// A value that does not decode as the resource it claims to be.
#[derive(Debug, thiserror::Error)]
#[error("decoding {resource} {name:?}: {source}")]
pub struct PrintError {
    pub resource: Resource,
    pub name: String,
    #[source]
    pub source: serde_json::Error,
}

pub(super) fn typed<T: DeserializeOwned>(resource: Resource, v: &Value) -> Result<T, PrintError> {
    serde_json::from_value(v.clone()).map_err(|source| PrintError {
        resource,
        name: v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        source,
    })
}

/// Column headers of a resource's table.
pub fn header(resource: Resource, wide: bool, with_namespace: bool) -> Vec<&'static str> {
    let mut h = Vec::new();
    if with_namespace && resource.namespaced() {
        h.push("NAMESPACE");
    }
    match resource {
        Resource::Pods => {
            h.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
            if wide {
                h.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
            }
        }
        Resource::ConfigMaps => h.extend(["NAME", "DATA", "AGE"]),
        Resource::Secrets => h.extend(["NAME", "TYPE", "DATA", "AGE"]),
        Resource::Namespaces => h.extend(["NAME", "STATUS", "AGE"]),
        Resource::Events => h.extend(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]),
        other => match super::printers_kinds::header(other, wide) {
            Some(cols) => h.extend(cols),
            None => h.extend(["NAME", "AGE"]),
        },
    }
    h
}

/// One table row of an object.
pub fn row(
    resource: Resource,
    obj: &Value,
    now: Timestamp,
    wide: bool,
    with_namespace: bool,
) -> Result<Vec<String>, PrintError> {
    let mut r = Vec::new();
    if with_namespace && resource.namespaced() {
        r.push(
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    if let Some(cols) = super::printers_kinds::row(resource, obj, now, wide)? {
        r.extend(cols);
        return Ok(r);
    }
    match resource {
        Resource::Pods => r.extend(pod_row(&typed(resource, obj)?, now, wide)),
        Resource::ConfigMaps => {
            let cm: ConfigMap = typed(resource, obj)?;
            let n = cm.data.as_ref().map_or(0, |d| d.len())
                + cm.binary_data.as_ref().map_or(0, |d| d.len());
            r.extend([
                cm.metadata.name.clone().unwrap_or_default(),
                n.to_string(),
                since(cm.metadata.creation_timestamp.as_ref().map(|t| &t.0), now),
            ]);
        }
        Resource::Secrets => {
            let s: Secret = typed(resource, obj)?;
            r.extend([
                s.metadata.name.clone().unwrap_or_default(),
                s.type_.clone().unwrap_or_else(|| "Opaque".into()),
                s.data.as_ref().map_or(0, |d| d.len()).to_string(),
                since(s.metadata.creation_timestamp.as_ref().map(|t| &t.0), now),
            ]);
        }
        Resource::Namespaces => {
            let ns: Namespace = typed(resource, obj)?;
            r.extend([
                ns.metadata.name.clone().unwrap_or_default(),
                ns.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "Active".into()),
                since(ns.metadata.creation_timestamp.as_ref().map(|t| &t.0), now),
            ]);
        }
        Resource::Events => {
            let e: Event = typed(resource, obj)?;
            let last = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let obj_ref = format!(
                "{}/{}",
                e.involved_object
                    .kind
                    .as_deref()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                e.involved_object.name.as_deref().unwrap_or_default()
            );
            r.extend([
                since(last.as_ref(), now),
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                obj_ref,
                e.message.clone().unwrap_or_default().trim().to_string(),
            ]);
        }
        _ => {
            let meta: ObjectMeta = typed(resource, &obj["metadata"])?;
            r.extend([
                meta.name.clone().unwrap_or_default(),
                since(meta.creation_timestamp.as_ref().map(|t| &t.0), now),
            ]);
        }
    }
    Ok(r)
}

/// Renders rows under a header as kubectl's tab writer does.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut text = String::new();
    if !header.is_empty() {
        text.push_str(&header.join("\t"));
        text.push('\n');
    }
    for r in rows {
        text.push_str(&r.join("\t"));
        text.push('\n');
    }
    tabwriter::align(&text, 6, 3)
}

/// The computed columns of a pod row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    pub ready: usize,
    pub total: usize,
    pub status: String,
    pub restarts: i64,
    pub last_restart: Option<Timestamp>,
}

fn is_sidecar(pod: &Pod, name: &str) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    })
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// kubectl's `printPod` computation of READY, STATUS and RESTARTS.
pub fn pod_summary(pod: &Pod) -> PodSummary {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_default();
    let mut reason = status.reason.clone().unwrap_or_else(|| phase.clone());
    if reason.is_empty() {
        reason = phase.clone();
    }
    let conditions = status.conditions.clone().unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".into();
    }
    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let total = spec.containers.len()
        + init_specs
            .iter()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;
    let mut initializing = false;
    let init_statuses = status.init_container_statuses.clone().unwrap_or_default();
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += i64::from(c.restart_count);
        let finished = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())
            .map(|t| t.0);
        last_restart = later(last_restart, finished);
        let sidecar = is_sidecar(pod, &c.name);
        if sidecar {
            sidecar_restarts += i64::from(c.restart_count);
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let state = c.state.clone().unwrap_or_default();
        if let Some(t) = &state.terminated
            && t.exit_code == 0
        {
            continue;
        }
        if sidecar && c.started == Some(true) {
            if c.ready {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = &state.terminated {
            reason = match t.reason.as_deref() {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => match t.signal {
                    Some(s) if s != 0 => format!("Init:Signal:{s}"),
                    _ => format!("Init:ExitCode:{}", t.exit_code),
                },
            };
        } else if let Some(r) = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    let initialized = conditions
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        let statuses = status.container_statuses.clone().unwrap_or_default();
        for c in statuses.iter().rev() {
            restarts += i64::from(c.restart_count);
            let finished = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.finished_at.as_ref())
                .map(|t| t.0);
            last_restart = later(last_restart, finished);
            let state = c.state.clone().unwrap_or_default();
            let waiting = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty());
            if let Some(w) = waiting {
                reason = w;
            } else if let Some(t) = &state.terminated {
                reason = match t.reason.as_deref() {
                    Some(r) if !r.is_empty() => r.to_string(),
                    _ => match t.signal {
                        Some(s) if s != 0 => format!("Signal:{s}"),
                        _ => format!("ExitCode:{}", t.exit_code),
                    },
                };
            } else if c.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
            {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        if status.reason.as_deref() == Some("NodeLost") {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    PodSummary {
        ready,
        total,
        status: reason,
        restarts,
        last_restart,
    }
}

/// kubectl's pod row: NAME READY STATUS RESTARTS AGE (+ wide columns).
pub fn pod_row(pod: &Pod, now: Timestamp, wide: bool) -> Vec<String> {
    let s = pod_summary(pod);
    let restarts = match s.last_restart {
        Some(t) if s.restarts != 0 => {
            format!(
                "{} ({} ago)",
                s.restarts,
                human(now.as_second() - t.as_second())
            )
        }
        _ => s.restarts.to_string(),
    };
    let mut r = vec![
        pod.metadata.name.clone().unwrap_or_default(),
        format!("{}/{}", s.ready, s.total),
        s.status,
        restarts,
        since(pod.metadata.creation_timestamp.as_ref().map(|t| &t.0), now),
    ];
    if wide {
        let status = pod.status.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let ip = status
            .pod_ips
            .as_ref()
            .and_then(|ips| ips.first())
            .map(|i| i.ip.clone())
            .or(status.pod_ip.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into());
        let none = |s: Option<String>| {
            s.filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into())
        };
        let gates = match spec.readiness_gates.as_deref() {
            Some(g) if !g.is_empty() => {
                let conds = status.conditions.clone().unwrap_or_default();
                let ok = g
                    .iter()
                    .filter(|gate| {
                        conds
                            .iter()
                            .find(|c| c.type_ == gate.condition_type)
                            .is_some_and(|c| c.status == "True")
                    })
                    .count();
                format!("{ok}/{}", g.len())
            }
            _ => "<none>".into(),
        };
        r.extend([
            ip,
            none(spec.node_name.clone()),
            none(status.nominated_node_name.clone()),
            gates,
        ]);
    }
    r
}

/// Ensures `apiVersion`/`kind` are set, as kubectl prints objects.
pub fn with_type(resource: Resource, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.entry("apiVersion")
            .or_insert_with(|| resource.api_version().into());
        m.entry("kind").or_insert_with(|| resource.kind().into());
    }
    obj
}

/// kubectl's `List` wrapper for several objects.
pub fn as_list(items: Vec<Value>) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    })
}

/// YAML as `-o yaml` prints it (keys sorted, as kubectl's are).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# cannot render yaml: {e}\n"))
}

/// Pretty JSON as `-o json` prints it (4-space indent, like kubectl).
pub fn to_json(v: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if serde::Serialize::serialize(v, &mut ser).is_err() {
        return v.to_string();
    }
    let mut s = String::from_utf8_lossy(&out).into_owned();
    s.push('\n');
    s
}

/// `-o name`: `pod/web`, `deployment.apps/web`.
pub fn name_of(resource: Resource, obj: &Value) -> String {
    format!(
        "{}/{}",
        kind_name(resource),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// How kubectl names a kind in messages: `pod`, `deployment.apps`.
pub fn kind_name(resource: Resource) -> String {
    let kind = resource.kind().to_ascii_lowercase();
    if resource.group().is_empty() {
        kind
    } else {
        format!("{kind}.{}", resource.group())
    }
}
