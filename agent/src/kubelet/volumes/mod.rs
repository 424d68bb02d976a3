//! Pod volumes: prepared on the host, bind-mounted into containers.
//!
//! Guarantees:
//! - [`setup`] is idempotent and cheap when nothing changed: directories and
//!   tmpfs mounts are created once (a mount is detected by device number,
//!   not by reading mountinfo), and configMap/secret/projected/downwardAPI
//!   payloads are rewritten only when their content or modes differ, with
//!   the kubelet's atomic writer ([`atomic`]): a container never sees a
//!   half-updated volume.
//! - Secret and projected volumes are on tmpfs, mounted before the first
//!   byte is written: secret data never reaches the disk. A failed mount is
//!   an error, never a fallback to disk. `emptyDir` with `medium: Memory` is
//!   a tmpfs of `sizeLimit` (else the node's memory).
//! - Disk volumes live at `<pods_dir>/<uid>/volumes/kubernetes.io~<kind>/<name>`.
//! - [`container_mounts`] keeps subPaths inside their volume: every
//!   component is checked after resolving symlinks, missing directories
//!   are created one at a time (never through a symlink), and the mount
//!   source is the resolved path.
//! - [`teardown`] unmounts everything under the pod's dir (deepest first,
//!   lazily when busy) and removes the dir only when no mount is left.
//!
//! Limits: `emptyDir.sizeLimit` on disk is not enforced; `fsGroup`
//! ownership is not applied to volume files; a subPath is resolved when the
//! container is created (a symlink swapped in afterwards is not re-checked
//! as the kubelet's fd-based bind does).

pub mod atomic;
pub mod host;
pub mod sources;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use herd_runtime::types::{Mount, MountPropagation};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::env::{ObjectSource, expand_env};
use crate::api::quantity;

/// What [`setup`] needs beyond the pod.
pub struct VolumeContext<'a> {
    pub objects: &'a dyn ObjectSource,
    /// `<root>/pods`: disk volumes at `<pods_dir>/<uid>/volumes/<kind>/<name>`.
    pub pods_dir: &'a Path,
    pub node_name: &'a str,
    /// Size of a Memory emptyDir without `sizeLimit`, and of secret
    /// tmpfs; also `limits.memory` of downward API files when unset.
    pub node_memory_bytes: u64,
    /// `limits.cpu` of downward API files when unset.
    pub node_cpu_millis: u64,
}

impl std::fmt::Debug for VolumeContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeContext")
            .field("pods_dir", &self.pods_dir)
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// The kind of a prepared volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    EmptyDir,
    EmptyDirMemory,
    HostPath,
    ConfigMap,
    Secret,
    Projected,
    DownwardApi,
}

impl VolumeKind {
    /// The kubelet's plugin directory name.
    pub fn dir_name(self) -> &'static str {
        match self {
            VolumeKind::EmptyDir | VolumeKind::EmptyDirMemory => "kubernetes.io~empty-dir",
            VolumeKind::HostPath => "kubernetes.io~host-path",
            VolumeKind::ConfigMap => "kubernetes.io~configmap",
            VolumeKind::Secret => "kubernetes.io~secret",
            VolumeKind::Projected => "kubernetes.io~projected",
            VolumeKind::DownwardApi => "kubernetes.io~downward-api",
        }
    }

    /// API data volumes are always mounted read-only.
    pub fn forced_read_only(self) -> bool {
        matches!(
            self,
            VolumeKind::ConfigMap
                | VolumeKind::Secret
                | VolumeKind::Projected
                | VolumeKind::DownwardApi
        )
    }
}

/// One volume ready to be bind-mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedVolume {
    pub name: String,
    pub kind: VolumeKind,
    pub host_path: PathBuf,
}

/// The pod's prepared volumes, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    pub volumes: BTreeMap<String, PreparedVolume>,
}

impl PodVolumes {
    pub fn get(&self, name: &str) -> Option<&PreparedVolume> {
        self.volumes.get(name)
    }
}

/// Why a volume could not be prepared or mounted. Setup failures render as
/// the kubelet's event: `MountVolume.SetUp failed for volume "x" : …`.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {kind} \"{name}\" not found")]
    NotFound {
        volume: String,
        kind: &'static str,
        name: String,
    },
    #[error(
        "MountVolume.SetUp failed for volume \"{volume}\" : references non-existent {kind} key: {key}"
    )]
    MissingKey {
        volume: String,
        kind: String,
        key: String,
    },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {reason}")]
    Source { volume: String, reason: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {reason}")]
    Invalid { volume: String, reason: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : unsupported volume type {kind}")]
    Unsupported { volume: String, kind: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
    HostPathType { volume: String, message: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {}: {source}", path.display())]
    Io {
        volume: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : mount tmpfs on {}: {source}", path.display())]
    Mount {
        volume: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot find volume \"{volume}\" to mount into container \"{container}\"")]
    NoVolume { container: String, volume: String },
    #[error("volume \"{volume}\": subPath {sub_path:?}: {reason}")]
    SubPath {
        volume: String,
        sub_path: String,
        reason: String,
    },
    #[error("volume \"{volume}\": invalid mountPropagation {value:?}: {reason}")]
    Propagation {
        volume: String,
        value: String,
        reason: &'static str,
    },
    #[error("invalid pod uid {0:?}")]
    PodUid(String),
    #[error("pod dir {}: {source}", path.display())]
    Teardown { path: PathBuf, source: io::Error },
    #[error("pod dir {}: still mounted after unmount: {}", path.display(), mount.display())]
    StillMounted { path: PathBuf, mount: PathBuf },
}

impl VolumeError {
    /// The volume the error is about, if any.
    pub fn volume(&self) -> Option<&str> {
        match self {
            VolumeError::NotFound { volume, .. }
            | VolumeError::MissingKey { volume, .. }
            | VolumeError::Source { volume, .. }
            | VolumeError::Invalid { volume, .. }
            | VolumeError::Unsupported { volume, .. }
            | VolumeError::HostPathType { volume, .. }
            | VolumeError::Io { volume, .. }
            | VolumeError::Mount { volume, .. }
            | VolumeError::NoVolume { volume, .. }
            | VolumeError::SubPath { volume, .. }
            | VolumeError::Propagation { volume, .. } => Some(volume),
            VolumeError::PodUid(_)
            | VolumeError::Teardown { .. }
            | VolumeError::StillMounted { .. } => None,
        }
    }
}

/// A single path component: no `/`, not `.`/`..`, not empty.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

fn pod_dir(pod_uid: &str, pods_dir: &Path) -> Result<PathBuf, VolumeError> {
    if !valid_name(pod_uid) {
        return Err(VolumeError::PodUid(pod_uid.to_string()));
    }
    Ok(pods_dir.join(pod_uid))
}

fn mkdir(volume: &str, dir: &Path, mode: u32) -> Result<(), VolumeError> {
    let io_err = |e: io::Error| VolumeError::Io {
        volume: volume.to_string(),
        path: dir.to_path_buf(),
        source: e,
    };
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_err)?;
    // The umask narrowed `mode`; set it exactly.
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io_err)
}

fn write_payload(volume: &str, dir: &Path, payload: &atomic::Payload) -> Result<(), VolumeError> {
    atomic::write(dir, payload)
        .map(drop)
        .map_err(|e| VolumeError::Io {
            volume: volume.to_string(),
            path: dir.to_path_buf(),
            source: e,
        })
}

/// Prepares every volume of the pod (see the module docs).
pub fn setup(pod: &Pod, ctx: &VolumeContext) -> Result<PodVolumes, VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let base = pod_dir(uid, ctx.pods_dir)?.join("volumes");
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = PodVolumes::default();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let name = v.name.as_str();
        if !valid_name(name) {
            return Err(VolumeError::Invalid {
                volume: name.to_string(),
                reason: "invalid volume name".to_string(),
            });
        }
        let src = sources::Ctx {
            volume: name,
            namespace,
            objects: ctx.objects,
            node_cpu_millis: ctx.node_cpu_millis,
            node_memory_bytes: ctx.node_memory_bytes,
        };
        let dir_of = |kind: VolumeKind| base.join(kind.dir_name()).join(name);
        let mut payload = atomic::Payload::new();
        let (kind, host_path) = if let Some(e) = &v.empty_dir {
            let memory = e.medium.as_deref() == Some("Memory");
            let kind = if memory {
                VolumeKind::EmptyDirMemory
            } else {
                VolumeKind::EmptyDir
            };
            let dir = dir_of(kind);
            mkdir(name, &dir, 0o777)?;
            if memory {
                let size = match &e.size_limit {
                    Some(q) => quantity::bytes(&q.0).map_err(|e| VolumeError::Invalid {
                        volume: name.to_string(),
                        reason: format!("sizeLimit {:?}: {e}", q.0),
                    })?,
                    None => ctx.node_memory_bytes,
                };
                host::ensure_tmpfs(name, &dir, size, 0o777)?;
            }
            (kind, dir)
        } else if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            host::check_host_path(name, &path, h.type_.as_deref().unwrap_or(""))?;
            (VolumeKind::HostPath, path)
        } else if let Some(c) = &v.config_map {
            let mode = c.default_mode.unwrap_or(sources::DEFAULT_MODE);
            let optional = c.optional == Some(true);
            sources::config_map(
                &src,
                &mut payload,
                &c.name,
                c.items.as_ref(),
                optional,
                mode,
            )?;
            (VolumeKind::ConfigMap, dir_of(VolumeKind::ConfigMap))
        } else if let Some(s) = &v.secret {
            let mode = s.default_mode.unwrap_or(sources::DEFAULT_MODE);
            let optional = s.optional == Some(true);
            let secret_name = s.secret_name.as_deref().unwrap_or("");
            sources::secret(
                &src,
                &mut payload,
                secret_name,
                s.items.as_ref(),
                optional,
                mode,
            )?;
            (VolumeKind::Secret, dir_of(VolumeKind::Secret))
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.unwrap_or(sources::DEFAULT_MODE);
            let srcs = p.sources.as_deref().unwrap_or_default();
            sources::projected(&src, &mut payload, pod, srcs, mode)?;
            (VolumeKind::Projected, dir_of(VolumeKind::Projected))
        } else if let Some(d) = &v.downward_api {
            let mode = d.default_mode.unwrap_or(sources::DEFAULT_MODE);
            let items = d.items.as_deref().unwrap_or_default();
            sources::downward_api(&src, &mut payload, pod, items, mode)?;
            (VolumeKind::DownwardApi, dir_of(VolumeKind::DownwardApi))
        } else {
            return Err(VolumeError::Unsupported {
                volume: name.to_string(),
                kind: unsupported_kind(v),
            });
        };
        match kind {
            VolumeKind::Secret | VolumeKind::Projected => {
                mkdir(name, &host_path, 0o755)?;
                host::ensure_tmpfs(name, &host_path, ctx.node_memory_bytes, 0o755)?;
                write_payload(name, &host_path, &payload)?;
            }
            VolumeKind::ConfigMap | VolumeKind::DownwardApi => {
                mkdir(name, &host_path, 0o755)?;
                write_payload(name, &host_path, &payload)?;
            }
            _ => {}
        }
        out.volumes.insert(
            name.to_string(),
            PreparedVolume {
                name: name.to_string(),
                kind,
                host_path,
            },
        );
    }
    Ok(out)
}

fn unsupported_kind(v: &k8s_openapi::api::core::v1::Volume) -> String {
    let value = serde_json::to_value(v).unwrap_or_default();
    value
        .as_object()
        .and_then(|m| m.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "(none)".to_string())
}

/// The container's bind mounts, without `subPathExpr` variables.
pub fn container_mounts(c: &Container, vols: &PodVolumes) -> Result<Vec<Mount>, VolumeError> {
    container_mounts_with_env(c, vols, &[])
}

/// The container's bind mounts; `subPathExpr` is expanded against `env`.
pub fn container_mounts_with_env(
    c: &Container,
    vols: &PodVolumes,
    env: &[(String, String)],
) -> Result<Vec<Mount>, VolumeError> {
    let privileged = c.security_context.as_ref().and_then(|s| s.privileged) == Some(true);
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let vol = vols.get(&m.name).ok_or_else(|| VolumeError::NoVolume {
            container: c.name.clone(),
            volume: m.name.clone(),
        })?;
        let sub = match (&m.sub_path_expr, &m.sub_path) {
            (Some(e), _) if !e.is_empty() => expand_env(e, env),
            (_, Some(s)) => s.clone(),
            _ => String::new(),
        };
        let host_path = if sub.is_empty() {
            vol.host_path.clone()
        } else {
            resolve_sub_path(&vol.name, &vol.host_path, &sub)?
        };
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("None") => MountPropagation::Private,
            Some("HostToContainer") => MountPropagation::HostToContainer,
            Some("Bidirectional") if privileged => MountPropagation::Bidirectional,
            Some(other @ "Bidirectional") => {
                return Err(VolumeError::Propagation {
                    volume: m.name.clone(),
                    value: other.to_string(),
                    reason: "Bidirectional mount propagation is available only to privileged containers",
                });
            }
            Some(other) => {
                return Err(VolumeError::Propagation {
                    volume: m.name.clone(),
                    value: other.to_string(),
                    reason: "supported values: \"None\", \"HostToContainer\", \"Bidirectional\"",
                });
            }
        };
        out.push(Mount {
            host_path,
            container_path: m.mount_path.clone(),
            read_only: m.read_only == Some(true) || vol.kind.forced_read_only(),
            propagation,
        });
    }
    Ok(out)
}

/// Resolves `sub` inside `root`: each component is looked at without
/// following it blindly; symlinks are resolved and must stay inside;
/// missing directories are created (0750).
pub fn resolve_sub_path(volume: &str, root: &Path, sub: &str) -> Result<PathBuf, VolumeError> {
    let fail = |reason: String| VolumeError::SubPath {
        volume: volume.to_string(),
        sub_path: sub.to_string(),
        reason,
    };
    let rel = Path::new(sub);
    if rel.is_absolute()
        || !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(fail("must be a relative path without '..'".to_string()));
    }
    let root = fs::canonicalize(root).map_err(|e| fail(format!("volume path: {e}")))?;
    let mut cur = root.clone();
    for comp in rel.components() {
        let Component::Normal(part) = comp else {
            continue;
        };
        let next = cur.join(part);
        match fs::symlink_metadata(&next) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o750)
                    .create(&next)
                    .map_err(|e| fail(format!("creating {}: {e}", next.display())))?;
                cur = next;
            }
            Err(e) => return Err(fail(format!("{}: {e}", next.display()))),
            Ok(_) => {
                let resolved = fs::canonicalize(&next)
                    .map_err(|e| fail(format!("resolving {}: {e}", next.display())))?;
                if !resolved.starts_with(&root) {
                    return Err(fail(format!("not within volume path {}", root.display())));
                }
                cur = resolved;
            }
        }
    }
    Ok(cur)
}

/// Unmounts and removes the pod's dir (see [`teardown_with_proc`]).
pub fn teardown(pod_uid: &str, pods_dir: &Path) -> Result<(), VolumeError> {
    teardown_with_proc(pod_uid, pods_dir, Path::new("/proc"))
}

/// Unmounts every mount under `<pods_dir>/<uid>` (deepest first, lazily
/// when busy), then removes the dir; refuses to remove while a mount is
/// left. Idempotent: a missing dir is success.
pub fn teardown_with_proc(
    pod_uid: &str,
    pods_dir: &Path,
    proc_root: &Path,
) -> Result<(), VolumeError> {
    let dir = pod_dir(pod_uid, pods_dir)?;
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| VolumeError::Teardown { path, source }
    };
    let canon = match fs::canonicalize(&dir) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(&dir)(e)),
    };
    for m in host::mounts_under(proc_root, &canon).map_err(err(&dir))? {
        host::unmount(&m).map_err(err(&m))?;
    }
    if let Some(m) = host::mounts_under(proc_root, &canon)
        .map_err(err(&dir))?
        .into_iter()
        .next()
    {
        return Err(VolumeError::StillMounted {
            path: dir,
            mount: m,
        });
    }
    match fs::remove_dir_all(&canon) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(&dir)(e)),
        _ => Ok(()),
    }
}

/// The pod uids that have a dir under `pods_dir` (for start-up cleanup).
pub fn list_pod_dirs(pods_dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(pods_dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}
