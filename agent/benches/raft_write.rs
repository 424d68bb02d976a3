//! Raft write latency and throughput on 3 in-process nodes (in-memory
//! transport, real redb files with fsync) next to `LocalStore`'s
//! single-node write, in the same run.
//!
//! `cargo bench -p herd-agent --bench raft_write -- [writes] [writers]`
//! (defaults: 400 sequential writes, 16 concurrent writers x 50 writes).
//! Files go to `$HERD_BENCH_DIR` or the system temp dir.
//!
//! To run it over the gRPC transport instead (when `cluster::rpc` offers a
//! `PeerTransport`), build the three `RaftStore`s with that transport and
//! serve each `RaftStore::handler()` on its address; nothing else changes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_agent::api::Resource;
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

    let router = MemRouter::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let nodes: Vec<Arc<RaftStore>> = (1..=3u64)
        .map(|id| {
            let addr = format!("n{id}");
            let cfg = RaftConfig::new(id, &addr, dir.path().join(&addr));
            let s = Arc::new(RaftStore::open(cfg, router.transport(&addr)).unwrap());
            router.register(&addr, s.handler());
            s
        })
        .collect();
    rt.block_on(async {
        nodes[0].initialize_single().await.unwrap();
        nodes[0].add_learner(2, "n2").await.unwrap();
        nodes[0].add_learner(3, "n3").await.unwrap();
        nodes[0]
            .change_voters([1, 2, 3].into_iter().collect())
            .await
            .unwrap();
    });
    let leader = nodes.iter().find(|n| n.is_leader()).unwrap().clone();
    let follower = nodes.iter().find(|n| !n.is_leader()).unwrap().clone();
    rows.push(sequential(
        "raft x3",
        "sequential, on leader",
        leader.as_ref(),
        "rseq",
        seq,
    ));
    rows.push(sequential(
        "raft x3",
        "sequential, via follower",
        follower.as_ref(),
        "rfwd",
        seq,
    ));
    rows.push(concurrent(
        "raft x3",
        ", on leader",
        leader.clone(),
        "rconc",
        writers,
        each,
    ));
    rows.push(concurrent(
        "raft x3",
        ", via follower",
        follower.clone(),
        "rfconc",
        writers,
        each,
    ));
    let m = leader.metrics();

    println!();
    println!("write latency and throughput (ConfigMap ~300 bytes, fsync on commit)");
    println!(
        "{:<8} {:<26} {:>7} {:>11} {:>11} {:>10}",
        "store", "mode", "writes", "median", "p99", "writes/s"
    );
    for r in &rows {
        println!(
            "{:<8} {:<26} {:>7} {:>9.2}ms {:>9.2}ms {:>10.0}",
            r.backend,
            r.mode,
            r.writes,
            r.median.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.per_sec
        );
    }
    println!(
        "raft leader {}: term {}, last log {:?}, snapshot {:?}, purged {:?}",
        m.id, m.term, m.last_log, m.snapshot, m.purged
    );
    drop((leader, follower));
    for n in nodes {
        router.unregister(n.addr());
        drop(n);
    }
}
