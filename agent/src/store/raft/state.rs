//! openraft's state machine over the [`Replica`], with snapshots.
//!
//! A snapshot is built from one redb read transaction (a consistent view)
//! after making the replica durable, saved as `<dir>/snapshot.json` before
//! openraft may purge the logs it covers. Installing one replaces the
//! replica in one durable transaction and becomes the current snapshot.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError,
};

use super::log::blocking;
use super::replica::{Membership, Replica};
use super::snapshot::{SnapshotData, SnapshotDir};
use super::types::{CommandResult, TypeConfig};
use crate::cluster::transport::NodeId;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn sm_err(what: &str, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::error(format!("{what}: {e}"))).into()
}

fn snap_err(what: &str, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, AnyError::error(format!("{what}: {e}"))).into()
}

/// The state machine handed to openraft; clones share the replica.
#[derive(Debug, Clone)]
pub struct StateMachine {
    replica: Arc<Replica>,
    snapshots: SnapshotDir,
}

impl StateMachine {
    pub fn new(replica: Arc<Replica>, snapshots: SnapshotDir) -> StateMachine {
        StateMachine { replica, snapshots }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (applied, objects) =
            blocking(|| self.replica.export()).map_err(|e| snap_err("export state machine", e))?;
        let snapshot_id = match &applied.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand::random::<u32>()),
            None => format!("none-{}", rand::random::<u32>()),
        };
        let data = SnapshotData {
            meta: SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership,
                snapshot_id,
            },
            revision: applied.revision,
            objects,
        };
        let bytes = data.encode().map_err(|e| snap_err("encode", e))?;
        blocking(|| self.snapshots.save(&bytes)).map_err(|e| snap_err("save", e))?;
        Ok(Snapshot {
            meta: data.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        let a = self
            .replica
            .applied_state()
            .map_err(|e| sm_err("read applied state", e))?;
        Ok((a.last_applied, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        blocking(|| self.replica.apply(entries)).map_err(|e| sm_err("apply", e))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let mut data =
            SnapshotData::decode(&bytes, "received").map_err(|e| snap_err("decode", e))?;
        data.meta = meta.clone();
        blocking(|| self.replica.install(&data)).map_err(|e| snap_err("install", e))?;
        let bytes = data.encode().map_err(|e| snap_err("encode", e))?;
        blocking(|| self.snapshots.save(&bytes)).map_err(|e| snap_err("save", e))?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let loaded = blocking(|| self.snapshots.load()).map_err(|e| snap_err("load", e))?;
        Ok(loaded.map(|(bytes, data)| Snapshot {
            meta: data.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
