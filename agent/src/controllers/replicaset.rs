//! The ReplicaSet controller: keeps `spec.replicas` active pods matching
//! the selector, as kube-controller-manager's does.
//!
//! Behaviour:
//! - Pods are created from `spec.template`, named `<rs>-<5 random chars>`
//!   (generateName), with a controller ownerReference to the ReplicaSet
//!   (`blockOwnerDeletion`).
//! - Active pods (not Succeeded/Failed, not being deleted) matching the
//!   selector with no controller are adopted; owned pods that stopped
//!   matching are released. A failed pod is no longer active, so it is
//!   replaced.
//! - Surplus pods are deleted in the ReplicaSet controller's order
//!   ([`pods::deletion_order`]): unscheduled, pending, not ready, ready for
//!   the shortest time, most restarts, most recently created first.
//! - `status`: replicas, fullyLabeledReplicas, readyReplicas,
//!   availableReplicas (ready for `minReadySeconds`), observedGeneration;
//!   written only when it changes. A pod that will become available later
//!   re-queues the ReplicaSet for that moment.
//! - The store is read directly (no informer cache), so no expectations
//!   are needed: each reconcile sees every pod the previous one created.
//! - An empty selector (it would select every pod) is refused with
//!   [`ControllerError::Invalid`].

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;

use super::pods;
use super::runner::key_label;
use super::{Controller, ControllerError};
use crate::api::Resource;
use crate::store::{Datastore, EventType, Key, WatchEvent};

const NAME: &str = "replicaset";
/// Most pods created or deleted in one reconcile (kube's burstReplicas).
const BURST: usize = 500;

/// The ReplicaSet controller.
#[derive(Debug, Default)]
pub struct ReplicaSetController;

impl Controller for ReplicaSetController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> &'static [Resource] {
        &[Resource::ReplicaSets, Resource::Pods]
    }

    fn keys_for(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key> {
        match event.key.resource {
            Resource::ReplicaSets => vec![event.key.clone()],
            Resource::Pods => owners_of_pod(store, event, Resource::ReplicaSets),
            _ => Vec::new(),
        }
    }

    fn all_keys(&self, store: &dyn Datastore) -> Result<Vec<Key>, ControllerError> {
        pods::all_keys(NAME, store, Resource::ReplicaSets)
    }

    fn reconcile(
        &self,
        store: &dyn Datastore,
        key: &Key,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        let Some(rs) = pods::get_decoded::<ReplicaSet>(NAME, store, key)? else {
            return Ok(None);
        };
        sync(store, key, &rs, now)
    }
}

/// The controllers of kind `owner` a pod event concerns: its controller
/// (before and after the change), or, for an orphan, every object of that
/// kind in the namespace whose selector matches (it may adopt it).
pub fn owners_of_pod(store: &dyn Datastore, event: &WatchEvent, owner: Resource) -> Vec<Key> {
    let ns = event.key.namespace.clone().unwrap_or_default();
    if let Some(r) = pods::controller_of_value(&event.object) {
        if r.kind == owner.kind() {
            return vec![Key::namespaced(owner, &ns, &r.name)];
        }
        return Vec::new();
    }
    if event.kind == EventType::Deleted {
        return Vec::new();
    }
    let labels: Option<BTreeMap<String, String>> = event
        .object
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok());
    let Ok((items, _)) = store.list(owner, Some(&ns)) else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|o| {
            o.pointer("/spec/selector")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .is_some_and(|s| {
                    !pods::selector_is_empty(&s) && pods::selector_matches(&s, labels.as_ref())
                })
        })
        .filter_map(|o| pods::key_of(owner, o))
        .collect()
}

fn sync(
    store: &dyn Datastore,
    key: &Key,
    rs: &ReplicaSet,
    now: Timestamp,
) -> Result<Option<Duration>, ControllerError> {
    let spec = rs.spec.clone().unwrap_or_default();
    if pods::selector_is_empty(&spec.selector) {
        return Err(ControllerError::Invalid {
            controller: NAME,
            key: key_label(key),
            reason: "empty selector would select every pod".into(),
        });
    }
    let ns = key.namespace.as_deref().unwrap_or("default");
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let all: Vec<Pod> = pods::pods_in(NAME, store, ns)?
        .into_iter()
        .filter(pods::is_active)
        .collect();
    let owner = pods::owner_ref(Resource::ReplicaSets, &rs.metadata);
    let mut mine = pods::claim_pods(NAME, store, owner.clone(), deleting, &spec.selector, all)?;
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if !deleting {
        if mine.len() < want {
            let template = spec.template.clone().unwrap_or_default();
            let prefix = rs.metadata.name.as_deref().unwrap_or(&key.name);
            for _ in 0..(want - mine.len()).min(BURST) {
                let pod = pods::pod_from_template(&template, owner.clone(), prefix);
                mine.push(pods::create_pod(NAME, store, ns, pod, now)?);
            }
        } else if mine.len() > want {
            mine.sort_by(pods::deletion_order);
            let surplus = (mine.len() - want).min(BURST);
            for pod in mine.drain(..surplus) {
                pods::delete_pod(NAME, store, &pod, now)?;
            }
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let status = status_of(rs, &mine, min_ready, now);
    pods::write_status(NAME, store, key, pods::encode(NAME, key, &status)?)?;
    let next = mine
        .iter()
        .filter_map(|p| pods::available_at(p, min_ready, now))
        .min();
    Ok(next.map(|at| {
        let d = at.duration_since(now);
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(0).max(1))
    }))
}

/// The status of `rs` owning `mine` (its active pods).
pub fn status_of(
    rs: &ReplicaSet,
    mine: &[Pod],
    min_ready: i32,
    now: Timestamp,
) -> ReplicaSetStatus {
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| -> i32 {
        i32::try_from(mine.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p: &Pod| {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    });
    ReplicaSetStatus {
        replicas: count(&|_: &Pod| true),
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(count(&pods::is_ready)),
        available_replicas: Some(count(&|p: &Pod| pods::is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    }
}
