//! A cluster of real `herd agent`s on one machine, each in its own network
//! namespace, joined by a bridge in a namespace of the fixture's own.
//!
//! Topology (every name carries the pid and a per-process counter):
//! - `/run/netns/hc<pid>x<n>b`: the test's bridge namespace, bridge
//!   `hcbr` with 10.250.<k>.254/24 (the address forged packets come from);
//! - `/run/netns/hc<pid>x<n>n<i>`: node `i`, `eth0` (one end of a veth
//!   whose other end `hcv<i>` is a port of the bridge) with
//!   10.250.<k>.<i+1>/24, lo up, default route via .254.
//!
//! Nothing is added to the root network namespace: links, addresses and
//! routes live in these namespaces (set up with `ip -n`, as the net crate's
//! tests do), and the agents run inside them (setns before exec). Node 0
//! runs `--init`; the others `--join <node 0>:7443 --token <R/cluster/token>`.
//!
//! With [`ClusterOpts::etcd`], an etcd cluster ([`EtcdCluster`]) runs in
//! the bridge namespace on the bridge address before any node starts, and
//! every node gets `--datastore etcd://… --datastore-prefix
//! /herd-<pid>-<n>` (a prefix of its own per cluster).
//!
//! Guarantees: [`Drop`] stops every agent in parallel (each [`Agent`]'s Drop
//! removes its containers, monitors, mounts, cgroups and dirs), then the
//! etcd members (if any), then removes the node namespaces and the bridge
//! namespace by exact name (their links go with them), also when the test
//! panicked.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::host::{create_netns, remove_netns};
use super::{Agent, AgentOpts, CliOutput, tail};
use crate::etcd::{EtcdCluster, EtcdOpts};

mod pods;
#[cfg(test)]
mod tests;

pub use pods::{is_ready, is_running};

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// The peer (gRPC) port every node uses.
pub const PEER_PORT: u16 = 7443;
/// The gossip (UDP) port every node uses.
pub const GOSSIP_PORT: u16 = 7946;

/// Extra settings for every node.
#[derive(Clone, Debug, Default)]
pub struct ClusterOpts {
    /// Extra `herd agent` flags for every node.
    pub args: Vec<String>,
    /// Layout dirs imported (`herd image import`) on every node right after
    /// it is spawned, besides the test image.
    pub images: Vec<PathBuf>,
    /// How long [`Cluster::start`] waits for the whole cluster (default 90 s).
    pub ready_timeout: Option<Duration>,
    /// Run an etcd cluster in the bridge namespace and use it as every
    /// node's datastore (`ip` and `netns` are set by [`Cluster::start`]).
    pub etcd: Option<EtcdOpts>,
}

/// A network namespace file, unmounted and removed on drop.
#[derive(Debug)]
struct NsFile(PathBuf);

impl NsFile {
    fn create(path: PathBuf) -> Result<NsFile> {
        drop(create_netns(&path)?);
        Ok(NsFile(path))
    }
    fn name(&self) -> &str {
        self.0
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }
}

impl Drop for NsFile {
    fn drop(&mut self) {
        remove_netns(&self.0);
    }
}

/// The running cluster; node `i` is `nodes[i]`.
#[derive(Debug)]
pub struct Cluster {
    herd: PathBuf,
    test: String,
    opts: ClusterOpts,
    subnet: u8,
    nodes: Vec<Agent>,
    /// Node netns files, same order as `nodes` (dropped after them).
    node_ns: Vec<NsFile>,
    bridge_ns: NsFile,
    token: String,
    /// The etcd datastore (with [`ClusterOpts::etcd`]); stopped after the
    /// nodes, before the namespaces.
    etcd: Option<EtcdCluster>,
    /// `--datastore-prefix` of every node (with an etcd datastore).
    datastore_prefix: Option<String>,
}

/// Runs `ip -n <ns> ARGS…`; errors with its stderr.
fn ip(ns: &str, args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip -n {ns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Cluster {
    /// Builds the topology and starts `n` agents; returns once every node is
    /// Ready in `/api/v1/nodes` and every node's `/debug/cluster` shows `n`
    /// alive members and a leader.
    pub fn start(herd: impl AsRef<Path>, test: &str, n: usize, opts: ClusterOpts) -> Result<Self> {
        let mut cluster = Self::topology(herd.as_ref(), test, n, opts)?;
        cluster.start_etcd()?;
        cluster.start_nodes(n)?;
        Ok(cluster)
    }

    /// The namespaces, bridge and veths for `n` nodes; no agent yet.
    fn topology(herd: &Path, test: &str, n: usize, opts: ClusterOpts) -> Result<Self> {
        if n == 0 || n > 200 {
            bail!("cluster size {n} out of range");
        }
        let c = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let prefix = format!("hc{pid}x{c}");
        std::fs::create_dir_all("/run/netns").context("mkdir /run/netns")?;
        let bridge_ns = NsFile::create(PathBuf::from(format!("/run/netns/{prefix}b")))?;
        let datastore_prefix = opts.etcd.as_ref().map(|_| format!("/herd-{pid}-{c}"));
        let mut cluster = Cluster {
            herd: herd.to_path_buf(),
            test: test.to_string(),
            opts,
            subnet: (pid.wrapping_add(c) % 200) as u8 + 20,
            nodes: vec![],
            node_ns: vec![],
            bridge_ns,
            token: String::new(),
            etcd: None,
            datastore_prefix,
        };
        let br = cluster.bridge_ns.name().to_string();
        let gw = cluster.bridge_addr().to_string();
        ip(&br, &["link", "add", "hcbr", "type", "bridge"])?;
        ip(&br, &["addr", "add", &format!("{gw}/24"), "dev", "hcbr"])?;
        ip(&br, &["link", "set", "hcbr", "up"])?;
        for i in 0..n {
            let ns = NsFile::create(PathBuf::from(format!("/run/netns/{prefix}n{i}")))?;
            let name = ns.name().to_string();
            cluster.node_ns.push(ns);
            let port = format!("hcv{i}");
            let veth = ["link", "add", "eth0", "type", "veth", "peer", "name"];
            ip(
                &name,
                &[&veth[..], &[port.as_str(), "netns", br.as_str()]].concat(),
            )?;
            let addr = format!("{}/24", cluster.addr(i));
            ip(&name, &["addr", "add", &addr, "dev", "eth0"])?;
            ip(&name, &["link", "set", "eth0", "up"])?;
            ip(&name, &["route", "add", "default", "via", &gw])?;
            ip(&br, &["link", "set", &port, "master", "hcbr", "up"])?;
        }
        Ok(cluster)
    }

    /// With [`ClusterOpts::etcd`]: starts etcd in the bridge namespace on
    /// the bridge address.
    fn start_etcd(&mut self) -> Result<()> {
        let Some(opts) = self.opts.etcd.clone() else {
            return Ok(());
        };
        let etcd = EtcdCluster::start(EtcdOpts {
            ip: self.bridge_addr().into(),
            netns: Some(self.bridge_ns.0.clone()),
            ..opts
        })
        .context("start etcd in the bridge namespace")?;
        self.etcd = Some(etcd);
        Ok(())
    }

    /// `--datastore URL --datastore-prefix P` with an etcd datastore.
    fn datastore_args(&self) -> Vec<String> {
        match (&self.etcd, &self.datastore_prefix) {
            (Some(etcd), Some(prefix)) => vec![
                "--datastore".into(),
                etcd.url(),
                "--datastore-prefix".into(),
                prefix.clone(),
            ],
            _ => vec![],
        }
    }

    fn start_nodes(&mut self, n: usize) -> Result<()> {
        let timeout = self.opts.ready_timeout.unwrap_or(Duration::from_secs(90));
        let deadline = Instant::now() + timeout;
        let first = self.spawn_node(0, &["--init".to_string()])?;
        self.nodes.push(first);
        let token_file = self.nodes[0].root().join("cluster/token");
        loop {
            if let Ok(t) = std::fs::read_to_string(&token_file)
                && !t.trim().is_empty()
            {
                self.token = t.trim().to_string();
                break;
            }
            if let Some(code) = self.nodes[0].wait_exit(Duration::ZERO)? {
                bail!(
                    "node 0 exited ({code}) before writing {}:\n{}",
                    token_file.display(),
                    tail(&self.nodes[0].agent_log(), 60)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "no {} after {timeout:?}:\n{}",
                    token_file.display(),
                    tail(&self.nodes[0].agent_log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for i in 1..n {
            let join = self.join_args(&self.token);
            let agent = self.spawn_node(i, &join)?;
            self.nodes.push(agent);
        }
        for i in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            self.nodes[i]
                .wait_ready(left)
                .with_context(|| format!("node {i} not ready"))?;
        }
        self.wait_healthy(deadline.saturating_duration_since(Instant::now()))
    }

    /// `--join <node 0>:7443 --token T`.
    pub fn join_args(&self, token: &str) -> Vec<String> {
        vec![
            "--join".into(),
            format!("{}:{PEER_PORT}", self.addr(0)),
            "--token".into(),
            token.into(),
        ]
    }

    fn spawn_node(&self, i: usize, extra: &[String]) -> Result<Agent> {
        let mut args = vec!["--advertise-address".to_string(), self.addr(i).to_string()];
        args.extend(extra.iter().cloned());
        args.extend(self.datastore_args());
        args.extend(self.opts.args.iter().cloned());
        let agent = Agent::start(
            &self.herd,
            &format!("{}{i}", self.test),
            AgentOpts {
                args,
                netns: Some(self.node_ns[i].0.clone()),
                no_wait: true,
                ..Default::default()
            },
        )?;
        for layout in &self.opts.images {
            let out = agent.cli(&["image", "import", &layout.to_string_lossy()])?;
            if out.status != 0 {
                bail!(
                    "node {i}: image import {}: {}",
                    layout.display(),
                    out.stderr
                );
            }
        }
        Ok(agent)
    }

    /// Starts an agent in the bridge namespace (address .254) with `args`
    /// (e.g. [`Cluster::join_args`] with a wrong token); it is not a node of
    /// the cluster and is not waited for.
    pub fn start_outsider(&self, test: &str, args: &[String]) -> Result<Agent> {
        let mut all = vec![
            "--advertise-address".to_string(),
            self.bridge_addr().to_string(),
        ];
        all.extend(args.iter().cloned());
        Agent::start(
            &self.herd,
            test,
            AgentOpts {
                args: all,
                netns: Some(self.bridge_ns.0.clone()),
                no_wait: true,
                ..Default::default()
            },
        )
    }

    /// Waits until some node leads, every running node agrees on it and
    /// shows every running node alive, and every running node is Ready
    /// with a pod CIDR in `/api/v1/nodes`.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let why = match self.healthy() {
                Ok(()) => return Ok(()),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "cluster not healthy after {timeout:?}: {why}\n{}",
                    self.logs_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn healthy(&self) -> Result<()> {
        let up = self.running();
        let names: Vec<&str> = up
            .iter()
            .map(|&i| self.nodes[i].node_name.as_str())
            .collect();
        let mut leader = None;
        for &i in &up {
            let s = self.status(i)?;
            let l = s["leader"].as_str().map(str::to_string);
            if l.is_none() || (leader.is_some() && leader != l) {
                bail!("node {i} sees leader {l:?}, others {leader:?}");
            }
            leader = l;
            for name in &names {
                let alive = s["members"].as_array().is_some_and(|m| {
                    m.iter()
                        .any(|x| x["name"] == *name && x["state"] == "alive")
                });
                if !alive {
                    bail!("node {i} does not see {name} alive: {}", s["members"]);
                }
            }
        }
        let i = up.first().copied().context("no node running")?;
        let list = self.get(i, "/api/v1/nodes")?;
        for name in &names {
            let ready = list["items"].as_array().is_some_and(|items| {
                items.iter().any(|n| {
                    n["metadata"]["name"] == *name
                        && n["spec"]["podCIDR"].is_string()
                        && node_condition(n, "Ready") == Some("True")
                })
            });
            if !ready {
                bail!("node {name} not Ready with a podCIDR in /api/v1/nodes");
            }
        }
        Ok(())
    }

    /// Indexes of nodes whose agent process is running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].pid().is_some())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    pub fn node(&self, i: usize) -> &Agent {
        &self.nodes[i]
    }
    pub fn node_mut(&mut self, i: usize) -> &mut Agent {
        &mut self.nodes[i]
    }
    /// The etcd datastore, with [`ClusterOpts::etcd`].
    pub fn etcd(&self) -> Option<&EtcdCluster> {
        self.etcd.as_ref()
    }
    /// The etcd datastore, to kill and restart members.
    pub fn etcd_mut(&mut self) -> Option<&mut EtcdCluster> {
        self.etcd.as_mut()
    }
    /// Every node's `--datastore-prefix`, with [`ClusterOpts::etcd`].
    pub fn datastore_prefix(&self) -> Option<&str> {
        self.datastore_prefix.as_deref()
    }
    /// The join token node 0 wrote.
    pub fn token(&self) -> &str {
        &self.token
    }
    /// Node `i`'s address on the test bridge.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, i as u8 + 1)
    }
    /// The bridge namespace's own address.
    pub fn bridge_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, 254)
    }
    /// Index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|a| a.node_name == name)
    }

    /// `GET path` on node `i`, decoded (404 gives `Null`).
    pub fn get(&self, i: usize, path: &str) -> Result<Value> {
        let (status, body) = self.nodes[i].http("GET", path, None)?;
        match status {
            200 => Ok(serde_json::from_str(&body)?),
            404 => Ok(Value::Null),
            _ => bail!("node {i}: GET {path}: {status} {body}"),
        }
    }

    /// Node `i`'s `/debug/cluster`.
    pub fn status(&self, i: usize) -> Result<Value> {
        self.get(i, "/debug/cluster")
    }

    /// The leader as node `i` sees it (an index), if any.
    pub fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let s = self.status(i).ok()?;
        self.index_of(s["leader"].as_str()?)
    }

    /// The leader every running node agrees on (waits up to 10 s).
    pub fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen: Vec<Option<usize>> = self
                .running()
                .into_iter()
                .map(|i| self.leader_seen_by(i))
                .collect();
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|s| *s == Some(*l))
                && self.nodes[*l].pid().is_some()
            {
                return Ok(*l);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader: {seen:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `GET path` on node `i` (every 100 ms) until `pred` holds.
    pub fn wait_for(
        &self,
        i: usize,
        path: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.get(i, path) {
                Ok(v) if pred(&v) => return Ok(v),
                Ok(v) => v,
                Err(e) => Value::String(format!("{e:#}")),
            };
            if Instant::now() > deadline {
                bail!(
                    "node {i}: {path} not as expected after {timeout:?}; last: {last}\n{}",
                    self.logs_tail(25)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs node `i`'s agent (its pods keep running).
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        self.nodes[i].kill9()
    }

    /// SIGTERMs node `i`'s agent and waits (20 s) for it to exit.
    pub fn stop(&mut self, i: usize) -> Result<Option<i32>> {
        self.nodes[i].stop(Duration::from_secs(20))
    }

    /// Starts node `i` again with the same flags (its cluster state makes it
    /// rejoin), without waiting.
    pub fn respawn(&mut self, i: usize) -> Result<()> {
        self.nodes[i].respawn()
    }

    /// [`Cluster::respawn`], then waits (60 s) until it is ready.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.nodes[i].respawn()?;
        self.nodes[i].wait_ready(Duration::from_secs(60))
    }

    /// Cuts node `i` off: its bridge port goes down (inside the bridge netns).
    pub fn partition(&self, i: usize) -> Result<()> {
        ip(
            self.bridge_ns.name(),
            &["link", "set", &format!("hcv{i}"), "down"],
        )
    }

    /// Undoes [`Cluster::partition`].
    pub fn heal(&self, i: usize) -> Result<()> {
        ip(
            self.bridge_ns.name(),
            &["link", "set", &format!("hcv{i}"), "up"],
        )
    }

    /// Sends each datagram to `to` from a UDP socket inside the bridge
    /// netns; returns how many went out whole.
    pub fn send_udp_from_bridge(&self, to: SocketAddr, datagrams: &[Vec<u8>]) -> Result<usize> {
        let ns = std::fs::File::open(&self.bridge_ns.0)?;
        let from = self.bridge_addr();
        std::thread::scope(|s| {
            s.spawn(|| -> Result<usize> {
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                let sock = std::net::UdpSocket::bind((from, 0))?;
                let mut sent = 0;
                for d in datagrams {
                    sent += usize::from(sock.send_to(d, to)? == d.len());
                }
                Ok(sent)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
        })
    }

    /// The pod named `name` in `default`, read from node `from`.
    pub fn pod(&self, from: usize, name: &str) -> Result<Value> {
        let p = self.get(from, &format!("/api/v1/namespaces/default/pods/{name}"))?;
        if p.is_null() {
            bail!("pod {name} not found on node {from}'s replica");
        }
        Ok(p)
    }

    /// Index of the node that runs pod `name` (its `spec.nodeName`).
    pub fn node_of(&self, from: usize, name: &str) -> Result<usize> {
        let p = self.pod(from, name)?;
        let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
        self.index_of(node)
            .with_context(|| format!("pod {name} on unknown node {node:?}"))
    }

    /// `herd exec POD -- CMD…` on the node that runs the pod.
    pub fn exec(&self, from: usize, pod: &str, cmd: &[&str]) -> Result<CliOutput> {
        let i = self.node_of(from, pod)?;
        self.nodes[i].exec(pod, None, cmd)
    }

    /// The last `n` log lines of every node.
    pub fn logs_tail(&self, n: usize) -> String {
        let mut s = String::new();
        for (i, a) in self.nodes.iter().enumerate() {
            s.push_str(&format!("--- node {i} ({}) ---\n", a.node_name));
            s.push_str(&tail(&a.agent_log(), n));
            s.push('\n');
        }
        s
    }
}

/// The status of node condition `ty`, if present.
pub fn node_condition<'a>(node: &'a Value, ty: &str) -> Option<&'a str> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)?["status"]
        .as_str()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        std::thread::scope(|s| {
            for a in nodes {
                s.spawn(move || drop(a));
            }
        });
        drop(self.etcd.take());
        // The node namespaces, then the bridge namespace, drop next (fields).
    }
}
