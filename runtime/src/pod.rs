//! The pod runtime: what a kubelet asks of containerd + runc, in one
//! library.
//!
//! [`PodRuntime`] ties the pieces together: the pod cgroup (`cgroups`), the
//! sandbox namespaces and files (`sandbox`), one per-pod monitor process
//! (`monitor`) that starts every container through the OCI runtime and
//! outlives the agent, OCI bundles (`spec`) over overlay root filesystems
//! from the image store.
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

use herd_images::{ImageError, ImageStore};
use serde::{Deserialize, Serialize};

use crate::cgroups::{self, CgroupError, CgroupManager, CgroupStats};
use crate::monitor::{self, MonitorClient, MonitorError, PendingMonitor};
use crate::oci::{ExecOutput, OciError, OciRuntime, RuntimeBinary};
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
    oci: OciRuntime,
    images: ImageStore,
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
    pub fn new(cfg: RuntimeConfig, images: ImageStore) -> Result<PodRuntime, RuntimeError> {
        let cgroups = CgroupManager::detect(&cfg.cgroup_root, &cfg.cgroup_base)?;
        cgroups.ensure_hierarchy()?;
        for d in [cfg.run_dir.join("pods"), cfg.runtime.root.clone()] {
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        }
        Ok(PodRuntime {
            oci: OciRuntime::new(cfg.runtime.clone()),
            cfg,
            cgroups,
            images,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }
    pub fn cgroups(&self) -> &CgroupManager {
        &self.cgroups
    }
    pub fn images(&self) -> &ImageStore {
        &self.images
    }
    pub fn oci(&self) -> &OciRuntime {
        &self.oci
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
        // The monitor execs and binds its socket while the cgroup and the
        // namespaces are made (a few ms saved on every pod start).
        let pending = match MonitorClient::connect(dir.path()) {
            Ok(_) => None,
            Err(_) => Some(monitor::start_monitor(
                &self.cfg.monitor_exe,
                &self.cfg.monitor_args,
                dir.path(),
            )?),
        };
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
        let ready = pending.map(PendingMonitor::wait_ready).transpose();
        if let Err(e) = made {
            if let Ok(Some(client)) = ready {
                let _ = client.shutdown();
            }
            let _ = dir.remove();
            let _ = self.cgroups.remove_pod(&cfg.uid, qos);
            return Err(e);
        }
        ready?;
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
        let (_, image_config) = self.images.image_config(&c.image)?;
        if !self.images.mounts()?.iter().any(|(m, _)| m == &id) {
            self.images.mount_rootfs(&id, &c.image, &rootfs)?;
        }
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
        if let Err(e) = built {
            let _ = self.images.unmount_rootfs(&id);
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

    fn monitor(&self, uid: &str) -> Result<MonitorClient, RuntimeError> {
        let dir = self.sandbox_dir(uid)?;
        Ok(MonitorClient::connect(dir.path())?)
    }

    /// Starts a created container through the pod's monitor; returns its pid.
    pub fn start_container(&self, rec: &ContainerRecord) -> Result<u32, RuntimeError> {
        if let ContainerState::Running { pid, .. } = self.container_state(rec)? {
            return Ok(pid);
        }
        let client = self.monitor(&rec.pod_uid)?;
        let pid = client.start_container(monitor::StartContainer {
            id: rec.id.clone(),
            bundle: rec.bundle.clone(),
            runtime: self.cfg.runtime.clone(),
            log_path: rec.log_path.clone(),
            log_limits: rec.config.log,
            oom_counter_file: Some(self.cgroups.oom_counter_file(&rec.cgroup)),
            tty: rec.config.tty,
            stdin: rec.config.stdin,
        })?;
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

    /// The container's state from its durable files (no runtime call).
    pub fn container_state(&self, rec: &ContainerRecord) -> Result<ContainerState, RuntimeError> {
        let dir = self.sandbox_dir(&rec.pod_uid)?;
        if let Some(exit) = monitor::state::read_exit(dir.path(), &rec.id)? {
            return Ok(ContainerState::Exited(exit_info(&exit)));
        }
        match monitor::state::read_started(dir.path(), &rec.id)? {
            None => Ok(ContainerState::Created),
            Some(started) => {
                if process_alive(started.pid) {
                    Ok(ContainerState::Running {
                        pid: started.pid,
                        started_at: started.started_at,
                    })
                } else if let Ok(c) = MonitorClient::connect(dir.path()) {
                    // The monitor is alive and writes exit.json once it has
                    // drained the logs: ask it (bounded wait).
                    match wait_exit(&c, &rec.id, Duration::from_secs(5))? {
                        Some(exit) => Ok(ContainerState::Exited(exit_info(&exit))),
                        None => Ok(ContainerState::Running {
                            pid: started.pid,
                            started_at: started.started_at,
                        }),
                    }
                } else {
                    Ok(ContainerState::Unknown { pid: started.pid })
                }
            }
        }
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
        let state = self.container_state(rec)?;
        if !matches!(state, ContainerState::Running { .. }) {
            return Ok(state);
        }
        let client = self.monitor(&rec.pod_uid)?;
        if !grace.is_zero() {
            let _ = self.oci.kill(&rec.id, libc::SIGTERM, false);
            if let Some(exit) = wait_exit(&client, &rec.id, grace)? {
                return Ok(ContainerState::Exited(exit_info(&exit)));
            }
        }
        let _ = self.oci.kill(&rec.id, libc::SIGKILL, true);
        match wait_exit(&client, &rec.id, Duration::from_secs(10))? {
            Some(exit) => Ok(ContainerState::Exited(exit_info(&exit))),
            None => Ok(self.container_state(rec)?),
        }
    }

    /// Removes a container's runtime state, rootfs and bundle (logs stay
    /// until the pod goes). Stops it first (SIGKILL) if it still runs.
    pub fn remove_container(&self, rec: &ContainerRecord) -> Result<(), RuntimeError> {
        if matches!(self.container_state(rec)?, ContainerState::Running { .. }) {
            self.stop_container(rec, Duration::ZERO)?;
        }
        self.oci.delete(&rec.id, true)?;
        match self.images.unmount_rootfs(&rec.id) {
            Ok(()) => {}
            Err(ImageError::Mount(herd_images::rootfs::MountError::Unknown(_))) => {}
            Err(e) => return Err(e.into()),
        }
        let dir = self.sandbox_dir(&rec.pod_uid)?;
        let cdir = Self::container_dir(&dir, &rec.id);
        match fs::remove_dir_all(&cdir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &cdir)(e)),
        }
    }

    /// Runs a command in a running container (`runc exec` with the
    /// container's process defaults).
    pub fn exec(
        &self,
        rec: &ContainerRecord,
        args: Vec<String>,
        tty: bool,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError> {
        let config = rec.bundle.join("config.json");
        let spec = oci_spec::runtime::Spec::load(&config).map_err(|e| RuntimeError::Io {
            op: "read",
            path: config.clone(),
            source: std::io::Error::other(e),
        })?;
        let base = spec.process().clone().unwrap_or_default();
        let process = spec::exec_process(&base, args, tty, &[]);
        let file = rec.bundle.join(format!(
            "exec-{}-{}.json",
            std::process::id(),
            EXEC_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        Ok(self.oci.exec(&rec.id, &process, &file, timeout)?)
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
        if let Ok(client) = MonitorClient::connect(dir.path()) {
            let _ = client.shutdown();
        }
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
            if MonitorClient::connect(dir.path()).is_ok() {
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
        for (id, m) in self.images.mounts()? {
            if m.target.starts_with(&pods_dir) && !live_containers.contains(&id) {
                self.images.unmount_rootfs(&id)?;
                out.removed_mounts.push(id);
            }
        }
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
        let config = rec.bundle.join("config.json");
        let spec = oci_spec::runtime::Spec::load(&config).map_err(|e| RuntimeError::Io {
            op: "read",
            path: config.clone(),
            source: std::io::Error::other(e),
        })?;
        let base = spec.process().clone().unwrap_or_default();
        let process = spec::exec_process(&base, args, tty, &[]);
        let file = rec.bundle.join(format!(
            "exec-{}-{}.json",
            std::process::id(),
            EXEC_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        Ok(self.oci.exec_streaming(&rec.id, &process, &file, stdin)?)
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

static EXEC_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn exit_info(e: &monitor::ExitRecord) -> ExitInfo {
    ExitInfo {
        exit_code: e.exit_code,
        oom_killed: e.oom_killed,
        started_at: e.started_at.clone(),
        finished_at: e.finished_at.clone(),
    }
}

/// Waits up to `timeout` for the monitor to record the container's exit;
/// `None` if it still runs then.
fn wait_exit(
    client: &MonitorClient,
    id: &str,
    timeout: Duration,
) -> Result<Option<monitor::ExitRecord>, RuntimeError> {
    match client.wait(id, Some(timeout.max(Duration::from_millis(1)))) {
        Ok(r) => Ok(Some(r)),
        Err(MonitorError::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn process_alive(pid: u32) -> bool {
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
