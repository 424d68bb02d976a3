//! herd-cni inside a chain with the reference plugins (root): after
//! `loopback` (herd-cni is not first: the previous result is kept and ours
//! appended) and before `portmap` (which consumes our result and forwards a
//! host port to the pod). Runs the plugins directly, as a runtime would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod plugin_common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use plugin_common::{TestNs, pod_env, root_or_skip, run_exe, run_plugin, unique};
use serde_json::{Value, json};

const CNI: &str = "/usr/lib/cni";

fn with(mut base: Value, k: &str, v: Value) -> Value {
    base[k] = v;
    base
}

#[test]
fn chained_after_loopback_and_before_portmap() {
    if !root_or_skip("chained_after_loopback_and_before_portmap") {
        return;
    }
    for p in ["loopback", "portmap"] {
        assert!(Path::new(CNI).join(p).exists(), "{CNI}/{p} missing");
    }
    let node = TestNs::new("hcn");
    let pod = TestNs::new("hcp");
    let dir = tempfile::tempdir().unwrap();
    let bridge = unique("hcb");
    let netns = pod.path_str();
    let id = "chain1";
    let base = json!({"cniVersion": "1.0.0", "name": "chainnet"});
    let lo_conf = with(base.clone(), "type", json!("loopback"));
    let herd_conf = json!({"cniVersion": "1.0.0", "name": "chainnet", "type": "herd-cni",
        "bridge": bridge, "subnet": "10.66.5.0/24", "dataDir": dir.path()});
    let pm_conf = json!({"cniVersion": "1.0.0", "name": "chainnet", "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]}});
    let add = pod_env("ADD", id, &netns, "eth0");

    let lo = run_exe(
        &Path::new(CNI).join("loopback"),
        &add,
        &lo_conf.to_string(),
        Some(&node.path),
    );
    let lo_res = lo.ok().json();

    let r = run_plugin(
        &add,
        &with(herd_conf.clone(), "prevResult", lo_res.clone()).to_string(),
        Some(&node.path),
    );
    let res = r.ok().json();
    let n_prev = lo_res["interfaces"].as_array().unwrap().len();
    let ifs = res["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), n_prev + 3, "{res}");
    assert_eq!(ifs[..n_prev], lo_res["interfaces"].as_array().unwrap()[..]);
    assert_eq!(ifs[n_prev + 2]["name"], "eth0");
    let ips = res["ips"].as_array().unwrap();
    let n_prev_ips = lo_res["ips"].as_array().map_or(0, Vec::len);
    assert_eq!(ips.len(), n_prev_ips + 1);
    let ours = &ips[n_prev_ips];
    assert_eq!(ours["interface"], n_prev + 2);
    let pod_ip: Ipv4Addr = ours["address"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap()
        .0
        .parse()
        .unwrap();

    let pm = run_exe(
        &Path::new(CNI).join("portmap"),
        &add,
        &with(pm_conf.clone(), "prevResult", res.clone()).to_string(),
        Some(&node.path),
    );
    let final_res = pm.ok().json();
    assert_eq!(final_res["ips"], res["ips"], "portmap passes our result on");

    // Traffic to the node's bridge address on the host port reaches the pod.
    let l = pod.run(move || TcpListener::bind((pod_ip, 8080)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"pong").unwrap();
    });
    let to: SocketAddr = "10.66.5.1:18080".parse().unwrap();
    let got = node.run(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
        b
    });
    assert_eq!(got, b"pong");
    server.join().unwrap();

    // CHECK down the chain with the final result, then DEL in reverse order.
    let check = pod_env("CHECK", id, &netns, "eth0");
    run_plugin(
        &check,
        &with(herd_conf.clone(), "prevResult", final_res.clone()).to_string(),
        Some(&node.path),
    )
    .ok();
    let del = pod_env("DEL", id, &netns, "eth0");
    run_exe(
        &Path::new(CNI).join("portmap"),
        &del,
        &with(pm_conf, "prevResult", final_res.clone()).to_string(),
        Some(&node.path),
    )
    .ok();
    run_plugin(
        &del,
        &with(herd_conf, "prevResult", final_res).to_string(),
        Some(&node.path),
    )
    .ok();
    run_exe(
        &Path::new(CNI).join("loopback"),
        &del,
        &lo_conf.to_string(),
        Some(&node.path),
    )
    .ok();
}
