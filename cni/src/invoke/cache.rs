//! The result cache: what a successful ADD returned, kept for DEL, CHECK
//! and GC, one file per attachment at
//! `<cache_dir>/results/<network>-<containerID>-<ifname>` (libcni's layout).
//!
//! An entry is written durably before ADD returns: temp file in the same
//! directory, fsync, rename, fsync of the directory. A crash leaves either
//! the old entry, the new one, or a stray `.tmp-*` file (ignored by
//! [`ResultCache::list`]). The entry is removed after a successful DEL.
//!
//! The JSON follows libcni's `cniCacheV1` fields, except that `config` holds
//! the configuration list as JSON rather than base64 bytes; its `kind` is
//! therefore `herdCniCacheV1`, so do not share a cache dir with libcni users.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::InvokeError;

/// `kind` of every entry this cache writes.
pub const CACHE_KIND: &str = "herdCniCacheV1";

/// Largest cache entry read.
const MAX_ENTRY_BYTES: u64 = 4 * 1024 * 1024;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAttachment {
    /// Always [`CACHE_KIND`].
    pub kind: String,
    /// `CNI_CONTAINERID` of the ADD.
    pub container_id: String,
    /// `CNI_IFNAME` of the ADD.
    pub if_name: String,
    /// The network's name.
    pub network_name: String,
    /// `CNI_NETNS` of the ADD.
    #[serde(default)]
    pub netns: String,
    /// `CNI_ARGS` of the ADD, as pairs.
    #[serde(default)]
    pub cni_args: Vec<(String, String)>,
    /// The runtime config (capability arguments) of the ADD.
    #[serde(default)]
    pub capability_args: Map<String, Value>,
    /// The configuration list the ADD ran.
    pub config: Value,
    /// The final result of the ADD.
    pub result: Value,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    /// The cache under `cache_dir` (entries in `cache_dir/results`; created on first write).
    pub fn new(cache_dir: &Path) -> Self {
        ResultCache {
            dir: cache_dir.join("results"),
        }
    }

    /// Path of the entry for one attachment.
    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{network}-{container_id}-{ifname}"))
    }

    /// Durably writes an entry (replacing any previous one).
    pub fn write(&self, entry: &CachedAttachment) -> Result<(), InvokeError> {
        fs::create_dir_all(&self.dir).map_err(InvokeError::io("create cache dir", &self.dir))?;
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        let bytes = serde_json::to_vec(entry).map_err(|e| InvokeError::CacheCorrupt {
            path: path.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(source) = written {
            // Best effort: the temp name is ignored by readers anyway.
            let _ = fs::remove_file(&tmp);
            return Err(InvokeError::Io {
                op: "write cache entry",
                path,
                source,
            });
        }
        Ok(())
    }

    /// The entry for one attachment; `None` when there is none.
    pub fn read(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CachedAttachment>, InvokeError> {
        let path = self.path(network, container_id, ifname);
        match read_entry(&path) {
            Err(InvokeError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// Removes the entry of one attachment (missing is fine).
    pub fn remove(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), InvokeError> {
        let path = self.path(network, container_id, ifname);
        match fs::remove_file(&path) {
            Ok(()) => File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(InvokeError::io("sync cache dir", &self.dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(InvokeError::Io {
                op: "remove cache entry",
                path,
                source,
            }),
        }
    }

    /// Every entry of `network`, with the files that could not be read
    /// (named in their error) listed separately.
    pub fn list(
        &self,
        network: &str,
    ) -> Result<(Vec<CachedAttachment>, Vec<InvokeError>), InvokeError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(source) => {
                return Err(InvokeError::Io {
                    op: "list cache dir",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let prefix = format!("{network}-");
        let mut found = Vec::new();
        let mut bad = Vec::new();
        for entry in entries {
            let entry = entry.map_err(InvokeError::io("list cache dir", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Another network whose name extends ours ("a" vs "a-b") shares
            // the prefix: the entry's own networkName decides.
            if !name.starts_with(&prefix) {
                continue;
            }
            match read_entry(&entry.path()) {
                Ok(e) if e.network_name == network => found.push(e),
                Ok(_) => {}
                Err(e) => bad.push(e),
            }
        }
        found.sort_by(|a, b| (&a.container_id, &a.if_name).cmp(&(&b.container_id, &b.if_name)));
        Ok((found, bad))
    }
}

fn read_entry(path: &Path) -> Result<CachedAttachment, InvokeError> {
    let meta = fs::metadata(path).map_err(InvokeError::io("read cache entry", path))?;
    if meta.len() > MAX_ENTRY_BYTES {
        return Err(InvokeError::CacheCorrupt {
            path: path.to_owned(),
            reason: format!(
                "{} bytes is over the {MAX_ENTRY_BYTES}-byte limit",
                meta.len()
            ),
        });
    }
    let bytes = fs::read(path).map_err(InvokeError::io("read cache entry", path))?;
    let entry: CachedAttachment =
        serde_json::from_slice(&bytes).map_err(|e| InvokeError::CacheCorrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if entry.kind != CACHE_KIND {
        return Err(InvokeError::CacheCorrupt {
            path: path.to_owned(),
            reason: format!("kind {:?}, expected {CACHE_KIND}", entry.kind),
        });
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(net: &str, cid: &str) -> CachedAttachment {
        CachedAttachment {
            kind: CACHE_KIND.into(),
            container_id: cid.into(),
            if_name: "eth0".into(),
            network_name: net.into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![("K".into(), "V".into())],
            capability_args: Map::new(),
            config: serde_json::json!({"name": net}),
            result: serde_json::json!({"cniVersion": "1.0.0", "ips": []}),
        }
    }

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let c = ResultCache::new(dir.path());
        assert_eq!(c.read("a", "c1", "eth0").unwrap(), None);
        assert!(c.list("a").unwrap().0.is_empty());
        c.write(&entry("a", "c1")).unwrap();
        c.write(&entry("a", "c2")).unwrap();
        c.write(&entry("a-b", "c1")).unwrap();
        assert_eq!(c.read("a", "c1", "eth0").unwrap(), Some(entry("a", "c1")));
        assert!(dir.path().join("results/a-c1-eth0").is_file());
        let (listed, bad) = c.list("a").unwrap();
        assert_eq!(listed, vec![entry("a", "c1"), entry("a", "c2")]);
        assert!(bad.is_empty());
        c.remove("a", "c1", "eth0").unwrap();
        c.remove("a", "c1", "eth0").unwrap();
        assert_eq!(c.read("a", "c1", "eth0").unwrap(), None);
        fs::write(c.path("a", "zz", "eth0"), "{").unwrap();
        assert!(matches!(
            c.read("a", "zz", "eth0"),
            Err(InvokeError::CacheCorrupt { .. })
        ));
        let (listed, bad) = c.list("a").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(bad.len(), 1);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("results"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
