//! This node's replica of the state machine: objects in redb (`state.redb`),
//! read by `get`/`list`/`watch`, written only by applying committed log
//! entries or installing a snapshot.
//!
//! Guarantees:
//! - Same semantics as [`crate::store::local::LocalStore`]: one revision
//!   counter over all resources, bumped by every successful command and
//!   written into `metadata.resourceVersion`; failed commands (conflict,
//!   not found, already exists) change nothing. Applying is deterministic,
//!   so every replica holds the same objects at the same revisions.
//! - One batch of entries is one redb transaction, holding the objects,
//!   the revision, the last applied log id and the membership together: a
//!   crash keeps all or nothing of it. Batches commit with
//!   `Durability::None` (the log is the durable record; openraft re-applies
//!   from the saved committed index on restart); snapshots make the state
//!   durable first, so logs are only purged below a durable state.
//! - Watch events are broadcast in revision order under the write lock and
//!   kept in a ring of [`RING`] events; older revisions are `Expired`.
//!   Installing a snapshot clears the ring and sends the watchers the
//!   difference (deleted, then added/modified objects) so they converge.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use openraft::{BasicNode, EntryPayload, LogId, StoredMembership};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use super::secrets::{Sealer, open_with};
use super::snapshot::{SnapshotData, SnapshotObject};
use super::types::{Command, CommandResult, TypeConfig, WireError};
use crate::api::Resource;
use crate::cluster::transport::NodeId;
use crate::store::{EventType, Key, StoreError, WatchEvent, WatchStream, resource_version};

/// Events kept in memory for watches that resume from a revision.
pub const RING: usize = 10_000;
const CHANNEL: usize = 4096;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const REVISION: &str = "revision";
const APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";

fn table(resource: Resource) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(resource.plural())
}

pub type Membership = StoredMembership<NodeId, BasicNode>;

/// The replica's applied position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: Membership,
    pub revision: u64,
}

#[derive(Debug)]
struct Ring {
    revision: u64,
    events: VecDeque<WatchEvent>,
    start: u64,
}

/// The replica; shared by the state machine (writer) and the store (reads).
#[derive(Debug)]
pub struct Replica {
    db: Database,
    path: PathBuf,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<WatchEvent>,
    applied: watch::Sender<u64>,
    sealer: Option<Sealer>,
}

fn key_string(key: &Key) -> String {
    match &key.namespace {
        Some(ns) => format!("{ns}/{}", key.name),
        None => key.name.clone(),
    }
}

fn key_of(resource: Resource, k: &str) -> Key {
    match k.split_once('/') {
        Some((ns, name)) => Key::namespaced(resource, ns, name),
        None => Key::cluster(resource, k),
    }
}

fn decode(name: &str, bytes: &[u8]) -> Result<Value, StoreError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| StoreError::Encoding {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    if !v.is_object() {
        return Err(StoreError::Encoding {
            name: name.to_string(),
            reason: "stored value is not a JSON object".into(),
        });
    }
    Ok(v)
}

fn set_rv(object: &mut Value, key: &Key, rv: u64) -> Result<(), StoreError> {
    let bad = |what: &str| StoreError::Encoding {
        name: key.name.clone(),
        reason: format!("{what} is not a JSON object"),
    };
    let obj = object.as_object_mut().ok_or_else(|| bad("object"))?;
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let meta = meta.as_object_mut().ok_or_else(|| bad("metadata"))?;
    meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    Ok(())
}

impl Replica {
    /// Opens or creates the replica at `path`.
    pub fn open(path: &Path, sealer: Option<Sealer>) -> Result<Replica, StoreError> {
        let db = Database::create(path).map_err(|e| backend(path, e))?;
        let r = Replica {
            db,
            path: path.to_path_buf(),
            ring: Mutex::new(Ring {
                revision: 0,
                events: VecDeque::new(),
                start: 0,
            }),
            tx: broadcast::channel(CHANNEL).0,
            applied: watch::channel(0).0,
            sealer,
        };
        let txn = r.db.begin_write().map_err(|e| r.err(e))?;
        {
            txn.open_table(META).map_err(|e| r.err(e))?;
            for res in Resource::ALL {
                txn.open_table(table(res)).map_err(|e| r.err(e))?;
            }
        }
        txn.commit().map_err(|e| r.err(e))?;
        let a = r.applied_state()?;
        {
            let mut ring = r.lock();
            ring.revision = a.revision;
            ring.start = a.revision;
        }
        r.applied
            .send_replace(a.last_applied.map_or(0, |l| l.index));
        Ok(r)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_ref()
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        backend(&self.path, e)
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Poisoned: a writer panicked; the ring is updated after commit and
        // stays consistent.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last applied log index (0: none), as a watch.
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn meta<T: DeserializeOwned>(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match t.get(key).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => {
                serde_json::from_slice(v.value())
                    .map(Some)
                    .map_err(|e| StoreError::Encoding {
                        name: key.to_string(),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Last applied log id, membership and revision, as stored.
    pub fn applied_state(&self) -> Result<Applied, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(META).map_err(|e| self.err(e))?;
        Ok(Applied {
            last_applied: self.meta(&t, APPLIED)?,
            membership: self.meta(&t, MEMBERSHIP)?.unwrap_or_default(),
            revision: self.meta(&t, REVISION)?.unwrap_or(0),
        })
    }

    fn open_secret(&self, key: &Key, v: Value) -> Result<Value, StoreError> {
        open_with(self.sealer.as_ref(), key, v)
    }

    pub fn get(&self, key: &Key) -> Result<Value, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn
            .open_table(table(key.resource))
            .map_err(|e| self.err(e))?;
        match t.get(key_string(key).as_str()).map_err(|e| self.err(e))? {
            Some(v) => self.open_secret(key, decode(&key.name, v.value())?),
            None => Err(StoreError::NotFound {
                resource: key.resource,
                name: key.name.clone(),
            }),
        }
    }

    pub fn list(
        &self,
        resource: Resource,
        namespace: Option<&str>,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        let (txn, revision) = {
            let ring = self.lock();
            (
                self.db.begin_read().map_err(|e| self.err(e))?,
                ring.revision,
            )
        };
        let t = txn.open_table(table(resource)).map_err(|e| self.err(e))?;
        let prefix = namespace.map(|ns| format!("{ns}/"));
        let mut items = Vec::new();
        for entry in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let k = k.value();
            if let Some(p) = &prefix
                && !k.starts_with(p.as_str())
            {
                continue;
            }
            let key = key_of(resource, k);
            let obj = self.open_secret(&key, decode(&key.name, v.value())?)?;
            items.push((key.namespace.unwrap_or_default(), key.name, obj));
        }
        items.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok((items.into_iter().map(|i| i.2).collect(), revision))
    }

    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// A key range of the replica's current state (see
    /// [`crate::store::Datastore::list_page`]); a revision older than the
    /// watch ring is `Expired`.
    pub fn list_page(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        after: Option<&str>,
        limit: usize,
        revision: Option<u64>,
    ) -> Result<crate::store::ListPage, StoreError> {
        let (txn, current, oldest) = {
            let ring = self.lock();
            (
                self.db.begin_read().map_err(|e| self.err(e))?,
                ring.revision,
                ring.start,
            )
        };
        crate::store::page::check_revision(revision, oldest)?;
        let t = txn.open_table(table(resource)).map_err(|e| self.err(e))?;
        let (items, remaining) = crate::store::page::read(
            &t,
            namespace,
            after,
            limit,
            |e| self.err(e),
            |k, v| {
                let key = key_of(resource, k);
                self.open_secret(&key, decode(&key.name, v)?)
            },
        )?;
        Ok(crate::store::ListPage {
            items,
            revision: revision.unwrap_or(current),
            remaining,
        })
    }

    pub fn watch(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStream, StoreError> {
        let ring = self.lock();
        crate::store::Ring {
            events: &ring.events,
            start: ring.start,
            current: ring.revision,
            after: ring.revision,
        }
        .watch(self.tx.subscribe(), resource, namespace, since)
    }

    fn put_meta<T: Serialize>(
        &self,
        txn: &WriteTransaction,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.err(e))?;
        let mut t = txn.open_table(META).map_err(|e| self.err(e))?;
        t.insert(key, bytes.as_slice()).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Runs one command inside `txn` at revision `rv`.
    fn execute(
        &self,
        txn: &WriteTransaction,
        cmd: Command,
        rv: u64,
    ) -> Result<(EventType, Key, Value), StoreError> {
        let key = cmd.key().to_key()?;
        let k = key_string(&key);
        let mut t = txn
            .open_table(table(key.resource))
            .map_err(|e| self.err(e))?;
        let current = match t.get(k.as_str()).map_err(|e| self.err(e))? {
            Some(v) => Some(decode(&key.name, v.value())?),
            None => None,
        };
        let check = |expected: Option<u64>| match &current {
            None => Err(StoreError::NotFound {
                resource: key.resource,
                name: key.name.clone(),
            }),
            Some(c) => {
                let cur = resource_version(c).unwrap_or(0);
                match expected {
                    Some(e) if e != cur => Err(StoreError::Conflict {
                        resource: key.resource,
                        name: key.name.clone(),
                        current: cur,
                    }),
                    _ => Ok(()),
                }
            }
        };
        let (kind, mut object) = match cmd {
            Command::Create { object, .. } => {
                if current.is_some() {
                    return Err(StoreError::AlreadyExists {
                        resource: key.resource,
                        name: key.name.clone(),
                    });
                }
                (EventType::Added, object)
            }
            Command::Update {
                object, expected, ..
            } => {
                check(expected)?;
                (EventType::Modified, object)
            }
            Command::Delete { expected, .. } => {
                check(expected)?;
                (EventType::Deleted, current.clone().unwrap_or_default())
            }
        };
        set_rv(&mut object, &key, rv)?;
        if kind == EventType::Deleted {
            t.remove(k.as_str()).map_err(|e| self.err(e))?;
        } else {
            let bytes = serde_json::to_vec(&object).map_err(|e| StoreError::Encoding {
                name: key.name.clone(),
                reason: e.to_string(),
            })?;
            t.insert(k.as_str(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        Ok((kind, key, object))
    }

    /// Applies committed entries in one transaction. `Err` only for
    /// storage failures (openraft then stops this node); a command that
    /// fails its checks is an `Err` outcome in its result.
    pub fn apply(
        &self,
        entries: Vec<openraft::Entry<TypeConfig>>,
    ) -> Result<Vec<CommandResult>, StoreError> {
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let mut ring = self.lock();
        let mut revision = ring.revision;
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(Durability::None)
            .map_err(|e| self.err(e))?;
        let mut results = Vec::with_capacity(entries.len());
        let mut events = Vec::new();
        let mut membership = None;
        for entry in entries {
            match entry.payload {
                EntryPayload::Blank => results.push(CommandResult::default()),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    results.push(CommandResult::default());
                }
                EntryPayload::Normal(cmd) => match self.execute(&txn, cmd, revision + 1) {
                    Ok((kind, key, object)) => {
                        revision += 1;
                        events.push((kind, key, object.clone()));
                        results.push(CommandResult {
                            outcome: Some(Ok(object)),
                        });
                    }
                    Err(e @ StoreError::Backend { .. }) => return Err(e),
                    Err(e) => results.push(CommandResult {
                        outcome: Some(Err(WireError::from(&e))),
                    }),
                },
            }
        }
        self.put_meta(&txn, APPLIED, &Some(last))?;
        self.put_meta(&txn, REVISION, &revision)?;
        if let Some(m) = &membership {
            self.put_meta(&txn, MEMBERSHIP, m)?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        let first = ring.revision;
        ring.revision = revision;
        for (i, (kind, key, object)) in events.into_iter().enumerate() {
            let object = self.open_secret(&key, object.clone()).unwrap_or(object);
            self.publish(&mut ring, kind, key, object, first + 1 + i as u64, true);
        }
        drop(ring);
        self.applied.send_replace(last.index);
        Ok(results)
    }

    fn publish(
        &self,
        ring: &mut Ring,
        kind: EventType,
        key: Key,
        object: Value,
        rv: u64,
        keep: bool,
    ) {
        let ev = WatchEvent {
            kind,
            key,
            object,
            resource_version: rv,
        };
        if keep {
            if ring.events.len() >= RING
                && let Some(old) = ring.events.pop_front()
            {
                ring.start = old.resource_version;
            }
            ring.events.push_back(ev.clone());
        }
        // No receivers is fine.
        let _ = self.tx.send(ev);
    }

    /// Makes every earlier `Durability::None` commit durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// The whole state (after making it durable), for a snapshot.
    pub fn export(&self) -> Result<(Applied, Vec<SnapshotObject>), StoreError> {
        self.flush()?;
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        let applied = Applied {
            last_applied: self.meta(&meta, APPLIED)?,
            membership: self.meta(&meta, MEMBERSHIP)?.unwrap_or_default(),
            revision: self.meta(&meta, REVISION)?.unwrap_or(0),
        };
        let mut objects = Vec::new();
        for res in Resource::ALL {
            let t = txn.open_table(table(res)).map_err(|e| self.err(e))?;
            for entry in t.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                objects.push(SnapshotObject {
                    resource: res.plural().to_string(),
                    key: k.value().to_string(),
                    object: decode(k.value(), v.value())?,
                });
            }
        }
        Ok((applied, objects))
    }

    /// Replaces the whole state with a snapshot's (durably), and tells the
    /// watchers what changed.
    pub fn install(&self, data: &SnapshotData) -> Result<(), StoreError> {
        let mut by_res: BTreeMap<Resource, Vec<&SnapshotObject>> = BTreeMap::new();
        for o in &data.objects {
            let Some(r) = Resource::from_plural(&o.resource) else {
                return Err(StoreError::Encoding {
                    name: o.key.clone(),
                    reason: format!("unknown resource {:?} in snapshot", o.resource),
                });
            };
            by_res.entry(r).or_default().push(o);
        }
        let mut ring = self.lock();
        let old_rev = ring.revision;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut deleted = Vec::new();
        let mut changed = Vec::new();
        for res in Resource::ALL {
            let mut t = txn.open_table(table(res)).map_err(|e| self.err(e))?;
            let new = by_res.remove(&res).unwrap_or_default();
            let new_keys: HashSet<&str> = new.iter().map(|o| o.key.as_str()).collect();
            let mut old_keys = HashSet::new();
            for entry in t.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                old_keys.insert(k.value().to_string());
                if !new_keys.contains(k.value()) {
                    deleted.push((key_of(res, k.value()), decode(k.value(), v.value())?));
                }
            }
            t.retain(|_, _| false).map_err(|e| self.err(e))?;
            for o in new {
                let bytes = serde_json::to_vec(&o.object).map_err(|e| self.err(e))?;
                t.insert(o.key.as_str(), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
                let rv = resource_version(&o.object).unwrap_or(0);
                if rv > old_rev {
                    let kind = if old_keys.contains(&o.key) {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    changed.push((rv, kind, key_of(res, &o.key), o.object.clone()));
                }
            }
        }
        self.put_meta(&txn, APPLIED, &data.meta.last_log_id)?;
        self.put_meta(&txn, REVISION, &data.revision)?;
        self.put_meta(&txn, MEMBERSHIP, &data.meta.last_membership)?;
        txn.commit().map_err(|e| self.err(e))?;
        ring.revision = data.revision;
        ring.events.clear();
        ring.start = data.revision;
        changed.sort_by_key(|c| c.0);
        let events = deleted
            .into_iter()
            .map(|(k, o)| (EventType::Deleted, k, o))
            .chain(changed.into_iter().map(|(_, kind, k, o)| (kind, k, o)));
        // Each event gets its own revision in (old, new]: every deleted or
        // changed key took at least one write in that range.
        for (i, (kind, key, mut object)) in events.enumerate() {
            let rv = (old_rev + 1 + i as u64).min(data.revision);
            if kind == EventType::Deleted {
                let _ = set_rv(&mut object, &key, rv);
            }
            let object = self.open_secret(&key, object.clone()).unwrap_or(object);
            self.publish(&mut ring, kind, key, object, rv, false);
        }
        drop(ring);
        self.applied
            .send_replace(data.meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }
}

fn backend(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}
