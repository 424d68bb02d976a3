//! Garbage collection by `metadata.ownerReferences`, as
//! kube-controller-manager's garbage collector does it, plus the deletion
//! helper every controller here uses ([`delete_object`]).
//!
//! Guarantees:
//! - Owners are matched by uid: an owner recreated under the same name does
//!   not keep the old owner's dependents alive.
//! - A dependent whose owners are all gone is deleted (background
//!   propagation). One with a live owner and some gone ones loses the
//!   references to the gone ones. An owner reference of a kind this API does
//!   not serve is treated as alive (never delete what cannot be checked).
//! - `foregroundDeletion`: an owner with a deletionTimestamp and this
//!   finalizer gets its dependents deleted; the finalizer is removed once no
//!   dependent with `blockOwnerDeletion: true` is left, then the owner is
//!   deleted when no finalizer remains.
//! - `orphan`: the owner's dependents lose their reference to it, then the
//!   finalizer is removed (and the owner deleted when none remains).
//! - Scale: an owner-uid → dependents index, built from one full list (at
//!   start and each resync, [`Controller::all_keys`]) and kept up to date from
//!   the watch events ([`Controller::keys_for`]); a change costs index
//!   look-ups and a few `get`s, never a scan of the store. The index is a
//!   hint: every decision is re-checked against the store.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::{Controller, ControllerError};
use crate::api::Resource;
use crate::store::{
    Datastore, EventType, Key, StoreError, WatchEvent, resource_version, update_with,
};

/// Finalizer of an owner deleted with `propagationPolicy: Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an owner deleted with `propagationPolicy: Orphan`.
pub const ORPHAN: &str = "orphan";
/// Grace of a pod without `terminationGracePeriodSeconds` (as the API).
pub const DEFAULT_POD_GRACE_SECONDS: i64 = 30;

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// What [`delete_object`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Removed from the store.
    Gone,
    /// Marked with a deletionTimestamp; a finalizer or the node's kubelet
    /// finishes it.
    Terminating,
    /// Not there (or another object with the same name: uid differs).
    Missing,
}

/// A timestamp as Kubernetes writes it (RFC 3339, seconds).
pub fn time_value(t: Timestamp) -> Value {
    serde_json::to_value(Time(t)).unwrap_or(Value::Null)
}

/// A timestamp field (`None` when missing or malformed).
pub fn time_at(object: &Value, pointer: &str) -> Option<Timestamp> {
    object.pointer(pointer)?.as_str()?.parse().ok()
}

pub fn uid(object: &Value) -> Option<&str> {
    object.pointer("/metadata/uid").and_then(Value::as_str)
}

pub fn finalizers(object: &Value) -> Vec<&str> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub fn is_terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
}

fn bound_pod(key: &Key, object: &Value) -> bool {
    key.resource == Resource::Pods
        && object
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
}

/// The key an owner reference of a dependent at `dependent` names, when the
/// kind is served here and the scopes fit.
pub fn owner_key(dependent: &Key, owner_ref: &Value) -> Option<Key> {
    let api_version = owner_ref.get("apiVersion")?.as_str()?;
    let kind = owner_ref.get("kind")?.as_str()?;
    let name = owner_ref.get("name")?.as_str()?;
    let resource = Resource::from_kind(api_version, kind)?;
    if resource.namespaced() {
        Some(Key::namespaced(
            resource,
            dependent.namespace.as_deref()?,
            name,
        ))
    } else {
        Some(Key::cluster(resource, name))
    }
}

fn owner_refs(object: &Value) -> &[Value] {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Deletes `key` as the API server's delete would for a controller
/// (`uid`: only that incarnation):
/// - `Foreground`/`Orphan`: adds the finalizer and a deletionTimestamp;
/// - an object with finalizers: a deletionTimestamp only;
/// - a pod bound to a node: graceful (deletionTimestamp and
///   deletionGracePeriodSeconds from the pod); the kubelet removes it;
/// - anything else: removed at once.
pub fn delete_object(
    store: &dyn Datastore,
    key: &Key,
    uid_want: Option<&str>,
    policy: Propagation,
    now: Timestamp,
) -> Result<Deletion, StoreError> {
    let current = match store.get(key) {
        Ok(c) => c,
        Err(StoreError::NotFound { .. }) => return Ok(Deletion::Missing),
        Err(e) => return Err(e),
    };
    if uid_want.is_some_and(|u| uid(&current) != Some(u)) {
        return Ok(Deletion::Missing);
    }
    let extra = match policy {
        Propagation::Background => None,
        Propagation::Foreground => Some(FOREGROUND),
        Propagation::Orphan => Some(ORPHAN),
    };
    let has_finalizers = !finalizers(&current).is_empty();
    if extra.is_none() && !has_finalizers && !bound_pod(key, &current) {
        return match store.delete(key, resource_version(&current)) {
            Ok(_) => Ok(Deletion::Gone),
            Err(StoreError::NotFound { .. }) => Ok(Deletion::Missing),
            Err(e) => Err(e),
        };
    }
    let mut next = current.clone();
    let mut changed = false;
    if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
        if !meta.contains_key("deletionTimestamp") {
            let grace = if bound_pod(key, &current) {
                current
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(DEFAULT_POD_GRACE_SECONDS)
            } else {
                0
            };
            let at = now
                .checked_add(jiff::SignedDuration::from_secs(grace))
                .unwrap_or(now);
            meta.insert("deletionTimestamp".into(), time_value(at));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            changed = true;
        }
        if let Some(f) = extra {
            let list = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut()
                && !list.iter().any(|x| x.as_str() == Some(f))
            {
                list.push(json!(f));
                changed = true;
            }
        }
    }
    if changed {
        store.update(key, next, resource_version(&current))?;
    }
    Ok(Deletion::Terminating)
}

/// Removes `finalizer` from the object (uid `want`); when the object is
/// terminating and no finalizer remains, deletes it (except a bound pod
/// still in its grace period: its kubelet does that).
pub fn remove_finalizer(
    store: &dyn Datastore,
    key: &Key,
    want: &str,
    finalizer: &str,
) -> Result<(), StoreError> {
    let updated = update_with(store, key, |mut cur| {
        if uid(&cur) != Some(want) || !finalizers(&cur).contains(&finalizer) {
            return Ok(None);
        }
        if let Some(list) = cur
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            list.retain(|x| x.as_str() != Some(finalizer));
        }
        Ok(Some(cur))
    });
    let updated = match updated {
        Ok(u) => u,
        Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let graceful = bound_pod(key, &updated)
        && updated
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| g > 0);
    if uid(&updated) == Some(want)
        && is_terminating(&updated)
        && finalizers(&updated).is_empty()
        && !graceful
    {
        match store.delete(key, resource_version(&updated)) {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Index {
    /// Revision of the full list the index was built from (0: never).
    built_at: u64,
    /// Per object with owner references: its revision and owner uids.
    entries: HashMap<Key, (u64, Vec<String>)>,
    dependents: HashMap<String, BTreeSet<Key>>,
}

impl Index {
    fn remove(&mut self, key: &Key) {
        if let Some((_, owners)) = self.entries.remove(key) {
            for o in owners {
                if let Some(set) = self.dependents.get_mut(&o) {
                    set.remove(key);
                    if set.is_empty() {
                        self.dependents.remove(&o);
                    }
                }
            }
        }
    }

    fn upsert(&mut self, key: &Key, object: &Value, rv: u64) {
        if self.entries.get(key).is_some_and(|(old, _)| *old > rv) {
            return;
        }
        self.remove(key);
        let owners: Vec<String> = owner_refs(object)
            .iter()
            .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
            .collect();
        if owners.is_empty() {
            return;
        }
        for o in &owners {
            self.dependents
                .entry(o.clone())
                .or_default()
                .insert(key.clone());
        }
        self.entries.insert(key.clone(), (rv, owners));
    }
}

/// The garbage collector (one per leader).
#[derive(Debug, Default)]
pub struct GarbageCollector {
    index: Mutex<Index>,
}

const NAME: &str = "garbagecollector";

fn store_err(key: &Key, source: StoreError) -> ControllerError {
    ControllerError::Store {
        controller: NAME,
        key: format!("{}/{}", key.resource, key.name),
        source,
    }
}

/// Owner states, as the garbage collector classifies them.
#[derive(Debug, Default)]
struct Owners {
    solid: usize,
    dangling: Vec<String>,
    waiting: Vec<String>,
}

impl GarbageCollector {
    pub fn new() -> GarbageCollector {
        GarbageCollector::default()
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // The index is only a hint; a poisoned one is still usable.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the index from a full list (holding the index lock, so no
    /// event is applied to an index about to be replaced); returns the keys
    /// of every object with owner references or a GC finalizer while
    /// terminating.
    fn rebuild(
        &self,
        store: &dyn Datastore,
        only_if_unbuilt: bool,
    ) -> Result<Vec<Key>, StoreError> {
        let mut guard = self.lock();
        if only_if_unbuilt && guard.built_at != 0 {
            return Ok(Vec::new());
        }
        let mut index = Index::default();
        let mut keys = Vec::new();
        for resource in Resource::ALL {
            let (items, rv) = store.list(resource, None)?;
            if index.built_at == 0 {
                index.built_at = rv.max(1);
            }
            for item in items {
                let Some(key) = key_of(resource, &item) else {
                    continue;
                };
                let fin = finalizers(&item);
                let gc_fin = fin.contains(&FOREGROUND) || fin.contains(&ORPHAN);
                if !owner_refs(&item).is_empty() || (is_terminating(&item) && gc_fin) {
                    keys.push(key.clone());
                }
                index.upsert(&key, &item, resource_version(&item).unwrap_or(0));
            }
        }
        *guard = index;
        Ok(keys)
    }

    fn ensure_index(&self, store: &dyn Datastore) -> Result<(), StoreError> {
        self.rebuild(store, true).map(|_| ())
    }

    fn dependents_of(&self, owner_uid: &str) -> Vec<Key> {
        self.lock()
            .dependents
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn classify(
        &self,
        store: &dyn Datastore,
        key: &Key,
        object: &Value,
    ) -> Result<Owners, StoreError> {
        let mut out = Owners::default();
        for r in owner_refs(object) {
            let Some(ref_uid) = r.get("uid").and_then(Value::as_str) else {
                out.solid += 1;
                continue;
            };
            let Some(okey) = owner_key(key, r) else {
                out.solid += 1;
                continue;
            };
            match store.get(&okey) {
                Ok(owner) if uid(&owner) == Some(ref_uid) => {
                    if is_terminating(&owner) && finalizers(&owner).contains(&FOREGROUND) {
                        out.waiting.push(ref_uid.to_string());
                    } else {
                        out.solid += 1;
                    }
                }
                Ok(_) | Err(StoreError::NotFound { .. }) => out.dangling.push(ref_uid.to_string()),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The dependent side: delete it when no owner is left, or drop the
    /// references to gone owners when some are alive.
    fn attempt_to_delete(
        &self,
        store: &dyn Datastore,
        key: &Key,
        object: &Value,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if owner_refs(object).is_empty() {
            return Ok(());
        }
        if is_terminating(object) && !finalizers(object).contains(&FOREGROUND) {
            return Ok(());
        }
        let Some(me) = uid(object).map(str::to_string) else {
            return Ok(());
        };
        let owners = self.classify(store, key, object)?;
        if owners.solid > 0 {
            if owners.dangling.is_empty() && owners.waiting.is_empty() {
                return Ok(());
            }
            let drop: Vec<String> = owners.dangling.into_iter().chain(owners.waiting).collect();
            return strip_owner_refs(store, key, &me, &drop);
        }
        let fin = finalizers(object);
        let policy = if !owners.waiting.is_empty() && !self.dependents_of(&me).is_empty() {
            Propagation::Foreground
        } else if fin.contains(&ORPHAN) {
            Propagation::Orphan
        } else if fin.contains(&FOREGROUND) {
            Propagation::Foreground
        } else {
            Propagation::Background
        };
        delete_object(store, key, Some(&me), policy, now)?;
        Ok(())
    }

    /// The owner side of `orphan`.
    fn orphan_dependents(
        &self,
        store: &dyn Datastore,
        key: &Key,
        me: &str,
    ) -> Result<(), StoreError> {
        for dep in self.dependents_of(me) {
            let Ok(obj) = store.get(&dep) else { continue };
            if let Some(dep_uid) = uid(&obj) {
                strip_owner_refs(store, &dep, dep_uid, &[me.to_string()])?;
            }
        }
        remove_finalizer(store, key, me, ORPHAN)
    }

    /// The owner side of `foregroundDeletion`.
    fn delete_dependents(
        &self,
        store: &dyn Datastore,
        key: &Key,
        me: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut blocking = 0;
        for dep in self.dependents_of(me) {
            let obj = match store.get(&dep) {
                Ok(o) => o,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let Some(r) = owner_refs(&obj)
                .iter()
                .find(|r| r.get("uid").and_then(Value::as_str) == Some(me))
            else {
                continue;
            };
            let blocks = r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true);
            if !is_terminating(&obj) || finalizers(&obj).contains(&FOREGROUND) {
                self.attempt_to_delete(store, &dep, &obj, now)?;
            }
            if blocks {
                match store.get(&dep) {
                    Ok(o)
                        if owner_refs(&o)
                            .iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(me)) =>
                    {
                        blocking += 1
                    }
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if blocking == 0 {
            remove_finalizer(store, key, me, FOREGROUND)?;
        }
        Ok(())
    }
}

fn key_of(resource: Resource, object: &Value) -> Option<Key> {
    let name = object.pointer("/metadata/name")?.as_str()?;
    if resource.namespaced() {
        let ns = object.pointer("/metadata/namespace")?.as_str()?;
        Some(Key::namespaced(resource, ns, name))
    } else {
        Some(Key::cluster(resource, name))
    }
}

/// Removes the owner references with these uids from the dependent (uid
/// `want`).
fn strip_owner_refs(
    store: &dyn Datastore,
    key: &Key,
    want: &str,
    owners: &[String],
) -> Result<(), StoreError> {
    let r = update_with(store, key, |mut cur| {
        if uid(&cur) != Some(want) {
            return Ok(None);
        }
        let Some(refs) = cur
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        else {
            return Ok(None);
        };
        let before = refs.len();
        refs.retain(|r| {
            !r.get("uid")
                .and_then(Value::as_str)
                .is_some_and(|u| owners.iter().any(|o| o == u))
        });
        if refs.len() == before {
            return Ok(None);
        }
        if refs.is_empty()
            && let Some(meta) = cur.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("ownerReferences");
        }
        Ok(Some(cur))
    });
    match r {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Controller for GarbageCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> &'static [Resource] {
        &Resource::ALL
    }

    fn keys_for(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key> {
        if let Err(e) = self.ensure_index(store) {
            tracing::warn!("garbage collector index: {e}");
        }
        let obj = &event.object;
        let mut keys = Vec::new();
        {
            let mut index = self.lock();
            if event.resource_version > index.built_at {
                match event.kind {
                    EventType::Deleted => index.remove(&event.key),
                    _ => index.upsert(&event.key, obj, event.resource_version),
                }
            }
        }
        match event.kind {
            EventType::Deleted => {
                if let Some(u) = uid(obj) {
                    keys.extend(self.dependents_of(u));
                }
                // An owner in foreground deletion may be waiting for this.
                keys.extend(
                    owner_refs(obj)
                        .iter()
                        .filter_map(|r| owner_key(&event.key, r)),
                );
            }
            EventType::Added | EventType::Modified => {
                let fin = finalizers(obj);
                let gc_fin = fin.contains(&FOREGROUND) || fin.contains(&ORPHAN);
                if !owner_refs(obj).is_empty() || (is_terminating(obj) && gc_fin) {
                    keys.push(event.key.clone());
                }
            }
        }
        keys
    }

    fn all_keys(&self, store: &dyn Datastore) -> Result<Vec<Key>, ControllerError> {
        self.rebuild(store, false)
            .map_err(|e| ControllerError::Store {
                controller: NAME,
                key: "*".into(),
                source: e,
            })
    }

    fn reconcile(
        &self,
        store: &dyn Datastore,
        key: &Key,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        self.ensure_index(store).map_err(|e| store_err(key, e))?;
        let object = match store.get(key) {
            Ok(o) => o,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_err(key, e)),
        };
        let Some(me) = uid(&object).map(str::to_string) else {
            return Ok(None);
        };
        if is_terminating(&object) {
            let fin = finalizers(&object);
            if fin.contains(&ORPHAN) {
                self.orphan_dependents(store, key, &me)
                    .map_err(|e| store_err(key, e))?;
                return Ok(None);
            }
            if fin.contains(&FOREGROUND) {
                // Its own owners first: a dependent in foreground deletion
                // whose owners are gone stays in foreground deletion.
                self.delete_dependents(store, key, &me, now)
                    .map_err(|e| store_err(key, e))?;
                return Ok(None);
            }
            return Ok(None);
        }
        self.attempt_to_delete(store, key, &object, now)
            .map_err(|e| store_err(key, e))?;
        Ok(None)
    }
}
