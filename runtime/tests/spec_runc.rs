//! Root tests: bundles from `build_spec` run under the real runc with a
//! busybox rootfs, checking the hardening the spec promises from inside the
//! container.
//!
//! Each test uses its own runc root, bundle, rootfs and cgroup path
//! (`/herd-spec-test-<pid>-<n>/c`); a Drop guard runs `runc delete -f` and
//! removes the test's cgroup directories from every hierarchy by exact name.
//! The kernel here has no `dummy` link type, so "can create a link" is
//! checked with a veth pair inside the container's own network namespace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use herd_runtime::spec::{
    NamespaceMode, SandboxFiles, SandboxNamespaces, SpecInputs, build_spec, capability_number,
    current_capabilities, default_capabilities, exec_process, write_bundle,
};
use herd_runtime::types::*;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{LinuxResources, Spec};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn root_or_skip(test: &str) -> bool {
    herd_integration::root_or_skip(test, "runc, cgroups, namespaces")
}

fn runc_or_skip(test: &str) -> bool {
    let ok = Command::new("runc").arg("--version").output().is_ok()
        && Path::new("/bin/busybox").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: runc/busybox missing"
        );
        eprintln!("SKIP {test}: runc or /bin/busybox missing");
    }
    ok
}

/// One container run: temp dirs, runc state and cgroups, all removed on drop.
struct Run {
    dir: tempfile::TempDir,
    id: String,
    cgroup_parent: String,
    cgroup: String,
}

impl Run {
    fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "home/user"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
        std::fs::create_dir_all(dir.path().join("shm")).unwrap();
        std::fs::write(dir.path().join("hostname"), "spec-pod\n").unwrap();
        std::fs::write(dir.path().join("hosts"), "127.0.0.1\tlocalhost\n").unwrap();
        std::fs::write(dir.path().join("resolv.conf"), "").unwrap();
        // A parent per run: a parent shared by parallel tests could be
        // removed by one test's cleanup while runc creates another's child.
        let cgroup_parent = format!("herd-spec-test-{pid}-{n}");
        Run {
            id: format!("herd-spec-{pid}-{n}"),
            cgroup: format!("{cgroup_parent}/c"),
            cgroup_parent,
            dir,
        }
    }

    /// Writes the bundle for `script` (run as `/bin/sh -c script`).
    fn bundle(&self, script: &str, image_user: &str, sec: SecurityContext) -> Spec {
        let p = self.dir.path();
        let sandbox = PodSandboxConfig {
            init_containers: vec![],
            uid: "u".into(),
            name: "spec-pod".into(),
            namespace: "default".into(),
            hostname: "spec-pod".into(),
            namespaces: NamespaceOptions::default(),
            containers: vec![],
            pids_limit: None,
            shm_size_bytes: 64 << 20,
            dns: DnsConfig::default(),
            host_aliases: vec![],
            sysctls: BTreeMap::new(),
            pod_ip: None,
        };
        let container = ContainerConfig {
            name: "probe".into(),
            attempt: 0,
            image: "busybox".into(),
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec![script.into()],
            working_dir: None,
            env: vec![],
            mounts: vec![],
            resources: ContainerResources::default(),
            security: sec,
            tty: false,
            stdin: false,
            log: LogLimits::default(),
        };
        let image: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"User": image_user, "Cmd": ["sh"]},
        }))
        .unwrap();
        let ns = SandboxNamespaces {
            network: NamespaceMode::New,
            ipc: NamespaceMode::New,
            uts: NamespaceMode::New,
            pid: NamespaceMode::New,
        };
        let files = SandboxFiles {
            hosts: p.join("hosts"),
            hostname: p.join("hostname"),
            resolv_conf: p.join("resolv.conf"),
            shm: Some(p.join("shm")),
        };
        let rootfs = p.join("rootfs");
        let cgroups_path = format!("/{}", self.cgroup);
        let spec = build_spec(&SpecInputs {
            sandbox: &sandbox,
            container: &container,
            image_config: &image,
            rootfs: &rootfs,
            namespaces: &ns,
            files: &files,
            cgroups_path: &cgroups_path,
            resources: LinuxResources::default(),
            oom_score_adj: 0,
            cgroup_v2: false,
        })
        .unwrap();
        let bundle = p.join("bundle");
        write_bundle(&bundle, &spec).unwrap();
        spec
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(self.dir.path().join("runc"));
        cmd
    }

    /// Runs `script` in the foreground; returns (exit status, stdout, stderr).
    fn run(&self, script: &str, image_user: &str, sec: SecurityContext) -> (i32, String, String) {
        self.bundle(script, image_user, sec);
        let start = Instant::now();
        let out = self
            .runc()
            .args(["run", "--bundle"])
            .arg(self.dir.path().join("bundle"))
            .arg(&self.id)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        eprintln!("runc run {} took {:?}", self.id, start.elapsed());
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.dir.path().join("runc"))
            .args(["delete", "-f", &self.id])
            .output();
        let Ok(hierarchies) = std::fs::read_dir(CGROUP_ROOT) else {
            return;
        };
        for h in hierarchies.flatten() {
            if h.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
                continue;
            }
            let base = h.path();
            let _ = std::fs::remove_dir(base.join(&self.cgroup));
            let _ = std::fs::remove_dir(base.join(&self.cgroup_parent));
        }
    }
}

fn cap_mask(caps: &[oci_spec::runtime::Capability]) -> u64 {
    caps.iter()
        .map(|c| 1u64 << capability_number(*c))
        .fold(0, |a, b| a | b)
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{key} not in output:\n{out}"))
}

const PROBE: &str = "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; \
    echo host: $(hostname); echo timer_list: $(cat /proc/timer_list | wc -c); \
    echo kcore: $(cat /proc/kcore 2>/dev/null | wc -c); echo uid: $(id -u); \
    if ip link add v0 type veth peer name v1 2>/dev/null; then echo link: ok; else echo link: denied; fi; \
    if touch /x 2>/dev/null; then echo touch: ok; else echo touch: denied; fi";

#[test]
fn default_container_is_hardened() {
    if !root_or_skip("default_container_is_hardened") || !runc_or_skip("default") {
        return;
    }
    let run = Run::new();
    let (code, out, err) = run.run(PROBE, "", SecurityContext::default());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let want = cap_mask(&default_capabilities());
    assert_eq!(want, 0xa80425fb);
    assert_eq!(
        u64::from_str_radix(field(&out, "CapEff:"), 16).unwrap(),
        want,
        "{out}"
    );
    assert_eq!(field(&out, "Seccomp:"), "2");
    assert_eq!(field(&out, "NoNewPrivs:"), "1");
    assert_eq!(field(&out, "host:"), "spec-pod");
    // Masked paths read empty (this kernel has no /proc/kcore at all, so
    // /proc/timer_list, present and non-empty on the host, is the witness).
    assert_eq!(
        field(&out, "kcore:"),
        "0",
        "masked /proc/kcore must read empty"
    );
    assert!(std::fs::metadata("/proc/timer_list").is_ok());
    assert_eq!(
        field(&out, "timer_list:"),
        "0",
        "masked /proc/timer_list must read empty"
    );
    assert_eq!(field(&out, "uid:"), "0");
    assert_eq!(field(&out, "link:"), "denied");
    assert_eq!(field(&out, "touch:"), "ok");
}

#[test]
fn privileged_container_can_create_links() {
    if !root_or_skip("privileged_container_can_create_links") || !runc_or_skip("privileged") {
        return;
    }
    let run = Run::new();
    let sec = SecurityContext {
        privileged: true,
        ..Default::default()
    };
    let (code, out, err) = run.run(PROBE, "", sec);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(field(&out, "Seccomp:"), "0");
    assert_eq!(field(&out, "NoNewPrivs:"), "0");
    assert_eq!(field(&out, "link:"), "ok");
    let want = cap_mask(&current_capabilities());
    assert_eq!(
        u64::from_str_radix(field(&out, "CapEff:"), 16).unwrap(),
        want,
        "{out}"
    );
    assert_ne!(
        field(&out, "timer_list:"),
        "0",
        "privileged: nothing masked"
    );
}

#[test]
fn readonly_rootfs_refuses_writes() {
    if !root_or_skip("readonly_rootfs_refuses_writes") || !runc_or_skip("readonly") {
        return;
    }
    let run = Run::new();
    let sec = SecurityContext {
        read_only_root_filesystem: true,
        ..Default::default()
    };
    let (code, out, err) = run.run(PROBE, "", sec);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(field(&out, "touch:"), "denied");
    assert!(!run.dir.path().join("rootfs/x").exists());
}

#[test]
fn image_user_is_applied() {
    if !root_or_skip("image_user_is_applied") || !runc_or_skip("user") {
        return;
    }
    let run = Run::new();
    let (code, out, err) = run.run(
        "echo uid: $(id -u); echo gid: $(id -g); grep CapEff /proc/self/status",
        "user",
        SecurityContext::default(),
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(field(&out, "uid:"), "1000");
    assert_eq!(field(&out, "gid:"), "1000");
    // A non-root user keeps no effective capabilities (no ambient set).
    assert_eq!(field(&out, "CapEff:"), "0000000000000000");
}

#[test]
fn seccomp_blocks_unshare_without_sys_admin() {
    if !root_or_skip("seccomp_blocks_unshare") || !runc_or_skip("seccomp") {
        return;
    }
    let run = Run::new();
    let (code, out, err) = run.run(
        "if unshare -n true 2>/dev/null; then echo unshare: ok; else echo unshare: denied; fi",
        "",
        SecurityContext::default(),
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(field(&out, "unshare:"), "denied");
}

/// The temp cgroups are gone once the runs are dropped.
#[test]
fn cleanup_leaves_no_cgroup() {
    if !root_or_skip("cleanup_leaves_no_cgroup") || !runc_or_skip("cleanup") {
        return;
    }
    let run = Run::new();
    let (code, _, err) = run.run("true", "", SecurityContext::default());
    assert_eq!(code, 0, "{err}");
    let cg = run.cgroup.clone();
    let parent = PathBuf::from(CGROUP_ROOT)
        .join("memory")
        .join(&run.cgroup_parent);
    let memory = PathBuf::from(CGROUP_ROOT).join("memory").join(&cg);
    let existed = memory.exists();
    drop(run);
    assert!(!parent.exists(), "{} left behind", parent.display());
    assert!(
        !memory.exists(),
        "{} left behind (existed: {existed})",
        memory.display()
    );
}

/// `runc exec --process` with `exec_process` runs with the container's user,
/// capabilities and no_new_privileges, and the extra env.
#[test]
fn exec_process_keeps_container_defaults() {
    if !root_or_skip("exec_process_keeps_container_defaults") || !runc_or_skip("exec") {
        return;
    }
    let run = Run::new();
    let spec = run.bundle("exec sleep 1000", "user", SecurityContext::default());
    // The detached container inherits runc's stdio: give it files, not
    // pipes (a pipe would stay open as long as the container runs).
    let log = run.dir.path().join("run.log");
    let status = run
        .runc()
        .args(["run", "-d", "--bundle"])
        .arg(run.dir.path().join("bundle"))
        .arg(&run.id)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(run.dir.path().join("run.err")).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(run.dir.path().join("run.err")).unwrap_or_default()
    );
    let base = spec.process().as_ref().unwrap();
    let script = "echo uid: $(id -u); echo extra: $EXTRA; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; exit 7";
    let proc = exec_process(
        base,
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        false,
        &[("EXTRA".into(), "yes".into())],
    );
    let proc_path = run.dir.path().join("exec.json");
    std::fs::write(&proc_path, serde_json::to_vec(&proc).unwrap()).unwrap();
    let out = run
        .runc()
        .args(["exec", "--process"])
        .arg(&proc_path)
        .arg(&run.id)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(field(&stdout, "uid:"), "1000");
    assert_eq!(field(&stdout, "extra:"), "yes");
    assert_eq!(field(&stdout, "NoNewPrivs:"), "1");
    assert_eq!(field(&stdout, "Seccomp:"), "2");
}

/// Privileged containers get the host's device nodes: char/block nodes are
/// listed with their numbers and modes; pts/shm/mqueue, `console` and
/// symlinks are skipped.
#[test]
fn host_devices_lists_nodes() {
    if !root_or_skip("host_devices_lists_nodes") {
        return;
    }
    use rustix::fs::{FileType, Mode, mknodat};
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path();
    std::fs::create_dir_all(dev.join("pts")).unwrap();
    std::fs::create_dir_all(dev.join("net")).unwrap();
    let node = |rel: &str, ft: FileType, major: u32, minor: u32| {
        mknodat(
            rustix::fs::CWD,
            dev.join(rel),
            ft,
            Mode::from_raw_mode(0o620),
            rustix::fs::makedev(major, minor),
        )
        .unwrap();
        // mknod applies the umask; set the mode we check for.
        rustix::fs::chmod(dev.join(rel), Mode::from_raw_mode(0o620)).unwrap();
    };
    node("null", FileType::CharacterDevice, 1, 3);
    node("net/tun", FileType::CharacterDevice, 10, 200);
    node("loop0", FileType::BlockDevice, 7, 0);
    node("console", FileType::CharacterDevice, 5, 1);
    node("pts/0", FileType::CharacterDevice, 136, 0);
    std::os::unix::fs::symlink("null", dev.join("link")).unwrap();
    std::fs::write(dev.join("plain"), "").unwrap();

    let devices = herd_runtime::spec::host_devices(dev).unwrap();
    let got: Vec<(String, i64, i64)> = devices
        .iter()
        .map(|d| {
            (
                d.path().to_string_lossy().into_owned(),
                d.major(),
                d.minor(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/dev/loop0".to_string(), 7, 0),
            ("/dev/net/tun".to_string(), 10, 200),
            ("/dev/null".to_string(), 1, 3),
        ]
    );
    assert_eq!(devices[2].file_mode(), Some(0o620));
    assert_eq!(devices[0].typ(), oci_spec::runtime::LinuxDeviceType::B);
}
