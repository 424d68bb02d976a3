//! The node's local store: redb files, one table per resource.
//!
//! Guarantees:
//! - Every write (create/update/delete) is one redb transaction, and the
//!   call returns `Ok` only once the change is on disk and survives a crash
//!   (SIGKILL, power loss as far as fsync goes). Writes are group-committed:
//!   each transaction commits without fsync (`Durability::None`), then the
//!   writer waits for one `Durability::Immediate` commit made after it;
//!   concurrent writers share that commit (one fsync for many writes, the
//!   way databases batch their log flushes). A reader on this node may see
//!   a change up to one fsync before it is durable; the writer's answer
//!   and the watch event for it wait for durability.
//! - One revision counter over all resources, stored in a `meta` table in
//!   the same transaction as the write; the new value is written into the
//!   object's `metadata.resourceVersion`.
//! - Secrets live in a second redb file, meant to be on tmpfs
//!   (`<run_dir>/secrets.redb`): their data never reaches the disk, and a
//!   reboot loses them (as tmpfs does). The revision at open is the highest
//!   of both files' counters, so it never goes backwards.
//! - Watch events are broadcast in revision order once durable (sent while
//!   the state lock is held) and kept in an in-memory ring of the last [`RING`] events; a
//!   watch from an older revision (or from before this process opened the
//!   store) fails with [`StoreError::Expired`], the client re-lists.
//! - Garbage in a table (not JSON) is an [`StoreError::Encoding`], never a
//!   panic.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::broadcast;

use super::{Datastore, EventType, Key, StoreError, WatchEvent, WatchStream, resource_version};
use crate::api::Resource;

/// Events kept in memory for watches that resume from a revision.
pub const RING: usize = 10_000;
/// Live events a slow watcher may lag behind before it gets `Expired`.
const CHANNEL: usize = 4096;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

fn table(resource: Resource) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(resource.plural())
}

/// The redb-backed [`Datastore`].
#[derive(Debug)]
pub struct LocalStore {
    main: Db,
    secrets: Db,
    state: Mutex<State>,
    /// Held by the one writer making everything so far durable.
    sync: Mutex<()>,
    tx: broadcast::Sender<WatchEvent>,
}

#[derive(Debug)]
struct Db {
    db: Database,
    path: PathBuf,
}

#[derive(Debug)]
struct State {
    /// The last committed revision (durable or not).
    revision: u64,
    /// Every revision up to this one is durable and its event published.
    published: u64,
    /// Committed, not yet durable: published after the next fsync.
    pending: VecDeque<WatchEvent>,
    /// Which files have commits that are not durable yet.
    dirty_main: bool,
    dirty_secrets: bool,
    ring: VecDeque<WatchEvent>,
    /// Every event after this revision is in the ring.
    ring_start: u64,
}

impl Db {
    fn open(path: &Path) -> Result<Db, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| backend(path, e))?;
        }
        let db = Database::create(path).map_err(|e| backend(path, e))?;
        let d = Db {
            db,
            path: path.to_path_buf(),
        };
        // Create every table so reads never meet a missing one.
        let txn = d.db.begin_write().map_err(|e| d.err(e))?;
        {
            txn.open_table(META).map_err(|e| d.err(e))?;
            for r in Resource::ALL {
                txn.open_table(table(r)).map_err(|e| d.err(e))?;
            }
        }
        txn.commit().map_err(|e| d.err(e))?;
        Ok(d)
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        backend(&self.path, e.into())
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        Ok(meta
            .get(REVISION)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value()))
    }
}

fn backend(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn key_string(key: &Key) -> String {
    match &key.namespace {
        Some(ns) => format!("{ns}/{}", key.name),
        None => key.name.clone(),
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
    let Some(obj) = object.as_object_mut() else {
        return Err(StoreError::Encoding {
            name: key.name.clone(),
            reason: "object is not a JSON object".into(),
        });
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return Err(StoreError::Encoding {
            name: key.name.clone(),
            reason: "metadata is not a JSON object".into(),
        });
    };
    meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    Ok(())
}

enum Op {
    Create(Value),
    Update(Value, Option<u64>),
    Delete(Option<u64>),
}

impl LocalStore {
    /// Opens (or creates) the store at `path` (`<root>/store.redb`) with
    /// secrets at `secrets_path` (on tmpfs).
    pub fn open(path: &Path, secrets_path: &Path) -> Result<LocalStore, StoreError> {
        let main = Db::open(path)?;
        let secrets = Db::open(secrets_path)?;
        let revision = main.revision()?.max(secrets.revision()?);
        let (tx, _) = broadcast::channel(CHANNEL);
        Ok(LocalStore {
            main,
            secrets,
            state: Mutex::new(State {
                revision,
                published: revision,
                pending: VecDeque::new(),
                dirty_main: false,
                dirty_secrets: false,
                ring: VecDeque::new(),
                ring_start: revision,
            }),
            sync: Mutex::new(()),
            tx,
        })
    }

    fn db(&self, resource: Resource) -> &Db {
        if resource == Resource::Secrets {
            &self.secrets
        } else {
            &self.main
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a writer panicked; the state (counter
        // and ring) is updated after commit and stays consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, key: &Key, op: Op) -> Result<Value, StoreError> {
        let db = self.db(key.resource);
        let k = key_string(key);
        let mut state = self.lock();
        let rv = state.revision + 1;
        let mut txn = db.db.begin_write().map_err(|e| db.err(e))?;
        txn.set_durability(Durability::None)
            .map_err(|e| db.err(e))?;
        let (kind, object) = {
            let mut t = txn.open_table(table(key.resource)).map_err(|e| db.err(e))?;
            let current = match t.get(k.as_str()).map_err(|e| db.err(e))? {
                Some(v) => Some(decode(&key.name, v.value())?),
                None => None,
            };
            let check = |current: &Option<Value>, expected: Option<u64>| match current {
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
            let (kind, mut object) = match op {
                Op::Create(o) => {
                    if current.is_some() {
                        return Err(StoreError::AlreadyExists {
                            resource: key.resource,
                            name: key.name.clone(),
                        });
                    }
                    (EventType::Added, o)
                }
                Op::Update(o, expected) => {
                    check(&current, expected)?;
                    (EventType::Modified, o)
                }
                Op::Delete(expected) => {
                    check(&current, expected)?;
                    (EventType::Deleted, current.unwrap_or_default())
                }
            };
            set_rv(&mut object, key, rv)?;
            if kind == EventType::Deleted {
                t.remove(k.as_str()).map_err(|e| db.err(e))?;
            } else {
                let bytes = serde_json::to_vec(&object).map_err(|e| StoreError::Encoding {
                    name: key.name.clone(),
                    reason: e.to_string(),
                })?;
                t.insert(k.as_str(), bytes.as_slice())
                    .map_err(|e| db.err(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| db.err(e))?;
            meta.insert(REVISION, rv).map_err(|e| db.err(e))?;
            (kind, object)
        };
        txn.commit().map_err(|e| db.err(e))?;
        state.revision = rv;
        if key.resource == Resource::Secrets {
            state.dirty_secrets = true;
        } else {
            state.dirty_main = true;
        }
        state.pending.push_back(WatchEvent {
            kind,
            key: key.clone(),
            object: object.clone(),
            resource_version: rv,
        });
        drop(state);
        self.make_durable(rv)?;
        Ok(object)
    }

    /// Returns once revision `rv` is durable: either another writer's
    /// fsync covered it, or this one makes everything committed so far
    /// durable (one `Immediate` commit per dirty file) and publishes the
    /// events.
    fn make_durable(&self, rv: u64) -> Result<(), StoreError> {
        let _sync = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        let (target, main, secrets) = {
            let mut state = self.lock();
            if state.published >= rv {
                return Ok(());
            }
            let flags = (state.revision, state.dirty_main, state.dirty_secrets);
            state.dirty_main = false;
            state.dirty_secrets = false;
            flags
        };
        let flush = |db: &Db| -> Result<(), StoreError> {
            // Rewrites the counter unchanged: a non-empty transaction whose
            // fsync also persists every `Durability::None` commit before it.
            let txn = db.db.begin_write().map_err(|e| db.err(e))?;
            {
                let mut meta = txn.open_table(META).map_err(|e| db.err(e))?;
                let current = meta
                    .get(REVISION)
                    .map_err(|e| db.err(e))?
                    .map_or(0, |v| v.value());
                meta.insert(REVISION, current).map_err(|e| db.err(e))?;
            }
            txn.commit().map_err(|e| db.err(e))
        };
        let flushed = (if main { flush(&self.main) } else { Ok(()) }).and_then(|()| {
            if secrets {
                flush(&self.secrets)
            } else {
                Ok(())
            }
        });
        let mut state = self.lock();
        if let Err(e) = flushed {
            // Not durable: a later writer must try again.
            state.dirty_main |= main;
            state.dirty_secrets |= secrets;
            return Err(e);
        }
        state.published = state.published.max(target);
        while state
            .pending
            .front()
            .is_some_and(|e| e.resource_version <= target)
        {
            let Some(ev) = state.pending.pop_front() else {
                break;
            };
            if state.ring.len() >= RING
                && let Some(old) = state.ring.pop_front()
            {
                state.ring_start = old.resource_version;
            }
            state.ring.push_back(ev.clone());
            // No receivers is fine.
            let _ = self.tx.send(ev);
        }
        Ok(())
    }
}

impl Datastore for LocalStore {
    fn get(&self, key: &Key) -> Result<Value, StoreError> {
        let db = self.db(key.resource);
        let txn = db.db.begin_read().map_err(|e| db.err(e))?;
        let t = txn.open_table(table(key.resource)).map_err(|e| db.err(e))?;
        match t.get(key_string(key).as_str()).map_err(|e| db.err(e))? {
            Some(v) => decode(&key.name, v.value()),
            None => Err(StoreError::NotFound {
                resource: key.resource,
                name: key.name.clone(),
            }),
        }
    }

    fn list(
        &self,
        resource: Resource,
        namespace: Option<&str>,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        let db = self.db(resource);
        // Start the read under the write lock: the snapshot is exactly the
        // state at `revision`.
        let (txn, revision) = {
            let state = self.lock();
            (db.db.begin_read().map_err(|e| db.err(e))?, state.revision)
        };
        let t = txn.open_table(table(resource)).map_err(|e| db.err(e))?;
        let mut items = Vec::new();
        let prefix = namespace.map(|ns| format!("{ns}/"));
        for entry in t.iter().map_err(|e| db.err(e))? {
            let (k, v) = entry.map_err(|e| db.err(e))?;
            let k = k.value();
            if let Some(p) = &prefix
                && !k.starts_with(p.as_str())
            {
                continue;
            }
            let (ns, name) = k.split_once('/').unwrap_or(("", k));
            items.push((ns.to_string(), name.to_string(), decode(name, v.value())?));
        }
        items.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok((items.into_iter().map(|i| i.2).collect(), revision))
    }

    fn create(&self, key: &Key, object: Value) -> Result<Value, StoreError> {
        self.write(key, Op::Create(object))
    }

    fn update(&self, key: &Key, object: Value, expected: Option<u64>) -> Result<Value, StoreError> {
        self.write(key, Op::Update(object, expected))
    }

    fn delete(&self, key: &Key, expected: Option<u64>) -> Result<Value, StoreError> {
        self.write(key, Op::Delete(expected))
    }

    fn watch(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStream, StoreError> {
        let state = self.lock();
        super::Ring {
            events: &state.ring,
            start: state.ring_start,
            current: state.revision,
            after: state.published,
        }
        .watch(self.tx.subscribe(), resource, namespace, since)
    }

    fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.lock().revision)
    }

    /// A key range of the current state. A later page (with the first
    /// page's `revision`) reads the current state too (no snapshots); a
    /// revision older than the watch ring is `Expired`.
    fn list_page(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        after: Option<&str>,
        limit: usize,
        revision: Option<u64>,
    ) -> Result<Option<super::ListPage>, StoreError> {
        let db = self.db(resource);
        let (txn, current, oldest) = {
            let state = self.lock();
            (
                db.db.begin_read().map_err(|e| db.err(e))?,
                state.revision,
                state.ring_start,
            )
        };
        super::page::check_revision(revision, oldest)?;
        let t = txn.open_table(table(resource)).map_err(|e| db.err(e))?;
        let (items, remaining) = super::page::read(
            &t,
            namespace,
            after,
            limit,
            |e| db.err(e),
            |k, v| decode(k.rsplit('/').next().unwrap_or(k), v),
        )?;
        Ok(Some(super::ListPage {
            items,
            revision: revision.unwrap_or(current),
            remaining,
        }))
    }
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
