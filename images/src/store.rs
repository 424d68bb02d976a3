//! [`ImageStore`]: names → manifests → blobs → snapshots, on disk under one
//! root directory.
//!
//! ```text
//! <root>/blobs/sha256/<hex>   verified content (blob.rs)
//! <root>/ingest/              blobs being written
//! <root>/snapshots/<n>/fs     one unpacked layer per chain ID (n is short)
//! <root>/mounts/<id>/         per-container upper and work dirs
//! <root>/meta.json            images, snapshots, mounts (metadata.rs)
//! <root>/gc.lock              shared by writers, exclusive for GC
//! ```
//!
//! An image is registered only after its manifest, config and every layer
//! are verified and unpacked, so a failed import or pull leaves nothing
//! referenced (unreferenced blobs are garbage collected).

use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use crate::blob::{BlobError, BlobStore, HashingReader};
use crate::digest::Digest;
use crate::fsutil;
use crate::manifest::ManifestError;
use crate::metadata::{
    ImageRecord, LayerRecord, LockGuard, MetaDb, MetaError, SnapshotRecord, lock_file, now,
};
use crate::unpack::{self, UnpackError, UnpackOptions};

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Blob store failure or verification failure.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// Metadata failure.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A manifest, index or config was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A layer could not be applied.
    #[error("layer {layer}: {source}")]
    Unpack {
        /// The layer blob.
        layer: Digest,
        /// Why.
        source: UnpackError,
    },
    /// A layer's uncompressed content does not match the config's diff ID.
    #[error(
        "layer {layer}: uncompressed content is {actual}, but the image config says {expected}"
    )]
    DiffIdMismatch {
        /// The layer blob.
        layer: Digest,
        /// The diff ID from the config.
        expected: Digest,
        /// The digest of what the blob decompresses to.
        actual: Digest,
    },
    /// Importing an archive failed.
    #[error("import {path}: {reason}")]
    Import {
        /// The archive or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Pulling from a registry failed.
    #[error(transparent)]
    Pull(#[from] crate::pull::PullError),
    /// Mounting or unmounting a rootfs failed.
    #[error(transparent)]
    Mount(#[from] crate::rootfs::MountError),
    /// No image by that name or ID.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// An image ID prefix matches several images.
    #[error("image ID {0:?} is ambiguous")]
    Ambiguous(String),
    /// The image is used by container rootfs mounts.
    #[error("image {image} is in use by container(s) {containers}; remove them first")]
    InUse {
        /// The image.
        image: String,
        /// The containers using it.
        containers: String,
    },
    /// The backend that holds images outside this store (containerd)
    /// failed or returned something unusable.
    #[error("image backend: {op}: {reason}")]
    Backend {
        /// What was being done.
        op: String,
        /// Why it failed.
        reason: String,
    },
    /// Other filesystem failure.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The image store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    pub(crate) root: PathBuf,
    pub(crate) blobs: BlobStore,
    pub(crate) meta: MetaDb,
    pub(crate) same_owner: bool,
}

/// Normalizes a user-supplied reference the way docker and kubelet do
/// (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalize_reference(name: &str) -> Option<String> {
    name.parse::<oci_client::Reference>()
        .ok()
        .map(|r| r.whole())
}

impl ImageStore {
    /// Opens (creating) a store under `root` (normally `<root-dir>/images`).
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        for dir in ["snapshots", "mounts"] {
            let p = root.join(dir);
            std::fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        let blobs = BlobStore::open(root)?;
        Ok(Self {
            root: root.to_owned(),
            blobs,
            meta: MetaDb::new(root),
            same_owner: rustix::process::geteuid().is_root(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Takes the shared side of the GC lock for the duration of a write.
    pub(crate) fn writer_lock(&self) -> Result<LockGuard, ImageError> {
        let p = self.root.join("gc.lock");
        lock_file(&p, false).map_err(io_err("lock", &p))
    }

    pub(crate) fn gc_lock(&self) -> Result<LockGuard, ImageError> {
        let p = self.root.join("gc.lock");
        lock_file(&p, true).map_err(io_err("lock", &p))
    }

    /// Directory of snapshot number `id` (the `fs` dir is the layer's content).
    pub fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// All images, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.meta.read()?.images.into_values().collect())
    }

    /// Finds an image by name (as given or normalized), full digest of its
    /// manifest or config, or an unambiguous image-ID prefix (≥ 4 digits).
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let meta = self.meta.read()?;
        if let Some(r) = meta.images.get(name) {
            return Ok(r.clone());
        }
        if let Some(r) = normalize_reference(name).and_then(|n| meta.images.get(&n)) {
            return Ok(r.clone());
        }
        let id = name.strip_prefix("sha256:").unwrap_or(name);
        if id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&ImageRecord> = meta
                .images
                .values()
                .filter(|r| r.config.hex().starts_with(id) || r.manifest.hex().starts_with(id))
                .collect();
            let first_id = hits.first().map(|r| r.config.clone());
            if hits.iter().all(|r| Some(&r.config) == first_id.as_ref()) {
                if let Some(r) = hits.first() {
                    return Ok((*r).clone());
                }
            } else {
                return Err(ImageError::Ambiguous(name.into()));
            }
        }
        Err(ImageError::NotFound(name.into()))
    }

    /// The image's config (Entrypoint, Cmd, Env, User, …), re-verified
    /// against its digest on every read.
    pub fn image_config(
        &self,
        name: &str,
    ) -> Result<(ImageRecord, oci_spec::image::ImageConfiguration), ImageError> {
        let rec = self.resolve(name)?;
        let bytes = self
            .blobs
            .read_verified(&rec.config, crate::manifest::MAX_CONFIG_SIZE)?;
        let cfg = serde_json::from_slice(&bytes).map_err(|e| {
            ImageError::Manifest(crate::manifest::ManifestError::Malformed {
                what: "config",
                digest: rec.config.to_string(),
                reason: e.to_string(),
            })
        })?;
        Ok((rec, cfg))
    }

    /// Removes an image name. Fails if a container rootfs uses it. Content
    /// is freed by the next garbage collection.
    pub fn remove(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let rec = self.resolve(name)?;
        self.meta.update(|m| {
            let users: Vec<&str> = m
                .mounts
                .iter()
                .filter(|(_, mr)| mr.image == rec.name || mr.manifest == rec.manifest)
                .map(|(id, _)| id.as_str())
                .collect();
            if !users.is_empty() {
                return Err(ImageError::InUse {
                    image: rec.name.clone(),
                    containers: users.join(", "),
                });
            }
            m.images.remove(&rec.name);
            Ok(())
        })?;
        Ok(rec)
    }

    /// Records (or replaces) a named image whose content is all present.
    pub(crate) fn register(&self, rec: ImageRecord) -> Result<(), ImageError> {
        self.meta.update(|m| {
            m.images.insert(rec.name.clone(), rec);
            Ok(())
        })
    }

    /// Unpacks every layer of `layers` that has no snapshot yet, bottom
    /// first; returns the chain IDs. Each layer's uncompressed stream is
    /// checked against its diff ID before the snapshot is committed.
    pub fn ensure_snapshots(
        &self,
        layers: &[LayerRecord],
        on_layer: &mut dyn FnMut(&Digest, bool),
    ) -> Result<Vec<Digest>, ImageError> {
        let diffs: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = crate::digest::chain_ids(&diffs);
        for (i, layer) in layers.iter().enumerate() {
            let parent = i.checked_sub(1).map(|p| &chains[p]);
            let existing = self.meta.read()?.snapshots.get(&chains[i]).map(|s| s.id);
            if let Some(id) = existing
                && self.snapshot_dir(id).join("fs").is_dir()
            {
                on_layer(&layer.digest, false);
                continue;
            }
            self.unpack_layer(layer, &chains[i], parent)?;
            on_layer(&layer.digest, true);
        }
        Ok(chains)
    }

    /// Snapshot `fs` dirs of `chain` and its ancestors, topmost first.
    pub fn snapshot_stack(&self, top: &Digest) -> Result<Vec<PathBuf>, ImageError> {
        let meta = self.meta.read()?;
        let mut out = Vec::new();
        let mut cur = Some(top.clone());
        while let Some(c) = cur {
            let s = meta
                .snapshots
                .get(&c)
                .ok_or_else(|| ImageError::NotFound(format!("snapshot {c}")))?;
            out.push(self.snapshot_dir(s.id).join("fs"));
            cur = s.parent.clone();
        }
        Ok(out)
    }

    fn unpack_layer(
        &self,
        layer: &LayerRecord,
        chain: &Digest,
        parent: Option<&Digest>,
    ) -> Result<(), ImageError> {
        let lowers = match parent {
            Some(p) => self.snapshot_stack(p)?,
            None => Vec::new(),
        };
        let tmp = self
            .root
            .join("snapshots")
            .join(format!("tmp-{}", fsutil::random_suffix()));
        let fs_dir = tmp.join("fs");
        std::fs::create_dir_all(&fs_dir).map_err(io_err("create", &fs_dir))?;
        let result = (|| {
            // The compressed blob was verified when it was stored; here the
            // uncompressed stream is verified against the diff ID, which the
            // (digest-verified) config pins, before the snapshot is committed.
            let path = self.blobs.path(&layer.digest);
            let file = std::fs::File::open(&path).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    ImageError::Blob(BlobError::NotFound(layer.digest.clone()))
                } else {
                    io_err("open", &path)(e)
                }
            })?;
            let unpack_err = |source| ImageError::Unpack {
                layer: layer.digest.clone(),
                source,
            };
            let raw = unpack::decompress(BufReader::with_capacity(256 * 1024, file))
                .map_err(|e| unpack_err(UnpackError::Tar(e.into())))?;
            let hashing = HashingReader::new(raw);
            let opts = UnpackOptions {
                lowers,
                same_owner: self.same_owner,
            };
            let (_stats, hashing) = unpack::unpack(hashing, &fs_dir, &opts).map_err(unpack_err)?;
            let actual = hashing
                .finish()
                .map_err(|e| unpack_err(UnpackError::Tar(e.into())))?;
            if actual != layer.diff_id {
                return Err(ImageError::DiffIdMismatch {
                    layer: layer.digest.clone(),
                    expected: layer.diff_id.clone(),
                    actual,
                });
            }
            self.meta.update(|m| {
                if let Some(s) = m.snapshots.get(chain)
                    && self.snapshot_dir(s.id).join("fs").is_dir()
                {
                    return Ok(()); // committed concurrently; ours is dropped below
                }
                let id = m.next_snapshot_id.max(1);
                let dest = self.snapshot_dir(id);
                fsutil::remove_dir_all_if_exists(&dest).map_err(io_err("clear", &dest))?;
                std::fs::rename(&tmp, &dest).map_err(io_err("commit snapshot", &dest))?;
                fsutil::sync_dir(&self.root.join("snapshots")).map_err(io_err("fsync", &dest))?;
                m.next_snapshot_id = id + 1;
                m.snapshots.insert(
                    chain.clone(),
                    SnapshotRecord {
                        id,
                        parent: parent.cloned(),
                        diff_id: layer.diff_id.clone(),
                        created: now(),
                    },
                );
                Ok(())
            })
        })();
        fsutil::remove_dir_all_if_exists(&tmp).map_err(io_err("remove", &tmp))?;
        result
    }
}
