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

mod containers;
mod report;
mod stop;

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
        let t0 = Instant::now();
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

        let t_vol = Instant::now();
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
        let t_ctr = Instant::now();
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
        let t_list = Instant::now();
        self.write_status(&pod, &view).await;
        tracing::debug!(
            pod = %pod.metadata.name.as_deref().unwrap_or_default(),
            sandbox_volumes_ms = (t_vol - t0).as_secs_f64() * 1e3,
            containers_ms = (t_ctr - t_vol).as_secs_f64() * 1e3,
            relist_ms = (t_list - t_ctr).as_secs_f64() * 1e3,
            status_ms = t_list.elapsed().as_secs_f64() * 1e3,
            "pod sync"
        );
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
}
