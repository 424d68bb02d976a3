//! The floors of `pod_backends`: one `sleep 3600` busybox container
//! started without herd, (a) through containerd's API directly and (b) by
//! `runc run --detach`, with the same minimal OCI spec (new namespaces,
//! the pod's CPU and memory limits). Only the start is timed; each
//! container is removed right after, untimed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, KillRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;
use herd_images::ImageStore;
use herd_integration::containerd::Containerd;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SNAPSHOTTER: &str = "overlayfs";

/// The OCI spec both floors run: `sleep 3600` as root in new namespaces,
/// cgroup `cgroups_path`, 200m CPU and 64 MiB as the bench pods.
pub fn spec(id: &str, root: &str, cgroups_path: &str) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false, "user": {"uid": 0, "gid": 0},
            "args": ["sleep", "3600"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/", "noNewPrivileges": true,
        },
        "root": {"path": root, "readonly": false},
        "hostname": id,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {
                "memory": {"limit": 64i64 << 20},
                "cpu": {"shares": 102, "quota": 20000, "period": 100000},
            },
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "network"},
            ],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
        },
    })
}

/// The chain ID of a layer stack (containerd's snapshot name for it).
pub fn chain_id(diff_ids: &[String]) -> Option<String> {
    let mut it = diff_ids.iter();
    let mut chain = it.next()?.clone();
    for d in it {
        let h = Sha256::digest(format!("{chain} {d}").as_bytes());
        chain = format!("sha256:{}", hex::encode(h));
    }
    Some(chain)
}

/// Containers created and started through containerd's gRPC API:
/// Snapshots.Prepare + Containers.Create + Tasks.Create + Tasks.Start.
pub struct RawContainerd {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    namespace: String,
    image: String,
    chain: String,
}

fn req<T>(ns: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    r
}

impl RawContainerd {
    /// Imports `archive` (an OCI archive of `image` with these layers)
    /// with `ctr` (unpacked on overlayfs) and connects.
    pub fn new(
        ctrd: &Containerd,
        archive: &Path,
        image: &str,
        diff_ids: &[String],
    ) -> Result<RawContainerd> {
        ctrd.ctr_ok(&[
            "images",
            "import",
            "--snapshotter",
            SNAPSHOTTER,
            &archive.to_string_lossy(),
        ])?;
        let chain = chain_id(diff_ids).context("image without layers")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let channel = rt.block_on(containerd_client::connect(&ctrd.socket))?;
        Ok(RawContainerd {
            rt,
            channel,
            namespace: ctrd.namespace.clone(),
            image: image.to_string(),
            chain,
        })
    }

    /// Starts container `raw-<i>` and removes it; returns the time from
    /// the first call until Tasks.Start returned.
    pub fn run(&self, i: usize) -> Result<Duration> {
        self.rt.block_on(self.run_async(i))
    }

    async fn run_async(&self, i: usize) -> Result<Duration> {
        let ns = self.namespace.as_str();
        let id = format!("raw-{i}");
        let mut snaps = SnapshotsClient::new(self.channel.clone());
        let mut containers = ContainersClient::new(self.channel.clone());
        let mut tasks = TasksClient::new(self.channel.clone());
        let spec = spec(&id, "rootfs", &format!("/{ns}/{id}"));
        let t0 = Instant::now();
        let mounts = snaps
            .prepare(req(
                ns,
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.clone(),
                    parent: self.chain.clone(),
                    labels: HashMap::new(),
                },
            ))
            .await
            .context("prepare snapshot")?
            .into_inner()
            .mounts;
        let container = Container {
            id: id.clone(),
            image: self.image.clone(),
            runtime: Some(Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: spec.to_string().into_bytes(),
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.clone(),
            ..Default::default()
        };
        containers
            .create(req(
                ns,
                CreateContainerRequest {
                    container: Some(container),
                },
            ))
            .await
            .context("create container")?;
        tasks
            .create(req(
                ns,
                CreateTaskRequest {
                    container_id: id.clone(),
                    rootfs: mounts,
                    ..Default::default()
                },
            ))
            .await
            .context("create task")?;
        tasks
            .start(req(
                ns,
                StartRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                },
            ))
            .await
            .context("start task")?;
        let took = t0.elapsed();

        tasks
            .kill(req(
                ns,
                KillRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                    signal: 9,
                    all: true,
                },
            ))
            .await
            .context("kill task")?;
        tasks
            .wait(req(
                ns,
                WaitRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                },
            ))
            .await
            .context("wait task")?;
        tasks
            .delete(req(
                ns,
                DeleteTaskRequest {
                    container_id: id.clone(),
                },
            ))
            .await
            .context("delete task")?;
        containers
            .delete(req(ns, DeleteContainerRequest { id: id.clone() }))
            .await
            .context("delete container")?;
        // containerd's garbage collector may have taken the snapshot with
        // the container already.
        match snaps
            .remove(req(
                ns,
                RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id,
                },
            ))
            .await
        {
            Err(s) if s.code() != containerd_client::tonic::Code::NotFound => {
                return Err(s).context("remove snapshot");
            }
            _ => {}
        }
        Ok(took)
    }
}

/// `runc run --detach` of a bundle whose rootfs is an overlay of the
/// image from herd's store (mounted beforehand, untimed). [`Drop`] deletes
/// what a failed run left: runc containers of its state dir, rootfs mounts
/// and its cgroup (by exact name).
pub struct RawRunc {
    dir: PathBuf,
    state: PathBuf,
    store: ImageStore,
    image: String,
    cgroup: String,
}

impl RawRunc {
    /// Bundles under `dir`; rootfs from the herd image store `images`.
    pub fn new(dir: &Path, images: &Path, image: &str) -> Result<RawRunc> {
        std::fs::create_dir_all(dir)?;
        Ok(RawRunc {
            dir: dir.to_path_buf(),
            state: dir.join("state"),
            store: ImageStore::open(images)?,
            image: image.to_string(),
            cgroup: format!("herd-bench-runc-{}", std::process::id()),
        })
    }

    fn runc(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.state).stdin(Stdio::null());
        c
    }

    /// One timed `runc run --detach`, prepared and removed untimed.
    pub fn run(&self, i: usize) -> Result<Duration> {
        let id = format!("raw-runc-{i}");
        let bundle = self.dir.join(&id);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        self.store.mount_rootfs(&id, &self.image, &rootfs)?;
        let cfg = spec(
            &id,
            &rootfs.to_string_lossy(),
            &format!("/{}/{id}", self.cgroup),
        );
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&cfg)?)?;
        // A file, not a pipe: the container inherits runc's stdio, and a
        // pipe would stay open as long as it runs.
        let err_path = self.dir.join(format!("{id}.stderr"));
        let err = std::fs::File::create(&err_path)?;
        let t0 = Instant::now();
        let st = self
            .runc()
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdout(Stdio::null())
            .stderr(err)
            .status()?;
        let took = t0.elapsed();
        if !st.success() {
            bail!(
                "runc run {id}: {st}: {}",
                std::fs::read_to_string(&err_path)
                    .unwrap_or_default()
                    .trim()
            );
        }
        std::fs::remove_file(&err_path)?;
        self.runc()
            .args(["delete", "--force", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        self.store.unmount_rootfs(&id)?;
        std::fs::remove_dir_all(&bundle)?;
        Ok(took)
    }
}

impl Drop for RawRunc {
    fn drop(&mut self) {
        if let Ok(out) = self.runc().args(["list", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self
                    .runc()
                    .args(["delete", "--force", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("raw-runc-") {
                    let _ = self.store.unmount_rootfs(&name);
                }
            }
        }
        let root = PathBuf::from("/sys/fs/cgroup");
        let mut hierarchies = vec![root.clone()];
        if let Ok(ctls) = std::fs::read_dir(&root) {
            hierarchies.extend(ctls.flatten().map(|e| e.path()));
        }
        for h in hierarchies {
            let dir = h.join(&self.cgroup);
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten().filter(|e| e.path().is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}
