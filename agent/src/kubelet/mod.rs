//! The node's pod workers: the kubelet part of the agent.
//!
//! [`Kubelet::run`] watches the pods bound to this node in the store and
//! the static pods of the manifest directory, and keeps one
//! [`worker::PodWorker`] task per pod uid. Workers are told when their pod
//! changes or goes; everything else (sandboxes, containers, probes, status)
//! is theirs. At start-up the runtime's leftovers are reconciled first:
//! running pods are re-adopted, pods deleted meanwhile are stopped and
//! removed, orphaned volumes and addresses released. A memory-pressure
//! loop evicts pods in the kubelet's order.

pub mod backoff;
pub mod config;
pub mod convert;
pub mod env;
pub mod events;
pub mod eviction;
pub mod lifecycle;
pub mod network;
pub mod node;
pub mod probes;
pub mod static_pods;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use herd_runtime::pod::PodRuntime;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::api::Resource;
use crate::store::{Datastore, EventType, Key, StoreError};
use config::KubeletConfig;
use events::EventRecorder;
use network::PodNetworking;
use static_pods::{StaticPodChange, StaticPodSource};
use worker::{MIRROR_ANNOTATION, PodWorker, WorkerMsg};

/// What every worker shares.
#[derive(Debug)]
pub struct Ctx {
    pub cfg: KubeletConfig,
    pub runtime: Arc<PodRuntime>,
    pub network: Option<Arc<PodNetworking>>,
    pub store: Arc<dyn Datastore>,
    pub events: EventRecorder,
    /// The node's address (`status.hostIP`, hostNetwork pods' IP).
    pub host_ip: Option<IpAddr>,
}

/// Kubelet failures that stop it (the store went away).
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] herd_runtime::pod::RuntimeError),
}

#[derive(Debug)]
struct Handle {
    tx: mpsc::UnboundedSender<WorkerMsg>,
    is_static: bool,
    pod: Arc<Pod>,
    /// Told that its pod is gone (it stops when done cleaning up).
    removed: bool,
}

/// The pod manager.
#[derive(Debug)]
pub struct Kubelet {
    ctx: Arc<Ctx>,
    workers: HashMap<String, Handle>,
    done_tx: mpsc::UnboundedSender<String>,
    done_rx: mpsc::UnboundedReceiver<String>,
    /// Static pods by (namespace, name) → uid.
    static_names: HashMap<(String, String), String>,
    evicting: HashSet<String>,
}

fn pod_uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// Same desired state: spec, labels, annotations and deletion fields
/// (status and resourceVersion may differ).
fn desired_equal(a: &Pod, b: &Pod) -> bool {
    let (ma, mb) = (&a.metadata, &b.metadata);
    a.spec == b.spec
        && ma.deletion_timestamp == mb.deletion_timestamp
        && ma.deletion_grace_period_seconds == mb.deletion_grace_period_seconds
        && ma.labels == mb.labels
        && ma.annotations == mb.annotations
}

fn is_mirror(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

impl Kubelet {
    pub fn new(ctx: Ctx) -> Kubelet {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Kubelet {
            ctx: Arc::new(ctx),
            workers: HashMap::new(),
            done_tx,
            done_rx,
            static_names: HashMap::new(),
            evicting: HashSet::new(),
        }
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    fn mine(&self, p: &Pod) -> bool {
        !is_mirror(p)
            && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(self.ctx.cfg.node_name.as_str())
    }

    /// Hands the pod to its worker, starting one if needed.
    fn upsert(&mut self, pod: Pod, is_static: bool) {
        let uid = pod_uid(&pod);
        if uid.is_empty() {
            return;
        }
        let pod = Arc::new(pod);
        if let Some(h) = self.workers.get_mut(&uid) {
            // The worker's own status writes come back as MODIFIED events:
            // they need no pass (it wrote them).
            let same = !h.removed && desired_equal(&h.pod, &pod);
            h.pod = pod.clone();
            h.removed = false;
            if !same {
                let _ = h.tx.send(WorkerMsg::Update(Some(pod)));
            }
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let w = PodWorker::new(
            self.ctx.clone(),
            pod.clone(),
            rx,
            tx.clone(),
            self.done_tx.clone(),
        );
        tokio::spawn(w.run());
        self.workers.insert(
            uid,
            Handle {
                tx,
                is_static,
                pod,
                removed: false,
            },
        );
    }

    fn remove(&mut self, uid: &str) {
        if let Some(h) = self.workers.get_mut(uid) {
            h.removed = true;
            let _ = h.tx.send(WorkerMsg::Update(None));
        }
    }

    /// Start-up: the pods of the store and the manifest directory get
    /// workers (re-adopting what runs); sandboxes nobody wants get a worker
    /// that stops and removes them.
    async fn start(&mut self, source: Option<&mut StaticPodSource>) -> Result<u64, KubeletError> {
        let rt = self.ctx.runtime.clone();
        let recovered = tokio::task::spawn_blocking(move || rt.recover())
            .await
            .map_err(|e| StoreError::Backend {
                path: "runtime".into(),
                reason: e.to_string(),
            })??;
        tracing::info!(
            adopted = recovered.adopted.len(),
            orphaned = recovered.orphaned.len(),
            "runtime recovered"
        );
        let (pods, rv) = self.ctx.store.list(Resource::Pods, None)?;
        for v in pods {
            match serde_json::from_value::<Pod>(v) {
                Ok(p) if self.mine(&p) => self.upsert(p, false),
                Ok(_) => {}
                Err(e) => tracing::warn!("undecodable pod in the store: {e}"),
            }
        }
        if let Some(src) = source {
            for ch in src.scan() {
                self.static_change(ch).await;
            }
        }
        // Sandboxes of pods that are gone.
        let rt = self.ctx.runtime.clone();
        let sandboxes = tokio::task::spawn_blocking(move || {
            let uids = rt.list_pods()?;
            let mut out = Vec::new();
            for uid in uids {
                if let Some(r) = rt.sandbox(&uid)? {
                    out.push((uid, r.config));
                }
            }
            Ok::<_, herd_runtime::pod::RuntimeError>(out)
        })
        .await
        .map_err(|e| StoreError::Backend {
            path: "runtime".into(),
            reason: e.to_string(),
        })??;
        let live: HashSet<String> = sandboxes.iter().map(|(u, _)| u.clone()).collect();
        for (uid, cfg) in sandboxes {
            if self.workers.contains_key(&uid) {
                continue;
            }
            tracing::info!(pod = %uid, "removing a pod that is gone");
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    uid: Some(uid.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            self.upsert(pod, false);
            self.remove(&uid);
        }
        if let Some(net) = &self.ctx.network {
            let known: HashSet<String> = self.workers.keys().cloned().chain(live).collect();
            if let Err(e) = net.release_unknown(&|id| known.contains(id)) {
                tracing::warn!("releasing addresses: {e}");
            }
        }
        // Volume dirs of pods nobody knows.
        let known: HashSet<String> = self.workers.keys().cloned().collect();
        let pods_dir = self.ctx.cfg.pods_dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for uid in volumes::list_pod_dirs(&pods_dir) {
                if !known.contains(&uid)
                    && let Err(e) = volumes::teardown(&uid, &pods_dir)
                {
                    tracing::warn!(pod = %uid, "removing volumes: {e}");
                }
            }
        })
        .await;
        Ok(rv)
    }

    /// A static pod appeared, changed or went: run it, and mirror it into
    /// the store so the API shows it.
    async fn static_change(&mut self, ch: StaticPodChange) {
        match ch {
            StaticPodChange::Upsert(pod) => {
                let pod = *pod;
                let ns = pod
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let name = pod.metadata.name.clone().unwrap_or_default();
                let uid = pod_uid(&pod);
                if let Some(old) = self
                    .static_names
                    .insert((ns.clone(), name.clone()), uid.clone())
                    && old != uid
                {
                    self.remove(&old);
                }
                self.mirror(&pod).await;
                self.upsert(pod, true);
            }
            StaticPodChange::Remove { namespace, name } => {
                if let Some(uid) = self.static_names.remove(&(namespace, name)) {
                    self.remove(&uid);
                }
            }
        }
    }

    /// Creates or replaces the mirror pod of a static pod (same uid). The
    /// worker writes its status there and deletes it when the pod goes.
    async fn mirror(&self, pod: &Pod) {
        let mut mirror = pod.clone();
        let hash = pod_uid(pod);
        mirror
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(MIRROR_ANNOTATION.into(), hash);
        mirror.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let Ok(mut value) = serde_json::to_value(&mirror) else {
            return;
        };
        value["kind"] = "Pod".into();
        value["apiVersion"] = "v1".into();
        let key = Key::namespaced(
            Resource::Pods,
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default(),
        );
        let store = self.ctx.store.clone();
        let uid = pod_uid(pod);
        let _ = tokio::task::spawn_blocking(move || {
            match store.get(&key) {
                Ok(cur) => {
                    let same = cur.pointer("/metadata/uid").and_then(Value::as_str) == Some(&uid);
                    if same {
                        // Keep the status the worker wrote.
                        if let Some(st) = cur.get("status") {
                            value["status"] = st.clone();
                        }
                        let _ = store.update(&key, value, crate::store::resource_version(&cur));
                    } else {
                        let _ = store.delete(&key, None);
                        let _ = store.create(&key, value);
                    }
                }
                Err(_) => {
                    let _ = store.create(&key, value);
                }
            }
        })
        .await;
    }

    fn on_event(&mut self, kind: EventType, v: Value) {
        let pod: Pod = match serde_json::from_value(v) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("undecodable pod event: {e}");
                return;
            }
        };
        let uid = pod_uid(&pod);
        if self.workers.get(&uid).is_some_and(|h| h.is_static) {
            return;
        }
        match kind {
            EventType::Deleted => self.remove(&uid),
            EventType::Added | EventType::Modified => {
                if self.mine(&pod) {
                    self.upsert(pod, false);
                }
            }
        }
    }

    /// After a watch expired: list again and reconcile the worker set.
    fn relist(&mut self) -> Result<u64, KubeletError> {
        let (pods, rv) = self.ctx.store.list(Resource::Pods, None)?;
        let mut seen = HashSet::new();
        for v in pods {
            if let Ok(p) = serde_json::from_value::<Pod>(v)
                && self.mine(&p)
            {
                seen.insert(pod_uid(&p));
                self.upsert(p, false);
            }
        }
        let gone: Vec<String> = self
            .workers
            .iter()
            .filter(|(uid, h)| !h.is_static && !seen.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            self.remove(&uid);
        }
        Ok(rv)
    }

    /// One eviction check: under memory pressure, evict one pod.
    async fn check_eviction(&mut self, manager: &mut eviction::EvictionManager) {
        let ctx = self.ctx.clone();
        let pods: Vec<(String, Arc<Pod>)> = self
            .workers
            .iter()
            .filter(|(uid, h)| {
                !h.is_static
                    && !self.evicting.contains(*uid)
                    && h.pod.metadata.deletion_timestamp.is_none()
                    && !h
                        .pod
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .is_some_and(|p| p == "Succeeded" || p == "Failed")
            })
            .map(|(uid, h)| (uid.clone(), h.pod.clone()))
            .collect();
        let checked = tokio::task::spawn_blocking(move || {
            let available = eviction::memory_available(&ctx.cfg.proc_root, ctx.runtime.cgroups())
                .map_err(|e| e.to_string())?;
            let mut candidates = Vec::new();
            for (uid, pod) in pods {
                let Ok(stats) = ctx.runtime.stats(&uid, None) else {
                    continue;
                };
                let request: u64 = pod
                    .spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .filter_map(|c| convert::container_resources(c).ok())
                    .filter_map(|r| r.memory_request_bytes)
                    .sum();
                candidates.push(eviction::Candidate {
                    uid,
                    qos: convert::qos_class(&pod),
                    priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
                    memory_usage: stats.memory_working_set_bytes,
                    memory_request: request,
                });
            }
            Ok::<_, String>((available, candidates))
        })
        .await;
        let (available, candidates) = match checked {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::warn!("eviction signal: {e}");
                return;
            }
            Err(_) => return,
        };
        let capacity = self.ctx.cfg.node_memory_bytes;
        if let Some(victim) = manager.check(available, capacity, candidates) {
            let message =
                eviction::eviction_message(manager.threshold().bytes(capacity), available, &victim);
            tracing::warn!(pod = %victim.uid, "evicting: {message}");
            if let Some(h) = self.workers.get(&victim.uid) {
                let _ = h.tx.send(WorkerMsg::Evict { message });
                self.evicting.insert(victim.uid);
            }
        }
    }

    /// Runs until `shutdown`; pods keep running after it returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), KubeletError> {
        let mut source = self
            .ctx
            .cfg
            .manifests_dir
            .clone()
            .map(|d| StaticPodSource::new(d, self.ctx.cfg.node_name.clone()));
        let rv = self.start(source.as_mut()).await?;
        let (static_tx, mut static_rx) = mpsc::unbounded_channel();
        let _static_task = source
            .map(|s| static_pods::spawn(s, self.ctx.cfg.static_scan_interval, static_tx.clone()));
        let threshold = eviction::parse_threshold(&self.ctx.cfg.eviction_memory_available)
            .map_err(|e| {
                tracing::warn!("eviction disabled: {e}");
                e
            })
            .ok();
        let mut evictions = threshold
            .map(|t| eviction::EvictionManager::new(t, std::time::Duration::from_secs(300)));
        let mut eviction_tick = tokio::time::interval(self.ctx.cfg.eviction_interval);
        eviction_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = self.ctx.store.watch(Resource::Pods, None, Some(rv))?;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                ev = watch.next() => match ev {
                    Ok(Some(ev)) => self.on_event(ev.kind, ev.object),
                    Ok(None) => break,
                    Err(StoreError::Expired { .. }) => {
                        let rv = self.relist()?;
                        watch = self.ctx.store.watch(Resource::Pods, None, Some(rv))?;
                    }
                    Err(e) => return Err(e.into()),
                },
                Some(ch) = static_rx.recv() => self.static_change(ch).await,
                Some(uid) = self.done_rx.recv() => {
                    if self.workers.get(&uid).is_some_and(|h| h.tx.is_closed())
                        && let Some(h) = self.workers.remove(&uid)
                    {
                        self.evicting.remove(&uid);
                        if !h.removed {
                            // Wanted again while it was finishing.
                            let pod = (*h.pod).clone();
                            self.upsert(pod, h.is_static);
                        }
                    }
                }
                _ = eviction_tick.tick(), if evictions.is_some() => {
                    if let Some(m) = evictions.as_mut() {
                        self.check_eviction(m).await;
                    }
                }
            }
        }
        Ok(())
    }
}
