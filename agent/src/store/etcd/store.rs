//! [`EtcdStore`]: the `Datastore` methods as etcd transactions.

use std::sync::{Arc, Mutex};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse,
};
use serde_json::Value;

use super::client::{Conn, backend, block_on};
use super::{EtcdConfig, object_key, parse_key, range_prefix};
use crate::api::Resource;
use crate::store::{Datastore, Key, ListPage, StoreError, WatchStream};

/// Objects per range request of a list (all pages read at one revision).
const PAGE: i64 = 1000;

/// The election key a leader's writes are fenced on: they apply only
/// while that key still exists with that create revision (the leader has
/// neither resigned nor lost its lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub rev: i64,
}

impl Fence {
    /// A fence that never holds: every write through it is refused.
    pub fn never() -> Fence {
        Fence {
            key: b"\0herd-no-leader".to_vec(),
            rev: -1,
        }
    }
}

pub(crate) struct Inner {
    pub conn: Conn,
    pub prefix: String,
    pub handle: tokio::runtime::Handle,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }
}

/// The etcd-backed store. Clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    pub(crate) inner: Arc<Inner>,
    fence: Option<Fence>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.conn.endpoints)
            .field("prefix", &self.inner.prefix)
            .field("fence", &self.fence)
            .finish()
    }
}

fn encoding(key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Encoding {
        name: key.to_string(),
        reason: reason.into(),
    }
}

/// The stored object of `kv` with its resourceVersion (`mod_revision`, or
/// `rv` when given: a deletion's revision).
pub(super) fn decode_kv(kv: &KeyValue, rv: Option<i64>) -> Result<Value, StoreError> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let mut v: Value = serde_json::from_slice(kv.value())
        .map_err(|e| encoding(&key, format!("stored value is not JSON: {e}")))?;
    let meta = v
        .as_object_mut()
        .ok_or_else(|| encoding(&key, "stored value is not a JSON object"))?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let meta = meta
        .as_object_mut()
        .ok_or_else(|| encoding(&key, "metadata is not a JSON object"))?;
    let rv = rv.unwrap_or(kv.mod_revision());
    meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    Ok(v)
}

/// The bytes stored for `object` (no resourceVersion: etcd keeps it).
fn encode(key: &Key, object: &Value) -> Result<Vec<u8>, StoreError> {
    let mut o = object.clone();
    let Some(map) = o.as_object_mut() else {
        return Err(encoding(&key.name, "object is not a JSON object"));
    };
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&o).map_err(|e| encoding(&key.name, e.to_string()))
}

fn with_rv(mut object: Value, rv: i64) -> Value {
    if let Some(meta) = object
        .as_object_mut()
        .map(|o| {
            o.entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()))
        })
        .and_then(Value::as_object_mut)
    {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    object
}

fn rev_u64(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn rev_i64(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// The first `Get` response among a transaction's results.
fn first_get(ops: &[TxnOpResponse], index: usize) -> Option<&KeyValue> {
    match ops.get(index) {
        Some(TxnOpResponse::Get(g)) => g.kvs().first(),
        _ => None,
    }
}

enum Write {
    Create,
    Update(Option<u64>),
    Delete(Option<u64>),
}

impl EtcdStore {
    /// Connects to etcd and checks it answers (and is 3.4 or newer) within
    /// the request timeout. The store runs its own small runtime, so it can
    /// be used from any thread.
    pub fn connect(cfg: EtcdConfig) -> Result<EtcdStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("herd-etcd")
            .enable_all()
            .build()
            .map_err(|e| backend(&cfg.endpoints, format!("starting the client runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let c = cfg.clone();
        let tls = cfg.tls();
        let conn = block_on(&handle, async move { Conn::connect(&c).await })??;
        let check = conn.clone();
        let version = block_on(&handle, async move {
            check
                .retry(false, |mut c| async move { c.status().await })
                .await
                .map(|s| s.version().to_string())
        })?
        .map_err(|e| match e {
            StoreError::Backend { path, reason } => StoreError::Backend {
                path,
                reason: format!(
                    "etcd is not reachable: {reason}{}",
                    if tls {
                        " (TLS: check --datastore-cafile, --datastore-certfile and --datastore-keyfile)"
                    } else {
                        ""
                    }
                ),
            },
            other => other,
        })?;
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (3, 4) {
            return Err(backend(
                &cfg.endpoints,
                format!("etcd {version} is not supported (3.4 or newer)"),
            ));
        }
        tracing::info!(endpoints = ?cfg.endpoints, prefix = %cfg.prefix, %version, "connected to etcd");
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                conn,
                prefix: cfg.prefix,
                handle,
                runtime: Mutex::new(Some(runtime)),
            }),
            fence: None,
        })
    }

    /// The same store, whose writes apply only while `fence` holds.
    pub fn fenced(&self, fence: Fence) -> EtcdStore {
        EtcdStore {
            inner: self.inner.clone(),
            fence: Some(fence),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.conn.endpoints
    }

    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        block_on(&self.inner.handle, fut)?
    }

    /// Compacts etcd's history up to `revision` (watches from older
    /// revisions then get `Expired`).
    pub fn compact(&self, revision: u64) -> Result<(), StoreError> {
        let conn = self.inner.conn.clone();
        self.run(async move {
            conn.retry(false, |mut c| async move {
                c.compact(
                    rev_i64(revision),
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await
            })
            .await
            .map(drop)
        })
    }

    /// The raw value of `key` (outside herd's object layout).
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (conn, key) = (self.inner.conn.clone(), key.to_string());
        self.run(async move {
            conn.retry(false, move |mut c| {
                let k = key.clone();
                async move { c.get(k, None).await }
            })
            .await
            .map(|mut r| r.take_kvs().first().map(|kv| kv.value().to_vec()))
        })
    }

    /// Creates `key` with a raw value unless it exists; whether it did.
    pub fn create_raw(&self, key: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key, value, None)]);
        let conn = self.inner.conn.clone();
        self.run(async move {
            conn.retry(true, move |mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await
            .map(|r| r.succeeded())
        })
    }

    /// Puts a raw value (tests and tools; no validation).
    pub fn put_raw(&self, key: &str, value: Vec<u8>) -> Result<u64, StoreError> {
        let (conn, key) = (self.inner.conn.clone(), key.to_string());
        self.run(async move {
            conn.retry(true, move |mut c| {
                let (k, v) = (key.clone(), value.clone());
                async move { c.put(k, v, None).await }
            })
            .await
            .map(|r| rev_u64(r.header().map_or(0, |h| h.revision())))
        })
    }

    /// One write as a transaction: the precondition (and the fence), the
    /// put or delete, and on failure the current object (and the fence key)
    /// to say why.
    fn write(&self, key: &Key, op: Write, object: Option<Value>) -> Result<Value, StoreError> {
        let k = object_key(&self.inner.prefix, key);
        let mut when = vec![match op {
            Write::Create => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
            Write::Update(Some(e)) | Write::Delete(Some(e)) => {
                Compare::mod_revision(k.clone(), CompareOp::Equal, rev_i64(e))
            }
            Write::Update(None) | Write::Delete(None) => {
                Compare::create_revision(k.clone(), CompareOp::Greater, 0)
            }
        }];
        let mut otherwise = vec![TxnOp::get(k.clone(), None)];
        if let Some(f) = &self.fence {
            when.push(Compare::create_revision(
                f.key.clone(),
                CompareOp::Equal,
                f.rev,
            ));
            otherwise.push(TxnOp::get(f.key.clone(), None));
        }
        let then = match (&op, &object) {
            (Write::Delete(_), _) => TxnOp::delete(k, Some(DeleteOptions::new().with_prev_key())),
            (_, Some(o)) => TxnOp::put(k, encode(key, o)?, None),
            (_, None) => return Err(encoding(&key.name, "no object to write")),
        };
        let txn = Txn::new()
            .when(when)
            .and_then(vec![then])
            .or_else(otherwise);
        let conn = self.inner.conn.clone();
        let resp = self.run(async move {
            conn.retry(true, move |mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await
        })?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let ops = resp.op_responses();
        if resp.succeeded() {
            return match (op, object) {
                (Write::Delete(_), _) => match ops.first() {
                    Some(TxnOpResponse::Delete(d)) => match d.prev_kvs().first() {
                        Some(kv) => decode_kv(kv, Some(rev)),
                        None => Err(self.not_found(key)),
                    },
                    _ => Err(self.not_found(key)),
                },
                (_, Some(o)) => Ok(with_rv(o, rev)),
                (_, None) => Err(encoding(&key.name, "no object to write")),
            };
        }
        if let Some(f) = &self.fence {
            let holder = first_get(&ops, 1);
            if holder.is_none_or(|kv| kv.create_revision() != f.rev) {
                return Err(StoreError::Fenced {
                    reason: format!(
                        "this node's leadership (election key {}) has ended",
                        String::from_utf8_lossy(&f.key)
                    ),
                });
            }
        }
        let current = first_get(&ops, 0);
        Err(match (op, current) {
            (Write::Create, _) => StoreError::AlreadyExists {
                resource: key.resource,
                name: key.name.clone(),
            },
            (_, None) => self.not_found(key),
            (_, Some(kv)) => StoreError::Conflict {
                resource: key.resource,
                name: key.name.clone(),
                current: rev_u64(kv.mod_revision()),
            },
        })
    }

    fn not_found(&self, key: &Key) -> StoreError {
        StoreError::NotFound {
            resource: key.resource,
            name: key.name.clone(),
        }
    }

    /// The current revision of etcd.
    async fn current(conn: &Conn) -> Result<i64, StoreError> {
        conn.retry(false, |mut c| async move {
            c.get("\0", Some(GetOptions::new().with_count_only())).await
        })
        .await
        .map(|r| r.header().map_or(0, |h| h.revision()))
    }

    /// Every object of the range, read page by page at one revision.
    async fn range(conn: Conn, prefix: String) -> Result<(Vec<KeyValue>, i64), StoreError> {
        'again: loop {
            let mut out = Vec::new();
            let mut from = prefix.clone().into_bytes();
            let end = {
                let mut e = prefix.clone().into_bytes();
                if let Some(last) = e.last_mut() {
                    *last += 1;
                }
                e
            };
            let mut at = 0i64;
            loop {
                let (f, e) = (from.clone(), end.clone());
                let res = conn
                    .retry(false, move |mut c| {
                        let (f, e) = (f.clone(), e.clone());
                        async move {
                            let mut o = GetOptions::new().with_range(e).with_limit(PAGE);
                            if at > 0 {
                                o = o.with_revision(at);
                            }
                            c.get(f, Some(o)).await
                        }
                    })
                    .await;
                let mut r = match res {
                    Ok(r) => r,
                    // The first page's revision was compacted meanwhile.
                    Err(StoreError::Expired { .. }) if at > 0 => {
                        continue 'again;
                    }
                    Err(e) => return Err(e),
                };
                if at == 0 {
                    at = r.header().map_or(0, |h| h.revision());
                }
                let more = r.more();
                let kvs = r.take_kvs();
                if let Some(last) = kvs.last() {
                    from = last.key().to_vec();
                    from.push(0);
                }
                out.extend(kvs);
                if !more {
                    return Ok((out, at));
                }
            }
        }
    }
}

impl Datastore for EtcdStore {
    fn get(&self, key: &Key) -> Result<Value, StoreError> {
        let k = object_key(&self.inner.prefix, key);
        let conn = self.inner.conn.clone();
        let mut resp = self.run(async move {
            conn.retry(false, move |mut c| {
                let k = k.clone();
                async move { c.get(k, None).await }
            })
            .await
        })?;
        match resp.take_kvs().first() {
            Some(kv) => decode_kv(kv, None),
            None => Err(self.not_found(key)),
        }
    }

    fn list(
        &self,
        resource: Resource,
        namespace: Option<&str>,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        let prefix = range_prefix(&self.inner.prefix, resource, namespace);
        let (conn, p) = (self.inner.conn.clone(), prefix.clone());
        let (kvs, rev) = self.run(async move { EtcdStore::range(conn, p).await })?;
        let mut items = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            // Keys of another shape under the range are not herd's objects.
            let Some(key) = parse_key(&self.inner.prefix, kv.key()) else {
                continue;
            };
            if key.resource != resource {
                continue;
            }
            items.push((key, decode_kv(kv, None)?));
        }
        items.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
        Ok((items.into_iter().map(|(_, v)| v).collect(), rev_u64(rev)))
    }

    fn create(&self, key: &Key, object: Value) -> Result<Value, StoreError> {
        self.write(key, Write::Create, Some(object))
    }

    fn update(&self, key: &Key, object: Value, expected: Option<u64>) -> Result<Value, StoreError> {
        self.write(key, Write::Update(expected), Some(object))
    }

    fn delete(&self, key: &Key, expected: Option<u64>) -> Result<Value, StoreError> {
        self.write(key, Write::Delete(expected), None)
    }

    fn watch(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStream, StoreError> {
        let prefix = range_prefix(&self.inner.prefix, resource, namespace);
        let (conn, p) = (self.inner.conn.clone(), prefix.clone());
        let (start, first) = self.run(async move {
            let current = EtcdStore::current(&conn).await?;
            let start = match since.map(rev_i64) {
                None => current + 1,
                Some(since) => {
                    if since < current {
                        // Is history after `since` still there?
                        let r = conn
                            .retry(false, move |mut c| async move {
                                c.get(
                                    "\0",
                                    Some(
                                        GetOptions::new()
                                            .with_count_only()
                                            .with_revision(since + 1),
                                    ),
                                )
                                .await
                            })
                            .await;
                        if let Err(StoreError::Expired { .. }) = &r {
                            return Err(StoreError::Expired {
                                requested: rev_u64(since),
                                oldest: rev_u64(current),
                            });
                        }
                        r?;
                    }
                    since + 1
                }
            };
            let first = super::watch::open(&conn, &p, start).await?;
            Ok((start, first))
        })?;
        Ok(super::watch::start(
            self.inner.clone(),
            prefix,
            resource,
            start,
            first,
        ))
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let conn = self.inner.conn.clone();
        self.run(async move { EtcdStore::current(&conn).await })
            .map(rev_u64)
    }

    /// A range read with a limit, at a past revision when asked: pages are
    /// a consistent snapshot (etcd keeps the history until compaction).
    fn list_page(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        after: Option<&str>,
        limit: usize,
        revision: Option<u64>,
    ) -> Result<Option<ListPage>, StoreError> {
        let range = range_prefix(&self.inner.prefix, resource, namespace);
        let mut end = range.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let from = match after {
            Some(a) => {
                let mut k = format!("{}/{}/{a}", self.inner.prefix, resource.plural()).into_bytes();
                k.push(0);
                // A token from another namespace's list starts at the range.
                if k.as_slice() < range.as_bytes() {
                    range.clone().into_bytes()
                } else {
                    k
                }
            }
            None => range.clone().into_bytes(),
        };
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let conn = self.inner.conn.clone();
        let mut resp = self.run(async move {
            conn.retry(false, move |mut c| {
                let (f, e) = (from.clone(), end.clone());
                async move {
                    let mut o = GetOptions::new().with_range(e).with_limit(limit);
                    if let Some(r) = revision {
                        o = o.with_revision(rev_i64(r));
                    }
                    c.get(f, Some(o)).await
                }
            })
            .await
        })?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let count = resp.count();
        let kvs = resp.take_kvs();
        let remaining = u64::try_from(count - i64::try_from(kvs.len()).unwrap_or(0)).unwrap_or(0);
        let mut items = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            if parse_key(&self.inner.prefix, kv.key()).is_some_and(|k| k.resource == resource) {
                items.push(decode_kv(kv, None)?);
            }
        }
        Ok(Some(ListPage {
            items,
            revision: revision.unwrap_or(rev_u64(rev)),
            remaining,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_have_no_resource_version_and_reads_add_it() {
        let key = Key::namespaced(Resource::ConfigMaps, "default", "a");
        let obj =
            serde_json::json!({"metadata": {"name": "a", "resourceVersion": "9"}, "data": {}});
        let bytes = encode(&key, &obj).unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert!(v["metadata"].get("resourceVersion").is_none());
        assert_eq!(with_rv(v, 12)["metadata"]["resourceVersion"], "12");
        assert!(encode(&key, &serde_json::json!([1])).is_err());
    }
}
