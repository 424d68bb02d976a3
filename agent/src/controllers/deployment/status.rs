//! A Deployment's status from its ReplicaSets (`calculateStatus` and the
//! Available/Progressing conditions of kube's `progress.go`).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::rollout::Strategy;

/// Default `progressDeadlineSeconds`.
const DEFAULT_DEADLINE: i64 = 600;

fn counts(rs: &ReplicaSet) -> (i32, i32, i32, i32) {
    let spec = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let st = rs.status.clone().unwrap_or_default();
    (
        spec,
        st.replicas,
        st.ready_replicas.unwrap_or(0),
        st.available_replicas.unwrap_or(0),
    )
}

/// The new status and when to look again (progress deadline).
pub(super) fn compute(
    d: &Deployment,
    spec: &DeploymentSpec,
    strategy: Strategy,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    progressed: bool,
    now: Timestamp,
) -> (DeploymentStatus, Option<Duration>) {
    let old = d.status.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1).max(0);
    let sum = |f: fn((i32, i32, i32, i32)) -> i32| -> i32 {
        all.iter()
            .map(|r| f(counts(r)))
            .fold(0, i32::saturating_add)
    };
    let total_spec = sum(|c| c.0);
    let actual = sum(|c| c.1);
    let ready = sum(|c| c.2);
    let available = sum(|c| c.3);
    let updated = new.map_or(0, |r| counts(r).1);
    let mut st = DeploymentStatus {
        replicas: Some(actual),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((total_spec - available).max(0)),
        observed_generation: d.metadata.generation.or(old.observed_generation),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    let mut conds = st.conditions.take().unwrap_or_default();
    let min_available = desired - strategy.max_unavailable(desired);
    if available >= min_available {
        set(
            &mut conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        );
    } else {
        set(
            &mut conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
        );
    }
    let new_name = new
        .and_then(|r| r.metadata.name.clone())
        .unwrap_or_default();
    let complete = updated == desired && available == desired && actual == desired && new.is_some();
    let mut requeue = None;
    if spec.paused == Some(true) {
        set(
            &mut conds,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            now,
        );
    } else if complete {
        set(
            &mut conds,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            now,
        );
    } else {
        let moved = progressed
            || old.updated_replicas != st.updated_replicas
            || old.ready_replicas != st.ready_replicas
            || old.available_replicas != st.available_replicas
            || old.replicas != st.replicas;
        let current = conds.iter().find(|c| c.type_ == "Progressing").cloned();
        let resumed = current
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"));
        let deadline = spec
            .progress_deadline_seconds
            .map_or(DEFAULT_DEADLINE, i64::from);
        let last_update = current
            .as_ref()
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| t.0);
        let exceeded = current
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
        if moved
            || resumed
            || current.is_none()
            || current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"))
        {
            let reason = if resumed {
                "DeploymentResumed"
            } else {
                "ReplicaSetUpdated"
            };
            set(
                &mut conds,
                "Progressing",
                "True",
                reason,
                &format!("ReplicaSet \"{new_name}\" is progressing."),
                now,
            );
            if let Some(c) = conds.iter_mut().find(|c| c.type_ == "Progressing") {
                c.last_update_time = Some(Time(now));
            }
            requeue = Some(Duration::from_secs(u64::try_from(deadline).unwrap_or(600)));
        } else if !exceeded {
            let due = last_update
                .unwrap_or(now)
                .checked_add(SignedDuration::from_secs(deadline))
                .unwrap_or(Timestamp::MAX);
            if due <= now {
                set(
                    &mut conds,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    now,
                );
            } else {
                let left = due.duration_since(now);
                requeue = Some(Duration::from_millis(
                    u64::try_from(left.as_millis()).unwrap_or(0).max(1),
                ));
            }
        }
    }
    st.conditions = Some(conds);
    (st, requeue)
}

/// Sets a condition, keeping `lastTransitionTime` while its status holds.
fn set(
    conds: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
        {
            return;
        }
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_update_time = Some(Time(now));
        return;
    }
    conds.push(DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(now)),
        last_update_time: Some(Time(now)),
    });
}
