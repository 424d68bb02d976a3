//! Named network namespaces, kept alive by a bind mount of the namespace
//! file at `<dir>/<name>` exactly like `ip netns add` does, so iproute2
//! (`ip -n <name>`) and other tools see the same namespaces when `dir` is
//! `/run/netns`.
//!
//! Guarantees:
//! - `create` never reuses an existing name (O_EXCL on the mount point file).
//! - `run` executes on a fresh OS thread that joined the namespace; the
//!   caller's threads never change namespace.
//! - `delete` is idempotent; the kernel frees the namespace (and the veths
//!   inside it) when the last reference (mount, fd, process) is gone.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::mount::{MountPropagationFlags, UnmountFlags};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use crate::NetError;

/// Where a thread finds its own network namespace.
const THREAD_NET_NS: &str = "/proc/thread-self/ns/net";
/// `f_type` of nsfs files (include/uapi/linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// An open network namespace: its path (bind mount or /proc link) and an
/// fd that keeps it alive while this value lives.
#[derive(Debug)]
pub struct NetNs {
    path: PathBuf,
    fd: OwnedFd,
}

fn ns_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetError + 'a {
    move |source| NetError::Netns {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn validate_name(name: &str) -> Result<(), NetError> {
    let bad = |reason| {
        Err(NetError::InvalidName {
            what: "netns name",
            value: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return bad("must be a single path component");
    }
    if name.len() > 255 {
        return bad("longer than 255 bytes");
    }
    Ok(())
}

/// Make `dir` a shared mount point (bind it on itself first if it is not a
/// mount point), as iproute2 does, so namespace mounts propagate to other
/// mount namespaces that share it.
fn make_shared(dir: &Path) -> Result<(), NetError> {
    let flags = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
    match rustix::mount::mount_change(dir, flags) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) => {
            rustix::mount::mount_bind_recursive(dir, dir)
                .map_err(|e| ns_err("bind mount dir", dir)(e.into()))?;
            rustix::mount::mount_change(dir, flags)
                .map_err(|e| ns_err("make shared", dir)(e.into()))
        }
        Err(e) => Err(ns_err("make shared", dir)(e.into())),
    }
}

impl NetNs {
    /// Create a new named netns bind-mounted at `<dir>/<name>`. `dir` is
    /// created if needed and made a shared mount point. Fails with
    /// [`NetError::NetnsExists`] when the name is taken.
    pub fn create(dir: &Path, name: &str) -> Result<NetNs, NetError> {
        validate_name(name)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(ns_err("create dir", dir))?;
        make_shared(dir)?;
        let path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o0)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(NetError::NetnsExists(path));
            }
            Err(e) => return Err(ns_err("create mount point", &path)(e)),
        }
        let target = path.clone();
        let made = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<()> {
                // SAFETY: only CLONE_NEWNET is unshared; the fd table stays
                // shared, so no thread can observe an unshared fd table.
                unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
                rustix::mount::mount_bind(THREAD_NET_NS, &target)?;
                Ok(())
            })
            .join()
        });
        let made = match made {
            Ok(r) => r.map_err(ns_err("unshare and bind", &path)),
            Err(_) => Err(NetError::Thread {
                path: path.clone(),
                reason: "panicked while creating the namespace".into(),
            }),
        };
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        match NetNs::open(&path) {
            Ok(ns) => Ok(ns),
            Err(e) => {
                let _ = NetNs::delete_path(&path);
                Err(e)
            }
        }
    }

    /// Open an existing namespace file (a bind mount or `/proc/<pid>/ns/net`).
    pub fn open(path: &Path) -> Result<NetNs, NetError> {
        let file = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(ns_err("open", path))?;
        let fs = rustix::fs::fstatfs(&file).map_err(|e| ns_err("statfs", path)(e.into()))?;
        #[allow(clippy::unnecessary_cast)]
        if fs.f_type as i64 != NSFS_MAGIC {
            return Err(NetError::Netns {
                op: "open",
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a namespace file"),
            });
        }
        Ok(NetNs {
            path: path.to_path_buf(),
            fd: file.into(),
        })
    }

    /// The path this namespace was created or opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmount and remove `<dir>/<name>`. Idempotent: a missing namespace
    /// is Ok.
    pub fn delete(dir: &Path, name: &str) -> Result<(), NetError> {
        validate_name(name)?;
        NetNs::delete_path(&dir.join(name))
    }

    /// Like [`NetNs::delete`], by path.
    pub fn delete_path(path: &Path) -> Result<(), NetError> {
        match rustix::mount::unmount(path, UnmountFlags::DETACH) {
            // EINVAL: not a mount point (half-created); remove the file.
            Ok(()) | Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(ns_err("unmount", path)(e.into())),
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ns_err("remove", path)(e)),
        }
    }

    /// Run `f` on a fresh OS thread that has joined this namespace and
    /// return its result. Sockets opened and `/proc/sys/net` files written
    /// by `f` belong to this namespace; processes spawned by `f` start in it.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetError> {
        self.run_scoped(f)
    }

    /// [`NetNs::run`] without the `'static` bounds (the thread is scoped).
    pub fn run_scoped<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetError> {
        let fd = self.fd.as_fd();
        let joined = std::thread::scope(|s| {
            let spawned = std::thread::Builder::new()
                .name("herd-netns".into())
                .spawn_scoped(s, move || {
                    rustix::thread::move_into_link_name_space(fd, Some(LinkNameSpaceType::Network))
                        .map(|()| f())
                });
            match spawned {
                Ok(h) => h.join().map_err(|_| "panicked".to_string()),
                Err(e) => Err(format!("spawn: {e}")),
            }
        });
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ns_err("setns", &self.path)(e.into())),
            Err(reason) => Err(NetError::Thread {
                path: self.path.clone(),
                reason,
            }),
        }
    }

    /// The fd keeping the namespace open (for `IFLA_NET_NS_FD`).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// An rtnetlink connection whose socket lives in `ns` (None = the caller's
/// namespace), driven by a task on the current tokio runtime.
///
/// The connection task (and with it the socket, which pins its namespace)
/// lives until the runtime shuts down: netlink-proto never ends it on its
/// own. Use [`connect_in`] for anything short-lived, in particular pod
/// namespaces that must be freed later.
pub async fn handle_in(ns: Option<&NetNs>) -> Result<rtnetlink::Handle, NetError> {
    let conn = connect_in(ns).await?;
    Ok(conn.detach())
}

/// An rtnetlink connection whose task is aborted (closing the socket) when
/// this value is dropped.
#[derive(Debug)]
pub struct NetlinkConn {
    handle: rtnetlink::Handle,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl NetlinkConn {
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Keep the connection running after this value is gone.
    pub fn detach(mut self) -> rtnetlink::Handle {
        self.task = None;
        self.handle.clone()
    }
}

impl Drop for NetlinkConn {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Like [`handle_in`], but the connection task is aborted when the returned
/// value is dropped (the socket closes when the runtime next runs the task).
pub async fn connect_in(ns: Option<&NetNs>) -> Result<NetlinkConn, NetError> {
    let rt =
        tokio::runtime::Handle::try_current().map_err(|e| NetError::NoRuntime(e.to_string()))?;
    let (conn, handle, _) = rtnetlink::from_socket(socket_in(ns, &rt)?);
    let task = rt.spawn(conn);
    Ok(NetlinkConn {
        handle,
        task: Some(task),
    })
}

/// Run `f` with an rtnetlink handle whose socket lives in `ns`, driving the
/// connection inline (no task): when this returns, the socket is closed,
/// so nothing of ours pins the namespace any more.
pub async fn with_handle_in<T, F, Fut>(ns: &NetNs, f: F) -> Result<T, NetError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T, NetError>>,
{
    use futures_util::future::{Either, select};
    let rt =
        tokio::runtime::Handle::try_current().map_err(|e| NetError::NoRuntime(e.to_string()))?;
    let (conn, handle, _) = rtnetlink::from_socket(socket_in(Some(ns), &rt)?);
    let work = std::pin::pin!(f(handle));
    match select(work, conn).await {
        Either::Left((r, _)) => r,
        Either::Right(((), _)) => Err(NetError::Socket(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("netlink connection in {} closed", ns.path().display()),
        ))),
    }
}

fn socket_in(
    ns: Option<&NetNs>,
    rt: &tokio::runtime::Handle,
) -> Result<netlink_sys::TokioSocket, NetError> {
    use netlink_sys::AsyncSocket;
    Ok(match ns {
        None => netlink_sys::TokioSocket::new(netlink_sys::protocols::NETLINK_ROUTE)
            .map_err(NetError::Socket)?,
        Some(ns) => ns
            .run_scoped(|| {
                let _guard = rt.enter();
                netlink_sys::TokioSocket::new(netlink_sys::protocols::NETLINK_ROUTE)
            })?
            .map_err(NetError::Socket)?,
    })
}
