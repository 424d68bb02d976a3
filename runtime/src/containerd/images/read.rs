//! Reading herd's view of an image back from containerd: the name's target
//! (a manifest, or an index resolved to one platform), the manifest, the
//! config, all read through `Content.Read`, size-limited before the read
//! and digest-verified after it, and parsed by herd-images' own parsers.

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    GetImageRequest, Image, InfoRequest, ListImagesRequest, ReadContentRequest,
};
use herd_images::manifest::{self, Document, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use herd_images::metadata::LayerRecord;
use herd_images::{Digest, ImageError, ImageRecord, Platform};
use tonic::Code;

use super::backend;
use crate::containerd::{Client, rpc};

/// Verified manifests and configs already read, by digest. Content is
/// addressed by its digest, so a cached blob can never be stale; the cache
/// saves two `Content.Info` + `Content.Read` round trips per lookup on
/// every container start. Bounded (cleared when full).
static SMALL_BLOBS: std::sync::Mutex<Option<std::collections::HashMap<Digest, Vec<u8>>>> =
    std::sync::Mutex::new(None);
const CACHE_BYTES: usize = 16 << 20;

fn cached(digest: &Digest) -> Option<Vec<u8>> {
    let g = SMALL_BLOBS.lock().unwrap_or_else(|p| p.into_inner());
    g.as_ref().and_then(|m| m.get(digest).cloned())
}

fn remember(digest: &Digest, bytes: &[u8]) {
    let mut g = SMALL_BLOBS.lock().unwrap_or_else(|p| p.into_inner());
    let m = g.get_or_insert_with(Default::default);
    if m.values().map(Vec::len).sum::<usize>() + bytes.len() > CACHE_BYTES {
        m.clear();
    }
    m.insert(digest.clone(), bytes.to_vec());
}

/// Reads a blob of at most `limit` bytes from the content store and checks
/// it against its digest (manifests and configs are cached by digest).
pub async fn read_blob(c: &Client, digest: &Digest, limit: u64) -> Result<Vec<u8>, ImageError> {
    if let Some(b) = cached(digest)
        && b.len() as u64 <= limit
    {
        return Ok(b);
    }
    let bytes = read_blob_uncached(c, digest, limit).await?;
    if limit <= MAX_MANIFEST_SIZE.max(MAX_CONFIG_SIZE) {
        remember(digest, &bytes);
    }
    Ok(bytes)
}

async fn read_blob_uncached(
    c: &Client,
    digest: &Digest,
    limit: u64,
) -> Result<Vec<u8>, ImageError> {
    let mut content = ContentClient::new(c.channel());
    let info = content
        .info(c.request(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
        .map_err(|s| {
            if s.code() == Code::NotFound {
                ImageError::Blob(herd_images::blob::BlobError::NotFound(digest.clone()))
            } else {
                backend("content info")(rpc(format!("content info {digest}"))(s))
            }
        })?
        .into_inner()
        .info
        .unwrap_or_default();
    let size = u64::try_from(info.size).unwrap_or(0);
    if size > limit {
        return Err(herd_images::blob::BlobError::TooLarge {
            digest: digest.clone(),
            size,
            limit,
        }
        .into());
    }
    let mut s = content
        .read(c.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(|s| backend("read content")(rpc(format!("read {digest}"))(s)))?
        .into_inner();
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(m) = s
        .message()
        .await
        .map_err(|s| backend("read content")(rpc(format!("read {digest}"))(s)))?
    {
        out.extend_from_slice(&m.data);
        if out.len() as u64 > limit {
            return Err(herd_images::blob::BlobError::TooLarge {
                digest: digest.clone(),
                size: out.len() as u64,
                limit,
            }
            .into());
        }
    }
    let actual = Digest::of(&out);
    if &actual != digest {
        return Err(herd_images::blob::BlobError::DigestMismatch {
            expected: digest.clone(),
            actual,
        }
        .into());
    }
    Ok(out)
}

/// The image named exactly `name`, if containerd has it.
pub async fn get_image(c: &Client, name: &str) -> Result<Option<Image>, ImageError> {
    match ImagesClient::new(c.channel())
        .get(c.request(GetImageRequest { name: name.into() }))
        .await
    {
        Ok(r) => Ok(r.into_inner().image),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(backend("get image")(rpc(format!("get image {name}"))(s))),
    }
}

/// Every image name in the namespace.
pub async fn list_images(c: &Client) -> Result<Vec<Image>, ImageError> {
    Ok(ImagesClient::new(c.channel())
        .list(c.request(ListImagesRequest { filters: vec![] }))
        .await
        .map_err(|s| backend("list images")(rpc("list images")(s)))?
        .into_inner()
        .images)
}

/// herd's record of a containerd image: its target manifest (or the
/// `platform` manifest of its target index), config and layers.
pub async fn record_of(
    c: &Client,
    image: &Image,
    platform: &Platform,
) -> Result<ImageRecord, ImageError> {
    let target = image.target.clone().unwrap_or_default();
    let digest: Digest = target.digest.parse().map_err(|_| ImageError::Backend {
        op: format!("image {}", image.name),
        reason: format!("target digest {:?} is not a sha256 digest", target.digest),
    })?;
    let mut bytes = read_blob(c, &digest, MAX_MANIFEST_SIZE).await?;
    let mut manifest_digest = digest.clone();
    let mut media_type = target.media_type.clone();
    let mut index = None;
    let doc = match manifest::parse_document(&bytes, &digest, Some(&target.media_type))? {
        Document::Manifest(m) => m,
        Document::Index(idx) => {
            let chosen = manifest::select_platform(&idx, &digest, platform)?;
            manifest_digest = manifest::descriptor_digest(chosen)?;
            media_type = chosen.media_type().to_string();
            bytes = read_blob(c, &manifest_digest, MAX_MANIFEST_SIZE).await?;
            index = Some(digest.clone());
            match manifest::parse_document(&bytes, &manifest_digest, Some(&media_type))? {
                Document::Manifest(m) => m,
                Document::Index(_) => {
                    return Err(manifest::ManifestError::Malformed {
                        what: "index",
                        digest: manifest_digest.to_string(),
                        reason: "nested index inside an index".into(),
                    }
                    .into());
                }
            }
        }
    };
    let config = manifest::descriptor_digest(doc.config())?;
    let cfg_bytes = read_blob(c, &config, MAX_CONFIG_SIZE).await?;
    let info = manifest::parse_config(&cfg_bytes, &config, doc.layers().len())?;
    let mut layers = Vec::with_capacity(doc.layers().len());
    for (l, diff_id) in doc.layers().iter().zip(info.diff_ids) {
        layers.push(LayerRecord {
            digest: manifest::descriptor_digest(l)?,
            size: l.size(),
            media_type: l.media_type().to_string(),
            diff_id,
        });
    }
    let created = image
        .created_at
        .as_ref()
        .and_then(|t| u64::try_from(t.seconds).ok())
        .unwrap_or(0);
    Ok(ImageRecord {
        name: image.name.clone(),
        manifest: manifest_digest,
        manifest_size: bytes.len() as u64,
        manifest_media_type: media_type,
        index,
        config,
        config_size: cfg_bytes.len() as u64,
        layers,
        platform: info.platform,
        created,
        last_used: created,
    })
}

/// Records of every image in the namespace that herd can run on
/// `platform`; images it cannot read (missing content, foreign formats,
/// no manifest for the platform) are left out and logged.
pub async fn records(c: &Client, platform: &Platform) -> Result<Vec<ImageRecord>, ImageError> {
    let mut out = Vec::new();
    for image in list_images(c).await? {
        match record_of(c, &image, platform).await {
            Ok(r) => out.push(r),
            Err(e) => tracing::debug!(image = %image.name, error = %e, "containerd image skipped"),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
