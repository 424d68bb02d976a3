//! The reference `bridge` + `host-local` plugins (Debian
//! containernetworking-plugins, /usr/lib/cni) driven through the invoker,
//! with every plugin run inside a node netns created by the test. Root only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod invoke_util;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herd_cni::invoke::{Attachment, CniInvoker, InvokeError, InvokerConfig, NetworkConfigList};
use invoke_util::{Netns, root_or_skip, unique};
use serde_json::{Value, json};

const REFERENCE_DIR: &str = "/usr/lib/cni";

struct Node {
    dir: tempfile::TempDir,
    bridge: String,
    network: String,
    inv: CniInvoker,
    // Dropped last: deleting the node netns takes the bridge and host veths with it.
    node: Netns,
}

impl Node {
    fn new(subnet: &str) -> Node {
        let node = Netns::new("hin");
        let dir = tempfile::tempdir().unwrap();
        let bridge = unique("hib");
        let network = unique("ref");
        let list = json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": dir.path().join("ipam"),
                }
            }]
        });
        let net = NetworkConfigList::from_value(Path::new("ref.conflist"), list).unwrap();
        let inv = CniInvoker::with_network(
            InvokerConfig {
                plugin_path: vec![PathBuf::from(REFERENCE_DIR)],
                cache_dir: dir.path().join("cache"),
                host_netns: Some(node.path()),
                timeout: Duration::from_secs(30),
                ..InvokerConfig::default()
            },
            net,
        )
        .unwrap();
        Node {
            dir,
            bridge,
            network,
            inv,
            node,
        }
    }

    fn ipam_file(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir
            .path()
            .join("ipam")
            .join(&self.network)
            .join(ip.to_string())
    }
}

fn pod_ip(result: &Value) -> (Ipv4Addr, u8, Ipv4Addr) {
    let ip = &result["ips"][0];
    let (addr, prefix) = ip["address"].as_str().unwrap().split_once('/').unwrap();
    (
        addr.parse().unwrap(),
        prefix.parse().unwrap(),
        ip["gateway"].as_str().unwrap().parse().unwrap(),
    )
}

fn have_reference_plugins(test: &str) -> bool {
    if Path::new(REFERENCE_DIR).join("bridge").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {REFERENCE_DIR}/bridge missing (scripts/install-deps.sh)"
    );
    eprintln!("SKIP {test}: reference CNI plugins not installed");
    false
}

#[tokio::test]
async fn bridge_host_local_pod_reaches_the_node_and_del_frees_the_address() {
    let test = "bridge_host_local_pod_reaches_the_node_and_del_frees_the_address";
    if !root_or_skip(test) || !have_reference_plugins(test) {
        return;
    }
    let n = Node::new("10.211.0.0/24");
    let pod = Netns::new("hip");
    let a = Attachment::new("pod-a", Some(&pod.path()), "eth0");

    let result = n.inv.add(&a).await.unwrap();
    let (ip, prefix, gw) = pod_ip(&result);
    assert_eq!((prefix, gw), (24, Ipv4Addr::new(10, 211, 0, 1)), "{result}");

    // Independent views: the pod has the address; the bridge is in the node
    // netns and not in the test's own.
    let addrs: Value = serde_json::from_str(&pod.ip(&["-j", "addr", "show", "eth0"])).unwrap();
    let local: Vec<&str> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["local"].as_str())
        .collect();
    assert!(local.contains(&ip.to_string().as_str()), "{addrs}");
    n.node.ip(&["link", "show", &n.bridge]);
    let here = Command::new("ip")
        .args(["link", "show", &n.bridge])
        .output()
        .unwrap();
    assert!(
        !here.status.success(),
        "bridge leaked into the caller's netns"
    );

    // A TCP listener in the node netns on the gateway is reachable from the pod.
    let listener = n
        .node
        .run(move || TcpListener::bind(SocketAddr::from((gw, 0))).unwrap());
    let port = listener.local_addr().unwrap().port();
    let client = pod.run_detached(move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((gw, port)), Duration::from_secs(5))
                .unwrap();
        s.write_all(b"hello from pod").unwrap();
        s.local_addr().unwrap()
    });
    let (mut conn, peer) = listener.accept().unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from pod");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(ip),
        "the pod connects from its own address"
    );
    client.join().unwrap();

    n.inv.check(&a).await.unwrap();
    assert!(n.ipam_file(ip).is_file(), "host-local holds the address");
    assert!(n.inv.cached("pod-a", "eth0").unwrap().is_some());

    n.inv.del(&a).await.unwrap();
    assert!(!n.ipam_file(ip).exists(), "DEL frees the address");
    assert!(
        n.inv.cached("pod-a", "eth0").unwrap().is_none(),
        "DEL drops the cache entry"
    );
    n.inv.del(&a).await.unwrap();
    // DEL without the netns (it may be gone) is fine too.
    n.inv
        .del(&Attachment::new("pod-a", None, "eth0"))
        .await
        .unwrap();
}

#[tokio::test]
async fn check_fails_when_the_pod_interface_is_gone() {
    let test = "check_fails_when_the_pod_interface_is_gone";
    if !root_or_skip(test) || !have_reference_plugins(test) {
        return;
    }
    let n = Node::new("10.212.0.0/24");
    let pod = Netns::new("hip");
    let a = Attachment::new("pod-b", Some(&pod.path()), "eth0");
    n.inv.add(&a).await.unwrap();
    n.inv.check(&a).await.unwrap();

    pod.ip(&["link", "del", "eth0"]);
    let err = n.inv.check(&a).await.unwrap_err();
    let InvokeError::PluginFailed(f) = &err else {
        panic!("expected PluginFailed, got {err:?}");
    };
    assert_eq!((f.plugin.as_str(), f.command), ("bridge", "CHECK"));
    let reply = f.reply.as_ref().expect("bridge prints an error JSON");
    assert!(
        reply.msg.contains("eth0") || reply.details.contains("eth0"),
        "{err}"
    );

    n.inv.del(&a).await.unwrap();
    assert!(n.inv.cached("pod-b", "eth0").unwrap().is_none());
}

#[tokio::test]
async fn plugins_run_in_the_host_netns() {
    let test = "plugins_run_in_the_host_netns";
    if !root_or_skip(test) {
        return;
    }
    let node = Netns::new("hin");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ns");
    invoke_util::script(
        &dir.path().join("bin"),
        "whereami",
        &format!(
            r#"if [ "$CNI_COMMAND" = VERSION ]; then echo '{{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}}'; exit 0; fi
readlink /proc/self/ns/net > {}
echo '{{"cniVersion":"1.0.0"}}'"#,
            out.display()
        ),
    );
    let net = NetworkConfigList::from_value(
        Path::new("t"),
        json!({"cniVersion": "1.0.0", "name": "where", "plugins": [{"type": "whereami"}]}),
    )
    .unwrap();
    let inv = CniInvoker::with_network(
        InvokerConfig {
            plugin_path: vec![dir.path().join("bin")],
            cache_dir: dir.path().join("cache"),
            host_netns: Some(node.path()),
            ..InvokerConfig::default()
        },
        net,
    )
    .unwrap();
    inv.add(&Attachment::new("c1", Some(&node.path()), "eth0"))
        .await
        .unwrap();
    let seen = std::fs::read_to_string(&out).unwrap();
    let want = node.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_eq!(seen.trim(), want.to_str().unwrap());
    assert_ne!(want, mine);
}
