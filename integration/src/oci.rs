//! OCI image-layout plumbing shared by the image fixtures.
//!
//! [`LayoutWriter`] writes `oci-layout`, content-addressed blobs under
//! `blobs/sha256/<hex>` and `index.json`. Every blob is hashed while it is
//! written and renamed into place under its sha256, so a blob's file name is
//! always the digest of its bytes. Layers are streamed through
//! [`LayerWriter`], which hashes the uncompressed tar (the diff_id) and the
//! compressed blob (the layer digest) in one pass, so large layers never sit
//! in memory.
//!
//! Compression is deterministic: gzip with mtime 0 and no file name, zstd
//! single-threaded at a fixed level.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// `index.json` annotation holding the tag (OCI image-layout convention).
pub const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `index.json` annotation holding the full reference (containerd, buildkit).
pub const ANN_IMAGE_NAME: &str = "io.containerd.image.name";

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => MT_LAYER_TAR,
            Compression::Gzip => MT_LAYER_GZIP,
            Compression::Zstd => MT_LAYER_ZSTD,
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:<hex>` digest.
pub fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A target platform; serialised as an OCI `platform` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }
    pub fn amd64() -> Self {
        Self::new("linux", "amd64", None)
    }
    /// linux/arm64 with variant `v8`, as registries commonly publish it.
    pub fn arm64() -> Self {
        Self::new("linux", "arm64", Some("v8"))
    }
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(variant) = &self.variant {
            v["variant"] = json!(variant);
        }
        v
    }
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: String, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
    pub fn to_json(&self) -> Value {
        let mut v =
            json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size });
        if let Some(p) = &self.platform {
            v["platform"] = p.to_json();
        }
        if !self.annotations.is_empty() {
            v["annotations"] = json!(self.annotations);
        }
        v
    }
}

/// A writer that hashes and counts what passes through it.
#[derive(Debug)]
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }
    /// Returns the inner writer, `sha256:<hex>` and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.len,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A compressing writer chosen by [`Compression`].
pub enum Compressor<W: Write> {
    Plain(W),
    Gzip(GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> std::fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compressor")
    }
}

impl<W: Write> Compressor<W> {
    /// Gzip uses `level` 0–9 (6 is the gzip default); zstd uses level 3.
    pub fn new(c: Compression, out: W, gzip_level: u32) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Compressor::Plain(out),
            Compression::Gzip => {
                Compressor::Gzip(GzEncoder::new(out, flate2::Compression::new(gzip_level)))
            }
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(out, 3)?),
        })
    }
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Plain(w) => Ok(w),
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}

/// A layer as written: blob descriptor fields plus its diff_id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltLayer {
    pub media_type: String,
    /// sha256 of the (possibly compressed) blob.
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    pub uncompressed_size: u64,
}

impl BuiltLayer {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(&self.media_type, self.digest.clone(), self.size)
    }
}

/// Streams one layer into the layout; see the module docs.
#[derive(Debug)]
pub struct LayerWriter {
    inner: HashWriter<Compressor<HashWriter<BufWriter<File>>>>,
    tmp: PathBuf,
    blobs: PathBuf,
    compression: Compression,
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl LayerWriter {
    pub fn finish(self) -> Result<BuiltLayer> {
        let (comp, diff_id, uncompressed_size) = self.inner.finish();
        let hashed = comp.finish().context("finishing layer compression")?;
        let (file, digest, size) = hashed.finish();
        file.into_inner()
            .map_err(|e| e.into_error())
            .context("flushing layer blob")?;
        let dst = self.blobs.join(digest_hex(&digest));
        fs::rename(&self.tmp, &dst)
            .with_context(|| format!("renaming blob to {}", dst.display()))?;
        Ok(BuiltLayer {
            media_type: self.compression.media_type().into(),
            digest,
            size,
            diff_id,
            uncompressed_size,
        })
    }
}

/// Writes an OCI image layout directory.
#[derive(Debug)]
pub struct LayoutWriter {
    dir: PathBuf,
    blobs: PathBuf,
    tmp_counter: u64,
    /// Distinct blobs written: digest -> size.
    written: BTreeMap<String, u64>,
}

impl LayoutWriter {
    /// Creates `dir` (and parents) with `oci-layout` and `blobs/sha256/`.
    pub fn create(dir: &Path) -> Result<Self> {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .with_context(|| format!("writing {}/oci-layout", dir.display()))?;
        Ok(Self {
            dir: dir.into(),
            blobs,
            tmp_counter: 0,
            written: BTreeMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sum of the sizes of distinct blobs written so far.
    pub fn total_size(&self) -> u64 {
        self.written.values().sum()
    }

    /// Stores `bytes` as a blob; returns its descriptor with `media_type`.
    pub fn put_blob(&mut self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let digest = sha256_digest(bytes);
        let path = self.blobs.join(digest_hex(&digest));
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        self.written.insert(digest.clone(), bytes.len() as u64);
        Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
    }

    /// Serialises `value` and stores it as a blob.
    pub fn put_json(&mut self, media_type: &str, value: &Value) -> Result<Descriptor> {
        let bytes = serde_json::to_vec(value).context("serialising json blob")?;
        self.put_blob(media_type, &bytes)
    }

    /// Starts streaming a layer; write an uncompressed tar into it.
    pub fn layer(&mut self, compression: Compression, gzip_level: u32) -> Result<LayerWriter> {
        self.tmp_counter += 1;
        let tmp = self.blobs.join(format!(".tmp-layer-{}", self.tmp_counter));
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let comp = Compressor::new(
            compression,
            HashWriter::new(BufWriter::new(file)),
            gzip_level,
        )
        .context("starting compressor")?;
        Ok(LayerWriter {
            inner: HashWriter::new(comp),
            tmp,
            blobs: self.blobs.clone(),
            compression,
        })
    }

    /// Records a layer finished with [`LayerWriter::finish`].
    pub fn add_layer(&mut self, w: LayerWriter) -> Result<BuiltLayer> {
        let layer = w.finish()?;
        self.written.insert(layer.digest.clone(), layer.size);
        Ok(layer)
    }

    /// Writes a complete layer from an uncompressed tar in memory.
    pub fn put_layer(&mut self, tar: &[u8], compression: Compression) -> Result<BuiltLayer> {
        let mut w = self.layer(compression, 6)?;
        w.write_all(tar).context("writing layer")?;
        self.add_layer(w)
    }

    /// Writes `index.json` listing `manifests`.
    pub fn write_index(&self, manifests: &[Descriptor]) -> Result<()> {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": manifests.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        });
        let path = self.dir.join("index.json");
        let bytes = serde_json::to_vec(&index).context("serialising index.json")?;
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }
}

/// Splits a reference into (repository, tag) per the usual docker rules: the
/// tag follows the last `:` after the last `/`; no tag means `latest`.
pub fn split_ref(reference: &str) -> (&str, &str) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            &reference[name_start + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ref_rules() {
        assert_eq!(
            split_ref("herd.test/busybox:latest"),
            ("herd.test/busybox", "latest")
        );
        assert_eq!(
            split_ref("localhost:5000/busybox"),
            ("localhost:5000/busybox", "latest")
        );
        assert_eq!(
            split_ref("localhost:5000/a/b:v1"),
            ("localhost:5000/a/b", "v1")
        );
    }
}
