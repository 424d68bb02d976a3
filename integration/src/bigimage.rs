//! Size- and depth-stress images.
//!
//! [`write_big_image`] writes `total_bytes` of incompressible pseudo-random
//! file data split across gzip layers, streamed to disk (memory use is a
//! few chunks, not the image). The data comes from SplitMix64 seeded with
//! `seed`, implemented here so the bytes, and so every digest, are stable
//! across runs, machines and dependency upgrades.
//!
//! [`write_deep_image`] writes an image of N small gzip layers to exercise
//! overlay `lowerdir` length limits; layer 1 also carries busybox so a
//! container can run `cat /layerN`.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::oci::{Compression, LayoutWriter, Platform};
use crate::tarw::{Entry, TarWriter};
use crate::testimage::{
    BuiltImage, DEFAULT_BUSYBOX, Node, base_nodes, file, tar_from_nodes, write_image,
};

/// Reference of the benchmark image.
pub const BIG_REF: &str = "herd.test/big:latest";
/// Reference of the deep image.
pub const DEEP_REF: &str = "herd.test/deep:latest";

const MIB: u64 = 1024 * 1024;

/// SplitMix64: a tiny, fixed PRNG whose output never changes.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Reads an endless stream of pseudo-random bytes.
#[derive(Debug)]
struct RandReader(SplitMix64);

impl Read for RandReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            let v = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

/// Writes `total_bytes` of random file data in `layers` gzip layers as an
/// OCI layout (`herd.test/big:latest`, linux/amd64). Each layer holds
/// `big/layerI/fileJ` files of 1–8 MiB (the last one of a layer shorter);
/// layer sizes differ by at most one byte. Deterministic given `seed`.
pub fn write_big_image(
    dir: &Path,
    total_bytes: u64,
    layers: usize,
    seed: u64,
) -> Result<BuiltImage> {
    if layers == 0 {
        bail!("big image needs at least one layer");
    }
    let mut layout = LayoutWriter::create(dir)?;
    let mut rng = SplitMix64::new(seed);
    let n = layers as u64;
    let mut built = Vec::new();
    let mut history = Vec::new();
    for i in 0..n {
        let share = total_bytes / n + u64::from(i < total_bytes % n);
        // Level 1: the data is incompressible, so spend no time trying.
        let w = layout.layer(Compression::Gzip, 1)?;
        let mut tar = TarWriter::new(w);
        tar.entry(&Entry::dir("big/", 0o755))?;
        tar.entry(&Entry::dir(&format!("big/layer{i}/"), 0o755))?;
        let mut left = share;
        let mut j = 0;
        while left > 0 {
            let size = (MIB + rng.next_u64() % (7 * MIB + 1)).min(left);
            let mut data = RandReader(SplitMix64::new(rng.next_u64()));
            tar.entry_with_data(
                &Entry::file(&format!("big/layer{i}/file{j}"), 0o644),
                size,
                &mut data,
            )?;
            left -= size;
            j += 1;
        }
        built.push(layout.add_layer(tar.finish()?)?);
        history.push(format!("herd-integration: {share} random bytes"));
    }
    let history: Vec<&str> = history.iter().map(String::as_str).collect();
    let image = write_image(
        &mut layout,
        BIG_REF,
        &[Platform::amd64()],
        &built,
        &history,
        &BTreeMap::new(),
    )?;
    layout.write_index(std::slice::from_ref(&image.top))?;
    Ok(image)
}

/// Writes an OCI layout (`herd.test/deep:latest`, linux/amd64) of `layers`
/// gzip layers; layer I (1-based) adds the file `/layerI` containing `I\n`,
/// and layer 1 also holds the busybox base layer's contents.
pub fn write_deep_image(dir: &Path, layers: usize) -> Result<BuiltImage> {
    if layers == 0 {
        bail!("deep image needs at least one layer");
    }
    let mut layout = LayoutWriter::create(dir)?;
    let mut built = Vec::new();
    let mut history = Vec::new();
    for i in 1..=layers {
        let mut nodes: BTreeMap<String, Node> = if i == 1 {
            base_nodes(Path::new(DEFAULT_BUSYBOX)).context("building busybox base")?
        } else {
            BTreeMap::new()
        };
        nodes.insert(
            format!("layer{i}"),
            file(0o644, format!("{i}\n").as_bytes()),
        );
        let tar = tar_from_nodes(nodes)?;
        built.push(layout.put_layer(&tar, Compression::Gzip)?);
        history.push(format!("herd-integration: layer {i}"));
    }
    let history: Vec<&str> = history.iter().map(String::as_str).collect();
    let image = write_image(
        &mut layout,
        DEEP_REF,
        &[Platform::amd64()],
        &built,
        &history,
        &BTreeMap::new(),
    )?;
    layout.write_index(std::slice::from_ref(&image.top))?;
    Ok(image)
}
