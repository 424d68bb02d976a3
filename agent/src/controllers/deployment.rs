//! The Deployment controller: one ReplicaSet per pod template revision,
//! rolled over with RollingUpdate or Recreate, as kube-controller-manager.
//!
//! Behaviour:
//! - The ReplicaSet of the current template is `<deployment>-<hash>`
//!   (`pod-template-hash` label on it, its selector and its pods); a hash
//!   clash with a foreign ReplicaSet bumps `status.collisionCount`.
//! - An existing ReplicaSet whose template equals the deployment's
//!   (ignoring the hash label) is reused: rolling back (`kubectl rollout
//!   undo` copies an old template back) scales the old ReplicaSet up again
//!   and gives it the next `deployment.kubernetes.io/revision`; the
//!   deployment carries the revision of its current ReplicaSet.
//! - RollingUpdate never runs more than `replicas + maxSurge` pods (surge
//!   rounds up) and never lets available pods drop below
//!   `replicas - maxUnavailable` (rounds down) through its own scaling; the
//!   available count of a ReplicaSet is taken from its pods, capped by its
//!   `spec.replicas`, so stale ReplicaSet status cannot over-delete.
//! - Recreate scales every old ReplicaSet to zero, waits until none of
//!   their pods remains, then scales the new one up.
//! - A changed `replicas` mid-rollout is spread proportionally over the
//!   active ReplicaSets; `spec.paused` stops rollouts (scaling still
//!   applies); old ReplicaSets beyond `revisionHistoryLimit` (default 10)
//!   that are scaled to zero are deleted once the rollout is complete.
//! - Status: replicas, updatedReplicas, readyReplicas, availableReplicas,
//!   unavailableReplicas, observedGeneration, conditions Available and
//!   Progressing (ProgressDeadlineExceeded after
//!   `progressDeadlineSeconds`, default 600).

mod claim;
pub mod rollout;
mod status;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{Value, json};

use self::rollout::{RsView, Strategy};
use super::pods::{self, REVISION, store_err};
use super::replicaset::owners_of_pod;
use super::runner::key_label;
use super::{Controller, ControllerError};
use crate::api::Resource;
use crate::store::{Datastore, Key, StoreError, WatchEvent, update_with};

const NAME: &str = "deployment";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// The Deployment controller.
#[derive(Debug, Default)]
pub struct DeploymentController;

impl Controller for DeploymentController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> &'static [Resource] {
        &[Resource::Deployments, Resource::ReplicaSets, Resource::Pods]
    }

    fn keys_for(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key> {
        match event.key.resource {
            Resource::Deployments => vec![event.key.clone()],
            Resource::ReplicaSets => owners_of_pod(store, event, Resource::Deployments),
            Resource::Pods => {
                let Some(r) = pods::controller_of_value(&event.object) else {
                    return Vec::new();
                };
                let ns = event.key.namespace.clone().unwrap_or_default();
                if r.kind != "ReplicaSet" {
                    return Vec::new();
                }
                let rs = Key::namespaced(Resource::ReplicaSets, &ns, &r.name);
                store
                    .get(&rs)
                    .ok()
                    .and_then(|v| pods::controller_of_value(&v))
                    .filter(|d| d.kind == "Deployment")
                    .map(|d| vec![Key::namespaced(Resource::Deployments, &ns, &d.name)])
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    fn all_keys(&self, store: &dyn Datastore) -> Result<Vec<Key>, ControllerError> {
        pods::all_keys(NAME, store, Resource::Deployments)
    }

    fn reconcile(
        &self,
        store: &dyn Datastore,
        key: &Key,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        let Some(d) = pods::get_decoded::<Deployment>(NAME, store, key)? else {
            return Ok(None);
        };
        Pass::load(store, key, d, now)?.run()
    }
}

fn invalid(key: &Key, reason: impl Into<String>) -> ControllerError {
    ControllerError::Invalid {
        controller: NAME,
        key: key_label(key),
        reason: reason.into(),
    }
}

/// A ReplicaSet with what the controller knows of its pods.
#[derive(Debug, Clone)]
struct Owned {
    rs: ReplicaSet,
    /// Available pods (active, ready for minReadySeconds).
    available: i32,
    /// Pods not yet finished (including terminating ones).
    live: i32,
}

impl Owned {
    fn replicas(&self) -> i32 {
        self.rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
    }
    fn view(&self) -> RsView {
        RsView {
            replicas: self.replicas(),
            available: self.available.min(self.replicas()),
        }
    }
    fn name(&self) -> &str {
        self.rs.metadata.name.as_deref().unwrap_or("")
    }
}

fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The template without the hash label (what a deployment's template is
/// compared with).
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        l.remove(pods::POD_TEMPLATE_HASH);
    }
    t
}

struct Pass<'a> {
    store: &'a dyn Datastore,
    key: &'a Key,
    d: Deployment,
    spec: DeploymentSpec,
    strategy: Strategy,
    desired: i32,
    /// Claimed ReplicaSets, oldest first.
    owned: Vec<Owned>,
    now: Timestamp,
    /// Something was scaled or created in this pass (progress).
    progressed: bool,
}

impl<'a> Pass<'a> {
    fn load(
        store: &'a dyn Datastore,
        key: &'a Key,
        d: Deployment,
        now: Timestamp,
    ) -> Result<Pass<'a>, ControllerError> {
        let spec = d.spec.clone().ok_or_else(|| invalid(key, "no spec"))?;
        if pods::selector_is_empty(&spec.selector) {
            return Err(invalid(key, "empty selector would select every pod"));
        }
        let desired = spec.replicas.unwrap_or(1).max(0);
        let strategy = match spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) {
            Some("Recreate") => Strategy::Recreate,
            None | Some("RollingUpdate") => {
                let ru = spec
                    .strategy
                    .as_ref()
                    .and_then(|s| s.rolling_update.as_ref());
                let (max_surge, max_unavailable) = rollout::resolve_fenceposts(
                    ru.and_then(|r| r.max_surge.as_ref()),
                    ru.and_then(|r| r.max_unavailable.as_ref()),
                    desired,
                )
                .map_err(|e| invalid(key, e))?;
                Strategy::RollingUpdate {
                    max_surge,
                    max_unavailable,
                }
            }
            Some(other) => return Err(invalid(key, format!("unknown strategy type {other:?}"))),
        };
        let ns = key.namespace.as_deref().unwrap_or("default");
        let owned = claim::claim_replica_sets(store, &d, &spec, ns, now)?;
        Ok(Pass {
            store,
            key,
            d,
            spec,
            strategy,
            desired,
            owned,
            now,
            progressed: false,
        })
    }

    fn ns(&self) -> &str {
        self.key.namespace.as_deref().unwrap_or("default")
    }

    fn run(mut self) -> Result<Option<Duration>, ControllerError> {
        if self.d.metadata.deletion_timestamp.is_some() {
            return self.finish(None);
        }
        let paused = self.spec.paused == Some(true);
        let new_idx = self.find_new();
        if paused || self.is_scaling_event(new_idx) {
            if let Some(i) = new_idx {
                self.sync_revision(i)?;
            }
            self.scale_proportionally(new_idx)?;
            if paused {
                self.cleanup(new_idx)?;
            }
            return self.finish(new_idx);
        }
        let new_idx = match self.strategy {
            Strategy::RollingUpdate { .. } => self.rolling(new_idx)?,
            Strategy::Recreate => self.recreate(new_idx)?,
        };
        if let Some(i) = new_idx
            && !self.progressed
            && self.complete(i)
        {
            self.cleanup(Some(i))?;
        }
        self.finish(new_idx)
    }

    fn find_new(&self) -> Option<usize> {
        self.owned.iter().position(|o| {
            o.rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| without_hash(t) == self.spec.template)
        })
    }

    fn olds(&self, new_idx: Option<usize>) -> Vec<usize> {
        (0..self.owned.len())
            .filter(|i| Some(*i) != new_idx)
            .collect()
    }

    /// A ReplicaSet with replicas whose desired-replicas annotation differs
    /// from `spec.replicas`: the user scaled.
    fn is_scaling_event(&self, new_idx: Option<usize>) -> bool {
        let desired = self.desired.to_string();
        let active: Vec<&Owned> = self.owned.iter().filter(|o| o.replicas() > 0).collect();
        if active.is_empty() || new_idx.is_none() {
            return false;
        }
        active.iter().any(|o| {
            o.rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DESIRED_REPLICAS))
                .is_some_and(|v| *v != desired)
        })
    }

    fn scale_proportionally(&mut self, new_idx: Option<usize>) -> Result<(), ControllerError> {
        let views: Vec<RsView> = self.owned.iter().map(Owned::view).collect();
        let saturated = new_idx.is_some_and(|i| {
            self.owned[i].replicas() == self.desired && self.owned[i].available >= self.desired
        });
        let target: Vec<i32> = if saturated {
            (0..views.len())
                .map(|i| if Some(i) == new_idx { self.desired } else { 0 })
                .collect()
        } else {
            rollout::proportional(self.desired, self.strategy.max_surge(), &views)
        };
        for (i, r) in target.into_iter().enumerate() {
            self.scale(i, r)?;
        }
        Ok(())
    }

    fn rolling(&mut self, new_idx: Option<usize>) -> Result<Option<usize>, ControllerError> {
        let olds = self.olds(new_idx);
        let old_views: Vec<RsView> = olds.iter().map(|i| self.owned[*i].view()).collect();
        let new_view = new_idx.map_or(
            RsView {
                replicas: 0,
                available: 0,
            },
            |i| self.owned[i].view(),
        );
        let (new_replicas, old_replicas) =
            rollout::rolling_step(self.desired, self.strategy, &new_view, &old_views);
        let new_idx = match new_idx {
            Some(i) => {
                self.sync_revision(i)?;
                self.scale(i, new_replicas)?;
                i
            }
            None => self.create_new(new_replicas)?,
        };
        for (i, r) in olds.into_iter().zip(old_replicas) {
            self.scale(i, r)?;
        }
        Ok(Some(new_idx))
    }

    fn recreate(&mut self, new_idx: Option<usize>) -> Result<Option<usize>, ControllerError> {
        let olds = self.olds(new_idx);
        let mut waiting = false;
        for i in &olds {
            if self.owned[*i].replicas() > 0 {
                self.scale(*i, 0)?;
                waiting = true;
            }
            waiting |= self.owned[*i].live > 0;
        }
        if waiting {
            if let Some(i) = new_idx {
                self.sync_revision(i)?;
            }
            return Ok(new_idx);
        }
        match new_idx {
            Some(i) => {
                self.sync_revision(i)?;
                self.scale(i, self.desired)?;
                Ok(Some(i))
            }
            None => Ok(Some(self.create_new(self.desired)?)),
        }
    }

    fn complete(&self, new_idx: usize) -> bool {
        let new = &self.owned[new_idx];
        new.replicas() == self.desired
            && new.available >= self.desired
            && self
                .olds(Some(new_idx))
                .iter()
                .all(|i| self.owned[*i].replicas() == 0 && self.owned[*i].live == 0)
    }

    /// Sets `spec.replicas` (and the desired/max annotations) of an owned
    /// ReplicaSet when they differ.
    fn scale(&mut self, i: usize, replicas: i32) -> Result<(), ControllerError> {
        let desired = self.desired.to_string();
        let max = self
            .desired
            .saturating_add(self.strategy.max_surge())
            .to_string();
        let o = &self.owned[i];
        let ann = o.rs.metadata.annotations.clone().unwrap_or_default();
        if o.replicas() == replicas
            && (replicas == 0
                || (ann.get(DESIRED_REPLICAS) == Some(&desired)
                    && ann.get(MAX_REPLICAS) == Some(&max)))
        {
            return Ok(());
        }
        if o.replicas() != replicas {
            self.progressed = true;
        }
        let key = Key::namespaced(Resource::ReplicaSets, self.ns(), o.name());
        let v = update_with(self.store, &key, |mut cur| {
            let generation = cur
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let changed =
                cur.pointer("/spec/replicas").and_then(Value::as_i64) != Some(i64::from(replicas));
            if let Some(s) = cur.pointer_mut("/spec").and_then(Value::as_object_mut) {
                s.insert("replicas".into(), json!(replicas));
            }
            if let Some(m) = cur.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                if changed {
                    m.insert("generation".into(), json!(generation + 1));
                }
                let a = m.entry("annotations").or_insert_with(|| json!({}));
                if let Some(a) = a.as_object_mut() {
                    a.insert(DESIRED_REPLICAS.into(), json!(desired));
                    a.insert(MAX_REPLICAS.into(), json!(max));
                }
            }
            Ok(Some(cur))
        })
        .map_err(|e| store_err(NAME, &key, e))?;
        self.owned[i].rs = pods::decode(NAME, &key, v)?;
        Ok(())
    }

    fn max_old_revision(&self, new_idx: usize) -> i64 {
        self.olds(Some(new_idx))
            .iter()
            .map(|i| revision(&self.owned[*i].rs.metadata))
            .max()
            .unwrap_or(0)
    }

    /// Gives the current ReplicaSet the newest revision (after a rollback)
    /// and copies it onto the deployment.
    fn sync_revision(&mut self, i: usize) -> Result<(), ControllerError> {
        let next = self.max_old_revision(i) + 1;
        let current = revision(&self.owned[i].rs.metadata);
        if current < next {
            let key = Key::namespaced(Resource::ReplicaSets, self.ns(), self.owned[i].name());
            let v = set_annotation(self.store, &key, REVISION, &next.to_string())?;
            self.owned[i].rs = pods::decode(NAME, &key, v)?;
            self.progressed = true;
        }
        let rev = revision(&self.owned[i].rs.metadata).to_string();
        let have = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION));
        if have != Some(&rev) {
            let v = set_annotation(self.store, self.key, REVISION, &rev)?;
            self.d = pods::decode(NAME, self.key, v)?;
        }
        Ok(())
    }

    fn create_new(&mut self, replicas: i32) -> Result<usize, ControllerError> {
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = pods::template_hash(&self.spec.template, collision);
        let name = format!("{}-{hash}", self.key.name);
        let mut template = self.spec.template.clone();
        let tmeta = template.metadata.get_or_insert_with(Default::default);
        tmeta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(pods::POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = tmeta.labels.clone();
        let mut selector = self.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(pods::POD_TEMPLATE_HASH.into(), hash);
        let next_rev = self
            .owned
            .iter()
            .map(|o| revision(&o.rs.metadata))
            .max()
            .unwrap_or(0)
            + 1;
        let mut annotations: BTreeMap<String, String> = self
            .d
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| {
                k != "kubectl.kubernetes.io/last-applied-configuration"
                    && !k.starts_with("deployment.kubernetes.io/")
            })
            .collect();
        annotations.insert(REVISION.into(), next_rev.to_string());
        annotations.insert(DESIRED_REPLICAS.into(), self.desired.to_string());
        annotations.insert(
            MAX_REPLICAS.into(),
            self.desired
                .saturating_add(self.strategy.max_surge())
                .to_string(),
        );
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns().to_string()),
                labels,
                annotations: Some(annotations),
                owner_references: Some(vec![pods::owner_ref(
                    Resource::Deployments,
                    &self.d.metadata,
                )]),
                uid: Some(crate::api::defaults::new_uid()),
                creation_timestamp: Some(Time(self.now)),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: self.spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let key = Key::namespaced(Resource::ReplicaSets, self.ns(), &name);
        let value = pods::encode(NAME, &key, &rs)?;
        match self.store.create(&key, value) {
            Ok(v) => {
                self.owned.push(Owned {
                    rs: pods::decode(NAME, &key, v)?,
                    available: 0,
                    live: 0,
                });
                self.progressed = true;
                let i = self.owned.len() - 1;
                self.sync_revision(i)?;
                Ok(i)
            }
            Err(StoreError::AlreadyExists { .. }) => {
                // Not ours or another template: a hash collision.
                let count = collision.unwrap_or(0).saturating_add(1);
                let mut st = self.d.status.clone().unwrap_or_default();
                st.collision_count = Some(count);
                pods::write_status(
                    NAME,
                    self.store,
                    self.key,
                    pods::encode(NAME, self.key, &st)?,
                )?;
                Err(invalid(
                    self.key,
                    format!("replica set {name} exists: hash collision"),
                ))
            }
            Err(e) => Err(store_err(NAME, &key, e)),
        }
    }

    /// Deletes old ReplicaSets scaled to zero beyond revisionHistoryLimit.
    fn cleanup(&mut self, new_idx: Option<usize>) -> Result<(), ControllerError> {
        let limit =
            usize::try_from(self.spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
        let mut idle: Vec<usize> = self
            .olds(new_idx)
            .into_iter()
            .filter(|i| {
                let o = &self.owned[*i];
                o.replicas() == 0
                    && o.live == 0
                    && o.rs.status.as_ref().is_none_or(|s| s.replicas == 0)
                    && o.rs.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if idle.len() <= limit {
            return Ok(());
        }
        idle.sort_by_key(|i| revision(&self.owned[*i].rs.metadata));
        let doomed: Vec<usize> = idle[..idle.len() - limit].to_vec();
        for i in &doomed {
            let key = Key::namespaced(Resource::ReplicaSets, self.ns(), self.owned[*i].name());
            let rv = crate::store::resource_version(&pods::encode(NAME, &key, &self.owned[*i].rs)?);
            match self.store.delete(&key, rv) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(store_err(NAME, &key, e)),
            }
        }
        Ok(())
    }

    fn finish(self, new_idx: Option<usize>) -> Result<Option<Duration>, ControllerError> {
        let views: Vec<&ReplicaSet> = self.owned.iter().map(|o| &o.rs).collect();
        let new = new_idx.map(|i| &self.owned[i].rs);
        let (st, requeue) = status::compute(
            &self.d,
            &self.spec,
            self.strategy,
            &views,
            new,
            self.progressed,
            self.now,
        );
        pods::write_status(
            NAME,
            self.store,
            self.key,
            pods::encode(NAME, self.key, &st)?,
        )?;
        Ok(requeue)
    }
}

fn set_annotation(
    store: &dyn Datastore,
    key: &Key,
    name: &str,
    value: &str,
) -> Result<Value, ControllerError> {
    update_with(store, key, |mut cur| {
        if let Some(m) = cur.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            let a = m.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = a.as_object_mut() {
                a.insert(name.into(), json!(value));
            }
        }
        Ok(Some(cur))
    })
    .map_err(|e| store_err(NAME, key, e))
}
