//! herd's images in containerd's content store and snapshotter.
//!
//! **Staging.** Archives and registry pulls go first through a herd
//! [`ImageStore`] (the staging store), exactly as on the native backend:
//! [`ImageStore::import`] and [`ImageStore::pull`] parse and verify every
//! manifest, config and blob, and unpack every layer with herd's hardened
//! unpacker (traversal, escapes, sizes, diff IDs), so containerd is only
//! ever handed content herd has already accepted. Each resulting image is
//! then written into containerd ([`write`]: content under a lease,
//! snapshots per chain ID, `gc.ref` labels, the name labelled
//! `herd.io/owner=herd`), after which the staged copy is dropped and the
//! staging store garbage-collected. Cost: while an image is staged it takes
//! about twice its size on disk (blobs and unpacked layers in staging, then
//! the same in containerd); between operations the staging store is empty.
//!
//! The staging store is `<staging_root>/p<pid>`, private to this process
//! (the CLI and the agent may share `staging_root`); directories of dead
//! processes are removed by [`ContainerdImages::new`]. Within the process,
//! concurrent imports and pulls (of any number of `ContainerdImages` on the
//! same root) share it, and it is emptied when the last of them ends, so
//! one operation never collects another's staged blobs. Emptying runs the
//! staging store's garbage collection on the thread that ends the last
//! operation (a blocking thread of the client's runtime for pulls).
//!
//! **Reading** ([`read`]): names, manifests and configs come from
//! containerd (`Images`, `Content.Read`, size-limited and digest-verified);
//! an image whose target is an index is shown for this host's platform.
//! Names are normalized like the native store's
//! ([`herd_images::normalize_reference`]); [`ContainerdImages::resolve`]
//! follows [`ImageStore::resolve`]'s rules (name, normalized name, or an
//! unambiguous ID prefix of at least 4 hex digits).
//!
//! **Removal** deletes the name only; containerd's garbage collector frees
//! content and snapshots no other name or container references. A name a
//! container of the namespace uses (`Container.image`) is refused.
//!
//! Errors are [`ImageError`]s; a missing image is always
//! [`ImageError::NotFound`]; containerd failures are
//! [`ImageError::Backend`].

mod read;
mod write;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::ListContainersRequest;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::images_client::ImagesClient;
use herd_images::manifest::{MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use herd_images::{
    ImageError, ImageRecord, ImageStore, ImportOptions, Platform, ProgressFn, PullEvent,
    PullOptions, normalize_reference,
};

pub use write::{CHUNK, LEASE_TTL, rfc3339};

use super::{Client, ContainerdError, OWNER, OWNER_LABEL, rpc};

/// Maps a failed containerd call to [`ImageError::Backend`].
pub fn backend(op: impl Into<String>) -> impl FnOnce(ContainerdError) -> ImageError {
    let op = op.into();
    move |e| ImageError::Backend {
        op,
        reason: e.to_string(),
    }
}

/// Whether `name` can be an image-ID prefix (≥ 4 hex digits, optionally
/// after `sha256:`), as [`ImageStore::resolve`] accepts.
fn is_id_prefix(name: &str) -> bool {
    let id = name.strip_prefix("sha256:").unwrap_or(name);
    id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The image whose config (image ID) or manifest digest starts with the
/// hex of `name`: several names of one image ID are one match; different
/// IDs are [`ImageError::Ambiguous`].
fn by_id(records: Vec<ImageRecord>, name: &str) -> Result<ImageRecord, ImageError> {
    let id = name.strip_prefix("sha256:").unwrap_or(name);
    let hits: Vec<ImageRecord> = records
        .into_iter()
        .filter(|r| r.config.hex().starts_with(id) || r.manifest.hex().starts_with(id))
        .collect();
    match hits.first() {
        None => Err(ImageError::NotFound(name.into())),
        Some(first) if hits.iter().all(|r| r.config == first.config) => Ok(first.clone()),
        Some(_) => Err(ImageError::Ambiguous(name.into())),
    }
}

/// herd's images in containerd's namespace.
#[derive(Debug, Clone)]
pub struct ContainerdImages {
    client: Client,
    staging: ImageStore,
    platform: Platform,
}

/// Operations using each staging store of this process (every
/// [`ContainerdImages`] on the same root shares the count).
static STAGING_USERS: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

fn staging_users() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, usize>> {
    STAGING_USERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// One operation's use of the staging store; the last one to end empties it.
struct StagingUse {
    images: ContainerdImages,
}

impl Drop for StagingUse {
    fn drop(&mut self) {
        let mut users = staging_users();
        let root = self.images.staging.root().to_path_buf();
        let n = users.entry(root.clone()).or_insert(1);
        *n = n.saturating_sub(1);
        if *n == 0 {
            users.remove(&root);
            if let Err(e) = self.images.clear_staging() {
                tracing::warn!(error = %e, "emptying the containerd staging store");
            }
        }
    }
}

/// Removes `<root>/p<pid>` directories whose process is gone.
fn remove_dead_staging(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix('p'))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl ContainerdImages {
    /// `staging_root`: where this process's staging store (a herd image
    /// store used to read and verify archives and registry blobs before
    /// they are written into containerd) lives.
    pub fn new(client: Client, staging_root: &Path) -> Result<Self, ImageError> {
        std::fs::create_dir_all(staging_root).map_err(|e| ImageError::Io {
            op: "create staging root",
            path: staging_root.to_owned(),
            source: e,
        })?;
        remove_dead_staging(staging_root);
        let images = ContainerdImages {
            client,
            staging: ImageStore::open(&Self::staging_dir(staging_root))?,
            platform: Platform::host(),
        };
        // Leftovers of a crash; not while another instance is mid-operation.
        let users = staging_users();
        if !users.contains_key(images.staging.root()) {
            images.clear_staging()?;
        }
        drop(users);
        Ok(images)
    }

    /// This process's staging store under `staging_root`.
    pub fn staging_dir(staging_root: &Path) -> PathBuf {
        staging_root.join(format!("p{}", std::process::id()))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The staging store (empty between operations).
    pub fn staging(&self) -> &ImageStore {
        &self.staging
    }

    fn clear_staging(&self) -> Result<(), ImageError> {
        for rec in self.staging.list()? {
            match self.staging.remove(&rec.name) {
                Ok(_) | Err(ImageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.staging.collect_garbage()?;
        Ok(())
    }

    fn stage(&self) -> StagingUse {
        *staging_users()
            .entry(self.staging.root().to_path_buf())
            .or_insert(0) += 1;
        StagingUse {
            images: self.clone(),
        }
    }

    /// Runs `fut` on the client's runtime within `timeout` (the configured
    /// call timeout when `None`).
    fn run<T: Send + 'static>(
        &self,
        op: &str,
        timeout: Option<Duration>,
        fut: impl Future<Output = Result<T, ImageError>> + Send + 'static,
    ) -> Result<T, ImageError> {
        let timeout = timeout.unwrap_or(self.client.config().timeout);
        self.client
            .call_within(op, timeout, async move { Ok(fut.await) })
            .map_err(backend(op))?
    }

    /// Time allowed to move `bytes` of layers into containerd and unpack
    /// them: the call timeout plus 1 s per 2 MiB.
    fn transfer_timeout(&self, bytes: u64) -> Duration {
        self.client.config().timeout * 2 + Duration::from_secs(bytes / (2 << 20))
    }

    /// Imports every image of the archive or OCI layout at `path` (see
    /// [`ImageStore::import`] for formats and naming).
    pub fn import(
        &self,
        path: &Path,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let _use = self.stage();
        let staged = self.staging.import(path, opts)?;
        staged.into_iter().map(|rec| self.commit(rec)).collect()
    }

    /// Writes one staged image into containerd; returns its record as
    /// containerd now holds it.
    fn commit(&self, rec: ImageRecord) -> Result<ImageRecord, ImageError> {
        let blobs = self.staging.blobs();
        let staged = write::StagedImage {
            manifest: blobs.read_verified(&rec.manifest, MAX_MANIFEST_SIZE)?,
            config: blobs.read_verified(&rec.config, MAX_CONFIG_SIZE)?,
            layer_files: rec.layers.iter().map(|l| blobs.path(&l.digest)).collect(),
            rec: rec.clone(),
        };
        let c = self.client.clone();
        self.run(
            "write image",
            Some(self.transfer_timeout(rec.size())),
            write::write_image(c, staged),
        )?;
        Ok(ImageRecord { index: None, ..rec })
    }

    /// Pulls `reference` (through the staging store, with herd's registry
    /// client and checks) into containerd. Nothing is transferred when
    /// containerd already holds the manifest the registry names under
    /// this name.
    pub async fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
        progress: ProgressFn,
    ) -> Result<ImageRecord, ImageError> {
        let existing = match normalize_reference(reference) {
            Some(name) => {
                let (c, platform) = (self.client.clone(), opts.platform.clone());
                self.client
                    .handle()
                    .spawn(async move {
                        match read::get_image(&c, &name).await {
                            Ok(Some(img)) => read::record_of(&c, &img, &platform).await.ok(),
                            _ => None,
                        }
                    })
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        let guard = self.stage();
        let up_to_date = Arc::new(tokio::sync::Notify::new());
        let known = existing.as_ref().map(|r| r.manifest.clone());
        let notify = up_to_date.clone();
        let forward: ProgressFn = Arc::new(move |ev: PullEvent| {
            if let PullEvent::Resolved { manifest, .. } = &ev
                && Some(manifest) == known.as_ref()
            {
                notify.notify_one();
            }
            progress(ev);
        });
        // Dropping the staging pull right after it resolved the manifest is
        // clean: no blob has been requested yet, and anything partial is
        // collected with the staging store.
        let staged = tokio::select! {
            r = self.staging.pull(reference, opts, forward) => Some(r),
            () = up_to_date.notified() => None,
        };
        let this = self.clone();
        self.client
            .handle()
            .spawn_blocking(move || {
                let _use = guard;
                match (staged, existing) {
                    (Some(r), _) => this.commit(r?),
                    (None, Some(rec)) => Ok(rec),
                    (None, None) => Err(ImageError::Backend {
                        op: "pull".into(),
                        reason: "pull stopped without a result".into(),
                    }),
                }
            })
            .await
            .map_err(|e| ImageError::Backend {
                op: "pull".into(),
                reason: e.to_string(),
            })?
    }

    /// Every image in the namespace that runs on this host, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let (c, platform) = (self.client.clone(), self.platform.clone());
        self.run("list images", None, async move {
            read::records(&c, &platform).await
        })
    }

    /// Finds an image by name (as given or normalized), by full manifest or
    /// config digest, or by an unambiguous image-ID prefix (≥ 4 hex digits).
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let (c, platform, name) = (self.client.clone(), self.platform.clone(), name.to_string());
        self.run("resolve image", None, async move {
            let mut candidates = vec![name.clone()];
            candidates.extend(normalize_reference(&name).filter(|n| *n != name));
            for n in &candidates {
                if let Some(img) = read::get_image(&c, n).await? {
                    return read::record_of(&c, &img, &platform).await;
                }
            }
            if is_id_prefix(&name) {
                return by_id(read::records(&c, &platform).await?, &name);
            }
            Err(ImageError::NotFound(name))
        })
    }

    /// The image's config (Entrypoint, Cmd, Env, User, …), read from
    /// containerd and verified against its digest on every call.
    pub fn image_config(
        &self,
        name: &str,
    ) -> Result<(ImageRecord, oci_spec::image::ImageConfiguration), ImageError> {
        let rec = self.resolve(name)?;
        let (c, digest) = (self.client.clone(), rec.config.clone());
        let bytes = self.run("read config", None, async move {
            read::read_blob(&c, &digest, MAX_CONFIG_SIZE).await
        })?;
        let cfg = serde_json::from_slice(&bytes).map_err(|e| {
            ImageError::Manifest(herd_images::manifest::ManifestError::Malformed {
                what: "config",
                digest: rec.config.to_string(),
                reason: e.to_string(),
            })
        })?;
        Ok((rec, cfg))
    }

    /// Removes an image name, refused while a container of the namespace
    /// uses it. containerd's garbage collector frees what nothing else
    /// references.
    pub fn remove(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let rec = self.resolve(name)?;
        let (c, image) = (self.client.clone(), rec.name.clone());
        self.run("remove image", None, async move {
            let users: Vec<String> = ContainersClient::new(c.channel())
                .list(c.request(ListContainersRequest { filters: vec![] }))
                .await
                .map_err(|s| backend("list containers")(rpc("list containers")(s)))?
                .into_inner()
                .containers
                .into_iter()
                .filter(|ct| ct.image == image)
                .map(|ct| ct.id)
                .collect();
            if !users.is_empty() {
                return Err(ImageError::InUse {
                    image,
                    containers: users.join(", "),
                });
            }
            match ImagesClient::new(c.channel())
                .delete(
                    c.request(containerd_client::services::v1::DeleteImageRequest {
                        name: image.clone(),
                        sync: false,
                        target: None,
                    }),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(s) if s.code() == tonic::Code::NotFound => Err(ImageError::NotFound(image)),
                Err(s) => Err(backend("delete image")(rpc(format!(
                    "delete image {image}"
                ))(s))),
            }
        })?;
        Ok(rec)
    }

    /// The name of the committed snapshot that holds the image's unpacked
    /// layers (the chain ID of its diff IDs), unpacking again whatever
    /// containerd's garbage collector removed. Empty for an image without
    /// layers.
    pub fn ensure_unpacked(&self, rec: &ImageRecord) -> Result<String, ImageError> {
        let (c, layers) = (self.client.clone(), rec.layers.clone());
        let bytes = rec.layers.iter().map(|l| l.size).sum();
        self.run(
            "unpack image",
            Some(self.transfer_timeout(bytes)),
            async move {
                let lease = write::Lease::create(&c).await?;
                let r = write::unpack(&c, &lease.id, &layers).await;
                lease.release(&c).await;
                Ok(r?.unwrap_or_default())
            },
        )
    }

    /// The labels containerd holds for an image name (`herd.io/owner`, …).
    pub fn labels(
        &self,
        name: &str,
    ) -> Result<std::collections::HashMap<String, String>, ImageError> {
        let (c, n) = (self.client.clone(), name.to_string());
        self.run("get image", None, async move {
            read::get_image(&c, &n)
                .await?
                .map(|i| i.labels)
                .ok_or(ImageError::NotFound(n))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use herd_images::Digest;

    fn rec(name: &str, config: &str, manifest: &str) -> ImageRecord {
        let d = |h: &str| Digest::from_hex(&format!("{h:0<64}")).unwrap();
        ImageRecord {
            name: name.into(),
            manifest: d(manifest),
            manifest_size: 1,
            manifest_media_type: herd_images::manifest::OCI_MANIFEST.into(),
            index: None,
            config: d(config),
            config_size: 1,
            layers: vec![],
            platform: "linux/amd64".into(),
            created: 0,
            last_used: 0,
        }
    }

    #[test]
    fn id_prefixes_follow_the_native_rules() {
        assert!(is_id_prefix("abcd"));
        assert!(is_id_prefix("sha256:abcd12"));
        assert!(!is_id_prefix("abc"));
        assert!(!is_id_prefix("busybox"));
        let recs = vec![
            rec("a:1", "abcd1", "1111"),
            rec("a:2", "abcd1", "2222"),
            rec("b:1", "abce2", "3333"),
        ];
        assert_eq!(by_id(recs.clone(), "abcd").unwrap().config, recs[0].config);
        assert_eq!(by_id(recs.clone(), "sha256:abce").unwrap().name, "b:1");
        assert_eq!(by_id(recs.clone(), "3333").unwrap().name, "b:1");
        assert!(matches!(
            by_id(recs.clone(), "abc0"),
            Err(ImageError::NotFound(_))
        ));
        assert!(matches!(
            by_id(
                vec![
                    recs[0].clone(),
                    recs[2].clone(),
                    rec("c:1", "ffff", "abcd9")
                ],
                "abcd"
            ),
            Err(ImageError::Ambiguous(_))
        ));
    }
}
