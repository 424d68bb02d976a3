//! The Job controller: runs pods until `completions` succeed, at most
//! `parallelism` at once, as kube-controller-manager's (NonIndexed and
//! Indexed completion modes).
//!
//! Behaviour:
//! - Pods come from the template (its `restartPolicy`, OnFailure or
//!   Never), named `<job>-<5 random chars>` (Indexed:
//!   `<job>-<index>-<5 random chars>`, with the index annotation, label,
//!   `JOB_COMPLETION_INDEX` and hostname `<job>-<index>`), labelled
//!   `batch.kubernetes.io/job-name`, `job-name`,
//!   `batch.kubernetes.io/controller-uid` and `controller-uid`; the
//!   selector defaults to the controller uid.
//! - Without `completions` (work queue) the job completes when a pod
//!   succeeded and none is active; with it, when that many pods (Indexed:
//!   distinct indexes) succeeded. Completion sets `SuccessCriteriaMet` and
//!   `Complete`, `completionTime`, and deletes pods still active.
//! - Failed pods (and, with `restartPolicy: OnFailure`, container restarts
//!   of active pods) count against `backoffLimit` (default 6): more
//!   failures mark the job `Failed` (reason `BackoffLimitExceeded`) and
//!   delete its active pods; so does passing `activeDeadlineSeconds` after
//!   `startTime` (reason `DeadlineExceeded`). `suspend` deletes active
//!   pods and creates none.
//! - After a failure a replacement waits the pod backoff (base 10 s,
//!   doubled per failure, at most 6 min) counted from the last failed
//!   container's `finishedAt` (no wait when unknown).
//! - Limit: `succeeded`/`failed` are counted from the pods that exist and
//!   never go down (kube tracks them with finalizers; herd does not, so a
//!   finished pod deleted before it was counted is not counted).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

use super::pods;
use super::replicaset::owners_of_pod;
use super::{Controller, ControllerError};
use crate::api::Resource;
use crate::store::{Datastore, Key, WatchEvent};

const NAME: &str = "job";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const MAX_POD_BACKOFF: Duration = Duration::from_secs(360);

/// The Job controller.
#[derive(Debug, Clone)]
pub struct JobController {
    /// First delay before replacing a failed pod.
    pub pod_backoff: Duration,
}

impl Default for JobController {
    fn default() -> JobController {
        JobController {
            pod_backoff: Duration::from_secs(10),
        }
    }
}

impl Controller for JobController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> &'static [Resource] {
        &[Resource::Jobs, Resource::Pods]
    }

    fn keys_for(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key> {
        match event.key.resource {
            Resource::Jobs => vec![event.key.clone()],
            Resource::Pods => owners_of_pod(store, event, Resource::Jobs),
            _ => Vec::new(),
        }
    }

    fn all_keys(&self, store: &dyn Datastore) -> Result<Vec<Key>, ControllerError> {
        pods::all_keys(NAME, store, Resource::Jobs)
    }

    fn reconcile(
        &self,
        store: &dyn Datastore,
        key: &Key,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        let Some(job) = pods::get_decoded::<Job>(NAME, store, key)? else {
            return Ok(None);
        };
        self.sync(store, key, job, now)
    }
}

fn finished(status: &JobStatus) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

fn finished_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
}

/// `0-2,4`: the compressed list of completed indexes.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

fn dur_until(now: Timestamp, at: Timestamp) -> Duration {
    let ms = at.duration_since(now).as_millis();
    Duration::from_millis(u64::try_from(ms).unwrap_or(0).max(1))
}

impl JobController {
    fn sync(
        &self,
        store: &dyn Datastore,
        key: &Key,
        job: Job,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        let spec = job.spec.clone().unwrap_or_default();
        let mut status = job.status.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let selector = spec.selector.clone().unwrap_or_else(|| LabelSelector {
            match_labels: Some([(CONTROLLER_UID.to_string(), uid.clone())].into()),
            match_expressions: None,
        });
        let owner = pods::owner_ref(Resource::Jobs, &job.metadata);
        let deleting = job.metadata.deletion_timestamp.is_some();
        let mine = pods::claim_pods(
            NAME,
            store,
            owner.clone(),
            deleting,
            &selector,
            pods::pods_in(NAME, store, ns)?,
        )?;
        let (mut active, done): (Vec<Pod>, Vec<Pod>) = mine
            .into_iter()
            .filter(|p| !pods::is_terminating(p))
            .partition(pods::is_active);
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let succeeded_pods: Vec<&Pod> = done
            .iter()
            .filter(|p| pods::phase(p) == "Succeeded")
            .collect();
        let failed_pods: Vec<&Pod> = done.iter().filter(|p| pods::phase(p) == "Failed").collect();
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let mut completed: BTreeSet<i32> = BTreeSet::new();
        if indexed {
            completed.extend(succeeded_pods.iter().filter_map(|p| index_of(p)));
            if let Some(s) = status.completed_indexes.as_deref() {
                completed.extend(parse_indexes(s));
            }
        }
        let succeeded = count(succeeded_pods.len()).max(status.succeeded.unwrap_or(0));
        let failed = count(failed_pods.len()).max(status.failed.unwrap_or(0));
        status.succeeded = Some(succeeded);
        status.failed = Some(failed);
        if indexed {
            status.completed_indexes = Some(format_indexes(&completed));
        }
        if finished(&status) || deleting {
            for p in &active {
                pods::delete_pod(NAME, store, p, now)?;
            }
            status.active = Some(0);
            status.ready = Some(0);
            pods::write_status(NAME, store, key, pods::encode(NAME, key, &status)?)?;
            return Ok(None);
        }
        let suspended = spec.suspend == Some(true);
        if status.start_time.is_none() && !suspended {
            status.start_time = Some(Time(now));
        }
        let start = status.start_time.as_ref().map(|t| t.0);
        let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0);
        let on_failure = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure");
        let restarts_total: i32 = if on_failure {
            active.iter().map(restarts).sum()
        } else {
            0
        };
        let deadline = spec
            .active_deadline_seconds
            .zip(start)
            .and_then(|(s, t)| t.checked_add(SignedDuration::from_secs(s)).ok());
        let completions = spec.completions;
        let complete = match completions {
            Some(c) if indexed => count(completed.len()) >= c,
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        let failure = if failed > backoff_limit
            || (on_failure && failed.saturating_add(restarts_total) > backoff_limit)
        {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if !suspended && deadline.is_some_and(|d| d <= now) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        };
        let mut requeue = None;
        if let Some((reason, message)) = failure {
            for p in active.drain(..) {
                pods::delete_pod(NAME, store, &p, now)?;
            }
            let conds = status.conditions.get_or_insert_with(Vec::new);
            set(conds, "FailureTarget", reason, message, now);
            set(conds, "Failed", reason, message, now);
        } else if complete {
            for p in active.drain(..) {
                pods::delete_pod(NAME, store, &p, now)?;
            }
            let conds = status.conditions.get_or_insert_with(Vec::new);
            let msg = "Reached expected number of succeeded pods";
            set(conds, "SuccessCriteriaMet", "CompletionsReached", msg, now);
            set(conds, "Complete", "CompletionsReached", msg, now);
            status.completion_time = Some(Time(now));
        } else {
            let parallelism = spec.parallelism.unwrap_or(1).max(0);
            let want = if suspended {
                0
            } else {
                match completions {
                    Some(c) if indexed => (c - count(completed.len())).min(parallelism),
                    Some(c) => (c - succeeded).min(parallelism),
                    None if succeeded > 0 => 0,
                    None => parallelism,
                }
                .max(0)
            };
            let have = count(active.len());
            if have > want {
                active.sort_by(pods::deletion_order);
                let surplus = usize::try_from(have - want).unwrap_or(0);
                for p in active.drain(..surplus) {
                    pods::delete_pod(NAME, store, &p, now)?;
                }
            } else if have < want {
                let wait = self.creation_backoff(&failed_pods, failed, now);
                if let Some(at) = wait {
                    requeue = Some(dur_until(now, at));
                } else {
                    let running: BTreeSet<i32> = active.iter().filter_map(index_of).collect();
                    let mut free = (0..completions.unwrap_or(0))
                        .filter(|i| !completed.contains(i) && !running.contains(i));
                    for _ in 0..(want - have) {
                        let index = if indexed {
                            match free.next() {
                                Some(i) => Some(i),
                                None => break,
                            }
                        } else {
                            None
                        };
                        let pod = job_pod(&job, owner.clone(), &uid, index);
                        active.push(pods::create_pod(NAME, store, ns, pod, now)?);
                    }
                }
            }
            if let Some(d) = deadline {
                let left = dur_until(now, d);
                requeue = Some(requeue.map_or(left, |r: Duration| r.min(left)));
            }
        }
        status.active = Some(count(active.len()));
        status.ready = Some(count(active.iter().filter(|p| pods::is_ready(p)).count()));
        pods::write_status(NAME, store, key, pods::encode(NAME, key, &status)?)?;
        Ok(requeue)
    }

    /// When a replacement may be created after `failed` failures.
    fn creation_backoff(
        &self,
        failed_pods: &[&Pod],
        failed: i32,
        now: Timestamp,
    ) -> Option<Timestamp> {
        if failed <= 0 {
            return None;
        }
        let last = failed_pods.iter().filter_map(|p| finished_at(p)).max()?;
        let shift = u32::try_from(failed - 1).unwrap_or(0).min(16);
        let delay = self
            .pod_backoff
            .checked_mul(1 << shift)
            .unwrap_or(MAX_POD_BACKOFF)
            .min(MAX_POD_BACKOFF);
        let at = last
            .checked_add(SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO))
            .ok()?;
        (at > now).then_some(at)
    }
}

fn parse_indexes(s: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b.min(a.saturating_add(100_000)));
                }
            }
            None => out.extend(part.parse::<i32>().ok()),
        }
    }
    out
}

fn job_pod(
    job: &Job,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    uid: &str,
    index: Option<i32>,
) -> Pod {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let prefix = match index {
        Some(i) => format!("{job_name}-{i}"),
        None => job_name.clone(),
    };
    let mut pod = pods::pod_from_template(&spec.template, owner, &prefix);
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in [
        (JOB_NAME, job_name.as_str()),
        ("job-name", job_name.as_str()),
        (CONTROLLER_UID, uid),
        ("controller-uid", uid),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    if let Some(i) = index {
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        pod.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        if let Some(s) = pod.spec.as_mut() {
            s.hostname = Some(format!("{job_name}-{i}"));
            for c in s
                .containers
                .iter_mut()
                .chain(s.init_containers.iter_mut().flatten())
            {
                c.env.get_or_insert_with(Vec::new).push(EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: Some(i.to_string()),
                    value_from: None,
                });
            }
        }
    }
    pod
}

fn set(conds: &mut Vec<JobCondition>, type_: &str, reason: &str, message: &str, now: Timestamp) {
    if conds.iter().any(|c| c.type_ == type_ && c.status == "True") {
        return;
    }
    conds.retain(|c| c.type_ != type_);
    conds.push(JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip_compressed() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        let back: BTreeSet<i32> = parse_indexes("0-2,4,6-7").into_iter().collect();
        assert_eq!(back, set);
        assert!(parse_indexes("x,-,3-a").is_empty());
    }
}
