//! A throwaway Debian `containerd` (1.6) for tests: one daemon per fixture,
//! its config, root, state, gRPC / ttrpc / debug sockets and log all inside
//! one fresh temp dir, the CRI plugin disabled.
//!
//! containerd 1.6 still puts a few things under `/run/containerd` whatever
//! its config says (shim sockets in `s/`, runc state in `runc/<namespace>`,
//! `ctr`'s FIFOs in `fifo/`), so every fixture gets a namespace of its own,
//! `herd-<tag>-<pid>-<n>`, and cleans only what carries that name.
//!
//! Guarantees: [`Containerd::start`] returns only once the socket answers
//! `Version` (within 10 s, else the error quotes the log). [`Drop`], also
//! after a panic: SIGKILLs and deletes every task of the namespace (through
//! containerd while it runs, then by killing any shim whose command line
//! names the namespace, with its descendants), stops containerd, detaches
//! every mount under the temp dir, removes the dir,
//! `/run/containerd/runc/<namespace>`, the cgroups `/<namespace>` under each
//! cgroup v1 controller (where `ctr run` puts tasks), and then
//! `/run/containerd/{fifo,s,runc}` and `/run/containerd` only if empty.
//! Shims outlive [`Containerd::kill9`] and [`Containerd::restart`] (that is
//! containerd's model: tasks survive their daemon).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal, kill_process};

/// The daemon (Debian `containerd`).
pub const CONTAINERD: &str = "/usr/bin/containerd";
/// Its command-line client (same package).
pub const CTR: &str = "/usr/bin/ctr";
/// Where containerd 1.6 keeps per-host state regardless of its config.
pub const RUN_CONTAINERD: &str = "/run/containerd";

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

static INSTANCES: AtomicU32 = AtomicU32::new(0);

/// True when containerd and ctr are installed; otherwise prints
/// `SKIP <test>: no /usr/bin/containerd` and returns false (a failure under
/// `CI`, which must run the test).
pub fn containerd_or_skip(test: &str) -> bool {
    if Path::new(CONTAINERD).exists() && Path::new(CTR).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs {CONTAINERD} (apt install containerd), and CI must run it"
    );
    eprintln!("SKIP {test}: no {CONTAINERD} (apt install containerd)");
    false
}

/// A running (or stopped) containerd of the test's own.
#[derive(Debug)]
pub struct Containerd {
    /// The temp dir holding everything (removed on drop).
    pub dir: PathBuf,
    /// The gRPC socket.
    pub socket: PathBuf,
    /// The namespace this fixture's objects live in.
    pub namespace: String,
    child: Option<Child>,
}

/// `test` reduced to what a containerd namespace accepts, at most 24 chars.
fn tag(test: &str) -> String {
    let t: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    let t = t.trim_matches('-');
    if t.is_empty() {
        "test".into()
    } else {
        t.into()
    }
}

impl Containerd {
    /// Starts containerd under a fresh temp dir and waits until it answers.
    pub fn start(test: &str) -> Result<Containerd> {
        if !Path::new(CONTAINERD).exists() {
            bail!("{CONTAINERD} missing (apt install containerd)");
        }
        let n = INSTANCES.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let namespace = format!("herd-{}-{pid}-{n}", tag(test));
        let dir = std::env::temp_dir().join(format!("herd-ctrd-{pid}-{n}"));
        if dir.exists() {
            // A leftover of an earlier process with the same pid.
            unmount_under(&dir);
            fs::remove_dir_all(&dir).with_context(|| format!("remove stale {}", dir.display()))?;
        }
        fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut c = Containerd {
            socket: dir.join("containerd.sock"),
            dir,
            namespace,
            child: None,
        };
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
            d = c.dir.display()
        );
        fs::write(c.config_path(), config).context("write containerd config")?;
        c.spawn()?;
        Ok(c)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// containerd's stdout and stderr (appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The last `max` bytes of the log, for failure messages.
    pub fn log_tail(&self, max: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        let start = s.len().saturating_sub(max);
        let start = (start..s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(s.len());
        s[start..].to_string()
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open containerd log")?;
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {CONTAINERD}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(st) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "containerd exited with {st} before it answered; log:\n{}",
                    self.log_tail(4000)
                );
            }
            if self.socket.exists()
                && let Ok(o) = self.ctr(&["version"])
                && o.status.success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!(
                    "containerd did not answer on {} within {READY_TIMEOUT:?}; log:\n{}",
                    self.socket.display(),
                    self.log_tail(4000)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (SIGKILL after 10 s). Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), Signal::TERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILLs containerd alone (its shims and tasks keep running).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts containerd again on the same dirs (stopping it first if it runs).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// `ctr -a <socket> -n <namespace> <args…>`.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        Command::new(CTR)
            .arg("-a")
            .arg(&self.socket)
            .arg("-n")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run ctr {args:?}"))
    }

    /// [`Containerd::ctr`] that must succeed; returns its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        let o = self.ctr(args)?;
        if !o.status.success() {
            bail!(
                "ctr {args:?}: {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `ctr <what> ls -q` (for `images`, `content`, `containers`, `tasks`,
    /// `leases`) or `ctr snapshots ls` without its header: the first column
    /// of each line.
    pub fn ls(&self, what: &str) -> Result<Vec<String>> {
        let (out, skip) = if what == "snapshots" {
            (self.ctr_ok(&[what, "ls"])?, 1)
        } else {
            (self.ctr_ok(&[what, "ls", "-q"])?, 0)
        };
        Ok(out
            .lines()
            .skip(skip)
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }

    /// Pids of the runc shims serving this namespace (found by command line).
    pub fn shims(&self) -> Vec<u32> {
        let mut pids = vec![];
        let Ok(rd) = fs::read_dir("/proc") else {
            return pids;
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            let is_ns = args
                .windows(2)
                .any(|w| w[0] == b"-namespace" && w[1] == self.namespace.as_bytes());
            if is_ns
                && args
                    .first()
                    .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Kills and deletes the namespace's tasks through containerd (when it
    /// runs), then SIGKILLs any shim left and its descendants.
    fn kill_tasks(&mut self) {
        // Where each shim serves (a shim killed below cannot remove its
        // socket file itself).
        let sockets: Vec<PathBuf> = self.shims().into_iter().filter_map(shim_socket).collect();
        if self.child.is_some()
            && let Ok(tasks) = self.ls("tasks")
        {
            for t in tasks {
                let _ = self.ctr(&["tasks", "delete", "--force", &t]);
            }
        }
        let shims = self.shims();
        let mut victims = vec![];
        for s in &shims {
            victims.extend(descendants(*s));
        }
        victims.extend(shims);
        for p in &victims {
            signal(*p, Signal::KILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while victims.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for s in sockets {
            let _ = fs::remove_file(s);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill_tasks();
        self.stop();
        unmount_under(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
        let run = Path::new(RUN_CONTAINERD);
        let _ = fs::remove_dir_all(run.join("runc").join(&self.namespace));
        remove_cgroups(&self.namespace);
        for sub in ["fifo", "s", "runc"] {
            let _ = fs::remove_dir(run.join(sub));
        }
        let _ = fs::remove_dir(run);
    }
}

/// The socket file of the shim `pid` (containerd 1.6:
/// `/run/containerd/s/<sha256 of "<address>/<namespace>/<id>">`, from the
/// shim's `-address`, `-namespace` and `-id` arguments).
fn shim_socket(pid: u32) -> Option<PathBuf> {
    use sha2::Digest as _;
    let cmd = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmd
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let arg = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let joined = Path::new(&arg("-address")?)
        .join(arg("-namespace")?)
        .join(arg("-id")?);
    let hash = sha2::Sha256::digest(joined.to_string_lossy().as_bytes());
    Some(Path::new(RUN_CONTAINERD).join("s").join(hex::encode(hash)))
}

fn signal(pid: u32, sig: Signal) {
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(p, sig);
    }
}

/// A live process (not a zombie).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Every process below `root` (by parent pid), deepest last.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = vec![];
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parent_of {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// Mount points at or below `dir`, from /proc/self/mountinfo (deepest first).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    v.dedup();
    v
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Removes the cgroup `/<name>` (and everything below it) under each cgroup
/// v1 controller, and under the v2 root.
fn remove_cgroups(name: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let mut candidates = vec![root.join(name)];
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            candidates.push(e.path().join(name));
        }
    }
    for c in candidates {
        if c.is_dir() {
            rmdir_tree(&c);
        }
    }
}

fn rmdir_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
