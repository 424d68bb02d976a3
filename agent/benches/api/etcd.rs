//! The etcd side: a 3-member Debian `etcd` cluster on 127.0.0.1 (distinct
//! client and peer ports, data dirs in one temp dir on the same filesystem
//! as herd's, fsync on as in production), driven through its v3
//! gRPC-gateway JSON API (`POST /v3/kv/range|put`, `/v3/watch`) with the
//! same values herd stored, under `/registry/pods/bench/pod-NNNNN` as
//! Kubernetes lays them out.
//!
//! Guarantees: [`Drop`] SIGKILLs each member by its exact pid, reaps it,
//! and removes the temp dir, also when the benchmark panicked.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::client::{Conn, Target};
use crate::herd::{NAMESPACE, pod_name};
use crate::measure::Side;

pub const MEMBERS: usize = 3;

/// The running members.
pub struct EtcdCluster {
    procs: Vec<Child>,
    pub clients: Vec<SocketAddr>,
    dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdCluster {
    /// Starts the members and waits (60 s) until each answers `/health`.
    pub async fn start() -> Result<EtcdCluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("herd-bench-etcd-{}-", std::process::id()))
            .tempdir_in(std::env::temp_dir())?;
        let mut ports = vec![];
        for _ in 0..MEMBERS {
            ports.push((free_port()?, free_port()?));
        }
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut c = EtcdCluster {
            procs: vec![],
            clients: ports
                .iter()
                .map(|(c, _)| SocketAddr::from(([127, 0, 0, 1], *c)))
                .collect(),
            dir,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(c.dir.path().join(format!("e{i}.log")))?;
            let curl = format!("http://127.0.0.1:{client}");
            let purl = format!("http://127.0.0.1:{peer}");
            let child = Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(c.dir.path().join(format!("e{i}")))
                .args(["--listen-client-urls", &curl])
                .args(["--advertise-client-urls", &curl])
                .args(["--listen-peer-urls", &purl])
                .args(["--initial-advertise-peer-urls", &purl])
                .args(["--initial-cluster", &initial.join(",")])
                .args([
                    "--initial-cluster-token",
                    &format!("bench-{}", std::process::id()),
                ])
                .args(["--initial-cluster-state", "new"])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawn etcd (apt install etcd-server)")?;
            c.procs.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..MEMBERS {
            loop {
                let ok = async {
                    let mut conn = Conn::open(&c.target(i)).await?;
                    let b = conn.call("GET", "/health", None).await?;
                    let v: Value = serde_json::from_slice(&b)?;
                    anyhow::Ok(v["health"] == "true")
                }
                .await;
                if matches!(ok, Ok(true)) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("etcd member {i} not healthy: {ok:?}\n{}", c.log_tail(i));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(c)
    }

    pub fn target(&self, i: usize) -> Target {
        Target {
            addr: self.clients[i],
            netns: None,
            tls: None,
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join(format!("e{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Index of the member that leads (every member agrees after start).
    pub async fn leader(&self) -> Result<usize> {
        let mut conn = Conn::open(&self.target(0)).await?;
        let b = conn
            .call("POST", "/v3/maintenance/status", Some("{}".into()))
            .await?;
        let v: Value = serde_json::from_slice(&b)?;
        let leader = v["leader"].as_str().context("no leader")?.to_string();
        for i in 0..MEMBERS {
            let mut conn = Conn::open(&self.target(i)).await?;
            let b = conn
                .call("POST", "/v3/maintenance/status", Some("{}".into()))
                .await?;
            let v: Value = serde_json::from_slice(&b)?;
            if v["header"]["member_id"].as_str() == Some(leader.as_str()) {
                return Ok(i);
            }
        }
        bail!("leader {leader} is no member")
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Child::id).collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

pub fn key(i: usize) -> String {
    format!("/registry/pods/{NAMESPACE}/{}", pod_name(i))
}

const PREFIX: &str = "/registry/pods/bench/";
/// The end of the prefix range: its last byte plus one.
const PREFIX_END: &str = "/registry/pods/bench0";

/// One etcd member's gateway, with herd's stored values.
pub struct Etcd {
    pub target: Target,
    pub pid: u32,
    pub values: Arc<Vec<Bytes>>,
    /// Range reads with `serializable` (local, no ReadIndex round).
    pub serializable: bool,
}

impl Etcd {
    async fn put(&self, c: &mut Conn, i: usize) -> Result<()> {
        let value = self.values.get(i).context("no value")?;
        let body = json!({"key": B64.encode(key(i)), "value": B64.encode(value)});
        c.call("POST", "/v3/kv/put", Some(body.to_string().into()))
            .await?;
        Ok(())
    }
}

impl Side for Etcd {
    async fn conn(&self) -> Result<Conn> {
        Conn::open(&self.target).await
    }

    async fn create(&self, c: &mut Conn, i: usize) -> Result<()> {
        self.put(c, i).await
    }

    async fn get(&self, c: &mut Conn, i: usize) -> Result<Bytes> {
        let body = json!({"key": B64.encode(key(i)), "serializable": self.serializable});
        c.call("POST", "/v3/kv/range", Some(body.to_string().into()))
            .await
    }

    async fn list(&self, c: &mut Conn, limit: Option<usize>) -> Result<Bytes> {
        let mut body = json!({"key": B64.encode(PREFIX), "range_end": B64.encode(PREFIX_END),
            "serializable": self.serializable});
        if let Some(l) = limit {
            body["limit"] = json!(l);
        }
        c.call("POST", "/v3/kv/range", Some(body.to_string().into()))
            .await
    }

    fn count(&self, body: &[u8]) -> Result<usize> {
        let v: Value = serde_json::from_slice(body)?;
        Ok(v["kvs"].as_array().map(Vec::len).unwrap_or(0))
    }

    async fn update(&self, c: &mut Conn, i: usize, _seq: usize) -> Result<()> {
        self.put(c, i).await
    }

    async fn watch(&self) -> Result<mpsc::UnboundedReceiver<(Instant, Value)>> {
        let c = self.conn().await?;
        let body = json!({"create_request": {"key": B64.encode(PREFIX),
            "range_end": B64.encode(PREFIX_END)}});
        let mut rx = c
            .stream("POST", "/v3/watch", Some(body.to_string().into()))
            .await?;
        // The first message confirms the watch; events follow.
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await?;
        match first {
            Some((_, v)) if v["result"]["created"] == true => Ok(rx),
            other => bail!("watch not created: {other:?}"),
        }
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn is_event(&self, v: &Value, i: usize, _seq: usize) -> bool {
        let want = B64.encode(key(i));
        v["result"]["events"]
            .as_array()
            .is_some_and(|evs| evs.iter().any(|e| e["kv"]["key"] == want.as_str()))
    }
}
