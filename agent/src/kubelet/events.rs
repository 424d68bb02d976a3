//! Events the kubelet records (Pulled, Created, Started, Killing, BackOff,
//! Unhealthy, Evicted…), as `v1/Event` objects in the store.
//!
//! Recording never blocks a pod worker: events go through a channel to one
//! writer thread. Repeats of the same reason and message for the same pod
//! update one Event (`count`, `lastTimestamp`), as the kubelet's
//! correlator does; events older than [`EVENT_TTL`] are removed (the API
//! server's default `--event-ttl` of one hour).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::Resource;
use crate::store::{Datastore, Key};

/// How long events are kept.
pub const EVENT_TTL: Duration = Duration::from_secs(3600);

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

#[derive(Debug)]
struct Request {
    namespace: String,
    pod_name: String,
    pod_uid: String,
    kind: EventKind,
    reason: String,
    message: String,
}

/// Sends events to the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    tx: Option<mpsc::Sender<Request>>,
}

impl EventRecorder {
    /// Starts the writer thread for `node`.
    pub fn start(store: Arc<dyn Datastore>, node: String) -> EventRecorder {
        let (tx, rx) = mpsc::channel::<Request>();
        let spawned = std::thread::Builder::new()
            .name("herd-events".into())
            .spawn(move || writer(&*store, &node, rx));
        if let Err(e) = spawned {
            tracing::warn!("events are not recorded: cannot start the writer: {e}");
            return EventRecorder { tx: None };
        }
        EventRecorder { tx: Some(tx) }
    }

    /// A recorder that drops everything (tests of other parts).
    pub fn disabled() -> EventRecorder {
        EventRecorder { tx: None }
    }

    pub fn record(&self, pod: &Pod, kind: EventKind, reason: &str, message: impl Into<String>) {
        let Some(tx) = &self.tx else { return };
        let m = &pod.metadata;
        let _ = tx.send(Request {
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            pod_name: m.name.clone().unwrap_or_default(),
            pod_uid: m.uid.clone().unwrap_or_default(),
            kind,
            reason: reason.to_string(),
            message: message.into(),
        });
    }
}

fn writer(store: &dyn Datastore, node: &str, rx: mpsc::Receiver<Request>) {
    // (pod uid, reason, message) → (event name, count)
    let mut seen: HashMap<(String, String, String), (String, i32)> = HashMap::new();
    let mut seq: u64 = 0;
    let mut last_prune = std::time::Instant::now();
    while let Ok(req) = rx.recv() {
        let now = Timestamp::now();
        let key = (req.pod_uid.clone(), req.reason.clone(), req.message.clone());
        if let Some((name, count)) = seen.get_mut(&key) {
            *count += 1;
            let k = Key::namespaced(Resource::Events, &req.namespace, name);
            let count = *count;
            let updated = crate::store::update_with(store, &k, |mut v| {
                v["count"] = count.into();
                v["lastTimestamp"] = serde_json::to_value(Time(now)).unwrap_or_default();
                Ok(Some(v))
            });
            if updated.is_ok() {
                continue;
            }
        }
        seq += 1;
        let name = format!(
            "{}.{:x}{:04x}",
            req.pod_name,
            now.as_nanosecond() as u64,
            seq & 0xffff
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(req.namespace.clone()),
                creation_timestamp: Some(Time(now)),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(req.pod_name.clone()),
                namespace: Some(req.namespace.clone()),
                uid: Some(req.pod_uid.clone()),
                ..Default::default()
            },
            reason: Some(req.reason.clone()),
            message: Some(req.message.clone()),
            type_: Some(
                match req.kind {
                    EventKind::Normal => "Normal",
                    EventKind::Warning => "Warning",
                }
                .into(),
            ),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node.to_string()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(node.to_string()),
            }),
            ..Default::default()
        };
        let mut value = match serde_json::to_value(&ev) {
            Ok(v) => v,
            Err(_) => continue,
        };
        value["kind"] = "Event".into();
        value["apiVersion"] = "v1".into();
        let k = Key::namespaced(Resource::Events, &req.namespace, &name);
        match store.create(&k, value) {
            Ok(_) => {
                seen.insert(key, (name, 1));
            }
            Err(e) => tracing::debug!("event {name}: {e}"),
        }
        if last_prune.elapsed() > Duration::from_secs(60) {
            last_prune = std::time::Instant::now();
            prune(store, now);
            seen.retain(|_, (n, _)| {
                store
                    .get(&Key::namespaced(Resource::Events, &req.namespace, n))
                    .is_ok()
            });
        }
    }
}

/// Removes events last seen more than [`EVENT_TTL`] ago.
fn prune(store: &dyn Datastore, now: Timestamp) {
    let Ok((events, _)) = store.list(Resource::Events, None) else {
        return;
    };
    let ttl = i64::try_from(EVENT_TTL.as_secs()).unwrap_or(i64::MAX);
    for ev in events {
        let last = ev
            .get("lastTimestamp")
            .and_then(|t| t.as_str())
            .and_then(|t| t.parse::<Timestamp>().ok());
        let (Some(last), Some(name), Some(ns)) = (
            last,
            ev.pointer("/metadata/name").and_then(|v| v.as_str()),
            ev.pointer("/metadata/namespace").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        if now.as_second() - last.as_second() > ttl {
            let _ = store.delete(&Key::namespaced(Resource::Events, ns, name), None);
        }
    }
}
