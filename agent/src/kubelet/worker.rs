//! The pod worker: one task per pod, level-triggered.
//!
//! A worker owns everything the node does for one pod uid. Each pass of
//! [`PodWorker::sync`] compares the desired pod (from the API or a static
//! manifest) with what the runtime reports and takes the next steps: the
//! sandbox and its network, volumes, init containers in order, sidecars,
//! containers with their restart policy and CrashLoopBackOff, probes,
//! hooks, termination, and finally the status. It is idempotent: a pass after
//! an agent restart finds the containers the monitors kept running and
//! carries on without restarting them. Passes never overlap (one task per
//! pod); the worker sleeps until a message (pod changed, probe result,
//! container exit, eviction) or the requeue delay the pass asked for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herd_images::{ImageError, PullOptions};
use herd_runtime::pod::{
    ContainerRecord, ContainerState, ContainerStatus as RtContainer, PodRuntime, RuntimeError,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Ctx;
use super::backoff::Backoff;
use super::convert;
use super::env::{self, EnvContext};
use super::events::EventKind;
use super::lifecycle;
use super::probes::{self, ProbeKind, ProbeTarget, ProbeUpdate};
use super::status::{self, ContainerView, Phase, PodView, Waiting};
use super::volumes::{self, PodVolumes, VolumeContext};
use crate::api::Resource;
use crate::store::{self, Key, StoreError};

/// What a worker is told.
#[derive(Debug)]
pub enum WorkerMsg {
    /// The desired pod changed; `None`: it is gone from its source.
    Update(Option<Arc<Pod>>),
    /// Node pressure: stop the pod and mark it Failed/Evicted.
    Evict { message: String },
    /// Something changed in the runtime (a container exited).
    Wake,
}

/// Errors that end one pass (the next pass retries).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pod {uid}: {what}")]
    Other { uid: String, what: String },
}

/// The annotation marking a mirror pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

fn spec_containers(pod: &Pod) -> (&[Container], &[Container]) {
    match &pod.spec {
        Some(s) => (s.init_containers.as_deref().unwrap_or(&[]), &s.containers),
        None => (&[], &[]),
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// `terminationGracePeriodSeconds` (default 30 s).
pub fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn pod_key(pod: &Pod) -> Key {
    Key::namespaced(
        Resource::Pods,
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// A probe/hook target: one container of a running pod.
#[derive(Debug)]
struct Target {
    runtime: Arc<PodRuntime>,
    record: ContainerRecord,
    pod_ip: Option<IpAddr>,
}

impl ProbeTarget for Target {
    fn exec(&self, command: &[String], timeout: Duration) -> Result<(i32, Vec<u8>), String> {
        let out = self
            .runtime
            .exec(&self.record, command.to_vec(), false, Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut all = out.stdout;
        all.extend_from_slice(&out.stderr);
        Ok((out.exit_code, all))
    }
    fn pod_ip(&self) -> Option<IpAddr> {
        self.pod_ip
    }
}

#[derive(Debug)]
struct Prober {
    container_id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The runtime's containers of this pod, by name: (current, previous).
type Attempts = BTreeMap<String, (RtContainer, Option<RtContainer>)>;

fn group_attempts(list: Vec<RtContainer>) -> (Attempts, Vec<RtContainer>) {
    let mut by_name: BTreeMap<String, Vec<RtContainer>> = BTreeMap::new();
    for c in list {
        by_name
            .entry(c.record.config.name.clone())
            .or_default()
            .push(c);
    }
    let mut out = Attempts::new();
    let mut stale = Vec::new();
    for (name, mut v) in by_name {
        v.sort_by_key(|c| c.record.config.attempt);
        let Some(cur) = v.pop() else { continue };
        let prev = v.pop();
        stale.extend(v);
        out.insert(name, (cur, prev));
    }
    (out, stale)
}

fn is_running(c: &RtContainer) -> bool {
    matches!(c.state, ContainerState::Running { .. })
}

fn is_done(c: &RtContainer) -> bool {
    matches!(
        c.state,
        ContainerState::Exited(_) | ContainerState::Unknown { .. }
    )
}

fn exit_code(c: &RtContainer) -> Option<i32> {
    match &c.state {
        ContainerState::Exited(e) => Some(e.exit_code),
        ContainerState::Unknown { .. } => Some(137),
        _ => None,
    }
}

/// `Instant` of an RFC 3339 wall-clock time (now if unparsable or future).
fn instant_of(rfc3339: &str) -> Instant {
    let now = Instant::now();
    let Ok(t) = rfc3339.parse::<Timestamp>() else {
        return now;
    };
    let then = SystemTime::from(t);
    match SystemTime::now().duration_since(then) {
        Ok(ago) => now.checked_sub(ago).unwrap_or(now),
        Err(_) => now,
    }
}

/// How long an exited container ran.
fn ran_for(c: &RtContainer) -> Option<Duration> {
    let ContainerState::Exited(e) = &c.state else {
        return None;
    };
    let s = e.started_at.parse::<Timestamp>().ok()?;
    let f = e.finished_at.parse::<Timestamp>().ok()?;
    SystemTime::from(f).duration_since(SystemTime::from(s)).ok()
}

/// Does the registry part of a reference name a loopback host (plain HTTP,
/// as docker treats `localhost` registries)?
fn loopback_registry(image: &str) -> bool {
    let first = image.split('/').next().unwrap_or_default();
    if !image.contains('/') || !(first.contains('.') || first.contains(':')) {
        return false;
    }
    let host = first.rsplit_once(':').map_or(first, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// One pod's worker.
#[derive(Debug)]
pub struct PodWorker {
    ctx: Arc<Ctx>,
    uid: String,
    /// The desired pod; `None` once its source dropped it.
    pod: Option<Arc<Pod>>,
    /// The last desired pod seen (for termination and status after removal).
    last: Arc<Pod>,
    rx: mpsc::UnboundedReceiver<WorkerMsg>,
    tx: mpsc::UnboundedSender<WorkerMsg>,
    probe_tx: mpsc::UnboundedSender<ProbeUpdate>,
    probe_rx: mpsc::UnboundedReceiver<ProbeUpdate>,
    done: mpsc::UnboundedSender<String>,
    backoff: Backoff,
    /// Exits already counted for backoff (runtime ids).
    counted: HashSet<String>,
    probers: HashMap<(String, ProbeKind), Prober>,
    /// Thresholded results per (container id, kind).
    results: HashMap<(String, ProbeKind), bool>,
    /// Why a container is not running, by name.
    waiting: HashMap<String, Waiting>,
    /// Exit waiters started, by runtime id.
    waiters: HashSet<String>,
    /// Containers that failed liveness/startup (killed, then restarted).
    unhealthy: HashSet<String>,
    image_ids: HashMap<String, String>,
    sandbox_ready: bool,
    pod_ip: Option<IpAddr>,
    start_time: Option<Timestamp>,
    evicted: Option<String>,
    /// Succeeded/Failed: the pod never runs again.
    terminal: Option<Phase>,
    /// Once a terminal pod's final status is written and its address
    /// released.
    finished: bool,
    last_status: Option<PodStatus>,
}

impl PodWorker {
    pub fn new(
        ctx: Arc<Ctx>,
        pod: Arc<Pod>,
        rx: mpsc::UnboundedReceiver<WorkerMsg>,
        tx: mpsc::UnboundedSender<WorkerMsg>,
        done: mpsc::UnboundedSender<String>,
    ) -> PodWorker {
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let status = pod.status.clone();
        let terminal = status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .and_then(Phase::parse)
            .filter(|p| p.is_terminal());
        PodWorker {
            backoff: Backoff::new(ctx.cfg.backoff),
            ctx,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            last: pod.clone(),
            pod: Some(pod),
            rx,
            tx,
            probe_tx,
            probe_rx,
            done,
            counted: HashSet::new(),
            probers: HashMap::new(),
            results: HashMap::new(),
            waiting: HashMap::new(),
            waiters: HashSet::new(),
            unhealthy: HashSet::new(),
            image_ids: HashMap::new(),
            sandbox_ready: false,
            pod_ip: status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|s| s.parse().ok()),
            start_time: status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0),
            evicted: None,
            terminal,
            finished: false,
            last_status: status,
        }
    }

    fn handle(&mut self, m: WorkerMsg) {
        match m {
            WorkerMsg::Update(Some(p)) => {
                if self.terminal.is_none()
                    && let Some(phase) = p
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .and_then(Phase::parse)
                        .filter(|p| p.is_terminal())
                    && self.last_status.is_none()
                {
                    self.terminal = Some(phase);
                }
                self.last = p.clone();
                self.pod = Some(p);
            }
            WorkerMsg::Update(None) => self.pod = None,
            WorkerMsg::Evict { message } => self.evicted = Some(message),
            WorkerMsg::Wake => {}
        }
    }

    fn on_probe(&mut self, u: ProbeUpdate) {
        if !u.success && matches!(u.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            self.unhealthy.insert(u.container_id.clone());
            let what = if u.kind == ProbeKind::Liveness {
                "Liveness"
            } else {
                "Startup"
            };
            self.ctx.events.record(
                &self.last,
                EventKind::Warning,
                "Unhealthy",
                format!("{what} probe failed: {}", u.message.trim()),
            );
        } else if !u.success {
            self.ctx.events.record(
                &self.last,
                EventKind::Warning,
                "Unhealthy",
                format!("Readiness probe failed: {}", u.message.trim()),
            );
        }
        self.results.insert((u.container_id, u.kind), u.success);
    }

    /// Runs passes until the pod is gone and cleaned up, or the manager
    /// drops the worker (agent shutdown: pods keep running).
    pub async fn run(mut self) {
        loop {
            let next = match self.sync().await {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(pod = %self.uid, "sync failed: {e}");
                    Duration::from_secs(1)
                }
            };
            let next = next.min(self.ctx.cfg.relist_interval);
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(m) => self.handle(m),
                    None => return,
                },
                Some(u) = self.probe_rx.recv() => self.on_probe(u),
                () = tokio::time::sleep(next) => {}
            }
            while let Ok(m) = self.rx.try_recv() {
                self.handle(m);
            }
            while let Ok(u) = self.probe_rx.try_recv() {
                self.on_probe(u);
            }
        }
        // The receiver must be gone before the manager hears of it: it
        // checks that to tell a finished worker from a live one.
        let (done, uid) = (self.done.clone(), self.uid.clone());
        drop(self);
        let _ = done.send(uid);
    }

    async fn rt<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PodRuntime) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, WorkerError> {
        let rt = self.ctx.runtime.clone();
        tokio::task::spawn_blocking(move || f(&rt))
            .await
            .map_err(|e| WorkerError::Other {
                uid: self.uid.clone(),
                what: format!("runtime task: {e}"),
            })?
            .map_err(WorkerError::from)
    }

    async fn attempts(&self) -> Result<Attempts, WorkerError> {
        let uid = self.uid.clone();
        let has = {
            let uid = uid.clone();
            self.rt(move |rt| rt.sandbox(&uid)).await?.is_some()
        };
        if !has {
            return Ok(Attempts::new());
        }
        let list = self.rt(move |rt| rt.list_containers(&uid)).await?;
        let (attempts, stale) = group_attempts(list);
        for c in stale {
            let rec = c.record;
            let _ = self.rt(move |rt| rt.remove_container(&rec)).await;
        }
        Ok(attempts)
    }

    /// One pass. `Ok(None)`: the worker is done.
    async fn sync(&mut self) -> Result<Option<Duration>, WorkerError> {
        let Some(pod) = self.pod.clone() else {
            // Gone from its source (force-deleted, manifest removed): stop
            // everything and forget the pod.
            let pod = self.last.clone();
            let grace = pod.metadata.deletion_grace_period_seconds.map_or_else(
                || grace_period(&pod),
                |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)),
            );
            self.kill_pod(&pod, grace).await?;
            self.remove_sandbox(&pod, true).await?;
            self.delete_from_store(&pod).await;
            return Ok(None);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod.metadata.deletion_grace_period_seconds.map_or_else(
                || grace_period(&pod),
                |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)),
            );
            self.kill_pod(&pod, grace).await?;
            // Publish the containers' final states before the object goes,
            // as the kubelet does (watchers see the exit codes).
            let attempts = self.attempts().await?;
            let mut view = self.view(&pod, &attempts, true);
            view.phase = self.final_phase(&pod, &attempts);
            self.write_status(&pod, &view).await;
            self.remove_sandbox(&pod, true).await?;
            self.delete_from_store(&pod).await;
            return Ok(None);
        }
        if self.finished {
            return Ok(Some(Duration::from_secs(3600)));
        }
        if let Some(message) = self.evicted.clone() {
            self.ctx
                .events
                .record(&pod, EventKind::Warning, "Evicted", message.clone());
            self.kill_pod(&pod, Duration::ZERO).await?;
            self.terminal = Some(Phase::Failed);
            let mut view = self.view(&pod, &self.attempts().await?, true);
            view.phase = Phase::Failed;
            view.reason = Some("Evicted".into());
            view.message = Some(message);
            self.write_status(&pod, &view).await;
            self.release_network().await;
            self.finished = true;
            return Ok(Some(Duration::from_secs(3600)));
        }
        if let Some(phase) = self.terminal {
            // Completed earlier (perhaps before an agent restart): make
            // sure nothing runs and the sandbox is gone.
            let attempts = self.attempts().await?;
            if attempts.values().any(|(c, _)| is_running(c)) {
                self.kill_pod(&pod, grace_period(&pod)).await?;
            }
            let attempts = self.attempts().await?;
            let mut view = self.view(&pod, &attempts, true);
            view.phase = phase;
            if !attempts.is_empty() {
                self.write_status(&pod, &view).await;
            }
            self.release_network().await;
            self.finished = true;
            return Ok(Some(Duration::from_secs(3600)));
        }

        // The sandbox and its network.
        if !self.sandbox_ready {
            if let Err(e) = self.ensure_sandbox(&pod).await {
                let msg = e.to_string();
                self.ctx.events.record(
                    &pod,
                    EventKind::Warning,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {msg}"),
                );
                let d = self.backoff.failed("sandbox", Instant::now(), None);
                let view = self.view(&pod, &Attempts::new(), false);
                self.write_status(&pod, &view).await;
                return Ok(Some(d));
            }
            self.backoff.clear("sandbox");
        }

        // Volumes (cheap when nothing changed; refreshes configMaps/secrets).
        let vols = match self.setup_volumes(&pod).await {
            Ok(v) => Arc::new(v),
            Err(msg) => {
                self.ctx
                    .events
                    .record(&pod, EventKind::Warning, "FailedMount", msg);
                let view = self.view(&pod, &self.attempts().await?, false);
                self.write_status(&pod, &view).await;
                return Ok(Some(Duration::from_secs(2)));
            }
        };

        let mut attempts = self.attempts().await?;
        let mut requeue = self.ctx.cfg.relist_interval;
        self.count_exits(&attempts);

        // Init containers, in order.
        let (inits, mains) = spec_containers(&pod);
        let policy = restart_policy(&pod).to_string();
        let mut initialized = true;
        let mut init_failed = false;
        for c in inits {
            let cur = attempts.get(&c.name).map(|(c, _)| c.clone());
            if is_sidecar(c) {
                match &cur {
                    Some(cur) if is_running(cur) => {
                        if c.startup_probe.is_some()
                            && !self
                                .results
                                .get(&(cur.record.id.clone(), ProbeKind::Startup))
                                .copied()
                                .unwrap_or(false)
                        {
                            initialized = false;
                            break;
                        }
                        continue;
                    }
                    _ => {
                        if let Some(d) = self
                            .start_or_restart(&pod, c, cur.as_ref(), true, &vols)
                            .await
                        {
                            requeue = requeue.min(d);
                        }
                        initialized = false;
                        break;
                    }
                }
            }
            match &cur {
                Some(cur) if exit_code(cur) == Some(0) => continue,
                Some(cur) if is_done(cur) => {
                    initialized = false;
                    if policy == "Never" {
                        init_failed = true;
                    } else if let Some(d) =
                        self.start_or_restart(&pod, c, Some(cur), true, &vols).await
                    {
                        requeue = requeue.min(d);
                    }
                    break;
                }
                Some(_) => {
                    initialized = false;
                    break;
                }
                None => {
                    if let Some(d) = self.start_or_restart(&pod, c, None, true, &vols).await {
                        requeue = requeue.min(d);
                    }
                    initialized = false;
                    break;
                }
            }
        }

        if initialized {
            for c in mains {
                let cur = attempts.get(&c.name).map(|(c, _)| c.clone());
                if let Some(cur) = &cur
                    && is_running(cur)
                {
                    if self.unhealthy.contains(&cur.record.id) {
                        self.kill_unhealthy(&pod, c, cur).await;
                    }
                    continue;
                }
                if let Some(d) = self
                    .start_or_restart(
                        &pod,
                        c,
                        cur.as_ref(),
                        policy == "Always" || (policy == "OnFailure"),
                        &vols,
                    )
                    .await
                {
                    requeue = requeue.min(d);
                }
            }
        }
        attempts = self.attempts().await?;
        self.count_exits(&attempts);
        self.ensure_probers(&pod, &attempts);
        self.ensure_waiters(&attempts);

        // Phase.
        let phase = if init_failed {
            Phase::Failed
        } else {
            self.phase(&pod, &attempts, initialized)
        };
        let mut view = self.view(&pod, &attempts, initialized);
        view.phase = phase;
        if phase.is_terminal() {
            // Sidecars stop once the regular containers are done.
            self.kill_pod(&pod, grace_period(&pod)).await?;
            let attempts = self.attempts().await?;
            self.terminal = Some(phase);
            let mut view = self.view(&pod, &attempts, initialized);
            view.phase = phase;
            self.write_status(&pod, &view).await;
            self.release_network().await;
            self.finished = true;
            return Ok(Some(Duration::from_secs(3600)));
        }
        self.write_status(&pod, &view).await;
        Ok(Some(requeue))
    }

    /// Counts each container exit once for CrashLoopBackOff, from its
    /// recorded finish time (not from when this worker noticed).
    fn count_exits(&mut self, attempts: &Attempts) {
        for (cur, _) in attempts.values() {
            self.count_exit(cur);
        }
    }

    /// Counts one exit (idempotent per runtime id). An exit whose time is
    /// lost (`Unknown`) counts from now.
    fn count_exit(&mut self, cur: &RtContainer) {
        let at = match &cur.state {
            ContainerState::Exited(e) => instant_of(&e.finished_at),
            ContainerState::Unknown { .. } => Instant::now(),
            _ => return,
        };
        if self.counted.insert(cur.record.id.clone()) {
            self.backoff
                .failed(&cur.record.config.name, at, ran_for(cur));
        }
    }

    /// The phase of a pod whose containers were all stopped for deletion:
    /// Succeeded if every container exited 0, else Failed.
    fn final_phase(&self, pod: &Pod, attempts: &Attempts) -> Phase {
        let (_, mains) = spec_containers(pod);
        let all_ok = mains.iter().all(|c| {
            attempts
                .get(&c.name)
                .is_some_and(|(cur, _)| exit_code(cur) == Some(0))
        });
        if all_ok && !mains.is_empty() {
            Phase::Succeeded
        } else {
            Phase::Failed
        }
    }

    /// Kubelet's `getPhase` once init containers are done.
    fn phase(&self, pod: &Pod, attempts: &Attempts, initialized: bool) -> Phase {
        if !initialized {
            return Phase::Pending;
        }
        let (_, mains) = spec_containers(pod);
        let policy = restart_policy(pod);
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for c in mains {
            match attempts.get(&c.name).map(|(c, _)| c) {
                Some(cur) if is_running(cur) => running += 1,
                Some(cur) if is_done(cur) => {
                    stopped += 1;
                    if exit_code(cur) == Some(0) {
                        succeeded += 1;
                    }
                }
                Some(_) => waiting += 1,
                None => {
                    if self.backoff.contains(&c.name) {
                        stopped += 1;
                    } else {
                        waiting += 1;
                    }
                }
            }
        }
        if waiting > 0 {
            return Phase::Pending;
        }
        if running > 0 {
            return Phase::Running;
        }
        if stopped == 0 {
            return Phase::Pending;
        }
        match policy {
            "Always" => Phase::Running,
            _ if stopped == succeeded => Phase::Succeeded,
            "Never" => Phase::Failed,
            _ => Phase::Running,
        }
    }

    async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<(), WorkerError> {
        let cfg = convert::sandbox_config(pod, &self.ctx.cfg.sandbox).map_err(|e| {
            WorkerError::Other {
                uid: self.uid.clone(),
                what: e.to_string(),
            }
        })?;
        let host_network = cfg.namespaces.host_network;
        let netns = self.rt(move |rt| rt.run_pod_sandbox(&cfg)).await?;
        let ip = match (&netns, &self.ctx.network) {
            (Some(ns), Some(net)) => {
                Some(
                    net.setup(&self.uid, ns)
                        .await
                        .map_err(|e| WorkerError::Other {
                            uid: self.uid.clone(),
                            what: format!("network: {e}"),
                        })?,
                )
            }
            _ if host_network => self.ctx.host_ip,
            _ => None,
        };
        if let Some(ip) = ip {
            let uid = self.uid.clone();
            self.rt(move |rt| rt.set_pod_ip(&uid, ip)).await?;
        }
        self.pod_ip = ip;
        if self.start_time.is_none() {
            self.start_time = Some(Timestamp::now());
        }
        self.sandbox_ready = true;
        Ok(())
    }

    async fn setup_volumes(&self, pod: &Arc<Pod>) -> Result<PodVolumes, String> {
        let ctx = self.ctx.clone();
        let pod = pod.clone();
        tokio::task::spawn_blocking(move || {
            let objects = env::StoreObjects(&*ctx.store);
            let vctx = VolumeContext {
                objects: &objects,
                pods_dir: &ctx.cfg.pods_dir,
                node_name: &ctx.cfg.node_name,
                node_memory_bytes: ctx.cfg.node_memory_bytes,
                node_cpu_millis: ctx.cfg.node_cpu_millis,
            };
            volumes::setup(&pod, &vctx).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("volume task: {e}"))?
    }

    /// Starts a container that has not run, or restarts one that exited if
    /// `restart` allows it and its backoff has passed. Returns when the
    /// worker should look again (backoff expiry).
    async fn start_or_restart(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        cur: Option<&RtContainer>,
        restart: bool,
        vols: &Arc<PodVolumes>,
    ) -> Option<Duration> {
        let attempt = match cur {
            None => 0,
            Some(cur) if is_running(cur) => return None,
            Some(cur) if matches!(cur.state, ContainerState::Created) => {
                // A start that failed midway: retry it.
                cur.record.config.attempt
            }
            Some(cur) => {
                let code = exit_code(cur).unwrap_or(1);
                let again =
                    restart && (restart_policy(pod) != "OnFailure" || code != 0 || is_sidecar(c));
                if !again {
                    self.waiting.remove(&c.name);
                    return None;
                }
                self.count_exit(cur);
                if let Some(left) = self.backoff.remaining(&c.name, Instant::now()) {
                    let delay = self.backoff.delay(&c.name).unwrap_or_default();
                    let msg = format!(
                        "back-off {} restarting failed container={} pod={}_{}({})",
                        humantime(delay),
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        self.uid
                    );
                    if self
                        .waiting
                        .get(&c.name)
                        .is_none_or(|w| w.reason != "CrashLoopBackOff")
                    {
                        self.ctx.events.record(
                            pod,
                            EventKind::Warning,
                            "BackOff",
                            "Back-off restarting failed container".to_string()
                                + &format!(
                                    " {} in pod {}",
                                    c.name,
                                    pod.metadata.name.as_deref().unwrap_or_default()
                                ),
                        );
                    }
                    self.waiting.insert(
                        c.name.clone(),
                        Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: msg,
                        },
                    );
                    return Some(left);
                }
                cur.record.config.attempt + 1
            }
        };
        match self.start_container(pod, c, attempt, vols).await {
            Ok(()) => {
                self.waiting.remove(&c.name);
                None
            }
            Err((w, retry)) => {
                self.waiting.insert(c.name.clone(), w);
                Some(retry)
            }
        }
    }

    /// Pull policy: Always / IfNotPresent / Never. Returns the image's name
    /// in the store.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &Container,
    ) -> Result<String, (Waiting, Duration)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tagged = image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
            if image.contains('@') || (tagged && !image.ends_with(":latest")) {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
        let images = self.ctx.runtime.images().clone();
        let present = {
            let image = image.clone();
            tokio::task::spawn_blocking(move || images.resolve(&image))
                .await
                .ok()
                .and_then(Result::ok)
        };
        if let Some(rec) = &present {
            self.image_ids.insert(
                c.name.clone(),
                format!(
                    "{}@{}",
                    rec.name
                        .rsplit_once(':')
                        .map_or(rec.name.as_str(), |(n, _)| n),
                    rec.manifest
                ),
            );
        }
        match (policy.as_str(), present) {
            ("Never", Some(rec)) | ("IfNotPresent", Some(rec)) => return Ok(rec.name),
            ("Never", None) => {
                return Err((
                    Waiting {
                        reason: "ErrImageNeverPull".into(),
                        message: format!(
                            "Container image \"{image}\" is not present with pull policy of Never"
                        ),
                    },
                    self.ctx.cfg.relist_interval,
                ));
            }
            _ => {}
        }
        let key = format!("image:{image}");
        if let Some(left) = self.backoff.remaining(&key, Instant::now()) {
            return Err((
                Waiting {
                    reason: "ImagePullBackOff".into(),
                    message: format!("Back-off pulling image \"{image}\""),
                },
                left,
            ));
        }
        self.ctx.events.record(
            pod,
            EventKind::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let opts = PullOptions {
            plain_http: loopback_registry(&image),
            ..PullOptions::default()
        };
        let started = std::time::Instant::now();
        // The pull future is not `Send` (a rustc limitation with the
        // image store's iterators): drive it on a blocking thread.
        let pulled: Result<_, String> = {
            let images = self.ctx.runtime.images().clone();
            let image = image.clone();
            let handle = tokio::runtime::Handle::current();
            match tokio::task::spawn_blocking(move || {
                handle.block_on(images.pull(&image, &opts, Arc::new(|_| {})))
            })
            .await
            {
                Ok(r) => r.map_err(|e: ImageError| e.to_string()),
                Err(e) => Err(format!("pull task: {e}")),
            }
        };
        match pulled {
            Ok(rec) => {
                self.backoff.clear(&key);
                self.ctx.events.record(
                    pod,
                    EventKind::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                self.image_ids.insert(
                    c.name.clone(),
                    format!(
                        "{}@{}",
                        rec.name
                            .rsplit_once(':')
                            .map_or(rec.name.as_str(), |(n, _)| n),
                        rec.manifest
                    ),
                );
                Ok(rec.name)
            }
            Err(e) => {
                let d = self.backoff.failed(&key, Instant::now(), None);
                let message = format!("Failed to pull image \"{image}\": {e}");
                self.ctx
                    .events
                    .record(pod, EventKind::Warning, "Failed", message.clone());
                Err((
                    Waiting {
                        reason: "ErrImagePull".into(),
                        message,
                    },
                    d,
                ))
            }
        }
    }

    async fn start_container(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        attempt: u32,
        vols: &Arc<PodVolumes>,
    ) -> Result<(), (Waiting, Duration)> {
        let image = self.ensure_image(pod, c).await?;
        let retry = self.ctx.cfg.relist_interval;
        let config_err = |what: String| {
            (
                Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: what,
                },
                retry,
            )
        };
        let env = {
            let objects = env::StoreObjects(&*self.ctx.store);
            let ectx = EnvContext {
                objects: &objects,
                node_name: &self.ctx.cfg.node_name,
                pod_ip: self.pod_ip,
                host_ip: self.ctx.host_ip,
                node_cpu_millis: self.ctx.cfg.node_cpu_millis,
                node_memory_bytes: self.ctx.cfg.node_memory_bytes,
            };
            env::container_env(pod, c, &ectx).map_err(|e| config_err(e.to_string()))?
        };
        let mounts = volumes::container_mounts(c, vols).map_err(|e| config_err(e.to_string()))?;
        let mut cfg = convert::container_config(pod, c, attempt, env, mounts)
            .map_err(|e| config_err(e.to_string()))?;
        cfg.image = image;
        let uid = self.uid.clone();
        let created = self.rt(move |rt| rt.create_container(&uid, &cfg)).await;
        let rec = match created {
            Ok(r) => r,
            Err(e) => {
                let d = self.backoff.failed(&c.name, Instant::now(), None);
                let message = e.to_string();
                self.ctx.events.record(
                    pod,
                    EventKind::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                return Err((
                    Waiting {
                        reason: "CreateContainerError".into(),
                        message,
                    },
                    d,
                ));
            }
        };
        self.ctx.events.record(
            pod,
            EventKind::Normal,
            "Created",
            format!("Created container {}", c.name),
        );
        let r2 = rec.clone();
        if let Err(e) = self.rt(move |rt| rt.start_container(&r2)).await {
            let r3 = rec.clone();
            let _ = self.rt(move |rt| rt.remove_container(&r3)).await;
            let d = self.backoff.failed(&c.name, Instant::now(), None);
            let message = e.to_string();
            self.ctx.events.record(
                pod,
                EventKind::Warning,
                "Failed",
                format!("Error: {message}"),
            );
            return Err((
                Waiting {
                    reason: "RunContainerError".into(),
                    message,
                },
                d,
            ));
        }
        self.ctx.events.record(
            pod,
            EventKind::Normal,
            "Started",
            format!("Started container {}", c.name),
        );
        self.spawn_waiter(&rec);
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let target: Arc<dyn ProbeTarget> = Arc::new(Target {
                runtime: self.ctx.runtime.clone(),
                record: rec.clone(),
                pod_ip: self.pod_ip,
            });
            if let Err(msg) = lifecycle::run_handler(h, c, target, grace_period(pod)).await {
                self.ctx
                    .events
                    .record(pod, EventKind::Warning, "FailedPostStartHook", msg);
                let r = rec.clone();
                let grace = grace_period(pod);
                let _ = self.rt(move |rt| rt.stop_container(&r, grace)).await;
            }
        }
        Ok(())
    }

    fn spawn_waiter(&mut self, rec: &ContainerRecord) {
        if !self.waiters.insert(rec.id.clone()) {
            return;
        }
        let pod_dir = self
            .ctx
            .runtime
            .config()
            .run_dir
            .join("pods")
            .join(&self.uid);
        let id = rec.id.clone();
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("herd-wait".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if let Ok(c) = herd_runtime::monitor::MonitorClient::connect(&pod_dir) {
                    let _ = c.wait(&id, None);
                }
                let _ = tx.send(WorkerMsg::Wake);
            });
        if spawned.is_err() {
            self.waiters.remove(&rec.id);
        }
    }

    fn ensure_waiters(&mut self, attempts: &Attempts) {
        let running: Vec<ContainerRecord> = attempts
            .values()
            .filter(|(c, _)| is_running(c))
            .map(|(c, _)| c.record.clone())
            .collect();
        for r in &running {
            self.spawn_waiter(r);
        }
        let live: HashSet<&str> = running.iter().map(|r| r.id.as_str()).collect();
        self.waiters.retain(|id| live.contains(id.as_str()));
    }

    /// Probers for running containers; startup first, then liveness and
    /// readiness once started. Probers of gone attempts are dropped.
    fn ensure_probers(&mut self, pod: &Pod, attempts: &Attempts) {
        let (inits, mains) = spec_containers(pod);
        let mut want: HashMap<
            (String, ProbeKind),
            (Container, RtContainer, k8s_openapi::api::core::v1::Probe),
        > = HashMap::new();
        for c in mains.iter().chain(inits.iter().filter(|c| is_sidecar(c))) {
            let Some((cur, _)) = attempts.get(&c.name) else {
                continue;
            };
            if !is_running(cur) || self.unhealthy.contains(&cur.record.id) {
                continue;
            }
            let started = c.startup_probe.is_none()
                || self
                    .results
                    .get(&(cur.record.id.clone(), ProbeKind::Startup))
                    .copied()
                    .unwrap_or(false);
            if !started {
                if let Some(p) = &c.startup_probe {
                    want.insert(
                        (c.name.clone(), ProbeKind::Startup),
                        (c.clone(), cur.clone(), p.clone()),
                    );
                }
                continue;
            }
            if let Some(p) = &c.liveness_probe {
                want.insert(
                    (c.name.clone(), ProbeKind::Liveness),
                    (c.clone(), cur.clone(), p.clone()),
                );
            }
            if let Some(p) = &c.readiness_probe {
                want.insert(
                    (c.name.clone(), ProbeKind::Readiness),
                    (c.clone(), cur.clone(), p.clone()),
                );
            }
        }
        self.probers.retain(|k, p| {
            want.get(k)
                .is_some_and(|(_, cur, _)| cur.record.id == p.container_id)
        });
        for (k, (c, cur, probe)) in want {
            if self.probers.contains_key(&k) {
                continue;
            }
            let target: Arc<dyn ProbeTarget> = Arc::new(Target {
                runtime: self.ctx.runtime.clone(),
                record: cur.record.clone(),
                pod_ip: self.pod_ip,
            });
            let task = probes::spawn_prober(
                k.1,
                probe,
                c,
                cur.record.id.clone(),
                target,
                self.probe_tx.clone(),
            );
            self.probers.insert(
                k,
                Prober {
                    container_id: cur.record.id.clone(),
                    task,
                },
            );
        }
        let live: HashSet<String> = attempts
            .values()
            .map(|(c, _)| c.record.id.clone())
            .collect();
        self.results.retain(|(id, _), _| live.contains(id));
    }

    /// A container failed its liveness (or startup) probe: kill it, the
    /// restart policy decides what comes next.
    async fn kill_unhealthy(&mut self, pod: &Pod, c: &Container, cur: &RtContainer) {
        self.ctx.events.record(
            pod,
            EventKind::Normal,
            "Killing",
            format!(
                "Container {} failed liveness probe, will be restarted",
                c.name
            ),
        );
        self.probers.retain(|_, p| p.container_id != cur.record.id);
        self.kill_container(pod, Some(c), cur.record.clone(), grace_period(pod))
            .await;
        self.unhealthy.remove(&cur.record.id);
    }

    async fn kill_container(
        &self,
        pod: &Pod,
        spec: Option<&Container>,
        rec: ContainerRecord,
        grace: Duration,
    ) {
        let started = Instant::now();
        if let Some(c) = spec
            && let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
            && !grace.is_zero()
        {
            let target: Arc<dyn ProbeTarget> = Arc::new(Target {
                runtime: self.ctx.runtime.clone(),
                record: rec.clone(),
                pod_ip: self.pod_ip,
            });
            if let Err(msg) = lifecycle::run_handler(h, c, target, grace).await {
                self.ctx
                    .events
                    .record(pod, EventKind::Warning, "FailedPreStopHook", msg);
            }
        }
        let left = grace.saturating_sub(started.elapsed());
        if let Err(e) = self.rt(move |rt| rt.stop_container(&rec, left)).await {
            tracing::warn!(pod = %self.uid, "stopping a container: {e}");
        }
    }

    /// Stops every running container: regular ones together (preStop,
    /// SIGTERM, SIGKILL after the grace period), then sidecars in reverse
    /// order, as the kubelet does.
    async fn kill_pod(&mut self, pod: &Pod, grace: Duration) -> Result<(), WorkerError> {
        self.probers.clear();
        let attempts = self.attempts().await?;
        let (inits, mains) = spec_containers(pod);
        let started = Instant::now();
        let running = |name: &str| {
            attempts
                .get(name)
                .filter(|(c, _)| is_running(c) || matches!(c.state, ContainerState::Created))
                .map(|(c, _)| c.record.clone())
        };
        let mut regular = Vec::new();
        for c in mains {
            if let Some(rec) = running(&c.name) {
                self.ctx.events.record(
                    pod,
                    EventKind::Normal,
                    "Killing",
                    format!("Stopping container {}", c.name),
                );
                regular.push(self.kill_container(pod, Some(c), rec, grace));
            }
        }
        futures_util::future::join_all(regular).await;
        for c in inits.iter().rev() {
            if let Some(rec) = running(&c.name) {
                let left = grace.saturating_sub(started.elapsed());
                self.kill_container(pod, Some(c), rec, left).await;
            }
        }
        // Anything left (containers no longer in the spec).
        let known: HashSet<&str> = mains.iter().chain(inits).map(|c| c.name.as_str()).collect();
        for (name, (c, _)) in &attempts {
            if !known.contains(name.as_str()) && is_running(c) {
                self.kill_container(pod, None, c.record.clone(), Duration::ZERO)
                    .await;
            }
        }
        Ok(())
    }

    /// A finished pod (Succeeded, Failed, Evicted) keeps its containers'
    /// records and logs until it is deleted, as with the kubelet; its
    /// address goes back to the pool.
    async fn release_network(&mut self) {
        self.probers.clear();
        // The netns outlives this (until the pod is deleted): the veth goes
        // now, so the address is not in use when it is handed out again.
        let netns = self
            .ctx
            .runtime
            .config()
            .run_dir
            .join("pods")
            .join(&self.uid)
            .join("ns")
            .join("net");
        if let Some(net) = &self.ctx.network
            && let Err(e) = net.teardown(&self.uid, Some(&netns)).await
        {
            tracing::warn!(pod = %self.uid, "network teardown: {e}");
        }
    }

    /// Removes the sandbox, its network and volumes. With `forget`, the
    /// pod is gone for good: its logs go too.
    async fn remove_sandbox(&mut self, pod: &Pod, forget: bool) -> Result<(), WorkerError> {
        self.probers.clear();
        if let Some(net) = &self.ctx.network
            && let Err(e) = net.teardown(&self.uid, None).await
        {
            tracing::warn!(pod = %self.uid, "network teardown: {e}");
        }
        let uid = self.uid.clone();
        self.rt(move |rt| rt.remove_pod_sandbox(&uid)).await?;
        self.sandbox_ready = false;
        let pods_dir = self.ctx.cfg.pods_dir.clone();
        let uid = self.uid.clone();
        let torn = tokio::task::spawn_blocking(move || volumes::teardown(&uid, &pods_dir)).await;
        if let Ok(Err(e)) = torn {
            tracing::warn!(pod = %self.uid, "volume teardown: {e}");
        }
        if forget
            && let Ok(dir) = herd_runtime::logs::pod_log_dir(
                &self.ctx.runtime.config().log_dir,
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                pod.metadata.name.as_deref().unwrap_or_default(),
                &self.uid,
            )
        {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }

    /// Deletes the pod object (or a static pod's mirror) once everything
    /// is stopped, if it still is this uid.
    async fn delete_from_store(&self, pod: &Pod) {
        let key = pod_key(pod);
        let store = self.ctx.store.clone();
        let uid = self.uid.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let Ok(cur) = store.get(&key) else { return };
            if cur.pointer("/metadata/uid").and_then(|v| v.as_str()) != Some(uid.as_str()) {
                return;
            }
            let rv = store::resource_version(&cur);
            if let Err(e) = store.delete(&key, rv) {
                tracing::debug!("deleting pod {}: {e}", key.name);
            }
        })
        .await;
    }

    fn view(&self, pod: &Pod, attempts: &Attempts, initialized: bool) -> PodView {
        let (inits, mains) = spec_containers(pod);
        let cv = |c: &Container| {
            let (cur, prev) = match attempts.get(&c.name) {
                Some((cur, prev)) => (Some(cur.clone()), prev.clone()),
                None => (None, None),
            };
            let id = cur
                .as_ref()
                .map(|c| c.record.id.clone())
                .unwrap_or_default();
            let running = cur.as_ref().is_some_and(is_running);
            let started = running
                && (c.startup_probe.is_none()
                    || self
                        .results
                        .get(&(id.clone(), ProbeKind::Startup))
                        .copied()
                        .unwrap_or(false));
            let ready = started
                && (c.readiness_probe.is_none()
                    || self
                        .results
                        .get(&(id.clone(), ProbeKind::Readiness))
                        .copied()
                        .unwrap_or(false));
            ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: self.image_ids.get(&c.name).cloned().unwrap_or_default(),
                waiting: if running {
                    None
                } else {
                    self.waiting.get(&c.name).cloned()
                },
                current: cur,
                previous: prev,
                ready,
                started,
            }
        };
        PodView {
            phase: Phase::Pending,
            reason: None,
            message: None,
            pod_ip: self.pod_ip,
            host_ip: self.ctx.host_ip,
            start_time: self.start_time,
            sandbox_ready: self.sandbox_ready,
            initialized,
            init_containers: inits.iter().map(cv).collect(),
            containers: mains.iter().map(cv).collect(),
            qos_class: convert::qos_class(pod).as_str().to_string(),
        }
    }

    /// Writes the status if it changed (to the pod, or a static pod's
    /// mirror). A pod that is gone or has another uid is left alone.
    async fn write_status(&mut self, pod: &Pod, view: &PodView) {
        let status = status::pod_status(view, self.last_status.as_ref(), Timestamp::now());
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let Ok(json) = serde_json::to_value(&status) else {
            return;
        };
        let key = pod_key(pod);
        let store = self.ctx.store.clone();
        let uid = self.uid.clone();
        let written = tokio::task::spawn_blocking(move || {
            store::update_with(&*store, &key, |mut obj| {
                if obj.pointer("/metadata/uid").and_then(|v| v.as_str()) != Some(uid.as_str()) {
                    return Ok(None);
                }
                obj["status"] = json.clone();
                Ok(Some(obj))
            })
        })
        .await;
        match written {
            Ok(Ok(_)) | Ok(Err(StoreError::NotFound { .. })) => self.last_status = Some(status),
            Ok(Err(e)) => tracing::warn!(pod = %self.uid, "writing status: {e}"),
            Err(e) => tracing::warn!(pod = %self.uid, "writing status: {e}"),
        }
    }
}

/// `10s`, `2m40s`, `5m0s`: Go's `time.Duration` string for whole seconds.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else if d.subsec_millis() != 0 && s == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(loopback_registry("127.0.0.1:5000/busybox:1"));
        assert!(loopback_registry("localhost:5000/x/y"));
        assert!(!loopback_registry("busybox"));
        assert!(!loopback_registry("docker.io/library/busybox"));
        assert!(!loopback_registry("library/busybox"));
    }

    #[test]
    fn go_durations() {
        assert_eq!(humantime(Duration::from_secs(10)), "10s");
        assert_eq!(humantime(Duration::from_secs(300)), "5m0s");
        assert_eq!(humantime(Duration::from_secs(160)), "2m40s");
    }
}
