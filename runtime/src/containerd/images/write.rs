//! Writing one verified image into containerd: content, snapshots, labels
//! and the image name, the way containerd's own unpacker leaves them.
//!
//! Everything is written under a lease (`containerd-lease` header on every
//! call, `containerd.io/gc.expire` one hour ahead), so containerd's garbage
//! collector cannot take a blob or snapshot between its write and the
//! moment the image name references it; the lease is deleted at the end,
//! on success or failure (or expires if herd dies). Order: layers (content
//! then snapshot), config (`gc.ref.snapshot.<snapshotter>` → top chain ID),
//! manifest (`gc.ref.content.config`, `gc.ref.content.l.<i>`), image name.
//! Every step is idempotent: existing content and committed snapshots are
//! kept, an existing name is updated.
//!
//! Layers are streamed from the staged blob files in chunks of at most
//! 1 MiB (containerd's gRPC limit is 16 MiB per message); a layer is never
//! held in memory. Each unpack's result is checked: the digest containerd
//! computes of the uncompressed stream must be the config's diff ID.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AddResourceRequest, ApplyRequest, CreateImageRequest, CreateRequest, DeleteRequest, Image,
    Info, InfoRequest, Resource, UpdateImageRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::types::Descriptor;
use futures_util::stream;
use herd_images::metadata::LayerRecord;
use herd_images::{Digest, ImageError, ImageRecord};
use tokio::io::AsyncReadExt;
use tonic::Code;

use super::{OWNER, OWNER_LABEL, backend};
use crate::containerd::{Client, rpc};

/// Largest chunk sent in one `Content.Write` message.
pub const CHUNK: usize = 1 << 20;
/// How long the write lease protects unreferenced objects if herd dies.
pub const LEASE_TTL: Duration = Duration::from_secs(3600);

const UNCOMPRESSED: &str = "containerd.io/uncompressed";
const SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
const GC_EXPIRE: &str = "containerd.io/gc.expire";

static SEQ: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// An image whose blobs sit verified in the staging store.
#[derive(Debug, Clone)]
pub struct StagedImage {
    pub rec: ImageRecord,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    /// The staged layer blob files, in `rec.layers` order.
    pub layer_files: Vec<PathBuf>,
}

/// RFC 3339 (UTC, seconds) of a Unix time, for containerd's labels.
pub fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A containerd lease; [`Lease::release`] deletes it.
pub struct Lease {
    pub id: String,
}

impl Lease {
    pub async fn create(c: &Client) -> Result<Lease, ImageError> {
        let id = unique("herd-write");
        let expire = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + LEASE_TTL.as_secs();
        let labels = HashMap::from([(GC_EXPIRE.to_string(), rfc3339(expire))]);
        LeasesClient::new(c.channel())
            .create(c.request(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| backend("create lease")(rpc("create lease")(s)))?;
        Ok(Lease { id })
    }

    /// Deletes the lease (what it protected is then up to the references
    /// written meanwhile). A failure is logged: the lease expires anyway.
    pub async fn release(self, c: &Client) {
        if let Err(s) = LeasesClient::new(c.channel())
            .delete(c.request(DeleteRequest {
                id: self.id.clone(),
                sync: false,
            }))
            .await
        {
            tracing::warn!(lease = %self.id, error = %s.message(), "containerd: delete lease");
        }
    }
}

/// Puts an object that already exists under the lease, so containerd's
/// collector cannot take it (it may be unreferenced, e.g. just after its
/// image was removed) before the new name references it.
async fn hold(c: &Client, lease: &str, kind: String, id: String) -> Result<(), ImageError> {
    LeasesClient::new(c.channel())
        .add_resource(c.request(AddResourceRequest {
            id: lease.into(),
            resource: Some(Resource {
                id: id.clone(),
                r#type: kind,
            }),
        }))
        .await
        .map_err(|s| backend("lease resource")(rpc(format!("add {id} to lease {lease}"))(s)))?;
    Ok(())
}

/// Writes `img` into containerd and names it; returns the top chain ID.
pub async fn write_image(c: Client, img: StagedImage) -> Result<String, ImageError> {
    let lease = Lease::create(&c).await?;
    let r = write_under(&c, &img, &lease.id).await;
    lease.release(&c).await;
    r
}

async fn write_under(c: &Client, img: &StagedImage, lease: &str) -> Result<String, ImageError> {
    let rec = &img.rec;
    for (layer, file) in rec.layers.iter().zip(&img.layer_files) {
        write_file(c, lease, file, &layer.digest, layer.size).await?;
        set_labels(
            c,
            lease,
            &layer.digest,
            HashMap::from([(UNCOMPRESSED.to_string(), layer.diff_id.to_string())]),
        )
        .await?;
    }
    let top = unpack(c, lease, &rec.layers).await?;
    write_bytes(c, lease, &img.config, &rec.config).await?;
    let snap_label = format!("containerd.io/gc.ref.snapshot.{}", c.snapshotter());
    let mut config_labels = HashMap::new();
    if let Some(top) = &top {
        config_labels.insert(snap_label, top.clone());
    }
    set_labels(c, lease, &rec.config, config_labels).await?;
    write_bytes(c, lease, &img.manifest, &rec.manifest).await?;
    let mut manifest_labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        rec.config.to_string(),
    )]);
    for (i, l) in rec.layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.to_string(),
        );
    }
    set_labels(c, lease, &rec.manifest, manifest_labels).await?;
    name_image(c, lease, rec).await?;
    Ok(top.unwrap_or_default())
}

async fn name_image(c: &Client, lease: &str, rec: &ImageRecord) -> Result<(), ImageError> {
    let image = Image {
        name: rec.name.clone(),
        labels: HashMap::from([(OWNER_LABEL.to_string(), OWNER.to_string())]),
        target: Some(Descriptor {
            media_type: rec.manifest_media_type.clone(),
            digest: rec.manifest.to_string(),
            size: i64::try_from(rec.manifest_size).unwrap_or(i64::MAX),
            annotations: HashMap::new(),
        }),
        created_at: None,
        updated_at: None,
    };
    let mut images = ImagesClient::new(c.channel());
    match images
        .create(c.leased(
            CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            },
            lease,
        ))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => images
            .update(c.leased(
                UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                },
                lease,
            ))
            .await
            .map(|_| ())
            .map_err(|s| backend("update image")(rpc(format!("update image {}", rec.name))(s))),
        Err(s) => Err(backend("create image")(rpc(format!(
            "create image {}",
            rec.name
        ))(s))),
    }
}

/// True when containerd already holds `digest` (in this namespace).
pub async fn has_content(c: &Client, digest: &Digest) -> Result<bool, ImageError> {
    match ContentClient::new(c.channel())
        .info(c.request(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(backend("content info")(rpc(format!(
            "content info {digest}"
        ))(s))),
    }
}

async fn set_labels(
    c: &Client,
    lease: &str,
    digest: &Digest,
    labels: HashMap<String, String>,
) -> Result<(), ImageError> {
    if labels.is_empty() {
        return Ok(());
    }
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    ContentClient::new(c.channel())
        .update(c.leased(
            UpdateRequest {
                info: Some(Info {
                    digest: digest.to_string(),
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            },
            lease,
        ))
        .await
        .map_err(|s| backend("label content")(rpc(format!("label {digest}"))(s)))?;
    Ok(())
}

/// How one write attempt ended.
enum Attempt {
    Done,
    /// Another writer holds the same ref (a concurrent import or pull of
    /// the same blob): containerd answers Unavailable, "ref … locked".
    Locked,
}

/// How long a write waits, in all, for a concurrent writer of the same
/// blob before giving up.
const LOCKED_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Retries `attempt` while another writer holds the blob's ref, as
/// containerd's own clients do; once that writer commits, the next attempt
/// finds the content and only holds it under our lease.
async fn until_unlocked<F, Fut>(digest: &Digest, mut attempt: F) -> Result<(), ImageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Attempt, ImageError>>,
{
    let deadline = std::time::Instant::now() + LOCKED_WAIT;
    loop {
        match attempt().await? {
            Attempt::Done => return Ok(()),
            Attempt::Locked if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Attempt::Locked => {
                return Err(ImageError::Backend {
                    op: format!("write {digest}"),
                    reason: format!("another writer held the blob for over {LOCKED_WAIT:?}"),
                });
            }
        }
    }
}

/// Streams one staged blob file into the content store.
async fn write_file(
    c: &Client,
    lease: &str,
    path: &std::path::Path,
    digest: &Digest,
    size: u64,
) -> Result<(), ImageError> {
    until_unlocked(digest, || write_file_once(c, lease, path, digest, size)).await
}

async fn write_file_once(
    c: &Client,
    lease: &str,
    path: &std::path::Path,
    digest: &Digest,
    size: u64,
) -> Result<Attempt, ImageError> {
    if has_content(c, digest).await? {
        hold(c, lease, "content".into(), digest.to_string()).await?;
        return Ok(Attempt::Done);
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ImageError::Io {
            op: "open staged blob",
            path: path.to_owned(),
            source: e,
        })?;
    let r#ref = format!("herd-{}", digest.hex());
    let total = i64::try_from(size).unwrap_or(i64::MAX);
    let expected = digest.to_string();
    // (file, offset, done): Write messages of up to CHUNK bytes, then Commit.
    // A read error ends the stream early; the commit then never comes and
    // containerd reports the short write.
    let requests = stream::unfold(Some((file, 0i64)), move |state| {
        let (r#ref, expected) = (r#ref.clone(), expected.clone());
        async move {
            let (mut file, offset) = state?;
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            while n < CHUNK {
                match file.read(&mut buf[n..]).await {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading staged blob {expected}");
                        return None;
                    }
                }
            }
            buf.truncate(n);
            let (action, next) = if n == 0 {
                (WriteAction::Commit, None)
            } else {
                (WriteAction::Write, Some((file, offset + n as i64)))
            };
            let req = WriteContentRequest {
                action: action as i32,
                r#ref,
                total,
                expected,
                offset,
                data: buf,
                labels: HashMap::new(),
            };
            Some((req, next))
        }
    });
    let op = || format!("write {digest}");
    match ContentClient::new(c.channel())
        .write(c.leased(requests, lease))
        .await
    {
        Ok(resp) => {
            let mut s = resp.into_inner();
            let mut committed = None;
            loop {
                match s.message().await {
                    Ok(Some(m)) => {
                        if m.action == WriteAction::Commit as i32 {
                            committed = Some(m.digest);
                        }
                    }
                    Ok(None) => break,
                    Err(st) if st.code() == Code::AlreadyExists => return Ok(Attempt::Done),
                    Err(st) if st.code() == Code::Unavailable => return Ok(Attempt::Locked),
                    Err(st) => return Err(backend("write content")(rpc(op())(st))),
                }
            }
            match committed {
                Some(d) if d == digest.to_string() => Ok(Attempt::Done),
                other => Err(ImageError::Backend {
                    op: op(),
                    reason: format!("containerd committed {other:?}, not {digest}"),
                }),
            }
        }
        Err(s) if s.code() == Code::AlreadyExists => Ok(Attempt::Done),
        Err(s) if s.code() == Code::Unavailable => Ok(Attempt::Locked),
        Err(s) => Err(backend("write content")(rpc(op())(s))),
    }
}

/// Writes a small blob held in memory (config, manifest).
async fn write_bytes(
    c: &Client,
    lease: &str,
    data: &[u8],
    digest: &Digest,
) -> Result<(), ImageError> {
    until_unlocked(digest, || write_bytes_once(c, lease, data, digest)).await
}

async fn write_bytes_once(
    c: &Client,
    lease: &str,
    data: &[u8],
    digest: &Digest,
) -> Result<Attempt, ImageError> {
    if has_content(c, digest).await? {
        hold(c, lease, "content".into(), digest.to_string()).await?;
        return Ok(Attempt::Done);
    }
    let r#ref = format!("herd-{}", digest.hex());
    let total = data.len() as i64;
    let mut reqs: Vec<WriteContentRequest> = data
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, chunk)| WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: r#ref.clone(),
            total,
            expected: digest.to_string(),
            offset: (i * CHUNK) as i64,
            data: chunk.to_vec(),
            labels: HashMap::new(),
        })
        .collect();
    reqs.push(WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref,
        total,
        expected: digest.to_string(),
        offset: total,
        data: vec![],
        labels: HashMap::new(),
    });
    let op = || format!("write {digest}");
    match ContentClient::new(c.channel())
        .write(c.leased(stream::iter(reqs), lease))
        .await
    {
        Ok(resp) => {
            let mut s = resp.into_inner();
            loop {
                match s.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(Attempt::Done),
                    Err(st) if st.code() == Code::AlreadyExists => return Ok(Attempt::Done),
                    Err(st) if st.code() == Code::Unavailable => return Ok(Attempt::Locked),
                    Err(st) => return Err(backend("write content")(rpc(op())(st))),
                }
            }
        }
        Err(s) if s.code() == Code::AlreadyExists => Ok(Attempt::Done),
        Err(s) if s.code() == Code::Unavailable => Ok(Attempt::Locked),
        Err(s) => Err(backend("write content")(rpc(op())(s))),
    }
}

/// Whether the committed snapshot `chain` exists.
pub async fn snapshot_exists(c: &Client, chain: &str) -> Result<bool, ImageError> {
    match SnapshotsClient::new(c.channel())
        .stat(c.request(StatSnapshotRequest {
            snapshotter: c.snapshotter().into(),
            key: chain.into(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(backend("stat snapshot")(rpc(format!(
            "stat snapshot {chain}"
        ))(s))),
    }
}

/// Makes sure a committed snapshot exists for every chain ID of `layers`
/// (whose content must be in containerd); returns the top chain ID (`None`
/// for an image without layers).
pub async fn unpack(
    c: &Client,
    lease: &str,
    layers: &[LayerRecord],
) -> Result<Option<String>, ImageError> {
    let diffs: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let chains: Vec<String> = herd_images::digest::chain_ids(&diffs)
        .iter()
        .map(ToString::to_string)
        .collect();
    // Snapshots only exist on top of their parents: find the highest one
    // present, then unpack everything above it.
    let mut first_missing = chains.len();
    while first_missing > 0 && !snapshot_exists(c, &chains[first_missing - 1]).await? {
        first_missing -= 1;
    }
    if first_missing > 0 {
        // Its ancestors are kept alive through it.
        let kind = format!("snapshots/{}", c.snapshotter());
        hold(c, lease, kind, chains[first_missing - 1].clone()).await?;
    }
    for i in first_missing..chains.len() {
        let parent = if i == 0 { "" } else { chains[i - 1].as_str() };
        apply_layer(c, lease, &layers[i], parent, &chains[i]).await?;
    }
    Ok(chains.last().cloned())
}

async fn apply_layer(
    c: &Client,
    lease: &str,
    layer: &LayerRecord,
    parent: &str,
    chain: &str,
) -> Result<(), ImageError> {
    let key = unique(&format!("extract-{chain}"));
    let snaps = SnapshotsClient::new(c.channel());
    let mounts = snaps
        .clone()
        .prepare(c.leased(
            PrepareSnapshotRequest {
                snapshotter: c.snapshotter().into(),
                key: key.clone(),
                parent: parent.into(),
                labels: HashMap::new(),
            },
            lease,
        ))
        .await
        .map_err(|s| backend("prepare snapshot")(rpc(format!("prepare {key}"))(s)))?
        .into_inner()
        .mounts;
    let r = apply_and_commit(c, lease, layer, chain, &key, mounts).await;
    // Not committed (failure, or the same layer committed concurrently):
    // the extract snapshot goes.
    if !matches!(r, Ok(true)) {
        let _ = snaps
            .clone()
            .remove(c.request(RemoveSnapshotRequest {
                snapshotter: c.snapshotter().into(),
                key,
            }))
            .await;
    }
    r.map(|_| ())
}

async fn apply_and_commit(
    c: &Client,
    lease: &str,
    layer: &LayerRecord,
    chain: &str,
    key: &str,
    mounts: Vec<containerd_client::types::Mount>,
) -> Result<bool, ImageError> {
    let applied = DiffClient::new(c.channel())
        .apply(c.leased(
            ApplyRequest {
                diff: Some(Descriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.to_string(),
                    size: i64::try_from(layer.size).unwrap_or(i64::MAX),
                    annotations: HashMap::new(),
                }),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            },
            lease,
        ))
        .await
        .map_err(|s| backend("apply layer")(rpc(format!("apply {}", layer.digest))(s)))?
        .into_inner()
        .applied
        .map(|d| d.digest)
        .unwrap_or_default();
    if applied != layer.diff_id.to_string() {
        return Err(match applied.parse::<Digest>() {
            Ok(actual) => ImageError::DiffIdMismatch {
                layer: layer.digest.clone(),
                expected: layer.diff_id.clone(),
                actual,
            },
            Err(_) => ImageError::Backend {
                op: format!("apply {}", layer.digest),
                reason: format!("containerd reports applied digest {applied:?}"),
            },
        });
    }
    match SnapshotsClient::new(c.channel())
        .commit(c.leased(
            CommitSnapshotRequest {
                snapshotter: c.snapshotter().into(),
                name: chain.into(),
                key: key.into(),
                labels: HashMap::from([(SNAPSHOT_REF.to_string(), chain.to_string())]),
            },
            lease,
        ))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::AlreadyExists => Ok(false),
        Err(s) => Err(backend("commit snapshot")(rpc(format!("commit {chain}"))(
            s,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_996_799), "2026-11-29T23:59:59Z");
    }
}
