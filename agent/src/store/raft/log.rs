//! The Raft log, vote and committed index in one redb file (`raft-log.redb`).
//!
//! Guarantees:
//! - `append` commits the entries with `Durability::Immediate` and only
//!   then reports them flushed to openraft: an entry counted towards a
//!   quorum is on this node's disk.
//! - The vote is written durably before `save_vote` returns; the
//!   committed index is not fsynced by itself (the next append carries it).
//! - Each call is one redb transaction: a crash leaves either all of it or
//!   none of it (redb's copy-on-write commit), so the log never has a hole.
//! - Garbage in the file (an entry that does not decode) is a storage
//!   error that stops this Raft node, never a panic.

// `StorageError` is openraft's (large) error type, fixed by its traits.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::TypeConfig;
use crate::cluster::transport::NodeId;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn read_err(what: &str, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::error(format!("raft log {what}: {e}"))).into()
}

fn write_err(what: &str, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::error(format!("raft log {what}: {e}"))).into()
}

/// Runs blocking redb work without stalling the runtime's other tasks on
/// a multi-threaded runtime (the store's own); inline elsewhere.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The log store; clones share the database (the clone is the reader
/// openraft's replication tasks use).
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl LogStore {
    /// Opens or creates `path`.
    pub fn open(path: &Path) -> Result<LogStore, redb::Error> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(LOG)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        Ok(LogStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        let txn = self.db.begin_read().map_err(|e| read_err(key, e))?;
        let t = txn.open_table(META).map_err(|e| read_err(key, e))?;
        match t.get(key).map_err(|e| read_err(key, e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| read_err(key, e)),
        }
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| write_err(key, e))?;
        blocking(|| {
            let mut txn = self.db.begin_write().map_err(|e| write_err(key, e))?;
            txn.set_durability(durability)
                .map_err(|e| write_err(key, e))?;
            {
                let mut t = txn.open_table(META).map_err(|e| write_err(key, e))?;
                t.insert(key, bytes.as_slice())
                    .map_err(|e| write_err(key, e))?;
            }
            txn.commit().map_err(|e| write_err(key, e))
        })
    }

    fn entries(&self, start: Bound<u64>, end: Bound<u64>) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let txn = self.db.begin_read().map_err(|e| read_err("entries", e))?;
        let t = txn.open_table(LOG).map_err(|e| read_err("entries", e))?;
        let mut out = Vec::new();
        for item in t
            .range::<u64>((start, end))
            .map_err(|e| read_err("entries", e))?
        {
            let (k, v) = item.map_err(|e| read_err("entries", e))?;
            let entry: Entry<TypeConfig> = serde_json::from_slice(v.value())
                .map_err(|e| read_err(&format!("entry {}", k.value()), e))?;
            out.push(entry);
        }
        Ok(out)
    }

    /// Removes entries in `range` (truncate: a suffix; purge: a prefix),
    /// optionally recording the last purged id, in one transaction.
    fn remove(
        &self,
        range: (Bound<u64>, Bound<u64>),
        purged: Option<&LogId<NodeId>>,
    ) -> StorageResult<()> {
        let purged = purged
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| write_err(PURGED, e))?;
        blocking(|| {
            let txn = self.db.begin_write().map_err(|e| write_err("remove", e))?;
            {
                let mut t = txn.open_table(LOG).map_err(|e| write_err("remove", e))?;
                t.retain_in(range, |_, _| false)
                    .map_err(|e| write_err("remove", e))?;
                if let Some(p) = &purged {
                    let mut m = txn.open_table(META).map_err(|e| write_err(PURGED, e))?;
                    m.insert(PURGED, p.as_slice())
                        .map_err(|e| write_err(PURGED, e))?;
                }
            }
            txn.commit().map_err(|e| write_err("remove", e))
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + openraft::OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        self.entries(range.start_bound().cloned(), range.end_bound().cloned())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta(PURGED)?;
        let last = {
            let txn = self.db.begin_read().map_err(|e| read_err("state", e))?;
            let t = txn.open_table(LOG).map_err(|e| read_err("state", e))?;
            match t.last().map_err(|e| read_err("state", e))? {
                None => None,
                Some((_, v)) => {
                    let e: Entry<TypeConfig> =
                        serde_json::from_slice(v.value()).map_err(|e| read_err("last", e))?;
                    Some(e.log_id)
                }
            }
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_meta(VOTE, vote, Durability::Immediate)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not fsynced on its own (the next append makes it durable): a lost
        // committed index only means re-applying less at startup and
        // learning the rest from the leader.
        self.put_meta(COMMITTED, &committed, Durability::None)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut encoded = Vec::new();
        for e in entries {
            let bytes = serde_json::to_vec(&e).map_err(|err| write_err("append", err))?;
            encoded.push((e.log_id.index, bytes));
        }
        let res = blocking(|| -> StorageResult<()> {
            let txn = self.db.begin_write().map_err(|e| write_err("append", e))?;
            {
                let mut t = txn.open_table(LOG).map_err(|e| write_err("append", e))?;
                for (i, b) in &encoded {
                    t.insert(*i, b.as_slice())
                        .map_err(|e| write_err("append", e))?;
                }
            }
            txn.commit().map_err(|e| write_err("append", e))
        });
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.remove((Bound::Included(log_id.index), Bound::Unbounded), None)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.remove(
            (Bound::Unbounded, Bound::Included(log_id.index)),
            Some(&log_id),
        )
    }
}
