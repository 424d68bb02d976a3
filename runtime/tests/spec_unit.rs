//! Unit tests of OCI bundle generation, process side: args, env, user,
//! working dir, exec process, /etc files, bundle writing (no root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod spec_common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use herd_runtime::spec::{
    self, SpecError, exec_process, hosts_file, merge_env, resolv_conf, resolve_args, resolve_user,
    write_bundle,
};
use herd_runtime::types::*;
use oci_spec::runtime::Spec;
use spec_common::{Fixture, image, s};

#[test]
fn args_follow_kubernetes_rules() {
    let ep = s(&["/ep"]);
    let cmd = s(&["cmd-a"]);
    // (command, args, expected)
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&[], &[], &["/ep", "cmd-a"]),
        (&["/c"], &[], &["/c"]),
        (&[], &["x", "y"], &["/ep", "x", "y"]),
        (&["/c"], &["x"], &["/c", "x"]),
    ];
    for (command, args, want) in cases {
        let got = resolve_args(&ep, &cmd, &s(command), &s(args)).unwrap();
        assert_eq!(got, s(want), "command={command:?} args={args:?}");
    }
    // No entrypoint: Cmd alone; args alone replace Cmd.
    assert_eq!(resolve_args(&[], &cmd, &[], &[]).unwrap(), cmd);
    assert_eq!(resolve_args(&[], &cmd, &[], &s(&["z"])).unwrap(), s(&["z"]));
    assert!(matches!(
        resolve_args(&[], &[], &[], &[]),
        Err(SpecError::NoCommand { .. })
    ));
    // build_spec names the container.
    let mut f = Fixture::new();
    f.image = image(serde_json::json!({}));
    let err = f.build().unwrap_err();
    assert!(err.to_string().contains("container app"), "{err}");
}

#[test]
fn env_merges_in_place_with_defaults() {
    let got = merge_env(
        &s(&["A=1", "PATH=/img", "B=2"]),
        &[("B".into(), "3".into()), ("C".into(), "4".into())],
    );
    assert_eq!(got, s(&["PATH=/img", "A=1", "B=3", "C=4"]));
    let got = merge_env(&s(&["A=1"]), &[]);
    assert_eq!(got, s(&[&format!("PATH={}", spec::DEFAULT_PATH), "A=1"]));

    let mut f = Fixture::new();
    f.container.env = vec![("A".into(), "9".into())];
    let spec = f.build().unwrap();
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert_eq!(env, s(&["PATH=/bin", "HOSTNAME=web-0", "A=9"]));
}

#[test]
fn user_resolution_on_rootfs() {
    let f = Fixture::new();
    let r = f.rootfs();
    let u = |img: &str| resolve_user(&r, "app", img, None, None, &[]);
    let alice = u("alice").unwrap();
    assert_eq!((alice.uid, alice.gid), (1000, 1000));
    assert_eq!(alice.additional_gids, vec![1000, 100, 10]);
    assert_eq!(u("1001").unwrap().gid, 100);
    assert_eq!(u("4242").unwrap().gid, 0);
    assert_eq!(u("").unwrap().uid, 0);
    let ug = u("alice:wheel").unwrap();
    assert_eq!((ug.uid, ug.gid), (1000, 10));
    assert_eq!(u("1000:55").unwrap().gid, 55);
    assert!(matches!(u("mallory"), Err(SpecError::UnknownUser { .. })));
    assert!(matches!(
        u("alice:nogroup"),
        Err(SpecError::UnknownGroup { .. })
    ));
    assert!(matches!(u("alice:"), Err(SpecError::BadUser { .. })));
    // securityContext wins; supplemental groups appended without duplicates.
    let sc = resolve_user(&r, "app", "alice", Some(1001), Some(7), &[7, 300]).unwrap();
    assert_eq!((sc.uid, sc.gid), (1001, 7));
    assert_eq!(sc.additional_gids, vec![7, 10, 300]);
}

#[test]
fn passwd_symlink_out_of_rootfs_is_not_followed() {
    let f = Fixture::new();
    let outside = f.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("passwd"), "mallory:x:666:666::/:/bin/sh\n").unwrap();
    let passwd = f.rootfs().join("etc/passwd");
    std::fs::remove_file(&passwd).unwrap();
    // Absolute link: resolved inside the rootfs, where it does not exist.
    std::os::unix::fs::symlink(outside.join("passwd"), &passwd).unwrap();
    let r = f.rootfs();
    let err = resolve_user(&r, "app", "mallory", None, None, &[]).unwrap_err();
    assert!(matches!(err, SpecError::UnknownUser { .. }), "{err}");
    // Relative escape: clamped at the rootfs's root.
    std::fs::remove_file(&passwd).unwrap();
    std::os::unix::fs::symlink("../../outside/passwd", &passwd).unwrap();
    let err = resolve_user(&r, "app", "mallory", None, None, &[]).unwrap_err();
    assert!(matches!(err, SpecError::UnknownUser { .. }), "{err}");
    // A link that stays inside works.
    std::fs::remove_file(&passwd).unwrap();
    std::fs::write(r.join("etc/passwd.real"), "carol:x:5:5::/:/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd.real", &passwd).unwrap();
    assert_eq!(
        resolve_user(&r, "app", "carol", None, None, &[])
            .unwrap()
            .uid,
        5
    );
}

#[test]
fn run_as_non_root_refuses_uid_0() {
    let mut f = Fixture::new();
    f.container.security.run_as_non_root = true;
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::RunsAsRoot { ref container } if container == "app"));
    f.image = image(serde_json::json!({"Cmd": ["sh"], "User": "alice"}));
    let spec = f.build().unwrap();
    let user = spec.process().as_ref().unwrap().user().clone();
    assert_eq!((user.uid(), user.gid()), (1000, 1000));
}

#[test]
fn working_dir_and_exec_process() {
    let mut f = Fixture::new();
    f.image = image(serde_json::json!({"Cmd": ["sh"], "WorkingDir": "/srv", "User": "alice"}));
    let spec = f.build().unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.cwd(), Path::new("/srv"));
    f.container.working_dir = Some("/w".into());
    assert_eq!(
        f.build().unwrap().process().as_ref().unwrap().cwd(),
        Path::new("/w")
    );
    f.container.working_dir = Some("../w".into());
    assert!(matches!(f.build(), Err(SpecError::BadWorkingDir { .. })));

    let e = exec_process(p, s(&["ls", "-l"]), true, &[("A".into(), "x".into())]);
    assert_eq!(e.args().as_ref().unwrap(), &s(&["ls", "-l"]));
    assert_eq!(e.terminal(), Some(true));
    assert_eq!(e.user(), p.user());
    assert_eq!(e.capabilities(), p.capabilities());
    assert_eq!(e.no_new_privileges(), p.no_new_privileges());
    let env = e.env().clone().unwrap();
    assert!(env.contains(&"A=x".to_string()) && !env.contains(&"A=1".to_string()));
    assert!(env.contains(&"TERM=xterm".to_string()));
    let e = exec_process(p, s(&["ls"]), false, &[]);
    assert_eq!(e.env(), p.env());

    // A tty container gets TERM; the image or container can override it.
    f.container.tty = true;
    f.container.working_dir = None;
    f.container.env = vec![("TERM".into(), "vt100".into())];
    let spec = f.build().unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.terminal(), Some(true));
    assert!(
        p.env()
            .as_ref()
            .unwrap()
            .contains(&"TERM=vt100".to_string())
    );
}

#[test]
fn etc_file_contents() {
    let ip: IpAddr = "10.1.0.5".parse().unwrap();
    let hosts = hosts_file(
        Some(ip),
        "web-0",
        &[HostAlias {
            ip: "10.0.0.9".parse().unwrap(),
            hostnames: s(&["foo", "bar", "bad name"]),
        }],
    );
    assert_eq!(
        hosts,
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
         10.1.0.5\tweb-0\n\n# Entries added by HostAliases.\n10.0.0.9\tfoo\tbar\n"
    );
    assert!(!hosts_file(None, "web-0", &[]).contains("web-0"));
    let dns = DnsConfig {
        nameservers: s(&["10.96.0.10", "1.1.1.1\nnameserver 6.6.6.6"]),
        searches: s(&["default.svc.cluster.local", "svc.cluster.local"]),
        options: s(&["ndots:5"]),
    };
    assert_eq!(
        resolv_conf(&dns),
        "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
}

#[test]
fn bundle_json_round_trip() {
    let f = Fixture::new();
    let spec = f.build().unwrap();
    let bundle = f.dir.path().join("bundle");
    let path = write_bundle(&bundle, &spec).unwrap();
    assert_eq!(path, bundle.join("config.json"));
    let back: Spec = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(back, spec);
    assert_eq!(
        std::fs::read_dir(&bundle).unwrap().count(),
        1,
        "temp file left"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["linux"]["seccomp"]["defaultErrnoRet"], 1);
    assert_eq!(
        v["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .len(),
        14
    );

    // A relative root path is refused.
    let mut rel = spec.clone();
    let mut root = rel.root().clone().unwrap();
    root.set_path(PathBuf::from("rootfs"));
    rel.set_root(Some(root));
    assert!(matches!(
        write_bundle(&bundle, &rel),
        Err(SpecError::RelativeRootfs { .. })
    ));
}
