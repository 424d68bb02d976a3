//! Crash between allocation and wiring (root). The test binary re-executes
//! itself as the crashing child (`harness = false`): the child runs
//! `NodeNetwork::add_pod` with `HERD_NET_FAILPOINT=after-allocate`, which
//! aborts right after the allocation is durable. Then the parent checks a
//! retried ADD gets the same address (no double assignment) and a start-up
//! reconcile releases what no live pod owns (no leak).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{NsGuard, root_or_skip};
use herd_net::{BridgeConfig, NetNs, NodeNetwork};

const CHILD_ENV: &str = "HERD_NET_CRASH_CHILD";

fn cfg() -> BridgeConfig {
    BridgeConfig {
        subnet: "10.244.9.0/24".parse().unwrap(),
        ..BridgeConfig::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Child mode: "<node netns>\t<pod netns>\t<state dir>\t<id>".
fn child(spec: &str) -> ! {
    let parts: Vec<&str> = spec.split('\t').collect();
    let [node, pod, state, id] = parts[..] else {
        eprintln!("bad {CHILD_ENV}: {spec:?}");
        std::process::exit(2);
    };
    let res = rt().block_on(async {
        let node = NetNs::open(Path::new(node))?;
        let pod = NetNs::open(Path::new(pod))?;
        let net = NodeNetwork::new(Some(node), cfg(), Path::new(state)).await?;
        net.add_pod(id, &pod, "eth0").await
    });
    eprintln!("child add_pod returned instead of aborting: {res:?}");
    std::process::exit(3);
}

fn crash_add(node: &NsGuard, pod: &NsGuard, state: &Path, id: &str) {
    let spec = format!(
        "{}\t{}\t{}\t{id}",
        node.path().display(),
        pod.path().display(),
        state.display()
    );
    let status = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, spec)
        .env(herd_net::FAILPOINT_ENV, "after-allocate")
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "child should abort at the failpoint, got {status}"
    );
}

fn crash_between_allocation_and_wiring() {
    let node = NsGuard::new("hnc");
    let state = tempfile::tempdir().unwrap();
    let state_dir: PathBuf = state.path().to_path_buf();
    let p1 = NsGuard::new("hpc");
    let p2 = NsGuard::new("hpc");
    let rt = rt();

    crash_add(&node, &p1, &state_dir, "crash-1");
    let net = rt
        .block_on(NodeNetwork::new(Some(node.open()), cfg(), &state_dir))
        .unwrap();
    let allocs = net.ipam().allocations().unwrap();
    assert_eq!(allocs.len(), 1, "{allocs:?}");
    assert_eq!(allocs[0].id, "crash-1");
    let crashed_ip = allocs[0].ip;
    // The child never wired the pod.
    assert!(!common::ip_link_exists(&p1.name, "eth0"));

    // A retried ADD for the same pod gets the same address, once.
    let retried = rt
        .block_on(net.add_pod("crash-1", p1.ns(), "eth0"))
        .unwrap();
    assert_eq!(retried.address.addr(), crashed_ip);
    assert_eq!(net.ipam().allocations().unwrap().len(), 1);

    // Another crash, for a pod that then never comes back.
    crash_add(&node, &p2, &state_dir, "crash-2");
    assert_eq!(net.ipam().allocations().unwrap().len(), 2);

    // Agent restart: fresh NodeNetwork over the same state, reconcile
    // against the live set (only crash-1 has a sandbox).
    drop(net);
    let restarted = rt
        .block_on(NodeNetwork::new(Some(node.open()), cfg(), &state_dir))
        .unwrap();
    let released = restarted.reconcile(&|id, _| id == "crash-1").unwrap();
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0].id, "crash-2");
    let left = restarted.ipam().allocations().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].id.as_str(), left[0].ip), ("crash-1", crashed_ip));
    rt.block_on(restarted.check_pod("crash-1", p1.ns(), "eth0"))
        .unwrap();
    // The released address is handed out again, never the live one.
    let next = restarted.ipam().allocate("after", "eth0").unwrap();
    assert_ne!(next, crashed_ip);
}

fn main() {
    if let Some(spec) = std::env::var_os(CHILD_ENV) {
        child(&spec.to_string_lossy());
    }
    if std::env::args().any(|a| a == "--list") {
        println!("crash_between_allocation_and_wiring: test");
        return;
    }
    if !root_or_skip("crash_between_allocation_and_wiring") {
        return;
    }
    crash_between_allocation_and_wiring();
    println!("test crash_between_allocation_and_wiring ... ok");
}
