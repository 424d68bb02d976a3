//! `herd-cni` chained with the reference `portmap` plugin through the
//! invoker (and, as the baseline, reference `bridge` + `portmap`): the
//! portMappings capability reaches portmap, its DNAT rule exists in the node
//! netns, traffic to the host port reaches the pod's listener (from the node
//! itself and from a client netns linked to the node), DEL cleans the rule. Everything runs in netns created by the test. Root only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod invoke_util;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_cni::invoke::{Attachment, CniInvoker, InvokerConfig, NetworkConfigList};
use invoke_util::{Netns, root_or_skip, unique};
use serde_json::{Value, json};

const REFERENCE_DIR: &str = "/usr/lib/cni";
const HOST_PORT: u16 = 18080;
const POD_PORT: u16 = 8080;

fn ready(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    let missing: Vec<&str> = [
        "/usr/lib/cni/portmap",
        "/usr/lib/cni/bridge",
        "/usr/sbin/iptables",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: missing {missing:?} (scripts/install-deps.sh)"
    );
    eprintln!("SKIP {test}: missing {missing:?}");
    false
}

fn herd_cni_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_herd-cni"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs the [first, portmap] chain for one pod and checks everything portmap promises.
async fn portmap_chain(first: Value, subnet_prefix: &str) {
    let node = Netns::new("hpn");
    let pod = Netns::new("hpp");
    let dir = tempfile::tempdir().unwrap();
    let network = unique("pm");
    let list = json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            first,
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    let net = NetworkConfigList::from_value(Path::new("portmap.conflist"), list).unwrap();
    let inv = CniInvoker::with_network(
        InvokerConfig {
            plugin_path: vec![herd_cni_dir(), PathBuf::from(REFERENCE_DIR)],
            cache_dir: dir.path().join("cache"),
            host_netns: Some(node.path()),
            timeout: Duration::from_secs(30),
            ..InvokerConfig::default()
        },
        net,
    )
    .unwrap();
    let mut a = Attachment::new("pm-pod", Some(&pod.path()), "eth0");
    a.runtime_config.insert(
        "portMappings".into(),
        json!([{"hostPort": HOST_PORT, "containerPort": POD_PORT, "protocol": "tcp"}]),
    );

    let result = inv.add(&a).await.unwrap();
    let addr = result["ips"][0]["address"].as_str().unwrap();
    assert!(addr.starts_with(subnet_prefix), "{result}");
    let pod_ip: Ipv4Addr = addr.split('/').next().unwrap().parse().unwrap();
    let gw: Ipv4Addr = result["ips"][0]["gateway"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // The DNAT rule, seen by iptables in the node netns.
    let nat = node.exec(&["iptables", "-t", "nat", "-S"]);
    let target = format!("--to-destination {pod_ip}:{POD_PORT}");
    assert!(nat.contains("CNI-HOSTPORT-DNAT"), "{nat}");
    assert!(
        nat.lines()
            .any(|l| l.contains(&target) && l.contains(&format!("--dport {HOST_PORT}"))),
        "no DNAT {HOST_PORT} -> {pod_ip}:{POD_PORT} in\n{nat}"
    );

    // Traffic from the node netns to <gateway>:hostPort reaches the pod's listener.
    let listener =
        pod.run(|| TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, POD_PORT))).unwrap());
    let client = node.run_detached(move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((gw, HOST_PORT)), Duration::from_secs(5))
                .unwrap();
        s.write_all(b"via hostPort").unwrap();
    });
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "via hostPort");
    client.join().unwrap();

    // And from another netns ("outside" the node), through PREROUTING: a
    // client netns linked to the node netns by a veth pair made inside them.
    let outside = Netns::new("hpc");
    let (vn, vc) = (unique("hvn"), unique("hvc"));
    node.ip(&[
        "link",
        "add",
        &vn,
        "type",
        "veth",
        "peer",
        "name",
        &vc,
        "netns",
        &outside.name,
    ]);
    node.ip(&["addr", "add", "192.168.77.1/30", "dev", &vn]);
    node.ip(&["link", "set", &vn, "up"]);
    outside.ip(&["addr", "add", "192.168.77.2/30", "dev", &vc]);
    outside.ip(&["link", "set", &vc, "up"]);
    let node_ip = Ipv4Addr::new(192, 168, 77, 1);
    let client = outside.run_detached(move || {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::from((node_ip, HOST_PORT)),
            Duration::from_secs(5),
        )
        .unwrap();
        s.write_all(b"from outside").unwrap();
    });
    let (mut conn, peer) = listener.accept().unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "from outside");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(Ipv4Addr::new(192, 168, 77, 2))
    );
    client.join().unwrap();

    // Debian's portmap 1.1.1 fails CHECK on IPv4-only pods by looking for an
    // ip6tables chain it never created (containernetworking/plugins#819);
    // the first plugin's CHECK passed if portmap is the one complaining.
    match inv.check(&a).await {
        Ok(()) => {}
        Err(e) => {
            let f = e.failure().unwrap_or_else(|| panic!("CHECK: {e}"));
            let msg = &f.reply.as_ref().unwrap_or_else(|| panic!("CHECK: {e}")).msg;
            assert!(
                f.plugin == "portmap" && msg.contains("ipv6 dnat"),
                "CHECK: {e}"
            );
        }
    }

    // DEL (portMappings come from the cache) removes the rule and the cache entry.
    inv.del(&Attachment::new("pm-pod", Some(&pod.path()), "eth0"))
        .await
        .unwrap();
    let nat = node.exec(&["iptables", "-t", "nat", "-S"]);
    assert!(!nat.contains(&target), "DNAT rule left after DEL:\n{nat}");
    assert!(inv.cached("pm-pod", "eth0").unwrap().is_none());
    inv.del(&a).await.unwrap();
}

#[tokio::test]
async fn reference_bridge_with_portmap() {
    if !ready("reference_bridge_with_portmap") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    portmap_chain(
        json!({
            "type": "bridge",
            "bridge": unique("hpb"),
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.213.0.0/24"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": dir.path().join("ipam"),
            }
        }),
        "10.213.0.",
    )
    .await;
}

#[tokio::test]
async fn herd_cni_with_portmap() {
    if !ready("herd_cni_with_portmap") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    portmap_chain(
        json!({
            "type": "herd-cni",
            "bridge": unique("hpb"),
            "subnet": "10.214.0.0/24",
            "dataDir": dir.path().join("state"),
        }),
        "10.214.0.",
    )
    .await;
}
