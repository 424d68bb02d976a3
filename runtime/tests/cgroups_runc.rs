//! Root tests of the cgroup tree together with the real runc: containers
//! created by runc from `container_cgroups_path` and
//! `CgroupManager::container_linux_resources` land under the pod cgroup in
//! every hierarchy, their OOM kills are counted, and `remove_pod` cleans
//! up after a container runc never deleted.
//!
//! Each test has its own cgroup base ("herd-rtest-<pid>-<n>"), runc root and
//! bundle; a guard runs `runc delete -f` and removes exactly that base in
//! every hierarchy, also on failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use herd_runtime::cgroups::{
    CgroupLayout, CgroupManager, detect_layout, parse_oom_kill_count, pod_cgroup_resources,
    qos_class,
};
use herd_runtime::types::{ContainerResources, DnsConfig, NamespaceOptions, PodSandboxConfig};

const ROOT: &str = "/sys/fs/cgroup";
const MI: u64 = 1 << 20;

fn root_or_skip(test: &str) -> bool {
    herd_integration::root_or_skip(test, "runc, cgroup writes")
}

fn runc_or_skip(test: &str) -> bool {
    let ok = Command::new("runc").arg("--version").output().is_ok()
        && Path::new("/bin/busybox").is_file();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: runc/busybox missing"
        );
        eprintln!("SKIP {test}: runc or /bin/busybox missing");
    }
    ok
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Env {
    dir: tempfile::TempDir,
    base: String,
    ids: Vec<String>,
}

impl Env {
    fn new() -> Env {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("rootfs/bin")).unwrap();
        fs::copy("/bin/busybox", dir.path().join("rootfs/bin/busybox")).unwrap();
        Env {
            dir,
            base: format!("herd-rtest-{}-{n}", std::process::id()),
            ids: Vec::new(),
        }
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(self.dir.path().join("runc"));
        cmd
    }

    /// Writes a bundle running `args` in `cgroups_path` with `resources`.
    fn bundle(
        &self,
        id: &str,
        args: &[&str],
        cgroups_path: &str,
        resources: serde_json::Value,
    ) -> PathBuf {
        let b = self.dir.path().join(format!("bundle-{id}"));
        fs::create_dir(&b).unwrap();
        let out = Command::new("runc")
            .arg("spec")
            .arg("--bundle")
            .arg(&b)
            .output()
            .unwrap();
        assert!(out.status.success(), "runc spec: {out:?}");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
        cfg["root"]["path"] = self.dir.path().join("rootfs").to_str().unwrap().into();
        cfg["process"]["terminal"] = false.into();
        cfg["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
        cfg["linux"]["cgroupsPath"] = cgroups_path.into();
        cfg["linux"]["resources"] = resources;
        fs::write(b.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
        b
    }

    /// `runc run -d`: the container's cgroup stays until `runc delete`.
    /// Its stdio is a file (a pipe would stay open as long as the container
    /// runs).
    fn run_detached(&mut self, id: &str, bundle: &Path) {
        let log = self.dir.path().join(format!("{id}.stderr"));
        let status = self
            .runc()
            .args(["run", "-d", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .status()
            .unwrap();
        self.ids.push(id.to_string());
        assert!(
            status.success(),
            "runc run {id}: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn status(&self, id: &str) -> String {
        let out = self.runc().args(["state", id]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["status"].as_str().unwrap_or("gone").to_string()
    }

    /// Where the base lives: the root on v2, every hierarchy on v1.
    fn base_dirs(&self) -> Vec<PathBuf> {
        let root = Path::new(ROOT);
        if detect_layout(root).ok() == Some(CgroupLayout::Unified) {
            return vec![root.join(&self.base)];
        }
        fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.path().join(&self.base))
            .collect()
    }
}

fn post_order(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            post_order(&e.path(), out);
        }
    }
    if dir.is_dir() {
        out.push(dir.to_path_buf());
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.runc().args(["delete", "-f", id]).output();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for top in self.base_dirs() {
            let mut dirs = Vec::new();
            post_order(&top, &mut dirs);
            for d in dirs {
                while let Err(e) = fs::remove_dir(&d) {
                    if e.kind() == ErrorKind::NotFound || Instant::now() > deadline {
                        break;
                    }
                    for pid in fs::read_to_string(d.join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                    {
                        if let Some(p) = pid
                            .trim()
                            .parse()
                            .ok()
                            .and_then(rustix::process::Pid::from_raw)
                        {
                            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pod_config(uid: &str, containers: Vec<ContainerResources>) -> PodSandboxConfig {
    PodSandboxConfig {
        init_containers: vec![],
        uid: uid.into(),
        name: "p".into(),
        namespace: "default".into(),
        hostname: "p".into(),
        namespaces: NamespaceOptions::default(),
        containers,
        pids_limit: Some(64),
        shm_size_bytes: 64 * MI,
        dns: DnsConfig::default(),
        host_aliases: vec![],
        sysctls: Default::default(),
        pod_ip: None,
    }
}

#[test]
fn runc_containers_live_under_the_pod_cgroup() {
    if !root_or_skip("runc_containers_live_under_the_pod_cgroup") || !runc_or_skip("runc_pod") {
        return;
    }
    let mut env = Env::new();
    let root = Path::new(ROOT);
    let m = CgroupManager::detect(root, &env.base).unwrap();
    m.ensure_hierarchy().unwrap();

    let sleeper = ContainerResources {
        cpu_request_millis: Some(250),
        cpu_limit_millis: Some(500),
        memory_request_bytes: Some(32 * MI),
        memory_limit_bytes: Some(64 * MI),
    };
    let hog = ContainerResources {
        memory_limit_bytes: Some(16 * MI),
        ..sleeper
    };
    let cfg = pod_config("runc-1", vec![sleeper, hog]);
    let qos = qos_class(&cfg.containers);
    let r = pod_cgroup_resources(&cfg);
    m.create_pod(&cfg.uid, qos, &r).unwrap();

    // A long-running container.
    let c1 = format!("{}-c1", env.base);
    let path1 = m.container_cgroups_path(&cfg.uid, qos, &c1);
    let res1 = serde_json::to_value(m.container_linux_resources(&sleeper)).unwrap();
    let b1 = env.bundle(&c1, &["/bin/busybox", "sleep", "600"], &path1, res1);
    let t = Instant::now();
    env.run_detached(&c1, &b1);
    eprintln!("runc run -d into the pod cgroup: {:?}", t.elapsed());
    let s = poll("the container's process", Duration::from_secs(5), || {
        m.stats(&path1).ok().filter(|s| s.pids == 1)
    });
    eprintln!("container stats: {s:?}");
    let pod = m.pod_cgroup(&cfg.uid, qos);
    assert_eq!(m.stats(&pod).unwrap().pids, 1, "pod counts its containers");

    // runc made the container cgroup below the pod in every hierarchy and
    // applied the container's limits there.
    let rel1 = path1.trim_start_matches('/');
    for top in env.base_dirs() {
        let d = top.parent().unwrap().join(rel1);
        assert!(d.is_dir(), "{} missing", d.display());
    }
    if m.layout() != CgroupLayout::Unified {
        let read = |p: PathBuf| fs::read_to_string(p).unwrap().trim().to_string();
        assert_eq!(read(root.join("cpu").join(rel1).join("cpu.shares")), "256");
        assert_eq!(
            read(root.join("cpu").join(rel1).join("cpu.cfs_quota_us")),
            "50000"
        );
        assert_eq!(
            read(root.join("memory").join(rel1).join("memory.limit_in_bytes")),
            (64 * MI).to_string()
        );
        if m.swap_accounting() {
            assert_eq!(
                read(
                    root.join("memory")
                        .join(rel1)
                        .join("memory.memsw.limit_in_bytes")
                ),
                (64 * MI).to_string()
            );
        }
        // The pod's limits: sums of both containers.
        let pod_rel = pod.trim_start_matches('/');
        assert_eq!(
            read(root.join("cpu").join(pod_rel).join("cpu.cfs_quota_us")),
            "100000"
        );
        assert_eq!(
            read(
                root.join("memory")
                    .join(pod_rel)
                    .join("memory.limit_in_bytes")
            ),
            (80 * MI).to_string()
        );
    }

    // A container that allocates past its 16 MiB limit (dd's 64 MiB buffer,
    // filled from /dev/zero) is OOM-killed; its
    // own cgroup counts it (read before runc delete removes it).
    let c2 = format!("{}-c2", env.base);
    let path2 = m.container_cgroups_path(&cfg.uid, qos, &c2);
    let res2 = serde_json::to_value(m.container_linux_resources(&hog)).unwrap();
    let b2 = env.bundle(
        &c2,
        &[
            "/bin/busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ],
        &path2,
        res2,
    );
    env.run_detached(&c2, &b2);
    poll("the hog to stop", Duration::from_secs(20), || {
        (env.status(&c2) == "stopped").then_some(())
    });
    let kills = poll("the OOM kill to count", Duration::from_secs(5), || {
        let n = m.oom_kill_count(&path2).unwrap();
        (n > 0).then_some(n)
    });
    let from_file = parse_oom_kill_count(&fs::read_to_string(m.oom_counter_file(&path2)).unwrap());
    eprintln!("container OOM kills: {kills} (counter file says {from_file})");
    assert!(from_file >= 1);
    assert!(
        m.oom_kill_count(&pod).unwrap() >= kills,
        "pod sees its containers' kills"
    );
    let out = env.runc().args(["delete", &c2]).output().unwrap();
    assert!(out.status.success(), "runc delete: {out:?}");

    // The agent "crashed": the sleeper still runs and runc never deleted it.
    // remove_pod kills it and removes its cgroups everywhere.
    let t = Instant::now();
    m.remove_pod(&cfg.uid, qos).unwrap();
    eprintln!("remove_pod with a live runc container: {:?}", t.elapsed());
    poll(
        "runc to see the container stopped",
        Duration::from_secs(5),
        || (env.status(&c1) == "stopped").then_some(()),
    );
    for top in env.base_dirs() {
        let d = top.parent().unwrap().join(pod.trim_start_matches('/'));
        assert!(!d.exists(), "{} left behind", d.display());
    }
    let out = env.runc().args(["delete", "-f", &c1]).output().unwrap();
    assert!(
        out.status.success(),
        "runc delete -f after remove_pod: {out:?}"
    );
    m.remove_tree().unwrap();
    for top in env.base_dirs() {
        assert!(!top.exists(), "{} left behind", top.display());
    }
}
