//! The API benchmark (root; `scripts/bench-api.sh`): herd against etcd,
//! side by side in the same run, with the same objects.
//!
//! - herd: the real `herd` binary as a 3-node Raft cluster in network
//!   namespaces ([`Cluster`]); the client talks to node 0's HTTPS API from
//!   inside node 0's netns with the client certificate of `herd kubeconfig`.
//! - etcd: Debian's `etcd` as a 3-member cluster on 127.0.0.1, through its
//!   v3 gRPC-gateway JSON API, filled with the exact pod JSON herd stored.
//!   The member the client talks to has the same role (leader or follower)
//!   as herd's node 0. Also `etcdctl` (one process per op) as a second,
//!   clearly labelled baseline.
//!
//! Both sides: one keep-alive HTTP/1.1 connection per client task;
//! creates/s with 1 writer (the first `--serial` objects) and `--writers`
//! concurrent writers (the rest), GET one (random), LIST all, LIST limit
//! 500 (first page), sequential updates, watch latency; RSS of node 0's
//! agent before and after the pods, and of the etcd members.
//!
//! Options: `--pods N` (10000), `--samples N` (GET and update samples,
//! 1000; the watch takes N/5, LIST N/50, at least 5), `--writers N` (16),
//! `--serial N` (1000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "api/client.rs"]
mod client;
#[path = "api/etcd.rs"]
mod etcd;
#[path = "api/etcdctl.rs"]
mod etcdctl;
#[path = "api/herd.rs"]
mod herd;
#[path = "api/measure.rs"]
mod measure;
#[path = "api/report.rs"]
mod report;

use std::sync::Arc;

use anyhow::{Context, Result};
use herd_integration::agent::cluster::{Cluster, ClusterOpts};

use crate::client::{Target, tls_from_kubeconfig};
use crate::measure::{Plan, Results};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no VmRSS for pid {pid}"))
}

fn main() -> Result<()> {
    if !herd_integration::root_or_skip("bench api", "netns, runc, cgroups") {
        return Ok(());
    }
    let samples = arg("--samples", 1000).max(5);
    let plan = Plan {
        objects: arg("--pods", 10_000).max(1),
        serial: arg("--serial", 1000),
        writers: arg("--writers", 16).max(1),
        get_samples: samples,
        update_samples: samples,
        watch_samples: (samples / 5).max(5),
        list_samples: (samples / 50).max(5),
    };
    let shown: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let command = format!("scripts/bench-api.sh {}", shown.join(" "));
    println!("{command}\n{plan:?}");

    let cluster = Cluster::start(
        env!("CARGO_BIN_EXE_herd"),
        "benchapi",
        3,
        ClusterOpts::default(),
    )?;
    let node0 = cluster.node(0);
    let herd_leads = cluster.leader()? == 0;
    let target = Target {
        addr: ([127, 0, 0, 1], 6443).into(),
        netns: Some(node0.netns().to_path_buf()),
        tls: Some(tls_from_kubeconfig(&node0.kubeconfig()?)?),
    };
    let herd_pid = node0.pid().context("node 0 not running")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let etcds = rt.block_on(etcd::EtcdCluster::start())?;
    let mut rep = report::Report {
        command,
        plan: Some(plan),
        herd_leads,
        herd_rss_before: rss_kib(herd_pid)?,
        ..Default::default()
    };

    // herd.
    let herd = Arc::new(herd::Herd::new(target, herd_pid, plan.objects));
    let mut hr = Results::default();
    rt.block_on(async {
        herd.create_namespace().await?;
        measure::fill(&herd, &plan, &mut hr).await?;
        rep.herd_rss_filled = rss_kib(herd_pid)?;
        measure::reads(&herd, &plan, &mut hr).await
    })?;
    rep.herd_rss_after = rss_kib(herd_pid)?;
    rep.herd_rss_nodes = (0..cluster.len())
        .filter_map(|i| rss_kib(cluster.node(i).pid()?).ok())
        .collect();
    rep.herd = hr;

    // etcd, with the values herd stored.
    let values = Arc::new(herd.stored.lock().unwrap().clone());
    let member = rt.block_on(async {
        let leader = etcds.leader().await?;
        anyhow::Ok(if herd_leads {
            leader
        } else {
            (leader + 1) % etcd::MEMBERS
        })
    })?;
    rep.etcd_member_leads = rt.block_on(etcds.leader())? == member;
    rep.etcd_rss_before = etcds
        .pids()
        .iter()
        .filter_map(|p| rss_kib(*p).ok())
        .collect();
    let side = Arc::new(etcd::Etcd {
        target: etcds.target(member),
        pid: etcds.pids()[member],
        values: values.clone(),
        serializable: false,
    });
    let mut er = Results::default();
    rt.block_on(async {
        measure::fill(&side, &plan, &mut er).await?;
        measure::reads(&side, &plan, &mut er).await
    })?;
    rep.etcd = er;
    let local = Arc::new(etcd::Etcd {
        target: etcds.target(member),
        pid: etcds.pids()[member],
        values: values.clone(),
        serializable: true,
    });
    rep.etcd_serializable_get = rt.block_on(async {
        let mut c = measure::Side::conn(local.as_ref()).await?;
        let mut lat = measure::Lat::default();
        let mut rng = measure::Rng::new(7);
        for _ in 0..plan.get_samples {
            let i = rng.below(plan.objects);
            let t0 = std::time::Instant::now();
            measure::Side::get(local.as_ref(), &mut c, i).await?;
            lat.0.push(t0.elapsed());
        }
        anyhow::Ok(lat)
    })?;
    rep.etcd_rss_after = etcds
        .pids()
        .iter()
        .filter_map(|p| rss_kib(*p).ok())
        .collect();
    rep.etcdctl = etcdctl::measure(
        etcds.clients[member],
        &values,
        plan.objects,
        (samples / 20).max(5),
    )?;
    rep.herd_rss_end = rss_kib(herd_pid)?;
    rep.load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    rep.print();
    drop(rt);
    drop(etcds);
    drop(cluster);
    Ok(())
}
