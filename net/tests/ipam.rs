//! IPAM on temp dirs (no root needed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use herd_net::{Ipam, NetError};
use ipnet::Ipv4Net;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn skips_network_gateway_broadcast_and_exhausts() {
    let dir = tempfile::tempdir().unwrap();
    // /29: network .0, gateway .1, broadcast .7 -> .2..=.6 allocatable.
    let ipam = Ipam::open(dir.path(), net("10.0.0.0/29"), ip("10.0.0.1")).unwrap();
    let mut got = Vec::new();
    for i in 0..5 {
        got.push(ipam.allocate(&format!("c{i}"), "eth0").unwrap());
    }
    let want: Vec<Ipv4Addr> = (2..=6).map(|n| Ipv4Addr::new(10, 0, 0, n)).collect();
    assert_eq!(got, want);
    let err = ipam.allocate("c5", "eth0").unwrap_err();
    assert!(matches!(err, NetError::Exhausted { .. }), "{err}");
    assert!(err.to_string().contains("10.0.0.0/29"));
    // Existing owners still get their address when full.
    assert_eq!(ipam.allocate("c3", "eth0").unwrap(), ip("10.0.0.5"));
}

#[test]
fn gateway_in_the_middle_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = Ipam::open(dir.path(), net("10.0.0.0/29"), ip("10.0.0.3")).unwrap();
    let got: Vec<Ipv4Addr> = (0..5)
        .map(|i| ipam.allocate(&format!("c{i}"), "eth0").unwrap())
        .collect();
    assert!(!got.contains(&ip("10.0.0.3")));
    assert!(got.contains(&ip("10.0.0.1")));
}

#[test]
fn allocation_is_idempotent_per_owner_and_ifname() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = Ipam::open(dir.path(), net("10.0.1.0/24"), ip("10.0.1.1")).unwrap();
    let a = ipam.allocate("pod", "eth0").unwrap();
    assert_eq!(ipam.allocate("pod", "eth0").unwrap(), a);
    let b = ipam.allocate("pod", "eth1").unwrap();
    assert_ne!(a, b);
    assert_eq!(ipam.lookup("pod", "eth0").unwrap(), Some(a));
    assert_eq!(ipam.lookup("other", "eth0").unwrap(), None);
    let content = std::fs::read_to_string(dir.path().join(a.to_string())).unwrap();
    assert_eq!(content, "pod\neth0\n");
}

#[test]
fn round_robin_does_not_reuse_a_just_released_address() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = Ipam::open(dir.path(), net("10.0.2.0/29"), ip("10.0.2.1")).unwrap();
    let a = ipam.allocate("a", "eth0").unwrap();
    assert_eq!(ipam.release("a", "eth0").unwrap(), Some(a));
    assert_eq!(ipam.release("a", "eth0").unwrap(), None);
    let b = ipam.allocate("b", "eth0").unwrap();
    assert_ne!(a, b);
    assert_eq!(b, ip("10.0.2.3"));
    // Fill the rest; after wrapping the freed address comes back.
    for i in 0..3 {
        ipam.allocate(&format!("f{i}"), "eth0").unwrap();
    }
    assert_eq!(ipam.allocate("c", "eth0").unwrap(), a);
}

#[test]
fn concurrent_allocations_from_8_threads_are_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = Arc::new(Ipam::open(dir.path(), net("10.0.3.0/24"), ip("10.0.3.1")).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let ipam = Arc::clone(&ipam);
            std::thread::spawn(move || {
                (0..20)
                    .map(|i| ipam.allocate(&format!("t{t}-{i}"), "eth0").unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<Ipv4Addr> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 160);
    assert_eq!(distinct.len(), 160);
    assert!(!distinct.contains(&ip("10.0.3.1")));
    assert_eq!(ipam.allocations().unwrap().len(), 160);
}

#[test]
fn concurrent_allocations_from_separate_instances_are_distinct() {
    // Separate Ipam values over one dir behave like separate processes
    // (each call opens its own lock fd).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let ipam = Ipam::open(&path, net("10.0.4.0/28"), ip("10.0.4.1")).unwrap();
                ipam.allocate(&format!("p{t}"), "eth0").unwrap()
            })
        })
        .collect();
    let all: HashSet<Ipv4Addr> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(all.len(), 8);
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = {
        let ipam = Ipam::open(dir.path(), net("10.0.5.0/24"), ip("10.0.5.1")).unwrap();
        ipam.allocate("keep", "eth0").unwrap()
    };
    let ipam = Ipam::open(dir.path(), net("10.0.5.0/24"), ip("10.0.5.1")).unwrap();
    assert_eq!(ipam.lookup("keep", "eth0").unwrap(), Some(a));
    assert_eq!(ipam.allocate("keep", "eth0").unwrap(), a);
    // The cursor survived too: the next one follows `a`.
    let b = ipam.allocate("next", "eth0").unwrap();
    assert_eq!(u32::from(b), u32::from(a) + 1);
}

#[test]
fn retain_releases_dead_and_half_written_owners() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = Ipam::open(dir.path(), net("10.0.6.0/24"), ip("10.0.6.1")).unwrap();
    let live = ipam.allocate("live", "eth0").unwrap();
    ipam.allocate("dead", "eth0").unwrap();
    // A crash between O_EXCL create and write leaves an empty file.
    std::fs::write(dir.path().join("10.0.6.200"), "").unwrap();
    let released = ipam.retain(&|id, _| id == "live").unwrap();
    let mut ids: Vec<&str> = released.iter().map(|a| a.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["", "dead"]);
    let left = ipam.allocations().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].ip, live);
    assert!(ipam.retain(&|_, _| true).unwrap().is_empty());
}

#[test]
fn allocate_specific() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = Ipam::open(dir.path(), net("10.0.7.0/24"), ip("10.0.7.1")).unwrap();
    assert_eq!(
        ipam.allocate_specific("a", "eth0", ip("10.0.7.50"))
            .unwrap(),
        ip("10.0.7.50")
    );
    assert_eq!(
        ipam.allocate_specific("a", "eth0", ip("10.0.7.50"))
            .unwrap(),
        ip("10.0.7.50")
    );
    let taken = ipam
        .allocate_specific("b", "eth0", ip("10.0.7.50"))
        .unwrap_err();
    assert!(matches!(taken, NetError::AddressInUse { .. }), "{taken}");
    for bad in ["10.0.7.0", "10.0.7.1", "10.0.7.255", "10.0.8.5"] {
        let err = ipam.allocate_specific("c", "eth0", ip(bad)).unwrap_err();
        assert!(
            matches!(err, NetError::AddressNotAllocatable { .. }),
            "{bad}: {err}"
        );
    }
    // The owner of .50 cannot grab a second address for the same ifname.
    assert!(
        ipam.allocate_specific("a", "eth0", ip("10.0.7.51"))
            .is_err()
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    for (subnet, gw) in [
        ("10.0.0.0/31", "10.0.0.1"),
        ("10.0.0.0/24", "10.0.1.1"),
        ("10.0.0.0/24", "10.0.0.0"),
        ("10.0.0.0/24", "10.0.0.255"),
    ] {
        let err = Ipam::open(dir.path(), net(subnet), ip(gw)).unwrap_err();
        assert!(
            matches!(err, NetError::InvalidConfig(_)),
            "{subnet} {gw}: {err}"
        );
    }
    let ipam = Ipam::open(dir.path(), net("10.0.0.0/24"), ip("10.0.0.1")).unwrap();
    for (id, ifname) in [("", "eth0"), ("a", ""), ("a\nb", "eth0"), ("a", "e\0")] {
        let err = ipam.allocate(id, ifname).unwrap_err();
        assert!(
            matches!(err, NetError::InvalidName { .. }),
            "{id:?}/{ifname:?}: {err}"
        );
    }
    // Foreign files in the dir are ignored.
    std::fs::write(dir.path().join("README"), "x").unwrap();
    assert!(ipam.allocations().unwrap().is_empty());
}
