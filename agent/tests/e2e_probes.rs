//! Probes end to end, as root, against a real `herd agent` in its own
//! network namespace: liveness restarts, readiness gating, startup gating
//! liveness, and httpGet/tcpSocket probes against a real server in a pod.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use herd_integration::agent::{Agent, AgentOpts, condition, container_status, pod, sh_container};
use serde_json::{Value, json};

fn agent(test: &str) -> Option<Agent> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
        return None;
    }
    let opts = AgentOpts::default()
        .arg("--backoff-base", "1s")
        .arg("--backoff-max", "2s");
    Some(Agent::start(env!("CARGO_BIN_EXE_herd"), test, opts).unwrap())
}

fn exec_probe(cmd: &str, failure: u32) -> Value {
    json!({
        "exec": {"command": ["sh", "-c", cmd]},
        "periodSeconds": 1,
        "failureThreshold": failure,
        "timeoutSeconds": 1,
    })
}

fn restarts(p: &Value) -> u64 {
    container_status(p, "c").map_or(0, |c| c["restartCount"].as_u64().unwrap_or(0))
}

#[test]
fn failing_liveness_restarts_the_container() {
    let Some(a) = agent("liveness") else {
        return;
    };
    let mut c = sh_container("c", "touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 3600");
    c["livenessProbe"] = exec_probe("test -f /tmp/alive", 1);
    let spec = json!({"terminationGracePeriodSeconds": 0, "containers": [c]});
    a.create(&pod("live", spec)).unwrap();
    let p = a
        .wait_pod("live", Duration::from_secs(30), |p| restarts(p) >= 1)
        .unwrap();
    let c = container_status(&p, "c").unwrap();
    // The killed attempt: SIGKILL (137) or SIGTERM (143) after the grace.
    let code = c["lastState"]["terminated"]["exitCode"].as_i64();
    assert!(matches!(code, Some(137 | 143)), "lastState: {c}");
}

#[test]
fn readiness_gates_the_ready_condition() {
    let Some(a) = agent("readiness") else {
        return;
    };
    let mut c = sh_container("c", "sleep 3600");
    c["readinessProbe"] = exec_probe("test -f /tmp/ready", 1);
    let spec = json!({"terminationGracePeriodSeconds": 0, "containers": [c]});
    a.create(&pod("ready", spec)).unwrap();
    let p = a
        .wait_pod("ready", Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Running"
        })
        .unwrap();
    assert_eq!(condition(&p, "Ready"), Some("False"));
    // Several probe periods: still not ready.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let p = a.get_pod("ready").unwrap().unwrap();
        assert_eq!(
            condition(&p, "Ready"),
            Some("False"),
            "ready without the file"
        );
        assert_eq!(condition(&p, "ContainersReady"), Some("False"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = a.exec("ready", None, &["touch", "/tmp/ready"]).unwrap();
    assert_eq!(out.status, 0, "exec touch: {out:?}");
    let p = a
        .wait_pod("ready", Duration::from_secs(10), |p| {
            condition(p, "Ready") == Some("True")
        })
        .unwrap();
    assert_eq!(condition(&p, "ContainersReady"), Some("True"));
    assert_eq!(container_status(&p, "c").unwrap()["ready"], true);
    assert_eq!(restarts(&p), 0);
}

#[test]
fn startup_probe_holds_back_liveness() {
    let Some(a) = agent("startup") else {
        return;
    };
    let mut c = sh_container("c", "sleep 3600");
    c["startupProbe"] = exec_probe("test -f /tmp/started", 60);
    c["livenessProbe"] = exec_probe("false", 1);
    let spec = json!({"terminationGracePeriodSeconds": 0, "containers": [c]});
    a.create(&pod("startup", spec)).unwrap();
    a.wait_pod("startup", Duration::from_secs(30), |p| {
        p["status"]["phase"] == "Running"
    })
    .unwrap();
    // A failing liveness probe with failureThreshold 1 would restart the
    // container within ~1 s if it ran before the startup probe succeeded.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let p = a.get_pod("startup").unwrap().unwrap();
        assert_eq!(restarts(&p), 0, "liveness ran before startup succeeded");
        assert_eq!(container_status(&p, "c").unwrap()["started"], false);
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = a.exec("startup", None, &["touch", "/tmp/started"]).unwrap();
    assert_eq!(out.status, 0, "exec touch: {out:?}");
    a.wait_pod("startup", Duration::from_secs(15), |p| restarts(p) >= 1)
        .unwrap();
}

#[test]
fn http_and_tcp_probes_reach_a_pod_server() {
    let Some(a) = agent("httpprobe") else {
        return;
    };
    let mut c = sh_container("c", "exec httpd -f -p 8080 -h /var/www");
    c["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    c["readinessProbe"] =
        json!({"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1});
    // Three failures in a row: httpd may not listen yet at the first probe.
    c["livenessProbe"] =
        json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 3});
    let mut bad = sh_container("c", "exec httpd -f -p 8080 -h /var/www");
    bad["readinessProbe"] =
        json!({"httpGet": {"path": "/absent", "port": 8080}, "periodSeconds": 1});
    bad["livenessProbe"] =
        json!({"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 2});
    a.create(&pod(
        "web",
        json!({"terminationGracePeriodSeconds": 0, "containers": [c]}),
    ))
    .unwrap();
    a.create(&pod(
        "badweb",
        json!({"terminationGracePeriodSeconds": 0, "containers": [bad]}),
    ))
    .unwrap();
    let p = a
        .wait_pod("web", Duration::from_secs(30), |p| {
            condition(p, "Ready") == Some("True")
        })
        .unwrap();
    assert_eq!(restarts(&p), 0);
    // 404 never makes it ready; a closed port fails liveness → restart.
    let p = a
        .wait_pod("badweb", Duration::from_secs(30), |p| restarts(p) >= 1)
        .unwrap();
    assert_eq!(condition(&p, "Ready"), Some("False"));
    let p = a.get_pod("web").unwrap().unwrap();
    assert_eq!(restarts(&p), 0, "a healthy tcpSocket probe restarted web");
}
