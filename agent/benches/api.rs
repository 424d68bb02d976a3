//! The API benchmark (root; `scripts/bench-api.sh`): herd on its embedded
//! store, herd on etcd, and etcd alone, in the same run, with the same
//! objects and the same measure code ([`measure::Side`]).
//!
//! - embedded: the real `herd` binary as a 3-node Raft cluster in network
//!   namespaces ([`Cluster`]); the client talks to node 0's HTTPS API from
//!   inside node 0's netns with the client certificate of `herd kubeconfig`.
//! - etcd: the same 3-node cluster with every node on `--datastore
//!   etcd://…` (a 3-member etcd in the cluster's bridge netns, started by
//!   the fixture's `ClusterOpts::etcd`); the same client.
//! - raw: Debian's `etcd` alone as a 3-member cluster on 127.0.0.1, through
//!   its v3 gRPC-gateway JSON API, filled with the exact pod JSON herd
//!   stored (the floor). The member the client talks to has the same role
//!   (leader or follower) as herd's node 0 on the embedded store. Also
//!   `etcdctl` (one process per op) as a second, clearly labelled baseline.
//!
//! The sides run one after another (embedded, etcd, raw), each torn down
//! before the next starts, so they never compete for the CPUs.
//!
//! Every side: one keep-alive HTTP/1.1 connection per client task;
//! creates/s with 1 writer (the first `--serial` objects) and `--writers`
//! concurrent writers (the rest), GET one (random), LIST all, LIST limit
//! 500 (first page), sequential updates, watch latency; RSS of node 0's
//! agent before and after the pods, and of the etcd members.
//!
//! Options: `--pods N` (10000), `--samples N` (GET and update samples,
//! 1000; the watch takes N/5, LIST N/50, at least 5), `--writers N` (16),
//! `--serial N` (1000), `--sides embedded,etcd,raw` (all three).

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
#[path = "api/run.rs"]
mod run;

use anyhow::Result;

use crate::measure::Plan;
use crate::run::Kind;

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: usize) -> usize {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    if !herd_integration::root_or_skip("bench api", "netns, runc, cgroups") {
        return Ok(());
    }
    let sides = Kind::parse_list(&arg_str("--sides").unwrap_or("embedded,etcd,raw".into()))?;
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
    println!("{command}\n{plan:?}\nsides: {sides:?}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rep = report::Report {
        command,
        plan: Some(plan),
        ..Default::default()
    };
    let herd_bin = env!("CARGO_BIN_EXE_herd");
    for kind in sides {
        let t0 = std::time::Instant::now();
        match kind {
            Kind::Embedded => rep.embedded = Some(run::herd(herd_bin, &rt, &plan, false)?),
            Kind::Etcd => rep.on_etcd = Some(run::herd(herd_bin, &rt, &plan, true)?),
            Kind::Raw => {
                // The values and the member's role follow herd's sides.
                let last = rep.on_etcd.as_ref().or(rep.embedded.as_ref());
                let values = last.map(|h| h.stored.clone());
                let leader = rep
                    .embedded
                    .as_ref()
                    .or(rep.on_etcd.as_ref())
                    .is_none_or(|h| h.node0_leads);
                let ctl = (samples / 20).max(5);
                rep.raw = Some(run::raw(&rt, &plan, values, leader, ctl)?);
            }
        }
        println!("side {kind:?} done in {:.1} s", t0.elapsed().as_secs_f64());
    }
    rep.load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    rep.print();
    drop(rt);
    Ok(())
}
