//! `herd agent` SIGKILLed and restarted mid-lifecycle, as root: a running
//! pod keeps its container process and restartCount 0, a crash-looping pod
//! carries on with its count, a pod in its init phase finishes it without
//! rerunning it, and a static pod whose file was removed while the agent
//! was down is cleaned up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use herd_integration::agent::{
    Agent, AgentOpts, IMAGE, condition, container_status, pids_with_cmdline, pod, sh_container,
};
use serde_json::{Value, json};

fn restarts(p: &Value, c: &str) -> u64 {
    container_status(p, c).map_or(0, |c| c["restartCount"].as_u64().unwrap_or(0))
}

/// The single host pid running `sleep <marker>`, waiting for it.
fn sleeper(marker: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = pids_with_cmdline(&["sleep", marker]);
        if pids.len() == 1 {
            return pids[0];
        }
        assert!(Instant::now() < deadline, "sleep {marker}: pids {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn restarted_agent_converges_without_restarting_healthy_containers() {
    if !herd_integration::root_or_skip("agentrestart", "runc, cgroups, mounts, network namespaces")
    {
        return;
    }
    let opts = AgentOpts::default()
        .arg("--backoff-base", "1s")
        .arg("--backoff-max", "2s");
    let mut a = Agent::start(env!("CARGO_BIN_EXE_herd"), "agentrestart", opts).unwrap();
    let tag = format!("{}{}", std::process::id(), a.name.len());
    let steady = format!("36{tag}1");
    let stat = format!("36{tag}2");
    let tgp = json!(0);
    a.create(&pod(
        "steady",
        json!({"terminationGracePeriodSeconds": tgp, "containers": [sh_container("c", &format!("exec sleep {steady}"))]}),
    ))
    .unwrap();
    a.create(&pod(
        "crash",
        json!({"terminationGracePeriodSeconds": tgp, "containers": [sh_container("c", "exit 1")]}),
    ))
    .unwrap();
    std::fs::write(
        a.manifests_dir().join("static.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [sleep, \"{stat}\"]\n"
        ),
    )
    .unwrap();
    let mirror = format!("static-{}", a.node_name);
    let t = Duration::from_secs(30);
    let before = a
        .wait_pod("steady", t, |p| condition(p, "Ready") == Some("True"))
        .unwrap();
    let pid = sleeper(&steady);
    a.wait_pod(&mirror, t, |p| p["status"]["phase"] == "Running")
        .unwrap();
    let static_pid = sleeper(&stat);
    let crash = a.wait_pod("crash", t, |p| restarts(p, "c") >= 2).unwrap();
    let crash_count = restarts(&crash, "c");

    a.kill9().unwrap();
    // While the agent is down: the static pod's file goes away, and a pod
    // with a slow init container cannot be started.
    std::fs::remove_file(a.manifests_dir().join("static.yaml")).unwrap();
    a.restart().unwrap();

    // A pod in the middle of its init container when the agent dies.
    let mut init = sh_container("init", "echo ran >> /work/runs; sleep 2");
    init["volumeMounts"] = json!([{"name": "w", "mountPath": "/work"}]);
    let mut main = sh_container("main", "cat /work/runs; exec sleep 3600");
    main["volumeMounts"] = init["volumeMounts"].clone();
    a.create(&pod(
        "initing",
        json!({"terminationGracePeriodSeconds": 0, "initContainers": [init], "containers": [main],
               "volumes": [{"name": "w", "emptyDir": {}}]}),
    ))
    .unwrap();
    a.wait_pod("initing", t, |p| {
        container_status(p, "init").is_some_and(|c| c["state"]["running"].is_object())
    })
    .unwrap();
    a.kill9().unwrap();
    a.restart().unwrap();

    // The crash loop carries on: proof the restarted agent reconciles.
    a.wait_pod("crash", t, |p| restarts(p, "c") > crash_count)
        .unwrap();
    let p = a
        .wait_pod("initing", t, |p| p["status"]["phase"] == "Running")
        .unwrap();
    assert_eq!(restarts(&p, "init"), 0, "init container rerun");
    assert_eq!(
        a.logs("initing", "main", false).unwrap(),
        "ran\n",
        "init ran twice"
    );

    let p = a.get_pod("steady").unwrap().unwrap();
    assert_eq!(restarts(&p, "c"), 0, "healthy container restarted");
    assert_eq!(condition(&p, "Ready"), Some("True"));
    assert_eq!(
        container_status(&p, "c").unwrap()["containerID"],
        container_status(&before, "c").unwrap()["containerID"]
    );
    assert_eq!(p["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(sleeper(&steady), pid, "container process replaced");

    a.wait_gone(&mirror, t).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{static_pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "removed static pod's container {static_pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
