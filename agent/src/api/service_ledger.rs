//! Cluster-wide reservations of Service IPs and node ports.
//!
//! Every API server (one per node) allocates from the same ranges, and a
//! scan of the Services in its replica cannot see a Service another node is
//! creating at the same moment. So an allocation is first reserved in one
//! ledger object, `kube-system/herd-service-allocations` (a ConfigMap, as
//! Kubernetes keeps its RangeAllocation in etcd), with a compare-and-swap on
//! its resourceVersion: of two API servers picking the same IP, one CAS
//! fails, and that one picks again with the other's reservation in view.
//! Only then is the Service written.
//!
//! A reservation names its owner (`namespace/name`) and its time. It is
//! dropped at the next reservation once no Service holds that IP or port
//! and it is older than [`KEEP_UNHELD`] (a deleted Service, or a create
//! that failed after reserving), so nothing leaks and an in-flight create
//! on another node is never robbed of its reservation.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Resource;
use crate::store::{Datastore, Key, StoreError, resource_version};

pub const LEDGER_NAMESPACE: &str = "kube-system";
pub const LEDGER_NAME: &str = "herd-service-allocations";
const DATA_KEY: &str = "allocations";
/// An unheld reservation is kept this long (seconds) for its create to land.
pub const KEEP_UNHELD: i64 = 60;

/// One reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub owner: String,
    /// Unix seconds.
    pub at: i64,
}

/// The ledger as read, with the version a write must match.
#[derive(Debug, Default)]
pub struct Ledger {
    /// `ip/<addr>` or `port/<n>` -> reservation.
    pub entries: BTreeMap<String, Entry>,
    version: Option<u64>,
    exists: bool,
}

pub fn ip_key(ip: &str) -> String {
    format!("ip/{ip}")
}

pub fn port_key(port: i32) -> String {
    format!("port/{port}")
}

fn key() -> Key {
    Key::namespaced(Resource::ConfigMaps, LEDGER_NAMESPACE, LEDGER_NAME)
}

impl Ledger {
    /// Reads the ledger (empty when missing; an unreadable one is treated as
    /// empty and replaced at the next write, with a log line).
    pub fn load(store: &dyn Datastore) -> Result<Ledger, StoreError> {
        match store.get(&key()) {
            Ok(obj) => {
                let entries = obj
                    .pointer(&format!("/data/{DATA_KEY}"))
                    .and_then(Value::as_str)
                    .map(serde_json::from_str::<BTreeMap<String, Entry>>)
                    .transpose()
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "service allocation ledger unreadable; rebuilding it");
                        None
                    })
                    .unwrap_or_default();
                Ok(Ledger {
                    entries,
                    version: resource_version(&obj),
                    exists: true,
                })
            }
            Err(StoreError::NotFound { .. }) => Ok(Ledger::default()),
            Err(e) => Err(e),
        }
    }

    /// Keys reserved by others than `owner` that still count: held by a
    /// Service (`held`) or young.
    pub fn reserved_by_others(
        &self,
        owner: &str,
        held: &BTreeSet<String>,
        now: i64,
    ) -> BTreeSet<String> {
        self.entries
            .iter()
            .filter(|(k, e)| e.owner != owner && (held.contains(*k) || now - e.at < KEEP_UNHELD))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Writes `keys` as `owner`'s reservations (its other entries are
    /// dropped, as are stale ones) with a CAS on the version read.
    /// `Conflict` means someone else wrote first: load and pick again.
    pub fn reserve(
        mut self,
        store: &dyn Datastore,
        owner: &str,
        keys: &BTreeSet<String>,
        held: &BTreeSet<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.entries
            .retain(|k, e| e.owner != owner && (held.contains(k) || now - e.at < KEEP_UNHELD));
        for k in keys {
            self.entries.insert(
                k.clone(),
                Entry {
                    owner: owner.to_string(),
                    at: now,
                },
            );
        }
        self.write(store)
    }

    fn write(self, store: &dyn Datastore) -> Result<(), StoreError> {
        let text = serde_json::to_string(&self.entries).map_err(|e| StoreError::Encoding {
            name: LEDGER_NAME.into(),
            reason: e.to_string(),
        })?;
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": LEDGER_NAME, "namespace": LEDGER_NAMESPACE,
                         "labels": {"app.kubernetes.io/managed-by": "herd"}},
            "data": {DATA_KEY: text},
        });
        if self.exists {
            store.update(&key(), obj, self.version).map(|_| ())
        } else {
            match store.create(&key(), obj) {
                Err(StoreError::AlreadyExists { .. }) => Err(StoreError::Conflict {
                    resource: Resource::ConfigMaps,
                    name: LEDGER_NAME.into(),
                    current: 0,
                }),
                other => other.map(|_| ()),
            }
        }
    }
}

/// Drops `owner`'s reservations at once (its Service was deleted through
/// the API). Best effort: on failure they expire after [`KEEP_UNHELD`].
pub fn release(store: &dyn Datastore, owner: &str) {
    for _ in 0..8 {
        let Ok(ledger) = Ledger::load(store) else {
            return;
        };
        if !ledger.exists || !ledger.entries.values().any(|e| e.owner == owner) {
            return;
        }
        let mut l = ledger;
        l.entries.retain(|_, e| e.owner != owner);
        let keep: BTreeSet<String> = l.entries.keys().cloned().collect();
        // Re-written as held so that nothing else is pruned here.
        match l.write(store) {
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => {
                tracing::warn!(owner, error = %e, kept = keep.len(), "releasing service allocations");
                return;
            }
            Ok(()) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(&d.path().join("s.redb"), &d.path().join("x.redb")).unwrap();
        (d, s)
    }

    fn set(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn a_stale_read_loses_the_race_and_sees_the_winner() {
        let (_d, s) = store();
        let a = Ledger::load(&s).unwrap();
        let b = Ledger::load(&s).unwrap();
        let none = BTreeSet::new();
        a.reserve(&s, "ns/a", &set(&["ip/10.96.0.5"]), &none, 100)
            .unwrap();
        let err = b
            .reserve(&s, "ns/b", &set(&["ip/10.96.0.5"]), &none, 100)
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        let again = Ledger::load(&s).unwrap();
        assert!(
            again
                .reserved_by_others("ns/b", &none, 101)
                .contains("ip/10.96.0.5")
        );
        assert!(again.reserved_by_others("ns/a", &none, 101).is_empty());
    }

    #[test]
    fn unheld_reservations_expire_and_held_ones_stay() {
        let (_d, s) = store();
        let none = BTreeSet::new();
        Ledger::load(&s)
            .unwrap()
            .reserve(&s, "ns/a", &set(&["ip/10.96.0.5"]), &none, 100)
            .unwrap();
        Ledger::load(&s)
            .unwrap()
            .reserve(&s, "ns/b", &set(&["port/30001"]), &none, 100)
            .unwrap();
        let later = 100 + KEEP_UNHELD + 1;
        let l = Ledger::load(&s).unwrap();
        let held = set(&["port/30001"]);
        assert_eq!(
            l.reserved_by_others("ns/c", &held, later),
            set(&["port/30001"])
        );
        l.reserve(&s, "ns/c", &set(&["ip/10.96.0.6"]), &held, later)
            .unwrap();
        let keys: BTreeSet<String> = Ledger::load(&s).unwrap().entries.keys().cloned().collect();
        assert_eq!(keys, set(&["ip/10.96.0.6", "port/30001"]));
    }
}
