//! Root tests on the host's real cgroups (this machine: hybrid). Each test
//! uses its own base ("herd-test-<pid>-<n>") and a guard that kills and
//! removes exactly that tree in every hierarchy, also on failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use herd_runtime::cgroups::{
    CgroupLayout, CgroupManager, PodCgroupResources, detect_layout, parse_oom_kill_count,
};
use herd_runtime::types::QosClass;

const ROOT: &str = "/sys/fs/cgroup";

fn root_or_skip(test: &str) -> bool {
    herd_integration::root_or_skip(test, "cgroup writes")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Removes `<hierarchy>/<base>` everywhere under the root when dropped.
struct TreeGuard {
    base: String,
    children: Vec<Child>,
}

impl TreeGuard {
    fn new() -> TreeGuard {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        TreeGuard {
            base: format!("herd-test-{}-{n}", std::process::id()),
            children: Vec::new(),
        }
    }

    /// Directories where the base lives: the root itself on v2, every
    /// hierarchy on v1.
    fn dirs(&self) -> Vec<PathBuf> {
        let root = Path::new(ROOT);
        if detect_layout(root).ok() == Some(CgroupLayout::Unified) {
            return vec![root.join(&self.base)];
        }
        let mut out = Vec::new();
        for e in fs::read_dir(root).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(e.path().join(&self.base));
            }
        }
        out
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

impl Drop for TreeGuard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for top in self.dirs() {
            let mut dirs = Vec::new();
            post_order(&top, &mut dirs);
            for d in dirs {
                while let Err(e) = fs::remove_dir(&d) {
                    if e.kind() == ErrorKind::NotFound || Instant::now() > deadline {
                        if e.kind() != ErrorKind::NotFound {
                            eprintln!("guard: cannot remove {}: {e}", d.display());
                        }
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

/// A shell that waits for a line on stdin, then runs `script`: moved into
/// its cgroup first, so what it allocates afterwards is charged there.
fn spawn_waiting(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

/// Writes `pid` into `cgroup.procs` of `cgroup` in every directory
/// `guard.dirs()` lists (v1: all hierarchies, as runc does).
fn move_into(guard: &TreeGuard, rel_below_base: &str, pid: u32) {
    for top in guard.dirs() {
        let procs = top.join(rel_below_base).join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", procs.display()));
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

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("read {}: {e}", p.as_ref().display()))
        .trim()
        .to_string()
}

#[test]
fn pod_cgroup_lifecycle_on_the_host() {
    if !root_or_skip("pod_cgroup_lifecycle_on_the_host") {
        return;
    }
    let mut guard = TreeGuard::new();
    let root = Path::new(ROOT);
    let layout = detect_layout(root).unwrap();
    eprintln!("layout: {layout:?}");
    let m = CgroupManager::detect(root, &guard.base).unwrap();
    assert_eq!(m.layout(), layout);

    let t = Instant::now();
    m.ensure_hierarchy().unwrap();
    eprintln!("ensure_hierarchy: {:?}", t.elapsed());
    let uid = "0f3c-life";
    let r = PodCgroupResources {
        cpu_shares: 512,
        cpu_quota: Some(50_000),
        cpu_period: 100_000,
        memory_limit: Some(256 << 20),
        pids_limit: Some(32),
    };
    let t = Instant::now();
    m.create_pod(uid, QosClass::Burstable, &r).unwrap();
    eprintln!("create_pod: {:?}", t.elapsed());
    let t = Instant::now();
    m.create_pod(uid, QosClass::Burstable, &r).unwrap();
    eprintln!("create_pod again (idempotent): {:?}", t.elapsed());
    let pod = m.pod_cgroup(uid, QosClass::Burstable);
    let rel = pod.trim_start_matches('/');
    let pod_rel = format!("burstable/pod{uid}");

    // The limits are in the kernel's files.
    let proc_cgroup = match layout {
        CgroupLayout::Unified => {
            let d = root.join(rel);
            assert_eq!(read(d.join("cpu.weight")), "20");
            assert_eq!(read(d.join("cpu.max")), "50000 100000");
            assert_eq!(read(d.join("memory.max")), (256u64 << 20).to_string());
            assert_eq!(read(d.join("pids.max")), "32");
            // Processes go into a leaf below the pod (no internal processes).
            fs::create_dir(d.join("c1")).unwrap();
            format!("{pod_rel}/c1")
        }
        CgroupLayout::Hybrid | CgroupLayout::Legacy => {
            assert_eq!(read(root.join("cpu").join(rel).join("cpu.shares")), "512");
            assert_eq!(
                read(root.join("cpu").join(rel).join("cpu.cfs_quota_us")),
                "50000"
            );
            assert_eq!(
                read(root.join("cpu").join(rel).join("cpu.cfs_period_us")),
                "100000"
            );
            assert_eq!(
                read(root.join("memory").join(rel).join("memory.limit_in_bytes")),
                (256u64 << 20).to_string()
            );
            assert_eq!(read(root.join("pids").join(rel).join("pids.max")), "32");
            assert_eq!(
                read(
                    root.join("cpu")
                        .join(&guard.base)
                        .join("besteffort/cpu.shares")
                ),
                "2"
            );
            pod_rel.clone()
        }
    };
    assert!(
        m.list_pods()
            .unwrap()
            .contains(&(uid.to_string(), QosClass::Burstable))
    );

    // A real process in the pod: memory charged, one pid.
    let mut child = spawn_waiting("exec sleep 60");
    let pid = child.id();
    move_into(&guard, &proc_cgroup, pid);
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    guard.children.push(child);
    let stats = poll("sleep to run in the pod", Duration::from_secs(5), || {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let s = m.stats(&pod).ok()?;
        (comm.trim() == "sleep" && s.memory_usage_bytes > 0).then_some(s)
    });
    eprintln!("pod stats with sleep inside: {stats:?}");
    assert_eq!(stats.pids, 1);
    assert!(stats.memory_working_set_bytes <= stats.memory_usage_bytes);
    assert_eq!(stats.oom_kills, 0);

    // remove_pod kills it and removes every directory.
    let t = Instant::now();
    m.remove_pod(uid, QosClass::Burstable).unwrap();
    eprintln!("remove_pod with a live process: {:?}", t.elapsed());
    let status = guard.children.pop().unwrap().wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    for top in guard.dirs() {
        assert!(
            !top.join(&pod_rel).exists(),
            "{} left behind",
            top.join(&pod_rel).display()
        );
    }
    assert!(m.list_pods().unwrap().is_empty());
    m.remove_pod(uid, QosClass::Burstable).unwrap();

    m.remove_tree().unwrap();
    for top in guard.dirs() {
        assert!(!top.exists(), "{} left behind", top.display());
    }
}

#[test]
fn oom_kill_is_counted_on_the_host() {
    if !root_or_skip("oom_kill_is_counted_on_the_host") {
        return;
    }
    let mut guard = TreeGuard::new();
    let root = Path::new(ROOT);
    let m = CgroupManager::detect(root, &guard.base).unwrap();
    m.ensure_hierarchy().unwrap();
    let uid = "0f3c-oom";
    let r = PodCgroupResources {
        memory_limit: Some(16 << 20),
        cpu_shares: 1024,
        cpu_quota: Some(100_000),
        ..PodCgroupResources::unlimited()
    };
    m.create_pod(uid, QosClass::Guaranteed, &r).unwrap();
    let pod = m.pod_cgroup(uid, QosClass::Guaranteed);
    let mut proc_rel = format!("pod{uid}");
    if m.layout() == CgroupLayout::Unified {
        fs::create_dir(root.join(pod.trim_start_matches('/')).join("c1")).unwrap();
        proc_rel.push_str("/c1");
    }
    assert_eq!(m.oom_kill_count(&pod).unwrap(), 0);

    // tail keeps the last "line" of 64 MiB of zeros: far past 16 MiB.
    let mut child = spawn_waiting("head -c 64M /dev/zero | tail > /dev/null");
    move_into(&guard, &proc_rel, child.id());
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    guard.children.push(child);
    let status = poll("the shell to finish", Duration::from_secs(20), || {
        guard.children.last_mut().unwrap().try_wait().unwrap()
    });
    assert!(
        !status.success(),
        "the pipeline must not survive: {status:?}"
    );
    let kills = poll("oom_kill to count", Duration::from_secs(5), || {
        let n = m.oom_kill_count(&pod).unwrap();
        (n > 0).then_some(n)
    });
    eprintln!("oom kills: {kills}");
    assert_eq!(m.stats(&pod).unwrap().oom_kills, kills);
    // The monitor's view: the counter file of the cgroup the victim was in.
    let file = m.oom_counter_file(&format!("/{}/{proc_rel}", guard.base));
    assert!(
        parse_oom_kill_count(&read(&file)) >= 1,
        "{}",
        file.display()
    );

    guard.children.clear();
    m.remove_pod(uid, QosClass::Guaranteed).unwrap();
    m.remove_tree().unwrap();
    for top in guard.dirs() {
        assert!(!top.exists(), "{} left behind", top.display());
    }
}

/// Not a timed test: prints the cost of pod cgroup create/remove over 200
/// pods (run with `--ignored --nocapture`); asserts only that all of them
/// came and went.
#[test]
#[ignore = "benchmark"]
fn bench_pod_cgroup_create_remove() {
    if !root_or_skip("bench_pod_cgroup_create_remove") {
        return;
    }
    let guard = TreeGuard::new();
    let m = CgroupManager::detect(Path::new(ROOT), &guard.base).unwrap();
    m.ensure_hierarchy().unwrap();
    let r = PodCgroupResources {
        cpu_shares: 512,
        cpu_quota: Some(50_000),
        cpu_period: 100_000,
        memory_limit: Some(256 << 20),
        pids_limit: Some(32),
    };
    let n = 200;
    let (mut create, mut remove) = (Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        m.create_pod(&format!("b{i}"), QosClass::Burstable, &r)
            .unwrap();
        create.push(t.elapsed());
    }
    assert_eq!(m.list_pods().unwrap().len(), n);
    for i in 0..n {
        let t = Instant::now();
        m.remove_pod(&format!("b{i}"), QosClass::Burstable).unwrap();
        remove.push(t.elapsed());
    }
    assert!(m.list_pods().unwrap().is_empty());
    m.remove_tree().unwrap();
    for (what, v) in [
        ("create_pod", &mut create),
        ("remove_pod (empty)", &mut remove),
    ] {
        v.sort();
        eprintln!(
            "{what} over {n} pods: median {:?}, p99 {:?}, max {:?}",
            v[n / 2],
            v[n * 99 / 100],
            v[n - 1]
        );
    }
}
