//! Root tests for the nftables Service proxy. Topology (all namespaces
//! made here, deleted by exact name on drop; nothing in the root netns):
//!
//! ```text
//!  client (192.168.88.2) --veth-- node (192.168.88.1, proxy + nft table)
//!                                   |-- veth -- backend a (10.252.1.2)
//!                                   `-- veth -- backend b (10.252.2.2)
//! ```
//!
//! Backends are TCP listeners of this test process bound inside their
//! netns; each answers with its name and the peer address it saw.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{NsGuard, ip, root_or_skip};
use herd_net::service::SyncStats;
use herd_net::{NetError, NetNs, Protocol, ProxyConfig, ServicePort, ServiceProxy, ServiceSpec};
use serde_json::Value;

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 1);

struct Topo {
    node: NsGuard,
    client: NsGuard,
    a: NsGuard,
    b: NsGuard,
}

fn topo() -> Topo {
    let t = Topo {
        node: NsGuard::new("hsn"),
        client: NsGuard::new("hsc"),
        a: NsGuard::new("hsa"),
        b: NsGuard::new("hsb"),
    };
    let n = &t.node.name;
    for (port, peer, node_addr, peer_addr, gw) in [
        (
            "cl",
            &t.client.name,
            "192.168.88.1/24",
            "192.168.88.2/24",
            "192.168.88.1",
        ),
        (
            "bea",
            &t.a.name,
            "10.252.1.1/24",
            "10.252.1.2/24",
            "10.252.1.1",
        ),
        (
            "beb",
            &t.b.name,
            "10.252.2.1/24",
            "10.252.2.2/24",
            "10.252.2.1",
        ),
    ] {
        ip(
            n,
            &[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", peer,
            ],
        );
        ip(n, &["addr", "add", node_addr, "dev", port]);
        ip(n, &["link", "set", port, "up"]);
        ip(peer, &["addr", "add", peer_addr, "dev", "eth0"]);
        ip(peer, &["link", "set", "eth0", "up"]);
        ip(peer, &["link", "set", "lo", "up"]);
        ip(peer, &["route", "add", "default", "via", gw]);
    }
    ip(n, &["link", "set", "lo", "up"]);
    // The node's upstream; locally generated service traffic needs some
    // route before the output hook can DNAT it.
    ip(n, &["route", "add", "default", "via", "192.168.88.2"]);
    t.node
        .ns()
        .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
        .unwrap()
        .unwrap();
    t
}

/// A TCP backend answering "<name> <peer ip>" and closing; stopped on drop.
struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start(ns: &NetNs, addr: SocketAddrV4, name: &'static str) -> Backend {
        let listener = ns.run(move || TcpListener::bind(addr)).unwrap().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.write_all(format!("{name} {}", peer.ip()).as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Backend {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn backends(t: &Topo) -> (Backend, Backend) {
    (
        Backend::start(t.a.ns(), "10.252.1.2:8080".parse().unwrap(), "a"),
        Backend::start(t.b.ns(), "10.252.2.2:8080".parse().unwrap(), "b"),
    )
}

/// Connect from `ns` and read the backend's answer.
fn hit(ns: &NetNs, to: SocketAddr) -> std::io::Result<String> {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .unwrap()
}

fn ep(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn web(eps: &[&str], node_port: Option<u16>) -> ServiceSpec {
    ServiceSpec {
        namespace: "default".into(),
        name: "web".into(),
        cluster_ip: CLUSTER_IP,
        ports: vec![ServicePort {
            protocol: Protocol::Tcp,
            port: 80,
            node_port,
            endpoints: eps.iter().map(|e| ep(e)).collect(),
        }],
        affinity: None,
    }
}

fn proxy(t: &Topo) -> ServiceProxy {
    ServiceProxy::new(Some(t.node.open()), ProxyConfig::default()).unwrap()
}

/// `nft -j list table ip herd` in `ns`, or None when the table is absent.
fn nft_table(ns: &NetNs) -> Option<Value> {
    let out = ns
        .run(|| {
            Command::new("nft")
                .args(["-j", "list", "table", "ip", "herd"])
                .output()
        })
        .unwrap()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// chain name -> (chain handle, rule handles)
fn handles(doc: &Value) -> HashMap<String, (u64, Vec<u64>)> {
    let mut out: HashMap<String, (u64, Vec<u64>)> = HashMap::new();
    for item in doc["nftables"].as_array().unwrap() {
        if let Some(c) = item.get("chain") {
            out.entry(c["name"].as_str().unwrap().into()).or_default().0 =
                c["handle"].as_u64().unwrap();
        }
        if let Some(r) = item.get("rule") {
            out.entry(r["chain"].as_str().unwrap().into())
                .or_default()
                .1
                .push(r["handle"].as_u64().unwrap());
        }
    }
    out
}

fn map_elems(doc: &Value, map: &str) -> usize {
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("map"))
        .find(|m| m["name"] == map)
        .map_or(0, |m| {
            m.get("elem").and_then(Value::as_array).map_or(0, Vec::len)
        })
}

fn teardown(p: &mut ServiceProxy, t: &Topo) {
    p.delete_table().unwrap();
    assert!(nft_table(t.node.ns()).is_none());
}

#[test]
fn cluster_ip_balances_nodeport_and_hairpin_masquerade() {
    if !root_or_skip("cluster_ip_balances_nodeport_and_hairpin_masquerade") {
        return;
    }
    let t = topo();
    let _be = backends(&t);
    let mut p = proxy(&t);
    let mut me = web(&["10.252.1.2:8080"], None);
    me.name = "self".into();
    me.cluster_ip = Ipv4Addr::new(10, 96, 0, 11);
    p.sync(&[
        web(&["10.252.1.2:8080", "10.252.2.2:8080"], Some(30080)),
        me,
    ])
    .unwrap();

    let vip: SocketAddr = (CLUSTER_IP, 80).into();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..50 {
        let answer = hit(t.client.ns(), vip).unwrap();
        // ClusterIP traffic keeps the client's address.
        assert!(answer.ends_with(" 192.168.88.2"), "{answer}");
        *seen.entry(answer[..1].to_string()).or_default() += 1;
    }
    assert!(seen["a"] >= 5 && seen["b"] >= 5, "distribution {seen:?}");

    // NodePort from outside: reaches a backend, masqueraded to the node.
    for _ in 0..10 {
        let answer = hit(t.client.ns(), (NODE_IP, 30080).into()).unwrap();
        assert!(
            answer == "a 10.252.1.1" || answer == "b 10.252.2.1",
            "{answer}"
        );
    }
    // From the node itself (output hook).
    let answer = hit(t.node.ns(), vip).unwrap();
    assert!(
        answer.starts_with('a') || answer.starts_with('b'),
        "{answer}"
    );
    // Hairpin: backend a reaching itself through a service is masqueraded.
    let answer = hit(t.a.ns(), (Ipv4Addr::new(10, 96, 0, 11), 80).into()).unwrap();
    assert_eq!(answer, "a 10.252.1.1");
    teardown(&mut p, &t);
}

#[test]
fn session_affinity_pins_one_backend() {
    if !root_or_skip("session_affinity_pins_one_backend") {
        return;
    }
    let t = topo();
    let _be = backends(&t);
    let mut p = proxy(&t);
    let mut svc = web(&["10.252.1.2:8080", "10.252.2.2:8080"], None);
    svc.affinity = Some(Duration::from_secs(60));
    p.sync(std::slice::from_ref(&svc)).unwrap();
    let vip: SocketAddr = (CLUSTER_IP, 80).into();
    let first = hit(t.client.ns(), vip).unwrap();
    for _ in 0..20 {
        assert_eq!(hit(t.client.ns(), vip).unwrap(), first);
    }
    // Another client address (the node's own, via output) may differ but
    // is pinned too.
    let other = hit(t.node.ns(), vip).unwrap();
    for _ in 0..5 {
        assert_eq!(hit(t.node.ns(), vip).unwrap(), other);
    }
    teardown(&mut p, &t);
}

#[test]
fn updates_are_incremental_and_survive_a_restart() {
    if !root_or_skip("updates_are_incremental_and_survive_a_restart") {
        return;
    }
    let t = topo();
    let _be = backends(&t);
    let mut p = proxy(&t);
    let mut other = web(&["10.252.2.2:8080"], Some(30081));
    other.name = "other".into();
    other.cluster_ip = Ipv4Addr::new(10, 96, 0, 12);
    p.sync(&[
        web(&["10.252.1.2:8080", "10.252.2.2:8080"], Some(30080)),
        other.clone(),
    ])
    .unwrap();
    let before = handles(&nft_table(t.node.ns()).unwrap());

    // Drop backend b from web.
    let st = p
        .sync(&[web(&["10.252.1.2:8080"], Some(30080)), other.clone()])
        .unwrap();
    assert_eq!(
        (st.chains_rewritten, st.chains_deleted, st.chains_added),
        (1, 1, 0),
        "{st:?}"
    );
    assert_eq!(st.elements_added + st.elements_deleted, 0, "{st:?}");
    let after = handles(&nft_table(t.node.ns()).unwrap());
    assert!(!after.contains_key("ep-default/web/tcp/80__10.252.2.2/8080"));
    let rewritten = "svc-default/web/tcp/80";
    assert_eq!(before[rewritten].0, after[rewritten].0, "chain kept");
    assert_ne!(before[rewritten].1, after[rewritten].1, "rules rewritten");
    for (name, h) in &after {
        if name != rewritten {
            assert_eq!(Some(h), before.get(name), "chain {name} was touched");
        }
    }
    for _ in 0..10 {
        assert!(
            hit(t.client.ns(), (CLUSTER_IP, 80).into())
                .unwrap()
                .starts_with('a')
        );
    }

    // A restarted proxy reads the table back and changes nothing.
    let mut p2 = proxy(&t);
    let st = p2
        .sync(&[web(&["10.252.1.2:8080"], Some(30080)), other.clone()])
        .unwrap();
    assert!(st.is_noop(), "{st:?}");
    assert_eq!(handles(&nft_table(t.node.ns()).unwrap()), after);

    // Deleting a service removes its elements and chains.
    let st: SyncStats = p2.sync(std::slice::from_ref(&other)).unwrap();
    assert_eq!(st.elements_deleted, 2, "{st:?}");
    let doc = nft_table(t.node.ns()).unwrap();
    assert_eq!(map_elems(&doc, "services"), 1);
    assert_eq!(map_elems(&doc, "nodeports"), 1);
    assert!(!handles(&doc).keys().any(|k| k.contains("/web/")));
    teardown(&mut p2, &t);
}

#[test]
fn no_endpoints_rejects_quickly() {
    if !root_or_skip("no_endpoints_rejects_quickly") {
        return;
    }
    let t = topo();
    let mut p = proxy(&t);
    p.sync(&[web(&[], Some(30080))]).unwrap();
    for to in [SocketAddr::from((CLUSTER_IP, 80)), (NODE_IP, 30080).into()] {
        let start = Instant::now();
        let err = hit(t.client.ns(), to).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{to}: {err}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{to}: {:?}",
            start.elapsed()
        );
    }
    let err = hit(t.node.ns(), (CLUSTER_IP, 80).into()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    teardown(&mut p, &t);
}

#[test]
fn bad_specs_never_reach_the_kernel() {
    if !root_or_skip("bad_specs_never_reach_the_kernel") {
        return;
    }
    let t = topo();
    let mut p = proxy(&t);
    let mut dup = web(&["10.252.1.2:8080"], None);
    dup.ports.push(dup.ports[0].clone());
    let err = p.sync(&[dup]).unwrap_err();
    assert!(matches!(err, NetError::InvalidService { .. }), "{err}");
    assert!(err.to_string().contains("duplicate port"), "{err}");
    assert!(
        nft_table(t.node.ns()).is_none(),
        "table created for a bad spec"
    );
    // A table edited behind the proxy's back is rebuilt.
    p.sync(&[web(&["10.252.1.2:8080"], None)]).unwrap();
    let out = t
        .node
        .ns()
        .run(|| {
            Command::new("nft")
                .args(["delete", "chain", "ip", "herd", "filter-forward"])
                .output()
        })
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    p.forget();
    let st = p
        .sync(&[web(&["10.252.1.2:8080", "10.252.2.2:8080"], None)])
        .unwrap();
    assert!(
        handles(&nft_table(t.node.ns()).unwrap()).contains_key("filter-forward"),
        "{st:?}"
    );
    assert!(!st.full_reload);
    // Without `forget`, a drifted table makes the incremental transaction
    // fail (it deletes a chain that is already gone): one full rebuild.
    let ep_b = "ep-default/web/tcp/80__10.252.2.2/8080";
    for cmd in [
        vec!["flush", "chain", "ip", "herd", "svc-default/web/tcp/80"],
        vec!["delete", "chain", "ip", "herd", ep_b],
    ] {
        let out = t
            .node
            .ns()
            .run(move || Command::new("nft").args(&cmd).output())
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let st = p.sync(&[web(&["10.252.1.2:8080"], None)]).unwrap();
    assert!(st.full_reload, "{st:?}");
    let _be = backends(&t);
    assert!(
        hit(t.client.ns(), (CLUSTER_IP, 80).into())
            .unwrap()
            .starts_with('a')
    );
    teardown(&mut p, &t);
}
