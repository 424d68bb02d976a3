//! Containers as containerd tasks: the containerd [`ContainerBackend`].
//!
//! A container is a containerd container (herd's OCI spec, with its root
//! at the shim bundle's `rootfs`, runtime `io.containerd.runc.v2` with
//! herd's runc) over an active snapshot of its image, labelled with herd's
//! owner label and the pod dir. All containers of a pod share one shim
//! (`io.containerd.runc.v2.group` = pod uid). stdout/stderr go to herd's
//! logging binary ([`super::logger`]), which writes the same CRI log the
//! native monitor writes. Starts and exits are recorded in the same
//! `started.json`/`exit.json` files as the native backend's, exits from the
//! event stream ([`super::exits`]) or, when the agent missed them, from the
//! task's status. Tasks belong to their shims, not to the agent: an agent
//! restart re-adopts them (the files and containerd's task list), and
//! [`ContainerBackend::recover`] removes herd containers no record owns.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest as CreateLeaseRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteRequest as DeleteLeaseRequest, DeleteTaskRequest, GetRequest,
    KillRequest, ListContainersRequest, ListRequest as ListLeasesRequest, StartRequest,
    WaitRequest,
};
use containerd_client::types::v1::Status as TaskStatus;
use prost_types::Any;
use tonic::Code;

use super::exits::{self, Registry, Watched};
use super::images::ContainerdImages;
use super::{Client, ContainerdError, OWNER, OWNER_LABEL, RuncOptions, logger, path_str, rpc};
use crate::backend::{ContainerBackend, Images, PodSetup};
use crate::logs::timestamp::format_rfc3339_nano;
use crate::monitor::state::{self, StartedRecord};
use crate::oci::ExecOutput;
use crate::oci::exec_stream::ExecSession;
use crate::pod::{ContainerRecord, ContainerState, RuntimeError, exit_info, process_alive};

/// Label: the pod dir of a herd container.
pub const POD_DIR_LABEL: &str = "herd.io/pod-dir";
/// Label: the container a herd snapshot belongs to.
pub const CONTAINER_LABEL: &str = "herd.io/container";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC_V2: &str = "io.containerd.runc.v2";
const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";
/// Prefix of the lease that keeps a container's snapshot from containerd's
/// garbage collector between its preparation and its container's creation
/// (an active snapshot nothing references is collected).
const LEASE_PREFIX: &str = "herd-rootfs-";

fn lease_id(container: &str) -> String {
    format!("{LEASE_PREFIX}{container}")
}

/// Containers as containerd tasks.
#[derive(Debug)]
pub struct ContainerdBackend {
    client: Client,
    cimages: ContainerdImages,
    images: Images,
    logger_exe: PathBuf,
    runc: PathBuf,
    registry: Arc<Registry>,
}

impl ContainerdBackend {
    /// `logger_exe`: the herd binary (run by the shim as
    /// `herd containerd-logger <dir>`); `runc`: the OCI runtime binary the
    /// shim drives.
    pub fn new(images: ContainerdImages, logger_exe: PathBuf, runc: PathBuf) -> ContainerdBackend {
        let client = images.client().clone();
        let registry = Arc::new(Registry::default());
        exits::spawn_subscription(&client, registry.clone());
        ContainerdBackend {
            client,
            images: Images::Containerd(images.clone()),
            cimages: images,
            logger_exe,
            runc,
            registry,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn watched(&self, rec: &ContainerRecord, pod_dir: &Path) -> Watched {
        Watched {
            pod_dir: pod_dir.to_path_buf(),
            oom_counter: oom_counter_of(rec),
        }
    }

    /// The task's exit, waited for up to `timeout` (None: still running).
    fn wait_exit(
        &self,
        rec: &ContainerRecord,
        pod_dir: &Path,
        timeout: Duration,
    ) -> Result<Option<ContainerState>, RuntimeError> {
        if let Some(exit) = state::read_exit(pod_dir, &rec.id)? {
            return Ok(Some(ContainerState::Exited(exit_info(&exit))));
        }
        let c = self.client.clone();
        let id = rec.id.clone();
        let waited =
            self.client
                .call_within("wait task", timeout + Duration::from_secs(5), async move {
                    let mut tasks = TasksClient::new(c.channel());
                    let fut = tasks.wait(c.request(WaitRequest {
                        container_id: id,
                        exec_id: String::new(),
                    }));
                    match tokio::time::timeout(timeout, fut).await {
                        Err(_) => Ok(None),
                        Ok(Ok(r)) => {
                            let r = r.into_inner();
                            Ok(Some((r.exit_status, r.exited_at)))
                        }
                        Ok(Err(s)) if s.code() == Code::NotFound => Ok(Some((255, None))),
                        Ok(Err(s)) => Err(rpc("wait task")(s)),
                    }
                })?;
        match waited {
            None => Ok(None),
            Some((status, at)) => {
                let exit = exits::record_from_task(
                    pod_dir,
                    &rec.id,
                    &oom_counter_of(rec),
                    status,
                    at.as_ref(),
                )?;
                Ok(Some(ContainerState::Exited(exit_info(&exit))))
            }
        }
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        let c = self.client.clone();
        let id = id.to_string();
        self.client.call("kill task", async move {
            match TasksClient::new(c.channel())
                .kill(c.request(KillRequest {
                    container_id: id,
                    exec_id: String::new(),
                    signal: signal as u32,
                    all,
                }))
                .await
            {
                Ok(_) => Ok(()),
                // Gone or already stopped: nothing to signal.
                Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
                Err(s) => Err(rpc("kill task")(s)),
            }
        })?;
        Ok(())
    }

    /// The spec containerd gets: herd's, with the root at the shim
    /// bundle's `rootfs` and the pod's shim group.
    fn containerd_spec(rec: &ContainerRecord) -> Result<Vec<u8>, RuntimeError> {
        let path = rec.bundle.join("config.json");
        let bytes = std::fs::read(&path).map_err(|source| RuntimeError::Io {
            op: "read",
            path: path.clone(),
            source,
        })?;
        let mut spec: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Io {
                op: "decode",
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
        spec["root"]["path"] = "rootfs".into();
        if !spec["annotations"].is_object() {
            spec["annotations"] = serde_json::json!({});
        }
        spec["annotations"][GROUP_ANNOTATION] = rec.pod_uid.clone().into();
        serde_json::to_vec(&spec).map_err(|e| RuntimeError::Io {
            op: "encode",
            path,
            source: std::io::Error::other(e),
        })
    }
}

/// The container cgroup's OOM counter file (v1 `memory.oom_control`, v2
/// `memory.events`), as the pod runtime passes it at start.
fn oom_counter_of(rec: &ContainerRecord) -> PathBuf {
    rec.bundle
        .parent()
        .map(|d| d.join("oom-counter"))
        .and_then(|l| std::fs::read_link(l).ok())
        .unwrap_or_default()
}

fn ignore_not_found<T: Default>(
    r: Result<T, tonic::Status>,
    op: &str,
) -> Result<T, ContainerdError> {
    match r {
        Ok(v) => Ok(v),
        Err(s) if s.code() == Code::NotFound => Ok(T::default()),
        Err(s) => Err(rpc(op)(s)),
    }
}

impl ContainerBackend for ContainerdBackend {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn images(&self) -> &Images {
        &self.images
    }

    fn begin_pod(&self, _pod_dir: &Path) -> Result<Option<PodSetup>, RuntimeError> {
        // The shim starts with the pod's first task.
        Ok(None)
    }

    fn pod_supervised(&self, _pod_dir: &Path) -> bool {
        // Shims own the tasks; containerd reports their exits.
        true
    }

    fn end_pod(&self, _pod_dir: &Path) {}

    fn prepare_rootfs(&self, id: &str, image: &str, rootfs: &Path) -> Result<(), RuntimeError> {
        let rec = self.cimages.resolve(image)?;
        let parent = self.cimages.ensure_unpacked(&rec)?;
        let c = self.client.clone();
        let key = id.to_string();
        let mounts = self.client.call("prepare snapshot", async move {
            let lease = lease_id(&key);
            match LeasesClient::new(c.channel())
                .create(c.request(CreateLeaseRequest {
                    id: lease.clone(),
                    labels: HashMap::from([(OWNER_LABEL.to_string(), OWNER.to_string())]),
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => {}
                Err(s) => return Err(rpc("create lease")(s)),
            }
            let mut snaps = SnapshotsClient::new(c.channel());
            let labels = HashMap::from([
                (CONTAINER_LABEL.to_string(), key.clone()),
                (OWNER_LABEL.to_string(), OWNER.to_string()),
            ]);
            match snaps
                .prepare(c.leased(
                    PrepareSnapshotRequest {
                        snapshotter: c.snapshotter().to_string(),
                        key: key.clone(),
                        parent,
                        labels,
                    },
                    &lease,
                ))
                .await
            {
                Ok(r) => Ok(r.into_inner().mounts),
                Err(s) if s.code() == Code::AlreadyExists => snaps
                    .mounts(c.request(MountsRequest {
                        snapshotter: c.snapshotter().to_string(),
                        key,
                    }))
                    .await
                    .map(|r| r.into_inner().mounts)
                    .map_err(rpc("snapshot mounts")),
                Err(s) => Err(rpc("prepare snapshot")(s)),
            }
        })?;
        // The spec is built from the image's files (users, groups): mount
        // the snapshot read-only at herd's rootfs until it is built
        // (`rootfs_done`); the shim mounts its own copy.
        super::mounts::mount_read_only(&mounts, rootfs)?;
        Ok(())
    }

    fn rootfs_done(&self, _id: &str, rootfs: &Path) {
        super::mounts::unmount(rootfs);
    }

    fn release_rootfs(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.client.clone();
        let key = id.to_string();
        self.client.call("remove snapshot", async move {
            ignore_not_found(
                SnapshotsClient::new(c.channel())
                    .remove(c.request(RemoveSnapshotRequest {
                        snapshotter: c.snapshotter().to_string(),
                        key: key.clone(),
                    }))
                    .await
                    .map(|_| ()),
                "remove snapshot",
            )?;
            ignore_not_found(
                LeasesClient::new(c.channel())
                    .delete(c.request(DeleteLeaseRequest {
                        id: lease_id(&key),
                        sync: false,
                    }))
                    .await
                    .map(|_| ()),
                "delete lease",
            )
        })?;
        Ok(())
    }

    fn start(
        &self,
        rec: &ContainerRecord,
        pod_dir: &Path,
        oom_counter: &Path,
    ) -> Result<u32, RuntimeError> {
        let spec = Self::containerd_spec(rec)?;
        let cdir = exits::container_dir(pod_dir, &rec.id);
        // The exit recorder finds the cgroup's OOM counter through this
        // link (it outlives the agent).
        let link = cdir.join("oom-counter");
        let _ = std::fs::remove_file(&link);
        let _ = std::os::unix::fs::symlink(oom_counter, &link);
        let _ = std::fs::remove_file(cdir.join(logger::DRAINED));
        let _ = std::fs::remove_file(cdir.join(logger::DRAIN_REQUEST));
        let _ = std::fs::remove_file(cdir.join(exits::OOM_MARK));
        self.registry.insert(&rec.id, self.watched(rec, pod_dir));
        let io = logger::uri(&self.logger_exe, &cdir);
        let c = self.client.clone();
        let id = rec.id.clone();
        // The image's normalized name: containerd's image removal checks it.
        let image = self.cimages.resolve(&rec.config.image)?.name;
        let pod_dir_s = path_str(pod_dir)?.to_string();
        let runc = path_str(&self.runc)?.to_string();
        let tty = rec.config.tty;
        let started = self.client.call("start task", async move {
            let container = Container {
                id: id.clone(),
                labels: HashMap::from([
                    (OWNER_LABEL.to_string(), OWNER.to_string()),
                    (POD_DIR_LABEL.to_string(), pod_dir_s),
                ]),
                image,
                runtime: Some(Runtime {
                    name: RUNC_V2.into(),
                    options: Some(
                        RuncOptions {
                            binary_name: runc,
                            root: String::new(),
                        }
                        .to_any(),
                    ),
                }),
                spec: Some(Any {
                    type_url: SPEC_TYPE.into(),
                    value: spec,
                }),
                snapshotter: c.snapshotter().to_string(),
                snapshot_key: id.clone(),
                ..Default::default()
            };
            match ContainersClient::new(c.channel())
                .create(c.request(CreateContainerRequest {
                    container: Some(container),
                }))
                .await
            {
                Ok(_) => {}
                // A retried start: the container is there already.
                Err(s) if s.code() == Code::AlreadyExists => {}
                Err(s) => return Err(rpc("create container")(s)),
            }
            let mounts = SnapshotsClient::new(c.channel())
                .mounts(c.request(MountsRequest {
                    snapshotter: c.snapshotter().to_string(),
                    key: id.clone(),
                }))
                .await
                .map_err(rpc("snapshot mounts"))?
                .into_inner()
                .mounts;
            let mut tasks = TasksClient::new(c.channel());
            match tasks
                .create(c.request(CreateTaskRequest {
                    container_id: id.clone(),
                    rootfs: mounts,
                    stdin: String::new(),
                    stdout: io.clone(),
                    stderr: io,
                    terminal: tty,
                    ..Default::default()
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => {}
                Err(s) => return Err(rpc("create task")(s)),
            }
            let r = tasks
                .start(c.request(StartRequest {
                    container_id: id,
                    exec_id: String::new(),
                }))
                .await
                .map_err(rpc("start task"))?;
            Ok((r.into_inner().pid, SystemTime::now()))
        });
        let (pid, at) = match started {
            Ok(v) => v,
            Err(e) => {
                self.registry.remove(&rec.id);
                return Err(e.into());
            }
        };
        state::write_json_atomic(
            &state::started_path(pod_dir, &rec.id),
            &StartedRecord {
                pid,
                started_at: format_rfc3339_nano(at),
            },
            true,
        )?;
        Ok(pid)
    }

    fn state(&self, rec: &ContainerRecord, pod_dir: &Path) -> Result<ContainerState, RuntimeError> {
        if let Some(exit) = state::read_exit(pod_dir, &rec.id)? {
            return Ok(ContainerState::Exited(exit_info(&exit)));
        }
        let Some(started) = state::read_started(pod_dir, &rec.id)? else {
            return Ok(ContainerState::Created);
        };
        let running = ContainerState::Running {
            pid: started.pid,
            started_at: started.started_at.clone(),
        };
        if process_alive(started.pid) {
            return Ok(running);
        }
        let c = self.client.clone();
        let id = rec.id.clone();
        let task = self.client.call("get task", async move {
            match TasksClient::new(c.channel())
                .get(c.request(GetRequest {
                    container_id: id,
                    exec_id: String::new(),
                }))
                .await
            {
                Ok(r) => Ok(r.into_inner().process),
                Err(s) if s.code() == Code::NotFound => Ok(None),
                Err(s) => Err(rpc("get task")(s)),
            }
        })?;
        match task {
            None => Ok(ContainerState::Unknown { pid: started.pid }),
            Some(p) if p.status == TaskStatus::Stopped as i32 => {
                self.registry.remove(&rec.id);
                let exit = exits::record_from_task(
                    pod_dir,
                    &rec.id,
                    &oom_counter_of(rec),
                    p.exit_status,
                    p.exited_at.as_ref(),
                )?;
                Ok(ContainerState::Exited(exit_info(&exit)))
            }
            Some(_) => {
                // The init is gone but containerd has not reported it yet.
                match self.wait_exit(rec, pod_dir, Duration::from_secs(2))? {
                    Some(s) => Ok(s),
                    None => Ok(running),
                }
            }
        }
    }

    fn stop(
        &self,
        rec: &ContainerRecord,
        pod_dir: &Path,
        grace: Duration,
    ) -> Result<ContainerState, RuntimeError> {
        let state = self.state(rec, pod_dir)?;
        if !matches!(state, ContainerState::Running { .. }) {
            return Ok(state);
        }
        if !grace.is_zero() {
            self.kill(&rec.id, libc::SIGTERM, false)?;
            if let Some(s) = self.wait_exit(rec, pod_dir, grace)? {
                return Ok(s);
            }
        }
        self.kill(&rec.id, libc::SIGKILL, true)?;
        match self.wait_exit(rec, pod_dir, Duration::from_secs(10))? {
            Some(s) => Ok(s),
            None => self.state(rec, pod_dir),
        }
    }

    fn delete(&self, rec: &ContainerRecord) -> Result<(), RuntimeError> {
        self.registry.remove(&rec.id);
        let c = self.client.clone();
        let id = rec.id.clone();
        self.client.call("delete container", async move {
            delete_container(&c, &id).await
        })?;
        Ok(())
    }

    fn exec(
        &self,
        rec: &ContainerRecord,
        process: &oci_spec::runtime::Process,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError> {
        super::exec::exec(&self.client, rec, process, timeout)
    }

    fn exec_streaming(
        &self,
        rec: &ContainerRecord,
        process: &oci_spec::runtime::Process,
        stdin: bool,
    ) -> Result<ExecSession, RuntimeError> {
        super::exec::exec_streaming(&self.client, rec, process, stdin)
    }

    fn recover(
        &self,
        live: &BTreeSet<String>,
        _pods_dir: &Path,
    ) -> Result<Vec<String>, RuntimeError> {
        let c = self.client.clone();
        let owned = format!("labels.\"{OWNER_LABEL}\"=={OWNER}");
        let (containers, snapshots) = self.client.call("list containers", async move {
            let containers = ContainersClient::new(c.channel())
                .list(c.request(ListContainersRequest {
                    filters: vec![owned],
                }))
                .await
                .map_err(rpc("list containers"))?
                .into_inner()
                .containers;
            let mut snaps = Vec::new();
            let mut stream = SnapshotsClient::new(c.channel())
                .list(c.request(ListSnapshotsRequest {
                    snapshotter: c.snapshotter().to_string(),
                    filters: vec![format!("labels.\"{CONTAINER_LABEL}\"")],
                }))
                .await
                .map_err(rpc("list snapshots"))?
                .into_inner();
            while let Some(r) = stream.message().await.map_err(rpc("list snapshots"))? {
                snaps.extend(r.info.into_iter().map(|i| i.name));
            }
            // Leases of snapshots that were removed before a crash.
            let leases = LeasesClient::new(c.channel())
                .list(c.request(ListLeasesRequest {
                    filters: vec![format!("labels.\"{OWNER_LABEL}\"=={OWNER}")],
                }))
                .await
                .map_err(rpc("list leases"))?
                .into_inner()
                .leases;
            snaps.extend(
                leases
                    .into_iter()
                    .filter_map(|l| l.id.strip_prefix(LEASE_PREFIX).map(str::to_string)),
            );
            snaps.sort();
            snaps.dedup();
            Ok((containers, snaps))
        })?;
        let mut removed = Vec::new();
        for ctr in containers {
            if live.contains(&ctr.id) {
                // Re-adopt: exits are recorded again by the subscription.
                if let Some(dir) = ctr.labels.get(POD_DIR_LABEL) {
                    let pod_dir = PathBuf::from(dir);
                    let oom = std::fs::read_link(
                        exits::container_dir(&pod_dir, &ctr.id).join("oom-counter"),
                    )
                    .unwrap_or_default();
                    self.registry.insert(
                        &ctr.id,
                        Watched {
                            pod_dir,
                            oom_counter: oom,
                        },
                    );
                }
                continue;
            }
            self.kill(&ctr.id, libc::SIGKILL, true)?;
            let c = self.client.clone();
            let id = ctr.id.clone();
            self.client.call("delete container", async move {
                delete_container(&c, &id).await
            })?;
            self.release_rootfs(&ctr.id)?;
            removed.push(ctr.id);
        }
        for key in snapshots {
            if !live.contains(&key) && !removed.contains(&key) {
                self.release_rootfs(&key)?;
                removed.push(key);
            }
        }
        Ok(removed)
    }
}

/// Deletes the task (waiting briefly for a killed one to stop) and the
/// container; what is already gone is fine.
async fn delete_container(c: &Client, id: &str) -> Result<(), ContainerdError> {
    let mut tasks = TasksClient::new(c.channel());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tasks
            .delete(c.request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(_) => break,
            Err(s) if s.code() == Code::NotFound => break,
            // Still running (a kill in flight): retry briefly.
            Err(s) if s.code() == Code::FailedPrecondition && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => return Err(rpc("delete task")(s)),
        }
    }
    ignore_not_found(
        ContainersClient::new(c.channel())
            .delete(c.request(DeleteContainerRequest { id: id.to_string() }))
            .await
            .map(|_| ()),
        "delete container",
    )
}
