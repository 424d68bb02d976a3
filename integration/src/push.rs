//! Pushing OCI layouts to the local [`Registry`] with the OCI distribution
//! flow, and pushing deliberately corrupt images.
//!
//! For every blob: `HEAD /v2/<repo>/blobs/<digest>` (skip if present),
//! `POST /v2/<repo>/blobs/uploads/`, `PUT <Location>?digest=<digest>` with
//! the bytes (monolithic upload). Manifests are `PUT` with their media type
//! as `Content-Type`; children of an index are pushed by digest before the
//! index itself. The registry verifies blob digests on upload and that
//! referenced blobs exist, but not descriptor sizes nor config diff_ids,
//! which is what [`Corruption`] relies on.

use std::fs::{self, File};
use std::path::Path;

use anyhow::{Context, Result, bail};
use reqwest::blocking::Body;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::oci::{ANN_REF_NAME, MT_CONFIG, MT_INDEX, MT_MANIFEST, digest_hex, sha256_digest};
use crate::registry::Registry;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// How [`Registry::push_manifest_with_bad_layer`] corrupts an image. In every
/// case all blobs the registry serves match their digests; the lie is in
/// the metadata, which an importer must cross-check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// (a) The first layer descriptor has the right digest but its `size`
    /// is one byte larger than the blob.
    LayerSizeMismatch,
    /// (b) The config's `rootfs.diff_ids[0]` is the sha256 of other bytes,
    /// so the uncompressed first layer does not match it (new config blob,
    /// manifest points at it; layers untouched).
    DiffIdMismatch,
    /// (c) The first layer descriptor (gzip media type) points at an
    /// uploaded blob whose digest and size are right but whose bytes are not
    /// a gzip stream.
    LayerNotGzip,
}

/// A manifest as fetched from the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedManifest {
    pub content_type: String,
    /// `Docker-Content-Digest`, or the sha256 of the body if absent.
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Registry {
    /// Pushes the image tagged `tag` in the layout's `index.json` (matched
    /// on `org.opencontainers.image.ref.name`; a layout with a single entry
    /// is pushed whatever its annotation) as `<repo>:<tag>`. Returns the
    /// digest of the pushed top-level manifest or index.
    pub fn push_oci_layout(&self, layout: &Path, repo: &str, tag: &str) -> Result<String> {
        let desc = select_entry(layout, tag)?;
        self.push_descriptor(layout, repo, &desc, Some(tag))
    }

    /// Pushes the single-platform image tagged `tag` from `layout` as
    /// `<repo>:<tag>`, corrupted as `corruption` says. Returns the digest of
    /// the manifest pushed.
    pub fn push_manifest_with_bad_layer(
        &self,
        layout: &Path,
        repo: &str,
        tag: &str,
        corruption: Corruption,
    ) -> Result<String> {
        let desc = select_entry(layout, tag)?;
        let mut manifest: Value =
            serde_json::from_slice(&read_blob(layout, str_field(&desc, "digest")?)?)
                .context("parsing manifest")?;
        if manifest.get("layers").is_none() {
            bail!("{tag}: corrupt pushes need a single-platform manifest, not an index");
        }
        for blob in blob_descriptors(&manifest) {
            self.upload_blob_from_layout(layout, repo, str_field(blob, "digest")?)?;
        }
        match corruption {
            Corruption::LayerSizeMismatch => {
                let size = manifest["layers"][0]["size"]
                    .as_u64()
                    .context("layer size")?;
                manifest["layers"][0]["size"] = Value::from(size + 1);
            }
            Corruption::DiffIdMismatch => {
                let mut config: Value = serde_json::from_slice(&read_blob(
                    layout,
                    str_field(&manifest["config"], "digest")?,
                )?)
                .context("parsing config")?;
                config["rootfs"]["diff_ids"][0] = Value::from(sha256_digest(b"not the layer"));
                let bytes = serde_json::to_vec(&config)?;
                let digest = sha256_digest(&bytes);
                self.upload_blob(repo, &digest, bytes.clone().into())?;
                manifest["config"] = serde_json::json!({
                    "mediaType": MT_CONFIG, "digest": digest, "size": bytes.len(),
                });
            }
            Corruption::LayerNotGzip => {
                let bytes = b"this blob is not a gzip stream\n".to_vec();
                let digest = sha256_digest(&bytes);
                self.upload_blob(repo, &digest, bytes.clone().into())?;
                manifest["layers"][0]["digest"] = Value::from(digest);
                manifest["layers"][0]["size"] = Value::from(bytes.len());
            }
        }
        let media_type = manifest["mediaType"]
            .as_str()
            .unwrap_or(MT_MANIFEST)
            .to_string();
        self.put_manifest(repo, tag, &media_type, serde_json::to_vec(&manifest)?)
    }

    /// `GET /v2/<repo>/manifests/<reference>`, accepting OCI and docker
    /// manifest and index types.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        let accept = [MT_MANIFEST, MT_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
        let resp = self
            .request(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Accept", accept)
            .send()
            .context("GET manifest")?;
        if resp.status() != StatusCode::OK {
            bail!("GET manifest {repo}:{reference}: {}", resp.status());
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let content_type = header("content-type").unwrap_or_default();
        let digest = header("docker-content-digest");
        let bytes = resp.bytes().context("reading manifest body")?.to_vec();
        let digest = digest.unwrap_or_else(|| sha256_digest(&bytes));
        Ok(FetchedManifest {
            content_type,
            digest,
            bytes,
        })
    }

    /// `GET /v2/<repo>/blobs/<digest>`.
    pub fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let resp = self
            .request(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .context("GET blob")?;
        if resp.status() != StatusCode::OK {
            bail!("GET blob {repo}@{digest}: {}", resp.status());
        }
        Ok(resp.bytes().context("reading blob body")?.to_vec())
    }

    fn push_descriptor(
        &self,
        layout: &Path,
        repo: &str,
        desc: &Value,
        reference: Option<&str>,
    ) -> Result<String> {
        let digest = str_field(desc, "digest")?;
        let bytes = read_blob(layout, digest)?;
        let doc: Value =
            serde_json::from_slice(&bytes).with_context(|| format!("parsing manifest {digest}"))?;
        let media_type = desc
            .get("mediaType")
            .or_else(|| doc.get("mediaType"))
            .and_then(Value::as_str)
            .context("manifest without mediaType")?
            .to_string();
        if media_type == MT_INDEX || media_type == DOCKER_LIST {
            for child in doc["manifests"]
                .as_array()
                .context("index without manifests")?
            {
                self.push_descriptor(layout, repo, child, None)?;
            }
        } else {
            for blob in blob_descriptors(&doc) {
                self.upload_blob_from_layout(layout, repo, str_field(blob, "digest")?)?;
            }
        }
        self.put_manifest(repo, reference.unwrap_or(digest), &media_type, bytes)
    }

    fn upload_blob_from_layout(&self, layout: &Path, repo: &str, digest: &str) -> Result<()> {
        let path = blob_path(layout, digest);
        let size = fs::metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        self.upload_blob(repo, digest, Body::sized(file, size))
    }

    fn upload_blob(&self, repo: &str, digest: &str, body: Body) -> Result<()> {
        let head = self
            .request(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .context("HEAD blob")?;
        if head.status() == StatusCode::OK {
            return Ok(());
        }
        let post = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .context("POST upload")?;
        if post.status() != StatusCode::ACCEPTED {
            bail!("POST /v2/{repo}/blobs/uploads/: {}", post.status());
        }
        let location = post
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("upload response without Location")?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .request(Method::PUT, &format!("{location}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .context("PUT blob")?;
        if put.status() != StatusCode::CREATED {
            let status = put.status();
            bail!(
                "PUT blob {digest} to {repo}: {status}: {}",
                put.text().unwrap_or_default()
            );
        }
        Ok(())
    }

    fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String> {
        let computed = sha256_digest(&bytes);
        let resp = self
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(bytes)
            .send()
            .context("PUT manifest")?;
        if resp.status() != StatusCode::CREATED {
            let status = resp.status();
            bail!(
                "PUT manifest {repo}:{reference}: {status}: {}",
                resp.text().unwrap_or_default()
            );
        }
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .unwrap_or(computed.clone());
        if digest != computed {
            bail!("registry stored manifest as {digest}, expected {computed}");
        }
        Ok(digest)
    }
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout.join("blobs").join("sha256").join(digest_hex(digest))
}

fn read_blob(layout: &Path, digest: &str) -> Result<Vec<u8>> {
    let path = blob_path(layout, digest);
    fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("descriptor without {key}"))
}

/// The config and layer descriptors of a manifest.
fn blob_descriptors(manifest: &Value) -> Vec<&Value> {
    let layers = manifest["layers"].as_array().into_iter().flatten();
    std::iter::once(&manifest["config"])
        .filter(|c| c.is_object())
        .chain(layers)
        .collect()
}

/// The `index.json` entry for `tag` (or the only entry).
fn select_entry(layout: &Path, tag: &str) -> Result<Value> {
    let path = layout.join("index.json");
    let index: Value = serde_json::from_slice(
        &fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .context("parsing index.json")?;
    let entries = index["manifests"]
        .as_array()
        .context("index.json without manifests")?;
    let tagged = entries
        .iter()
        .find(|d| d["annotations"][ANN_REF_NAME].as_str() == Some(tag));
    match (tagged, entries.as_slice()) {
        (Some(d), _) => Ok(d.clone()),
        (None, [only]) => Ok(only.clone()),
        (None, _) => bail!("{}: no entry tagged {tag}", path.display()),
    }
}
