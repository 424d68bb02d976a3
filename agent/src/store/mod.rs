//! Desired state: the `Datastore` trait and the node's local store.
//!
//! Objects are stored as JSON (`serde_json::Value`), keyed by resource,
//! namespace and name; the store owns `metadata.resourceVersion`: a single
//! counter over all resources, increased by every write, written into each
//! object it returns. Watches deliver every change after a given
//! resourceVersion, in order; a watch that asks for a version older than the
//! retained window fails with [`StoreError::Expired`] (HTTP 410, the client
//! lists again), as etcd-backed API servers do.
//!
//! [`local::LocalStore`] keeps everything in a redb file (secrets in a
//! second one on tmpfs: they never touch the disk). The cluster issue puts
//! Raft under the same trait; a real etcd can replace it later.

pub mod etcd;
pub mod local;
pub mod migrate;
mod page;
pub mod raft;

use std::collections::VecDeque;

use serde_json::Value;

use crate::api::{ApiError, Resource};

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub resource: Resource,
    /// `None` for cluster-scoped resources (namespaces).
    pub namespace: Option<String>,
    pub name: String,
}

impl Key {
    pub fn namespaced(resource: Resource, namespace: &str, name: &str) -> Key {
        Key {
            resource,
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        }
    }
    pub fn cluster(resource: Resource, name: &str) -> Key {
        Key {
            resource,
            namespace: None,
            name: name.to_string(),
        }
    }
}

/// Watch event types, as in `metav1.WatchEvent.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change. For `Deleted`, `object` is the last state with the
/// deletion's resourceVersion.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub kind: EventType,
    pub key: Key,
    pub object: Value,
    pub resource_version: u64,
}

/// Store failures. Converted to `ApiError` (one place: `From`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: Resource, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: Resource, name: String },
    /// Precondition failed: the stored resourceVersion differs.
    #[error(
        "the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        resource: Resource,
        name: String,
        current: u64,
    },
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
    #[error("store {path}: {reason}")]
    Backend { path: String, reason: String },
    /// A replicated write not confirmed in time (no reachable leader or no
    /// quorum). It may still be applied later: answered 504 Timeout, as
    /// the Kubernetes API does when an operation may still complete.
    #[error("{reason}; the write may still complete")]
    Timeout { reason: String },
    #[error("object {name}: {reason}")]
    Encoding { name: String, reason: String },
    /// A write of a leader's worker after its leadership ended (refused by
    /// the store; nothing written).
    #[error("refused: {reason}")]
    Fenced { reason: String },
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::NotFound { resource, name } => ApiError::not_found(*resource, name),
            StoreError::AlreadyExists { resource, name } => {
                ApiError::already_exists(*resource, name)
            }
            StoreError::Conflict { resource, name, .. } => {
                ApiError::conflict(*resource, name, &e.to_string())
            }
            StoreError::Expired { .. } => ApiError::expired(e.to_string()),
            StoreError::Backend { .. } | StoreError::Encoding { .. } => {
                ApiError::internal(e.to_string())
            }
            StoreError::Timeout { .. } => {
                ApiError::new(crate::api::error::Reason::Timeout, e.to_string())
            }
            StoreError::Fenced { .. } => {
                ApiError::new(crate::api::error::Reason::Conflict, e.to_string())
            }
        }
    }
}

/// A live watch: buffered backlog first, then live events.
#[derive(Debug)]
pub struct WatchStream {
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// A store's ring and broadcast (LocalStore, the Raft replica).
    Ring {
        backlog: VecDeque<WatchEvent>,
        live: tokio::sync::broadcast::Receiver<WatchEvent>,
        filter: (Resource, Option<String>),
        /// Events at or below this version were in the backlog already.
        after: u64,
    },
    /// Events (already filtered and in order) from a task, e.g. an etcd
    /// watch; an `Err` ends the stream.
    Channel(tokio::sync::mpsc::Receiver<Result<WatchEvent, StoreError>>),
}

impl WatchStream {
    pub fn new(
        backlog: VecDeque<WatchEvent>,
        live: tokio::sync::broadcast::Receiver<WatchEvent>,
        resource: Resource,
        namespace: Option<String>,
        after: u64,
    ) -> WatchStream {
        WatchStream {
            source: Source::Ring {
                backlog,
                live,
                filter: (resource, namespace),
                after,
            },
        }
    }

    /// A stream fed by a task: it sends events in revision order, matching
    /// the watch's filter; an `Err` is the stream's last item.
    pub fn from_channel(
        rx: tokio::sync::mpsc::Receiver<Result<WatchEvent, StoreError>>,
    ) -> WatchStream {
        WatchStream {
            source: Source::Channel(rx),
        }
    }

    /// The next event; `Err(Expired)` when this watcher fell too far
    /// behind (the caller re-lists), `Ok(None)` when the store closed.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, StoreError> {
        let (backlog, live, filter, after) = match &mut self.source {
            Source::Channel(rx) => return rx.recv().await.transpose(),
            Source::Ring {
                backlog,
                live,
                filter,
                after,
            } => (backlog, live, filter, after),
        };
        if let Some(ev) = backlog.pop_front() {
            return Ok(Some(ev));
        }
        loop {
            match live.recv().await {
                Ok(ev) => {
                    let matches = ev.key.resource == filter.0
                        && (filter.1.is_none() || ev.key.namespace == filter.1);
                    if ev.resource_version > *after && matches {
                        *after = ev.resource_version;
                        return Ok(Some(ev));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(None),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    return Err(StoreError::Expired {
                        requested: *after,
                        oldest: after.saturating_add(1),
                    });
                }
            }
        }
    }
}

/// A store's ring of recent events, as a watch is opened on it (shared by
/// LocalStore and the Raft replica).
#[derive(Debug, Clone, Copy)]
pub struct Ring<'a> {
    pub events: &'a VecDeque<WatchEvent>,
    /// The oldest revision a watch may still start from.
    pub start: u64,
    /// The store's revision (a watch without `since` starts here).
    pub current: u64,
    /// The newest revision already reflected in `events`.
    pub after: u64,
}

impl Ring<'_> {
    /// The backlog after `since` (default: now), then live events from
    /// `live` newer than what the backlog covers; `Expired` when `since`
    /// is older than the ring.
    pub fn watch(
        &self,
        live: tokio::sync::broadcast::Receiver<WatchEvent>,
        resource: Resource,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStream, StoreError> {
        let since = since.unwrap_or(self.current);
        if since < self.start {
            return Err(StoreError::Expired {
                requested: since,
                oldest: self.start,
            });
        }
        let backlog: VecDeque<WatchEvent> = self
            .events
            .iter()
            .filter(|e| {
                e.resource_version > since
                    && e.key.resource == resource
                    && (namespace.is_none() || e.key.namespace.as_deref() == namespace)
            })
            .cloned()
            .collect();
        Ok(WatchStream::new(
            backlog,
            live,
            resource,
            namespace.map(str::to_string),
            self.after.max(since),
        ))
    }
}

/// The API objects' store. Synchronous: implementations are fast (local
/// transactions) or do their own waiting; async callers use
/// `spawn_blocking` for writes that fsync.
pub trait Datastore: Send + Sync + std::fmt::Debug + 'static {
    fn get(&self, key: &Key) -> Result<Value, StoreError>;

    /// Every object of a resource (in one namespace, or all), sorted by
    /// namespace and name, with the store's current resourceVersion.
    fn list(
        &self,
        resource: Resource,
        namespace: Option<&str>,
    ) -> Result<(Vec<Value>, u64), StoreError>;

    /// Fails with `AlreadyExists`. Returns the object as stored.
    fn create(&self, key: &Key, object: Value) -> Result<Value, StoreError>;

    /// Replaces an existing object; with `expected`, only if its
    /// resourceVersion is still that (else `Conflict`).
    fn update(&self, key: &Key, object: Value, expected: Option<u64>) -> Result<Value, StoreError>;

    /// Removes an object; returns its last state.
    fn delete(&self, key: &Key, expected: Option<u64>) -> Result<Value, StoreError>;

    /// Changes after `since` (None: from now), for one resource in one
    /// namespace or all.
    fn watch(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStream, StoreError>;

    /// The current resourceVersion.
    fn revision(&self) -> Result<u64, StoreError>;

    /// One page of a list, for stores that can read a key range (and a
    /// past revision) without reading the whole collection: up to `limit`
    /// objects whose `namespace/name` (or `name`) sorts after `after`, in
    /// key order, read at `revision` (`None`: now; a compacted one is
    /// `Expired`). `Ok(None)` when the store cannot (the caller reads the
    /// whole list).
    fn list_page(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        after: Option<&str>,
        limit: usize,
        revision: Option<u64>,
    ) -> Result<Option<ListPage>, StoreError> {
        let _ = (resource, namespace, after, limit, revision);
        Ok(None)
    }
}

/// A page read by [`Datastore::list_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub items: Vec<Value>,
    /// The revision the page was read at (pass it back for the next page).
    pub revision: u64,
    /// Objects of the range after this page.
    pub remaining: u64,
}

/// Read-modify-write with retries on `Conflict`: `f` gets the current
/// object and returns the new one (or `None` to leave it unchanged).
pub fn update_with<S: Datastore + ?Sized>(
    store: &S,
    key: &Key,
    mut f: impl FnMut(Value) -> Result<Option<Value>, StoreError>,
) -> Result<Value, StoreError> {
    for _ in 0..16 {
        let current = store.get(key)?;
        let rv = resource_version(&current);
        let Some(next) = f(current.clone())? else {
            return Ok(current);
        };
        match store.update(key, next, rv) {
            Err(StoreError::Conflict { .. }) => continue,
            other => return other,
        }
    }
    Err(StoreError::Conflict {
        resource: key.resource,
        name: key.name.clone(),
        current: 0,
    })
}

/// `metadata.resourceVersion` as a number.
pub fn resource_version(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}
