//! A throwaway Debian `etcd` (3.4) cluster for tests: `members` processes
//! with their data dirs in one temp dir, on `127.0.0.1` (free ports, picked
//! by binding port 0) or on an address inside a network namespace file
//! (fixed ports 23790+i / 23800+i there; the processes enter the namespace
//! with setns before exec, so nothing listens in the caller's namespace).
//!
//! Tuned for tests: `--heartbeat-interval 50 --election-timeout 500` (a new
//! etcd leader within about a second of a kill; etcd's minimum lease TTL
//! becomes 1 s). fsync stays on, as in production.
//!
//! `etcdctl` (v3 API) drives the cluster: health, status (leader and
//! revision), compaction, and raw puts and gets for tests; it runs in the
//! same namespace as the members.
//!
//! Guarantees: [`EtcdCluster::start`] returns only once every member
//! answers `endpoint health`; [`Drop`] SIGKILLs and reaps every member by
//! its exact pid and removes the temp dir (data and logs), also when the
//! test panicked. Names (cluster token, temp dir) carry the pid and a
//! per-process counter.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The server binary (Debian `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";
/// The v3 client (Debian `etcd-client`).
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// True when the etcd binaries are installed; otherwise prints
/// `SKIP <test>: no /usr/bin/etcd` and returns false (a failure under `CI`,
/// which must run the test).
pub fn etcd_or_skip(test: &str) -> bool {
    if Path::new(ETCD).exists() && Path::new(ETCDCTL).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs {ETCD} and {ETCDCTL} (apt install etcd-server etcd-client), and CI must run it"
    );
    eprintln!("SKIP {test}: no {ETCD} or {ETCDCTL} (apt install etcd-server etcd-client)");
    false
}

/// How to start the cluster.
#[derive(Clone, Debug)]
pub struct EtcdOpts {
    /// Number of members (default 3).
    pub members: usize,
    /// The address every member listens on (default 127.0.0.1).
    pub ip: IpAddr,
    /// Run the members inside this network namespace file (the caller
    /// creates and removes it); ports are then fixed (23790+i, 23800+i).
    pub netns: Option<PathBuf>,
    /// How long [`EtcdCluster::start`] waits for health (default 30 s).
    pub ready_timeout: Duration,
}

impl Default for EtcdOpts {
    fn default() -> Self {
        EtcdOpts {
            members: 3,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            netns: None,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// First client port inside a namespace (member `i` gets `+i`).
pub const NETNS_CLIENT_PORT: u16 = 23790;
/// First peer port inside a namespace.
pub const NETNS_PEER_PORT: u16 = 23800;

/// The output of an `etcdctl` run.
#[derive(Clone, Debug)]
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The running members; member `i` is `e<i>`.
#[derive(Debug)]
pub struct EtcdCluster {
    opts: EtcdOpts,
    /// `None` while a member is killed.
    procs: Vec<Option<Child>>,
    /// (client, peer) port of each member.
    ports: Vec<(u16, u16)>,
    token: String,
    netns_fd: Option<OwnedFd>,
    dir: tempfile::TempDir,
}

/// `members` distinct (client, peer) pairs of ports free on `ip` right now:
/// every listener stays bound until all are picked, so none repeats.
fn free_ports(ip: IpAddr, members: usize) -> Result<Vec<(u16, u16)>> {
    let held: Vec<TcpListener> = (0..members * 2)
        .map(|_| TcpListener::bind((ip, 0)))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("bind {ip}:0"))?;
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    Ok(ports.chunks(2).map(|p| (p[0], p[1])).collect())
}

impl EtcdCluster {
    /// Starts the members and waits until each answers `endpoint health`.
    pub fn start(opts: EtcdOpts) -> Result<EtcdCluster> {
        if opts.members == 0 || opts.members > 9 {
            bail!("etcd cluster size {} out of range", opts.members);
        }
        if !Path::new(ETCD).exists() {
            bail!("{ETCD} missing (apt install etcd-server)");
        }
        let n = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix(&format!("herd-etcd-{pid}-{n}-"))
            .tempdir()
            .context("etcd temp dir")?;
        let ports = match &opts.netns {
            None => free_ports(opts.ip, opts.members)?,
            Some(_) => (0..opts.members as u16)
                .map(|i| (NETNS_CLIENT_PORT + i, NETNS_PEER_PORT + i))
                .collect(),
        };
        let netns_fd = match &opts.netns {
            None => None,
            Some(p) => Some(
                std::fs::File::open(p)
                    .with_context(|| format!("open netns {}", p.display()))?
                    .into(),
            ),
        };
        let mut c = EtcdCluster {
            procs: (0..opts.members).map(|_| None).collect(),
            ports,
            token: format!("herd-test-{pid}-{n}"),
            netns_fd,
            dir,
            opts,
        };
        for i in 0..c.opts.members {
            c.spawn(i, "new")?;
        }
        let deadline = Instant::now() + c.opts.ready_timeout;
        for i in 0..c.opts.members {
            c.wait_member_healthy(i, deadline)?;
        }
        Ok(c)
    }

    fn host(&self) -> String {
        match self.opts.ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }
    }

    fn peer_url(&self, i: usize) -> String {
        format!("http://{}:{}", self.host(), self.ports[i].1)
    }

    /// Member `i`'s client URL, `http://ip:port`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}:{}", self.host(), self.ports[i].0)
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    /// `etcd://ip:p1,ip:p2,…` (herd's `--datastore` form).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = (0..self.len())
            .map(|i| format!("{}:{}", self.host(), self.ports[i].0))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// Number of members (running or not).
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Member `i`'s pid, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(Child::id)
    }

    /// Indexes of members whose process runs.
    pub fn running(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.pid(i).is_some()).collect()
    }

    /// The network namespace file the members run in, if any.
    pub fn netns(&self) -> Option<&Path> {
        self.opts.netns.as_deref()
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("e{i}.log"))
    }

    /// Member `i`'s data dir.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("e{i}"))
    }

    /// A command that runs in the members' namespace.
    fn command(&self, program: &str) -> Result<Command> {
        let mut cmd = Command::new(program);
        if let Some(fd) = &self.netns_fd {
            let fd = fd.try_clone()?;
            // SAFETY: the closure only calls setns(2), which is
            // async-signal-safe, on an fd the closure owns; it allocates
            // nothing.
            unsafe {
                cmd.pre_exec(move || {
                    rustix::thread::move_into_link_name_space(
                        fd.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(std::io::Error::from)
                });
            }
        }
        Ok(cmd)
    }

    /// Starts member `i` (`state`: `new` or `existing`), log appended.
    fn spawn(&mut self, i: usize, state: &str) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let initial: Vec<String> = (0..self.len())
            .map(|j| format!("e{j}={}", self.peer_url(j)))
            .collect();
        let curl = self.endpoint(i);
        let purl = self.peer_url(i);
        let child = self
            .command(ETCD)?
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &curl])
            .args(["--advertise-client-urls", &curl])
            .args(["--listen-peer-urls", &purl])
            .args(["--initial-advertise-peer-urls", &purl])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {ETCD} member e{i}"))?;
        self.procs[i] = Some(child);
        Ok(())
    }

    /// Polls member `i`'s `endpoint health` until it is healthy.
    fn wait_member_healthy(&mut self, i: usize, deadline: Instant) -> Result<()> {
        let ep = self.endpoint(i);
        loop {
            if let Some(child) = self.procs[i].as_mut()
                && let Some(st) = child.try_wait()?
            {
                self.procs[i] = None;
                bail!("etcd member e{i} exited ({st}):\n{}", self.log_tail(i));
            }
            let out = self.ctl_at(std::slice::from_ref(&ep), &["endpoint", "health"])?;
            if out.success {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd member e{i} not healthy: {}\n{}",
                    out.stderr.trim(),
                    self.log_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `etcdctl --endpoints E ARGS…` in the members' namespace, with
    /// short dial and command timeouts (1 s, 5 s).
    pub fn ctl_at(&self, endpoints: &[String], args: &[&str]) -> Result<CtlOutput> {
        let out = self
            .command(ETCDCTL)?
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["--dial-timeout=1s", "--command-timeout=5s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {ETCDCTL}"))?;
        Ok(CtlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `etcdctl ARGS…` against every running member; its stdout, or
    /// an error with its stderr.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        let eps: Vec<String> = self.running().iter().map(|&i| self.endpoint(i)).collect();
        if eps.is_empty() {
            bail!("no etcd member running");
        }
        let out = self.ctl_at(&eps, args)?;
        if !out.success {
            bail!("etcdctl {}: {}", args.join(" "), out.stderr.trim());
        }
        Ok(out.stdout)
    }

    /// Member `i`'s `endpoint status` (`header`, `leader`, …) as JSON.
    pub fn status(&self, i: usize) -> Result<Value> {
        let out = self.ctl_at(&[self.endpoint(i)], &["endpoint", "status", "-w", "json"])?;
        if !out.success {
            bail!("etcd member e{i} status: {}", out.stderr.trim());
        }
        let v: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("etcd member e{i} status: {}", out.stdout))?;
        Ok(v[0]["Status"].clone())
    }

    /// The index of the member that leads, as the running members agree;
    /// polls (10 s) through elections.
    pub fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let why = match self.leader_once() {
                Ok(i) => return Ok(i),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("no agreed etcd leader: {why}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn leader_once(&self) -> Result<usize> {
        let mut ids = vec![None; self.len()];
        let mut leader = None;
        for i in self.running() {
            let s = self.status(i)?;
            ids[i] = s["header"]["member_id"].as_u64();
            let l = s["leader"].as_u64().filter(|l| *l != 0);
            if l.is_none() || (leader.is_some() && leader != l) {
                bail!("member e{i} sees leader {l:?}, others {leader:?}");
            }
            leader = l;
        }
        let leader = leader.context("no member running")?;
        ids.iter()
            .position(|id| *id == Some(leader))
            .with_context(|| format!("leader {leader:x} is no running member"))
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> Result<u64> {
        for i in self.running() {
            if let Ok(s) = self.status(i)
                && let Some(r) = s["header"]["revision"].as_u64()
            {
                return Ok(r);
            }
        }
        bail!("no etcd member answers status")
    }

    /// Compacts the key-value history up to `revision` (physically, so a
    /// watch from before it fails at once).
    pub fn compact(&self, revision: u64) -> Result<()> {
        self.etcdctl(&["compact", &revision.to_string(), "--physical"])?;
        Ok(())
    }

    /// SIGKILLs member `i` and reaps it (no-op when not running).
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.procs[i].take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts member `i` again on the same data dir and flags
    /// (`--initial-cluster-state existing`) and waits (30 s) until it is
    /// healthy.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill9(i)?;
        self.spawn(i, "existing")?;
        self.wait_member_healthy(i, Instant::now() + Duration::from_secs(30))
    }

    /// The last 20 lines of member `i`'s log (all its runs).
    pub fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            let _ = p.kill();
            let _ = p.wait();
        }
        // The temp dir (data, logs) goes next (field drop).
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn three_members_leader_kill_restart_compact() {
        if !etcd_or_skip("three_members_leader_kill_restart_compact") {
            return;
        }
        let t = Instant::now();
        let mut c = EtcdCluster::start(EtcdOpts::default()).unwrap();
        eprintln!("etcd up in {:?}: {}", t.elapsed(), c.url());
        assert_eq!(c.endpoints().len(), 3);
        assert!(c.url().starts_with("etcd://127.0.0.1:"));
        let key = format!("/fixture-{}/k", std::process::id());
        c.etcdctl(&["put", &key, "v1"]).unwrap();
        let r1 = c.revision().unwrap();
        c.etcdctl(&["put", &key, "v2"]).unwrap();
        assert_eq!(c.revision().unwrap(), r1 + 1);
        let leader = c.leader().unwrap();
        let pid = c.pid(leader).unwrap();
        c.kill9(leader).unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        let t = Instant::now();
        let new = c.leader().unwrap();
        eprintln!(
            "etcd leader e{leader} killed; e{new} leads after {:?}",
            t.elapsed()
        );
        assert_ne!(new, leader);
        c.etcdctl(&["put", &key, "v3"]).unwrap();
        c.restart(leader).unwrap();
        assert_eq!(c.running().len(), 3);
        // The restarted member caught up (a serializable read is local).
        let got = c
            .ctl_at(
                &[c.endpoint(leader)],
                &["get", &key, "--print-value-only", "--consistency=s"],
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = got.stdout;
        while got.trim() != "v3" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            got = c
                .ctl_at(
                    &[c.endpoint(leader)],
                    &["get", &key, "--print-value-only", "--consistency=s"],
                )
                .unwrap()
                .stdout;
        }
        assert_eq!(got.trim(), "v3");
        let rev = c.revision().unwrap();
        c.compact(rev).unwrap();
        let old = c.etcdctl(&["get", &key, &format!("--rev={r1}")]);
        assert!(
            old.as_ref()
                .is_err_and(|e| e.to_string().contains("compacted")),
            "{old:?}"
        );
        let pids: Vec<u32> = (0..3).filter_map(|i| c.pid(i)).collect();
        let dir = c.dir.path().to_path_buf();
        drop(c);
        for pid in pids {
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{pid}");
        }
        assert!(!dir.exists());
    }
}
