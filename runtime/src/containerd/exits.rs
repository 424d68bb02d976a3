//! Exits and OOM kills of containerd tasks, recorded in herd's files.
//!
//! One subscription to containerd's event stream (`/tasks/oom`,
//! `/tasks/exit` of herd's namespace) runs for the backend's lifetime and
//! is reopened whenever it breaks (containerd restarted). An OOM event
//! leaves an `oom` mark in the container's dir (durable, so it survives an
//! agent restart between the kill and the exit); the init process's exit
//! writes `exit.json` in the monitor's format once the logger marked the
//! log complete (bounded wait). Events are not replayed by containerd, so
//! whatever the agent missed is found by [`record_from_task`] when a
//! container's state is read: a stopped task's status and exit time, with
//! the OOM mark or, failing it, the container cgroup's `oom_kill` counter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use containerd_client::events::{TaskExit, TaskOom};
use containerd_client::services::v1::SubscribeRequest;
use containerd_client::services::v1::events_client::EventsClient;
use prost::Message;
use tonic::Request;

use super::Client;
use super::logger;
use crate::logs::timestamp::format_rfc3339_nano;
use crate::monitor::ExitRecord;
use crate::monitor::state;
use crate::pod::RuntimeError;

/// The mark an OOM event leaves in the container's dir.
pub const OOM_MARK: &str = "oom";
/// How long an exit waits for the logger to finish the log.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Where a running container's files are, by container id.
#[derive(Debug, Clone)]
pub struct Watched {
    pub pod_dir: PathBuf,
    pub oom_counter: PathBuf,
}

/// The containers whose exits the subscription records.
#[derive(Debug, Default)]
pub struct Registry {
    map: Mutex<HashMap<String, Watched>>,
}

impl Registry {
    pub fn insert(&self, id: &str, w: Watched) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(id.to_string(), w);
        }
    }
    pub fn remove(&self, id: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(id);
        }
    }
    fn get(&self, id: &str) -> Option<Watched> {
        self.map.lock().ok().and_then(|m| m.get(id).cloned())
    }
}

/// The container's dir under its pod dir.
pub fn container_dir(pod_dir: &Path, id: &str) -> PathBuf {
    state::container_dir(pod_dir, id)
}

/// Whether the container was OOM-killed: the event's mark, or the
/// container cgroup's counter (while the cgroup still exists).
fn oom_killed(pod_dir: &Path, id: &str, oom_counter: &Path) -> bool {
    container_dir(pod_dir, id).join(OOM_MARK).exists()
        || state::read_oom_kills(oom_counter).is_ok_and(|n| n > 0)
}

/// Writes `exit.json` (unless already written) and returns the record.
pub fn record_exit(
    pod_dir: &Path,
    id: &str,
    oom_counter: &Path,
    exit_status: u32,
    exited_at: Option<SystemTime>,
) -> Result<ExitRecord, RuntimeError> {
    if let Some(r) = state::read_exit(pod_dir, id)? {
        return Ok(r);
    }
    let dir = container_dir(pod_dir, id);
    logger::request_drain(&dir);
    let deadline = Instant::now() + DRAIN_WAIT;
    while !logger::drained(&dir) && Instant::now() < deadline && dir.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = state::read_started(pod_dir, id)?;
    let finished = exited_at.unwrap_or_else(SystemTime::now);
    let code = exit_status as i32;
    let record = ExitRecord {
        exit_code: code,
        signal: (code > 128 && code < 160).then_some(code - 128),
        oom_killed: oom_killed(pod_dir, id, oom_counter),
        finished_at: format_rfc3339_nano(finished),
        started_at: started
            .map(|s| s.started_at)
            .unwrap_or_else(|| format_rfc3339_nano(finished)),
    };
    if dir.exists() {
        state::write_json_atomic(&state::exit_path(pod_dir, id), &record, true)?;
    }
    Ok(record)
}

/// A protobuf timestamp as a `SystemTime` (None for unset/zero).
pub fn system_time(t: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    let t = t?;
    if t.seconds <= 0 {
        return None;
    }
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(t.seconds as u64)
            + Duration::from_nanos(t.nanos.max(0) as u64),
    )
}

/// Records an exit from a task's status as containerd reports it.
pub fn record_from_task(
    pod_dir: &Path,
    id: &str,
    oom_counter: &Path,
    exit_status: u32,
    exited_at: Option<&prost_types::Timestamp>,
) -> Result<ExitRecord, RuntimeError> {
    record_exit(
        pod_dir,
        id,
        oom_counter,
        exit_status,
        system_time(exited_at),
    )
}

/// Subscribes to the namespace's task events for as long as `registry` is
/// referenced elsewhere; reopens a broken subscription.
pub fn spawn_subscription(client: &Client, registry: Arc<Registry>) {
    let c = client.clone();
    let weak = Arc::downgrade(&registry);
    drop(registry);
    client.handle().spawn(async move {
        let filter = format!(
            "namespace=={},topic~=\"^/tasks/(exit|oom)$\"",
            c.namespace()
        );
        loop {
            if weak.strong_count() == 0 {
                return;
            }
            let sub = EventsClient::new(c.channel())
                .subscribe(Request::new(SubscribeRequest {
                    filters: vec![filter.clone()],
                }))
                .await;
            let mut stream = match sub {
                Ok(s) => s.into_inner(),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            while let Ok(Some(env)) = stream.message().await {
                let Some(reg) = weak.upgrade() else { return };
                let Some(ev) = env.event else { continue };
                match env.topic.as_str() {
                    "/tasks/oom" => {
                        if let Ok(e) = TaskOom::decode(&ev.value[..])
                            && let Some(w) = reg.get(&e.container_id)
                        {
                            let _ = std::fs::write(
                                container_dir(&w.pod_dir, &e.container_id).join(OOM_MARK),
                                b"",
                            );
                        }
                    }
                    "/tasks/exit" => {
                        let Ok(e) = TaskExit::decode(&ev.value[..]) else {
                            continue;
                        };
                        // Exec'd processes exit with their own id.
                        if e.id != e.container_id {
                            continue;
                        }
                        if let Some(w) = reg.get(&e.container_id) {
                            let at = e.exited_at;
                            let id = e.container_id.clone();
                            // Waits for the logger: off the event loop.
                            tokio::task::spawn_blocking(move || {
                                let _ = record_from_task(
                                    &w.pod_dir,
                                    &id,
                                    &w.oom_counter,
                                    e.exit_status,
                                    at.as_ref(),
                                );
                            });
                        }
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
