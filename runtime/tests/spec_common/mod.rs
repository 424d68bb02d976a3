//! Fixtures shared by the spec_* tests: a pod, a container, an image
//! config and a temp rootfs with /etc/passwd and /etc/group.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herd_runtime::spec::{
    NamespaceMode, SandboxFiles, SandboxNamespaces, SpecError, SpecInputs, build_spec,
};
use herd_runtime::types::*;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{LinuxResources, Spec};

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

pub fn image(config: serde_json::Value) -> ImageConfiguration {
    serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": config,
    }))
    .unwrap()
}

pub fn sandbox() -> PodSandboxConfig {
    PodSandboxConfig {
        init_containers: vec![],
        uid: "u1".into(),
        name: "web".into(),
        namespace: "default".into(),
        hostname: "web-0".into(),
        namespaces: NamespaceOptions::default(),
        containers: vec![],
        pids_limit: None,
        shm_size_bytes: 64 << 20,
        dns: DnsConfig::default(),
        host_aliases: vec![],
        sysctls: BTreeMap::new(),
        pod_ip: None,
    }
}

pub fn container() -> ContainerConfig {
    ContainerConfig {
        name: "app".into(),
        attempt: 0,
        image: "busybox".into(),
        command: vec![],
        args: vec![],
        working_dir: None,
        env: vec![],
        mounts: vec![],
        resources: ContainerResources::default(),
        security: SecurityContext::default(),
        tty: false,
        stdin: false,
        log: LogLimits::default(),
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub sandbox: PodSandboxConfig,
    pub container: ContainerConfig,
    pub image: ImageConfiguration,
    pub ns: SandboxNamespaces,
    pub files: SandboxFiles,
    pub cgroup_v2: bool,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:100::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\nusers:x:100:alice\nalice:x:1000:\nwheel:x:10:alice,bob\n",
        )
        .unwrap();
        let p = dir.path().to_path_buf();
        Fixture {
            sandbox: sandbox(),
            container: container(),
            image: image(serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin", "A=1"]})),
            ns: SandboxNamespaces {
                network: NamespaceMode::Join(PathBuf::from("/run/netns/x")),
                ipc: NamespaceMode::Join(PathBuf::from("/run/ipc/x")),
                uts: NamespaceMode::New,
                pid: NamespaceMode::New,
            },
            files: SandboxFiles {
                hosts: p.join("hosts"),
                hostname: p.join("hostname"),
                resolv_conf: p.join("resolv.conf"),
                shm: Some(p.join("shm")),
            },
            cgroup_v2: false,
            dir,
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn build(&self) -> Result<Spec, SpecError> {
        let rootfs = self.rootfs();
        build_spec(&SpecInputs {
            sandbox: &self.sandbox,
            container: &self.container,
            image_config: &self.image,
            rootfs: &rootfs,
            namespaces: &self.ns,
            files: &self.files,
            cgroups_path: "/herd/pod1/app",
            resources: LinuxResources::default(),
            oom_score_adj: 999,
            cgroup_v2: self.cgroup_v2,
        })
    }
}

pub fn find_mount<'a>(spec: &'a Spec, dest: &str) -> &'a oci_spec::runtime::Mount {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(dest))
        .unwrap_or_else(|| panic!("no mount at {dest}"))
}
