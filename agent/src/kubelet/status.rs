//! Pod status as Kubernetes reports it, computed from what the pod worker
//! sees.
//!
//! The worker builds a [`PodView`] (runtime states of the current and
//! previous attempt of every container, the reason a container is waiting,
//! probe results) and [`pod_status`] turns it into a `PodStatus`: phase,
//! conditions (PodScheduled, PodReadyToStartContainers, Initialized,
//! ContainersReady, Ready, with transition times kept while a condition does
//! not change), container states with the kubelet's reasons, restart counts,
//! pod IPs and start time. Pure: no IO, so it is unit-tested on its own.

use std::net::IpAddr;

use herd_runtime::pod::{ContainerState, ContainerStatus as RtContainer};
use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A pod's lifecycle phase (`status.phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Pending,
            Phase::Running,
            Phase::Succeeded,
            Phase::Failed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// Succeeded and Failed pods never run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Why a container is not running (`state.waiting.reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// One container as the worker sees it.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// The latest attempt.
    pub current: Option<RtContainer>,
    /// The attempt before it (for `lastState`).
    pub previous: Option<RtContainer>,
    /// Set when the container is not running and the worker knows why
    /// (CrashLoopBackOff, ErrImagePull, CreateContainerConfigError, …).
    pub waiting: Option<Waiting>,
    pub ready: bool,
    /// Startup probe passed (or none).
    pub started: bool,
}

/// Everything [`pod_status`] needs.
#[derive(Debug, Clone)]
pub struct PodView {
    pub phase: Phase,
    /// `status.reason`/`message` (Evicted, …).
    pub reason: Option<String>,
    pub message: Option<String>,
    pub pod_ip: Option<IpAddr>,
    pub host_ip: Option<IpAddr>,
    pub start_time: Option<Timestamp>,
    pub sandbox_ready: bool,
    pub initialized: bool,
    pub init_containers: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    pub qos_class: String,
}

/// The node's container runtime as Kubernetes shows it: the scheme of
/// container IDs (`herd://…`, `containerd://…`) and the node's
/// `containerRuntimeVersion`. Set once at agent start.
static RUNTIME: std::sync::OnceLock<(&'static str, String)> = std::sync::OnceLock::new();

/// Records the backend's scheme and version (first call wins).
pub fn set_runtime(scheme: &'static str, version: String) {
    let _ = RUNTIME.set((scheme, version));
}

/// `<scheme>://<version>` (empty until set).
pub fn runtime_version() -> String {
    RUNTIME
        .get()
        .map(|(s, v)| format!("{s}://{v}"))
        .unwrap_or_default()
}

/// The runtime's id as Kubernetes shows it.
pub fn container_id(id: &str) -> String {
    let scheme = RUNTIME.get().map_or("herd", |(s, _)| s);
    format!("{scheme}://{id}")
}

fn time(s: &str) -> Option<Time> {
    s.parse::<Timestamp>().ok().map(Time)
}

fn terminated(rt: &RtContainer) -> Option<ContainerStateTerminated> {
    match &rt.state {
        ContainerState::Exited(e) => Some(ContainerStateTerminated {
            container_id: Some(container_id(&rt.record.id)),
            exit_code: e.exit_code,
            reason: Some(e.reason().to_string()),
            started_at: time(&e.started_at),
            finished_at: time(&e.finished_at),
            ..Default::default()
        }),
        ContainerState::Unknown { .. } => Some(ContainerStateTerminated {
            container_id: Some(container_id(&rt.record.id)),
            exit_code: 137,
            reason: Some("ContainerStatusUnknown".into()),
            message: Some("The container could not be located when the pod was terminated".into()),
            ..Default::default()
        }),
        _ => None,
    }
}

/// `state` and `lastState` of one container.
fn container_status(v: &ContainerView, default_waiting: &str) -> ContainerStatus {
    let mut st = ContainerStatus {
        name: v.name.clone(),
        image: v.image.clone(),
        image_id: v.image_id.clone(),
        ready: v.ready,
        started: Some(false),
        restart_count: v.current.as_ref().map_or(0, |c| {
            i32::try_from(c.record.config.attempt).unwrap_or(i32::MAX)
        }),
        ..Default::default()
    };
    let waiting = |w: &Waiting| K8sState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(w.reason.clone()),
            message: (!w.message.is_empty()).then(|| w.message.clone()),
        }),
        ..Default::default()
    };
    let last_from_previous = v.previous.as_ref().and_then(terminated).map(|t| K8sState {
        terminated: Some(t),
        ..Default::default()
    });
    match &v.current {
        Some(cur) => {
            st.container_id = Some(container_id(&cur.record.id));
            match &cur.state {
                ContainerState::Running { started_at, .. } => {
                    st.state = Some(K8sState {
                        running: Some(ContainerStateRunning {
                            started_at: time(started_at),
                        }),
                        ..Default::default()
                    });
                    st.started = Some(v.started);
                    st.last_state = last_from_previous;
                }
                ContainerState::Created => {
                    st.state = Some(waiting(&Waiting {
                        reason: "ContainerCreating".into(),
                        message: String::new(),
                    }));
                    st.last_state = last_from_previous;
                }
                ContainerState::Exited(_) | ContainerState::Unknown { .. } => {
                    let term = terminated(cur).map(|t| K8sState {
                        terminated: Some(t),
                        ..Default::default()
                    });
                    match &v.waiting {
                        // Waiting to be restarted: the exit is the last state.
                        Some(w) => {
                            st.state = Some(waiting(w));
                            st.last_state = term;
                        }
                        None => {
                            st.state = term;
                            st.last_state = last_from_previous;
                        }
                    }
                }
            }
        }
        None => {
            let w = v.waiting.clone().unwrap_or(Waiting {
                reason: default_waiting.into(),
                message: String::new(),
            });
            st.state = Some(waiting(&w));
            st.last_state = last_from_previous;
        }
    }
    st
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, now: &Timestamp) -> PodCondition {
    PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: (!ok)
            .then(|| reason.unwrap_or_default().to_string())
            .filter(|r| !r.is_empty()),
        last_transition_time: Some(Time(*now)),
        ..Default::default()
    }
}

fn is_running(v: &ContainerView) -> bool {
    matches!(
        v.current.as_ref().map(|c| &c.state),
        Some(ContainerState::Running { .. })
    )
}

/// The pod's status. `previous` is the status last written: conditions
/// keep their `lastTransitionTime` while their status does not change.
pub fn pod_status(view: &PodView, previous: Option<&PodStatus>, now: Timestamp) -> PodStatus {
    let default_waiting = if view.initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let init: Vec<ContainerStatus> = view
        .init_containers
        .iter()
        .map(|v| container_status(v, "PodInitializing"))
        .collect();
    let containers: Vec<ContainerStatus> = view
        .containers
        .iter()
        .map(|v| container_status(v, default_waiting))
        .collect();
    let terminal = view.phase.is_terminal();
    let containers_ready =
        !terminal && view.initialized && view.containers.iter().all(|c| c.ready && is_running(c));
    let not_ready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !(c.ready && is_running(c)))
        .map(|c| c.name.as_str())
        .collect();
    let mut conds = vec![
        condition("PodReadyToStartContainers", view.sandbox_ready, None, &now),
        condition(
            "Initialized",
            view.initialized,
            Some("ContainersNotInitialized"),
            &now,
        ),
        condition(
            "Ready",
            containers_ready,
            Some(if terminal {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            &now,
        ),
        condition(
            "ContainersReady",
            containers_ready,
            Some(if terminal {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            &now,
        ),
        condition("PodScheduled", true, None, &now),
    ];
    if view.initialized && terminal {
        // A completed pod stays Initialized (the kubelet's reason).
        conds[1].reason = Some("PodCompleted".into());
    }
    for c in &mut conds {
        if c.status == "False"
            && !not_ready.is_empty()
            && matches!(c.type_.as_str(), "Ready" | "ContainersReady")
            && !terminal
        {
            c.message = Some(format!(
                "containers with unready status: [{}]",
                not_ready.join(" ")
            ));
        }
        if let Some(old) = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|o| o.type_ == c.type_))
            && old.status == c.status
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    let ip = view.pod_ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(view.phase.as_str().to_string()),
        reason: view.reason.clone(),
        message: view.message.clone(),
        conditions: Some(conds),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        host_ip: view.host_ip.map(|ip| ip.to_string()),
        host_ips: view.host_ip.map(|ip| vec![HostIP { ip: ip.to_string() }]),
        start_time: view.start_time.map(Time),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(containers),
        qos_class: Some(view.qos_class.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_runtime::pod::{ContainerRecord, ExitInfo};
    use herd_runtime::types::{ContainerConfig, ContainerResources, LogLimits, SecurityContext};

    fn rt(name: &str, attempt: u32, state: ContainerState) -> RtContainer {
        RtContainer {
            record: ContainerRecord {
                id: format!("u-{name}-{attempt}"),
                pod_uid: "u".into(),
                config: ContainerConfig {
                    name: name.into(),
                    attempt,
                    image: "img".into(),
                    command: vec![],
                    args: vec![],
                    working_dir: None,
                    env: vec![],
                    mounts: vec![],
                    resources: ContainerResources::default(),
                    security: SecurityContext::default(),
                    tty: false,
                    stdin: false,
                    log: LogLimits::default(),
                },
                bundle: "/b".into(),
                log_path: "/l".into(),
                cgroup: "c".into(),
                created: 0,
            },
            state,
        }
    }

    fn exited(code: i32) -> ContainerState {
        ContainerState::Exited(ExitInfo {
            exit_code: code,
            oom_killed: false,
            started_at: "2026-11-23T10:00:00Z".into(),
            finished_at: "2026-11-23T10:00:01Z".into(),
        })
    }

    fn view(containers: Vec<ContainerView>) -> PodView {
        PodView {
            phase: Phase::Running,
            reason: None,
            message: None,
            pod_ip: Some("10.88.0.5".parse().unwrap()),
            host_ip: None,
            start_time: None,
            sandbox_ready: true,
            initialized: true,
            init_containers: vec![],
            containers,
            qos_class: "BestEffort".into(),
        }
    }

    #[test]
    fn crash_loop_shows_waiting_and_the_last_exit() {
        let v = ContainerView {
            name: "app".into(),
            current: Some(rt("app", 3, exited(2))),
            previous: Some(rt("app", 2, exited(1))),
            waiting: Some(Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off 20s restarting failed container".into(),
            }),
            ..Default::default()
        };
        let now = Timestamp::now();
        let s = pod_status(&view(vec![v]), None, now);
        let c = &s.container_statuses.unwrap()[0];
        assert_eq!(c.restart_count, 3);
        assert_eq!(
            c.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 2);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [app]")
        );
    }

    #[test]
    fn transition_times_survive_unchanged_conditions() {
        let running = ContainerView {
            name: "app".into(),
            current: Some(rt(
                "app",
                0,
                ContainerState::Running {
                    pid: 1,
                    started_at: "2026-11-23T10:00:00Z".into(),
                },
            )),
            ready: true,
            started: true,
            ..Default::default()
        };
        let t0: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-23T10:05:00Z".parse().unwrap();
        let first = pod_status(&view(vec![running.clone()]), None, t0);
        let second = pod_status(&view(vec![running]), Some(&first), t1);
        assert_eq!(first, second);
        let c = &second.container_statuses.unwrap()[0];
        assert!(c.state.as_ref().unwrap().running.is_some());
        assert_eq!(c.started, Some(true));
    }

    #[test]
    fn completed_pod_is_not_ready() {
        let v = ContainerView {
            name: "job".into(),
            current: Some(rt("job", 0, exited(0))),
            ..Default::default()
        };
        let mut pv = view(vec![v]);
        pv.phase = Phase::Succeeded;
        let s = pod_status(&pv, None, Timestamp::now());
        let c = &s.container_statuses.unwrap()[0];
        let t = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(t.reason.as_deref(), Some("Completed"));
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.reason.as_deref(), Some("PodCompleted"));
    }
}
