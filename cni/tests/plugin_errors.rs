//! herd-cni binary: error paths and the verbs that need no network
//! namespace. Every error: exit 1, the spec's error JSON on stdout with the
//! spec's code, no panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod plugin_common;

use plugin_common::{Run, VERSIONS, pod_env, run_plugin};
use serde_json::{Value, json};

fn conf(version: &str, data_dir: &str) -> Value {
    json!({"cniVersion": version, "name": "errnet", "type": "herd-cni",
           "bridge": "herdtest0", "subnet": "10.77.0.0/24", "dataDir": data_dir})
}

fn run(env: &[(&str, &str)], stdin: &Value) -> Run {
    run_plugin(env, &stdin.to_string(), None)
}

#[test]
fn version_verb_in_every_version() {
    for v in VERSIONS {
        let r = run_plugin(
            &[("CNI_COMMAND", "VERSION")],
            &json!({"cniVersion": v}).to_string(),
            None,
        );
        let j = r.ok().json();
        assert_eq!(j["cniVersion"], v);
        assert_eq!(j["supportedVersions"], json!(VERSIONS));
        assert_eq!(j.as_object().unwrap().len(), 2);
    }
}

#[test]
fn missing_env_vars_are_code_4() {
    let dir = tempfile::tempdir().unwrap();
    let c = conf("1.0.0", dir.path().to_str().unwrap());
    let full = pod_env("ADD", "c1", "/run/netns/none", "eth0");
    for drop in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let env: Vec<_> = full.iter().copied().filter(|(k, _)| *k != drop).collect();
        let e = run(&env, &c).err(4);
        assert!(e["msg"].as_str().unwrap().contains(drop), "{e}");
        assert_eq!(e["cniVersion"], "1.0.0", "error in the config's version");
    }
    // Empty counts as missing; DEL without CNI_IFNAME too.
    let e = run(&[("CNI_COMMAND", "")], &c).err(4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_COMMAND"));
    run(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1")], &c).err(4);
    run(&[("CNI_COMMAND", "GC")], &conf("1.1.0", "/tmp")).err(4);
    run(&[("CNI_COMMAND", "BOGUS")], &c).err(4);
    let bad_id = pod_env("ADD", "-bad/id", "/run/netns/none", "eth0");
    run(&bad_id, &c).err(4);
    let bad_if = pod_env("ADD", "c1", "/run/netns/none", "a:b");
    run(&bad_if, &c).err(4);
}

#[test]
fn malformed_stdin_unknown_version_and_bad_values() {
    let env = pod_env("DEL", "c1", "", "eth0");
    for bad in [
        "",
        "{",
        "nul\u{0}l",
        "[1,2]",
        "\"str\"",
        "{\"cniVersion\": 1}",
    ] {
        let r = run_plugin(&env, bad, None);
        r.err(6);
    }
    let e = run(&env, &conf("0.2.0", "/tmp")).err(1);
    assert_eq!(e["cniVersion"], "1.1.0");
    run(&env, &conf("7.0.0", "/tmp")).err(1);
    let mut no_version = conf("1.0.0", "/tmp");
    no_version.as_object_mut().unwrap().remove("cniVersion");
    run(&env, &no_version).err(1);
    for v in VERSIONS {
        let mut c = conf(v, "/tmp");
        c["subnet"] = json!("10.77.0.0/99");
        let e = run(&env, &c).err(7);
        assert_eq!(e["cniVersion"], v, "error in the config's version");
        c["subnet"] = json!("fd00::/64");
        let e = run(&env, &c).err(2);
        assert!(e["msg"].as_str().unwrap().contains("subnet=fd00::/64"));
        c["subnet"] = json!("10.77.0.0/24");
        c["mtu"] = json!("wide");
        run(&env, &c).err(6);
        c["mtu"] = json!(1500);
        c["dataDir"] = json!("relative/dir");
        run(&env, &c).err(7);
    }
}

#[test]
fn verbs_refused_in_versions_that_lack_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let check = pod_env("CHECK", "c1", "/run/netns/none", "eth0");
    for v in ["0.3.0", "0.3.1"] {
        let e = run(&check, &conf(v, d)).err(1);
        assert_eq!(e["cniVersion"], v);
    }
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        run(&[("CNI_COMMAND", "STATUS")], &conf(v, d)).err(1);
        let mut c = conf(v, d);
        c["cni.dev/valid-attachments"] = json!([]);
        run(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")], &c).err(1);
    }
}

#[test]
fn del_of_unknown_container_succeeds_in_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for v in VERSIONS {
        // No netns at all, and a netns path that does not exist.
        let r = run(&pod_env("DEL", "nosuch", "", "eth0"), &conf(v, d));
        assert!(r.ok().stdout.is_empty());
        let r = run(
            &pod_env("DEL", "nosuch", "/run/netns/herd-cni-none", "eth0"),
            &conf(v, d),
        );
        assert!(r.ok().stdout.is_empty());
    }
}

#[test]
fn status_and_gc_without_network() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let r = run(&[("CNI_COMMAND", "STATUS")], &conf("1.1.0", d));
    assert!(r.ok().stdout.is_empty());
    let e = run(
        &[("CNI_COMMAND", "STATUS")],
        &conf("1.1.0", "/dev/null/herd"),
    )
    .err(50);
    assert!(e["msg"].as_str().unwrap().contains("not writable"), "{e}");
    let mut c = conf("1.1.0", d);
    let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")];
    run(&gc, &c).err(7);
    c["cni.dev/valid-attachments"] = json!([{"containerID": 5}]);
    run(&gc, &c).err(6);
    c["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    assert!(run(&gc, &c).ok().stdout.is_empty());
}

#[test]
fn check_needs_prev_result_and_known_container() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let env = pod_env("CHECK", "ghost", "/run/netns/herd-cni-none", "eth0");
    run(&env, &conf("1.0.0", d)).err(7);
    let mut c = conf("1.0.0", d);
    c["prevResult"] = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/herd-cni-none"}],
        "ips": [{"address": "10.77.0.9/24", "interface": 0}]});
    run(&env, &c).err(3);
    c["prevResult"] = json!({"cniVersion": "1.0.0", "ips": "nope"});
    run(&env, &c).err(6);
}

#[test]
fn add_into_a_missing_netns_is_unknown_container() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for v in VERSIONS {
        let env = pod_env("ADD", "c1", "/run/netns/herd-cni-none", "eth0");
        let e = run(&env, &conf(v, d)).err(3);
        assert_eq!(e["cniVersion"], v);
    }
    // It failed before any IPAM state was touched.
    assert!(!dir.path().join("errnet").exists());
}

#[test]
fn status_reports_exhaustion_and_gc_releases_stale_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut c = conf("1.1.0", d);
    c["subnet"] = json!("10.77.1.0/29");
    let ipam = herd_net::ipam::Ipam::open(
        &dir.path().join("errnet"),
        "10.77.1.0/29".parse().unwrap(),
        "10.77.1.1".parse().unwrap(),
    )
    .unwrap();
    // A /29 has 6 hosts, one is the gateway: 5 allocatable.
    for i in 0..5 {
        ipam.allocate(&format!("c{i}"), "eth0").unwrap();
    }
    let e = run(&[("CNI_COMMAND", "STATUS")], &c).err(50);
    assert!(
        e["msg"].as_str().unwrap().contains("no addresses left"),
        "{e}"
    );
    c["cni.dev/valid-attachments"] = json!([
        {"containerID": "c0", "ifname": "eth0"},
        {"containerID": "c3", "ifname": "eth0"},
        {"containerID": "c3", "ifname": "eth1"}
    ]);
    run(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")], &c).ok();
    let mut left: Vec<String> = ipam
        .allocations()
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    left.sort();
    assert_eq!(left, ["c0", "c3"]);
    run(&[("CNI_COMMAND", "STATUS")], &c).ok();
}
