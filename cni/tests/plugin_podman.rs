//! herd-cni used by another runtime: Debian's podman 4.3, configured for
//! CNI, runs a busybox container on a conflist of `herd-cni` + the
//! reference `portmap` plugin. podman (and so the plugins) runs inside a node
//! netns created by the test (`nsenter --net`, which keeps the host's
//! cgroup mounts, unlike `ip netns exec`); its storage is a temp dir.
//!
//! This also covers libcni's config validation, which runs VERSION with
//! `CNI_NETNS=dummy` (herd-cni must ignore attachment variables there).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod plugin_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use herd_integration::ImageOpts;
use plugin_common::{TestNs, root_or_skip};

const IMAGE: &str = "herd.test/busybox:latest";

struct Podman<'a> {
    node: &'a TestNs,
    conf: std::path::PathBuf,
    root: std::path::PathBuf,
    runroot: std::path::PathBuf,
}

impl Podman<'_> {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.node.path_str()))
            .arg("podman")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force"]);
    }
}

#[test]
fn podman_runs_a_container_on_herd_cni() {
    if !root_or_skip("podman_runs_a_container_on_herd_cni") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_herd-cni"), bin.join("herd-cni")).unwrap();
    let netdir = dir.join("net.d");
    std::fs::create_dir_all(&netdir).unwrap();
    let bridge = plugin_common::unique("hpb");
    let ipam = dir.join("ipam");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0", "name": "herdpodman",
        "plugins": [
            {"type": "herd-cni", "bridge": bridge, "subnet": "10.78.0.0/24",
             "dataDir": ipam},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(netdir.join("10-herd.conflist"), conflist.to_string()).unwrap();
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\
             network_config_dir = \"{}\"\n[engine]\nruntime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
            bin.display(),
            netdir.display()
        ),
    )
    .unwrap();
    let archive = dir.join("busybox.tar");
    herd_integration::write_docker_archive(&archive, &ImageOpts::new(IMAGE)).unwrap();

    let node = TestNs::new("hpn");
    let podman = Podman {
        node: &node,
        conf,
        root: dir.join("root"),
        runroot: dir.join("runroot"),
    };
    podman.ok(&["load", "-i", archive.to_str().unwrap()]);
    // Explicit small rlimits: podman's defaults exceed what this host's
    // sandbox allows runc to set.
    let out = podman.ok(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1000:1000",
        "--network",
        "herdpodman",
        "-p",
        "18080:80",
        IMAGE,
        "sh",
        "-c",
        "ip -4 addr show eth0; ip route",
    ]);
    assert!(out.contains("inet 10.78.0."), "{out}");
    assert!(out.contains("default via 10.78.0.1"), "{out}");
    // The bridge is in the node netns, not the host's.
    assert!(node.ip(&["-br", "link", "show", &bridge]).contains(&bridge));
    // After --rm: podman ran DEL (address released) and deleted the netns,
    // so the kernel reaped the veth.
    let allocated = |p: &Path| {
        std::fs::read_dir(p.join("herdpodman"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(allocated(&ipam), 0, "address not released");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let links = node.ip(&["-br", "link"]);
        if !links.contains("veth") {
            break;
        }
        assert!(Instant::now() < deadline, "veth left in the node: {links}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
