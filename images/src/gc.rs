//! Garbage collection.
//!
//! [`ImageStore::collect_garbage`] is mark-and-sweep under the exclusive GC
//! lock (writers hold it shared, so nothing is mid-ingest): blobs reachable
//! from an image, snapshots on the chains of images and mounted rootfs are
//! kept; everything else in `blobs/`, `snapshots/` and `ingest/` goes,
//! including the leftovers of a crash.
//!
//! [`ImageStore::gc_by_threshold`] is the kubelet's image GC: when the image
//! filesystem is above `high_threshold_percent` used, unused images are
//! removed least recently used first (skipping those younger than
//! `min_age`) until usage would fall below `low_threshold_percent`.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::digest::Digest;
use crate::fsutil;
use crate::metadata::{Meta, now};
use crate::store::{ImageError, ImageStore, io_err};

/// Kubelet-style thresholds.
#[derive(Debug, Clone)]
pub struct GcPolicy {
    /// Start collecting above this disk usage (kubelet default 85).
    pub high_threshold_percent: u8,
    /// Collect until usage is below this (kubelet default 80).
    pub low_threshold_percent: u8,
    /// Never remove images used or stored more recently than this (kubelet default 2 min).
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

/// Capacity and free space of the image filesystem.
#[derive(Debug, Clone, Copy)]
pub struct DiskUsage {
    /// Total bytes.
    pub capacity: u64,
    /// Bytes available.
    pub available: u64,
}

impl DiskUsage {
    /// statvfs of the store's filesystem.
    pub fn of(store: &ImageStore) -> Result<Self, ImageError> {
        let st = rustix::fs::statvfs(store.root())
            .map_err(|e| io_err("statvfs", store.root())(e.into()))?;
        Ok(Self {
            capacity: st.f_blocks * st.f_frsize,
            available: st.f_bavail * st.f_frsize,
        })
    }
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Image names removed.
    pub images: Vec<String>,
    /// Blobs removed.
    pub blobs: usize,
    /// Snapshots removed.
    pub snapshots: usize,
    /// Bytes freed (blob sizes plus snapshot contents).
    pub bytes: u64,
}

fn live_chains(meta: &Meta, images: &[crate::metadata::ImageRecord]) -> BTreeSet<Digest> {
    let mut live = BTreeSet::new();
    let mut push_chain = |top: Option<Digest>| {
        let mut cur = top;
        while let Some(c) = cur {
            cur = meta.snapshots.get(&c).and_then(|s| s.parent.clone());
            if !live.insert(c) {
                break;
            }
        }
    };
    for img in images {
        push_chain(img.chain_ids().last().cloned());
    }
    for m in meta.mounts.values() {
        push_chain(m.top.clone());
    }
    live
}

impl ImageStore {
    /// Removes every blob and snapshot no image or mount references, and
    /// leftovers of interrupted writes.
    pub fn collect_garbage(&self) -> Result<GcReport, ImageError> {
        let _lock = self.gc_lock()?;
        let mut report = GcReport::default();
        let meta = self.meta.read()?;
        let images: Vec<_> = meta.images.values().cloned().collect();
        let live_blobs: BTreeSet<Digest> = images
            .iter()
            .flat_map(|i| i.blobs().cloned().collect::<Vec<_>>())
            .collect();
        for d in self.blobs.list()? {
            if !live_blobs.contains(&d) {
                report.bytes += self.blobs.size(&d).unwrap_or(0);
                self.blobs.remove(&d)?;
                report.blobs += 1;
            }
        }
        let live = live_chains(&meta, &images);
        let dead: Vec<Digest> = meta
            .snapshots
            .keys()
            .filter(|c| !live.contains(*c))
            .cloned()
            .collect();
        let live_ids: BTreeSet<String> = meta
            .snapshots
            .iter()
            .filter(|(c, _)| live.contains(*c))
            .map(|(_, s)| s.id.to_string())
            .collect();
        self.meta.update(|m| {
            for c in &dead {
                m.snapshots.remove(c);
            }
            Ok::<_, ImageError>(())
        })?;
        // Sweep directories after the metadata no longer names them: a
        // crash in between leaves only unnamed directories, swept next time.
        let snaps = self.root.join("snapshots");
        for entry in std::fs::read_dir(&snaps)
            .map_err(io_err("list", &snaps))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live_ids.contains(&name) {
                report.bytes += fsutil::disk_usage(&entry.path());
                fsutil::remove_dir_all_if_exists(&entry.path())
                    .map_err(io_err("remove", &entry.path()))?;
                if !name.starts_with("tmp-") {
                    report.snapshots += 1;
                }
            }
        }
        let ingest = self.blobs.ingest_dir().to_owned();
        for entry in std::fs::read_dir(&ingest)
            .map_err(io_err("list", &ingest))?
            .flatten()
        {
            let _ = std::fs::remove_file(entry.path());
        }
        // Rootfs work dirs whose mount record is gone (crash during removal).
        let mounts_dir = self.root.join("mounts");
        for entry in std::fs::read_dir(&mounts_dir)
            .map_err(io_err("list", &mounts_dir))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !meta.mounts.contains_key(&name) {
                fsutil::remove_dir_all_if_exists(&entry.path())
                    .map_err(io_err("remove", &entry.path()))?;
            }
        }
        Ok(report)
    }

    /// Images no rootfs mount uses.
    fn unused_images(&self) -> Result<Vec<crate::metadata::ImageRecord>, ImageError> {
        let meta = self.meta.read()?;
        Ok(meta
            .images
            .values()
            .filter(|i| {
                !meta
                    .mounts
                    .values()
                    .any(|m| m.manifest == i.manifest || m.image == i.name)
            })
            .cloned()
            .collect())
    }

    /// `herd image prune`: with `all`, removes every unused image first;
    /// then collects garbage.
    pub fn prune(&self, all: bool) -> Result<GcReport, ImageError> {
        let mut removed = Vec::new();
        if all {
            for img in self.unused_images()? {
                self.remove(&img.name)?;
                removed.push(img.name);
            }
        }
        let mut report = self.collect_garbage()?;
        report.images = removed;
        Ok(report)
    }

    /// Kubelet-style threshold GC with an injectable disk-usage probe.
    pub fn gc_by_threshold(
        &self,
        policy: &GcPolicy,
        usage: &dyn Fn() -> Result<DiskUsage, ImageError>,
    ) -> Result<GcReport, ImageError> {
        let u = usage()?;
        if u.capacity == 0 {
            return Ok(GcReport::default());
        }
        let used = u.capacity.saturating_sub(u.available);
        if used * 100 < u.capacity * u64::from(policy.high_threshold_percent) {
            return Ok(GcReport::default());
        }
        let target = u.capacity * u64::from(policy.low_threshold_percent) / 100;
        let mut to_free = used.saturating_sub(target);
        let mut candidates = self.unused_images()?;
        candidates.sort_by_key(|i| i.last_used);
        let cutoff = now().saturating_sub(policy.min_age.as_secs());
        let all: Vec<_> = self.list()?;
        let mut removed = Vec::new();
        for img in candidates {
            if to_free == 0 {
                break;
            }
            if img.last_used > cutoff {
                continue;
            }
            // Only bytes no other remaining image shares are freed.
            let others: BTreeSet<&Digest> = all
                .iter()
                .filter(|o| o.name != img.name && !removed.contains(&o.name))
                .flat_map(|o| o.blobs())
                .collect();
            let freed: u64 = img
                .layers
                .iter()
                .filter(|l| !others.contains(&l.digest))
                .map(|l| l.size)
                .sum();
            self.remove(&img.name)?;
            to_free = to_free.saturating_sub(freed);
            removed.push(img.name);
        }
        let mut report = self.collect_garbage()?;
        report.images = removed;
        Ok(report)
    }
}
