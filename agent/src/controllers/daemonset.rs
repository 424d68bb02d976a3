//! The DaemonSet controller: one pod per eligible node, as
//! kube-controller-manager's.
//!
//! Behaviour:
//! - Eligible: the template's nodeSelector and required node affinity
//!   match the node and its NoSchedule/NoExecute taints are tolerated
//!   (with the tolerations kube adds to daemon pods: not-ready/unreachable
//!   NoExecute, disk/memory/pid-pressure and unschedulable NoSchedule),
//!   see [`placement`].
//! - Pods are created unbound with a required node affinity
//!   `metadata.name In [node]` (the scheduler binds them), named
//!   `<ds>-<5 random chars>`, labelled `controller-revision-hash` (the
//!   template hash) and owned by the DaemonSet.
//! - A node with more than one daemon pod keeps the oldest; failed pods are
//!   deleted (and replaced); pods on nodes that are gone or no longer
//!   eligible are deleted.
//! - RollingUpdate (default maxUnavailable 1, rounded up from percentages
//!   as the DaemonSet controller does) deletes old-template pods, the
//!   unavailable ones first, while at most maxUnavailable nodes lack an
//!   available pod; the replacement is created on the next pass. OnDelete
//!   leaves old pods alone. (maxSurge is not implemented: treated as 0.)
//! - Status: desired/current/updated number scheduled, misscheduled,
//!   ready, available, unavailable, observedGeneration.

pub mod placement;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::deployment::rollout::scaled_value;
use super::pods::{self, CONTROLLER_REVISION_HASH};
use super::replicaset::owners_of_pod;
use super::runner::key_label;
use super::{Controller, ControllerError};
use crate::api::Resource;
use crate::store::{Datastore, Key, WatchEvent};

const NAME: &str = "daemonset";

/// The DaemonSet controller.
#[derive(Debug, Default)]
pub struct DaemonSetController;

impl Controller for DaemonSetController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> &'static [Resource] {
        &[Resource::DaemonSets, Resource::Pods, Resource::Nodes]
    }

    fn keys_for(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key> {
        match event.key.resource {
            Resource::DaemonSets => vec![event.key.clone()],
            Resource::Pods => owners_of_pod(store, event, Resource::DaemonSets),
            Resource::Nodes => {
                pods::all_keys(NAME, store, Resource::DaemonSets).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    fn all_keys(&self, store: &dyn Datastore) -> Result<Vec<Key>, ControllerError> {
        pods::all_keys(NAME, store, Resource::DaemonSets)
    }

    fn reconcile(
        &self,
        store: &dyn Datastore,
        key: &Key,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        let Some(ds) = pods::get_decoded::<DaemonSet>(NAME, store, key)? else {
            return Ok(None);
        };
        sync(store, key, &ds, now)
    }
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

fn sync(
    store: &dyn Datastore,
    key: &Key,
    ds: &DaemonSet,
    now: Timestamp,
) -> Result<Option<Duration>, ControllerError> {
    let spec = ds.spec.clone().unwrap_or_default();
    if pods::selector_is_empty(&spec.selector) {
        return Err(ControllerError::Invalid {
            controller: NAME,
            key: key_label(key),
            reason: "empty selector would select every pod".into(),
        });
    }
    let ns = key.namespace.as_deref().unwrap_or("default");
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let collision = ds.status.as_ref().and_then(|s| s.collision_count);
    let hash = pods::template_hash(&spec.template, collision);
    let owner = pods::owner_ref(Resource::DaemonSets, &ds.metadata);
    let candidates: Vec<Pod> = pods::pods_in(NAME, store, ns)?
        .into_iter()
        .filter(|p| !pods::is_terminating(p))
        .collect();
    let mine = pods::claim_pods(
        NAME,
        store,
        owner.clone(),
        deleting,
        &spec.selector,
        candidates,
    )?;
    let nodes: Vec<Node> = pods::list(NAME, store, Resource::Nodes, None)?;
    let template_spec = spec.template.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    // Pods per node (pods without a target node are misplaced).
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in mine {
        let target = p.spec.as_ref().and_then(placement::target_node);
        match target {
            Some(n) => by_node.entry(n).or_default().push(p),
            None if !deleting => pods::delete_pod(NAME, store, &p, now)?,
            None => {}
        }
    }
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: collision,
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let mut requeue = None;
    // Node name -> the daemon pod kept there.
    let mut kept: BTreeMap<String, Pod> = BTreeMap::new();
    for node in &nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let run = placement::should_run(&template_spec, node);
        let mut here = by_node.remove(&name).unwrap_or_default();
        if run {
            status.desired_number_scheduled += 1;
        }
        if deleting {
            continue;
        }
        if !run {
            if !here.is_empty() {
                status.number_misscheduled += 1;
            }
            for p in &here {
                pods::delete_pod(NAME, store, p, now)?;
            }
            continue;
        }
        let (failed, mut live): (Vec<Pod>, Vec<Pod>) =
            here.drain(..).partition(|p| pods::phase(p) == "Failed");
        for p in &failed {
            pods::delete_pod(NAME, store, p, now)?;
        }
        live.sort_by_key(|p| (pods::created(&p.metadata), p.metadata.name.clone()));
        let mut live = live.into_iter();
        match live.next() {
            Some(p) => {
                kept.insert(name.clone(), p);
            }
            None if failed.is_empty() => {
                let mut pod = pods::pod_from_template(
                    &spec.template,
                    owner.clone(),
                    ds.metadata.name.as_deref().unwrap_or(&key.name),
                );
                pod.metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(CONTROLLER_REVISION_HASH.into(), hash.clone());
                let pspec = pod.spec.get_or_insert_with(Default::default);
                placement::pin_to_node(pspec, &name);
                kept.insert(name.clone(), pods::create_pod(NAME, store, ns, pod, now)?);
            }
            // Replaced on the pass the deletion triggers.
            None => {}
        }
        for extra in live {
            pods::delete_pod(NAME, store, &extra, now)?;
        }
    }
    // Nodes that are gone.
    if !deleting {
        for p in by_node.into_values().flatten() {
            pods::delete_pod(NAME, store, &p, now)?;
        }
    }
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    if rolling && !deleting {
        let max_unavailable = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.clone())
            .unwrap_or(IntOrString::Int(1));
        let max = scaled_value(&max_unavailable, status.desired_number_scheduled, true)
            .map_err(|reason| ControllerError::Invalid {
                controller: NAME,
                key: key_label(key),
                reason,
            })?
            .max(1);
        let deleted = roll(
            store,
            &mut kept,
            &nodes,
            &template_spec,
            &hash,
            max,
            min_ready,
            now,
        )?;
        for n in deleted {
            kept.remove(&n);
        }
    }
    for p in kept.values() {
        status.current_number_scheduled += 1;
        if pods::is_ready(p) {
            status.number_ready += 1;
        }
        if pods::is_available(p, min_ready, now) {
            *status.number_available.get_or_insert(0) += 1;
        } else if let Some(at) = pods::available_at(p, min_ready, now) {
            let d = at.duration_since(now).as_millis();
            let d = Duration::from_millis(u64::try_from(d).unwrap_or(0).max(1));
            requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
        }
        if hash_of(p) == Some(hash.as_str()) {
            *status.updated_number_scheduled.get_or_insert(0) += 1;
        }
    }
    let available = status.number_available.unwrap_or(0);
    status.number_unavailable = Some((status.desired_number_scheduled - available).max(0));
    status.number_available = Some(available);
    status.updated_number_scheduled = Some(status.updated_number_scheduled.unwrap_or(0));
    pods::write_status(NAME, store, key, pods::encode(NAME, key, &status)?)?;
    Ok(requeue)
}

/// One rolling-update pass: deletes old-template pods (unavailable ones
/// always, available ones while fewer than `max` eligible nodes lack an
/// available pod). Returns the nodes whose pod was deleted.
#[allow(clippy::too_many_arguments)]
fn roll(
    store: &dyn Datastore,
    kept: &mut BTreeMap<String, Pod>,
    nodes: &[Node],
    template: &k8s_openapi::api::core::v1::PodSpec,
    hash: &str,
    max: i32,
    min_ready: i32,
    now: Timestamp,
) -> Result<Vec<String>, ControllerError> {
    let mut unavailable = 0;
    let mut old_available = Vec::new();
    let mut deleted = Vec::new();
    for node in nodes {
        if !placement::should_run(template, node) {
            continue;
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        let Some(p) = kept.get(&name) else {
            unavailable += 1;
            continue;
        };
        let available = pods::is_available(p, min_ready, now);
        let old = hash_of(p) != Some(hash);
        if !available {
            unavailable += 1;
            if old {
                pods::delete_pod(NAME, store, p, now)?;
                deleted.push(name);
            }
        } else if old {
            old_available.push(name);
        }
    }
    let budget = usize::try_from((max - unavailable).max(0)).unwrap_or(0);
    for name in old_available.into_iter().take(budget) {
        if let Some(p) = kept.get(&name) {
            pods::delete_pod(NAME, store, p, now)?;
            deleted.push(name);
        }
    }
    Ok(deleted)
}
