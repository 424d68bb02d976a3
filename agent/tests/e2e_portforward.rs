//! `kubectl port-forward` against a real agent: the real kubectl v1.32,
//! run inside the agent's netns, forwards local ports to a busybox pod
//! listening with `nc`, first over its default WebSocket tunnel
//! (`SPDY/3.1+portforward.k8s.io`), then over a plain SPDY/3.1 upgrade
//! (`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`). Bytes are checked both ways,
//! on several connections, with a payload far over SPDY's 64 KiB window;
//! then the pod's listeners are killed and kubectl must report the
//! kubelet's error. Unknown pods get a 404 `Status`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_integration::agent::{Agent, AgentOpts, pod, sh_container};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn agent(test: &str) -> Option<Agent> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
        return None;
    }
    Some(Agent::start(env!("CARGO_BIN_EXE_herd"), test, AgentOpts::default()).unwrap())
}

/// Connects to `127.0.0.1:port` inside `netns` (from a thread that enters
/// it; the socket stays there).
fn connect_in(netns: &Path, port: u16) -> std::io::Result<TcpStream> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns)?;
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(s)
    })
    .join()
    .unwrap()
}

/// A running `kubectl port-forward`, killed on drop.
struct Forward {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Forward {
    fn start(a: &Agent, websockets: bool, ports: &[&str]) -> Forward {
        // -v=6 logs the upgrade request's method and status: which
        // transport was used.
        let mut args = vec!["-v=6", "port-forward", "pod/web"];
        args.extend(ports);
        let mut cmd = a.kubectl_command(&args).unwrap();
        cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let err = Arc::new(Mutex::new(String::new()));
        let sink = err.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after `start` stops listening: kubectl writes
            // a line per connection and dies of SIGPIPE without a reader.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut fwd = Forward { child, stderr: err };
        // One "Forwarding from 127.0.0.1:LOCAL -> REMOTE" line per port.
        let mut ready = 0;
        let deadline = Instant::now() + WAIT;
        while ready < ports.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("Forwarding from 127.0.0.1:") => ready += 1,
                Ok(_) => {}
                Err(_) => panic!(
                    "kubectl port-forward not ready: status {:?}, stderr:\n{}",
                    fwd.child.try_wait(),
                    fwd.stderr()
                ),
            }
        }
        fwd
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// For failure messages: kubectl's exit status (if it ended within a
    /// few seconds) and its stderr.
    fn diagnose(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = None;
        while Instant::now() < deadline {
            status = self.child.try_wait().unwrap();
            if status.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        format!("kubectl status {status:?}, stderr:\n{}", self.stderr())
    }
}

/// The agent's log lines about port forwarding.
fn portforward_log(a: &Agent) -> String {
    a.agent_log()
        .lines()
        .filter(|l| l.contains("portforward") || l.contains("spdy"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sends `input`, half-closes, and returns all that comes back.
fn exchange(netns: &Path, port: u16, input: &[u8]) -> Vec<u8> {
    let mut s = connect_in(netns, port).unwrap();
    let mut w = s.try_clone().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        w.write_all(&input).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    out
}

fn check_forwarding(a: &Agent, websockets: bool) -> Forward {
    let netns = a.netns().to_path_buf();
    let mut fwd = Forward::start(a, websockets, &["18080:8080", "18081:8081"]);
    let what = if websockets { "websocket" } else { "spdy" };
    for i in 0..2 {
        let got = exchange(&netns, 18080, b"");
        if got != b"hi\n" {
            panic!(
                "{what} connection {i}: got {:?}; {}\nagent:\n{}",
                String::from_utf8_lossy(&got),
                fwd.diagnose(),
                portforward_log(a)
            );
        }
    }
    let got = exchange(&netns, 18081, b"hello through the pod\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "hello through the pod\n",
        "{what} echo"
    );
    // Well over the 64 KiB SPDY window, both ways at once.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let got = exchange(&netns, 18081, &big);
    assert_eq!(got.len(), big.len(), "{what} big echo length");
    assert!(got == big, "{what} big echo content");
    // The transport asked for is the one that served: WebSocket tunnel
    // (GET) or the SPDY upgrade kubectl falls back to (POST).
    let err = fwd.stderr();
    let upgraded = format!(
        "\"Response\" verb=\"{}\" url=\"https://127.0.0.1:6443/api/v1/namespaces/default/pods/web/portforward\" status=\"101 Switching Protocols\"",
        if websockets { "GET" } else { "POST" }
    );
    assert!(err.contains(&upgraded), "{what}: {err}");
    assert_eq!(
        err.contains("negotiated protocol: portforward.k8s.io"),
        websockets,
        "{err}"
    );
    fwd
}

/// Polls `f` until it says done; `f` returns (done, what it saw).
fn wait_until(what: &str, mut f: impl FnMut() -> (bool, String)) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (done, seen) = f();
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last seen:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pod's listening TCP sockets (`netstat -ltn` through kubectl exec).
fn listening(a: &Agent) -> (String, String) {
    match a.kubectl(&["exec", "web", "--", "netstat", "-ltn"], None) {
        Ok(o) => (o.stdout.clone(), format!("{o:?}")),
        Err(e) => (String::new(), e.to_string()),
    }
}

#[test]
fn kubectl_port_forward_both_transports_and_errors() {
    let Some(a) = agent("pfwd") else {
        return;
    };
    // Debian's busybox nc: `-ll` keeps listening, `-e` takes one program.
    let script = "printf '#!/bin/sh\\necho hi\\n' > /tmp/hi && chmod +x /tmp/hi; \
                  nc -ll -p 8081 -e /bin/cat & nc -ll -p 8080 -e /tmp/hi; sleep 3600";
    a.create(&pod(
        "web",
        json!({"containers": [sh_container("c", script)], "terminationGracePeriodSeconds": 0}),
    ))
    .unwrap();
    a.wait_pod("web", WAIT, |p| p["status"]["phase"] == "Running")
        .unwrap();
    let netns: PathBuf = a.netns().to_path_buf();
    // Both listeners up (kubectl exec works over WebSocket already).
    wait_until("the pod's listeners", || {
        let (out, seen) = listening(&a);
        (out.contains(":8080") && out.contains(":8081"), seen)
    });

    drop(check_forwarding(&a, true));
    let fwd = check_forwarding(&a, false);

    // Kill the listeners: the next connection fails inside the pod, and
    // kubectl prints the error the agent sent on the error stream.
    // (Its exit status is not checked: kubectl exec currently ends with
    // "websocket: close 1005" here; the netstat poll below checks the
    // effect.)
    let _ = a.kubectl(&["exec", "web", "--", "killall", "nc"], None);
    wait_until("the listeners to die", || {
        let (out, seen) = listening(&a);
        (!out.is_empty() && !out.contains(":8080"), seen)
    });
    if let Ok(mut s) = connect_in(&netns, 18080) {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(buf.is_empty(), "no data from a dead port: {buf:?}");
    }
    wait_until("kubectl to report the forwarding error", || {
        let err = fwd.stderr();
        (
            err.contains("error forwarding port 8080 to pod web_default"),
            err,
        )
    });
    let err = fwd.stderr();
    assert!(err.contains("connection refused"), "{err}");
    drop(fwd);

    // Unknown pod: kubectl says so; the subresource itself answers 404.
    let out = a
        .kubectl(&["port-forward", "pod/nope", "18082:80"], None)
        .unwrap();
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("\"nope\" not found"), "{out:?}");
    let (code, body) = a
        .http(
            "POST",
            "/api/v1/namespaces/default/pods/nope/portforward",
            None,
        )
        .unwrap();
    assert_eq!(code, 404, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "NotFound");
    // Without an upgrade: 400, not a hang.
    let (code, body) = a
        .http(
            "GET",
            "/api/v1/namespaces/default/pods/web/portforward",
            None,
        )
        .unwrap();
    assert_eq!(code, 400, "{body}");
}
