//! Root integration tests of the per-pod monitor with real runc and a
//! busybox bundle: exit codes, CRI logs, SIGKILL, agent death, zombies,
//! garbage on the socket, tty containers, OOM kills, log rotation, shutdown, start
//! latency and the monitor's RSS (numbers are printed).
//!
//! Run as root: `cargo test -p herd-runtime --test monitor_runc -- --nocapture`.
//! For the 2 MB RSS check against a static release build:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release
//! --target x86_64-unknown-linux-gnu -p herd-runtime --bin herd-monitor-test`,
//! then run the tests with `HERD_MONITOR_TEST_EXE=<that binary>`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use herd_runtime::logs::{Stream, read_log};
use herd_runtime::monitor::state::read_exit;
use herd_runtime::monitor::sys::vm_rss_kib;
use herd_runtime::monitor::{MonitorClient, StartContainer, spawn_monitor};
use herd_runtime::oci::{OciRuntime, RuntimeBinary, RuntimeKind};
use herd_runtime::types::LogLimits;

const MONITOR_EXE: &str = env!("CARGO_BIN_EXE_herd-monitor-test");
const AGENT_ENV: &str = "HERD_MONITOR_TEST_AGENT_POD";
/// Runs the tests against another monitor build (e.g. a release or static
/// one, for the RSS measurement).
const EXE_ENV: &str = "HERD_MONITOR_TEST_EXE";

fn monitor_exe() -> PathBuf {
    std::env::var_os(EXE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MONITOR_EXE))
}

fn root_or_skip(test: &str) -> bool {
    herd_integration::root_or_skip(test, "runc, cgroups")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn cgroup_name(id: &str) -> String {
    format!("herdtest-{id}")
}

/// A temp dir with a busybox rootfs, a runc state root and bundles; on
/// drop: runc delete, monitors killed, cgroups removed by exact name.
struct Fixture {
    dir: tempfile::TempDir,
    runtime: RuntimeBinary,
    ids: Vec<String>,
    monitors: Vec<PathBuf>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("hmon")
            .tempdir_in("/tmp")
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for d in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
            }
        }
        let runtime = RuntimeBinary {
            kind: RuntimeKind::Runc,
            path: PathBuf::from("/usr/sbin/runc"),
            root: dir.path().join("runc"),
        };
        Fixture {
            dir,
            runtime,
            ids: Vec::new(),
            monitors: Vec::new(),
        }
    }

    fn pod_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self, pod: &str) -> MonitorClient {
        let pod_dir = self.pod_dir(pod);
        self.monitors.push(pod_dir.clone());
        spawn_monitor(&monitor_exe(), &[], &pod_dir).unwrap()
    }

    /// A bundle running `args`; returns (id, bundle).
    fn bundle(&mut self, args: &[&str], tty: bool) -> (String, PathBuf) {
        self.bundle_with(args, tty, |_| {})
    }

    fn bundle_with(
        &mut self,
        args: &[&str],
        tty: bool,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> (String, PathBuf) {
        let id = format!(
            "hm{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let bundle = self.dir.path().join("bundles").join(&id);
        std::fs::create_dir_all(&bundle).unwrap();
        let st = Command::new(&self.runtime.path)
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle)
            .status()
            .unwrap();
        assert!(st.success());
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        cfg["process"]["args"] = serde_json::json!(args);
        cfg["process"]["terminal"] = serde_json::json!(tty);
        cfg["root"]["path"] = serde_json::json!(self.dir.path().join("rootfs"));
        cfg["linux"]["cgroupsPath"] = serde_json::json!(format!("/{}", cgroup_name(&id)));
        edit(&mut cfg);
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        self.ids.push(id.clone());
        (id, bundle)
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("logs").join(id).join("0.log")
    }

    fn start_req(&self, id: &str, bundle: &Path, tty: bool) -> StartContainer {
        StartContainer {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            runtime: self.runtime.clone(),
            log_path: self.log_path(id),
            log_limits: LogLimits::default(),
            oom_counter_file: Some(PathBuf::from(format!(
                "/sys/fs/cgroup/memory/{}/memory.oom_control",
                cgroup_name(id)
            ))),
            tty,
            stdin: false,
        }
    }

    fn oci(&self) -> OciRuntime {
        OciRuntime::new(self.runtime.clone())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let oci = self.oci();
        for id in &self.ids {
            let _ = oci.delete(id, true);
        }
        for pod in &self.monitors {
            if let Ok(pid) = std::fs::read_to_string(pod.join("monitor.pid"))
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                // Only if it is still our monitor (pid reuse).
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&*pod.to_string_lossy()) {
                    // SAFETY: plain kill(2) of a pid we checked.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hier.flatten() {
                for id in &self.ids {
                    let _ = std::fs::remove_dir(h.path().join(cgroup_name(id)));
                }
            }
        }
    }
}

fn entries(path: &Path) -> Vec<(Stream, String)> {
    read_log(path)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (e.stream, String::from_utf8(e.content).unwrap()))
        .collect()
}

/// Children of `ppid` in zombie state.
fn zombies_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) S ppid ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let parent: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if parent == ppid && state == "Z" {
            out.push(pid);
        }
    }
    out
}

fn gone_or_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn exit_code_logs_and_no_zombies() {
    if !root_or_skip("exit_code_logs_and_no_zombies") {
        return;
    }
    let mut fx = Fixture::new();
    let client = fx.spawn("pod");
    let (id, bundle) = fx.bundle(
        &[
            "sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2; printf 'no newline'; exit 3",
        ],
        false,
    );
    let pid = client
        .start_container(fx.start_req(&id, &bundle, false))
        .unwrap();
    assert!(pid > 0);
    let exit = client.wait(&id, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (3, None, false)
    );
    assert_eq!(
        read_exit(client.pod_dir(), &id).unwrap(),
        Some(exit.clone())
    );
    let started = herd_runtime::monitor::state::read_started(client.pod_dir(), &id)
        .unwrap()
        .unwrap();
    assert_eq!(started.pid, pid);
    // Logs are complete once the exit is recorded.
    let got = entries(&fx.log_path(&id));
    let mut out: Vec<&str> = got
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    out.sort();
    assert_eq!(out, ["no newline", "out1", "out2"]);
    let err: Vec<&str> = got
        .iter()
        .filter(|(s, _)| *s == Stream::Stderr)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(err, ["err1"]);
    let raw = std::fs::read_to_string(fx.log_path(&id)).unwrap();
    assert!(
        raw.lines().any(|l| l.ends_with(" stdout P no newline")),
        "{raw}"
    );
    assert!(raw.lines().any(|l| l.ends_with(" stderr F err1")), "{raw}");
    // Wait again returns at once; List reports it.
    assert_eq!(
        client.wait(&id, Some(Duration::from_secs(1))).unwrap(),
        exit
    );
    let list = client.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].exit, Some(exit));
    let mpid = client.pid().unwrap();
    assert!(zombies_of(mpid).is_empty(), "zombies under monitor {mpid}");

    // Shutdown with nothing running: the monitor exits and cleans up.
    assert_eq!(client.shutdown().unwrap(), 0);
    wait_until("monitor exit", Duration::from_secs(10), || {
        gone_or_zombie(mpid)
    });
    assert!(!client.pod_dir().join("monitor.sock").exists());
}

#[test]
fn sigkill_is_137_and_oom_counter_unchanged() {
    if !root_or_skip("sigkill_is_137_and_oom_counter_unchanged") {
        return;
    }
    let mut fx = Fixture::new();
    let client = fx.spawn("pod");
    let (id, bundle) = fx.bundle(&["sleep", "1000"], false);
    client
        .start_container(fx.start_req(&id, &bundle, false))
        .unwrap();
    let list = client.list().unwrap();
    assert_eq!(list[0].exit, None);
    fx.oci().kill(&id, libc::SIGKILL, false).unwrap();
    let exit = client.wait(&id, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (137, Some(9), false)
    );
    assert!(zombies_of(client.pid().unwrap()).is_empty());
}

/// Acts as the "agent" for `monitor_survives_agent_death` when re-executed
/// with `HERD_MONITOR_TEST_AGENT_POD` set: spawns a monitor, starts a
/// container, reports, then waits to be killed. Without the variable it
/// only checks that the variable is absent.
#[test]
fn agent_helper() {
    let Some(spec) = std::env::var_os(AGENT_ENV) else {
        assert!(std::env::var_os(AGENT_ENV).is_none());
        return;
    };
    let req: StartContainer = serde_json::from_str(&spec.to_string_lossy()).unwrap();
    let pod_dir = PathBuf::from(std::env::var_os("HERD_MONITOR_TEST_POD_DIR").unwrap());
    let client = spawn_monitor(&monitor_exe(), &[] as &[OsString], &pod_dir).unwrap();
    let pid = client.start_container(req).unwrap();
    // Straight to fd 1: print! would be captured by the test harness.
    let mut out = std::io::stdout();
    out.write_all(format!("STARTED {pid}\n").as_bytes())
        .unwrap();
    out.flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn monitor_survives_agent_death() {
    if !root_or_skip("monitor_survives_agent_death") {
        return;
    }
    let mut fx = Fixture::new();
    let pod_dir = fx.pod_dir("pod");
    fx.monitors.push(pod_dir.clone());
    let (id, bundle) = fx.bundle(&["sh", "-c", "echo before; exec sleep 1000"], false);
    let req = fx.start_req(&id, &bundle, false);
    let mut agent = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "agent_helper", "--nocapture", "--test-threads=1"])
        .env(AGENT_ENV, serde_json::to_string(&req).unwrap())
        .env("HERD_MONITOR_TEST_POD_DIR", &pod_dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(agent.stdout.take().unwrap());
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "agent helper ended early"
        );
        // libtest may have printed "test agent_helper ... " on this line.
        if line.contains("STARTED ") {
            break;
        }
    }
    let cpid: u32 = line
        .rsplit("STARTED ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();

    let client = MonitorClient::connect(&pod_dir).unwrap();
    let mpid = client.pid().unwrap();
    let list = client.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].pid, list[0].exit.clone()), (cpid, None));
    // The monitor is the container's parent, not the dead agent's.
    let stat = std::fs::read_to_string(format!("/proc/{cpid}/stat")).unwrap();
    let ppid: u32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, mpid);
    fx.oci().kill(&id, libc::SIGKILL, false).unwrap();
    let exit = client.wait(&id, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(exit.exit_code, 137);
    assert_eq!(
        entries(&fx.log_path(&id)),
        [(Stream::Stdout, "before".to_string())]
    );
}

#[test]
fn garbage_on_the_socket_is_survived() {
    if !root_or_skip("garbage_on_the_socket_is_survived") {
        return;
    }
    let mut fx = Fixture::new();
    let client = fx.spawn("pod");
    let sock = client.pod_dir().join("monitor.sock");
    let reply = |s: &mut UnixStream| {
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        line
    };
    // Not JSON, wrong JSON, invalid UTF-8: an error each, connection kept.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for bad in [
        &b"hello\n"[..],
        b"{\"type\":\"Nope\"}\n",
        b"\xff\xfe\n",
        b"{\"type\":\"Wait\"}\n",
    ] {
        s.write_all(bad).unwrap();
        let r = reply(&mut s);
        assert!(r.contains("\"Error\""), "{r}");
    }
    s.write_all(b"{\"type\":\"Wait\",\"id\":\"nope\"}\n")
        .unwrap();
    assert!(reply(&mut s).contains("unknown container"));
    // Oversized: an error, then the connection is closed.
    let mut s2 = UnixStream::connect(&sock).unwrap();
    s2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let big = vec![b'x'; 200 * 1024];
    let _ = s2.write_all(&big);
    let mut all = Vec::new();
    let _ = s2.read_to_end(&mut all);
    assert!(String::from_utf8_lossy(&all).contains("longer than"));
    // Partial message then hang-up; many idle connections.
    let mut s3 = UnixStream::connect(&sock).unwrap();
    s3.write_all(b"{\"type\":\"Li").unwrap();
    drop(s3);
    let idle: Vec<UnixStream> = (0..100)
        .filter_map(|_| UnixStream::connect(&sock).ok())
        .collect();
    drop(idle);
    // Still serving.
    assert!(client.list().unwrap().is_empty());
    // Bad start requests are errors, not crashes.
    let mut req = fx.start_req("bad/id", Path::new("/nonexistent"), false);
    assert!(client.start_container(req.clone()).is_err());
    req.id = "okid".into();
    req.bundle = PathBuf::from("relative");
    assert!(client.start_container(req.clone()).is_err());
    req.bundle = fx.dir.path().join("no-such-bundle");
    let err = client.start_container(req).unwrap_err();
    assert!(err.to_string().contains("runc"), "{err}");
    assert!(client.list().unwrap().is_empty());
}

#[test]
fn tty_container_output_is_logged() {
    if !root_or_skip("tty_container_output_is_logged") {
        return;
    }
    let mut fx = Fixture::new();
    let client = fx.spawn("pod");
    let (id, bundle) = fx.bundle(&["sh", "-c", "echo hello-tty; tty; exit 5"], true);
    client
        .start_container(fx.start_req(&id, &bundle, true))
        .unwrap();
    let exit = client.wait(&id, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(exit.exit_code, 5);
    let got = entries(&fx.log_path(&id));
    assert_eq!(got[0], (Stream::Stdout, "hello-tty".to_string()));
    assert!(got[1].1.starts_with("/dev/pts/"), "{got:?}");
}

#[test]
fn idle_monitor_rss() {
    if !root_or_skip("idle_monitor_rss") {
        return;
    }
    let mut fx = Fixture::new();
    let client = fx.spawn("pod");
    let (id, bundle) = fx.bundle(&["sh", "-c", "echo up; exec sleep 1000"], false);
    let cpid = client
        .start_container(fx.start_req(&id, &bundle, false))
        .unwrap();
    wait_until("first log line", Duration::from_secs(10), || {
        read_log(&fx.log_path(&id))
            .map(|r| !r.entries.is_empty())
            .unwrap_or(false)
    });
    wait_until("exec sleep", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{cpid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    // The monitor blocks SIGCHLD/SIGTERM/SIGINT for its signalfd: the
    // container must not inherit that mask (it would ignore SIGTERM).
    let status = std::fs::read_to_string(format!("/proc/{cpid}/status")).unwrap();
    let blocked = status.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
    assert!(blocked.ends_with("0000000000000000"), "{blocked}");
    let mpid = client.pid().unwrap();
    let rss = vm_rss_kib(Path::new("/proc"), mpid).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{mpid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_default()
    };
    let rollup = std::fs::read_to_string(format!("/proc/{mpid}/smaps_rollup")).unwrap_or_default();
    let pss = rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .unwrap_or("Pss: ?")
        .to_string();
    let optimised = !cfg!(debug_assertions) || std::env::var_os(EXE_ENV).is_some();
    let profile = if optimised { "optimised" } else { "debug" };
    println!(
        "monitor ({profile} build) with one running container: VmRSS {rss} KiB (RssAnon {}, RssFile {}), {pss}",
        field("RssAnon:"),
        field("RssFile:")
    );
    // The 2 MB goal is for an optimised, statically linked build (set
    // HERD_MONITOR_TEST_EXE to one): measured 1.5 MB. Dynamically linked,
    // libc.so and ld.so alone put ~1.3 MB of shared file pages in VmRSS
    // (measured 2.3 MB VmRSS, 0.6 MB Pss); a debug build's text and
    // relocations add another ~1 MB.
    let limit = if optimised { 2048 } else { 4096 };
    assert!(
        rss < limit,
        "monitor RSS {rss} KiB is not under {limit} KiB ({profile} build)"
    );
    fx.oci().kill(&id, libc::SIGKILL, false).unwrap();
    client.wait(&id, Some(Duration::from_secs(30))).unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Prints the start latency through the monitor next to raw `runc run
/// --detach` of the same bundle contents (a measurement, not a timed
/// assertion: the benchmark in integration/ is the reference).
#[test]
fn start_latency_vs_raw_runc() {
    if !root_or_skip("start_latency_vs_raw_runc") {
        return;
    }
    let mut fx = Fixture::new();
    let client = fx.spawn("pod");
    let oci = fx.oci();
    let (mut raw, mut via) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let (id, bundle) = fx.bundle(&["sleep", "1000"], false);
        let null = || {
            std::fs::File::options()
                .write(true)
                .open("/dev/null")
                .unwrap()
                .into()
        };
        let t = Instant::now();
        let stdio = herd_runtime::oci::ContainerStdio {
            stdin: None,
            stdout: null(),
            stderr: null(),
        };
        oci.run_detached(&id, &bundle, stdio, None).unwrap();
        raw.push(t.elapsed());
        let (id, bundle) = fx.bundle(&["sleep", "1000"], false);
        let t = Instant::now();
        client
            .start_container(fx.start_req(&id, &bundle, false))
            .unwrap();
        via.push(t.elapsed());
    }
    let (r, m) = (median(raw), median(via));
    println!("start latency median: raw runc {r:?}, via monitor {m:?}");
    let running = client
        .list()
        .unwrap()
        .iter()
        .filter(|c| c.exit.is_none())
        .count();
    assert_eq!(running, 10);
    let rss = vm_rss_kib(Path::new("/proc"), client.pid().unwrap()).unwrap();
    println!("monitor VmRSS with 10 running containers: {rss} KiB");
}

#[test]
fn oom_kill_is_reported() {
    if !root_or_skip("oom_kill_is_reported") {
        return;
    }
    let mut fx = Fixture::new();
    let client = fx.spawn("pod");
    // 64 MiB into a shell variable under a 16 MiB limit (no swap here).
    let (id, bundle) = fx.bundle_with(
        &[
            "sh",
            "-c",
            "echo filling; x=$(yes | head -c 67108864); echo survived",
        ],
        false,
        |cfg| cfg["linux"]["resources"]["memory"] = serde_json::json!({"limit": 16 << 20}),
    );
    client
        .start_container(fx.start_req(&id, &bundle, false))
        .unwrap();
    let exit = client.wait(&id, Some(Duration::from_secs(60))).unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.exit_code, 137, "{exit:?}");
    assert_eq!(
        entries(&fx.log_path(&id)),
        [(Stream::Stdout, "filling".to_string())]
    );
}

#[test]
fn logs_rotate_while_the_container_writes() {
    if !root_or_skip("logs_rotate_while_the_container_writes") {
        return;
    }
    let mut fx = Fixture::new();
    let client = fx.spawn("pod");
    let (id, bundle) = fx.bundle(
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done",
        ],
        false,
    );
    let mut req = fx.start_req(&id, &bundle, false);
    req.log_limits = LogLimits {
        max_size_bytes: 64 * 1024,
        max_files: 3,
    };
    client.start_container(req).unwrap();
    let exit = client.wait(&id, Some(Duration::from_secs(60))).unwrap();
    assert_eq!(exit.exit_code, 0);
    let path = fx.log_path(&id);
    let files = herd_runtime::logs::log_files(&path).unwrap();
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 64 * 1024, "{f:?}");
    }
    // What is kept is the end of the output, every line once, in order.
    let got = entries(&path);
    assert_eq!(got.last().unwrap().1, "line 19999");
    let first: usize = got[0].1.trim_start_matches("line ").parse().unwrap();
    let expect: Vec<String> = (first..20000).map(|i| format!("line {i}")).collect();
    let lines: Vec<String> = got.into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines, expect);
}
