//! The container backend: what [`crate::pod::PodRuntime`] asks of whatever
//! actually runs containers.
//!
//! The pod runtime keeps everything pod-level for itself, whatever the
//! backend: the pod and QoS cgroups, the sandbox namespaces held by bind
//! mounts, the /etc files, the OCI spec (built once, by [`crate::spec`]),
//! the durable records under `<run_dir>/pods/<uid>/` and the CRI log paths.
//! A backend gets a container whose spec and record are written and makes
//! it run:
//!
//! - [`crate::native::NativeBackend`]: herd's own per-pod monitor driving
//!   runc (or crun/youki), root filesystems on overlayfs from herd's image
//!   store.
//! - [`crate::containerd::tasks::ContainerdBackend`]: containerd tasks (its
//!   runc shim), root filesystems from containerd's snapshotter, images in
//!   containerd's content store.
//!
//! Both record a start in `started.json` and an exit in `exit.json` (the
//! monitor's formats, [`crate::monitor::state`]), so a container's state
//! after an agent restart reads the same way on either.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use herd_images::{ImageError, ImageRecord, ImageStore, ImportOptions, ProgressFn, PullOptions};

use crate::containerd::images::ContainerdImages;
use crate::oci::ExecOutput;
use crate::oci::exec_stream::ExecSession;
use crate::pod::{ContainerRecord, ContainerState, RuntimeError};

/// Finishes a pod's backend set-up begun by [`ContainerBackend::begin_pod`]:
/// called with `true` once the sandbox is made (waits for the set-up), or
/// `false` when making it failed (undoes the set-up).
pub type PodSetup = Box<dyn FnOnce(bool) -> Result<(), RuntimeError> + Send>;

/// What the pod runtime needs from a container backend.
pub trait ContainerBackend: Send + Sync + std::fmt::Debug {
    /// `native` or `containerd`.
    fn name(&self) -> &'static str;

    /// Where this backend's images live.
    fn images(&self) -> &Images;

    /// Starts whatever the pod needs besides its cgroup and namespaces (the
    /// native monitor), so it overlaps their creation.
    fn begin_pod(&self, pod_dir: &Path) -> Result<Option<PodSetup>, RuntimeError>;

    /// Whether the pod's containers are still supervised after an agent
    /// restart (their exits will be recorded).
    fn pod_supervised(&self, pod_dir: &Path) -> bool;

    /// The pod is being removed (its containers are gone).
    fn end_pod(&self, pod_dir: &Path);

    /// Makes the root filesystem of container `id` from `image`: mounted
    /// at `rootfs` (native), or prepared in the backend's snapshotter.
    fn prepare_rootfs(&self, id: &str, image: &str, rootfs: &Path) -> Result<(), RuntimeError>;

    /// The container's spec is built: herd no longer reads `rootfs`.
    fn rootfs_done(&self, _id: &str, _rootfs: &Path) {}

    /// Frees what [`ContainerBackend::prepare_rootfs`] made; idempotent.
    fn release_rootfs(&self, id: &str) -> Result<(), RuntimeError>;

    /// Starts the container from its written bundle; returns its pid once
    /// `started.json` is recorded.
    fn start(
        &self,
        rec: &ContainerRecord,
        pod_dir: &Path,
        oom_counter: &Path,
    ) -> Result<u32, RuntimeError>;

    /// The container's state (from the durable files where they answer).
    fn state(&self, rec: &ContainerRecord, pod_dir: &Path) -> Result<ContainerState, RuntimeError>;

    /// SIGTERM, then after `grace` SIGKILL to every process; returns once
    /// the exit is recorded (or the state if it was not running).
    fn stop(
        &self,
        rec: &ContainerRecord,
        pod_dir: &Path,
        grace: Duration,
    ) -> Result<ContainerState, RuntimeError>;

    /// Removes the container's runtime state (not its rootfs or records).
    fn delete(&self, rec: &ContainerRecord) -> Result<(), RuntimeError>;

    /// Runs `process` in the running container, output collected.
    fn exec(
        &self,
        rec: &ContainerRecord,
        process: &oci_spec::runtime::Process,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError>;

    /// Starts `process` in the running container with its stdio handed to
    /// the caller.
    fn exec_streaming(
        &self,
        rec: &ContainerRecord,
        process: &oci_spec::runtime::Process,
        stdin: bool,
    ) -> Result<ExecSession, RuntimeError>;

    /// After an agent (re)start, with the ids of every container on
    /// record: re-attaches to what still runs and removes what no record
    /// owns (rootfs mounts, backend containers). Returns what it removed.
    fn recover(
        &self,
        live: &BTreeSet<String>,
        pods_dir: &Path,
    ) -> Result<Vec<String>, RuntimeError>;
}

/// The node's images: herd's own store or containerd's.
#[derive(Debug, Clone)]
pub enum Images {
    Native(ImageStore),
    Containerd(ContainerdImages),
}

impl Images {
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, ImageError> {
        match self {
            Images::Native(s) => s.resolve(name),
            Images::Containerd(c) => c.resolve(name),
        }
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        match self {
            Images::Native(s) => s.list(),
            Images::Containerd(c) => c.list(),
        }
    }

    pub fn image_config(
        &self,
        name: &str,
    ) -> Result<(ImageRecord, oci_spec::image::ImageConfiguration), ImageError> {
        match self {
            Images::Native(s) => s.image_config(name),
            Images::Containerd(c) => c.image_config(name),
        }
    }

    pub fn import(
        &self,
        path: &Path,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        match self {
            Images::Native(s) => s.import(path, opts),
            Images::Containerd(c) => c.import(path, opts),
        }
    }

    pub async fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
        progress: ProgressFn,
    ) -> Result<ImageRecord, ImageError> {
        match self {
            Images::Native(s) => s.pull(reference, opts, progress).await,
            Images::Containerd(c) => c.pull(reference, opts, progress).await,
        }
    }

    pub fn remove(&self, name: &str) -> Result<ImageRecord, ImageError> {
        match self {
            Images::Native(s) => s.remove(name),
            Images::Containerd(c) => c.remove(name),
        }
    }

    /// herd's own store, when the images live there.
    pub fn native(&self) -> Option<&ImageStore> {
        match self {
            Images::Native(s) => Some(s),
            Images::Containerd(_) => None,
        }
    }
}
