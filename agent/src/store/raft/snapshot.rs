//! The snapshot format and its file.
//!
//! A snapshot is the whole state machine as one JSON document: the
//! openraft metadata (last included log id, membership, id), the revision
//! counter and every stored object (Secrets as sealed boxes). The current
//! snapshot lives in `<dir>/snapshot.json`, replaced atomically: written to
//! a temporary file, fsynced, renamed, directory fsynced. A crash leaves the
//! old or the new snapshot, never a torn one; a file that does not parse is
//! an error, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cluster::transport::NodeId;

const FILE: &str = "snapshot.json";

/// One stored object in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotObject {
    /// The resource's plural name (its table).
    pub resource: String,
    /// `namespace/name` or `name`.
    pub key: String,
    pub object: Value,
}

/// The state machine at one log index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotData {
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    pub revision: u64,
    pub objects: Vec<SnapshotObject>,
}

/// Snapshot file failures.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl SnapshotData {
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        serde_json::to_vec(self).map_err(|source| SnapshotError::Decode {
            what: "encode".into(),
            source,
        })
    }

    pub fn decode(bytes: &[u8], what: &str) -> Result<SnapshotData, SnapshotError> {
        serde_json::from_slice(bytes).map_err(|source| SnapshotError::Decode {
            what: what.to_string(),
            source,
        })
    }
}

/// The directory holding the current snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn new(dir: &Path) -> SnapshotDir {
        SnapshotDir {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    fn io(&self, path: &Path, source: std::io::Error) -> SnapshotError {
        SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Replaces the current snapshot with `bytes` (crash-atomic).
    pub fn save(&self, bytes: &[u8]) -> Result<(), SnapshotError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        let tmp = self.dir.join(format!("{FILE}.tmp-{}", std::process::id()));
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(&tmp, e))?;
            f.write_all(bytes).map_err(|e| self.io(&tmp, e))?;
            f.sync_all().map_err(|e| self.io(&tmp, e))?;
        }
        let path = self.path();
        std::fs::rename(&tmp, &path).map_err(|e| self.io(&path, e))?;
        let d = std::fs::File::open(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        d.sync_all().map_err(|e| self.io(&self.dir, e))?;
        Ok(())
    }

    /// The current snapshot's bytes and data, if there is one.
    pub fn load(&self) -> Result<Option<(Vec<u8>, SnapshotData)>, SnapshotError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&path, e)),
        };
        let data = SnapshotData::decode(&bytes, &path.display().to_string())?;
        Ok(Some((bytes, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotDir::new(&dir.path().join("snap"));
        assert!(s.load().unwrap().is_none());
        let data = SnapshotData {
            meta: SnapshotMeta::default(),
            revision: 3,
            objects: vec![SnapshotObject {
                resource: "configmaps".into(),
                key: "default/a".into(),
                object: serde_json::json!({"metadata": {"name": "a"}}),
            }],
        };
        s.save(&data.encode().unwrap()).unwrap();
        assert_eq!(s.load().unwrap().unwrap().1, data);
        std::fs::write(s.path(), b"{garbage").unwrap();
        assert!(matches!(s.load(), Err(SnapshotError::Decode { .. })));
    }
}
