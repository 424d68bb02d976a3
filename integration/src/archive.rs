//! Single-file image archives: `oci-archive` and `docker save` format.
//!
//! [`write_oci_archive`] is a tar of exactly the layout
//! [`write_oci_layout`] writes (as `skopeo copy … oci-archive:` makes):
//! `oci-layout`, `index.json`, `blobs/`, `blobs/sha256/`, then the blobs in
//! digest order.
//!
//! [`write_docker_archive`] follows `docker save` (pre-containerd-store):
//! per layer a directory named after its chain ID holding `VERSION`, `json`
//! and an uncompressed `layer.tar`; then `<config-hex>.json`, `repositories`,
//! and `manifest.json` last, so an importer must not expect the manifest
//! first. The config bytes are identical to the OCI layout's config for the
//! same platform, so the image ID (config digest) matches across formats.
//! Only the first platform of the options is used and compression is ignored
//! (docker archives carry uncompressed layers).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::oci::{BuiltLayer, MT_LAYER_TAR, Platform, digest_hex, sha256_digest, split_ref};
use crate::tarw::{Entry, TarWriter};
use crate::testimage::{
    BuiltImage, ImageOpts, base_layer_tar, config_json, overlay_layer_tar, write_oci_layout,
};

/// What a docker archive holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltDockerArchive {
    pub ref_name: String,
    /// sha256 of the config file (the docker image ID).
    pub config_digest: String,
    /// Config path inside the archive (`<hex>.json`).
    pub config_path: String,
    /// sha256 of each `layer.tar` (they are uncompressed, so these are
    /// also the layer digests).
    pub diff_ids: Vec<String>,
    /// Layer paths inside the archive (`<chain-id-hex>/layer.tar`).
    pub layer_paths: Vec<String>,
    pub platform: Platform,
}

/// Writes the busybox image as an OCI layout and tars it into `path`.
pub fn write_oci_archive(path: &Path, opts: &ImageOpts) -> Result<BuiltImage> {
    let tmp = tempfile::tempdir().context("creating temp dir")?;
    let image = write_oci_layout(tmp.path(), opts)?;
    tar_layout(tmp.path(), path)?;
    Ok(image)
}

/// Tars the OCI layout at `layout` into the file `out`.
pub fn tar_layout(layout: &Path, out: &Path) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = TarWriter::new(BufWriter::new(file));
    for name in ["oci-layout", "index.json"] {
        let data = fs::read(layout.join(name)).with_context(|| format!("reading {name}"))?;
        tar.file(&Entry::file(name, 0o644), &data)?;
    }
    tar.entry(&Entry::dir("blobs/", 0o755))?;
    tar.entry(&Entry::dir("blobs/sha256/", 0o755))?;
    let blobs_dir = layout.join("blobs").join("sha256");
    let mut blobs: Vec<PathBuf> = fs::read_dir(&blobs_dir)
        .with_context(|| format!("listing {}", blobs_dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .context("listing blobs")?;
    blobs.sort();
    for blob in blobs {
        let name = blob
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let size = fs::metadata(&blob)
            .with_context(|| format!("stat {}", blob.display()))?
            .len();
        let mut f = File::open(&blob).with_context(|| format!("opening {}", blob.display()))?;
        tar.entry_with_data(
            &Entry::file(&format!("blobs/sha256/{name}"), 0o644),
            size,
            &mut f,
        )?;
    }
    tar.finish()?.flush().context("flushing archive")
}

/// Writes the busybox image in `docker save` format into `path`.
pub fn write_docker_archive(path: &Path, opts: &ImageOpts) -> Result<BuiltDockerArchive> {
    let platform = opts
        .platforms
        .first()
        .cloned()
        .unwrap_or_else(Platform::amd64);
    let tars = [base_layer_tar(&opts.busybox)?, overlay_layer_tar()?];
    let history = [
        "herd-integration: busybox base",
        "herd-integration: overlay",
    ];
    let layers: Vec<BuiltLayer> = tars
        .iter()
        .map(|t| {
            let d = sha256_digest(t);
            BuiltLayer {
                media_type: MT_LAYER_TAR.into(),
                digest: d.clone(),
                size: t.len() as u64,
                diff_id: d,
                uncompressed_size: t.len() as u64,
            }
        })
        .collect();
    let config = serde_json::to_vec(&config_json(
        &platform,
        &layers,
        &history,
        &Default::default(),
    ))
    .context("serialising config")?;
    let config_digest = sha256_digest(&config);
    let config_path = format!("{}.json", digest_hex(&config_digest));

    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut tar = TarWriter::new(BufWriter::new(file));
    let mut layer_paths = Vec::new();
    let mut parent: Option<String> = None;
    for (layer, data) in layers.iter().zip(&tars) {
        let chain = match &parent {
            None => layer.diff_id.clone(),
            Some(p) => sha256_digest(format!("{p} {}", layer.diff_id).as_bytes()),
        };
        let id = digest_hex(&chain).to_string();
        let mut v1 = json!({ "id": id, "created": crate::testimage::CREATED });
        if let Some(p) = &parent {
            v1["parent"] = json!(digest_hex(p));
        }
        tar.entry(&Entry::dir(&format!("{id}/"), 0o755))?;
        tar.file(&Entry::file(&format!("{id}/VERSION"), 0o644), b"1.0")?;
        tar.file(
            &Entry::file(&format!("{id}/json"), 0o644),
            &serde_json::to_vec(&v1)?,
        )?;
        tar.file(&Entry::file(&format!("{id}/layer.tar"), 0o644), data)?;
        layer_paths.push(format!("{id}/layer.tar"));
        parent = Some(chain);
    }
    tar.file(&Entry::file(&config_path, 0o644), &config)?;
    let (repo, tag) = split_ref(&opts.ref_name);
    let top_id = parent.as_deref().map(digest_hex).unwrap_or_default();
    let repositories = json!({ repo: { tag: top_id } });
    tar.file(
        &Entry::file("repositories", 0o644),
        &serde_json::to_vec(&repositories)?,
    )?;
    let manifest =
        json!([{ "Config": config_path, "RepoTags": [opts.ref_name], "Layers": layer_paths }]);
    tar.file(
        &Entry::file("manifest.json", 0o644),
        &serde_json::to_vec(&manifest)?,
    )?;
    tar.finish()?.flush().context("flushing archive")?;
    Ok(BuiltDockerArchive {
        ref_name: opts.ref_name.clone(),
        config_digest,
        config_path,
        diff_ids: layers.into_iter().map(|l| l.diff_id).collect(),
        layer_paths,
        platform,
    })
}
