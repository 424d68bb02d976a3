//! The native backend: one monitor process per pod starts every container
//! through the OCI runtime (runc, crun, youki) and outlives the agent;
//! root filesystems are overlay mounts from herd's image store.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_images::{ImageError, ImageStore};

use crate::backend::{ContainerBackend, Images, PodSetup};
use crate::monitor::{self, MonitorClient, MonitorError, PendingMonitor};
use crate::oci::exec_stream::ExecSession;
use crate::oci::{ExecOutput, OciRuntime, RuntimeBinary};
use crate::pod::{ContainerRecord, ContainerState, RuntimeError, exit_info, process_alive};

/// herd's own container backend.
#[derive(Debug)]
pub struct NativeBackend {
    oci: OciRuntime,
    runtime: RuntimeBinary,
    store: ImageStore,
    images: Images,
    monitor_exe: PathBuf,
    monitor_args: Vec<OsString>,
}

static EXEC_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl NativeBackend {
    pub fn new(
        runtime: RuntimeBinary,
        images: ImageStore,
        monitor_exe: PathBuf,
        monitor_args: Vec<OsString>,
    ) -> Result<NativeBackend, RuntimeError> {
        std::fs::create_dir_all(&runtime.root).map_err(|source| RuntimeError::Io {
            op: "create",
            path: runtime.root.clone(),
            source,
        })?;
        Ok(NativeBackend {
            oci: OciRuntime::new(runtime.clone()),
            runtime,
            images: Images::Native(images.clone()),
            store: images,
            monitor_exe,
            monitor_args,
        })
    }

    pub fn oci(&self) -> &OciRuntime {
        &self.oci
    }

    fn store(&self) -> &ImageStore {
        &self.store
    }

    fn process_file(rec: &ContainerRecord) -> PathBuf {
        rec.bundle.join(format!(
            "exec-{}-{}.json",
            std::process::id(),
            EXEC_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
    }
}

impl ContainerBackend for NativeBackend {
    fn name(&self) -> &'static str {
        "native"
    }

    fn images(&self) -> &Images {
        &self.images
    }

    fn begin_pod(&self, pod_dir: &Path) -> Result<Option<PodSetup>, RuntimeError> {
        if MonitorClient::connect(pod_dir).is_ok() {
            return Ok(None);
        }
        // The monitor execs and binds its socket while the cgroup and the
        // namespaces are made (a few ms saved on every pod start).
        let pending: PendingMonitor =
            monitor::start_monitor(&self.monitor_exe, &self.monitor_args, pod_dir)?;
        Ok(Some(Box::new(move |made: bool| {
            let ready = pending.wait_ready();
            if !made {
                if let Ok(client) = ready {
                    let _ = client.shutdown();
                }
                return Ok(());
            }
            ready?;
            Ok(())
        })))
    }

    fn pod_supervised(&self, pod_dir: &Path) -> bool {
        MonitorClient::connect(pod_dir).is_ok()
    }

    fn end_pod(&self, pod_dir: &Path) {
        if let Ok(client) = MonitorClient::connect(pod_dir) {
            let _ = client.shutdown();
        }
    }

    fn prepare_rootfs(&self, id: &str, image: &str, rootfs: &Path) -> Result<(), RuntimeError> {
        let store = self.store();
        if !store.mounts()?.iter().any(|(m, _)| m == id) {
            store.mount_rootfs(id, image, rootfs)?;
        }
        Ok(())
    }

    fn release_rootfs(&self, id: &str) -> Result<(), RuntimeError> {
        match self.store().unmount_rootfs(id) {
            Ok(()) => Ok(()),
            Err(ImageError::Mount(herd_images::rootfs::MountError::Unknown(_))) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn start(
        &self,
        rec: &ContainerRecord,
        pod_dir: &Path,
        oom_counter: &Path,
    ) -> Result<u32, RuntimeError> {
        let client = MonitorClient::connect(pod_dir)?;
        Ok(client.start_container(monitor::StartContainer {
            id: rec.id.clone(),
            bundle: rec.bundle.clone(),
            runtime: self.runtime.clone(),
            log_path: rec.log_path.clone(),
            log_limits: rec.config.log,
            oom_counter_file: Some(oom_counter.to_path_buf()),
            tty: rec.config.tty,
            stdin: rec.config.stdin,
        })?)
    }

    fn state(&self, rec: &ContainerRecord, pod_dir: &Path) -> Result<ContainerState, RuntimeError> {
        if let Some(exit) = monitor::state::read_exit(pod_dir, &rec.id)? {
            return Ok(ContainerState::Exited(exit_info(&exit)));
        }
        match monitor::state::read_started(pod_dir, &rec.id)? {
            None => Ok(ContainerState::Created),
            Some(started) => {
                if process_alive(started.pid) {
                    Ok(ContainerState::Running {
                        pid: started.pid,
                        started_at: started.started_at,
                    })
                } else if let Ok(c) = MonitorClient::connect(pod_dir) {
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
        let client = MonitorClient::connect(pod_dir)?;
        if !grace.is_zero() {
            let _ = self.oci.kill(&rec.id, libc::SIGTERM, false);
            if let Some(exit) = wait_exit(&client, &rec.id, grace)? {
                return Ok(ContainerState::Exited(exit_info(&exit)));
            }
        }
        let _ = self.oci.kill(&rec.id, libc::SIGKILL, true);
        match wait_exit(&client, &rec.id, Duration::from_secs(10))? {
            Some(exit) => Ok(ContainerState::Exited(exit_info(&exit))),
            None => self.state(rec, pod_dir),
        }
    }

    fn delete(&self, rec: &ContainerRecord) -> Result<(), RuntimeError> {
        Ok(self.oci.delete(&rec.id, true)?)
    }

    fn exec(
        &self,
        rec: &ContainerRecord,
        process: &oci_spec::runtime::Process,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError> {
        let file = Self::process_file(rec);
        Ok(self.oci.exec(&rec.id, process, &file, timeout)?)
    }

    fn exec_streaming(
        &self,
        rec: &ContainerRecord,
        process: &oci_spec::runtime::Process,
        stdin: bool,
    ) -> Result<ExecSession, RuntimeError> {
        let file = Self::process_file(rec);
        Ok(self.oci.exec_streaming(&rec.id, process, &file, stdin)?)
    }

    fn recover(
        &self,
        live: &BTreeSet<String>,
        pods_dir: &Path,
    ) -> Result<Vec<String>, RuntimeError> {
        let mut removed = Vec::new();
        let store = self.store();
        for (id, m) in store.mounts()? {
            if m.target.starts_with(pods_dir) && !live.contains(&id) {
                store.unmount_rootfs(&id)?;
                removed.push(id);
            }
        }
        Ok(removed)
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
