//! The pod lifecycle on both container backends, from the same test code:
//! herd's own (a monitor per pod driving runc) and containerd (tasks of a
//! real containerd 1.6 each test starts under a temp dir). Start, logs,
//! exec (kubectl-style and exec probes), readiness and liveness probes,
//! OOMKilled, crash-loop backoff with previous logs, graceful delete, and
//! an agent SIGKILL: running containers are re-adopted untouched and an
//! exit that happened while the agent was down is reported.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use herd_integration::agent::{
    Agent, AgentOpts, ContainerdTarget, condition, container_status, pids_with_cmdline, pod,
    run_with_stdin, sh_container,
};
use herd_integration::containerd::{Containerd, containerd_or_skip};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Native,
    Containerd,
}

/// An agent on `backend`; the containerd (if any) outlives it.
struct Env {
    agent: Agent,
    ctrd: Option<Containerd>,
}

impl Env {
    fn start(backend: Backend, test: &str, mut opts: AgentOpts) -> Option<Env> {
        if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
            return None;
        }
        let ctrd = match backend {
            Backend::Native => None,
            Backend::Containerd => {
                if !containerd_or_skip(test) {
                    return None;
                }
                let c = Containerd::start(test).unwrap();
                opts.containerd = Some(ContainerdTarget {
                    socket: c.socket.clone(),
                    namespace: c.namespace.clone(),
                });
                Some(c)
            }
        };
        let agent = Agent::start(env!("CARGO_BIN_EXE_herd"), test, opts).unwrap();
        Some(Env { agent, ctrd })
    }

    /// containerd's containers in the test's namespace.
    fn containerd_containers(&self) -> Vec<String> {
        match &self.ctrd {
            Some(c) => c.ls("containers").unwrap(),
            None => Vec::new(),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // The agent first, then containerd: the fixture deletes what is
        // left in its namespace through containerd, then stops it.
        let _ = self.agent.stop(Duration::from_secs(10));
    }
}

fn restarts(p: &Value, c: &str) -> u64 {
    container_status(p, c).map_or(0, |s| s["restartCount"].as_u64().unwrap_or(0))
}

fn running(p: &Value, c: &str) -> bool {
    container_status(p, c).is_some_and(|s| s["state"]["running"].is_object())
}

const T: Duration = Duration::from_secs(60);

/// Start, logs, exec, exec readiness probe, graceful delete.
fn start_logs_exec_probe_delete(backend: Backend) {
    let Some(env) = Env::start(backend, "bk-life", AgentOpts::default()) else {
        return;
    };
    let a = &env.agent;
    let mut c = sh_container(
        "c",
        "echo hello from $(hostname); trap 'echo bye; exit 0' TERM; \
         while true; do sleep 0.1; done",
    );
    c["readinessProbe"] = json!({"exec": {"command": ["cat", "/tmp/ready"]},
        "periodSeconds": 1, "failureThreshold": 1});
    a.create(&pod(
        "web",
        json!({"containers": [c], "terminationGracePeriodSeconds": 10}),
    ))
    .unwrap();
    let p = a.wait_pod("web", T, |p| running(p, "c")).unwrap();
    assert_eq!(condition(&p, "Ready"), Some("False"), "{p}");
    // Kubernetes shows which runtime runs the containers.
    let scheme = match backend {
        Backend::Native => "herd://",
        Backend::Containerd => "containerd://",
    };
    let id = container_status(&p, "c").unwrap()["containerID"].clone();
    assert!(id.as_str().unwrap().starts_with(scheme), "{id}");
    let (status, node) = a
        .http("GET", &format!("/api/v1/nodes/{}", a.node_name), None)
        .unwrap();
    assert_eq!(status, 200, "{node}");
    let node: Value = serde_json::from_str(&node).unwrap();
    let version = &node["status"]["nodeInfo"]["containerRuntimeVersion"];
    assert!(version.as_str().unwrap().starts_with(scheme), "{version}");
    a.wait_log("web", "c", "hello from web", T).unwrap();

    let out = a
        .exec(
            "web",
            Some("c"),
            &["sh", "-c", "touch /tmp/ready; echo exec-ok; id -u"],
        )
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout, "exec-ok\n0\n", "{out:?}");
    // A real kubectl, stdin streamed in.
    let out = a
        .kubectl(
            &[
                "exec",
                "-i",
                "web",
                "-c",
                "c",
                "--",
                "sh",
                "-c",
                "cat; echo done",
            ],
            Some("piped-in\n"),
        )
        .unwrap();
    assert_eq!(out.stdout, "piped-in\ndone\n", "{out:?}");
    // kubectl exec -it through a pty (`script` gives kubectl a terminal).
    let line = format!(
        "nsenter --net={} -- kubectl --kubeconfig {} exec -it web -c c -- sh",
        a.netns().display(),
        a.kubeconfig().unwrap().display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qfec", &line, "/dev/null"]);
    let out = run_with_stdin(cmd, Some("echo tty=$(tty) sum=$((40+2))\nexit 0\n")).unwrap();
    assert!(out.stdout.contains("sum=42"), "{out:?}");
    assert!(out.stdout.contains("tty=/dev/pts/"), "{out:?}");
    let out = a
        .exec("web", Some("c"), &["sh", "-c", "echo err >&2; exit 3"])
        .unwrap();
    assert_eq!(out.status, 3, "{out:?}");
    assert!(out.stderr.contains("err"), "{out:?}");
    // The exec probe now passes: Ready.
    a.wait_pod("web", T, |p| condition(p, "Ready") == Some("True"))
        .unwrap();
    if backend == Backend::Containerd {
        assert_eq!(env.containerd_containers().len(), 1);
    }

    // Graceful delete: the TERM trap runs (well within the grace).
    let t = std::time::Instant::now();
    assert_eq!(a.delete_pod("web", None).unwrap(), 200);
    a.wait_gone("web", T).unwrap();
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(
        env.containerd_containers().is_empty(),
        "{:?}",
        env.containerd_containers()
    );
}

/// OOMKilled; crash-loop backoff with the previous attempt's log; a
/// failing liveness probe restarts the container.
fn oom_backoff_liveness(backend: Backend) {
    let opts = AgentOpts::default()
        .arg("--backoff-base", "1s")
        .arg("--backoff-max", "2s");
    let Some(env) = Env::start(backend, "bk-fail", opts) else {
        return;
    };
    let a = &env.agent;
    let mut hog = sh_container("hog", "head -c 200m /dev/zero | tail");
    hog["resources"] = json!({"limits": {"memory": "32Mi"}});
    a.create(&pod(
        "hog",
        json!({"containers": [hog], "restartPolicy": "Never"}),
    ))
    .unwrap();
    a.create(&pod(
        "crash",
        json!({"containers": [sh_container("c", "echo attempt; exit 3")],
               "terminationGracePeriodSeconds": 0}),
    ))
    .unwrap();
    let mut live = sh_container("c", "while true; do sleep 0.1; done");
    live["livenessProbe"] = json!({"exec": {"command": ["sh", "-c", "test ! -e /tmp/die"]},
        "periodSeconds": 1, "failureThreshold": 1});
    a.create(&pod(
        "live",
        json!({"containers": [live], "terminationGracePeriodSeconds": 0}),
    ))
    .unwrap();

    let p = a
        .wait_pod("hog", T, |p| {
            container_status(p, "hog").is_some_and(|s| s["state"]["terminated"].is_object())
        })
        .unwrap();
    let term = &container_status(&p, "hog").unwrap()["state"]["terminated"];
    assert_eq!(term["reason"], "OOMKilled", "{term}");
    assert_eq!(term["exitCode"], 137, "{term}");

    let mut backoff = false;
    let p = a
        .wait_pod("crash", T, |p| {
            backoff |= container_status(p, "c")
                .is_some_and(|s| s["state"]["waiting"]["reason"] == "CrashLoopBackOff");
            restarts(p, "c") >= 3
        })
        .unwrap();
    assert!(backoff, "never saw CrashLoopBackOff");
    let last = &container_status(&p, "c").unwrap()["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 3, "{last}");
    assert_eq!(last["reason"], "Error", "{last}");
    let prev = a.logs("crash", "c", true).unwrap();
    assert_eq!(prev, "attempt\n");

    a.wait_pod("live", T, |p| running(p, "c")).unwrap();
    assert_eq!(restarts(&a.get_pod("live").unwrap().unwrap(), "c"), 0);
    let out = a.exec("live", Some("c"), &["touch", "/tmp/die"]).unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    // Restarted (a new container, so /tmp/die is gone and it stays up).
    a.wait_pod("live", T, |p| restarts(p, "c") == 1 && running(p, "c"))
        .unwrap();
}

/// Agent SIGKILL: running containers are re-adopted untouched; an exit
/// while the agent was down is reported after it restarts.
fn agent_sigkill_readopts(backend: Backend) {
    let Some(mut env) = Env::start(backend, "bk-adopt", AgentOpts::default()) else {
        return;
    };
    let tag = format!("{}{}", std::process::id(), backend as u8);
    let steady = format!("47{tag}1");
    let ender = format!("47{tag}2");
    let a = &env.agent;
    a.create(&pod(
        "steady",
        json!({"terminationGracePeriodSeconds": 0,
               "containers": [sh_container("c", &format!("echo up; exec sleep {steady}"))]}),
    ))
    .unwrap();
    a.create(&pod(
        "ender",
        json!({"terminationGracePeriodSeconds": 0, "restartPolicy": "Never",
               "containers": [sh_container("c", &format!("sleep {ender}"))]}),
    ))
    .unwrap();
    let before = a.wait_pod("steady", T, |p| running(p, "c")).unwrap();
    a.wait_pod("ender", T, |p| running(p, "c")).unwrap();
    a.wait_log("steady", "c", "up", T).unwrap();
    let pid = one_pid(&steady);

    env.agent.kill9().unwrap();
    // While the agent is down: one container ends.
    let ender_pid = one_pid(&ender);
    kill9_pid(ender_pid);
    wait_no_pid(&ender);
    env.agent.restart().unwrap();
    let a = &env.agent;

    let p = a
        .wait_pod("ender", T, |p| {
            container_status(p, "c").is_some_and(|s| s["state"]["terminated"].is_object())
        })
        .unwrap();
    let term = &container_status(&p, "c").unwrap()["state"]["terminated"];
    assert_eq!(term["exitCode"], 137, "{term}");
    let after = a.get_pod("steady").unwrap().unwrap();
    let (b, n) = (
        container_status(&before, "c").unwrap(),
        container_status(&after, "c").unwrap(),
    );
    assert_eq!(b["containerID"], n["containerID"]);
    assert_eq!(b["state"]["running"], n["state"]["running"]);
    assert_eq!(n["restartCount"], 0);
    assert_eq!(one_pid(&steady), pid, "the container was restarted");
    assert_eq!(a.logs("steady", "c", false).unwrap(), "up\n");
    // The re-adopted container still stops and goes.
    assert_eq!(a.delete_pod("steady", None).unwrap(), 200);
    a.wait_gone("steady", T).unwrap();
    wait_no_pid(&steady);
}

/// containerd restarts under a running agent: the containers keep
/// running (their shims own them), an exit after the restart is reported
/// (the event subscription is reopened), and new pods start.
#[test]
fn containerd_restart_under_the_agent() {
    let Some(mut env) = Env::start(Backend::Containerd, "bk-ctrdrestart", AgentOpts::default())
    else {
        return;
    };
    let marker = format!("48{}", std::process::id());
    env.agent
        .create(&pod(
            "p",
            json!({"terminationGracePeriodSeconds": 0, "restartPolicy": "Never",
                   "containers": [sh_container("c", &format!("sleep {marker}"))]}),
        ))
        .unwrap();
    env.agent.wait_pod("p", T, |p| running(p, "c")).unwrap();
    let pid = one_pid(&marker);
    env.ctrd.as_mut().unwrap().restart().unwrap();
    assert_eq!(one_pid(&marker), pid);
    kill9_pid(pid);
    let p = env
        .agent
        .wait_pod("p", T, |p| {
            container_status(p, "c").is_some_and(|s| s["state"]["terminated"].is_object())
        })
        .unwrap();
    let term = &container_status(&p, "c").unwrap()["state"]["terminated"];
    assert_eq!(term["exitCode"], 137, "{term}");
    env.agent
        .create(&pod(
            "q",
            json!({"terminationGracePeriodSeconds": 0,
                   "containers": [sh_container("c", "echo after-restart; sleep 3600")]}),
        ))
        .unwrap();
    env.agent.wait_log("q", "c", "after-restart", T).unwrap();
}

fn one_pid(marker: &str) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pids = pids_with_cmdline(&["sleep", marker]);
        if pids.len() == 1 {
            return pids[0];
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sleep {marker}: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_no_pid(marker: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !pids_with_cmdline(&["sleep", marker]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "sleep {marker} lives");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9_pid(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

macro_rules! on_both_backends {
    ($($scenario:ident),*) => {$(
        mod $scenario {
            #[test]
            fn native() {
                super::$scenario(super::Backend::Native);
            }
            #[test]
            fn containerd() {
                super::$scenario(super::Backend::Containerd);
            }
        }
    )*};
}

on_both_backends!(
    start_logs_exec_probe_delete,
    oom_backoff_liveness,
    agent_sigkill_readopts
);
