//! The pod runtime: what a kubelet asks of containerd + runc, in one
//! library.
//!
//! [`PodRuntime`] ties the pieces together: the pod cgroup (`cgroups`), the
//! sandbox namespaces and files (`sandbox`), OCI bundles (`spec`), and a
//! container backend ([`crate::backend`]) that runs them: herd's own
//! per-pod monitor driving runc over overlay root filesystems from herd's
//! image store ([`crate::native`]), or containerd tasks over containerd's
//! snapshotter ([`crate::containerd`]).
//!
//! Durable state lives in the run dir (`<run_dir>/pods/<uid>/`):
//! `sandbox.json`, and per container `containers/<id>/container.json`
//! (written before the container is started), `started.json` and
//! `exit.json` (written by the monitor). Everything the agent knows can be
//! rebuilt from these files after a restart ([`PodRuntime::recover`]), and
//! anything without a record (a cgroup, a rootfs mount) is removed then.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herd_images::ImageError;
use serde::{Deserialize, Serialize};

use crate::backend::{ContainerBackend, Images};
use crate::cgroups::{self, CgroupError, CgroupManager, CgroupStats};
use crate::containerd::ContainerdError;
use crate::monitor::{self, MonitorError};
use crate::oci::{ExecOutput, OciError, RuntimeBinary};
use crate::sandbox::{self, SandboxDir, SandboxError, SandboxRecord};
use crate::spec::{self, SpecError, SpecInputs};
use crate::types::{ContainerConfig, PodSandboxConfig, QosClass};

/// Errors of the pod runtime; each keeps the layer that failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    State(#[from] crate::monitor::state::StateError),
    #[error(transparent)]
    Log(#[from] crate::logs::LogError),
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    #[error("pod {0} has no sandbox")]
    NoSandbox(String),
    #[error("pod {uid} has no container {id}")]
    NoContainer { uid: String, id: String },
    #[error("container {id} is already {state}")]
    WrongState { id: String, state: &'static str },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where the runtime keeps things and what it runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Sandboxes, bundles, monitor sockets (`/run/herd`).
    pub run_dir: PathBuf,
    /// CRI logs (`/var/log/pods`).
    pub log_dir: PathBuf,
    /// The cgroup filesystem root (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// Name of herd's cgroup under the root (`herd`).
    pub cgroup_base: String,
    pub runtime: RuntimeBinary,
    /// The executable re-run as the per-pod monitor, and its arguments
    /// before `--pod-dir` (for `herd`: `/proc/self/exe monitor`).
    pub monitor_exe: PathBuf,
    pub monitor_args: Vec<OsString>,
    /// The node's memory, for Burstable pods' oom_score_adj.
    pub node_memory_bytes: u64,
}

/// A container's lifecycle as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running {
        pid: u32,
        started_at: String,
    },
    Exited(ExitInfo),
    /// Started, but its monitor is gone and the process too: the exit code
    /// is lost (Kubernetes reports ContainerStatusUnknown).
    Unknown {
        pid: u32,
    },
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: i32,
    pub oom_killed: bool,
    /// RFC 3339, as the monitor recorded them.
    pub started_at: String,
    pub finished_at: String,
}

impl ExitInfo {
    /// Kubernetes' `state.terminated.reason`.
    pub fn reason(&self) -> &'static str {
        if self.oom_killed {
            "OOMKilled"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// What is recorded for a container before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_uid: String,
    pub config: ContainerConfig,
    pub bundle: PathBuf,
    pub log_path: PathBuf,
    pub cgroup: String,
    pub created: u64,
}

/// A container and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub record: ContainerRecord,
    pub state: ContainerState,
}

/// What [`PodRuntime::recover`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Pods whose monitor was alive and reconnected.
    pub adopted: Vec<String>,
    /// Pods whose monitor was gone (containers seen as exited/unknown).
    pub orphaned: Vec<String>,
    /// Pod cgroups removed because no sandbox owned them.
    pub removed_cgroups: Vec<String>,
    /// Rootfs mounts removed because no container owned them.
    pub removed_mounts: Vec<String>,
}

/// The node's pod runtime.
#[derive(Debug)]
pub struct PodRuntime {
    cfg: RuntimeConfig,
    cgroups: CgroupManager,
    backend: Box<dyn ContainerBackend>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The runtime's container id: unique per pod, name and attempt, valid for
/// runc and the image store.
pub fn container_id(pod_uid: &str, name: &str, attempt: u32) -> String {
    format!("{pod_uid}-{name}-{attempt}")
}

impl PodRuntime {
    /// The pod runtime with herd's own backend (monitor + OCI runtime,
    /// images in `images`).
    pub fn new(
        cfg: RuntimeConfig,
        images: herd_images::ImageStore,
    ) -> Result<PodRuntime, RuntimeError> {
        let backend = crate::native::NativeBackend::new(
            cfg.runtime.clone(),
            images,
            cfg.monitor_exe.clone(),
            cfg.monitor_args.clone(),
        )?;
        Self::with_backend(cfg, Box::new(backend))
    }

    /// The pod runtime over any container backend.
    pub fn with_backend(
        cfg: RuntimeConfig,
        backend: Box<dyn ContainerBackend>,
    ) -> Result<PodRuntime, RuntimeError> {
        let cgroups = CgroupManager::detect(&cfg.cgroup_root, &cfg.cgroup_base)?;
        cgroups.ensure_hierarchy()?;
        let d = cfg.run_dir.join("pods");
        fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        Ok(PodRuntime {
            cfg,
            cgroups,
            backend,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }
    pub fn cgroups(&self) -> &CgroupManager {
        &self.cgroups
    }
    pub fn images(&self) -> &Images {
        self.backend.images()
    }
    pub fn backend(&self) -> &dyn ContainerBackend {
        self.backend.as_ref()
    }

    /// The pod's sandbox record (config, QoS class, cgroup), if it has one.
    pub fn sandbox(&self, uid: &str) -> Result<Option<SandboxRecord>, RuntimeError> {
        Ok(self.sandbox_dir(uid)?.read_record()?)
    }

    fn sandbox_dir(&self, uid: &str) -> Result<SandboxDir, RuntimeError> {
        Ok(SandboxDir::new(&self.cfg.run_dir, uid)?)
    }

    fn sandbox_record(&self, uid: &str) -> Result<(SandboxDir, SandboxRecord), RuntimeError> {
        let dir = self.sandbox_dir(uid)?;
        let rec = dir
            .read_record()?
            .ok_or_else(|| RuntimeError::NoSandbox(uid.to_string()))?;
        Ok((dir, rec))
    }

    /// Creates (or completes, after a crash) the pod's sandbox: pod cgroup,
    /// namespaces, /etc files, shm and the monitor. Returns the network
    /// namespace path to wire (None for hostNetwork pods).
    pub fn run_pod_sandbox(&self, cfg: &PodSandboxConfig) -> Result<Option<PathBuf>, RuntimeError> {
        let dir = self.sandbox_dir(&cfg.uid)?;
        let all: Vec<_> = cfg
            .containers
            .iter()
            .chain(&cfg.init_containers)
            .copied()
            .collect();
        let qos = cgroups::qos_class(&all);
        let record = SandboxRecord {
            config: cfg.clone(),
            qos,
            cgroup: self.cgroups.pod_cgroup(&cfg.uid, qos),
            created: now(),
        };
        let setup = self.backend.begin_pod(dir.path())?;
        let made = self
            .cgroups
            .create_pod(&cfg.uid, qos, &initial_pod_resources(cfg))
            .map_err(RuntimeError::from)
            .and_then(|()| dir.create(&record).map_err(RuntimeError::from));
        let made = made.and_then(|()| {
            if cfg.namespaces.share_process_namespace && !cfg.namespaces.host_pid {
                dir.ensure_pid_holder(&cfg.uid, &self.cfg.monitor_exe, &self.cfg.monitor_args)?;
            }
            Ok(())
        });
        if let Err(e) = made {
            if let Some(setup) = setup {
                let _ = setup(false);
            }
            let _ = dir.remove();
            let _ = self.cgroups.remove_pod(&cfg.uid, qos);
            return Err(e);
        }
        if let Some(setup) = setup {
            setup(true)?;
        }
        Ok(dir.netns(cfg))
    }

    /// Records the pod IP once networking is wired (rewrites /etc/hosts).
    pub fn set_pod_ip(&self, uid: &str, ip: std::net::IpAddr) -> Result<(), RuntimeError> {
        let (dir, mut rec) = self.sandbox_record(uid)?;
        rec.config.pod_ip = Some(ip);
        dir.update_hosts(&rec.config)?;
        let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| RuntimeError::Io {
            op: "encode",
            path: dir.record_path(),
            source: std::io::Error::other(e),
        })?;
        sandbox::write_atomic(&dir.record_path(), &bytes)?;
        Ok(())
    }

    fn container_dir(dir: &SandboxDir, id: &str) -> PathBuf {
        dir.containers().join(id)
    }

    /// Prepares a container: rootfs from the image store, OCI bundle, the
    /// durable record. Idempotent for the same id (a retried create).
    pub fn create_container(
        &self,
        uid: &str,
        c: &ContainerConfig,
    ) -> Result<ContainerRecord, RuntimeError> {
        let (dir, sb) = self.sandbox_record(uid)?;
        let id = container_id(uid, &c.name, c.attempt);
        crate::oci::validate_id(&id)?;
        let cdir = Self::container_dir(&dir, &id);
        if let Some(rec) = read_json::<ContainerRecord>(&cdir.join("container.json"))? {
            return Ok(rec);
        }
        let bundle = cdir.join("bundle");
        let rootfs = bundle.join("rootfs");
        fs::create_dir_all(&rootfs).map_err(io_err("create", &rootfs))?;
        let (_, image_config) = self.images().image_config(&c.image)?;
        self.backend.prepare_rootfs(&id, &c.image, &rootfs)?;
        let cgroup = self.cgroups.container_cgroups_path(uid, sb.qos, &id);
        let namespaces = dir.namespaces(&sb.config);
        let files = dir.files(sb.config.namespaces.host_ipc);
        let inputs = SpecInputs {
            sandbox: &sb.config,
            container: c,
            image_config: &image_config,
            rootfs: &rootfs,
            namespaces: &namespaces,
            files: &files,
            cgroups_path: &cgroup,
            resources: self.cgroups.container_linux_resources(&c.resources),
            oom_score_adj: cgroups::oom_score_adj(
                sb.qos,
                c.resources
                    .memory_request_bytes
                    .or(c.resources.memory_limit_bytes),
                self.cfg.node_memory_bytes,
            ),
            cgroup_v2: self.cgroups.layout() == cgroups::CgroupLayout::Unified,
        };
        let built = spec::build_spec(&inputs).and_then(|s| spec::write_bundle(&bundle, &s));
        self.backend.rootfs_done(&id, &rootfs);
        if let Err(e) = built {
            let _ = self.backend.release_rootfs(&id);
            let _ = fs::remove_dir_all(&cdir);
            return Err(e.into());
        }
        let log_path = crate::logs::container_log_path(
            &self.cfg.log_dir,
            &sb.config.namespace,
            &sb.config.name,
            uid,
            &c.name,
            c.attempt,
        )?;
        let rec = ContainerRecord {
            id: id.clone(),
            pod_uid: uid.to_string(),
            config: c.clone(),
            bundle,
            log_path,
            cgroup,
            created: now(),
        };
        write_json(&cdir.join("container.json"), &rec)?;
        Ok(rec)
    }

    /// Starts a created container through the backend; returns its pid.
    pub fn start_container(&self, rec: &ContainerRecord) -> Result<u32, RuntimeError> {
        if let ContainerState::Running { pid, .. } = self.container_state(rec)? {
            return Ok(pid);
        }
        let dir = self.sandbox_dir(&rec.pod_uid)?;
        let oom = self.cgroups.oom_counter_file(&rec.cgroup);
        let pid = self.backend.start(rec, dir.path(), &oom)?;
        // Now that runc's init is done, the pod's CPU quota can go on (see
        // `initial_pod_resources`). Idempotent, a few small writes.
        let (_, sb) = self.sandbox_record(&rec.pod_uid)?;
        let full = cgroups::pod_cgroup_resources(&sb.config);
        if full.cpu_quota.is_some() {
            self.cgroups.create_pod(&rec.pod_uid, sb.qos, &full)?;
        }
        Ok(pid)
    }

    /// Create + start.
    pub fn run_container(
        &self,
        uid: &str,
        c: &ContainerConfig,
    ) -> Result<ContainerRecord, RuntimeError> {
        let rec = self.create_container(uid, c)?;
        self.start_container(&rec)?;
        Ok(rec)
    }

    /// The container's state (from its durable files where they answer).
    pub fn container_state(&self, rec: &ContainerRecord) -> Result<ContainerState, RuntimeError> {
        let dir = self.sandbox_dir(&rec.pod_uid)?;
        self.backend.state(rec, dir.path())
    }

    /// Every container record of a pod with its state.
    pub fn list_containers(&self, uid: &str) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let dir = self.sandbox_dir(uid)?;
        let cdir = dir.containers();
        let mut out = Vec::new();
        let rd = match fs::read_dir(&cdir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("read", &cdir)(e)),
        };
        for e in rd {
            let e = e.map_err(io_err("read", &cdir))?;
            if let Some(record) = read_json::<ContainerRecord>(&e.path().join("container.json"))? {
                let state = self.container_state(&record)?;
                out.push(ContainerStatus { record, state });
            }
        }
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        Ok(out)
    }

    pub fn container(&self, uid: &str, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let dir = self.sandbox_dir(uid)?;
        read_json(&Self::container_dir(&dir, id).join("container.json"))?.ok_or_else(|| {
            RuntimeError::NoContainer {
                uid: uid.to_string(),
                id: id.to_string(),
            }
        })
    }

    /// Graceful stop: SIGTERM, then SIGKILL to every process after `grace`.
    /// Returns once the exit is recorded.
    pub fn stop_container(
        &self,
        rec: &ContainerRecord,
        grace: Duration,
    ) -> Result<ContainerState, RuntimeError> {
        let dir = self.sandbox_dir(&rec.pod_uid)?;
        self.backend.stop(rec, dir.path(), grace)
    }

    /// Removes a container's runtime state, rootfs and bundle (logs stay
    /// until the pod goes). Stops it first (SIGKILL) if it still runs.
    pub fn remove_container(&self, rec: &ContainerRecord) -> Result<(), RuntimeError> {
        if matches!(self.container_state(rec)?, ContainerState::Running { .. }) {
            self.stop_container(rec, Duration::ZERO)?;
        }
        self.backend.delete(rec)?;
        self.backend.release_rootfs(&rec.id)?;
        let dir = self.sandbox_dir(&rec.pod_uid)?;
        let cdir = Self::container_dir(&dir, &rec.id);
        match fs::remove_dir_all(&cdir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &cdir)(e)),
        }
    }

    /// The exec'd process: the container's process defaults (env, user,
    /// cwd, capabilities) with `args`.
    fn exec_process(
        rec: &ContainerRecord,
        args: Vec<String>,
        tty: bool,
    ) -> Result<oci_spec::runtime::Process, RuntimeError> {
        let config = rec.bundle.join("config.json");
        let spec = oci_spec::runtime::Spec::load(&config).map_err(|e| RuntimeError::Io {
            op: "read",
            path: config.clone(),
            source: std::io::Error::other(e),
        })?;
        let base = spec.process().clone().unwrap_or_default();
        Ok(spec::exec_process(&base, args, tty, &[]))
    }

    /// Runs a command in a running container (`runc exec` with the
    /// container's process defaults), output collected.
    pub fn exec(
        &self,
        rec: &ContainerRecord,
        args: Vec<String>,
        tty: bool,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError> {
        let process = Self::exec_process(rec, args, tty)?;
        self.backend.exec(rec, &process, timeout)
    }

    /// cgroup statistics of a container or (with `None`) the whole pod.
    pub fn stats(
        &self,
        uid: &str,
        container: Option<&ContainerRecord>,
    ) -> Result<CgroupStats, RuntimeError> {
        match container {
            Some(rec) => Ok(self.cgroups.stats(&rec.cgroup)?),
            None => {
                let (_, sb) = self.sandbox_record(uid)?;
                Ok(self.cgroups.stats(&sb.cgroup)?)
            }
        }
    }

    /// Stops every container and removes everything the pod created:
    /// containers, rootfs mounts, namespaces, shm, the monitor, the pod
    /// cgroup. Idempotent; logs are kept (`remove_pod_logs`).
    pub fn remove_pod_sandbox(&self, uid: &str) -> Result<(), RuntimeError> {
        let dir = self.sandbox_dir(uid)?;
        let record = dir.read_record()?;
        for c in self.list_containers(uid)? {
            self.remove_container(&c.record)?;
        }
        self.backend.end_pod(dir.path());
        dir.remove()?;
        let qos = record.map(|r| r.qos);
        match qos {
            Some(q) => self.cgroups.remove_pod(uid, q)?,
            None => {
                for q in [
                    QosClass::Guaranteed,
                    QosClass::Burstable,
                    QosClass::BestEffort,
                ] {
                    self.cgroups.remove_pod(uid, q)?;
                }
            }
        }
        Ok(())
    }

    /// Uids of every pod sandbox on record.
    pub fn list_pods(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(sandbox::list_sandboxes(&self.cfg.run_dir)?)
    }

    /// After an agent (re)start: reconnect to every pod's monitor, and
    /// remove what no record owns (pod cgroups, rootfs mounts of unknown
    /// containers). No running container is touched.
    pub fn recover(&self) -> Result<Recovery, RuntimeError> {
        let mut out = Recovery::default();
        let pods: BTreeSet<String> = self.list_pods()?.into_iter().collect();
        let mut live_containers = BTreeSet::new();
        for uid in &pods {
            let dir = self.sandbox_dir(uid)?;
            if dir.read_record()?.is_none() {
                // Crashed before the record was written: nothing ran yet.
                dir.remove()?;
                continue;
            }
            if self.backend.pod_supervised(dir.path()) {
                out.adopted.push(uid.clone());
            } else {
                out.orphaned.push(uid.clone());
            }
            for c in self.list_containers(uid)? {
                live_containers.insert(c.record.id);
            }
        }
        for (uid, qos) in self.cgroups.list_pods()? {
            if !pods.contains(&uid) {
                self.cgroups.remove_pod(&uid, qos)?;
                out.removed_cgroups.push(uid);
            }
        }
        let pods_dir = self.cfg.run_dir.join("pods");
        out.removed_mounts = self.backend.recover(&live_containers, &pods_dir)?;
        Ok(out)
    }

    /// Waits for a container to be running (its start recorded) or exited.
    pub fn wait_started(
        &self,
        rec: &ContainerRecord,
        timeout: Duration,
    ) -> Result<ContainerState, RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.container_state(rec)?;
            if !matches!(s, ContainerState::Created) || Instant::now() >= deadline {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Starts a command in a running container with its stdio handed to
    /// the caller (`runc exec` in the foreground, same process defaults as
    /// [`PodRuntime::exec`]): pipes, or with `tty` a pty master.
    pub fn exec_streaming(
        &self,
        rec: &ContainerRecord,
        args: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<crate::oci::exec_stream::ExecSession, RuntimeError> {
        let process = Self::exec_process(rec, args, tty)?;
        self.backend.exec_streaming(rec, &process, stdin)
    }
}

/// The pod cgroup's limits at creation: everything but the CPU quota.
///
/// runc's init (the Go runtime, namespace setup) runs inside the container
/// cgroup, so inside the pod cgroup, before the container's own limits are
/// applied just ahead of the user process's exec. With the pod's quota
/// already in place (e.g. 200m: 20 ms per 100 ms period) that init work is
/// throttled and a start takes tens of ms longer (measured: +45 ms median).
/// Every container of a pod with a pod-level quota has its own quota (the
/// kubelet sets the pod quota only then), so deferring the pod's until the
/// first start loses no enforcement of user processes.
fn initial_pod_resources(cfg: &PodSandboxConfig) -> cgroups::PodCgroupResources {
    let mut r = cgroups::pod_cgroup_resources(cfg);
    r.cpu_quota = None;
    r
}

pub(crate) fn exit_info(e: &monitor::ExitRecord) -> ExitInfo {
    ExitInfo {
        exit_code: e.exit_code,
        oom_killed: e.oom_killed,
        started_at: e.started_at.clone(),
        finished_at: e.finished_at.clone(),
    }
}

pub(crate) fn process_alive(pid: u32) -> bool {
    // A zombie is not alive: its exit is for the monitor to record.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, RuntimeError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| RuntimeError::Io {
                op: "decode",
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| RuntimeError::Io {
        op: "encode",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    Ok(sandbox::write_atomic(path, &bytes)?)
}
