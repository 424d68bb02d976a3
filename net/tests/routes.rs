//! Root tests for host-gw node routes: two "nodes" (their own netns)
//! joined by a veth, each with a bridge (no ports) holding an address of its pod
//! CIDR. Nothing is configured in the root netns; every namespace is
//! deleted by exact name on drop (the veth and dummies go with them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::{NsGuard, ip, ip_json, root_or_skip};
use herd_net::{
    HERD_ROUTE_PROTOCOL, NetError, NetNs, NodeRoute, RouteOwner, connect_in, sync_node_routes,
};

/// Two nodes: a (192.168.77.1, pods 10.251.1.0/24) and b (192.168.77.2,
/// pods 10.251.2.0/24).
fn two_nodes() -> (NsGuard, NsGuard) {
    let a = NsGuard::new("hra");
    let b = NsGuard::new("hrb");
    ip(
        &a.name,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.name,
        ],
    );
    for (ns, host, pod) in [
        (&a, "192.168.77.1/24", "10.251.1.1/24"),
        (&b, "192.168.77.2/24", "10.251.2.1/24"),
    ] {
        ip(&ns.name, &["addr", "add", host, "dev", "eth0"]);
        ip(&ns.name, &["link", "set", "eth0", "up"]);
        ip(&ns.name, &["link", "add", "pods", "type", "bridge"]);
        ip(&ns.name, &["addr", "add", pod, "dev", "pods"]);
        ip(&ns.name, &["link", "set", "pods", "up"]);
        ip(&ns.name, &["link", "set", "lo", "up"]);
    }
    (a, b)
}

fn route(cidr: &str, via: &str) -> NodeRoute {
    NodeRoute {
        pod_cidr: cidr.parse().unwrap(),
        via: via.parse().unwrap(),
        dev: None,
    }
}

/// Send a datagram from `from` (in `src_ns`) to `to` (in `dst_ns`) and get
/// the echo back: needs a route in each direction.
fn udp_round_trip(src_ns: &NetNs, from: SocketAddr, dst_ns: &NetNs, to: SocketAddr) -> bool {
    let server = dst_ns.run(move || UdpSocket::bind(to)).unwrap().unwrap();
    let client = src_ns.run(move || UdpSocket::bind(from)).unwrap().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
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

fn herd_routes(ns: &str) -> Vec<String> {
    ip_json(
        ns,
        &["route", "show", "proto", &HERD_ROUTE_PROTOCOL.to_string()],
    )
    .as_array()
    .unwrap()
    .iter()
    .map(|r| {
        format!(
            "{} via {}",
            r["dst"].as_str().unwrap(),
            r["gateway"].as_str().unwrap()
        )
    })
    .collect()
}

#[tokio::test]
async fn pod_cidrs_reach_each_other_and_only_herd_routes_change() {
    if !root_or_skip("pod_cidrs_reach_each_other_and_only_herd_routes_change") {
        return;
    }
    let (a, b) = two_nodes();
    let ca = connect_in(Some(a.ns())).await.unwrap();
    let cb = connect_in(Some(b.ns())).await.unwrap();
    let from: SocketAddr = (Ipv4Addr::new(10, 251, 1, 1), 7101).into();
    let to: SocketAddr = (Ipv4Addr::new(10, 251, 2, 1), 7102).into();
    // Without routes the pod CIDRs cannot talk.
    assert!(!udp_round_trip(a.ns(), from, b.ns(), to));

    // A foreign route in a (proto boot, what `ip route add` makes) must survive.
    ip(
        &a.name,
        &["route", "add", "10.99.0.0/16", "via", "192.168.77.2"],
    );
    let owner = RouteOwner::default();
    let ra = sync_node_routes(
        ca.handle(),
        &[route("10.251.2.0/24", "192.168.77.2")],
        owner,
    )
    .await
    .unwrap();
    assert_eq!(ra.added, vec!["10.251.2.0/24".parse().unwrap()]);
    let rb = sync_node_routes(
        cb.handle(),
        &[route("10.251.1.0/24", "192.168.77.1")],
        owner,
    )
    .await
    .unwrap();
    assert_eq!(rb.added.len(), 1);
    assert_eq!(herd_routes(&a.name), vec!["10.251.2.0/24 via 192.168.77.2"]);
    assert!(udp_round_trip(a.ns(), from, b.ns(), to));

    // Idempotent.
    let again = sync_node_routes(
        ca.handle(),
        &[route("10.251.2.0/24", "192.168.77.2")],
        owner,
    )
    .await
    .unwrap();
    assert_eq!(again.unchanged, 1);
    assert!(again.added.is_empty() && again.replaced.is_empty() && again.removed.is_empty());

    // A changed gateway replaces the route (the node moved to .3).
    let moved = sync_node_routes(
        ca.handle(),
        &[route("10.251.2.0/24", "192.168.77.3")],
        owner,
    )
    .await
    .unwrap();
    assert_eq!(moved.replaced.len(), 1);
    assert_eq!(herd_routes(&a.name), vec!["10.251.2.0/24 via 192.168.77.3"]);

    // Removal deletes only ours; the foreign route stays.
    let gone = sync_node_routes(ca.handle(), &[], owner).await.unwrap();
    assert_eq!(gone.removed.len(), 1);
    assert!(herd_routes(&a.name).is_empty());
    let foreign = ip_json(&a.name, &["route", "show", "10.99.0.0/16"]);
    assert_eq!(foreign.as_array().unwrap().len(), 1, "{foreign}");
    assert!(!udp_round_trip(
        a.ns(),
        from,
        b.ns(),
        (Ipv4Addr::new(10, 251, 2, 1), 7103).into()
    ));
}

#[tokio::test]
async fn bad_routes_are_refused_before_any_change() {
    if !root_or_skip("bad_routes_are_refused_before_any_change") {
        return;
    }
    let (a, _b) = two_nodes();
    let ca = connect_in(Some(a.ns())).await.unwrap();
    let owner = RouteOwner::default();
    // Gateway off-link: needs VXLAN.
    let err = sync_node_routes(ca.handle(), &[route("10.251.2.0/24", "172.31.0.1")], owner)
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::GatewayNotDirect { .. }), "{err}");
    assert!(err.to_string().contains("vxlan"), "{err}");
    // Gateway on-link but on another device than asked.
    let mut on_dev = route("10.251.2.0/24", "192.168.77.2");
    on_dev.dev = Some("pods".into());
    let err = sync_node_routes(ca.handle(), &[on_dev], owner)
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::GatewayNotDirect { .. }), "{err}");
    // Unknown device, duplicate CIDR, reserved protocol.
    let mut no_dev = route("10.251.2.0/24", "192.168.77.2");
    no_dev.dev = Some("nope0".into());
    let err = sync_node_routes(ca.handle(), &[no_dev], owner)
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::LinkNotFound { .. }), "{err}");
    let dup = [
        route("10.251.2.0/24", "192.168.77.2"),
        route("10.251.2.0/24", "192.168.77.3"),
    ];
    let err = sync_node_routes(ca.handle(), &dup, owner)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    let static_owner = RouteOwner {
        protocol: 4,
        ..owner
    };
    let err = sync_node_routes(ca.handle(), &[], static_owner)
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::InvalidConfig(_)), "{err}");
    // A foreign route for the wanted CIDR is a conflict, not overwritten.
    ip(
        &a.name,
        &["route", "add", "10.251.2.0/24", "via", "192.168.77.2"],
    );
    let err = sync_node_routes(
        ca.handle(),
        &[route("10.251.2.0/24", "192.168.77.2")],
        owner,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, NetError::RouteConflict { .. }), "{err}");
    assert!(herd_routes(&a.name).is_empty());
}
