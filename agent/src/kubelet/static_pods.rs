//! Static pods from a manifest directory, with the kubelet's rules
//! (`pkg/kubelet/config/{file,common}.go`).
//!
//! Guarantees:
//! - Only regular files (or links to them) directly in `dir` named
//!   `*.yaml`, `*.yml` or `*.json` are read; hidden files and
//!   subdirectories are ignored. A missing directory means no static pods.
//! - Every Pod document becomes a pod named `<name>-<nodeName>`
//!   (namespace `default` when empty), `spec.nodeName = nodeName`, uid = the
//!   first 16 bytes of sha256(node name, file path, document) in hex, and
//!   the annotations `kubernetes.io/config.source: file`,
//!   `kubernetes.io/config.hash: <uid>`, `kubernetes.io/config.seen`. The
//!   uid depends only on those inputs, so an agent restart finds the same
//!   uid and can re-adopt running containers; any content change changes it.
//! - A file that cannot be read, parsed, decoded or validated changes
//!   nothing: its previous pods stay (the error is logged and kept in
//!   [`StaticPodSource::errors`] until the file changes). Other kinds are
//!   logged and skipped. A pod name already provided by another file is
//!   skipped with a warning, as the kubelet does.
//! - A file whose (inode, size, mtime) did not change is not read again.
//! - [`StaticPodSource::scan`] reports `Upsert` for new or changed pods
//!   (changed = different uid) and `Remove` for pods gone with their file
//!   or their document; [`spawn`] scans every interval and sends them.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};

use crate::api::ApiError;
use crate::api::defaults::apply_defaults;
use crate::api::manifest::{self, ManifestError, Object};
use crate::api::validation::validate;

/// Annotation keys set on static pods.
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";

/// The default scan interval of [`spawn`].
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);

/// A change in the manifest directory.
#[derive(Debug, Clone, PartialEq)]
pub enum StaticPodChange {
    /// A pod was added or changed (the uid changes when the content does).
    Upsert(Box<Pod>),
    /// A pod's file was removed (or no longer contains it).
    Remove { namespace: String, name: String },
}

/// Why a manifest file was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StaticPodError {
    #[error("read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{path}: document {index}: {error}")]
    Decode {
        path: PathBuf,
        index: usize,
        error: Box<ApiError>,
    },
    #[error("{path}: document {index}: {error}")]
    Invalid {
        path: PathBuf,
        index: usize,
        error: Box<ApiError>,
    },
}

/// (namespace, name) of a pod.
type Key = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

#[derive(Debug, Default)]
struct FileState {
    stamp: Option<Stamp>,
    /// The pods of the last good version of the file.
    pods: BTreeMap<Key, Pod>,
    error: Option<StaticPodError>,
}

/// Scans a directory for pod manifests and reports changes.
#[derive(Debug)]
pub struct StaticPodSource {
    pub dir: PathBuf,
    pub node_name: String,
    files: BTreeMap<PathBuf, FileState>,
}

impl StaticPodSource {
    pub fn new(dir: PathBuf, node_name: String) -> StaticPodSource {
        StaticPodSource {
            dir,
            node_name,
            files: BTreeMap::new(),
        }
    }

    /// Files whose current version was rejected, with why.
    pub fn errors(&self) -> impl Iterator<Item = (&Path, &StaticPodError)> {
        self.files
            .iter()
            .filter_map(|(p, f)| f.error.as_ref().map(|e| (p.as_path(), e)))
    }

    /// The pods currently provided.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.files.values().flat_map(|f| f.pods.values())
    }

    /// One scan: the changes since the previous one.
    pub fn scan(&mut self) -> Vec<StaticPodChange> {
        let Some(listing) = self.list() else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !listing.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(state) = self.files.remove(&path) {
                tracing::info!(path = %path.display(), "static pod manifest removed");
                changes.extend(state.pods.into_keys().map(remove));
            }
        }
        for (path, stamp) in listing {
            if self.files.get(&path).and_then(|f| f.stamp) == Some(stamp) {
                continue;
            }
            let result = self.load(&path);
            let state = self.files.entry(path.clone()).or_default();
            state.stamp = Some(stamp);
            match result {
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "invalid static pod manifest, keeping its previous pods");
                    state.error = Some(e);
                }
                Ok(mut pods) => {
                    state.error = None;
                    let old = std::mem::take(&mut state.pods);
                    for (key, pod) in &mut pods {
                        match old.get(key) {
                            Some(prev) if prev.metadata.uid == pod.metadata.uid => {
                                // Unchanged: keep the first-seen time.
                                pod.metadata.annotations = prev.metadata.annotations.clone();
                            }
                            _ => changes.push(StaticPodChange::Upsert(Box::new(pod.clone()))),
                        }
                    }
                    changes.extend(
                        old.into_keys()
                            .filter(|k| !pods.contains_key(k))
                            .map(remove),
                    );
                    if let Some(state) = self.files.get_mut(&path) {
                        state.pods = pods;
                    }
                }
            }
        }
        changes
    }

    /// The manifest files of `dir` with their stamps; `None` when the
    /// directory cannot be listed (other than missing).
    fn list(&self) -> Option<BTreeMap<PathBuf, Stamp>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(BTreeMap::new()),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list static pod directory");
                return None;
            }
        };
        let mut out = BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let wanted = [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x));
            if name.starts_with('.') || !wanted {
                continue;
            }
            let path = entry.path();
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {
                    out.insert(path, Stamp::of(&m));
                }
                _ => {}
            }
        }
        Some(out)
    }

    /// Reads one file into its static pods, or why it is rejected.
    fn load(&self, path: &Path) -> Result<BTreeMap<Key, Pod>, StaticPodError> {
        let text = std::fs::read_to_string(path).map_err(|e| StaticPodError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let source_name = path.display().to_string();
        let docs = manifest::parse_documents(&text, &source_name)?;
        let mut pods = BTreeMap::new();
        for (i, doc) in docs.into_iter().enumerate() {
            let index = i + 1;
            let uid = static_uid(&self.node_name, path, &doc);
            let obj = manifest::decode(doc).map_err(|error| StaticPodError::Decode {
                path: path.to_path_buf(),
                index,
                error: Box::new(error),
            })?;
            let Object::Pod(pod) = obj else {
                tracing::info!(path = %path.display(), index, kind = obj.resource().kind(),
                    "ignoring non-pod object in static pod manifest");
                continue;
            };
            let mut obj = Object::Pod(Box::new(self.make_static(*pod, &uid)));
            apply_defaults(&mut obj);
            validate(&obj).map_err(|error| StaticPodError::Invalid {
                path: path.to_path_buf(),
                index,
                error: Box::new(error),
            })?;
            let Object::Pod(pod) = obj else { continue };
            let key = key_of(&pod);
            if let Some(owner) = self.owner_of(&key, path) {
                tracing::warn!(path = %path.display(), other = %owner.display(), pod = %key.1,
                    "static pod name already used by another manifest, skipping");
                continue;
            }
            pods.insert(key, *pod);
        }
        Ok(pods)
    }

    fn owner_of(&self, key: &Key, except: &Path) -> Option<&Path> {
        self.files
            .iter()
            .find(|(p, f)| p.as_path() != except && f.pods.contains_key(key))
            .map(|(p, _)| p.as_path())
    }

    /// The kubelet's static pod rewrite (`applyDefaults` in config/common.go).
    fn make_static(&self, mut pod: Pod, uid: &str) -> Pod {
        let node = self.node_name.to_lowercase();
        let meta = &mut pod.metadata;
        // An empty name is left empty so validation names the field.
        if let Some(name) = meta.name.as_mut().filter(|n| !n.is_empty()) {
            *name = format!("{name}-{node}");
        }
        if meta.namespace.as_deref().unwrap_or("").is_empty() {
            meta.namespace = Some("default".to_string());
        }
        meta.uid = Some(uid.to_string());
        let ann = meta.annotations.get_or_insert_with(BTreeMap::new);
        ann.insert(CONFIG_SOURCE.to_string(), "file".to_string());
        ann.insert(CONFIG_HASH.to_string(), uid.to_string());
        ann.insert(
            CONFIG_SEEN.to_string(),
            k8s_openapi::jiff::Timestamp::now().to_string(),
        );
        pod.spec.get_or_insert_with(Default::default).node_name = Some(self.node_name.clone());
        pod
    }
}

fn key_of(pod: &Pod) -> Key {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn remove((namespace, name): Key) -> StaticPodChange {
    StaticPodChange::Remove { namespace, name }
}

/// The static pod uid: hex of the first 16 bytes of
/// sha256("host:<node>\0file:<path>\0<document JSON>").
pub fn static_uid(node_name: &str, path: &Path, document: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(b"host:");
    h.update(node_name.as_bytes());
    h.update(b"\0file:");
    h.update(path.as_os_str().as_encoded_bytes());
    h.update(b"\0");
    h.update(document.to_string().as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Scans `source` at once and then every `interval` (on a blocking
/// thread), sending every change; ends when `tx` is closed.
pub fn spawn(
    source: StaticPodSource,
    interval: Duration,
    tx: tokio::sync::mpsc::UnboundedSender<StaticPodChange>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut source = Some(source);
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = ticker.tick() => {}
            }
            let Some(mut s) = source.take() else { return };
            let Ok((s, changes)) = tokio::task::spawn_blocking(move || {
                let changes = s.scan();
                (s, changes)
            })
            .await
            else {
                tracing::error!("static pod scan task failed");
                return;
            };
            source = Some(s);
            for change in changes {
                if tx.send(change).is_err() {
                    return;
                }
            }
        }
    })
}
