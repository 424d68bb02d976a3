//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: a container's CRI log.
//!
//! Query: `container` (defaults to the only container), `previous` (the
//! attempt before the current one, kept by the kubelet), `tailLines`,
//! `sinceSeconds`, `timestamps`, `limitBytes`, `follow`. The current
//! attempt is the record with the highest `config.attempt` for the name.
//!
//! `follow` polls the log every [`FOLLOW_POLL`] and streams complete new
//! lines until the container has exited and the log is drained. Lines are
//! counted over all files of the log (rotation aware through
//! `herd_runtime::logs::read_log`); if rotation deletes the oldest file
//! while following, lines may be skipped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use herd_runtime::logs::{LogEntry, read_log};
use herd_runtime::pod::{ContainerRecord, ContainerState, PodRuntime};
use serde_json::Value;

use super::query::Query;
use super::{ApiResult, ApiState, Failure};
use crate::api::{ApiError, Resource};
use crate::store::Key;

pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The pod, its uid and the chosen container name.
pub(crate) struct Target {
    pub uid: String,
    pub container: String,
    pub runtime: Arc<PodRuntime>,
}

/// Finds the pod and container a log/exec request names, with the API
/// server's messages.
pub(crate) fn resolve(
    state: &ApiState,
    ns: &str,
    name: &str,
    container: Option<&str>,
) -> Result<Target, Failure> {
    let pod = state
        .store
        .get(&Key::namespaced(Resource::Pods, ns, name))?;
    let runtime = state
        .runtime
        .clone()
        .ok_or_else(|| ApiError::unavailable("this node runs no containers"))?;
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str);
    if node != Some(state.node_name.as_str()) {
        return Err(ApiError::bad_request(format!(
            "pod {name} is not running on this node ({})",
            node.unwrap_or("not scheduled")
        ))
        .into());
    }
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    let init = names("initContainers");
    let container = match container.filter(|c| !c.is_empty()) {
        Some(c) => {
            if !containers.iter().chain(init.iter()).any(|n| n == c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                ))
                .into());
            }
            c.to_string()
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ))
            .into());
        }
    };
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Ok(Target {
        uid,
        container,
        runtime,
    })
}

/// The container's attempts, oldest first.
pub(crate) fn attempts(t: &Target) -> Result<Vec<(ContainerRecord, ContainerState)>, Failure> {
    let list = t
        .runtime
        .list_containers(&t.uid)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut v: Vec<_> = list
        .into_iter()
        .filter(|s| s.record.config.name == t.container)
        .map(|s| (s.record, s.state))
        .collect();
    v.sort_by_key(|(r, _)| r.config.attempt);
    Ok(v)
}

pub(crate) fn waiting(container: &str, pod: &str) -> Failure {
    ApiError::bad_request(format!(
        "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
    ))
    .into()
}

#[derive(Debug, Clone, Copy)]
struct Format {
    timestamps: bool,
    since: Option<SystemTime>,
}

fn render(out: &mut Vec<u8>, e: &LogEntry, f: Format) {
    if f.since.is_some_and(|s| e.time < s) {
        return;
    }
    if f.timestamps {
        out.extend_from_slice(
            herd_runtime::logs::timestamp::format_rfc3339_nano(e.time).as_bytes(),
        );
        out.push(b' ');
    }
    out.extend_from_slice(&e.content);
    if e.complete {
        out.push(b'\n');
    }
}

pub async fn log(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    let previous = q.flag("previous")?;
    let follow = q.flag("follow")? && !previous;
    let tail = q.int("tailLines")?.map(|n| n.max(0) as usize);
    let limit = q.int("limitBytes")?.filter(|n| *n > 0).map(|n| n as usize);
    let format = Format {
        timestamps: q.flag("timestamps")?,
        since: q
            .int("sinceSeconds")?
            .filter(|s| *s > 0)
            .map(|s| SystemTime::now() - Duration::from_secs(s.unsigned_abs())),
    };
    let container = q.get("container").map(str::to_string);
    let st = state.clone();
    let (target, rec) = tokio::task::spawn_blocking(move || {
        let t = resolve(&st, &ns, &name, container.as_deref())?;
        let mut all = attempts(&t)?;
        let pick = if previous {
            all.len().checked_sub(2).map(|i| all.swap_remove(i))
        } else {
            all.pop()
        };
        match pick {
            Some((rec, _)) => Ok((t, rec)),
            None if previous => Err(Failure::from(ApiError::bad_request(format!(
                "previous terminated container \"{}\" in pod \"{name}\" not found",
                t.container
            )))),
            None => Err(waiting(&t.container, &name)),
        }
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let path = rec.log_path.clone();
    let read = tokio::task::spawn_blocking(move || read_log(&path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let skip = tail.map_or(0, |n| read.entries.len().saturating_sub(n));
    let mut out = Vec::new();
    let mut emitted = read.entries.len();
    for (i, e) in read.entries.iter().enumerate().skip(skip) {
        if follow && !e.complete {
            // A partial line is sent once it is complete (or at the end).
            emitted = i;
            break;
        }
        render(&mut out, e, format);
    }
    if !follow {
        if let Some(l) = limit {
            out.truncate(l);
        }
        return Ok(([(header::CONTENT_TYPE, "text/plain")], out).into_response());
    }
    let stream = Follow {
        first: Some(out),
        runtime: target.runtime,
        rec,
        emitted,
        format,
        left: limit,
        done: false,
    };
    let body = futures_util::stream::unfold(stream, |mut f| async move {
        f.next()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(bytes::Bytes::from(b)), f))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(body),
    )
        .into_response())
}

struct Follow {
    first: Option<Vec<u8>>,
    runtime: Arc<PodRuntime>,
    rec: ContainerRecord,
    emitted: usize,
    format: Format,
    left: Option<usize>,
    done: bool,
}

impl Follow {
    fn cap(&mut self, mut b: Vec<u8>) -> Vec<u8> {
        if let Some(left) = self.left.as_mut() {
            b.truncate(*left);
            *left -= b.len();
            if *left == 0 {
                self.done = true;
            }
        }
        b
    }

    async fn next(&mut self) -> Option<Vec<u8>> {
        if let Some(b) = self.first.take()
            && !b.is_empty()
        {
            return Some(self.cap(b));
        }
        while !self.done {
            let runtime = self.runtime.clone();
            let rec = self.rec.clone();
            let polled = tokio::task::spawn_blocking(move || {
                // State first: a log read after seeing Exited is complete.
                let exited = !matches!(
                    runtime.container_state(&rec),
                    Ok(ContainerState::Running { .. } | ContainerState::Created)
                );
                read_log(&rec.log_path).map(|r| (exited, r.entries))
            })
            .await;
            let Ok(Ok((exited, entries))) = polled else {
                return None;
            };
            let mut out = Vec::new();
            for e in entries.iter().skip(self.emitted) {
                if !e.complete && !exited {
                    break;
                }
                render(&mut out, e, self.format);
                self.emitted += 1;
            }
            if exited {
                self.done = true;
            }
            if !out.is_empty() {
                return Some(self.cap(out));
            }
            if !self.done {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
        None
    }
}
