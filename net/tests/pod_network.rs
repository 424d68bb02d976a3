//! Root tests: a simulated node (its own netns) with a bridge and pods in
//! their own netns, wired through `NodeNetwork`. Nothing is configured in
//! the root netns; every namespace is deleted by exact name on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{NsGuard, ip_json, ip_link_exists, poll_until, root_or_skip};
use herd_net::{BridgeConfig, NetNs, NodeNetwork};

fn cfg(subnet: &str) -> BridgeConfig {
    BridgeConfig {
        subnet: subnet.parse().unwrap(),
        ..BridgeConfig::default()
    }
}

struct Node {
    net: NodeNetwork,
    guard: NsGuard,
    _state: tempfile::TempDir,
}

async fn node(subnet: &str) -> Node {
    let guard = NsGuard::new("hn");
    let state = tempfile::tempdir().unwrap();
    let net = NodeNetwork::new(Some(guard.open()), cfg(subnet), state.path())
        .await
        .unwrap();
    Node {
        net,
        guard,
        _state: state,
    }
}

/// Listen on `addr` inside `ns`.
fn listen_in(ns: &NetNs, addr: SocketAddr) -> TcpListener {
    ns.run(move || TcpListener::bind(addr)).unwrap().unwrap()
}

/// Connect from inside `ns` to `addr`, send a line, read the echo.
fn talk_from(ns: &NetNs, listener: &TcpListener, addr: SocketAddr) -> String {
    let client = ns
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    let peer = client.local_addr().unwrap();
    let (mut server, from) = listener.accept().unwrap();
    assert_eq!(from, peer);
    let mut client = client;
    client.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).unwrap();
    server.write_all(&buf).unwrap();
    let mut back = [0u8; 5];
    client.read_exact(&mut back).unwrap();
    String::from_utf8_lossy(&back).into_owned()
}

#[tokio::test]
async fn two_pods_reach_each_other_and_the_node() {
    if !root_or_skip("two_pods_reach_each_other_and_the_node") {
        return;
    }
    let n = node("10.244.1.0/24").await;
    let pa = NsGuard::new("hpa");
    let pb = NsGuard::new("hpb");
    let a = n.net.add_pod("pod-a", pa.ns(), "eth0").await.unwrap();
    let b = n.net.add_pod("pod-b", pb.ns(), "eth0").await.unwrap();
    assert_ne!(a.address.addr(), b.address.addr());
    assert_eq!(a.gateway, Ipv4Addr::new(10, 244, 1, 1));
    assert_eq!(a.address.prefix_len(), 24);

    // Independent view: iproute2 sees the address and the default route.
    let addrs = ip_json(&pa.name, &["addr", "show", "dev", "eth0"]);
    let local = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["family"] == "inet")
        .unwrap();
    assert_eq!(local["local"], a.address.addr().to_string());
    assert_eq!(local["prefixlen"], 24);
    let routes = ip_json(&pa.name, &["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.244.1.1");
    let link = ip_json(&n.guard.name, &["-d", "link", "show", "dev", &a.host_veth]);
    assert_eq!(link[0]["master"], "herd0");
    assert_eq!(link[0]["linkinfo"]["info_slave_data"]["hairpin"], true);
    assert_eq!(link[0]["operstate"], "UP");
    let pod_link = ip_json(&pa.name, &["link", "show", "dev", "eth0"]);
    assert_eq!(pod_link[0]["mtu"], 1500);
    let mac = a
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(pod_link[0]["address"], mac);
    let lo = ip_json(&pa.name, &["link", "show", "dev", "lo"]);
    assert!(lo[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

    // Pod A -> pod B over the bridge.
    let to_b = SocketAddr::from((b.address.addr(), 7001));
    let lb = listen_in(pb.ns(), to_b);
    assert_eq!(talk_from(pa.ns(), &lb, to_b), "ping\n");
    // Pod B -> pod A.
    let to_a = SocketAddr::from((a.address.addr(), 7002));
    let la = listen_in(pa.ns(), to_a);
    assert_eq!(talk_from(pb.ns(), &la, to_a), "ping\n");
    // Pod A -> node (gateway address on the bridge).
    let to_node = SocketAddr::from((a.gateway, 7003));
    let ln = listen_in(n.guard.ns(), to_node);
    assert_eq!(talk_from(pa.ns(), &ln, to_node), "ping\n");

    n.net.check_pod("pod-a", pa.ns(), "eth0").await.unwrap();
    n.net.check_pod("pod-b", pb.ns(), "eth0").await.unwrap();
    // CHECK names what differs: pod B's netns does not hold pod A.
    let err = n.net.check_pod("pod-a", pb.ns(), "eth0").await.unwrap_err();
    assert!(err.to_string().contains("mac is"), "{err}");
}

#[tokio::test]
async fn del_frees_the_address_and_it_comes_back_after_wrap() {
    if !root_or_skip("del_frees_the_address_and_it_comes_back_after_wrap") {
        return;
    }
    // /29: .1 gateway, .2-.6 allocatable (5 addresses).
    let n = node("10.244.2.0/29").await;
    let mut p = NsGuard::new("hpd");
    let first = n.net.add_pod("pod-1", p.ns(), "eth0").await.unwrap();
    assert_eq!(n.net.ipam().allocations().unwrap().len(), 1);
    n.net.del_pod("pod-1", "eth0", None).await.unwrap();
    p.delete();
    assert!(n.net.ipam().allocations().unwrap().is_empty());
    // Round-robin: the next four go elsewhere, then the freed one returns.
    let mut seen = Vec::new();
    for i in 0..4 {
        seen.push(
            n.net
                .ipam()
                .allocate(&format!("filler-{i}"), "eth0")
                .unwrap(),
        );
    }
    assert!(!seen.contains(&first.address.addr()), "{seen:?}");
    let p2 = NsGuard::new("hpd");
    let again = n.net.add_pod("pod-2", p2.ns(), "eth0").await.unwrap();
    assert_eq!(again.address.addr(), first.address.addr());
    let p3 = NsGuard::new("hpd");
    let full = n.net.add_pod("pod-3", p3.ns(), "eth0").await.unwrap_err();
    assert!(
        matches!(full, herd_net::NetError::Exhausted { .. }),
        "{full}"
    );
}

#[tokio::test]
async fn add_and_del_are_idempotent() {
    if !root_or_skip("add_and_del_are_idempotent") {
        return;
    }
    let n = node("10.244.3.0/24").await;
    let p = NsGuard::new("hpi");
    let one = n.net.add_pod("pod-i", p.ns(), "eth0").await.unwrap();
    let two = n.net.add_pod("pod-i", p.ns(), "eth0").await.unwrap();
    assert_eq!(one, two);
    assert_eq!(n.net.ipam().allocations().unwrap().len(), 1);
    n.net.check_pod("pod-i", p.ns(), "eth0").await.unwrap();

    // A second interface for the same pod gets its own address and veth.
    let eth1 = n.net.add_pod("pod-i", p.ns(), "eth1").await.unwrap();
    assert_ne!(eth1.address, one.address);
    assert_ne!(eth1.host_veth, one.host_veth);

    // DEL with a netns that stays: the pod side (and so the pair) goes.
    n.net.del_pod("pod-i", "eth1", Some(p.ns())).await.unwrap();
    assert!(!ip_link_exists(&p.name, "eth1"));
    let gone = poll_until(Duration::from_secs(5), || {
        !ip_link_exists(&n.guard.name, &eth1.host_veth)
    });
    assert!(gone.is_some(), "host veth {} still there", eth1.host_veth);
    n.net.del_pod("pod-i", "eth1", Some(p.ns())).await.unwrap();

    n.net.del_pod("pod-i", "eth0", Some(p.ns())).await.unwrap();
    n.net.del_pod("pod-i", "eth0", Some(p.ns())).await.unwrap();
    n.net.del_pod("pod-i", "eth0", None).await.unwrap();
    n.net.del_pod("never-added", "eth0", None).await.unwrap();
    n.net
        .del_pod("never-added", "eth0", Some(p.ns()))
        .await
        .unwrap();
    assert!(n.net.ipam().allocations().unwrap().is_empty());

    // Bad input is a typed error, not a panic.
    let err = n
        .net
        .add_pod("pod-x", p.ns(), "bad/name")
        .await
        .unwrap_err();
    assert!(
        matches!(err, herd_net::NetError::InvalidName { .. }),
        "{err}"
    );
    let err = n.net.add_pod("", p.ns(), "eth0").await.unwrap_err();
    assert!(
        matches!(err, herd_net::NetError::InvalidName { .. }),
        "{err}"
    );
    assert!(n.net.ipam().allocations().unwrap().is_empty());
}

#[tokio::test]
async fn stale_host_veth_is_replaced() {
    if !root_or_skip("stale_host_veth_is_replaced") {
        return;
    }
    let n = node("10.244.4.0/24").await;
    // A crash mid-ADD left a host end with our deterministic name whose
    // peer is not in the pod netns: simulate with a veth pair made by hand.
    let name = herd_net::host_veth_name("pod-s", "eth0");
    let out = std::process::Command::new("ip")
        .args([
            "-n",
            &n.guard.name,
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            "stalepeer",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = NsGuard::new("hps");
    let net = n.net.add_pod("pod-s", p.ns(), "eth0").await.unwrap();
    assert_eq!(net.host_veth, name);
    let link = ip_json(&n.guard.name, &["-d", "link", "show", "dev", &name]);
    assert_eq!(link[0]["linkinfo"]["info_kind"], "veth");
    n.net.check_pod("pod-s", p.ns(), "eth0").await.unwrap();
}

#[tokio::test]
async fn deleting_the_netns_reaps_the_veth() {
    if !root_or_skip("deleting_the_netns_reaps_the_veth") {
        return;
    }
    let n = node("10.244.5.0/24").await;
    let mut p = NsGuard::new("hpt");
    let net = n.net.add_pod("pod-t", p.ns(), "eth0").await.unwrap();
    assert!(ip_link_exists(&n.guard.name, &net.host_veth));
    let start = std::time::Instant::now();
    n.net.del_pod("pod-t", "eth0", None).await.unwrap();
    p.delete();
    let del_call = start.elapsed();
    let gone = poll_until(Duration::from_secs(10), || {
        !ip_link_exists(&n.guard.name, &net.host_veth)
    });
    let gone = gone.expect("host veth still present 10 s after netns delete");
    eprintln!(
        "teardown: del_pod+netns delete {:?}, host veth gone after {:?} more",
        del_call, gone
    );
    assert!(n.net.ipam().allocations().unwrap().is_empty());
    assert!(
        !std::path::Path::new(common::NETNS_DIR)
            .join(&p.name)
            .exists()
    );
}

#[tokio::test]
async fn masquerade_rule_is_installed_and_removed() {
    if !root_or_skip("masquerade_rule_is_installed_and_removed") {
        return;
    }
    let g = NsGuard::new("hnm");
    let state = tempfile::tempdir().unwrap();
    let mut c = cfg("10.244.6.0/24");
    c.masquerade = true;
    let net = NodeNetwork::new(Some(g.open()), c.clone(), state.path())
        .await
        .unwrap();
    let list = |g: &NsGuard| {
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &g.name, "nft", "list", "table", "inet", "herd",
            ])
            .output()
            .unwrap()
    };
    let out = list(&g);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ip saddr 10.244.6.0/24 ip daddr != 10.244.6.0/24 masquerade"),
        "{text}"
    );
    // Re-applying does not duplicate the rule.
    herd_net::apply_node_settings(Some(&g.open()), &c).unwrap();
    let text = String::from_utf8_lossy(&list(&g).stdout).into_owned();
    assert_eq!(text.matches("masquerade").count(), 1, "{text}");
    // The fast path (bridge up with address) changes nothing.
    let again = herd_net::ensure_bridge(net.handle(), net.host(), &c)
        .await
        .unwrap();
    assert_eq!(&again, net.bridge());
    let fwd = g
        .ns()
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward"))
        .unwrap()
        .unwrap();
    assert_eq!(fwd.trim(), "1");
    herd_net::remove_masquerade(Some(&g.open()), "herd0")
        .await
        .unwrap();
    assert!(!list(&g).status.success());
    herd_net::remove_masquerade(Some(&g.open()), "herd0")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_get_distinct_addresses() {
    if !root_or_skip("concurrent_adds_get_distinct_addresses") {
        return;
    }
    let n = std::sync::Arc::new(node("10.244.7.0/24").await);
    let pods: Vec<NsGuard> = (0..8).map(|_| NsGuard::new("hpk")).collect();
    let pods = std::sync::Arc::new(pods);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (n, pods) = (n.clone(), pods.clone());
            tokio::spawn(async move {
                n.net
                    .add_pod(&format!("pod-k{i}"), pods[i].ns(), "eth0")
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ips = std::collections::HashSet::new();
    for t in tasks {
        ips.insert(t.await.unwrap().address.addr());
    }
    assert_eq!(ips.len(), 8);
    assert_eq!(n.net.ipam().allocations().unwrap().len(), 8);
    for (i, p) in pods.iter().enumerate() {
        n.net
            .check_pod(&format!("pod-k{i}"), p.ns(), "eth0")
            .await
            .unwrap();
    }
}

fn ip_cmd(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn check_names_the_difference_and_a_retried_add_repairs_it() {
    if !root_or_skip("check_names_the_difference_and_a_retried_add_repairs_it") {
        return;
    }
    let n = node("10.244.8.0/24").await;
    let p = NsGuard::new("hpr");
    n.net.add_pod("pod-r", p.ns(), "eth0").await.unwrap();
    ip_cmd(&["-n", &p.name, "addr", "flush", "dev", "eth0"]);
    let err = n.net.check_pod("pod-r", p.ns(), "eth0").await.unwrap_err();
    assert!(err.to_string().contains("address 10.244.8."), "{err}");
    // flushing the address also dropped the default route; ADD again fixes both.
    n.net.add_pod("pod-r", p.ns(), "eth0").await.unwrap();
    n.net.check_pod("pod-r", p.ns(), "eth0").await.unwrap();
    ip_cmd(&["-n", &p.name, "link", "set", "eth0", "down"]);
    let err = n.net.check_pod("pod-r", p.ns(), "eth0").await.unwrap_err();
    assert!(err.to_string().contains("down"), "{err}");
    n.net.add_pod("pod-r", p.ns(), "eth0").await.unwrap();
    n.net.check_pod("pod-r", p.ns(), "eth0").await.unwrap();
    assert_eq!(n.net.ipam().allocations().unwrap().len(), 1);

    // An eth0 that is not ours is a conflict, and the address is released.
    let q = NsGuard::new("hpr");
    ip_cmd(&[
        "-n", &q.name, "link", "add", "eth0", "type", "veth", "peer", "name", "other",
    ]);
    let err = n.net.add_pod("pod-q", q.ns(), "eth0").await.unwrap_err();
    assert!(
        matches!(err, herd_net::NetError::LinkConflict { .. }),
        "{err}"
    );
    assert_eq!(n.net.ipam().allocations().unwrap().len(), 1);
    // DEL with that netns leaves the foreign eth0 alone.
    n.net.del_pod("pod-q", "eth0", Some(q.ns())).await.unwrap();
    assert!(ip_link_exists(&q.name, "eth0"));
}
