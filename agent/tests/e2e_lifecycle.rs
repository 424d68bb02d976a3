//! End to end, as root, against a real `herd agent` in its own network
//! namespace (herd_integration::agent): crash-loop backoff, restart
//! policies, init order, sidecars, graceful and forced termination, hooks,
//! and the status fields Kubernetes reports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead;
use std::time::{Duration, Instant};

use herd_integration::agent::{Agent, AgentOpts, condition, container_status, pod, sh_container};
use serde_json::{Value, json};

fn agent(test: &str, opts: AgentOpts) -> Option<Agent> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
        return None;
    }
    Some(Agent::start(env!("CARGO_BIN_EXE_herd"), test, opts).unwrap())
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
        .parse()
        .unwrap()
}

fn secs(a: jiff::Timestamp, b: jiff::Timestamp) -> f64 {
    (b.as_millisecond() - a.as_millisecond()) as f64 / 1000.0
}

#[test]
fn crash_loop_backoff_doubles_to_the_cap() {
    let opts = AgentOpts::default()
        .arg("--backoff-base", "1s")
        .arg("--backoff-max", "4s");
    let Some(a) = agent("crashloop", opts) else {
        return;
    };
    let spec =
        json!({"containers": [sh_container("c", "exit 1")], "terminationGracePeriodSeconds": 0});
    a.create(&pod("crash", spec)).unwrap();
    // attempt → (startedAt, finishedAt), from lastState after each restart.
    let mut attempts = std::collections::BTreeMap::new();
    let mut saw_backoff = false;
    a.wait_pod("crash", Duration::from_secs(60), |p| {
        let Some(c) = container_status(p, "c") else {
            return false;
        };
        let n = c["restartCount"].as_u64().unwrap_or(0);
        if c["state"]["waiting"]["reason"] == "CrashLoopBackOff" {
            saw_backoff = true;
        }
        // lastState is the run before the current one while it runs, and
        // the current run itself while it waits to be restarted.
        let last = &c["lastState"]["terminated"];
        let attempt = if c["state"]["running"].is_object() {
            n.checked_sub(1)
        } else if c["state"]["waiting"].is_object() {
            Some(n)
        } else {
            None
        };
        if let Some(k) = attempt
            && last.is_object()
        {
            assert_eq!(last["exitCode"], 1, "lastState: {last}");
            assert_eq!(last["reason"], "Error", "lastState: {last}");
            attempts.insert(k, (ts(&last["startedAt"]), ts(&last["finishedAt"])));
        }
        n >= 6
    })
    .unwrap();
    assert!(saw_backoff, "never saw waiting.reason CrashLoopBackOff");
    for k in 1..=4u64 {
        assert!(
            attempts.contains_key(&k),
            "attempt {k} not observed: {attempts:?}"
        );
    }
    // Gaps between a termination and the next start, as the kubelet's
    // backoff: the first restart at once (attempt 0 is rarely observed, it
    // is replaced within milliseconds), then 1, 2, 4 s (the cap). Timestamps
    // have a resolution of one second, hence the tolerance.
    for (k, want) in [(2u64, 1.0), (3, 2.0), (4, 4.0)] {
        let gap = secs(attempts[&(k - 1)].1, attempts[&k].0);
        assert!(
            gap >= want - 1.0 && gap <= want + 1.5,
            "restart {k}: gap {gap} s, want ~{want} s ({attempts:?})"
        );
    }
}

#[test]
fn restart_policies_never_and_on_failure() {
    let Some(a) = agent("restartpolicy", AgentOpts::default()) else {
        return;
    };
    let mk = |name: &str, policy: &str, code: i32| {
        let spec = json!({
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 0,
            "containers": [sh_container("c", &format!("exit {code}"))],
        });
        a.create(&pod(name, spec)).unwrap();
    };
    mk("never-ok", "Never", 0);
    mk("never-fail", "Never", 1);
    mk("onfail-ok", "OnFailure", 0);
    mk("onfail-fail", "OnFailure", 1);
    let t = Duration::from_secs(30);
    for (name, phase, reason, code) in [
        ("never-ok", "Succeeded", "Completed", 0),
        ("never-fail", "Failed", "Error", 1),
        ("onfail-ok", "Succeeded", "Completed", 0),
    ] {
        let p = a
            .wait_pod(name, t, |p| p["status"]["phase"] == phase)
            .unwrap();
        let c = container_status(&p, "c").unwrap();
        assert_eq!(c["state"]["terminated"]["reason"], reason, "{name}: {c}");
        assert_eq!(c["state"]["terminated"]["exitCode"], code, "{name}: {c}");
        assert_eq!(c["restartCount"], 0, "{name}: {c}");
        assert_eq!(condition(&p, "Ready"), Some("False"), "{name}");
    }
    let p = a
        .wait_pod("onfail-fail", t, |p| {
            container_status(p, "c").is_some_and(|c| c["restartCount"].as_u64() >= Some(1))
        })
        .unwrap();
    assert_ne!(p["status"]["phase"], "Succeeded");
}

#[test]
fn init_containers_run_in_order_before_the_main_container() {
    let Some(a) = agent("initorder", AgentOpts::default()) else {
        return;
    };
    let mut first = sh_container("first", "echo first >> /work/order");
    first["volumeMounts"] = json!([{"name": "work", "mountPath": "/work"}]);
    let mut second = sh_container("second", "echo second >> /work/order");
    second["volumeMounts"] = first["volumeMounts"].clone();
    let mut main = sh_container("main", "echo main >> /work/order; cat /work/order");
    main["volumeMounts"] = first["volumeMounts"].clone();
    let spec = json!({
        "restartPolicy": "Never",
        "initContainers": [first, second],
        "containers": [main],
        "volumes": [{"name": "work", "emptyDir": {}}],
    });
    a.create(&pod("init", spec)).unwrap();
    let p = a
        .wait_pod("init", Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Succeeded"
        })
        .unwrap();
    assert_eq!(condition(&p, "Initialized"), Some("True"));
    for name in ["first", "second"] {
        let c = container_status(&p, name).unwrap();
        assert_eq!(c["state"]["terminated"]["reason"], "Completed", "{c}");
    }
    let log = a.logs("init", "main", false).unwrap();
    assert_eq!(log, "first\nsecond\nmain\n");
}

#[test]
fn sidecar_runs_alongside_and_stops_after_the_main_container() {
    let Some(a) = agent("sidecar", AgentOpts::default()) else {
        return;
    };
    let mut side = sh_container("side", "trap 'exit 0' TERM; while true; do sleep 0.1; done");
    side["restartPolicy"] = json!("Always");
    let spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "initContainers": [side],
        "containers": [sh_container("main", "sleep 2")],
    });
    a.create(&pod("sidecar", spec)).unwrap();
    let p = a
        .wait_pod("sidecar", Duration::from_secs(30), |p| {
            container_status(p, "main").is_some_and(|c| c["state"]["running"].is_object())
        })
        .unwrap();
    let side = container_status(&p, "side").unwrap();
    assert!(
        side["state"]["running"].is_object(),
        "sidecar not running: {side}"
    );
    let main = container_status(&p, "main").unwrap();
    assert!(
        ts(&side["state"]["running"]["startedAt"]) <= ts(&main["state"]["running"]["startedAt"]),
        "sidecar started after main"
    );
    let p = a
        .wait_pod("sidecar", Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Succeeded"
        })
        .unwrap();
    let side = container_status(&p, "side").unwrap();
    assert!(
        side["state"]["terminated"].is_object(),
        "sidecar not stopped: {side}"
    );
    let main = container_status(&p, "main").unwrap();
    assert!(
        ts(&side["state"]["terminated"]["finishedAt"])
            >= ts(&main["state"]["terminated"]["finishedAt"]),
        "sidecar stopped before main finished"
    );
}

/// Deletes `name` and follows its watch events until DELETED; returns the
/// elapsed time and every container status seen on the way.
fn delete_and_watch(a: &Agent, name: &str) -> (Duration, Vec<Value>) {
    let (status, mut r) = a
        .request(
            "GET",
            &format!(
                "/api/v1/namespaces/default/pods?watch=true&fieldSelector=metadata.name%3D{name}"
            ),
            None,
            "application/json",
        )
        .unwrap();
    assert_eq!(status, 200);
    let mut line = String::new();
    // The initial ADDED event: the watch is established.
    r.read_line(&mut line).unwrap();
    let t0 = Instant::now();
    a.delete_pod(name, None).unwrap();
    let mut seen = vec![];
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("watch ended before DELETED");
        }
        let ev: Value = serde_json::from_str(&line).unwrap();
        if let Some(cs) = ev["object"]["status"]["containerStatuses"].as_array() {
            seen.extend(cs.iter().cloned());
        }
        if ev["type"] == "DELETED" {
            return (t0.elapsed(), seen);
        }
    }
}

fn running(a: &Agent, name: &str, grace: u32, script: &str) {
    let spec =
        json!({"terminationGracePeriodSeconds": grace, "containers": [sh_container("c", script)]});
    a.create(&pod(name, spec)).unwrap();
    a.wait_pod(name, Duration::from_secs(30), |p| {
        p["status"]["phase"] == "Running"
    })
    .unwrap();
}

#[test]
fn graceful_termination_honoured() {
    let Some(a) = agent("termpolite", AgentOpts::default()) else {
        return;
    };
    running(
        &a,
        "polite",
        30,
        "trap 'exit 7' TERM; while true; do sleep 0.1; done",
    );
    let (took, seen) = delete_and_watch(&a, "polite");
    assert!(took < Duration::from_secs(5), "polite pod took {took:?}");
    // The kubelet reports the terminated state before the pod is deleted.
    assert!(
        seen.iter()
            .any(|c| c["state"]["terminated"]["exitCode"] == 7),
        "exit code 7 never reported: {seen:?}"
    );
}

#[test]
fn graceful_termination_forced_after_the_grace_period() {
    let Some(a) = agent("termforced", AgentOpts::default()) else {
        return;
    };
    running(
        &a,
        "stubborn",
        2,
        "trap '' TERM; while true; do sleep 0.1; done",
    );
    let (took, seen) = delete_and_watch(&a, "stubborn");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(4500),
        "stubborn pod took {took:?}, want ~2 s"
    );
    assert!(
        seen.iter()
            .any(|c| c["state"]["terminated"]["exitCode"] == 137),
        "SIGKILL (137) never reported: {seen:?}"
    );
}

#[test]
fn pre_stop_runs_before_term_and_post_start_runs() {
    let Some(a) = agent("hooks", AgentOpts::default()) else {
        return;
    };
    let host = a.root().parent().unwrap().join("hooks");
    std::fs::create_dir_all(&host).unwrap();
    let mut c = sh_container(
        "c",
        "trap 'echo term >> /h/events; exit 0' TERM; while true; do sleep 0.1; done",
    );
    c["volumeMounts"] = json!([{"name": "h", "mountPath": "/h"}]);
    c["lifecycle"] = json!({
        "postStart": {"exec": {"command": ["sh", "-c", "echo poststart >> /h/events"]}},
        "preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /h/events"]}},
    });
    let spec = json!({
        "terminationGracePeriodSeconds": 10,
        "containers": [c],
        "volumes": [{"name": "h", "hostPath": {"path": host, "type": "Directory"}}],
    });
    a.create(&pod("hooks", spec)).unwrap();
    a.wait_pod("hooks", Duration::from_secs(30), |p| {
        p["status"]["phase"] == "Running"
    })
    .unwrap();
    let events = host.join("events");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&events).is_ok_and(|s| s.contains("poststart")) {
        assert!(Instant::now() < deadline, "postStart never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.delete_pod("hooks", None).unwrap();
    a.wait_gone("hooks", Duration::from_secs(15)).unwrap();
    assert_eq!(
        std::fs::read_to_string(&events).unwrap(),
        "poststart\nprestop\nterm\n"
    );
}

#[test]
fn status_fields_as_kubernetes_reports_them() {
    let Some(a) = agent("status", AgentOpts::default()) else {
        return;
    };
    a.create(&pod(
        "running",
        json!({"terminationGracePeriodSeconds": 0, "containers": [sh_container("c", "sleep 3600")]}),
    ))
    .unwrap();
    // dd as pid 1 touches a 64 MiB buffer under an 8 MiB limit.
    let oom = json!({
        "name": "c",
        "image": herd_integration::agent::IMAGE,
        "imagePullPolicy": "Never",
        "command": ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        "resources": {"limits": {"memory": "8Mi"}},
    });
    a.create(&pod(
        "oom",
        json!({"restartPolicy": "Never", "containers": [oom]}),
    ))
    .unwrap();
    let mut missing = sh_container("c", "true");
    missing["image"] = json!("herd.test/missing:1");
    a.create(&pod("missing", json!({"containers": [missing]})))
        .unwrap();

    let t = Duration::from_secs(30);
    let p = a
        .wait_pod("running", t, |p| condition(p, "Ready") == Some("True"))
        .unwrap();
    let st = &p["status"];
    assert_eq!(st["phase"], "Running");
    for c in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&p, c), Some("True"), "{c}: {st}");
    }
    let ip: std::net::Ipv4Addr = st["podIP"].as_str().unwrap().parse().unwrap();
    let net: Vec<&str> = a.pod_cidr.split('/').collect();
    let net: std::net::Ipv4Addr = net[0].parse().unwrap();
    assert_eq!(
        ip.octets()[..3],
        net.octets()[..3],
        "podIP {ip} not in {}",
        a.pod_cidr
    );
    let start = ts(&st["startTime"]);
    let c = container_status(&p, "c").unwrap();
    assert!(ts(&c["state"]["running"]["startedAt"]) >= start, "{c}");
    assert_eq!(c["ready"], true);
    assert_eq!(c["started"], true);
    assert_eq!(c["restartCount"], 0);
    assert!(
        c["containerID"].as_str().is_some_and(|s| !s.is_empty()),
        "{c}"
    );
    assert_eq!(st["qosClass"], "BestEffort");

    let p = a
        .wait_pod("oom", t, |p| p["status"]["phase"] == "Failed")
        .unwrap();
    let c = container_status(&p, "c").unwrap();
    assert_eq!(c["state"]["terminated"]["reason"], "OOMKilled", "{c}");
    assert_eq!(c["state"]["terminated"]["exitCode"], 137, "{c}");
    assert_eq!(p["status"]["qosClass"], "Burstable");

    let p = a
        .wait_pod("missing", t, |p| {
            container_status(p, "c").is_some_and(|c| c["state"]["waiting"]["reason"].is_string())
        })
        .unwrap();
    let c = container_status(&p, "c").unwrap();
    assert_eq!(c["state"]["waiting"]["reason"], "ErrImageNeverPull", "{c}");
    assert_eq!(p["status"]["phase"], "Pending");
}

#[test]
fn guaranteed_pod_runs() {
    let Some(a) = agent("guaranteed", AgentOpts::default()) else {
        return;
    };
    let mut c = sh_container("c", "sleep 3600");
    let r = json!({"cpu": "100m", "memory": "32Mi"});
    c["resources"] = json!({"requests": r, "limits": r});
    a.create(&pod(
        "guaranteed",
        json!({"terminationGracePeriodSeconds": 0, "containers": [c]}),
    ))
    .unwrap();
    let p = a
        .wait_pod("guaranteed", Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Running"
                || container_status(p, "c")
                    .is_some_and(|c| c["state"]["waiting"]["message"].is_string())
        })
        .unwrap();
    assert_eq!(p["status"]["qosClass"], "Guaranteed");
    assert_eq!(
        p["status"]["phase"],
        "Running",
        "{}",
        container_status(&p, "c").unwrap()
    );
}
