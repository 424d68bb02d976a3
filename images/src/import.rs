//! `herd image import`: OCI image layouts (directories), OCI archives (a tar
//! of a layout) and docker-archives (`docker save`), optionally compressed.
//!
//! Archives are read in one streaming pass: every regular file is copied
//! into the blob store while it is hashed (`blobs/sha256/<hex>` entries must
//! match their name), only the small index files are kept in memory, then
//! the images are resolved from the stored blobs. Docker archives put
//! `manifest.json` last, so nothing is assumed about order. Every image
//! named by the archive's index (all tags) is imported; nested indexes are
//! resolved to one platform (the host's unless `platform` is given).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::Digest;
use crate::manifest::{self, Document, Platform};
use crate::metadata::{ImageRecord, LayerRecord, now};
use crate::store::{ImageError, ImageStore, io_err, normalize_reference};
use crate::tar::{EntryKind, TarReader};
use crate::unpack;

/// Options for [`ImageStore::import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Platform to pick from multi-platform indexes (default: the host's).
    pub platform: Option<Platform>,
    /// Repository for images the archive names only by tag (default
    /// `localhost/<file stem>`).
    pub base_name: Option<String>,
}

const MAX_INDEX_FILE: u64 = 4 << 20;
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Where the blobs of an import come from.
enum Source {
    /// An OCI layout directory: blobs are copied in on demand.
    Layout(PathBuf),
    /// An archive: every file is already in the blob store.
    Archive,
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

impl ImageStore {
    /// Imports every image in the archive or layout at `path`.
    pub fn import(
        &self,
        path: &Path,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let _lock = self.writer_lock()?;
        let fail = |reason: String| ImageError::Import {
            path: path.to_owned(),
            reason,
        };
        let stem = path
            .file_name()
            .and_then(|s| s.to_str())
            .map(|s| s.split('.').next().unwrap_or(s).to_owned())
            .unwrap_or_else(|| "image".into());
        let base = opts
            .base_name
            .clone()
            .unwrap_or_else(|| format!("localhost/{}", stem.to_lowercase()));
        let platform = opts.platform.clone().unwrap_or_else(Platform::host);
        let meta = std::fs::metadata(path).map_err(io_err("open", path))?;
        if meta.is_dir() {
            if !path.join("oci-layout").is_file() {
                return Err(fail(
                    "directory is not an OCI image layout (no oci-layout file)".into(),
                ));
            }
            let index = read_small(&path.join("index.json"))
                .map_err(|e| fail(format!("index.json: {e}")))?;
            return self.import_oci(
                &Source::Layout(path.to_owned()),
                &index,
                &base,
                &platform,
                path,
            );
        }
        let files = self.ingest_archive(path)?;
        if let Some(index) = files.small.get("index.json") {
            self.import_oci(&Source::Archive, index, &base, &platform, path)
        } else if let Some(m) = files.small.get("manifest.json") {
            self.import_docker(&files, m, &base, path)
        } else {
            Err(fail("not an image archive: it has neither index.json (OCI) nor manifest.json (docker save)".into()))
        }
    }

    fn ingest_archive(&self, path: &Path) -> Result<ArchiveFiles, ImageError> {
        let fail = |reason: String| ImageError::Import {
            path: path.to_owned(),
            reason,
        };
        let file = File::open(path).map_err(io_err("open", path))?;
        let reader = unpack::decompress(BufReader::with_capacity(256 * 1024, file))
            .map_err(io_err("read", path))?;
        let mut tar = TarReader::new(reader);
        let mut files = ArchiveFiles::default();
        while let Some(h) = tar.next_header().map_err(|e| fail(e.to_string()))? {
            let name = clean_name(&h.display_path());
            match h.kind {
                EntryKind::File => {}
                EntryKind::Symlink | EntryKind::HardLink => {
                    // docker save links duplicate layers to one copy
                    let target = String::from_utf8_lossy(&h.link).into_owned();
                    let resolved = if h.kind == EntryKind::Symlink {
                        resolve_relative(&name, &target)
                    } else {
                        Some(clean_name(&target))
                    };
                    if let Some(t) = resolved {
                        files.links.insert(name, t);
                    }
                    continue;
                }
                _ => continue,
            }
            if matches!(
                name.as_str(),
                "index.json" | "oci-layout" | "manifest.json" | "repositories"
            ) {
                if h.size > MAX_INDEX_FILE {
                    return Err(fail(format!(
                        "{name} is {} bytes, more than the {MAX_INDEX_FILE}-byte limit",
                        h.size
                    )));
                }
                let mut buf = Vec::new();
                tar.copy_data(&mut buf).map_err(|e| fail(e.to_string()))?;
                files.small.insert(name, buf);
                continue;
            }
            let expected = match name.strip_prefix("blobs/sha256/") {
                Some(hex) => Some((
                    Digest::from_hex(hex).map_err(|e| fail(format!("{name}: {e}")))?,
                    h.size,
                )),
                None => None,
            };
            if let Some((d, size)) = &expected
                && self.blobs.contains(d, *size)
            {
                files.blobs.insert(name, (d.clone(), *size));
                continue; // the reader skips the data
            }
            let mut w = self.blobs.writer(expected.clone())?;
            tar.copy_data(&mut w).map_err(|e| fail(e.to_string()))?;
            let size = w.written();
            let digest = w.commit().map_err(|e| fail(format!("{name}: {e}")))?;
            files.blobs.insert(name, (digest, size));
        }
        Ok(files)
    }

    fn fetch(
        &self,
        source: &Source,
        digest: &Digest,
        size: u64,
        path: &Path,
    ) -> Result<(), ImageError> {
        if self.blobs.contains(digest, size) {
            return Ok(());
        }
        match source {
            Source::Archive => Err(ImageError::Import {
                path: path.to_owned(),
                reason: match self.blobs.size(digest) {
                    Some(actual) => {
                        format!("blob {digest} is {actual} bytes but its descriptor says {size}")
                    }
                    None => format!("blob {digest} is referenced but not in the archive"),
                },
            }),
            Source::Layout(dir) => {
                let p = dir.join("blobs").join("sha256").join(digest.hex());
                let file = File::open(&p).map_err(|e| ImageError::Import {
                    path: path.to_owned(),
                    reason: format!("blob {digest} is referenced but missing ({e})"),
                })?;
                let mut r = BufReader::with_capacity(256 * 1024, file.take(size + 1));
                self.blobs
                    .put_reader(&mut r, Some((digest.clone(), size)))
                    .map_err(|e| ImageError::Import {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
                Ok(())
            }
        }
    }

    fn import_oci(
        &self,
        source: &Source,
        index_bytes: &[u8],
        base: &str,
        platform: &Platform,
        path: &Path,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let fail = |reason: String| ImageError::Import {
            path: path.to_owned(),
            reason,
        };
        let index: ImageIndex =
            serde_json::from_slice(index_bytes).map_err(|e| fail(format!("index.json: {e}")))?;
        if index.manifests().is_empty() {
            return Err(fail("index.json lists no images".into()));
        }
        let mut pending = Vec::new();
        for desc in index.manifests() {
            let ann = desc.annotations().clone().unwrap_or_default();
            let name = ann
                .get(CONTAINERD_NAME)
                .cloned()
                .or_else(|| {
                    ann.get(REF_NAME).map(|r| {
                        if r.contains('/') {
                            r.clone()
                        } else {
                            format!("{base}:{r}")
                        }
                    })
                })
                .unwrap_or_else(|| format!("{base}:latest"));
            let name = normalize_reference(&name)
                .ok_or_else(|| fail(format!("invalid image name {name:?} in index.json")))?;
            let mut digest = manifest::descriptor_digest(desc)?;
            let mut size = desc.size();
            let mut mt = desc.media_type().to_string();
            let mut from_index = None;
            self.fetch(source, &digest, size, path)?;
            let bytes = self
                .blobs
                .read_verified(&digest, manifest::MAX_MANIFEST_SIZE)?;
            let doc = match manifest::parse_document(&bytes, &digest, Some(&mt))? {
                Document::Index(nested) => {
                    let chosen = manifest::select_platform(&nested, &digest, platform)?;
                    from_index = Some(digest);
                    digest = manifest::descriptor_digest(chosen)?;
                    size = chosen.size();
                    mt = chosen.media_type().to_string();
                    self.fetch(source, &digest, size, path)?;
                    let bytes = self
                        .blobs
                        .read_verified(&digest, manifest::MAX_MANIFEST_SIZE)?;
                    match manifest::parse_document(&bytes, &digest, Some(&mt))? {
                        Document::Manifest(m) => m,
                        Document::Index(_) => {
                            return Err(fail(format!(
                                "{digest}: index nested more than one level"
                            )));
                        }
                    }
                }
                Document::Manifest(m) => m,
            };
            let rec = self.record_from(
                source_fetcher(self, source, path),
                name,
                &digest,
                size,
                &mt,
                from_index,
                &doc,
            )?;
            pending.push(rec);
        }
        self.commit_images(pending)
    }

    fn import_docker(
        &self,
        files: &ArchiveFiles,
        manifest_json: &[u8],
        base: &str,
        path: &Path,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let fail = |reason: String| ImageError::Import {
            path: path.to_owned(),
            reason,
        };
        let entries: Vec<DockerManifestEntry> = serde_json::from_slice(manifest_json)
            .map_err(|e| fail(format!("manifest.json: {e}")))?;
        let mut pending = Vec::new();
        for e in entries {
            let (config, config_size) = files.lookup(&e.config).ok_or_else(|| {
                fail(format!(
                    "config {} listed in manifest.json is not in the archive",
                    e.config
                ))
            })?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let (d, size) = files.lookup(l).ok_or_else(|| {
                    fail(format!(
                        "layer {l} listed in manifest.json is not in the archive"
                    ))
                })?;
                let mt = match sniff(&self.blobs.path(&d)) {
                    Some(Compression::Gzip) => manifest::DOCKER_LAYER_GZIP,
                    Some(Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
                    None => manifest::DOCKER_LAYER,
                };
                layers.push(
                    serde_json::json!({"mediaType": mt, "size": size, "digest": d.to_string()}),
                );
            }
            let m = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": manifest::DOCKER_MANIFEST,
                "config": {"mediaType": manifest::DOCKER_CONFIG, "size": config_size, "digest": config.to_string()},
                "layers": layers,
            });
            let bytes = serde_json::to_vec(&m).map_err(|e| fail(e.to_string()))?;
            let digest = self.blobs.put(&bytes)?;
            let doc: ImageManifest =
                serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
            let names = e
                .repo_tags
                .clone()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| vec![format!("{base}:latest")]);
            for n in names {
                let name = normalize_reference(&n)
                    .ok_or_else(|| fail(format!("invalid RepoTag {n:?}")))?;
                let rec = self.record_from(
                    |_: &Digest, _: u64| Ok(()),
                    name,
                    &digest,
                    bytes.len() as u64,
                    manifest::DOCKER_MANIFEST,
                    None,
                    &doc,
                )?;
                pending.push(rec);
            }
        }
        self.commit_images(pending)
    }

    /// Builds an image record from a manifest whose blobs are fetched by
    /// `fetch` (a no-op when they are already stored): reads and checks the
    /// config, checks every layer blob's presence and size.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_from(
        &self,
        fetch: impl Fn(&Digest, u64) -> Result<(), ImageError>,
        name: String,
        digest: &Digest,
        size: u64,
        media_type: &str,
        index: Option<Digest>,
        m: &ImageManifest,
    ) -> Result<ImageRecord, ImageError> {
        let config = manifest::descriptor_digest(m.config())?;
        fetch(&config, m.config().size())?;
        let cfg_bytes = self
            .blobs
            .read_verified(&config, manifest::MAX_CONFIG_SIZE)?;
        let info = manifest::parse_config(&cfg_bytes, &config, m.layers().len())?;
        let mut layers = Vec::new();
        for (l, diff_id) in m.layers().iter().zip(info.diff_ids) {
            let d = manifest::descriptor_digest(l)?;
            fetch(&d, l.size())?;
            if !self.blobs.contains(&d, l.size()) {
                return Err(crate::blob::BlobError::SizeMismatch {
                    digest: d.clone(),
                    expected: l.size(),
                    actual: self.blobs.size(&d).unwrap_or(0),
                }
                .into());
            }
            layers.push(LayerRecord {
                digest: d,
                size: l.size(),
                media_type: l.media_type().to_string(),
                diff_id,
            });
        }
        let t = now();
        Ok(ImageRecord {
            name,
            manifest: digest.clone(),
            manifest_size: size,
            manifest_media_type: media_type.to_owned(),
            index,
            config,
            config_size: cfg_bytes.len() as u64,
            layers,
            platform: info.platform,
            created: t,
            last_used: t,
        })
    }

    /// Unpacks every pending image, then registers them all.
    fn commit_images(&self, pending: Vec<ImageRecord>) -> Result<Vec<ImageRecord>, ImageError> {
        for rec in &pending {
            self.ensure_snapshots(&rec.layers, &mut |_, _| {})?;
        }
        for rec in &pending {
            self.register(rec.clone())?;
        }
        Ok(pending)
    }
}

fn source_fetcher<'a>(
    store: &'a ImageStore,
    source: &'a Source,
    path: &'a Path,
) -> impl Fn(&Digest, u64) -> Result<(), ImageError> + 'a {
    move |d, size| store.fetch(source, d, size, path)
}

#[derive(Default)]
struct ArchiveFiles {
    small: HashMap<String, Vec<u8>>,
    blobs: HashMap<String, (Digest, u64)>,
    links: HashMap<String, String>,
}

impl ArchiveFiles {
    fn lookup(&self, name: &str) -> Option<(Digest, u64)> {
        let mut name = clean_name(name);
        for _ in 0..8 {
            if let Some(b) = self.blobs.get(&name) {
                return Some(b.clone());
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }
}

fn clean_name(n: &str) -> String {
    n.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn resolve_relative(from: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        from.split('/').collect()
    };
    if !target.starts_with('/') {
        parts.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

enum Compression {
    Gzip,
    Zstd,
}

fn sniff(path: &Path) -> Option<Compression> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).ok()?;
    f.read_exact(&mut head).ok()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head == [0x28, 0xb5, 0x2f, 0xfd] {
        Some(Compression::Zstd)
    } else {
        None
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_INDEX_FILE {
        return Err(format!(
            "{} bytes is more than the {MAX_INDEX_FILE}-byte limit",
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_symlinks_resolve() {
        assert_eq!(
            resolve_relative("abc/layer.tar", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(resolve_relative("abc/layer.tar", "../../x"), None);
        assert_eq!(clean_name("./a//b"), "a/b");
    }
}
