//! `exec` through containerd: `Tasks.Exec` + `Start` + `Wait` +
//! `DeleteProcess`, with the process's stdio on FIFOs herd creates in the
//! container's dir (containerd's shim opens the write ends).
//!
//! A FIFO's reader sees end-of-file as soon as no writer is open, so herd
//! holds a write end of each output FIFO of its own until the shim has
//! started the process (and opened its ends); from then on, end-of-file
//! means the process (and everything that inherited its stdio) is done.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, KillRequest, ResizePtyRequest,
    StartRequest, WaitRequest,
};
use prost_types::Any;
use rustix::fs::{Mode, OFlags};
use tonic::Code;

use super::{Client, ContainerdError, path_str, rpc};
use crate::oci::exec_stream::{ExecSession, RemoteProcess, Resizer};
use crate::oci::{ExecOutput, OciError};
use crate::pod::{ContainerRecord, RuntimeError};

const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
static SEQ: AtomicU64 = AtomicU64::new(0);

/// One exec's FIFOs, removed on drop.
struct Fifos {
    dir: PathBuf,
    stdin: Option<PathBuf>,
    stdout: PathBuf,
    stderr: Option<PathBuf>,
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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

fn mkfifo(path: &Path) -> Result<(), RuntimeError> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .map_err(|e| io_err("mkfifo", path)(e.into()))
}

/// Opens a FIFO without blocking, then makes the fd blocking.
fn open_fifo(path: &Path, flags: OFlags) -> Result<OwnedFd, RuntimeError> {
    let fd = rustix::fs::open(
        path,
        flags | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open fifo", path)(e.into()))?;
    let fl = rustix::fs::fcntl_getfl(&fd).map_err(|e| io_err("fcntl", path)(e.into()))?;
    rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK)
        .map_err(|e| io_err("fcntl", path)(e.into()))?;
    Ok(fd)
}

fn exec_id() -> String {
    format!(
        "exec-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn fifos(rec: &ContainerRecord, id: &str, stdin: bool, tty: bool) -> Result<Fifos, RuntimeError> {
    let base = rec.bundle.parent().unwrap_or(&rec.bundle).join(id);
    std::fs::create_dir_all(&base).map_err(io_err("create", &base))?;
    let f = Fifos {
        stdin: stdin.then(|| base.join("stdin")),
        stdout: base.join("stdout"),
        stderr: (!tty).then(|| base.join("stderr")),
        dir: base,
    };
    for p in [Some(&f.stdout), f.stderr.as_ref(), f.stdin.as_ref()]
        .into_iter()
        .flatten()
    {
        mkfifo(p)?;
    }
    Ok(f)
}

/// Creates and starts the exec; returns its pid.
fn start(
    client: &Client,
    container: &str,
    id: &str,
    process: &oci_spec::runtime::Process,
    f: &Fifos,
) -> Result<u32, RuntimeError> {
    let spec = serde_json::to_vec(process).map_err(|e| RuntimeError::Io {
        op: "encode",
        path: f.dir.clone(),
        source: std::io::Error::other(e),
    })?;
    let req = ExecProcessRequest {
        container_id: container.to_string(),
        stdin: f
            .stdin
            .as_deref()
            .map(path_str)
            .transpose()?
            .unwrap_or("")
            .into(),
        stdout: path_str(&f.stdout)?.into(),
        stderr: f
            .stderr
            .as_deref()
            .map(path_str)
            .transpose()?
            .unwrap_or("")
            .into(),
        terminal: process.terminal().unwrap_or(false),
        spec: Some(Any {
            type_url: PROCESS_TYPE.into(),
            value: spec,
        }),
        exec_id: id.to_string(),
    };
    let c = client.clone();
    let (container, id) = (container.to_string(), id.to_string());
    let pid = client.call("exec", async move {
        let mut tasks = TasksClient::new(c.channel());
        tasks.exec(c.request(req)).await.map_err(rpc("exec"))?;
        match tasks
            .start(c.request(StartRequest {
                container_id: container.clone(),
                exec_id: id.clone(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().pid),
            Err(s) => {
                let _ = tasks
                    .delete_process(c.request(DeleteProcessRequest {
                        container_id: container,
                        exec_id: id,
                    }))
                    .await;
                Err(rpc("start exec")(s))
            }
        }
    })?;
    Ok(pid)
}

/// Waits for the exec to exit (None: `timeout` passed first).
fn wait(
    client: &Client,
    container: &str,
    id: &str,
    timeout: Option<Duration>,
) -> Result<Option<i32>, ContainerdError> {
    let c = client.clone();
    let (container, id) = (container.to_string(), id.to_string());
    let limit = timeout.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    client.call_within("wait exec", limit + Duration::from_secs(5), async move {
        let mut tasks = TasksClient::new(c.channel());
        let fut = tasks.wait(c.request(WaitRequest {
            container_id: container,
            exec_id: id,
        }));
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Ok(None),
            Ok(Ok(r)) => Ok(Some(r.into_inner().exit_status as i32)),
            Ok(Err(s)) => Err(rpc("wait exec")(s)),
        }
    })
}

/// Kills (SIGKILL) and deletes the exec; what is gone already is fine.
fn kill_and_delete(client: &Client, container: &str, id: &str, kill: bool) {
    let c = client.clone();
    let (container, id) = (container.to_string(), id.to_string());
    let _ = client.call("delete exec", async move {
        let mut tasks = TasksClient::new(c.channel());
        if kill {
            let _ = tasks
                .kill(c.request(KillRequest {
                    container_id: container.clone(),
                    exec_id: id.clone(),
                    signal: libc::SIGKILL as u32,
                    all: false,
                }))
                .await;
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                tasks.wait(c.request(WaitRequest {
                    container_id: container.clone(),
                    exec_id: id.clone(),
                })),
            )
            .await;
        }
        match tasks
            .delete_process(c.request(DeleteProcessRequest {
                container_id: container,
                exec_id: id,
            }))
            .await
        {
            Err(s) if s.code() != Code::NotFound => Err(rpc("delete exec")(s)),
            _ => Ok(()),
        }
    });
}

fn reader(fd: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = File::from(fd).read_to_end(&mut out);
        out
    })
}

/// Runs `process` in the container, output collected; killed after
/// `timeout` (then the error is a timeout).
pub fn exec(
    client: &Client,
    rec: &ContainerRecord,
    process: &oci_spec::runtime::Process,
    timeout: Option<Duration>,
) -> Result<ExecOutput, RuntimeError> {
    let id = exec_id();
    let tty = process.terminal().unwrap_or(false);
    let f = fifos(rec, &id, false, tty)?;
    let out_r = open_fifo(&f.stdout, OFlags::RDONLY)?;
    let out_w = open_fifo(&f.stdout, OFlags::WRONLY)?;
    let err = match &f.stderr {
        Some(p) => Some((open_fifo(p, OFlags::RDONLY)?, open_fifo(p, OFlags::WRONLY)?)),
        None => None,
    };
    let (err_r, err_w) = err.map_or((None, None), |(r, w)| (Some(r), Some(w)));
    let out_t = reader(out_r);
    let err_t = err_r.map(reader);
    let started = start(client, &rec.id, &id, process, &f);
    drop((out_w, err_w));
    started?;
    let waited = wait(client, &rec.id, &id, timeout);
    let timed_out = matches!(waited, Ok(None));
    kill_and_delete(client, &rec.id, &id, timed_out);
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    match waited? {
        Some(exit_code) => Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        }),
        None => Err(ContainerdError::Timeout {
            op: format!("exec in {}", rec.id),
            timeout: timeout.unwrap_or_default(),
        }
        .into()),
    }
}

/// The exec's stdin: the shim holds a write end of the FIFO itself until
/// told (`CloseIO`) that the input is over, so dropping this writer closes
/// ours and then tells it.
struct Stdin {
    file: Option<File>,
    client: Client,
    container: String,
    id: String,
}

impl Write for Stdin {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Stdin {
    fn drop(&mut self) {
        drop(self.file.take());
        let c = self.client.clone();
        let (container, id) = (self.container.clone(), self.id.clone());
        let _ = self.client.call("close exec stdin", async move {
            match TasksClient::new(c.channel())
                .close_io(c.request(CloseIoRequest {
                    container_id: container,
                    exec_id: id,
                    stdin: true,
                }))
                .await
            {
                Err(s) if s.code() != Code::NotFound => Err(rpc("close exec stdin")(s)),
                _ => Ok(()),
            }
        });
    }
}

/// A containerd exec behind an [`ExecSession`].
struct Remote {
    client: Client,
    container: String,
    id: String,
    pid: u32,
    done: bool,
    _fifos: Fifos,
}

impl RemoteProcess for Remote {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn wait(&mut self) -> Result<i32, OciError> {
        let r = wait(&self.client, &self.container, &self.id, None);
        self.done = true;
        kill_and_delete(&self.client, &self.container, &self.id, false);
        match r {
            Ok(Some(code)) => Ok(code),
            Ok(None) => Ok(255),
            Err(e) => Err(OciError::Spawn {
                binary: PathBuf::from("containerd"),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
    fn kill(&mut self) {
        if !self.done {
            self.done = true;
            kill_and_delete(&self.client, &self.container, &self.id, true);
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `process` in the container with its stdio handed to the caller.
pub fn exec_streaming(
    client: &Client,
    rec: &ContainerRecord,
    process: &oci_spec::runtime::Process,
    stdin: bool,
) -> Result<ExecSession, RuntimeError> {
    let id = exec_id();
    let tty = process.terminal().unwrap_or(false);
    let f = fifos(rec, &id, stdin, tty)?;
    let out_r = open_fifo(&f.stdout, OFlags::RDONLY)?;
    let out_w = open_fifo(&f.stdout, OFlags::WRONLY)?;
    let err = match &f.stderr {
        Some(p) => Some((open_fifo(p, OFlags::RDONLY)?, open_fifo(p, OFlags::WRONLY)?)),
        None => None,
    };
    let (err_r, err_w) = err.map_or((None, None), |(r, w)| (Some(r), Some(w)));
    // The stdin FIFO: a reader end of ours keeps the open of the write end
    // from blocking; the shim opens its own reader.
    let stdin_fds = match &f.stdin {
        Some(p) => {
            let r = open_fifo(p, OFlags::RDONLY)?;
            let w = open_fifo(p, OFlags::WRONLY)?;
            Some((r, w))
        }
        None => None,
    };
    let pid = start(client, &rec.id, &id, process, &f);
    drop((out_w, err_w));
    let pid = pid?;
    let (stdin_r, stdin_w) = stdin_fds.map_or((None, None), |(r, w)| (Some(r), Some(w)));
    drop(stdin_r);
    let resizer = tty.then(|| {
        let c = client.clone();
        let (container, eid) = (rec.id.clone(), id.clone());
        Resizer::remote(Box::new(move |width: u16, height: u16| {
            let c2 = c.clone();
            let (container, eid) = (container.clone(), eid.clone());
            c.call("resize pty", async move {
                TasksClient::new(c2.channel())
                    .resize_pty(c2.request(ResizePtyRequest {
                        container_id: container,
                        exec_id: eid,
                        width: width as u32,
                        height: height as u32,
                    }))
                    .await
                    .map(|_| ())
                    .map_err(rpc("resize pty"))
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
        })
            as Box<dyn Fn(u16, u16) -> std::io::Result<()> + Send + Sync>)
    });
    Ok(ExecSession::remote(
        stdin_w.map(|w| {
            Box::new(Stdin {
                file: Some(File::from(w)),
                client: client.clone(),
                container: rec.id.clone(),
                id: id.clone(),
            }) as Box<dyn Write + Send>
        }),
        Some(Box::new(File::from(out_r)) as Box<dyn Read + Send>),
        err_r.map(|r| Box::new(File::from(r)) as Box<dyn Read + Send>),
        resizer,
        Box::new(Remote {
            client: client.clone(),
            container: rec.id.clone(),
            id,
            pid,
            done: false,
            _fifos: f,
        }),
    ))
}
