//! Namespace deletion, as kube-controller-manager's namespace controller
//! does it.
//!
//! A Namespace with a deletionTimestamp is Terminating: its `status.phase`
//! becomes `Terminating`, every namespaced object in it is deleted as the
//! API's delete would ([`delete_object`]: pods bound to a node get a
//! graceful deletion their kubelet finishes, objects with finalizers a
//! deletionTimestamp), and once nothing is left the `kubernetes` finalizer
//! is removed (from `spec.finalizers`, or `metadata.finalizers` if put
//! there) and the namespace is deleted when no finalizer remains.
//!
//! Progress is event-driven: the deletion of any object in a Terminating
//! namespace reconciles that namespace again; a long re-check interval
//! ([`RECHECK`]) only guards against a missed event. A namespace without a
//! deletionTimestamp is never touched.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::endpoints::store_err;
use super::gc::{Deletion, Propagation, delete_object, finalizers, is_terminating, uid};
use super::{Controller, ControllerError};
use crate::api::Resource;
use crate::store::{
    Datastore, EventType, Key, StoreError, WatchEvent, resource_version, update_with,
};

const NAME: &str = "namespace";
/// The finalizer the namespace controller owns.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";
/// Re-check of a namespace still waiting for objects to go.
pub const RECHECK: Duration = Duration::from_secs(10);

/// The namespace controller.
#[derive(Debug, Default)]
pub struct NamespaceController;

impl NamespaceController {
    pub fn new() -> NamespaceController {
        NamespaceController
    }
}

fn spec_finalizers(ns: &Value) -> Vec<&str> {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Deletes what is left in `ns`; returns how many objects remain.
fn delete_contents(store: &dyn Datastore, ns: &str, now: Timestamp) -> Result<usize, StoreError> {
    let mut remaining = 0;
    for resource in Resource::ALL.into_iter().filter(|r| r.namespaced()) {
        let (items, _) = store.list(resource, Some(ns))?;
        for item in items {
            let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            if is_terminating(&item) {
                remaining += 1;
                continue;
            }
            let key = Key::namespaced(resource, ns, name);
            match delete_object(store, &key, uid(&item), Propagation::Background, now)? {
                Deletion::Gone | Deletion::Missing => {}
                Deletion::Terminating => remaining += 1,
            }
        }
    }
    Ok(remaining)
}

impl Controller for NamespaceController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> &'static [Resource] {
        &Resource::ALL
    }

    fn keys_for(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key> {
        let k = &event.key;
        if k.resource == Resource::Namespaces {
            return vec![k.clone()];
        }
        let (EventType::Deleted, Some(ns)) = (event.kind, &k.namespace) else {
            return Vec::new();
        };
        let key = Key::cluster(Resource::Namespaces, ns);
        match store.get(&key) {
            Ok(n) if is_terminating(&n) => vec![key],
            _ => Vec::new(),
        }
    }

    fn all_keys(&self, store: &dyn Datastore) -> Result<Vec<Key>, ControllerError> {
        let all = Key::cluster(Resource::Namespaces, "*");
        let (items, _) = store
            .list(Resource::Namespaces, None)
            .map_err(|e| store_err(NAME, &all, e))?;
        Ok(items
            .iter()
            .filter(|n| is_terminating(n))
            .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str))
            .map(|n| Key::cluster(Resource::Namespaces, n))
            .collect())
    }

    fn reconcile(
        &self,
        store: &dyn Datastore,
        key: &Key,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        let err = |e| store_err(NAME, key, e);
        let ns = match store.get(key) {
            Ok(n) => n,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        if !is_terminating(&ns) {
            return Ok(None);
        }
        let Some(want) = uid(&ns).map(str::to_string) else {
            return Err(ControllerError::Invalid {
                controller: NAME,
                key: key.name.clone(),
                reason: "namespace has no uid".into(),
            });
        };
        if ns.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating") {
            update_with(store, key, |mut cur| {
                if uid(&cur) != Some(want.as_str()) {
                    return Ok(None);
                }
                cur["status"]["phase"] = json!("Terminating");
                Ok(Some(cur))
            })
            .map_err(err)?;
        }
        if delete_contents(store, &key.name, now).map_err(err)? > 0 {
            return Ok(Some(RECHECK));
        }
        let done = update_with(store, key, |mut cur| {
            if uid(&cur) != Some(want.as_str()) {
                return Ok(None);
            }
            let mut changed = false;
            for p in ["/spec/finalizers", "/metadata/finalizers"] {
                if let Some(list) = cur.pointer_mut(p).and_then(Value::as_array_mut) {
                    let before = list.len();
                    list.retain(|f| f.as_str() != Some(KUBERNETES_FINALIZER));
                    changed |= list.len() != before;
                }
            }
            Ok(changed.then_some(cur))
        });
        let done = match done {
            Ok(d) => d,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        if uid(&done) == Some(want.as_str())
            && spec_finalizers(&done).is_empty()
            && finalizers(&done).is_empty()
        {
            match store.delete(key, resource_version(&done)) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(None)
    }
}
