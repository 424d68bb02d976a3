//! An independent checker for OCI image layouts.
//!
//! [`verify_layout`] parses `oci-layout`, `index.json` and every reachable
//! index, manifest and config with the `oci-spec` crate (not with this
//! crate's writers), recomputes the sha256 and size of every reachable blob
//! and compares them with their descriptors, decompresses every layer per
//! its media type and checks the result against the config's diff_ids.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, OciLayout,
};
use sha2::{Digest as _, Sha256};

use crate::oci::digest_hex;

/// What [`verify_layout`] walked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayoutReport {
    /// Digests of image manifests (not indexes) reached.
    pub manifests: Vec<String>,
    /// Digests of nested indexes reached.
    pub indexes: Vec<String>,
    /// Distinct blobs checked.
    pub blobs: BTreeSet<String>,
}

/// Checks the layout at `dir`; see the module docs.
pub fn verify_layout(dir: &Path) -> Result<LayoutReport> {
    let layout = OciLayout::from_file(dir.join("oci-layout")).context("parsing oci-layout")?;
    ensure!(
        layout.image_layout_version() == "1.0.0",
        "unexpected imageLayoutVersion"
    );
    let index = ImageIndex::from_file(dir.join("index.json")).context("parsing index.json")?;
    let mut report = LayoutReport::default();
    for d in index.manifests() {
        walk(dir, d, &mut report)?;
    }
    Ok(report)
}

fn walk(dir: &Path, d: &Descriptor, report: &mut LayoutReport) -> Result<()> {
    let bytes = check_blob(dir, d, report)?;
    match d.media_type() {
        MediaType::ImageIndex => {
            let index = ImageIndex::from_reader(&bytes[..]).context("parsing nested index")?;
            report.indexes.push(d.digest().to_string());
            for child in index.manifests() {
                ensure!(
                    child.platform().is_some(),
                    "nested index entry {} lacks a platform",
                    child.digest()
                );
                walk(dir, child, report)?;
            }
        }
        MediaType::ImageManifest => {
            let m = ImageManifest::from_reader(&bytes[..]).context("parsing manifest")?;
            ensure!(
                m.config().media_type() == &MediaType::ImageConfig,
                "config media type"
            );
            let config_bytes = check_blob(dir, m.config(), report)?;
            let config =
                ImageConfiguration::from_reader(&config_bytes[..]).context("parsing config")?;
            let diff_ids = config.rootfs().diff_ids();
            ensure!(
                diff_ids.len() == m.layers().len(),
                "{} diff_ids for {} layers",
                diff_ids.len(),
                m.layers().len()
            );
            if let Some(p) = d.platform() {
                ensure!(
                    p.architecture() == config.architecture(),
                    "platform/config architecture differ"
                );
            }
            for (layer, diff_id) in m.layers().iter().zip(diff_ids) {
                check_blob(dir, layer, report)?;
                let actual = diff_id_of(dir, layer)?;
                ensure!(
                    &actual == diff_id,
                    "layer {}: diff_id {actual}, config says {diff_id}",
                    layer.digest()
                );
            }
            report.manifests.push(d.digest().to_string());
        }
        other => bail!("unexpected media type {other} in index"),
    }
    Ok(())
}

/// Checks a blob's digest and size; returns its bytes when it is small
/// (JSON documents), an empty vector for layers.
fn check_blob(dir: &Path, d: &Descriptor, report: &mut LayoutReport) -> Result<Vec<u8>> {
    let digest = d.digest().to_string();
    let path = dir.join("blobs").join("sha256").join(digest_hex(&digest));
    let keep = !is_layer(d.media_type());
    let mut f =
        BufReader::new(File::open(&path).with_context(|| format!("opening {}", path.display()))?);
    let mut hasher = Sha256::new();
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).context("reading blob")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if keep {
            kept.extend_from_slice(&buf[..n]);
        }
        len += n as u64;
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    ensure!(
        actual == digest,
        "blob {digest}: content hashes to {actual}"
    );
    ensure!(
        len == d.size(),
        "blob {digest}: {len} bytes, descriptor says {}",
        d.size()
    );
    report.blobs.insert(digest);
    Ok(kept)
}

fn is_layer(mt: &MediaType) -> bool {
    matches!(
        mt,
        MediaType::ImageLayer | MediaType::ImageLayerGzip | MediaType::ImageLayerZstd
    )
}

/// sha256 of the decompressed layer.
pub fn diff_id_of(dir: &Path, layer: &Descriptor) -> Result<String> {
    let path = dir
        .join("blobs")
        .join("sha256")
        .join(digest_hex(layer.digest().as_ref()));
    let f =
        BufReader::new(File::open(&path).with_context(|| format!("opening {}", path.display()))?);
    let mut reader: Box<dyn Read> = match layer.media_type() {
        MediaType::ImageLayer => Box::new(f),
        MediaType::ImageLayerGzip => Box::new(flate2::read::GzDecoder::new(f)),
        MediaType::ImageLayerZstd => {
            Box::new(zstd::stream::read::Decoder::new(f).context("zstd decoder")?)
        }
        other => bail!("unexpected layer media type {other}"),
    };
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut hasher).context("decompressing layer")?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}
