//! Helpers shared by the pod benchmarks (`pod_apply`, `pod_backends`):
//! arguments, the pod watch, and the benchmark pod.

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use herd_integration::agent::{Agent, IMAGE, pod};
use serde_json::{Value, json};

/// `--name N` from the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (event type, pod name, phase, when it was read).
pub type Event = (String, String, String, Instant);

/// Follows the agent's pod watch on a thread.
pub fn pod_watch(a: &Agent) -> Result<mpsc::Receiver<Event>> {
    let (status, mut r) = a.request(
        "GET",
        "/api/v1/namespaces/default/pods?watch=true",
        None,
        "application/json",
    )?;
    if status != 200 {
        bail!("pod watch refused: {status}");
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let now = Instant::now();
            if let Ok(ev) = serde_json::from_str::<Value>(&line) {
                let s = |v: &Value| v.as_str().unwrap_or("").to_string();
                let o = &ev["object"];
                let _ = tx.send((
                    s(&ev["type"]),
                    s(&o["metadata"]["name"]),
                    s(&o["status"]["phase"]),
                    now,
                ));
            }
            line.clear();
        }
    });
    Ok(rx)
}

/// Waits (60 s at most per event) for `name` to reach (`ty`, `phase`);
/// "" matches any. Returns when the matching event was read.
pub fn next_event(
    rx: &mpsc::Receiver<Event>,
    name: &str,
    ty: &str,
    phase: &str,
) -> Result<Instant, mpsc::RecvTimeoutError> {
    loop {
        let (t, n, p, at) = rx.recv_timeout(Duration::from_secs(60))?;
        if n == name && (ty.is_empty() || t == ty) && (phase.is_empty() || p == phase) {
            return Ok(at);
        }
    }
}

/// The benchmark pod: busybox `sleep`, Burstable, image present.
pub fn bench_pod(name: &str) -> Value {
    pod(
        name,
        json!({
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "100m", "memory": "32Mi"},
                              "limits": {"cpu": "200m", "memory": "64Mi"}},
            }],
        }),
    )
}
