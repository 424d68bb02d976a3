//! The image store's metadata: images, snapshots and rootfs mounts.
//!
//! One JSON document (`meta.json`), small (one record per image, snapshot
//! and mount), rewritten atomically (temp file, fsync, rename, fsync dir)
//! under an exclusive `flock`, so concurrent `herd` processes serialise and
//! a crash leaves either the old or the new document. A document that fails
//! to parse is an error, never silently replaced.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil;

/// Errors reading or writing the metadata document.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Filesystem failure.
    #[error("image metadata {path}: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The document is not valid; it is left untouched for inspection.
    #[error("image metadata {path} is corrupt ({source}); refusing to overwrite it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the (possibly compressed) blob.
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Media type as the manifest gives it.
    pub media_type: String,
    /// Digest of the uncompressed tar (from the config's rootfs).
    pub diff_id: Digest,
}

/// A named image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// Normalized reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Manifest digest.
    pub manifest: Digest,
    /// Manifest size.
    pub manifest_size: u64,
    /// Manifest media type.
    pub manifest_media_type: String,
    /// The index (manifest list) the manifest was chosen from, kept so the
    /// image can be re-exported or re-resolved.
    pub index: Option<Digest>,
    /// Config digest (the image ID).
    pub config: Digest,
    /// Config size.
    pub config_size: u64,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Unix seconds when the image was stored.
    pub created: u64,
    /// Unix seconds of last use by a rootfs (for LRU garbage collection).
    pub last_used: u64,
}

impl ImageRecord {
    /// Sum of manifest, config and layer sizes.
    pub fn size(&self) -> u64 {
        self.manifest_size + self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Every blob this image keeps alive.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest, &self.config]
            .into_iter()
            .chain(self.index.iter())
            .chain(self.layers.iter().map(|l| &l.digest))
    }

    /// Chain IDs of its layer stack, bottom first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        let diffs: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        crate::digest::chain_ids(&diffs)
    }
}

/// An unpacked layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Directory number under `snapshots/` (short, to keep mount options short).
    pub id: u64,
    /// Chain ID of the snapshot below, if any.
    pub parent: Option<Digest>,
    /// Diff ID of the layer this snapshot holds.
    pub diff_id: Digest,
    /// Unix seconds of creation.
    pub created: u64,
}

/// A mounted container rootfs: a lease on an image and its snapshots.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountRecord {
    /// Image name it was made from.
    pub image: String,
    /// The image's manifest digest.
    pub manifest: Digest,
    /// Chain ID of the top snapshot.
    pub top: Option<Digest>,
    /// Where the overlay is mounted.
    pub target: PathBuf,
    /// Unix seconds.
    pub created: u64,
}

/// The whole document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Format version.
    pub version: u32,
    /// Images by name.
    pub images: BTreeMap<String, ImageRecord>,
    /// Snapshots by chain ID.
    pub snapshots: BTreeMap<Digest, SnapshotRecord>,
    /// Next snapshot directory number.
    pub next_snapshot_id: u64,
    /// Rootfs mounts by container ID.
    pub mounts: BTreeMap<String, MountRecord>,
}

/// Handle to the metadata document.
#[derive(Debug, Clone)]
pub struct MetaDb {
    path: PathBuf,
    lock: PathBuf,
}

/// Holds an flock until dropped (the kernel releases it with the file).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// Takes an flock on `path` (created if missing).
pub fn lock_file(path: &Path, exclusive: bool) -> io::Result<LockGuard> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let op = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    flock(&file, op)?;
    Ok(LockGuard { _file: file })
}

impl MetaDb {
    /// The document lives at `dir/meta.json`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("meta.json"),
            lock: dir.join("meta.lock"),
        }
    }

    fn err(&self, op: &'static str) -> impl FnOnce(io::Error) -> MetaError + '_ {
        move |source| MetaError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }

    fn load(&self) -> Result<Meta, MetaError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| MetaError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Meta {
                version: 1,
                ..Meta::default()
            }),
            Err(e) => Err(self.err("read")(e)),
        }
    }

    /// A consistent snapshot of the document.
    pub fn read(&self) -> Result<Meta, MetaError> {
        let _g = lock_file(&self.lock, false).map_err(self.err("lock"))?;
        self.load()
    }

    /// Read-modify-write under the exclusive lock; `f`'s error aborts
    /// without writing.
    pub fn update<T, E: From<MetaError>>(
        &self,
        f: impl FnOnce(&mut Meta) -> Result<T, E>,
    ) -> Result<T, E> {
        let _g = lock_file(&self.lock, true).map_err(self.err("lock"))?;
        let mut meta = self.load()?;
        let out = f(&mut meta)?;
        let bytes = serde_json::to_vec_pretty(&meta)
            .map_err(|e| self.err("encode")(io::Error::other(e)))?;
        fsutil::write_atomic(&self.path, &bytes).map_err(self.err("write"))?;
        Ok(out)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_is_durable_and_corruption_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::new(dir.path());
        db.update(|m| {
            m.next_snapshot_id = 7;
            Ok::<_, MetaError>(())
        })
        .unwrap();
        assert_eq!(db.read().unwrap().next_snapshot_id, 7);
        // a failing update writes nothing
        let r: Result<(), MetaError> = db.update(|m| {
            m.next_snapshot_id = 9;
            Err(MetaError::Io {
                op: "x",
                path: PathBuf::new(),
                source: io::Error::other("boom"),
            })
        });
        assert!(r.is_err());
        assert_eq!(db.read().unwrap().next_snapshot_id, 7);
        std::fs::write(dir.path().join("meta.json"), b"{garbage").unwrap();
        assert!(matches!(db.read(), Err(MetaError::Corrupt { .. })));
        let r = db.update(|_| Ok::<_, MetaError>(()));
        assert!(r.is_err());
        assert_eq!(
            std::fs::read(dir.path().join("meta.json")).unwrap(),
            b"{garbage"
        );
    }
}
