//! Which binary runs the per-pod monitors, as root: with `herd-monitor`
//! built next to `herd` (the workspace build puts both in the same target
//! dir), every monitor and PID-namespace holder of the agent's pods is that
//! binary, not `herd` re-executed; a `--monitor-path` that does not work
//! stops the agent at start-up with the path and the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_integration::agent::{Agent, AgentOpts, pids_with_cmdline, pod, sh_container};
use serde_json::json;

fn exe_of(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

fn running(p: &serde_json::Value) -> bool {
    p["status"]["phase"] == "Running"
}

#[test]
fn pods_run_under_the_standalone_monitor() {
    if !herd_integration::root_or_skip("monmon", "runc, cgroups, mounts, network namespaces") {
        return;
    }
    let herd = Path::new(env!("CARGO_BIN_EXE_herd"));
    let standalone = herd.with_file_name("herd-monitor");
    assert!(
        standalone.exists(),
        "{} is missing: build the workspace (cargo build --workspace), not only herd-agent",
        standalone.display()
    );
    let standalone = standalone.canonicalize().unwrap();
    let a = Agent::start(herd, "monmon", AgentOpts::default()).unwrap();
    let tgp = json!(0);
    a.create(&pod(
        "plain",
        json!({"terminationGracePeriodSeconds": tgp, "containers": [sh_container("c", "exec sleep 3600")]}),
    ))
    .unwrap();
    a.create(&pod(
        "shared",
        json!({"terminationGracePeriodSeconds": tgp, "shareProcessNamespace": true,
               "containers": [sh_container("c", "exec sleep 3600")]}),
    ))
    .unwrap();
    for name in ["plain", "shared"] {
        a.wait_pod(name, Duration::from_secs(60), running).unwrap();
    }
    let run = a.run_dir().to_string_lossy().into_owned();
    let monitors = pids_with_cmdline(&["--pod-dir", &run]);
    assert_eq!(monitors.len(), 2, "one monitor per pod: {monitors:?}");
    for pid in &monitors {
        assert_eq!(exe_of(*pid), standalone, "monitor {pid}");
    }
    let holders = pids_with_cmdline(&["--pid-holder", &standalone.to_string_lossy()]);
    assert_eq!(holders.len(), 1, "the shared pod's PID 1: {holders:?}");
    assert!(
        a.agent_log().contains("per-pod monitor"),
        "the agent names its monitor:\n{}",
        a.agent_log()
    );
    for name in ["plain", "shared"] {
        a.delete_pod(name, Some(0)).unwrap();
        a.wait_gone(name, Duration::from_secs(30)).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pids_with_cmdline(&["--pod-dir", &run]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "monitors outlived their pods"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_monitor_path_that_does_not_work_stops_the_agent() {
    if !herd_integration::root_or_skip("monbad", "network namespaces") {
        return;
    }
    let missing = format!("/nonexistent/herd-monitor-{}", std::process::id());
    let opts = AgentOpts {
        no_wait: true,
        ..AgentOpts::default()
    }
    .arg("--monitor-path", &missing);
    let mut a = Agent::start(env!("CARGO_BIN_EXE_herd"), "monbad", opts).unwrap();
    let code = a.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}");
    let log = a.agent_log();
    assert!(
        log.contains("choosing the per-pod monitor") && log.contains(&missing),
        "{log}"
    );
}
