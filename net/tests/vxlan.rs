//! Root tests for the VXLAN overlay: two "nodes" (their own netns) on
//! different subnets joined by a "router" netns, so host-gw is impossible,
//! each with a bridge "pods" link (no ports) holding an address of its pod CIDR.
//! Nothing is configured in the root netns; every namespace is deleted by
//! exact name on drop (the veths, bridges and VXLAN devices go with them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::{NsGuard, ip, ip_json, ip_link_exists, root_or_skip};
use herd_net::vxlan::{DeviceChange, MAX_VNI, directly_connected};
use herd_net::{
    HERD_ROUTE_PROTOCOL, HERD_VXLAN_ROUTE_PROTOCOL, NetError, NetNs, NodeRoute, RouteOwner,
    VxlanConfig, VxlanPeer, connect_in, remove_vxlan, sync_node_routes, sync_vxlan, vtep_mac,
};

const DEV: &str = "herd.vxlan";

/// `bridge -n <ns> -j fdb show dev <DEV>` as (mac, dst, permanent).
fn fdb(ns: &str) -> Vec<(String, String, bool)> {
    let out = Command::new("bridge")
        .args(["-n", ns, "-j", "fdb", "show", "dev", DEV])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut rows: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["mac"].as_str().unwrap().to_string(),
                e["dst"].as_str().unwrap_or("").to_string(),
                e["state"].as_str() == Some("permanent"),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Permanent neighbours on DEV as "ip lladdr".
fn neighbours(ns: &str) -> Vec<String> {
    let mut rows: Vec<String> = ip_json(ns, &["neigh", "show", "dev", DEV, "nud", "permanent"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{} {}",
                n["dst"].as_str().unwrap(),
                n["lladdr"].as_str().unwrap()
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Overlay routes as "dst via gw dev onlink?".
fn overlay_routes(ns: &str) -> Vec<String> {
    let proto = HERD_VXLAN_ROUTE_PROTOCOL.to_string();
    let mut rows: Vec<String> = ip_json(ns, &["route", "show", "proto", &proto])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let onlink = r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "onlink"));
            format!(
                "{} via {} dev {}{}",
                r["dst"].as_str().unwrap(),
                r["gateway"].as_str().unwrap(),
                r["dev"].as_str().unwrap(),
                if onlink { " onlink" } else { "" }
            )
        })
        .collect();
    rows.sort();
    rows
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Node a (10.251.1.2, pods 10.244.1.0/24) and node b (10.251.2.2, pods
/// 10.244.2.0/24) behind router r (10.251.1.1 / 10.251.2.1).
struct Topology {
    a: NsGuard,
    b: NsGuard,
    _r: NsGuard,
}

fn topology() -> Topology {
    let a = NsGuard::new("vxa");
    let b = NsGuard::new("vxb");
    let r = NsGuard::new("vxr");
    for (node, rif, rip, nip, gw, pods) in [
        (
            &a,
            "ra",
            "10.251.1.1/24",
            "10.251.1.2/24",
            "10.251.1.1",
            "10.244.1.1/24",
        ),
        (
            &b,
            "rb",
            "10.251.2.1/24",
            "10.251.2.2/24",
            "10.251.2.1",
            "10.244.2.1/24",
        ),
    ] {
        ip(
            &r.name,
            &[
                "link", "add", rif, "type", "veth", "peer", "name", "eth0", "netns", &node.name,
            ],
        );
        ip(&r.name, &["addr", "add", rip, "dev", rif]);
        ip(&r.name, &["link", "set", rif, "up"]);
        ip(&node.name, &["addr", "add", nip, "dev", "eth0"]);
        ip(&node.name, &["link", "set", "eth0", "up"]);
        ip(&node.name, &["link", "set", "lo", "up"]);
        ip(&node.name, &["route", "add", "default", "via", gw]);
        ip(&node.name, &["link", "add", "pods", "type", "bridge"]);
        ip(&node.name, &["addr", "add", pods, "dev", "pods"]);
        ip(&node.name, &["link", "set", "pods", "up"]);
    }
    r.ns()
        .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
        .unwrap()
        .unwrap();
    Topology { a, b, _r: r }
}

fn cfg(local: [u8; 4], node: &str, pods: &str) -> VxlanConfig {
    VxlanConfig::new(local.into(), vtep_mac(node), pods.parse().unwrap())
}

fn peer_of(c: &VxlanConfig) -> VxlanPeer {
    VxlanPeer {
        pod_cidr: c.pod_cidr,
        node_ip: c.local,
        mac: c.mac,
    }
}

/// A datagram from `from` (in `src_ns`) to `to` (in `dst_ns`) and the echo
/// back: needs the overlay in both directions. Timeouts are the deadline.
fn udp_round_trip(src_ns: &NetNs, from: SocketAddr, dst_ns: &NetNs, to: SocketAddr) -> bool {
    let server = dst_ns.run(move || UdpSocket::bind(to)).unwrap().unwrap();
    let client = src_ns.run(move || UdpSocket::bind(from)).unwrap().unwrap();
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    if client.send_to(b"hi", to).is_err() {
        return false;
    }
    let mut buf = [0u8; 2];
    let Ok((_, peer)) = server.recv_from(&mut buf) else {
        return false;
    };
    assert_eq!(peer, from);
    server.send_to(b"ok", peer).unwrap();
    matches!(client.recv_from(&mut buf), Ok((2, p)) if p == to && &buf == b"ok")
}

/// Send `len` bytes over TCP from `src_ns` to a listener on `to` in
/// `dst_ns`; returns (bytes the server counted, client address it saw).
fn tcp_bulk(src_ns: &NetNs, dst_ns: &NetNs, to: SocketAddr, len: usize) -> (usize, SocketAddr) {
    let listener = dst_ns.run(move || TcpListener::bind(to)).unwrap().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        s.write_all(&(buf.len() as u64).to_be_bytes()).unwrap();
        peer
    });
    let got = src_ns
        .run(move || {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&vec![0x5a; len]).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut n = [0u8; 8];
            s.read_exact(&mut n).unwrap();
            u64::from_be_bytes(n) as usize
        })
        .unwrap();
    (got, server.join().unwrap())
}

#[tokio::test]
async fn overlay_connects_pods_across_subnets() {
    if !root_or_skip("overlay_connects_pods_across_subnets") {
        return;
    }
    let t = topology();
    let (a, b) = (&t.a, &t.b);
    let ca = connect_in(Some(a.ns())).await.unwrap();
    let cb = connect_in(Some(b.ns())).await.unwrap();
    let cfg_a = cfg([10, 251, 1, 2], "node-a", "10.244.1.0/24");
    let cfg_b = cfg([10, 251, 2, 2], "node-b", "10.244.2.0/24");
    let from: SocketAddr = (Ipv4Addr::new(10, 244, 1, 1), 7201).into();
    let to: SocketAddr = (Ipv4Addr::new(10, 244, 2, 1), 7202).into();

    // host-gw cannot reach b: its address is behind the router.
    let hostgw = NodeRoute {
        pod_cidr: cfg_b.pod_cidr,
        via: cfg_b.local,
        dev: None,
    };
    let err = sync_node_routes(ca.handle(), &[hostgw], RouteOwner::default())
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::GatewayNotDirect { .. }), "{err}");
    let direct = directly_connected(
        ca.handle(),
        &[
            cfg_b.local,
            Ipv4Addr::new(10, 251, 1, 1),
            Ipv4Addr::new(10, 244, 1, 7),
        ],
    )
    .await
    .unwrap();
    assert_eq!(direct, vec![false, true, true]);
    assert!(!udp_round_trip(a.ns(), from, b.ns(), to));

    // A host-gw route (protocol 0x4e) must survive overlay syncs.
    let hostgw_other = NodeRoute {
        pod_cidr: "10.99.0.0/16".parse().unwrap(),
        via: Ipv4Addr::new(10, 251, 1, 1),
        dev: None,
    };
    sync_node_routes(
        ca.handle(),
        std::slice::from_ref(&hostgw_other),
        RouteOwner::default(),
    )
    .await
    .unwrap();

    let ra = sync_vxlan(ca.handle(), &cfg_a, &[peer_of(&cfg_b)])
        .await
        .unwrap();
    assert_eq!(ra.device, DeviceChange::Created);
    assert_eq!(ra.mtu, 1450, "veth 1500 - 50");
    assert_eq!(ra.routes.added, vec![cfg_b.pod_cidr]);
    assert_eq!(ra.neighbours.added, vec![Ipv4Addr::new(10, 244, 2, 0)]);
    assert_eq!(ra.fdb.added, vec![(cfg_b.mac, cfg_b.local)]);
    let rb = sync_vxlan(cb.handle(), &cfg_b, &[peer_of(&cfg_a)])
        .await
        .unwrap();
    assert_eq!(rb.device, DeviceChange::Created);

    // What the kernel holds, seen by iproute2.
    let link = &ip_json(&a.name, &["-d", "link", "show", "dev", DEV])[0];
    assert_eq!(link["address"], mac_str(cfg_a.mac));
    assert_eq!(link["mtu"], 1450);
    assert_eq!(link["linkinfo"]["info_kind"], "vxlan");
    let info = &link["linkinfo"]["info_data"];
    assert_eq!(info["id"], 1);
    assert_eq!(info["port"], 8472);
    assert_eq!(info["local"], "10.251.1.2");
    assert_eq!(info["learning"], false);
    let addrs = ip_json(&a.name, &["-4", "addr", "show", "dev", DEV]);
    let addrs: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
        .collect();
    assert_eq!(addrs, vec!["10.244.1.0/32"]);
    assert_eq!(
        overlay_routes(&a.name),
        vec![format!("10.244.2.0/24 via 10.244.2.0 dev {DEV} onlink")]
    );
    assert_eq!(
        neighbours(&a.name),
        vec![format!("10.244.2.0 {}", mac_str(cfg_b.mac))]
    );
    assert_eq!(
        fdb(&a.name),
        vec![(mac_str(cfg_b.mac), "10.251.2.2".to_string(), true)]
    );

    // Pod address to pod address, both ways; then bulk TCP (segments at
    // the overlay MTU) from a node-originated socket (source: the
    // device's 10.244.1.0).
    assert!(udp_round_trip(a.ns(), from, b.ns(), to));
    assert!(udp_round_trip(b.ns(), to, a.ns(), from));
    let (n, seen) = tcp_bulk(
        a.ns(),
        b.ns(),
        (Ipv4Addr::new(10, 244, 2, 1), 7203).into(),
        4 << 20,
    );
    assert_eq!(n, 4 << 20);
    assert_eq!(seen.ip(), Ipv4Addr::new(10, 244, 1, 0));

    // Idempotent: nothing written.
    let again = sync_vxlan(ca.handle(), &cfg_a, &[peer_of(&cfg_b)])
        .await
        .unwrap();
    assert!(!again.changed(), "{again:?}");
    assert_eq!(
        (
            again.routes.unchanged,
            again.neighbours.unchanged,
            again.fdb.unchanged
        ),
        (1, 1, 1)
    );

    // host-gw sync does not delete overlay routes, nor the overlay host-gw's.
    let hg = sync_node_routes(ca.handle(), &[hostgw_other], RouteOwner::default())
        .await
        .unwrap();
    assert!(hg.removed.is_empty(), "{hg:?}");
    assert_eq!(overlay_routes(&a.name).len(), 1);
    let hostgw_routes = ip_json(
        &a.name,
        &["route", "show", "proto", &HERD_ROUTE_PROTOCOL.to_string()],
    );
    assert_eq!(
        hostgw_routes.as_array().unwrap().len(),
        1,
        "{hostgw_routes}"
    );

    // A third node c appears, then moves, then leaves.
    let mut c = VxlanPeer {
        pod_cidr: "10.244.3.0/24".parse().unwrap(),
        node_ip: Ipv4Addr::new(10, 251, 3, 2),
        mac: vtep_mac("node-c"),
    };
    let r = sync_vxlan(ca.handle(), &cfg_a, &[peer_of(&cfg_b), c])
        .await
        .unwrap();
    assert_eq!(
        (
            r.routes.added.len(),
            r.neighbours.added.len(),
            r.fdb.added.len()
        ),
        (1, 1, 1)
    );
    assert_eq!(overlay_routes(&a.name).len(), 2);
    c.node_ip = Ipv4Addr::new(10, 251, 3, 9);
    let r = sync_vxlan(ca.handle(), &cfg_a, &[peer_of(&cfg_b), c])
        .await
        .unwrap();
    assert_eq!(r.fdb.removed, vec![(c.mac, Ipv4Addr::new(10, 251, 3, 2))]);
    assert_eq!(r.fdb.added, vec![(c.mac, c.node_ip)]);
    assert!(r.routes.is_empty() && r.neighbours.is_empty(), "{r:?}");
    assert!(fdb(&a.name).contains(&(mac_str(c.mac), "10.251.3.9".into(), true)));
    let r = sync_vxlan(ca.handle(), &cfg_a, &[peer_of(&cfg_b)])
        .await
        .unwrap();
    assert_eq!(r.routes.removed, vec![c.pod_cidr]);
    assert_eq!(r.neighbours.removed, vec![Ipv4Addr::new(10, 244, 3, 0)]);
    assert_eq!(r.fdb.removed, vec![(c.mac, c.node_ip)]);
    assert_eq!(overlay_routes(&a.name).len(), 1);
    assert_eq!(neighbours(&a.name).len(), 1);
    assert_eq!(fdb(&a.name).len(), 1);
    assert!(udp_round_trip(a.ns(), from, b.ns(), to));

    // MAC, MTU, a stray address and the down flag are fixed in place; a
    // too large MTU is refused.
    let small = VxlanConfig {
        mtu: Some(1400),
        mac: vtep_mac("node-a2"),
        ..cfg_a.clone()
    };
    ip(&a.name, &["addr", "add", "10.244.1.9/32", "dev", DEV]);
    ip(&a.name, &["link", "set", DEV, "down"]);
    let r = sync_vxlan(ca.handle(), &small, &[peer_of(&cfg_b)])
        .await
        .unwrap();
    assert_eq!(
        r.device,
        DeviceChange::Updated(vec!["mac", "mtu", "up", "address"])
    );
    // Down flushed the routes; they are back.
    assert_eq!(r.routes.added, vec![cfg_b.pod_cidr]);
    let link = &ip_json(&a.name, &["link", "show", "dev", DEV])[0];
    assert_eq!(link["mtu"], 1400);
    assert_eq!(link["address"], mac_str(small.mac));
    let addrs = ip_json(&a.name, &["-4", "addr", "show", "dev", DEV]);
    assert_eq!(
        addrs[0]["addr_info"].as_array().unwrap().len(),
        1,
        "{addrs}"
    );
    let r = sync_vxlan(ca.handle(), &cfg_a, &[peer_of(&cfg_b)])
        .await
        .unwrap();
    assert_eq!(r.device, DeviceChange::Updated(vec!["mac", "mtu"]));
    assert!(udp_round_trip(a.ns(), from, b.ns(), to));
    let big = VxlanConfig {
        mtu: Some(1451),
        ..cfg_a.clone()
    };
    let err = sync_vxlan(ca.handle(), &big, &[peer_of(&cfg_b)])
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::InvalidConfig(_)), "{err}");

    // Another VNI on both ends: the devices are recreated with their
    // entries, and traffic flows again.
    let (a2, b2) = (
        VxlanConfig {
            vni: 42,
            ..cfg_a.clone()
        },
        VxlanConfig {
            vni: 42,
            ..cfg_b.clone()
        },
    );
    let r = sync_vxlan(ca.handle(), &a2, &[peer_of(&b2)]).await.unwrap();
    assert!(
        matches!(r.device, DeviceChange::Recreated(ref why) if why.contains("vni")),
        "{r:?}"
    );
    assert_eq!(r.mtu, 1450);
    assert_eq!(
        (
            r.routes.added.len(),
            r.neighbours.added.len(),
            r.fdb.added.len()
        ),
        (1, 1, 1)
    );
    // Only a has moved: b's VNI 1 frames are dropped by a.
    assert!(!udp_round_trip(a.ns(), from, b.ns(), to));
    sync_vxlan(cb.handle(), &b2, &[peer_of(&a2)]).await.unwrap();
    assert!(udp_round_trip(a.ns(), from, b.ns(), to));
    let link = &ip_json(&a.name, &["-d", "link", "show", "dev", DEV])[0];
    assert_eq!(link["linkinfo"]["info_data"]["id"], 42);

    // Removal deletes the device and its routes; again is a no-op.
    remove_vxlan(ca.handle(), DEV).await.unwrap();
    assert!(!ip_link_exists(&a.name, DEV));
    assert!(overlay_routes(&a.name).is_empty());
    remove_vxlan(ca.handle(), DEV).await.unwrap();
    assert!(!udp_round_trip(a.ns(), from, b.ns(), to));
}

#[tokio::test]
async fn bad_input_is_refused_before_any_change() {
    if !root_or_skip("bad_input_is_refused_before_any_change") {
        return;
    }
    let t = topology();
    let a = &t.a;
    let ca = connect_in(Some(a.ns())).await.unwrap();
    let good = cfg([10, 251, 1, 2], "node-a", "10.244.1.0/24");
    let b = peer_of(&cfg([10, 251, 2, 2], "node-b", "10.244.2.0/24"));
    let with = |f: fn(&mut VxlanConfig)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let peer = |f: fn(&mut VxlanPeer)| {
        let mut p = b;
        f(&mut p);
        p
    };
    let cases: Vec<(VxlanConfig, Vec<VxlanPeer>, &str)> = vec![
        (with(|c| c.vni = 0), vec![b], "vni 0"),
        (with(|c| c.vni = MAX_VNI + 1), vec![b], "vni 16777216"),
        (
            with(|c| c.name = "much-too-long-name".into()),
            vec![b],
            "IFNAMSIZ",
        ),
        (with(|c| c.name = "a/b".into()), vec![b], "'/'"),
        (with(|c| c.port = 0), vec![b], "port 0"),
        (
            with(|c| c.local = [10, 251, 9, 9].into()),
            vec![b],
            "not assigned",
        ),
        (with(|c| c.mtu = Some(9000)), vec![b], "does not fit"),
        (
            good.clone(),
            vec![peer(|p| p.pod_cidr = "10.244.0.0/16".parse().unwrap())],
            "overlap",
        ),
        (
            good.clone(),
            vec![b, peer(|p| p.pod_cidr = "10.244.3.0/24".parse().unwrap())],
            "vtep mac",
        ),
        (
            good.clone(),
            vec![peer(|p| p.mac = [0xff; 6])],
            "unicast MAC",
        ),
    ];
    for (c, peers, want) in cases {
        let err = sync_vxlan(ca.handle(), &c, &peers).await.unwrap_err();
        assert!(err.to_string().contains(want), "{want}: {err}");
        assert!(!ip_link_exists(&a.name, DEV), "{want}: device made");
    }
    let no_underlay = with(|c| c.local = [10, 251, 9, 9].into());
    let err = sync_vxlan(ca.handle(), &no_underlay, &[b])
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::VxlanUnderlay { .. }), "{err}");

    // A foreign route for a peer's CIDR: a conflict, nothing made.
    ip(
        &a.name,
        &["route", "add", "10.244.2.0/24", "via", "10.251.1.1"],
    );
    let err = sync_vxlan(ca.handle(), &good, &[b]).await.unwrap_err();
    assert!(matches!(err, NetError::RouteConflict { .. }), "{err}");
    assert!(!ip_link_exists(&a.name, DEV));
    ip(&a.name, &["route", "del", "10.244.2.0/24"]);

    // A link of another kind with our name is never touched.
    ip(&a.name, &["link", "add", DEV, "type", "bridge"]);
    let err = sync_vxlan(ca.handle(), &good, &[b]).await.unwrap_err();
    assert!(matches!(err, NetError::LinkConflict { .. }), "{err}");
    let err = remove_vxlan(ca.handle(), DEV).await.unwrap_err();
    assert!(matches!(err, NetError::LinkConflict { .. }), "{err}");
    assert!(ip_link_exists(&a.name, DEV));
    // Another VXLAN device already holds our VNI and port (a herd device
    // under an old name, say): the kernel allows one, so a clear conflict.
    ip(
        &a.name,
        &[
            "link", "add", "old.vx", "type", "vxlan", "id", "1", "dstport", "8472",
        ],
    );
    let renamed = VxlanConfig {
        name: "herd.vx2".into(),
        ..good.clone()
    };
    let err = sync_vxlan(ca.handle(), &renamed, &[b]).await.unwrap_err();
    assert!(matches!(err, NetError::LinkConflict { .. }), "{err}");
    assert!(err.to_string().contains("already uses vni 1"), "{err}");
    assert!(!ip_link_exists(&a.name, "herd.vx2"));
    let err = remove_vxlan(ca.handle(), "x/y").await.unwrap_err();
    assert!(matches!(err, NetError::InvalidName { .. }), "{err}");
}
