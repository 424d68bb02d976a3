//! The monitor process: one blocking poll(2) loop over a signalfd (SIGCHLD,
//! SIGTERM, SIGINT), the listening socket, the clients and the containers'
//! stdio. No threads, no async runtime: the process stays small.
//!
//! The loop never exits because of a client: malformed or oversized
//! requests get an error or the connection closed. It exits after
//! `Shutdown` (or SIGTERM/SIGINT) once no container is running, removing
//! its socket and pid file.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use super::MonitorError;
use super::container::Container;
use super::protocol::{MAX_REQUEST, Request, Response, encode};
use super::state::{self, read_exit};
use super::sys::{SignalFd, reap_all, set_subreaper};

/// Most clients connected at once; more are closed on accept.
const MAX_CLIENTS: usize = 64;
const READ_BUF: usize = 16 * 1024;

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// A `Wait` for this container id is pending.
    waiting: Option<String>,
    /// Close once `outbuf` is written (oversized request, peer closed).
    closing: bool,
    dead: bool,
}

#[derive(Debug, Clone, Copy)]
enum Token {
    Signal,
    Listener,
    Client(usize),
    Pipe(usize, usize),
}

/// The monitor's state.
#[derive(Debug)]
pub struct Server {
    pod_dir: PathBuf,
    sock_path: PathBuf,
    pid_path: PathBuf,
    listener: UnixListener,
    signals: SignalFd,
    clients: Vec<Client>,
    containers: Vec<Container>,
    shutting_down: bool,
    /// Files written without fsync on the start path, synced after replying.
    sync_later: Vec<PathBuf>,
    buf: Vec<u8>,
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> MonitorError {
    let what = what.to_string();
    let path = path.to_path_buf();
    move |source| MonitorError::Setup { what, path, source }
}

impl Server {
    /// Sets the process up (subreaper, signals, socket, pid file) and
    /// signals readiness on `ready` by writing `R` and closing it (the fd
    /// is left in place when setup fails, for the caller to report on).
    pub fn bind(pod_dir: &Path, ready: &mut Option<OwnedFd>) -> Result<Server, MonitorError> {
        set_subreaper().map_err(io_err("PR_SET_CHILD_SUBREAPER", pod_dir))?;
        let signals = SignalFd::new(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT])
            .map_err(io_err("signalfd", pod_dir))?;
        std::env::set_current_dir("/").map_err(io_err("chdir", Path::new("/")))?;
        let containers_dir = pod_dir.join("containers");
        std::fs::create_dir_all(&containers_dir).map_err(io_err("mkdir", &containers_dir))?;
        let sock_path = pod_dir.join("monitor.sock");
        if UnixStream::connect(&sock_path).is_ok() {
            return Err(MonitorError::AlreadyRunning(sock_path));
        }
        let _ = std::fs::remove_file(&sock_path);
        let listener = UnixListener::bind(&sock_path).map_err(io_err("bind", &sock_path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("bind", &sock_path))?;
        let pid_path = pod_dir.join("monitor.pid");
        std::fs::write(&pid_path, std::process::id().to_string())
            .map_err(io_err("write", &pid_path))?;
        if let Some(fd) = ready.take() {
            let mut f = std::fs::File::from(fd);
            f.write_all(b"R").map_err(io_err("ready fd", pod_dir))?;
        }
        Ok(Server {
            pod_dir: pod_dir.to_path_buf(),
            sock_path,
            pid_path,
            listener,
            signals,
            clients: Vec::new(),
            containers: Vec::new(),
            shutting_down: false,
            sync_later: Vec::new(),
            buf: vec![0; READ_BUF],
        })
    }

    fn running(&self) -> usize {
        self.containers.iter().filter(|c| c.is_running()).count()
    }

    /// Runs until shut down.
    pub fn run(mut self) -> Result<(), MonitorError> {
        loop {
            if self.shutting_down
                && self.running() == 0
                && self.clients.iter().all(|c| c.outbuf.is_empty())
            {
                break;
            }
            let ready = self.poll_once()?;
            for (token, revents) in ready {
                match token {
                    Token::Signal => self.on_signals(),
                    Token::Listener => self.accept(),
                    Token::Client(i) => self.on_client(i, revents),
                    Token::Pipe(c, slot) => {
                        let buf = &mut self.buf;
                        self.containers[c].drain(slot, buf);
                    }
                }
            }
            self.finish_exits();
            self.clients.retain(|c| !c.dead);
            for path in std::mem::take(&mut self.sync_later) {
                if let Err(e) = state::sync_file(&path) {
                    eprintln!("monitor: {e}");
                }
            }
        }
        let _ = std::fs::remove_file(&self.sock_path);
        let _ = std::fs::remove_file(&self.pid_path);
        Ok(())
    }

    fn poll_once(&mut self) -> Result<Vec<(Token, PollFlags)>, MonitorError> {
        let mut tokens = vec![Token::Signal, Token::Listener];
        let mut fds = vec![
            PollFd::new(&self.signals, PollFlags::IN),
            PollFd::new(&self.listener, PollFlags::IN),
        ];
        for (i, c) in self.clients.iter().enumerate() {
            let mut flags = PollFlags::empty();
            if !c.closing {
                flags |= PollFlags::IN;
            }
            if !c.outbuf.is_empty() {
                flags |= PollFlags::OUT;
            }
            tokens.push(Token::Client(i));
            fds.push(PollFd::new(&c.stream, flags));
        }
        for (i, c) in self.containers.iter().enumerate() {
            for (slot, p) in c.pipes.iter().enumerate() {
                if let Some(p) = p {
                    tokens.push(Token::Pipe(i, slot));
                    fds.push(PollFd::new(&p.file, PollFlags::IN));
                }
            }
        }
        let deadline = self.containers.iter().filter_map(Container::deadline).min();
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            }
        });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(Vec::new()),
            Err(e) => return Err(MonitorError::Poll(e.into())),
        }
        Ok(tokens
            .into_iter()
            .zip(fds.iter().map(PollFd::revents))
            .filter(|(_, r)| !r.is_empty())
            .collect())
    }

    fn on_signals(&mut self) {
        let signals = self.signals.read_pending().unwrap_or_default();
        if signals
            .iter()
            .any(|s| *s == libc::SIGTERM || *s == libc::SIGINT)
        {
            self.shutting_down = true;
        }
        self.reap();
    }

    /// Reaps every exited child; containers move to draining, other
    /// orphans are just collected so they do not stay zombies.
    fn reap(&mut self) {
        for r in reap_all() {
            if let Some(c) = self.containers.iter_mut().find(|c| {
                c.pid as i32 == r.pid && matches!(c.status, super::container::Status::Running)
            }) {
                c.reaped(r);
            }
        }
    }

    fn finish_exits(&mut self) {
        let now = Instant::now();
        for i in 0..self.containers.len() {
            if let Some(record) = self.containers[i].try_finish(&self.pod_dir, now) {
                let id = self.containers[i].id.clone();
                let line = encode(&Response::Exited(record));
                for c in self
                    .clients
                    .iter_mut()
                    .filter(|c| c.waiting.as_deref() == Some(id.as_str()))
                {
                    c.waiting = None;
                    c.outbuf.extend_from_slice(&line);
                    flush_client(c);
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    // At the limit, the oldest client without a pending
                    // Wait makes room: idle connections cannot lock the
                    // agent out.
                    if self.clients.iter().filter(|c| !c.dead).count() >= MAX_CLIENTS {
                        match self
                            .clients
                            .iter_mut()
                            .find(|c| !c.dead && c.waiting.is_none())
                        {
                            Some(victim) => victim.dead = true,
                            None => continue,
                        }
                    }
                    self.clients.push(Client {
                        stream,
                        inbuf: Vec::new(),
                        outbuf: Vec::new(),
                        waiting: None,
                        closing: false,
                        dead: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn on_client(&mut self, i: usize, revents: PollFlags) {
        if self.clients[i].dead {
            return;
        }
        if revents.intersects(PollFlags::OUT) {
            flush_client(&mut self.clients[i]);
        }
        if revents.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
            && !self.clients[i].closing
        {
            self.read_client(i);
        }
        let c = &mut self.clients[i];
        if c.closing && c.outbuf.is_empty() {
            c.dead = true;
        }
    }

    fn read_client(&mut self, i: usize) {
        let n = match self.clients[i].stream.read(&mut self.buf) {
            Ok(0) => {
                let c = &mut self.clients[i];
                c.closing = true;
                // A client gone with a Wait pending no longer wants it.
                if c.waiting.take().is_some() || c.outbuf.is_empty() {
                    c.dead = true;
                }
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return;
            }
            Err(_) => {
                self.clients[i].dead = true;
                return;
            }
        };
        let data = self.buf[..n].to_vec();
        self.clients[i].inbuf.extend_from_slice(&data);
        loop {
            let c = &mut self.clients[i];
            // One request at a time: later lines wait behind a pending Wait.
            if c.waiting.is_some() || c.closing {
                break;
            }
            let Some(nl) = c.inbuf.iter().position(|b| *b == b'\n') else {
                if c.inbuf.len() > MAX_REQUEST {
                    c.inbuf = Vec::new();
                    c.outbuf.extend_from_slice(&encode(&Response::error(format!(
                        "request longer than {MAX_REQUEST} bytes"
                    ))));
                    c.closing = true;
                    flush_client(c);
                }
                break;
            };
            let line: Vec<u8> = c.inbuf.drain(..=nl).collect();
            if nl > MAX_REQUEST {
                c.outbuf.extend_from_slice(&encode(&Response::error(format!(
                    "request longer than {MAX_REQUEST} bytes"
                ))));
                c.closing = true;
                flush_client(c);
                break;
            }
            let response = match serde_json::from_slice::<Request>(&line[..nl]) {
                Ok(req) => self.handle(i, req),
                Err(e) => Some(Response::error(format!("bad request: {e}"))),
            };
            let c = &mut self.clients[i];
            if let Some(r) = response {
                c.outbuf.extend_from_slice(&encode(&r));
                flush_client(c);
            }
        }
    }

    /// Handles one request; `None` when the answer comes later (Wait).
    fn handle(&mut self, client: usize, req: Request) -> Option<Response> {
        match req {
            Request::StartContainer(start) => {
                if self.shutting_down {
                    return Some(Response::error("monitor is shutting down"));
                }
                if self
                    .containers
                    .iter()
                    .any(|c| c.id == start.id && c.is_running())
                {
                    return Some(Response::error(format!(
                        "container {} is already running",
                        start.id
                    )));
                }
                let id = start.id.clone();
                Some(match Container::start(&self.pod_dir, start) {
                    Ok(c) => {
                        let pid = c.pid;
                        self.containers.retain(|old| old.id != id);
                        self.containers.push(c);
                        self.sync_later
                            .push(state::started_path(&self.pod_dir, &id));
                        // The container may have exited during the start.
                        self.reap();
                        Response::Started { pid }
                    }
                    Err(r) => r,
                })
            }
            Request::Wait { id } => {
                if let Some(c) = self.containers.iter().find(|c| c.id == id) {
                    if let super::container::Status::Exited(r) = &c.status {
                        return Some(Response::Exited(r.clone()));
                    }
                    self.clients[client].waiting = Some(id);
                    return None;
                }
                Some(match read_exit(&self.pod_dir, &id) {
                    Ok(Some(r)) => Response::Exited(r),
                    Ok(None) => Response::error(format!("unknown container {id}")),
                    Err(e) => Response::error(e.to_string()),
                })
            }
            Request::List => Some(Response::Containers {
                containers: self.containers.iter().map(Container::record).collect(),
            }),
            Request::Shutdown => {
                self.shutting_down = true;
                Some(Response::ShuttingDown {
                    running: self.running(),
                })
            }
        }
    }
}

/// Writes as much of the client's pending output as the socket takes.
fn flush_client(c: &mut Client) {
    while !c.outbuf.is_empty() {
        match c.stream.write(&c.outbuf) {
            Ok(0) => {
                c.dead = true;
                return;
            }
            Ok(n) => {
                c.outbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                c.dead = true;
                c.outbuf.clear();
                return;
            }
        }
    }
    if c.closing {
        c.dead = true;
    }
}
