//! Unit tests of OCI bundle generation, security side: capabilities,
//! privileged mode, read-only rootfs, seccomp, mounts, namespaces and
//! sysctls (no root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod spec_common;

use std::collections::HashSet;
use std::path::Path;

use herd_runtime::spec::{
    self, NamespaceMode, SpecError, default_capabilities, runtime_default_seccomp,
};
use herd_runtime::types::*;
use oci_spec::runtime::{Capability, LinuxNamespaceType, LinuxSeccompAction, Spec};
use spec_common::{Fixture, find_mount, s};

fn caps_of(spec: &Spec) -> HashSet<Capability> {
    let p = spec.process().as_ref().unwrap();
    let c = p.capabilities().as_ref().unwrap();
    assert_eq!(c.bounding(), c.effective());
    assert_eq!(c.permitted(), c.effective());
    assert!(c.inheritable().as_ref().unwrap().is_empty());
    assert!(c.ambient().as_ref().unwrap().is_empty());
    c.effective().clone().unwrap()
}

#[test]
fn capabilities_add_drop_all_unknown() {
    let mut f = Fixture::new();
    let default: HashSet<_> = default_capabilities().into_iter().collect();
    assert_eq!(default.len(), 14);
    assert_eq!(caps_of(&f.build().unwrap()), default);

    f.container.security.capabilities_add = s(&["net_admin", "CAP_SYS_TIME"]);
    f.container.security.capabilities_drop = s(&["Mknod"]);
    let got = caps_of(&f.build().unwrap());
    assert!(got.contains(&Capability::NetAdmin) && got.contains(&Capability::SysTime));
    assert!(!got.contains(&Capability::Mknod));
    assert_eq!(got.len(), 15);

    f.container.security.capabilities_add = s(&["NET_BIND_SERVICE"]);
    f.container.security.capabilities_drop = s(&["ALL"]);
    let got = caps_of(&f.build().unwrap());
    assert_eq!(got, HashSet::from([Capability::NetBindService]));

    f.container.security.capabilities_add = s(&["all"]);
    f.container.security.capabilities_drop = s(&["NET_RAW"]);
    let got = caps_of(&f.build().unwrap());
    let mut want: HashSet<_> = spec::current_capabilities().into_iter().collect();
    want.remove(&Capability::NetRaw);
    assert_eq!(got, want);

    f.container.security.capabilities_add = s(&["CAP_FLY"]);
    f.container.security.capabilities_drop = vec![];
    let err = f.build().unwrap_err();
    assert!(
        matches!(err, SpecError::UnknownCapability { ref name, .. } if name == "CAP_FLY"),
        "{err}"
    );
}

#[test]
fn default_vs_privileged() {
    let mut f = Fixture::new();
    let spec = f.build().unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.oom_score_adj(), Some(999));
    assert!(p.rlimits().is_none());
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_some());
    let masked = linux.masked_paths().as_ref().unwrap();
    assert!(masked.contains(&"/proc/kcore".to_string()) && masked.len() == 11);
    assert_eq!(linux.readonly_paths().as_ref().unwrap().len(), 5);
    let devs = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert!(!devs[0].allow() && devs[0].typ().is_none());
    assert!(devs[1..].iter().all(|d| d.allow()));
    let sys = find_mount(&spec, "/sys");
    assert!(sys.options().as_ref().unwrap().contains(&"ro".to_string()));
    assert_eq!(spec.hostname().as_deref(), Some("web-0"));
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/herd/pod1/app"))
    );

    // CAP_SYS_ADMIN flips the allowPrivilegeEscalation default.
    f.container.security.capabilities_add = s(&["SYS_ADMIN"]);
    let spec = f.build().unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().no_new_privileges(),
        Some(false)
    );
    let sc = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
    assert!(allowed_names(&sc).contains("mount"));

    f.container.security = SecurityContext {
        privileged: true,
        ..Default::default()
    };
    let spec = f.build().unwrap();
    let current: HashSet<_> = spec::current_capabilities().into_iter().collect();
    assert_eq!(caps_of(&spec), current);
    assert!(current.len() >= 14);
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.no_new_privileges(), Some(false));
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none());
    let devs = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(devs.len(), 1);
    assert!(devs[0].allow() && devs[0].access().as_deref() == Some("rwm"));
    let host = linux.devices().as_ref().unwrap();
    assert!(host.iter().any(|d| d.path() == Path::new("/dev/null")));
    let sys = find_mount(&spec, "/sys");
    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
}

#[test]
fn readonly_rootfs_and_etc_files() {
    let mut f = Fixture::new();
    f.container.security.read_only_root_filesystem = true;
    let spec = f.build().unwrap();
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    assert_eq!(spec.root().as_ref().unwrap().path(), &f.rootfs());
    for dest in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
        let m = find_mount(&spec, dest);
        assert!(
            m.options().as_ref().unwrap().contains(&"ro".to_string()),
            "{dest}"
        );
    }
    let shm = find_mount(&spec, "/dev/shm");
    assert_eq!(
        shm.source().as_deref(),
        Some(f.dir.path().join("shm").as_path())
    );
}

fn allowed_names(sc: &oci_spec::runtime::LinuxSeccomp) -> HashSet<String> {
    sc.syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
        .flat_map(|r| r.names().clone())
        .collect()
}

#[test]
fn seccomp_profile_sanity() {
    let sc = runtime_default_seccomp();
    assert_eq!(sc.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(sc.default_errno_ret(), Some(1));
    let names = allowed_names(&sc);
    for n in [
        "read",
        "write",
        "exit_group",
        "execve",
        "openat",
        "futex",
        "socket",
    ] {
        assert!(names.contains(n), "{n} missing");
    }
    for n in [
        "kexec_load",
        "mount",
        "unshare",
        "setns",
        "reboot",
        "init_module",
        "bpf",
    ] {
        assert!(!names.contains(n), "{n} allowed");
    }
    if cfg!(target_arch = "x86_64") {
        assert!(names.contains("arch_prctl"));
        // Docker's list without x32 (see the seccomp module's docs).
        assert_eq!(
            sc.architectures().as_ref().unwrap(),
            &vec![
                oci_spec::runtime::Arch::ScmpArchX86_64,
                oci_spec::runtime::Arch::ScmpArchX86
            ]
        );
    }
    // clone is allowed only with a namespace-flag mask; clone3 gets ENOSYS.
    let rules = sc.syscalls().as_ref().unwrap();
    let clone = rules.iter().find(|r| r.names() == &s(&["clone"])).unwrap();
    assert_eq!(clone.args().as_ref().unwrap()[0].value(), 0x7E02_0000);
    let clone3 = rules.iter().find(|r| r.names() == &s(&["clone3"])).unwrap();
    assert_eq!(clone3.errno_ret(), Some(38));
}

#[test]
fn seccomp_unconfined_and_localhost() {
    let mut f = Fixture::new();
    f.container.security.seccomp = SeccompProfile::Unconfined;
    assert!(
        f.build()
            .unwrap()
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .is_none()
    );

    let path = f.dir.path().join("profile.json");
    std::fs::write(
        &path,
        r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    f.container.security.seccomp = SeccompProfile::Localhost(path.clone());
    let spec = f.build().unwrap();
    let sc = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
    assert_eq!(sc.default_action(), LinuxSeccompAction::ScmpActLog);

    std::fs::write(&path, "{not json").unwrap();
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::SeccompParse { .. }));
    assert!(err.to_string().contains("profile.json"), "{err}");
    f.container.security.seccomp = SeccompProfile::Localhost(f.dir.path().join("missing.json"));
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::SeccompRead { .. }));
    assert!(err.to_string().contains("missing.json"), "{err}");
}

#[test]
fn mount_list() {
    let mut f = Fixture::new();
    f.container.mounts = vec![
        Mount {
            host_path: "/data".into(),
            container_path: "/data/".into(),
            read_only: true,
            propagation: MountPropagation::HostToContainer,
        },
        Mount {
            host_path: "/my/hosts".into(),
            container_path: "/etc/hosts".into(),
            read_only: false,
            propagation: MountPropagation::Private,
        },
    ];
    let spec = f.build().unwrap();
    let dests: Vec<String> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        dests,
        s(&[
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/shm",
            "/etc/hostname",
            "/etc/resolv.conf",
            "/data",
            "/etc/hosts"
        ])
    );
    let data = find_mount(&spec, "/data");
    assert_eq!(
        data.options().as_ref().unwrap(),
        &s(&["rbind", "rslave", "ro"])
    );
    assert_eq!(data.typ().as_deref(), Some("bind"));
    assert_eq!(
        find_mount(&spec, "/etc/hosts").source().as_deref(),
        Some(Path::new("/my/hosts"))
    );
    let pts = find_mount(&spec, "/dev/pts");
    assert!(
        pts.options()
            .as_ref()
            .unwrap()
            .contains(&"ptmxmode=0666".to_string())
    );
    assert_eq!(
        spec.linux()
            .as_ref()
            .unwrap()
            .rootfs_propagation()
            .as_deref(),
        Some("rslave")
    );

    for bad in ["relative/x", "/a/../etc", "/"] {
        f.container.mounts = vec![Mount {
            host_path: "/x".into(),
            container_path: bad.into(),
            read_only: false,
            propagation: MountPropagation::Private,
        }];
        let err = f.build().unwrap_err();
        assert!(matches!(err, SpecError::BadMount { .. }), "{bad}: {err}");
    }
    f.container.mounts = vec![Mount {
        host_path: "relative".into(),
        container_path: "/x".into(),
        read_only: false,
        propagation: MountPropagation::Private,
    }];
    assert!(matches!(f.build(), Err(SpecError::BadMount { .. })));

    // Parents mount before children whatever the order given.
    let bind = |dest: &str| Mount {
        host_path: "/h".into(),
        container_path: dest.into(),
        read_only: false,
        propagation: MountPropagation::Private,
    };
    f.container.mounts = vec![bind("/a/b/c"), bind("/z"), bind("/a")];
    let spec = f.build().unwrap();
    let tail: Vec<_> = spec.mounts().as_ref().unwrap()[10..]
        .iter()
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect();
    assert_eq!(tail, s(&["/z", "/a", "/a/b/c"]));
}

#[test]
fn namespaces_and_sysctls() {
    let mut f = Fixture::new();
    f.cgroup_v2 = true;
    f.ns.pid = NamespaceMode::Host;
    f.sandbox
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "1".into());
    let spec = f.build().unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let ns = linux.namespaces().as_ref().unwrap();
    let types: Vec<_> = ns.iter().map(|n| n.typ()).collect();
    use LinuxNamespaceType::*;
    assert_eq!(types, vec![Network, Ipc, Uts, Mount, Cgroup]);
    assert_eq!(ns[0].path().as_deref(), Some(Path::new("/run/netns/x")));
    assert!(ns[2].path().is_none());
    assert_eq!(linux.sysctl().as_ref().unwrap()["net.ipv4.ip_forward"], "1");

    f.cgroup_v2 = false;
    f.ns.uts = NamespaceMode::Host;
    let spec = f.build().unwrap();
    assert!(spec.hostname().is_none());
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert!(!ns.iter().any(|n| n.typ() == Cgroup || n.typ() == Uts));

    f.ns.network = NamespaceMode::Host;
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::Sysctl { .. }), "{err}");

    // Non-namespaced sysctls would change the host.
    f.ns.network = NamespaceMode::New;
    for bad in ["vm.swappiness", "kernel.panic", "kernel.hostname", "net..x"] {
        f.sandbox.sysctls.clear();
        f.sandbox.sysctls.insert(bad.into(), "1".into());
        let err = f.build().unwrap_err();
        assert!(
            matches!(err, SpecError::Sysctl { ref name, .. } if name == bad),
            "{err}"
        );
    }
    f.sandbox.sysctls.clear();
    f.sandbox.sysctls.insert("kernel.shmmax".into(), "1".into());
    f.build().unwrap();
    f.ns.ipc = NamespaceMode::Host;
    assert!(matches!(f.build(), Err(SpecError::Sysctl { .. })));
}
