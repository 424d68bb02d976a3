//! Raft write latency and throughput on 3 in-process nodes, over the real
//! gRPC transport (mutual TLS on 127.0.0.x, certificates from a cluster CA
//! made here) and over the in-memory transport, next to `LocalStore`'s
//! single-node write (the baseline), all in the same run. Every store
//! writes real redb files with fsync.
//!
//! `cargo bench -p herd-agent --bench raft_write -- [writes] [writers]`
//! (defaults: 400 sequential writes, 16 concurrent writers x 50 writes).
//! Files go to `$HERD_BENCH_DIR` or the system temp dir.
//!
//! Each Raft cluster is written to on the leader and through a follower
//! (which forwards to the leader with `RpcKind::ClientWrite`): sequential
//! latency median/p99, then concurrent writers' throughput.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::cluster::pki::ClusterCa;
use herd_agent::cluster::rpc::{GrpcTransport, PeerService, RpcServer, TransportOptions};
use herd_agent::cluster::transport::{BoxFuture, PeerHandler, PeerTransport, RpcKind};
use herd_agent::store::local::LocalStore;
use herd_agent::store::raft::{MemRouter, RaftConfig, RaftStore};
use herd_agent::store::{Datastore, Key};
use serde_json::json;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .filter(|a| !a.starts_with('-'))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn obj(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "bench"},
           "data": {"payload": "x".repeat(200)}})
}

struct Row {
    backend: &'static str,
    mode: String,
    writes: usize,
    median: Duration,
    p99: Duration,
    per_sec: f64,
}

fn sequential(backend: &'static str, mode: &str, s: &dyn Datastore, prefix: &str, n: usize) -> Row {
    let mut lat = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let k = Key::namespaced(Resource::ConfigMaps, "bench", &name);
        let w = Instant::now();
        s.create(&k, obj(&name)).unwrap();
        lat.push(w.elapsed());
    }
    row(backend, mode.to_string(), lat, t.elapsed())
}

fn concurrent(
    backend: &'static str,
    via: &str,
    s: Arc<dyn Datastore>,
    prefix: &str,
    writers: usize,
    each: usize,
) -> Row {
    let t = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let s = s.clone();
            let prefix = format!("{prefix}-{w}");
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(each);
                for i in 0..each {
                    let name = format!("{prefix}-{i}");
                    let k = Key::namespaced(Resource::ConfigMaps, "bench", &name);
                    let st = Instant::now();
                    s.create(&k, obj(&name)).unwrap();
                    lat.push(st.elapsed());
                }
                lat
            })
        })
        .collect();
    let lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    row(backend, format!("{writers} writers{via}"), lat, t.elapsed())
}

fn row(backend: &'static str, mode: String, mut lat: Vec<Duration>, total: Duration) -> Row {
    lat.sort();
    let n = lat.len();
    Row {
        backend,
        mode,
        writes: n,
        median: lat[n / 2],
        p99: lat[(n * 99 / 100).min(n - 1)],
        per_sec: n as f64 / total.as_secs_f64(),
    }
}

/// A peer handler whose target is set once the store behind it exists
/// (the server must listen before the store knows its address).
#[derive(Default)]
struct Deferred(OnceLock<Arc<dyn PeerHandler>>);

impl PeerHandler for Deferred {
    fn handle(
        &self,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        match self.0.get() {
            Some(h) => h.handle(kind, payload),
            None => Box::pin(async { Err("node not started yet".to_owned()) }),
        }
    }
}

/// Three nodes over gRPC with mutual TLS: node i listens on 127.0.0.(i+1)
/// with a certificate for that address from one cluster CA.
struct GrpcCluster {
    nodes: Vec<Arc<RaftStore>>,
    servers: Vec<RpcServer>,
    rt: tokio::runtime::Runtime,
}

fn grpc_cluster(dir: &Path) -> GrpcCluster {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-rpc")
        .enable_all()
        .build()
        .unwrap();
    let ca = ClusterCa::create("bench").unwrap();
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    for id in 1..=3u64 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(id).unwrap() + 1));
        let cert = ca.issue_node_cert(&format!("n{id}"), &[ip], &[]).unwrap();
        let deferred = Arc::new(Deferred::default());
        let server = rt
            .block_on(RpcServer::start(
                SocketAddr::new(ip, 0),
                ca.cert_pem(),
                &cert,
                PeerService::new(deferred.clone()),
                None,
            ))
            .unwrap();
        let addr = server.local_addr().to_string();
        let transport: Arc<dyn PeerTransport> = Arc::new(
            GrpcTransport::new(ca.cert_pem(), &cert, TransportOptions::default()).unwrap(),
        );
        let cfg = RaftConfig::new(id, &addr, dir.join(format!("n{id}")));
        let store = Arc::new(RaftStore::open(cfg, transport).unwrap());
        assert!(deferred.0.set(store.handler()).is_ok());
        nodes.push(store);
        servers.push(server);
    }
    form(&rt, &nodes);
    GrpcCluster { nodes, servers, rt }
}

/// Makes node 1 leader of a one-voter cluster, then adds 2 and 3 as voters.
fn form(rt: &tokio::runtime::Runtime, nodes: &[Arc<RaftStore>]) {
    rt.block_on(async {
        nodes[0].initialize_single().await.unwrap();
        for n in &nodes[1..] {
            nodes[0].add_learner(n.id(), n.addr()).await.unwrap();
        }
        nodes[0]
            .change_voters(nodes.iter().map(|n| n.id()).collect())
            .await
            .unwrap();
    });
}

/// The four Raft rows (sequential and concurrent, leader and follower).
fn raft_rows(
    backend: &'static str,
    nodes: &[Arc<RaftStore>],
    seq: usize,
    writers: usize,
    each: usize,
    rows: &mut Vec<Row>,
) {
    let leader = nodes.iter().find(|n| n.is_leader()).unwrap().clone();
    let follower = nodes.iter().find(|n| !n.is_leader()).unwrap().clone();
    rows.push(sequential(
        backend,
        "sequential, on leader",
        leader.as_ref(),
        &format!("{backend}-seq"),
        seq,
    ));
    rows.push(sequential(
        backend,
        "sequential, via follower",
        follower.as_ref(),
        &format!("{backend}-fwd"),
        seq,
    ));
    rows.push(concurrent(
        backend,
        ", on leader",
        leader.clone(),
        &format!("{backend}-conc"),
        writers,
        each,
    ));
    rows.push(concurrent(
        backend,
        ", via follower",
        follower,
        &format!("{backend}-fconc"),
        writers,
        each,
    ));
    let m = leader.metrics();
    println!(
        "{backend}: leader {}, term {}, last log {:?}, snapshot {:?}, purged {:?}",
        m.id, m.term, m.last_log, m.snapshot, m.purged
    );
}

fn main() {
    let seq = arg(1, 400);
    let writers = arg(2, 16);
    let each = 50;
    let base = std::env::var_os("HERD_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut rows = Vec::new();

    let local: Arc<dyn Datastore> = Arc::new(
        LocalStore::open(
            &dir.path().join("local/store.redb"),
            &dir.path().join("local/s.redb"),
        )
        .unwrap(),
    );
    rows.push(sequential(
        "local",
        "sequential",
        local.as_ref(),
        "seq",
        seq,
    ));
    rows.push(concurrent(
        "local",
        "",
        local.clone(),
        "conc",
        writers,
        each,
    ));
    drop(local);

    // In-memory transport.
    let router = MemRouter::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let nodes: Vec<Arc<RaftStore>> = (1..=3u64)
        .map(|id| {
            let addr = format!("n{id}");
            let cfg = RaftConfig::new(id, &addr, dir.path().join("mem").join(&addr));
            let s = Arc::new(RaftStore::open(cfg, router.transport(&addr)).unwrap());
            router.register(&addr, s.handler());
            s
        })
        .collect();
    form(&rt, &nodes);
    raft_rows("raft-mem", &nodes, seq, writers, each, &mut rows);
    for n in nodes {
        n.shutdown();
        router.unregister(n.addr());
    }

    // gRPC transport, mutual TLS on loopback.
    let grpc = grpc_cluster(&dir.path().join("grpc"));
    raft_rows("raft-grpc", &grpc.nodes, seq, writers, each, &mut rows);
    for n in &grpc.nodes {
        n.shutdown();
    }
    for s in grpc.servers {
        grpc.rt.block_on(s.shutdown()).unwrap();
    }

    println!();
    println!(
        "write latency and throughput (ConfigMap ~300 bytes, fsync on commit; 3 Raft voters in one process)"
    );
    println!(
        "{:<10} {:<26} {:>7} {:>11} {:>11} {:>10}",
        "store", "mode", "writes", "median", "p99", "writes/s"
    );
    for r in &rows {
        println!(
            "{:<10} {:<26} {:>7} {:>9.2}ms {:>9.2}ms {:>10.0}",
            r.backend,
            r.mode,
            r.writes,
            r.median.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.per_sec
        );
    }
    println!(
        "(local = LocalStore, single node, the baseline; raft-mem = in-memory transport; raft-grpc = GrpcTransport, mTLS over 127.0.0.2-4)"
    );
}
