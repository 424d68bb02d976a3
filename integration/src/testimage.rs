//! The project's busybox test images, written as real OCI image layouts.
//!
//! Layer 1 ("base") holds a static busybox (`bin/busybox`, 0755) with a
//! `bin/<applet> -> busybox` symlink for every applet it lists, `etc/passwd`
//! (root, nobody), `etc/group`, `tmp/` (1777), `var/www/index.html`
//! (`hello from herd\n`), plus `etc/deleteme` and `opaque/old.txt`, which
//! layer 2 hides. Layer 2 ("overlay") holds a whiteout `etc/.wh.deleteme`, an
//! opaque `opaque/` (`.wh..wh..opq`, `new.txt`), `data/file.txt` with a hard
//! link `data/hardlink.txt`, a symlink `data/link -> file.txt`,
//! `data/xattr.txt` carrying PAX `SCHILY.xattr.user.herd=test`, and a setuid
//! `data/suid` (04755).
//!
//! Guarantees: output is byte-for-byte deterministic for a given busybox
//! binary (sorted entries, parent directories first, mtime [`tarw::MTIME`],
//! uid/gid 0); every blob is stored under the sha256 of its bytes; manifests
//! and indexes carry exact sizes; config `rootfs.diff_ids` are the sha256 of
//! the uncompressed layer tars. For several platforms the layers are shared
//! (same busybox bytes, whatever the architecture) but each platform gets its
//! own config, so config and manifest digests differ per platform.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::oci::{
    ANN_IMAGE_NAME, ANN_REF_NAME, BuiltLayer, Compression, Descriptor, LayoutWriter, MT_CONFIG,
    MT_INDEX, MT_MANIFEST, Platform, split_ref,
};
use crate::tarw::{Entry, TarWriter};

/// Fixed creation time of every fixture image.
pub const CREATED: &str = "2024-01-01T00:00:00Z";
/// `PATH` set in every fixture image config.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Contents of `var/www/index.html` in the base layer.
pub const INDEX_HTML: &str = "hello from herd\n";
/// Debian's busybox-static.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
/// Applets the base layer must link; writing fails if busybox lacks one.
pub const REQUIRED_APPLETS: &[&str] = &[
    "sh", "httpd", "wget", "nc", "sleep", "cat", "ls", "echo", "id", "ip", "mkdir", "rm", "env",
    "dd", "head", "true", "false",
];

/// What to build.
#[derive(Clone, Debug)]
pub struct ImageOpts {
    /// Full reference, e.g. `herd.test/busybox:latest`.
    pub ref_name: String,
    pub compression: Compression,
    /// One platform gives a plain manifest; several give a nested index.
    pub platforms: Vec<Platform>,
    /// The static busybox to package (`/bin/busybox` by default).
    pub busybox: PathBuf,
}

impl ImageOpts {
    /// Gzip, linux/amd64, `/bin/busybox`.
    pub fn new(ref_name: &str) -> Self {
        Self {
            ref_name: ref_name.into(),
            compression: Compression::Gzip,
            platforms: vec![Platform::amd64()],
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
        }
    }
}

/// One platform's manifest as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltManifest {
    pub platform: Platform,
    pub digest: String,
    pub size: u64,
    pub config_digest: String,
    pub config_size: u64,
    pub layers: Vec<BuiltLayer>,
}

impl BuiltManifest {
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }
}

/// One tagged image in a layout, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// Full reference (`herd.test/busybox:latest`).
    pub ref_name: String,
    /// The `org.opencontainers.image.ref.name` annotation (`latest`).
    pub tag: String,
    /// The `index.json` entry: the manifest, or the nested index when there
    /// are several platforms.
    pub top: Descriptor,
    /// The first platform's manifest (the only one for single-platform).
    pub manifest: BuiltManifest,
    /// Every platform's manifest, in `ImageOpts::platforms` order.
    pub platforms: Vec<BuiltManifest>,
    /// Sum of the sizes of the distinct blobs reachable from `top`,
    /// including `top` itself.
    pub total_size: u64,
}

/// Writes the busybox image as an OCI layout in `dir` (created if needed).
pub fn write_oci_layout(dir: &Path, opts: &ImageOpts) -> Result<BuiltImage> {
    let mut layout = LayoutWriter::create(dir)?;
    let layers = busybox_layers(&mut layout, opts)?;
    let history = [
        "herd-integration: busybox base",
        "herd-integration: overlay",
    ];
    let image = write_image(
        &mut layout,
        &opts.ref_name,
        &opts.platforms,
        &layers,
        &history,
        &BTreeMap::new(),
    )?;
    layout.write_index(std::slice::from_ref(&image.top))?;
    Ok(image)
}

/// Writes one layout holding the busybox image under each of `refs` (for
/// "import all tags"). The tags share layers but each config carries the
/// label `io.herd.test.tag=<tag>`, so every tag has distinct config and
/// manifest digests. Only the first platform of `opts` is used.
pub fn write_tags_layout(dir: &Path, refs: &[&str], opts: &ImageOpts) -> Result<Vec<BuiltImage>> {
    let mut layout = LayoutWriter::create(dir)?;
    let layers = busybox_layers(&mut layout, opts)?;
    let history = [
        "herd-integration: busybox base",
        "herd-integration: overlay",
    ];
    let platform = opts
        .platforms
        .first()
        .cloned()
        .unwrap_or_else(Platform::amd64);
    let mut images = Vec::new();
    for r in refs {
        let labels = BTreeMap::from([("io.herd.test.tag".to_string(), split_ref(r).1.to_string())]);
        let image = write_image(
            &mut layout,
            r,
            std::slice::from_ref(&platform),
            &layers,
            &history,
            &labels,
        )?;
        images.push(image);
    }
    let tops: Vec<Descriptor> = images.iter().map(|i| i.top.clone()).collect();
    layout.write_index(&tops)?;
    Ok(images)
}

/// Wraps `layer_tar` (an uncompressed tar, possibly hostile) as the single
/// layer of an otherwise valid linux/amd64 image: digests, sizes and diff_id
/// are correct, so only the tar contents can be blamed.
pub fn write_image_with_layer(
    dir: &Path,
    ref_name: &str,
    layer_tar: &[u8],
    compression: Compression,
) -> Result<BuiltImage> {
    let mut layout = LayoutWriter::create(dir)?;
    let layer = layout.put_layer(layer_tar, compression)?;
    let image = write_image(
        &mut layout,
        ref_name,
        &[Platform::amd64()],
        &[layer],
        &["herd-integration: custom layer"],
        &BTreeMap::new(),
    )?;
    layout.write_index(std::slice::from_ref(&image.top))?;
    Ok(image)
}

/// Writes configs and manifests for `platforms` over `layers` (plus a nested
/// index for several platforms) and returns the image; `index.json` is left
/// to the caller. `history[i]` describes `layers[i]`.
pub(crate) fn write_image(
    layout: &mut LayoutWriter,
    ref_name: &str,
    platforms: &[Platform],
    layers: &[BuiltLayer],
    history: &[&str],
    labels: &BTreeMap<String, String>,
) -> Result<BuiltImage> {
    if platforms.is_empty() {
        bail!("image {ref_name}: no platforms requested");
    }
    let mut manifests = Vec::new();
    let mut sizes: BTreeMap<String, u64> =
        layers.iter().map(|l| (l.digest.clone(), l.size)).collect();
    for platform in platforms {
        let config = config_json(platform, layers, history, labels);
        let config_desc = layout.put_json(MT_CONFIG, &config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": config_desc.to_json(),
            "layers": layers.iter().map(|l| l.descriptor().to_json()).collect::<Vec<_>>(),
        });
        let manifest_desc = layout.put_json(MT_MANIFEST, &manifest)?;
        sizes.insert(config_desc.digest.clone(), config_desc.size);
        sizes.insert(manifest_desc.digest.clone(), manifest_desc.size);
        manifests.push(BuiltManifest {
            platform: platform.clone(),
            digest: manifest_desc.digest,
            size: manifest_desc.size,
            config_digest: config_desc.digest,
            config_size: config_desc.size,
            layers: layers.to_vec(),
        });
    }
    let mut top = match manifests.as_slice() {
        [only] => Descriptor::new(MT_MANIFEST, only.digest.clone(), only.size),
        many => {
            let entries: Vec<Value> = many
                .iter()
                .map(|m| {
                    let mut d = Descriptor::new(MT_MANIFEST, m.digest.clone(), m.size);
                    d.platform = Some(m.platform.clone());
                    d.to_json()
                })
                .collect();
            let index = json!({ "schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries });
            let d = layout.put_json(MT_INDEX, &index)?;
            sizes.insert(d.digest.clone(), d.size);
            d
        }
    };
    let tag = split_ref(ref_name).1.to_string();
    top.annotations.insert(ANN_REF_NAME.into(), tag.clone());
    top.annotations
        .insert(ANN_IMAGE_NAME.into(), ref_name.into());
    let manifest = manifests[0].clone();
    Ok(BuiltImage {
        ref_name: ref_name.into(),
        tag,
        top,
        manifest,
        platforms: manifests,
        total_size: sizes.values().sum(),
    })
}

/// The image config (OCI; also valid as a docker image config).
pub(crate) fn config_json(
    platform: &Platform,
    layers: &[BuiltLayer],
    history: &[&str],
    labels: &BTreeMap<String, String>,
) -> Value {
    let mut config = json!({ "Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/" });
    if !labels.is_empty() {
        config["Labels"] = json!(labels);
    }
    let mut v = json!({
        "created": CREATED,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>() },
        "history": history.iter().map(|h| json!({ "created": CREATED, "created_by": h })).collect::<Vec<_>>(),
    });
    if let Some(variant) = &platform.variant {
        v["variant"] = json!(variant);
    }
    v
}

fn busybox_layers(layout: &mut LayoutWriter, opts: &ImageOpts) -> Result<Vec<BuiltLayer>> {
    let base = base_layer_tar(&opts.busybox)?;
    let overlay = overlay_layer_tar()?;
    Ok(vec![
        layout.put_layer(&base, opts.compression)?,
        layout.put_layer(&overlay, opts.compression)?,
    ])
}

/// A file-system node of a layer being assembled.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Dir(u32),
    File {
        mode: u32,
        data: Vec<u8>,
        xattr: Option<(&'static str, &'static [u8])>,
    },
    Symlink(String),
    Hardlink(String),
}

/// Builds a sorted tar from `nodes`, adding `0755` entries for missing
/// parent directories. Directory paths are written with a trailing `/`.
pub(crate) fn tar_from_nodes(nodes: BTreeMap<String, Node>) -> Result<Vec<u8>> {
    let mut all = nodes;
    let paths: Vec<String> = all.keys().cloned().collect();
    for p in paths {
        let mut cur = p.as_str();
        while let Some((parent, _)) = cur.rsplit_once('/') {
            all.entry(parent.to_string()).or_insert(Node::Dir(0o755));
            cur = parent;
        }
    }
    let mut tar = TarWriter::new(Vec::new());
    for (path, node) in &all {
        match node {
            Node::Dir(mode) => tar.entry(&Entry::dir(&format!("{path}/"), *mode))?,
            Node::File { mode, data, xattr } => {
                let mut e = Entry::file(path, *mode);
                if let Some((key, value)) = xattr {
                    e.pax.push((key, value));
                }
                tar.file(&e, data)?;
            }
            Node::Symlink(target) => tar.entry(&Entry::symlink(path, target))?,
            Node::Hardlink(target) => tar.entry(&Entry::hardlink(path, target))?,
        }
    }
    tar.finish()
}

pub(crate) fn file(mode: u32, data: &[u8]) -> Node {
    Node::File {
        mode,
        data: data.to_vec(),
        xattr: None,
    }
}

/// Layer 1: busybox, applet links, /etc basics, and the files layer 2 hides.
pub fn base_layer_tar(busybox: &Path) -> Result<Vec<u8>> {
    tar_from_nodes(base_nodes(busybox)?)
}

pub(crate) fn base_nodes(busybox: &Path) -> Result<BTreeMap<String, Node>> {
    let binary = fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !out.status.success() {
        bail!(
            "{} --list failed: {}",
            busybox.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listing = String::from_utf8(out.stdout).context("busybox --list output is not utf-8")?;
    let applets: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .collect();
    for required in REQUIRED_APPLETS {
        if !applets.contains(required) {
            bail!("{} lacks required applet {required}", busybox.display());
        }
    }
    let mut nodes = BTreeMap::new();
    nodes.insert("bin/busybox".to_string(), file(0o755, &binary));
    for applet in applets {
        nodes.insert(format!("bin/{applet}"), Node::Symlink("busybox".into()));
    }
    nodes.insert(
        "etc/passwd".into(),
        file(
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
    );
    nodes.insert(
        "etc/group".into(),
        file(0o644, b"root:x:0:\nnogroup:x:65534:\n"),
    );
    nodes.insert(
        "etc/deleteme".into(),
        file(0o644, b"removed by a whiteout in layer 2\n"),
    );
    nodes.insert(
        "opaque/old.txt".into(),
        file(0o644, b"hidden by an opaque dir in layer 2\n"),
    );
    nodes.insert("tmp".into(), Node::Dir(0o1777));
    nodes.insert("root".into(), Node::Dir(0o700));
    for d in ["dev", "proc", "sys"] {
        nodes.insert(d.into(), Node::Dir(0o755));
    }
    nodes.insert(
        "var/www/index.html".into(),
        file(0o644, INDEX_HTML.as_bytes()),
    );
    Ok(nodes)
}

/// Layer 2: whiteout, opaque dir, hard link, symlink, xattr, setuid.
pub fn overlay_layer_tar() -> Result<Vec<u8>> {
    let mut nodes = BTreeMap::new();
    nodes.insert("etc/.wh.deleteme".to_string(), file(0o644, b""));
    nodes.insert("opaque/.wh..wh..opq".into(), file(0o644, b""));
    nodes.insert("opaque/new.txt".into(), file(0o644, b"new in layer 2\n"));
    nodes.insert("data/file.txt".into(), file(0o644, b"file in layer 2\n"));
    nodes.insert(
        "data/hardlink.txt".into(),
        Node::Hardlink("data/file.txt".into()),
    );
    nodes.insert("data/link".into(), Node::Symlink("file.txt".into()));
    nodes.insert(
        "data/xattr.txt".into(),
        Node::File {
            mode: 0o644,
            data: b"has a user xattr\n".to_vec(),
            xattr: Some(("SCHILY.xattr.user.herd", b"test")),
        },
    );
    nodes.insert(
        "data/suid".into(),
        file(0o4755, b"#!/bin/sh\necho setuid\n"),
    );
    tar_from_nodes(nodes)
}
