//! The pod runtime end to end, as root, with real runc, the project's
//! busybox image, overlay root filesystems, this host's cgroups and the
//! `herd` binary as the per-pod monitor. Every pod lives in its own
//! namespaces; cgroups go under a per-run base (`herd-e2e-<pid>`) that is
//! removed at the end, and every test checks it left no mount behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd_images::{ImageStore, ImportOptions};
use herd_integration::ImageOpts;
use herd_runtime::oci::{RuntimeBinary, RuntimeKind};
use herd_runtime::pod::{ContainerRecord, ContainerState, PodRuntime, RuntimeConfig};
use herd_runtime::types::{
    ContainerConfig, ContainerResources, LogLimits, NamespaceOptions, PodSandboxConfig,
    SecurityContext,
};

const IMAGE: &str = "herd.test/busybox:latest";

fn root_or_skip(test: &str) -> bool {
    herd_integration::root_or_skip(test, "runc, cgroups, mounts, namespaces")
}

/// One runtime over temp dirs; removed (pods, cgroups, mounts) on drop.
struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: String,
    rt: PodRuntime,
}

fn runtime_config(root: &Path, base: &str) -> RuntimeConfig {
    RuntimeConfig {
        run_dir: root.join("run"),
        log_dir: root.join("logs"),
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        cgroup_base: base.to_string(),
        runtime: RuntimeBinary {
            kind: RuntimeKind::Runc,
            path: PathBuf::from("/usr/sbin/runc"),
            root: root.join("runc"),
        },
        monitor_exe: PathBuf::from(env!("CARGO_BIN_EXE_herd")),
        monitor_args: vec!["monitor".into()],
        node_memory_bytes: 8 << 30,
    }
}

impl Env {
    fn new(name: &str) -> Env {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("herd-rt-{name}-"))
            .tempdir()
            .unwrap();
        let root = tmp.path().to_path_buf();
        let layout = root.join("layout");
        herd_integration::write_oci_layout(&layout, &ImageOpts::new(IMAGE)).unwrap();
        let store = ImageStore::open(&root.join("images")).unwrap();
        store.import(&layout, &ImportOptions::default()).unwrap();
        let base = format!("herd-e2e-{}-{name}", std::process::id());
        let rt = PodRuntime::new(runtime_config(&root, &base), store).unwrap();
        Env {
            _tmp: tmp,
            root,
            base,
            rt,
        }
    }

    /// A fresh runtime over the same dirs, as after an agent restart.
    fn restarted(&self) -> PodRuntime {
        let store = ImageStore::open(&self.root.join("images")).unwrap();
        PodRuntime::new(runtime_config(&self.root, &self.base), store).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(pods) = self.rt.list_pods() {
            for uid in pods {
                let _ = self.rt.remove_pod_sandbox(&uid);
            }
        }
        let _ = self.rt.cgroups().remove_tree();
    }
}

fn pod(uid: &str, containers: &[&ContainerConfig]) -> PodSandboxConfig {
    PodSandboxConfig {
        init_containers: vec![],
        uid: uid.to_string(),
        name: format!("pod-{uid}"),
        namespace: "default".to_string(),
        hostname: format!("pod-{uid}"),
        namespaces: NamespaceOptions::default(),
        containers: containers.iter().map(|c| c.resources).collect(),
        pids_limit: Some(256),
        shm_size_bytes: 16 << 20,
        dns: Default::default(),
        host_aliases: vec![],
        sysctls: Default::default(),
        pod_ip: None,
    }
}

fn container(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        name: name.to_string(),
        attempt: 0,
        image: IMAGE.to_string(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        args: vec![],
        working_dir: None,
        env: vec![("GREETING".into(), "hi".into())],
        mounts: vec![],
        resources: ContainerResources::default(),
        security: SecurityContext::default(),
        tty: false,
        stdin: false,
        log: LogLimits::default(),
    }
}

fn wait_exit(
    rt: &PodRuntime,
    rec: &ContainerRecord,
    timeout: Duration,
) -> herd_runtime::pod::ExitInfo {
    let deadline = Instant::now() + timeout;
    loop {
        match rt.container_state(rec).unwrap() {
            ContainerState::Exited(e) => return e,
            s if Instant::now() > deadline => panic!("{} still {s:?}", rec.id),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The CRI log's content lines for one stream.
fn log_lines(rec: &ContainerRecord, stream: &str) -> Vec<String> {
    let text = std::fs::read_to_string(&rec.log_path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (_ts, s, tag, content) = (
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next().unwrap_or(""),
            );
            (s == stream && tag == "F").then(|| content.to_string())
        })
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(d.as_ref()))
        .map(String::from)
        .collect()
}

fn cgroup_v1_dir(controller: &str, cgroup: &str) -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
        .join(controller)
        .join(cgroup.trim_start_matches('/'))
}

#[test]
fn two_containers_share_localhost_and_cleanup_leaves_nothing() {
    if !root_or_skip("two_containers_share_localhost") {
        return;
    }
    let env = Env::new("net");
    let web = container("web", "exec httpd -f -p 8080 -h /var/www");
    let client = container(
        "client",
        "for i in $(seq 100); do wget -q -O - http://127.0.0.1:8080/index.html && exit 0; sleep 0.05; done; exit 1",
    );
    let p = pod("p-net", &[&web, &client]);
    let netns = env
        .rt
        .run_pod_sandbox(&p)
        .unwrap()
        .expect("pod has its own netns");
    assert!(netns.exists());
    let web_rec = env.rt.run_container(&p.uid, &web).unwrap();
    let client_rec = env.rt.run_container(&p.uid, &client).unwrap();
    let exit = wait_exit(&env.rt, &client_rec, Duration::from_secs(20));
    assert_eq!(
        exit.exit_code,
        0,
        "client logs: {:?}",
        log_lines(&client_rec, "stderr")
    );
    assert_eq!(exit.reason(), "Completed");
    assert_eq!(log_lines(&client_rec, "stdout"), vec!["hello from herd"]);
    assert!(matches!(
        env.rt.container_state(&web_rec).unwrap(),
        ContainerState::Running { .. }
    ));

    // The pod's hostname is its own.
    let out = env
        .rt
        .exec(
            &web_rec,
            vec!["hostname".into()],
            false,
            Some(Duration::from_secs(10)),
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod-p-net");

    let run_dir = env.root.join("run");
    assert!(!mounts_under(&run_dir).is_empty());
    let pod_cgroup = env
        .rt
        .cgroups()
        .pod_cgroup(&p.uid, herd_runtime::types::QosClass::BestEffort);
    assert!(cgroup_v1_dir("memory", &pod_cgroup).exists());

    env.rt.remove_pod_sandbox(&p.uid).unwrap();
    assert!(
        mounts_under(&run_dir).is_empty(),
        "{:?}",
        mounts_under(&run_dir)
    );
    assert!(mounts_under(&env.root.join("images")).is_empty());
    for ctl in ["memory", "cpu", "pids"] {
        assert!(
            !cgroup_v1_dir(ctl, &pod_cgroup).exists(),
            "{ctl} cgroup left behind"
        );
    }
    assert!(!netns.exists());
    assert!(env.rt.list_pods().unwrap().is_empty());
    // Idempotent.
    env.rt.remove_pod_sandbox(&p.uid).unwrap();
}

#[test]
fn memory_limit_oom_kills_and_cpu_limit_is_in_the_cgroup() {
    if !root_or_skip("memory_limit_oom") {
        return;
    }
    let env = Env::new("oom");
    let mut hog = container("hog", "head -c 200m /dev/zero | tail");
    hog.resources = ContainerResources {
        cpu_request_millis: Some(250),
        cpu_limit_millis: Some(500),
        memory_request_bytes: Some(16 << 20),
        memory_limit_bytes: Some(32 << 20),
    };
    let p = pod("p-oom", &[&hog]);
    env.rt.run_pod_sandbox(&p).unwrap();
    let rec = env.rt.create_container(&p.uid, &hog).unwrap();
    // Limits are in the cgroup files runc creates for the container.
    env.rt.start_container(&rec).unwrap();
    let quota = std::fs::read_to_string(cgroup_v1_dir("cpu", &rec.cgroup).join("cpu.cfs_quota_us"));
    let exit = wait_exit(&env.rt, &rec, Duration::from_secs(30));
    assert_eq!(exit.exit_code, 137);
    assert!(exit.oom_killed);
    assert_eq!(exit.reason(), "OOMKilled");
    // The container may be gone by the time we read; the pod cgroup keeps
    // its own limits (kubelet: sum of limits when all containers have one).
    let pod_cg = env
        .rt
        .cgroups()
        .pod_cgroup(&p.uid, herd_runtime::types::QosClass::Burstable);
    let pod_quota =
        std::fs::read_to_string(cgroup_v1_dir("cpu", &pod_cg).join("cpu.cfs_quota_us")).unwrap();
    assert_eq!(pod_quota.trim(), "50000");
    if let Ok(q) = quota {
        assert_eq!(q.trim(), "50000");
    }
    let period =
        std::fs::read_to_string(cgroup_v1_dir("cpu", &pod_cg).join("cpu.cfs_period_us")).unwrap();
    assert_eq!(period.trim(), "100000");
    let mem =
        std::fs::read_to_string(cgroup_v1_dir("memory", &pod_cg).join("memory.limit_in_bytes"))
            .unwrap();
    assert_eq!(mem.trim(), (32u64 << 20).to_string());
    env.rt.remove_pod_sandbox(&p.uid).unwrap();
}

#[test]
fn capabilities_readonly_rootfs_and_privileged() {
    if !root_or_skip("capabilities") {
        return;
    }
    let env = Env::new("caps");
    let plain = container("plain", "ip link add v0 type veth peer name v1");
    let mut privileged = container(
        "priv",
        "ip link add v0 type veth peer name v1 && ip link show v0",
    );
    privileged.security.privileged = true;
    let mut ro = container("ro", "touch /x");
    ro.security.read_only_root_filesystem = true;
    let mut rw = container("rw", "touch /x && echo wrote");
    rw.security.capabilities_drop = vec!["ALL".into()];
    let p = pod("p-caps", &[&plain, &privileged, &ro, &rw]);
    env.rt.run_pod_sandbox(&p).unwrap();
    let mut results = Vec::new();
    for c in [&plain, &privileged, &ro, &rw] {
        let rec = env.rt.run_container(&p.uid, c).unwrap();
        let exit = wait_exit(&env.rt, &rec, Duration::from_secs(20));
        results.push((rec, exit));
    }
    let (plain_rec, plain_exit) = &results[0];
    assert_ne!(plain_exit.exit_code, 0);
    let err = log_lines(plain_rec, "stderr").join("\n");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(
        results[1].1.exit_code,
        0,
        "{:?}",
        log_lines(&results[1].0, "stderr")
    );
    assert_ne!(results[2].1.exit_code, 0);
    assert!(
        log_lines(&results[2].0, "stderr")
            .join("\n")
            .contains("Read-only file system")
    );
    assert_eq!(results[3].1.exit_code, 0);
    assert_eq!(log_lines(&results[3].0, "stdout"), vec!["wrote"]);
    env.rt.remove_pod_sandbox(&p.uid).unwrap();
}

#[test]
fn exec_with_and_without_tty() {
    if !root_or_skip("exec") {
        return;
    }
    let env = Env::new("exec");
    let c = container("sleeper", "exec sleep 3600");
    let p = pod("p-exec", &[&c]);
    env.rt.run_pod_sandbox(&p).unwrap();
    let rec = env.rt.run_container(&p.uid, &c).unwrap();
    let t = Some(Duration::from_secs(10));
    let out = env
        .rt
        .exec(
            &rec,
            vec![
                "sh".into(),
                "-c".into(),
                "echo out $GREETING; echo err >&2; exit 7".into(),
            ],
            false,
            t,
        )
        .unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = env
        .rt
        .exec(
            &rec,
            vec![
                "sh".into(),
                "-c".into(),
                "test -t 1 && echo tty; exit 3".into(),
            ],
            true,
            t,
        )
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert!(String::from_utf8_lossy(&out.stdout).contains("tty"));
    let err = env.rt.exec(&rec, vec!["/no/such/binary".into()], false, t);
    match err {
        Ok(o) => assert_ne!(o.exit_code, 0),
        Err(e) => assert!(e.to_string().contains("no/such"), "{e}"),
    }
    let stopped = env.rt.stop_container(&rec, Duration::from_secs(2)).unwrap();
    let ContainerState::Exited(exit) = stopped else {
        panic!("{stopped:?}")
    };
    // sleep as PID 1 ignores SIGTERM: the grace period ends with SIGKILL.
    assert_eq!(exit.exit_code, 137);
    env.rt.remove_pod_sandbox(&p.uid).unwrap();
}

#[test]
fn logs_are_cri_formatted_and_rotated() {
    if !root_or_skip("logs") {
        return;
    }
    let env = Env::new("logs");
    let mut c = container(
        "chatty",
        "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; echo bye >&2",
    );
    c.log = LogLimits {
        max_size_bytes: 16 * 1024,
        max_files: 3,
    };
    let p = pod("p-logs", &[&c]);
    env.rt.run_pod_sandbox(&p).unwrap();
    let rec = env.rt.run_container(&p.uid, &c).unwrap();
    let exit = wait_exit(&env.rt, &rec, Duration::from_secs(20));
    assert_eq!(exit.exit_code, 0);
    let dir = rec.log_path.parent().unwrap();
    assert!(
        dir.ends_with("default_pod-p-logs_p-logs/chatty"),
        "{}",
        dir.display()
    );
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() <= 3 && files.len() >= 2, "{files:?}");
    let last = std::fs::read_to_string(&rec.log_path).unwrap();
    for line in last.lines() {
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        assert_eq!(parts.len(), 4, "{line}");
        assert!(parts[0].ends_with('Z') && parts[0].contains('T'), "{line}");
        assert!(matches!(parts[1], "stdout" | "stderr"), "{line}");
        assert!(matches!(parts[2], "F" | "P"), "{line}");
    }
    // stdout and stderr are separate pipes: their relative order (so which
    // file "bye" lands in) is not defined, only that nothing is lost at the end.
    let all: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(all.contains(" stdout F line-1999\n"));
    assert!(all.contains(" stderr F bye\n"));
    env.rt.remove_pod_sandbox(&p.uid).unwrap();
}

/// The "agent" of the restart test: a child process (this test binary,
/// re-run) that starts a pod, reports the pids and waits to be killed.
#[test]
fn agent_child() {
    let Ok(root) = std::env::var("HERD_RT_AGENT_ROOT") else {
        return;
    };
    let base = std::env::var("HERD_RT_AGENT_BASE").unwrap();
    let store = ImageStore::open(&Path::new(&root).join("images")).unwrap();
    let rt = PodRuntime::new(runtime_config(Path::new(&root), &base), store).unwrap();
    let long = container("long", "exec sleep 3600");
    // Exits on its own a little after the agent is killed.
    let short = container("short", "sleep 3; exit 5");
    let p = pod("p-restart", &[&long, &short]);
    rt.run_pod_sandbox(&p).unwrap();
    for c in [&long, &short] {
        let rec = rt.run_container(&p.uid, c).unwrap();
        let ContainerState::Running { pid, .. } =
            rt.wait_started(&rec, Duration::from_secs(10)).unwrap()
        else {
            panic!("not running")
        };
        println!("PID {} {pid}", c.name);
    }
    println!("READY");
    // Killed by the parent test; the deadline only bounds an orphan.
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn agent_sigkill_and_restart_readopts_running_containers() {
    if !root_or_skip("agent_restart") {
        return;
    }
    let env = Env::new("restart");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["agent_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("HERD_RT_AGENT_ROOT", &env.root)
        .env("HERD_RT_AGENT_BASE", &env.base)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the child "agent" even if an assertion below fails.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop(child);
    let mut pids = std::collections::HashMap::new();
    {
        use std::io::BufRead;
        let out = std::io::BufReader::new(stdout);
        for line in out.lines() {
            let line = line.unwrap();
            // The test harness may print its own text on the same line.
            if line.ends_with("READY") {
                break;
            }
            if let Some(rest) = line.find("PID ").map(|i| &line[i + 4..]) {
                let (name, pid) = rest.split_once(' ').unwrap();
                pids.insert(name.to_string(), pid.parse::<u32>().unwrap());
            }
        }
    }
    assert_eq!(pids.len(), 2, "agent child did not start the pod");
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();

    let rt = env.restarted();
    let rec = rt.recover().unwrap();
    assert_eq!(rec.adopted, vec!["p-restart".to_string()]);
    assert!(rec.orphaned.is_empty());
    let long = rt.container("p-restart", "p-restart-long-0").unwrap();
    match rt.container_state(&long).unwrap() {
        ContainerState::Running { pid, .. } => {
            assert_eq!(pid, pids["long"], "restarted instead of adopted")
        }
        s => panic!("long container not running after agent restart: {s:?}"),
    }
    let short = rt.container("p-restart", "p-restart-short-0").unwrap();
    let exit = wait_exit(&rt, &short, Duration::from_secs(20));
    assert_eq!(exit.exit_code, 5, "exit code recorded while no agent ran");
    let out = rt
        .exec(
            &long,
            vec!["echo".into(), "adopted".into()],
            false,
            Some(Duration::from_secs(10)),
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "adopted\n");
    rt.remove_pod_sandbox("p-restart").unwrap();
    assert!(mounts_under(&env.root.join("run")).is_empty());
}

#[test]
fn restart_removes_what_no_record_owns() {
    if !root_or_skip("restart_reconcile") {
        return;
    }
    let env = Env::new("reconcile");
    // What a crash can leave: a pod cgroup whose sandbox was never
    // recorded, and a rootfs mount whose container record was never written.
    let res = herd_runtime::cgroups::PodCgroupResources {
        cpu_shares: 2,
        cpu_quota: None,
        cpu_period: 100_000,
        memory_limit: None,
        pids_limit: None,
    };
    let qos = herd_runtime::types::QosClass::BestEffort;
    env.rt.cgroups().create_pod("stray", qos, &res).unwrap();
    let pod_cg = env.rt.cgroups().pod_cgroup("stray", qos);
    assert!(cgroup_v1_dir("memory", &pod_cg).exists());
    let c = container("half", "true");
    let p = pod("p-half", &[&c]);
    env.rt.run_pod_sandbox(&p).unwrap();
    let target = env
        .root
        .join("run/pods/p-half/containers/p-half-ghost-0/bundle/rootfs");
    std::fs::create_dir_all(&target).unwrap();
    env.rt
        .images()
        .native()
        .unwrap()
        .mount_rootfs("p-half-ghost-0", IMAGE, &target)
        .unwrap();

    let rt = env.restarted();
    let rec = rt.recover().unwrap();
    assert_eq!(rec.removed_cgroups, vec!["stray".to_string()]);
    assert_eq!(rec.removed_mounts, vec!["p-half-ghost-0".to_string()]);
    assert!(!cgroup_v1_dir("memory", &pod_cg).exists());
    assert!(rt.images().native().unwrap().mounts().unwrap().is_empty());
    assert_eq!(rec.adopted, vec!["p-half".to_string()]);
    rt.remove_pod_sandbox("p-half").unwrap();
    assert!(
        mounts_under(&env.root).is_empty(),
        "{:?}",
        mounts_under(&env.root)
    );
}

#[test]
fn share_process_namespace_without_a_pause_container() {
    if !root_or_skip("share_process_namespace") {
        return;
    }
    let env = Env::new("pidns");
    let a = container("a", "exec sleep 3600");
    let b = container("b", "ps");
    let mut p = pod("p-pidns", &[&a, &b]);
    p.namespaces.share_process_namespace = true;
    env.rt.run_pod_sandbox(&p).unwrap();
    let holder_file = env.root.join("run/pods/p-pidns/ns/pid-holder");
    let holder: u32 = std::fs::read_to_string(&holder_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let a_rec = env.rt.run_container(&p.uid, &a).unwrap();
    assert!(matches!(
        env.rt
            .wait_started(&a_rec, Duration::from_secs(10))
            .unwrap(),
        ContainerState::Running { .. }
    ));
    let b_rec = env.rt.run_container(&p.uid, &b).unwrap();
    let exit = wait_exit(&env.rt, &b_rec, Duration::from_secs(20));
    assert_eq!(exit.exit_code, 0);
    let ps = log_lines(&b_rec, "stdout").join("\n");
    // b sees a's process, and PID 1 is the holder, not a container.
    assert!(ps.contains("sleep 3600"), "{ps}");
    let pid1 = ps
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or("");
    assert!(pid1.contains("herd"), "PID 1 should be the holder: {ps}");
    // Without sharing, a container sees only its own processes.
    let solo = container("solo", "ps");
    let q = pod("p-solo", &[&solo]);
    env.rt.run_pod_sandbox(&q).unwrap();
    let s_rec = env.rt.run_container(&q.uid, &solo).unwrap();
    wait_exit(&env.rt, &s_rec, Duration::from_secs(20));
    assert!(!log_lines(&s_rec, "stdout").join("\n").contains("sleep"));
    // Stats are readable for a container and for the pod.
    let stats = env.rt.stats(&p.uid, Some(&a_rec)).unwrap();
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    assert!(env.rt.stats(&p.uid, None).unwrap().memory_usage_bytes > 0);

    env.rt.remove_pod_sandbox(&p.uid).unwrap();
    env.rt.remove_pod_sandbox(&q.uid).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{holder}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{holder}/stat")).unwrap_or_default();
        if stat.contains(") Z") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stat = std::fs::read_to_string(format!("/proc/{holder}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "holder still running: {stat}"
    );
    assert!(
        mounts_under(&env.root).is_empty(),
        "{:?}",
        mounts_under(&env.root)
    );
}

#[test]
fn host_namespaces_are_the_hosts() {
    if !root_or_skip("host_namespaces") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let env = Env::new("hostns");
    let c = container(
        "c",
        "for n in net ipc pid uts; do echo $n $(readlink /proc/self/ns/$n); done",
    );
    let mut p = pod("p-hostns", &[&c]);
    p.namespaces.host_network = true;
    p.namespaces.host_ipc = true;
    p.namespaces.host_pid = true;
    assert!(
        env.rt.run_pod_sandbox(&p).unwrap().is_none(),
        "hostNetwork pod got a netns"
    );
    let rec = env.rt.run_container(&p.uid, &c).unwrap();
    assert_eq!(
        wait_exit(&env.rt, &rec, Duration::from_secs(20)).exit_code,
        0
    );
    let out = log_lines(&rec, "stdout");
    for (kind, line) in ["net", "ipc", "pid", "uts"].iter().zip(&out) {
        let host = std::fs::metadata(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .ino();
        assert_eq!(line, &format!("{kind} {kind}:[{host}]"), "{out:?}");
    }
    assert_eq!(out.len(), 4, "{out:?}");
    // And a normal pod's are its own.
    let q = pod("p-ownns", &[&c]);
    env.rt.run_pod_sandbox(&q).unwrap();
    let rec = env.rt.run_container(&q.uid, &c).unwrap();
    wait_exit(&env.rt, &rec, Duration::from_secs(20));
    for (kind, line) in ["net", "ipc", "pid", "uts"]
        .iter()
        .zip(&log_lines(&rec, "stdout"))
    {
        let host = std::fs::metadata(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .ino();
        assert_ne!(line, &format!("{kind} {kind}:[{host}]"));
    }
    env.rt.remove_pod_sandbox(&p.uid).unwrap();
    env.rt.remove_pod_sandbox(&q.uid).unwrap();
}
