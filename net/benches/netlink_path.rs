//! The in-agent netlink path (root): median/p99 over 100 `add_pod` +
//! `del_pod` cycles in a node netns. DEL is the fast path: `del_pod(None)`
//! then delete the pod netns, letting the kernel reap the veth.
//!
//! Two phases: "churn" runs cycles back to back (the kernel is still
//! reaping the previous pod's netns, under the RTNL lock, when the next ADD
//! starts); "settled" waits until the previous host veth is gone before
//! the next ADD and splits ADD into IPAM and netlink.
//!
//! Run: `cargo bench -p herd-net --bench netlink_path` (as root);
//! `HERD_NET_BENCH_STATE=/run` puts the IPAM state on tmpfs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use herd_net::{BridgeConfig, NetNs, NodeNetwork};

const CYCLES: usize = 100;
const NETNS_DIR: &str = "/run/netns";

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = NetNs::delete(Path::new(NETNS_DIR), &self.0);
    }
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "| {name:<38} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} |",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        v[0].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    );
}

async fn link_exists(h: &rtnetlink::Handle, name: &str) -> bool {
    h.link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .is_ok_and(|m| m.is_some())
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "netlink_path needs root");
        eprintln!("SKIP netlink_path: needs root");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pid = std::process::id();
    let node_name = format!("hbn-{pid}");
    let node = NetNs::create(Path::new(NETNS_DIR), &node_name).unwrap();
    let _node_guard = Ns(node_name.clone());
    // State dir file system matters (IPAM fsyncs): HERD_NET_BENCH_STATE
    // picks the parent dir (default: the system temp dir).
    let parent = std::env::var_os("HERD_NET_BENCH_STATE")
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let state = tempfile::tempdir_in(&parent).unwrap();
    println!("state dir: {}", state.path().display());
    let cfg = BridgeConfig {
        subnet: "10.250.0.0/24".parse().unwrap(),
        ..BridgeConfig::default()
    };
    let net = rt
        .block_on(NodeNetwork::new(Some(node), cfg.clone(), state.path()))
        .unwrap();
    let ns_dir = Path::new(NETNS_DIR);

    // Phase 1: churn.
    let (mut mk, mut add, mut del, mut total, mut bridge) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..CYCLES {
        let name = format!("hbp-{pid}-{i}");
        let id = format!("churn-{i}");
        let t0 = Instant::now();
        let pod = NetNs::create(ns_dir, &name).unwrap();
        let guard = Ns(name.clone());
        let t1 = Instant::now();
        rt.block_on(net.add_pod(&id, &pod, "eth0")).unwrap();
        let t2 = Instant::now();
        drop(pod);
        rt.block_on(net.del_pod(&id, "eth0", None)).unwrap();
        drop(guard); // NetNs::delete by exact name
        let t3 = Instant::now();
        rt.block_on(herd_net::ensure_bridge(net.handle(), net.host(), &cfg))
            .unwrap();
        bridge.push(t3.elapsed());
        mk.push(t1 - t0);
        add.push(t2 - t1);
        del.push(t3 - t2);
        total.push(t3 - t0);
    }

    // Phase 2: settled.
    let (mut s_add, mut alloc, mut attach, mut s_del, mut reap) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..CYCLES {
        let name = format!("hbq-{pid}-{i}");
        let id = format!("settled-{i}");
        let pod = NetNs::create(ns_dir, &name).unwrap();
        let guard = Ns(name.clone());
        let s0 = Instant::now();
        let ip = net.ipam().allocate(&id, "eth0").unwrap();
        let s1 = Instant::now();
        let a = herd_net::PodAttach {
            id: &id,
            netns: &pod,
            ifname: "eth0",
            address: ipnet::Ipv4Net::new(ip, 24).unwrap(),
            gateway: net.bridge().gateway,
            mtu: cfg.mtu,
            hairpin: cfg.hairpin,
            bridge_index: net.bridge().index,
        };
        let pn = rt.block_on(herd_net::attach(net.handle(), &a)).unwrap();
        let s2 = Instant::now();
        drop(pod);
        rt.block_on(net.del_pod(&id, "eth0", None)).unwrap();
        drop(guard);
        let s3 = Instant::now();
        while rt.block_on(link_exists(net.handle(), &pn.host_veth)) {
            assert!(s3.elapsed() < Duration::from_secs(10), "veth not reaped");
            std::thread::sleep(Duration::from_micros(200));
        }
        reap.push(s3.elapsed());
        s_add.push(s2 - s0);
        alloc.push(s1 - s0);
        attach.push(s2 - s1);
        s_del.push(s3 - s2);
    }

    // IPAM alone on the same file system.
    let mut ipam_only = vec![];
    let d = tempfile::tempdir_in(&parent).unwrap();
    let ipam = herd_net::Ipam::open(
        d.path(),
        "10.251.0.0/24".parse().unwrap(),
        "10.251.0.1".parse().unwrap(),
    )
    .unwrap();
    for i in 0..CYCLES {
        let t = Instant::now();
        ipam.allocate(&format!("i{i}"), "eth0").unwrap();
        ipam_only.push(t.elapsed());
        ipam.release(&format!("i{i}"), "eth0").unwrap();
    }

    println!("herd-net in-agent netlink path, {CYCLES} cycles each (ms)");
    println!(
        "| {:<38} | {:>8} | {:>8} | {:>8} | {:>8} |",
        "step", "median", "p99", "min", "max"
    );
    println!(
        "|{:-<40}|{:-<10}|{:-<10}|{:-<10}|{:-<10}|",
        "", "", "", "", ""
    );
    stats("churn: netns create (runtime's job)", mk);
    stats("churn: add_pod", add);
    stats("churn: del_pod(None) + netns delete", del);
    stats("churn: whole cycle", total);
    stats("ensure_bridge (fast path)", bridge);
    stats("settled: add_pod", s_add);
    stats("settled:   ipam allocate (2 fsyncs)", alloc);
    stats("settled:   attach (netlink)", attach);
    stats("settled: del_pod(None) + netns delete", s_del);
    stats("settled: kernel reaps host veth", reap);
    stats("ipam allocate alone", ipam_only);
    assert!(net.ipam().allocations().unwrap().is_empty());
}
