//! Node metadata and its dissemination.
//!
//! Metadata travels beside membership, not inside the foca identity (which
//! rides in every probe): a [`MetaRecord`] carries the node name, the boot
//! number of the identity it belongs to and a version counter. Newer
//! records (higher `(boot, version)`) replace older ones; equal or older
//! ones are ignored, so a record is re-broadcast only while it is news.
//! Updates spread as foca custom broadcasts ([`MetaHandler`]); a member
//! that learns of a peer whose record it lacks asks that peer directly (see
//! `core`), so joiners learn everyone's metadata without a cluster-wide
//! re-broadcast.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// Largest encoded [`MetaRecord`]: it must fit in one gossip packet beside
/// foca's header.
pub const MAX_META_BYTES: usize = 1024;

/// A node taint, as in Kubernetes (`NoSchedule`, `PreferNoSchedule`,
/// `NoExecute`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// What a node offers to the scheduler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u32,
}

/// Metadata every node gossips about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub name: String,
    /// Node-to-node gRPC (Raft, join) address, `host:port`.
    pub rpc_addr: String,
    /// Kubernetes API address, `host:port`.
    pub api_addr: String,
    /// Pod CIDR, empty until one is assigned.
    pub pod_cidr: String,
    pub capacity: Capacity,
    pub labels: Vec<(String, String)>,
    pub taints: Vec<Taint>,
    pub version: String,
}

/// Why metadata could not be encoded or accepted.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata record does not decode: {0}")]
    Decode(postcard::Error),
    #[error("metadata record does not encode: {0}")]
    Encode(postcard::Error),
    #[error("metadata of node {name} is {len} bytes, over the limit of {MAX_META_BYTES}")]
    TooLarge { name: String, len: usize },
    #[error("metadata record names node {record} but carries metadata for {meta}")]
    NameMismatch { record: String, meta: String },
}

/// One versioned metadata record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaRecord {
    pub name: String,
    /// The boot number of the identity this record belongs to.
    pub boot: u64,
    /// Incremented by the owner on every change.
    pub version: u64,
    pub meta: NodeMeta,
}

impl MetaRecord {
    /// Encodes the record, refusing records over [`MAX_META_BYTES`].
    pub fn encode(&self) -> Result<Vec<u8>, MetaError> {
        let bytes = postcard::to_allocvec(self).map_err(MetaError::Encode)?;
        if bytes.len() > MAX_META_BYTES {
            return Err(MetaError::TooLarge {
                name: self.name.clone(),
                len: bytes.len(),
            });
        }
        Ok(bytes)
    }

    /// Decodes and validates a record received from the network.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        if bytes.len() > MAX_META_BYTES {
            return Err(MetaError::TooLarge {
                name: String::new(),
                len: bytes.len(),
            });
        }
        let record: Self = postcard::from_bytes(bytes).map_err(MetaError::Decode)?;
        if record.name != record.meta.name {
            return Err(MetaError::NameMismatch {
                record: record.name,
                meta: record.meta.name,
            });
        }
        Ok(record)
    }

    fn order(&self) -> (u64, u64) {
        (self.boot, self.version)
    }
}

/// The latest record known per node name, plus the records that arrived
/// since the owner last drained them.
#[derive(Debug, Default)]
pub struct MetaBook {
    records: HashMap<String, MetaRecord>,
    fresh: Vec<MetaRecord>,
}

impl MetaBook {
    /// Stores `record` if it is newer than what is known; returns whether
    /// it was news.
    pub fn offer(&mut self, record: MetaRecord) -> bool {
        if let Some(known) = self.records.get(&record.name)
            && known.order() >= record.order()
        {
            return false;
        }
        self.fresh.push(record.clone());
        self.records.insert(record.name.clone(), record);
        true
    }

    /// The record known for `name`.
    pub fn get(&self, name: &str) -> Option<&MetaRecord> {
        self.records.get(name)
    }

    /// Records accepted since the last call.
    pub fn take_fresh(&mut self) -> Vec<MetaRecord> {
        std::mem::take(&mut self.fresh)
    }
}

/// A [`MetaBook`] shared between the gossip core and foca's broadcast
/// handler (foca owns the handler and offers no getter for it).
#[derive(Clone, Debug, Default)]
pub struct SharedBook(Arc<Mutex<MetaBook>>);

impl SharedBook {
    /// Locks the book; a poisoned lock still holds consistent data (every
    /// mutation is a single insert), so it is used as is.
    pub fn lock(&self) -> MutexGuard<'_, MetaBook> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Identifies a broadcast record; a newer record of the same node replaces
/// older ones still queued for dissemination.
#[derive(Debug)]
pub struct MetaKey {
    name: String,
    order: (u64, u64),
}

impl foca::Invalidates for MetaKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.name == other.name && self.order >= other.order
    }
}

/// Foca's custom broadcast handler: accepts metadata records that are news.
#[derive(Debug)]
pub struct MetaHandler {
    book: SharedBook,
}

impl MetaHandler {
    pub fn new(book: SharedBook) -> Self {
        Self { book }
    }
}

impl<T> foca::BroadcastHandler<T> for MetaHandler {
    type Key = MetaKey;
    type Error = MetaError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&T>,
    ) -> Result<Option<MetaKey>, MetaError> {
        let record = MetaRecord::decode(data)?;
        let key = MetaKey {
            name: record.name.clone(),
            order: record.order(),
        };
        Ok(self.book.lock().offer(record).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, boot: u64, version: u64) -> MetaRecord {
        MetaRecord {
            name: name.into(),
            boot,
            version,
            meta: NodeMeta {
                name: name.into(),
                pod_cidr: format!("10.42.{version}.0/24"),
                ..NodeMeta::default()
            },
        }
    }

    #[test]
    fn newer_records_win() {
        let mut book = MetaBook::default();
        assert!(book.offer(record("a", 1, 1)));
        assert!(!book.offer(record("a", 1, 1)));
        assert!(!book.offer(record("a", 1, 0)));
        assert!(book.offer(record("a", 1, 2)));
        assert!(
            book.offer(record("a", 2, 0)),
            "a restart wins over versions"
        );
        assert!(!book.offer(record("a", 1, 9)));
        assert_eq!(book.take_fresh().len(), 3);
        assert!(book.take_fresh().is_empty());
        assert_eq!(book.get("a").unwrap().boot, 2);
    }

    #[test]
    fn decode_rejects_garbage_and_mismatch() {
        let good = record("n1", 3, 4);
        let bytes = good.encode().unwrap();
        assert_eq!(MetaRecord::decode(&bytes).unwrap(), good);
        assert!(matches!(
            MetaRecord::decode(&[0xff; 7]),
            Err(MetaError::Decode(_))
        ));
        assert!(matches!(
            MetaRecord::decode(&bytes[..bytes.len() - 1]),
            Err(MetaError::Decode(_))
        ));
        let mut bad = good.clone();
        bad.meta.name = "other".into();
        let bytes = postcard::to_allocvec(&bad).unwrap();
        assert!(matches!(
            MetaRecord::decode(&bytes),
            Err(MetaError::NameMismatch { .. })
        ));
        let mut big = good;
        big.meta.version = "x".repeat(MAX_META_BYTES);
        assert!(matches!(big.encode(), Err(MetaError::TooLarge { .. })));
    }

    #[test]
    fn handler_disseminates_only_news() {
        use foca::BroadcastHandler;
        let book = SharedBook::default();
        let mut h = MetaHandler::new(book.clone());
        let bytes = record("a", 1, 1).encode().unwrap();
        let first = BroadcastHandler::<()>::receive_item(&mut h, &bytes, None).unwrap();
        assert!(first.is_some());
        let again = BroadcastHandler::<()>::receive_item(&mut h, &bytes, None).unwrap();
        assert!(again.is_none());
        assert_eq!(book.lock().take_fresh().len(), 1);
    }
}
