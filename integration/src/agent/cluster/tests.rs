//! The fixture's namespace topology, without agents (root).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Cluster, ClusterOpts, GOSSIP_PORT};

/// Runs `f` on a thread inside the netns at `path`.
fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    let ns = std::fs::File::open(path).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

fn connects(from: &Path, to: SocketAddr) -> bool {
    in_netns(from, || {
        TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_ok()
    })
}

#[test]
fn topology_connects_nodes_partitions_and_is_removed() {
    if !crate::root_or_skip("topology_connects_nodes", "netns, veth, bridge") {
        return;
    }
    let c = Cluster::topology(Path::new("/bin/false"), "topo", 3, ClusterOpts::default()).unwrap();
    let paths: Vec<PathBuf> = c.node_ns.iter().map(|n| n.0.clone()).collect();
    let bridge = c.bridge_ns.0.clone();
    // A listener in node 2, reached from node 0 over the bridge.
    let to = SocketAddr::from((c.addr(2), 7443));
    let listener = in_netns(&paths[2], || TcpListener::bind(to).unwrap());
    // The first packet waits for ARP and the new bridge ports: poll.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !connects(&paths[0], to) {
        assert!(Instant::now() < deadline, "node 0 cannot reach node 2");
    }
    assert!(!connects(&paths[0], SocketAddr::from((c.addr(2), 7444))));
    // Partitioned: nothing gets through; healed: it does again.
    c.partition(2).unwrap();
    assert!(!connects(&paths[0], to), "partition let traffic through");
    c.heal(2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !connects(&paths[0], to) {
        assert!(Instant::now() < deadline, "no traffic after heal");
    }
    // Datagrams from the bridge netns arrive at a node, from .254.
    let udp = in_netns(&paths[1], || {
        std::net::UdpSocket::bind((c.addr(1), GOSSIP_PORT)).unwrap()
    });
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let sent = c
        .send_udp_from_bridge(SocketAddr::from((c.addr(1), GOSSIP_PORT)), &[b"x".to_vec()])
        .unwrap();
    assert_eq!(sent, 1);
    let mut buf = [0u8; 8];
    let (len, from) = udp.recv_from(&mut buf).unwrap();
    assert_eq!((len, from.ip()), (1, std::net::IpAddr::V4(c.bridge_addr())));
    drop((listener, udp));
    drop(c);
    for p in paths.iter().chain([&bridge]) {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}
