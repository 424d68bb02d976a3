//! herd-cni binary against real netlink (root). A "node" netns per test
//! holds the bridge (the plugin process is setns'd into it before exec);
//! every pod has its own netns. Nothing is created in the root netns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod plugin_common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use plugin_common::{Run, TestNs, VERSIONS, pod_env, root_or_skip, run_plugin, unique};
use serde_json::{Value, json};

fn conf(version: &str, bridge: &str, subnet: &str, data_dir: &Path) -> Value {
    json!({"cniVersion": version, "name": "herdtest", "type": "herd-cni",
           "bridge": bridge, "subnet": subnet, "dataDir": data_dir,
           "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}})
}

fn plugin(node: &TestNs, env: &[(&str, &str)], stdin: &Value) -> Run {
    run_plugin(env, &stdin.to_string(), Some(&node.path))
}

fn is_mac(s: &str) -> bool {
    s.len() == 17
        && s.split(':').all(|b| {
            b.len() == 2
                && b.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
}

/// The ADD result, checked field by field against the spec for `version`.
fn check_add_result(r: &Value, version: &str, bridge: &str, pod: &TestNs, gw: &str) -> Ipv4Addr {
    let obj = r.as_object().unwrap();
    assert_eq!(r["cniVersion"], version);
    for k in obj.keys() {
        assert!(
            ["cniVersion", "interfaces", "ips", "routes", "dns"].contains(&k.as_str()),
            "{k}"
        );
    }
    let ifs = r["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3, "{r}");
    assert_eq!(ifs[0]["name"], bridge);
    assert!(is_mac(ifs[0]["mac"].as_str().unwrap()));
    assert!(ifs[0].get("sandbox").is_none());
    assert!(ifs[1]["name"].as_str().unwrap().starts_with("veth"));
    assert!(ifs[1].get("sandbox").is_none());
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], pod.path_str());
    assert!(is_mac(ifs[2]["mac"].as_str().unwrap()));
    assert_eq!(
        ifs[2].get("mtu").is_some(),
        version == "1.1.0",
        "mtu only in 1.1.0"
    );
    let ips = r["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 1);
    let ip = &ips[0];
    if version.starts_with("0.") {
        assert_eq!(ip["version"], "4", "0.3.x/0.4.0 ips carry version");
    } else {
        assert!(ip.get("version").is_none(), "1.x ips have no version");
    }
    assert_eq!(ip["gateway"], gw);
    assert_eq!(ip["interface"], 2);
    let addr = ip["address"].as_str().unwrap();
    assert!(addr.ends_with("/24"), "{addr}");
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": gw}]));
    assert_eq!(
        r["dns"],
        json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]})
    );
    // Independent view of the pod side.
    let shown = pod.ip(&["-j", "addr", "show", "eth0"]);
    let (a, _) = addr.split_once('/').unwrap();
    assert!(shown.contains(a), "{shown}");
    a.parse().unwrap()
}

fn with_prev(mut c: Value, prev: &Value) -> Value {
    c["prevResult"] = prev.clone();
    c
}

#[test]
fn every_verb_in_every_version() {
    if !root_or_skip("every_verb_in_every_version") {
        return;
    }
    let node = TestNs::new("hcn");
    let dir = tempfile::tempdir().unwrap();
    let bridge = unique("hcb");
    for (i, v) in VERSIONS.iter().copied().enumerate() {
        let pod = TestNs::new("hcp");
        let id = format!("ctr{i}v{}", v.replace('.', ""));
        let netns = pod.path_str();
        let c = conf(v, &bridge, "10.66.1.0/24", dir.path());
        let add = plugin(&node, &pod_env("ADD", &id, &netns, "eth0"), &c);
        let res = add.ok().json();
        check_add_result(&res, v, &bridge, &pod, "10.66.1.1");
        // A retried ADD is idempotent.
        let again = plugin(&node, &pod_env("ADD", &id, &netns, "eth0"), &c);
        assert_eq!(again.ok().json(), res, "ADD retry differs");

        let check = pod_env("CHECK", &id, &netns, "eth0");
        if v.starts_with("0.3") {
            plugin(&node, &check, &with_prev(c.clone(), &res)).err(1);
        } else {
            let r = plugin(&node, &check, &with_prev(c.clone(), &res));
            assert!(r.ok().stdout.is_empty());
        }

        let gc_conf = {
            let mut g = c.clone();
            g["cni.dev/valid-attachments"] = json!([{"containerID": id, "ifname": "eth0"}]);
            g
        };
        let gc_env = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")];
        if v == "1.1.0" {
            assert!(
                plugin(&node, &[("CNI_COMMAND", "STATUS")], &c)
                    .ok()
                    .stdout
                    .is_empty()
            );
            assert!(plugin(&node, &gc_env, &gc_conf).ok().stdout.is_empty());
            // GC kept the live attachment.
            plugin(&node, &check, &with_prev(c.clone(), &res)).ok();
        } else {
            plugin(&node, &[("CNI_COMMAND", "STATUS")], &c).err(1);
            plugin(&node, &gc_env, &gc_conf).err(1);
        }

        let del = pod_env("DEL", &id, &netns, "eth0");
        assert!(
            plugin(&node, &del, &with_prev(c.clone(), &res))
                .ok()
                .stdout
                .is_empty()
        );
        // DEL leaves the veth for the netns deletion to reap, but down and
        // without its address; with "deleteLink" it is gone at once.
        let links = pod.ip(&["-j", "link", "show", "eth0"]);
        assert!(
            links.contains("\"DOWN\""),
            "eth0 still up after DEL: {links}"
        );
        let addrs = pod.ip(&["-j", "-4", "addr", "show", "eth0"]);
        assert!(
            !addrs.contains("10.66.1."),
            "address kept after DEL: {addrs}"
        );
        let mut hard = c.clone();
        hard["deleteLink"] = json!(true);
        plugin(&node, &del, &hard).ok();
        let links = pod.ip(&["-j", "link", "show"]);
        assert!(!links.contains("\"eth0\""), "eth0 still in pod: {links}");
        plugin(&node, &del, &c).ok();
        if !v.starts_with("0.3") {
            plugin(&node, &check, &with_prev(c.clone(), &res)).err(3);
        }
    }
}

fn listen_in(ns: &TestNs, ip: Ipv4Addr) -> (TcpListener, SocketAddr) {
    let l = ns.run(move || TcpListener::bind((ip, 0)).unwrap());
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Connect from inside `from` to `to`; the peer accepts and echoes a byte.
fn reach(from: &TestNs, l: TcpListener, to: SocketAddr) {
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
    });
    from.run(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    });
    server.join().unwrap();
}

#[test]
fn two_pods_reach_each_other_and_the_node() {
    if !root_or_skip("two_pods_reach_each_other_and_the_node") {
        return;
    }
    let node = TestNs::new("hcn");
    let dir = tempfile::tempdir().unwrap();
    let bridge = unique("hcb");
    let c = conf("1.0.0", &bridge, "10.66.2.0/24", dir.path());
    let a = TestNs::new("hcp");
    let b = TestNs::new("hcp");
    let ra = plugin(&node, &pod_env("ADD", "poda", &a.path_str(), "eth0"), &c);
    let rb = plugin(&node, &pod_env("ADD", "podb", &b.path_str(), "eth0"), &c);
    let ip_of = |r: &Run| -> Ipv4Addr {
        let j = r.ok().json();
        let s = j["ips"][0]["address"].as_str().unwrap().to_string();
        s.split_once('/').unwrap().0.parse().unwrap()
    };
    let (ipa, ipb) = (ip_of(&ra), ip_of(&rb));
    assert_ne!(ipa, ipb);
    let (l, to) = listen_in(&b, ipb);
    reach(&a, l, to);
    let (l, to) = listen_in(&a, ipa);
    reach(&b, l, to);
    let (l, to) = listen_in(&node, "10.66.2.1".parse().unwrap());
    reach(&a, l, to);
    let (l, to) = listen_in(&a, ipa);
    reach(&node, l, to);
    for (id, ns) in [("poda", &a), ("podb", &b)] {
        plugin(&node, &pod_env("DEL", id, &ns.path_str(), "eth0"), &c).ok();
    }
}

#[test]
fn ip_masq_installs_masquerade_in_the_node_netns_only() {
    if !root_or_skip("ip_masq_installs_masquerade_in_the_node_netns_only") {
        return;
    }
    let node = TestNs::new("hcn");
    let pod = TestNs::new("hcp");
    let dir = tempfile::tempdir().unwrap();
    let bridge = unique("hcb");
    let mut c = conf("1.0.0", &bridge, "10.66.6.0/24", dir.path());
    c["ipMasq"] = json!(true);
    plugin(&node, &pod_env("ADD", "masq", &pod.path_str(), "eth0"), &c).ok();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &node.name, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        rules.contains("masquerade") && rules.contains("10.66.6.0/24"),
        "{rules}"
    );
    plugin(&node, &pod_env("DEL", "masq", &pod.path_str(), "eth0"), &c).ok();
}

#[test]
fn ipam_delegated_to_host_local() {
    if !root_or_skip("ipam_delegated_to_host_local") {
        return;
    }
    if !Path::new("/usr/lib/cni/host-local").exists() {
        panic!("/usr/lib/cni/host-local missing (containernetworking-plugins)");
    }
    let node = TestNs::new("hcn");
    let dir = tempfile::tempdir().unwrap();
    let hl_dir = dir.path().join("host-local");
    let bridge = unique("hcb");
    // host-local speaks up to 1.0.0.
    for (i, v) in ["0.3.1", "0.4.0", "1.0.0"].iter().enumerate() {
        let pod = TestNs::new("hcp");
        let id = format!("hl{i}");
        let c = json!({"cniVersion": v, "name": "hlnet", "type": "herd-cni",
            "bridge": bridge, "dataDir": dir.path(),
            "ipam": {"type": "host-local", "subnet": "10.66.3.0/24",
                     "gateway": "10.66.3.1", "dataDir": hl_dir}});
        let r = plugin(&node, &pod_env("ADD", &id, &pod.path_str(), "eth0"), &c);
        let j = r.ok().json();
        assert_eq!(j["cniVersion"], *v);
        assert_eq!(j["ips"][0]["gateway"], "10.66.3.1");
        assert_eq!(j["ips"][0]["interface"], 2);
        let addr = j["ips"][0]["address"].as_str().unwrap().to_string();
        let ip: Ipv4Addr = addr.split_once('/').unwrap().0.parse().unwrap();
        let lease = hl_dir.join("hlnet").join(ip.to_string());
        assert!(lease.exists(), "host-local lease file {}", lease.display());
        let (l, to) = listen_in(&pod, ip);
        reach(&node, l, to);
        if *v != "0.3.1" {
            let mut chk = c.clone();
            chk["prevResult"] = j.clone();
            plugin(&node, &pod_env("CHECK", &id, &pod.path_str(), "eth0"), &chk).ok();
        }
        plugin(&node, &pod_env("DEL", &id, &pod.path_str(), "eth0"), &c).ok();
        assert!(!lease.exists(), "host-local kept {}", lease.display());
    }
}

fn allocations(dir: &Path) -> Vec<herd_net::ipam::Allocation> {
    let ipam = herd_net::ipam::Ipam::open(
        &dir.join("herdtest"),
        "10.66.4.0/24".parse().unwrap(),
        "10.66.4.1".parse().unwrap(),
    )
    .unwrap();
    ipam.allocations().unwrap()
}

#[test]
fn crash_mid_add_then_retry_and_gc_leave_no_leak() {
    if !root_or_skip("crash_mid_add_then_retry_and_gc_leave_no_leak") {
        return;
    }
    let node = TestNs::new("hcn");
    let dir = tempfile::tempdir().unwrap();
    let bridge = unique("hcb");
    let c = conf("1.1.0", &bridge, "10.66.4.0/24", dir.path());
    let pod = TestNs::new("hcp");
    let ghost = TestNs::new("hcp");
    let crash = |id: &str, ns: &TestNs| {
        let path = ns.path_str();
        let mut env = pod_env("ADD", id, &path, "eth0");
        env.push(("HERD_NET_FAILPOINT", "after-allocate"));
        let r = plugin(&node, &env, &c);
        assert_eq!(r.code, None, "expected abort: {r:?}");
    };
    crash("live", &pod);
    crash("ghost", &ghost);
    let allocs = allocations(dir.path());
    assert_eq!(allocs.len(), 2, "both allocations durable before the crash");
    let live_ip = allocs.iter().find(|a| a.id == "live").unwrap().ip;

    // Retry: same address, no second allocation.
    let r = plugin(&node, &pod_env("ADD", "live", &pod.path_str(), "eth0"), &c);
    let j = r.ok().json();
    assert_eq!(j["ips"][0]["address"], format!("{live_ip}/24"));
    assert_eq!(allocations(dir.path()).len(), 2);

    // GC with only "live" valid releases the ghost's address.
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    plugin(
        &node,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
        &g,
    )
    .ok();
    let after = allocations(dir.path());
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!((after[0].id.as_str(), after[0].ip), ("live", live_ip));

    // A new pod never gets the live address.
    let other = TestNs::new("hcp");
    let r = plugin(
        &node,
        &pod_env("ADD", "other", &other.path_str(), "eth0"),
        &c,
    );
    assert_ne!(r.ok().json()["ips"][0]["address"], format!("{live_ip}/24"));
    for (id, ns) in [("live", &pod), ("other", &other), ("ghost", &ghost)] {
        plugin(&node, &pod_env("DEL", id, &ns.path_str(), "eth0"), &c).ok();
    }
    assert!(allocations(dir.path()).is_empty());
}

#[test]
fn concurrent_adds_on_a_fresh_node_get_distinct_addresses() {
    if !root_or_skip("concurrent_adds_on_a_fresh_node_get_distinct_addresses") {
        return;
    }
    let node = TestNs::new("hcn");
    let dir = tempfile::tempdir().unwrap();
    let bridge = unique("hcb");
    let c = conf("1.0.0", &bridge, "10.66.11.0/24", dir.path());
    let pods: Vec<TestNs> = (0..8).map(|_| TestNs::new("hcp")).collect();
    // All start before the bridge exists: they race to create it.
    let results: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, c) = (&node, &c);
                s.spawn(move || {
                    let id = format!("par{i}");
                    plugin(node, &pod_env("ADD", &id, &p.path_str(), "eth0"), c)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = results
        .iter()
        .map(|r| {
            r.ok().json()["ips"][0]["address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8, "{ips:?}");
    // A specific address through CNI_ARGS.
    let extra = TestNs::new("hcp");
    let p = extra.path_str();
    let mut env = pod_env("ADD", "pinned", &p, "eth0");
    env.push(("CNI_ARGS", "IgnoreUnknown=1;IP=10.66.11.77"));
    let r = plugin(&node, &env, &c);
    assert_eq!(r.ok().json()["ips"][0]["address"], "10.66.11.77/24");
    // The pinned address of a live pod cannot be taken by another one.
    let other = TestNs::new("hcp");
    let op = other.path_str();
    let mut env2 = pod_env("ADD", "thief", &op, "eth0");
    env2.push(("CNI_ARGS", "IP=10.66.11.77"));
    plugin(&node, &env2, &c).err(7);
    for (i, p) in pods.iter().enumerate() {
        plugin(
            &node,
            &pod_env("DEL", &format!("par{i}"), &p.path_str(), "eth0"),
            &c,
        )
        .ok();
    }
    plugin(&node, &pod_env("DEL", "pinned", &p, "eth0"), &c).ok();
}

#[test]
fn check_detects_drift_and_del_after_netns_removal_releases() {
    if !root_or_skip("check_detects_drift_and_del_after_netns_removal_releases") {
        return;
    }
    let node = TestNs::new("hcn");
    let dir = tempfile::tempdir().unwrap();
    let bridge = unique("hcb");
    let c = conf("1.0.0", &bridge, "10.66.12.0/24", dir.path());
    let mut pod = Some(TestNs::new("hcp"));
    let netns = pod.as_ref().unwrap().path_str();
    let res = plugin(&node, &pod_env("ADD", "drift", &netns, "eth0"), &c)
        .ok()
        .json();
    let check = pod_env("CHECK", "drift", &netns, "eth0");
    plugin(&node, &check, &with_prev(c.clone(), &res)).ok();
    // prevResult disagreeing with the IPAM record.
    let mut wrong = res.clone();
    wrong["ips"][0]["address"] = json!("10.66.12.200/24");
    plugin(&node, &check, &with_prev(c.clone(), &wrong)).err(103);
    // prevResult without our interface.
    let mut no_if = res.clone();
    no_if["interfaces"][2]["sandbox"] = json!("/run/netns/elsewhere");
    plugin(&node, &check, &with_prev(c.clone(), &no_if)).err(103);
    // The pod address removed behind our back.
    let addr = res["ips"][0]["address"].as_str().unwrap().to_string();
    pod.as_ref()
        .unwrap()
        .ip(&["addr", "del", &addr, "dev", "eth0"]);
    let e = plugin(&node, &check, &with_prev(c.clone(), &res)).err(103);
    assert!(
        e["msg"].as_str().unwrap().contains("pod network differs"),
        "{e}"
    );

    // The runtime deletes the netns first (fast teardown), then DELs.
    drop(pod.take());
    let links = node.ip(&["-j", "link", "show"]);
    let host_veth = res["interfaces"][1]["name"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while node.ip(&["-j", "link", "show"]).contains(&host_veth) {
        assert!(
            std::time::Instant::now() < deadline,
            "host veth lingers: {links}"
        );
        std::thread::yield_now();
    }
    plugin(&node, &pod_env("DEL", "drift", &netns, "eth0"), &c).ok();
    plugin(&node, &pod_env("DEL", "drift", "", "eth0"), &c).ok();
    assert!(allocations_in(dir.path(), "10.66.12.0/24").is_empty());
}

fn allocations_in(dir: &Path, subnet: &str) -> Vec<herd_net::ipam::Allocation> {
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let gw = std::net::Ipv4Addr::from(u32::from(net.network()) + 1);
    herd_net::ipam::Ipam::open(&dir.join("herdtest"), net, gw)
        .unwrap()
        .allocations()
        .unwrap()
}
