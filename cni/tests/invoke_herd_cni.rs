//! The `herd-cni` binary driven through the invoker at cniVersion 1.1.0,
//! inside a node netns created by the test: two pods reach each other, CHECK
//! and STATUS pass, GC releases a stale attachment (stale-cache DEL plus the
//! plugin's own GC), DEL frees the address. Also the reference
//! bridge+host-local pair under GC (1.0.0: stale-cache DELs only). Root only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod invoke_util;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_cni::invoke::{Attachment, CniInvoker, InvokerConfig, NetworkConfigList, ValidAttachment};
use invoke_util::{Netns, root_or_skip, unique};
use serde_json::{Value, json};

fn herd_cni_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_herd-cni"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Addresses allocated in a host-local style state dir (one file per IP).
fn allocated(dir: &Path) -> Vec<Ipv4Addr> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ips: Vec<Ipv4Addr> = entries
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    ips.sort();
    ips
}

fn ip_of(result: &Value) -> Ipv4Addr {
    let addr = result["ips"][0]["address"].as_str().unwrap();
    addr.split('/').next().unwrap().parse().unwrap()
}

fn invoker(node: &Netns, dir: &Path, list: Value) -> CniInvoker {
    CniInvoker::with_network(
        InvokerConfig {
            plugin_path: vec![herd_cni_dir(), PathBuf::from("/usr/lib/cni")],
            cache_dir: dir.join("cache"),
            host_netns: Some(node.path()),
            timeout: Duration::from_secs(30),
            ..InvokerConfig::default()
        },
        NetworkConfigList::from_value(Path::new("test.conflist"), list).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn herd_cni_pods_talk_and_gc_releases_stale_attachments() {
    if !root_or_skip("herd_cni_pods_talk_and_gc_releases_stale_attachments") {
        return;
    }
    let node = Netns::new("hhn");
    let (pod_a, pod_b) = (Netns::new("hha"), Netns::new("hhb"));
    let dir = tempfile::tempdir().unwrap();
    let network = unique("hc");
    let inv = invoker(
        &node,
        dir.path(),
        json!({
            "cniVersion": "1.1.0",
            "name": network,
            "plugins": [{
                "type": "herd-cni",
                "bridge": unique("hhb"),
                "subnet": "10.215.0.0/24",
                "dataDir": dir.path().join("state"),
            }]
        }),
    );
    let state = dir.path().join("state").join(&network);

    inv.status().await.unwrap();
    let a = Attachment::new("pod-a", Some(&pod_a.path()), "eth0");
    let b = Attachment::new("pod-b", Some(&pod_b.path()), "eth0");
    let ip_a = ip_of(&inv.add(&a).await.unwrap());
    let ip_b = ip_of(&inv.add(&b).await.unwrap());
    assert_ne!(ip_a, ip_b);
    assert_eq!(allocated(&state), {
        let mut v = vec![ip_a, ip_b];
        v.sort();
        v
    });

    // Pod A connects to a listener in pod B.
    let listener = pod_b.run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    let client = pod_a.run_detached(move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((ip_b, port)), Duration::from_secs(5))
                .unwrap();
        s.write_all(b"a to b").unwrap();
    });
    let (mut conn, peer) = listener.accept().unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(
        (got.as_str(), peer.ip()),
        ("a to b", std::net::IpAddr::V4(ip_a))
    );
    client.join().unwrap();

    inv.check(&a).await.unwrap();
    inv.check(&b).await.unwrap();

    // GC keeping only pod A: pod B's cached attachment is deleted, its address freed.
    let report = inv
        .gc(&[ValidAttachment {
            container_id: "pod-a".into(),
            ifname: "eth0".into(),
        }])
        .await
        .unwrap();
    assert!(report.plugins_gc);
    assert_eq!(report.deleted.len(), 1);
    assert_eq!(report.deleted[0].container_id, "pod-b");
    assert_eq!(allocated(&state), vec![ip_a]);
    assert!(inv.cached("pod-b", "eth0").unwrap().is_none());
    assert!(inv.cached("pod-a", "eth0").unwrap().is_some());

    inv.del(&a).await.unwrap();
    assert!(allocated(&state).is_empty(), "DEL frees the address");
    assert!(inv.cached("pod-a", "eth0").unwrap().is_none());
    inv.del(&a).await.unwrap();
}

#[tokio::test]
async fn gc_with_reference_plugins_deletes_stale_cached_attachments() {
    let test = "gc_with_reference_plugins_deletes_stale_cached_attachments";
    if !root_or_skip(test) {
        return;
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: reference plugins missing"
        );
        eprintln!("SKIP {test}: reference CNI plugins not installed");
        return;
    }
    let node = Netns::new("hgn");
    let pods = [Netns::new("hgp"), Netns::new("hgp")];
    let dir = tempfile::tempdir().unwrap();
    let network = unique("gc");
    let inv = invoker(
        &node,
        dir.path(),
        json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{
                "type": "bridge",
                "bridge": unique("hgb"),
                "isGateway": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.216.0.0/24"}]],
                    "dataDir": dir.path().join("ipam"),
                }
            }]
        }),
    );
    for (i, pod) in pods.iter().enumerate() {
        inv.add(&Attachment::new(
            &format!("gc-{i}"),
            Some(&pod.path()),
            "eth0",
        ))
        .await
        .unwrap();
    }
    let ipam = dir.path().join("ipam").join(&network);
    assert_eq!(allocated(&ipam).len(), 2);
    let report = inv.gc(&[]).await.unwrap();
    assert!(!report.plugins_gc, "1.0.0: plugins are not sent GC");
    assert_eq!(report.deleted.len(), 2);
    assert!(allocated(&ipam).is_empty(), "host-local released both");
    assert!(inv.cache().list(&network).unwrap().0.is_empty());
}
