//! The scheduling loop over a [`Datastore`] (runs while this node leads).
//!
//! Lists Nodes and Pods, then watches both from the listed revisions.
//! Bound pods feed the [`Cache`](super::Cache); pods with no
//! `spec.nodeName`, `spec.schedulerName` unset or the configured name, no
//! deletionTimestamp and no schedulingGates are queued. Active pods are
//! scheduled in batches (events are drained first, so a batch sees every
//! change that arrived before it); each placement is written as an update
//! of the pod with the resourceVersion it was read at (`spec.nodeName` and
//! `PodScheduled=True`, as the binding subresource does): a conflict undoes
//! the assumption and retries the pod with its latest version. A pod that
//! fits nowhere gets `PodScheduled=False`, reason `Unschedulable`, with
//! kube-scheduler's message (written only when it changes) and is parked
//! until a node appears or changes, a bound pod goes away, or, for pods
//! with required pod affinity, a pod is bound; then it is retried after its
//! backoff. A watch that expires makes the loop list again from scratch.
//!
//! Stops (returns `Ok`) as soon as `stop` turns true or its sender is
//! dropped: leadership lost. Writes already handed to the store finish; no
//! new ones start.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::SchedulerError;
use super::info::{PodInfo, PodKey};
use super::queue::{Queue, Timing};
use super::schedule::{Config, Scheduler};
use crate::api::Resource;
use crate::store::{Datastore, EventType, Key, StoreError, WatchEvent, resource_version};

/// The scheduler name pods get by default.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Loop settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scheduler: Config,
    /// Pods whose `spec.schedulerName` is this (or unset) are ours.
    pub scheduler_name: String,
    /// Pods scheduled per batch before their bindings are written.
    pub batch_size: usize,
    pub timing: Timing,
}

impl Default for RunConfig {
    fn default() -> RunConfig {
        RunConfig {
            scheduler: Config::default(),
            scheduler_name: DEFAULT_SCHEDULER.into(),
            batch_size: 256,
            timing: Timing::default(),
        }
    }
}

/// Runs until `stop` is set (or its sender dropped); see the module docs.
pub async fn run(
    store: Arc<dyn Datastore>,
    config: RunConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SchedulerError> {
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let mut lp = Loop {
            store: store.clone(),
            sched: Scheduler::new(config.scheduler.clone()),
            queue: Queue::new(config.timing.clone()),
            config: config.clone(),
        };
        match lp.run(&mut stop).await {
            Err(SchedulerError::Store(StoreError::Expired { .. })) => {
                tracing::info!("scheduler watch expired, listing again");
            }
            other => return other,
        }
    }
}

enum Write {
    Bind(PodKey, Value, String),
    Park(PodKey, Value, String),
}

enum Outcome {
    Bound(PodKey),
    /// The pod changed under us: its latest version (if it still exists).
    Conflict(PodKey, Option<Value>),
    Gone(PodKey),
    Parked(PodKey, Value, String),
    Failed(PodKey, bool, StoreError),
}

struct Loop {
    store: Arc<dyn Datastore>,
    sched: Scheduler,
    queue: Queue,
    config: RunConfig,
}

fn pod_key(key: &Key) -> PodKey {
    PodKey {
        namespace: key.namespace.clone().unwrap_or_else(|| "default".into()),
        name: key.name.clone(),
    }
}

fn store_key(key: &PodKey) -> Key {
    Key::namespaced(Resource::Pods, &key.namespace, &key.name)
}

fn decode<'a, T: Deserialize<'a>>(v: &'a Value, what: &str) -> Result<T, SchedulerError> {
    T::deserialize(v).map_err(|e| SchedulerError::Decode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

impl Loop {
    fn ours(&self, pod: &Pod) -> bool {
        let Some(spec) = pod.spec.as_ref() else {
            return false;
        };
        spec.node_name.as_deref().is_none_or(str::is_empty)
            && spec
                .scheduler_name
                .as_deref()
                .is_none_or(|n| n.is_empty() || n == self.config.scheduler_name)
            && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
            && pod.metadata.deletion_timestamp.is_none()
    }

    fn on_pod(&mut self, kind: EventType, key: PodKey, object: Value) {
        let now = Instant::now();
        let was_bound = self.sched.cache().pod_node(&key).is_some();
        if kind == EventType::Deleted {
            self.queue.remove(&key);
            if self.sched.cache_mut().remove_pod(&key) {
                self.queue.unpark(now, false);
            }
            return;
        }
        let pod: Pod = match decode(&object, &format!("pod {key}")) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler ignores an unreadable pod");
                return;
            }
        };
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if bound {
            self.queue.remove(&key);
            if let Err(e) = self.sched.cache_mut().upsert_pod(&pod) {
                tracing::warn!(pod = %key, error = %e, "bound pod not counted");
            }
            let is_bound = self.sched.cache().pod_node(&key).is_some();
            if was_bound && !is_bound {
                // Finished: its resources are free.
                self.queue.unpark(now, false);
            } else if !was_bound && is_bound {
                self.queue.unpark(now, true);
            }
        } else if self.ours(&pod) {
            let wants_pods = PodInfo::parse(&pod).is_ok_and(|i| !i.affinity.is_empty());
            self.queue.upsert(key, object, wants_pods);
        } else {
            self.queue.remove(&key);
        }
    }

    fn on_node(&mut self, ev: WatchEvent) {
        let changed = match ev.kind {
            EventType::Deleted => {
                self.sched.cache_mut().remove_node(&ev.key.name);
                false
            }
            _ => match decode(&ev.object, &format!("node {}", ev.key.name))
                .and_then(|n| self.sched.cache_mut().upsert_node(&n))
            {
                Ok(changed) => changed,
                Err(e) => {
                    tracing::warn!(node = %ev.key.name, error = %e, "scheduler ignores a node");
                    false
                }
            },
        };
        if changed {
            self.queue.unpark(Instant::now(), false);
        }
    }

    async fn run(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), SchedulerError> {
        let store = self.store.clone();
        let (nodes, node_rv) = store.list(Resource::Nodes, None)?;
        for n in nodes {
            let name = n
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let key = Key::cluster(Resource::Nodes, name);
            self.on_node(WatchEvent {
                kind: EventType::Added,
                key,
                object: n,
                resource_version: node_rv,
            });
        }
        let (pods, pod_rv) = store.list(Resource::Pods, None)?;
        for p in pods {
            let key = PodKey {
                namespace: p
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string(),
                name: p
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            };
            self.on_pod(EventType::Added, key, p);
        }
        let mut node_watch = store.watch(Resource::Nodes, None, Some(node_rv))?;
        let mut pod_watch = store.watch(Resource::Pods, None, Some(pod_rv))?;
        tracing::info!(
            nodes = self.sched.cache().node_count(),
            pending = self.queue.len(),
            "scheduler started"
        );
        loop {
            let wake = self.queue.next_wakeup();
            let has_active = self.queue.has_active();
            tokio::select! {
                biased;
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        return Ok(());
                    }
                }
                ev = node_watch.next() => match ev? {
                    Some(ev) => self.on_node(ev),
                    None => return Ok(()),
                },
                ev = pod_watch.next() => match ev? {
                    Some(ev) => self.on_pod(ev.kind, pod_key(&ev.key), ev.object),
                    None => return Ok(()),
                },
                _ = sleep_until(wake) => self.queue.tick(Instant::now()),
                _ = std::future::ready(()), if has_active => {
                    let writes = self.schedule_batch();
                    let store = self.store.clone();
                    let mut task = tokio::task::spawn_blocking(move || write_all(&*store, writes));
                    let outcomes = loop {
                        tokio::select! {
                            biased;
                            r = stop.changed() => {
                                if r.is_err() || *stop.borrow() {
                                    return Ok(());
                                }
                            }
                            r = &mut task => break r.map_err(|e| SchedulerError::Task {
                                what: "pod bindings".into(),
                                reason: e.to_string(),
                            })?,
                        }
                    };
                    self.apply(outcomes);
                }
            }
        }
    }

    fn schedule_batch(&mut self) -> Vec<Write> {
        let batch = self.queue.pop_batch(self.config.batch_size.max(1));
        let mut pods = Vec::with_capacity(batch.len());
        let mut objects = Vec::with_capacity(batch.len());
        for (key, object) in batch {
            match decode::<Pod>(&object, &format!("pod {key}")) {
                Ok(p) => {
                    pods.push(p);
                    objects.push((key, object));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler drops an unreadable pod");
                    self.queue.remove(&key);
                }
            }
        }
        self.sched
            .schedule_batch(&pods)
            .into_iter()
            .zip(objects)
            .map(|((_, result), (key, object))| match result {
                Ok(node) => Write::Bind(key, object, node),
                Err(u) => Write::Park(key, object, u.to_string()),
            })
            .collect()
    }

    fn apply(&mut self, outcomes: Vec<Outcome>) {
        let now = Instant::now();
        for o in outcomes {
            match o {
                Outcome::Bound(key) => {
                    self.queue.remove(&key);
                }
                Outcome::Conflict(key, latest) => {
                    self.sched.cache_mut().remove_pod(&key);
                    match latest {
                        Some(obj) => {
                            self.queue.retry_now(&key, Some(obj.clone()));
                            self.on_pod(EventType::Modified, key, obj);
                        }
                        None => {
                            self.queue.remove(&key);
                        }
                    }
                }
                Outcome::Gone(key) => {
                    self.sched.cache_mut().remove_pod(&key);
                    self.queue.remove(&key);
                }
                Outcome::Parked(key, object, message) => {
                    self.queue.park(&key, object, message, now);
                }
                Outcome::Failed(key, was_bind, e) => {
                    tracing::warn!(pod = %key, error = %e, "scheduler write failed");
                    if was_bind {
                        self.sched.cache_mut().remove_pod(&key);
                    }
                    self.queue.back_off(&key, now);
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Sets the PodScheduled condition; returns whether anything changed.
fn set_scheduled(pod: &mut Value, ok: bool, message: Option<&str>) -> bool {
    let status = if ok { "True" } else { "False" };
    let cond = json!({
        "type": "PodScheduled",
        "status": status,
        "lastProbeTime": null,
        "lastTransitionTime": now_rfc3339(),
    });
    let mut cond = cond;
    if !ok {
        cond["reason"] = json!("Unschedulable");
        cond["message"] = json!(message.unwrap_or(""));
    }
    let Some(obj) = pod.as_object_mut() else {
        return false;
    };
    let status_obj = obj.entry("status").or_insert_with(|| json!({}));
    if !status_obj.is_object() {
        *status_obj = json!({});
    }
    let conds = status_obj
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(conds) = conds else {
        return false;
    };
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(list) = conds.as_array_mut() else {
        return false;
    };
    match list.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(c) => {
            if c["status"] == status
                && c.get("message").and_then(Value::as_str) == message.filter(|_| !ok)
            {
                return false;
            }
            if c["status"] == status
                && let Some(t) = c.get("lastTransitionTime").cloned()
            {
                cond["lastTransitionTime"] = t;
            }
            *c = cond;
        }
        None => list.push(cond),
    }
    true
}

fn write_all(store: &dyn Datastore, writes: Vec<Write>) -> Vec<Outcome> {
    writes
        .into_iter()
        .map(|w| match w {
            Write::Bind(key, mut object, node) => {
                let rv = resource_version(&object);
                if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("nodeName".into(), Value::String(node));
                }
                set_scheduled(&mut object, true, None);
                match store.update(&store_key(&key), object, rv) {
                    Ok(_) => Outcome::Bound(key),
                    Err(StoreError::Conflict { .. }) => {
                        let latest = store.get(&store_key(&key)).ok();
                        Outcome::Conflict(key, latest)
                    }
                    Err(StoreError::NotFound { .. }) => Outcome::Gone(key),
                    Err(e) => Outcome::Failed(key, true, e),
                }
            }
            Write::Park(key, mut object, message) => {
                let rv = resource_version(&object);
                if !set_scheduled(&mut object, false, Some(&message)) {
                    return Outcome::Parked(key, object, message);
                }
                match store.update(&store_key(&key), object, rv) {
                    Ok(stored) => Outcome::Parked(key, stored, message),
                    Err(StoreError::Conflict { .. }) => {
                        let latest = store.get(&store_key(&key)).ok();
                        Outcome::Conflict(key, latest)
                    }
                    Err(StoreError::NotFound { .. }) => Outcome::Gone(key),
                    Err(e) => Outcome::Failed(key, false, e),
                }
            }
        })
        .collect()
}
