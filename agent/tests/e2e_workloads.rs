//! End to end, as root: the controllers on a single-node agent (its own
//! leader). A Deployment's pods run through the real kubelet and runc, it
//! scales through `/scale`, a Service gets Endpoints of the ready pods,
//! deleting the Deployment garbage-collects its ReplicaSet and pods, and
//! deleting a namespace empties it and then removes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use herd_integration::agent::{Agent, AgentOpts, IMAGE};
use serde_json::{Value, json};

fn agent(test: &str) -> Option<Agent> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
        return None;
    }
    Some(Agent::start(env!("CARGO_BIN_EXE_herd"), test, AgentOpts::default()).unwrap())
}

/// Polls `GET path` until `f` holds for the decoded body (404 → Null).
fn wait_for(a: &Agent, path: &str, timeout: Duration, mut f: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, body) = a.http("GET", path, None).unwrap();
        let v = if status == 404 {
            Value::Null
        } else {
            assert_eq!(status, 200, "GET {path}: {body}");
            serde_json::from_str(&body).unwrap()
        };
        if f(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on {path}; last: {v}\nagent log:\n{}",
            herd_integration::agent::tail(&a.agent_log(), 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn running_pods(list: &Value, app: &str) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn deployment_scales_serves_endpoints_and_is_collected() {
    let Some(a) = agent("workloads") else {
        return;
    };
    let manifest = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: c
        image: {IMAGE}
        imagePullPolicy: Never
        command: ["sh", "-c", "exec sleep 600"]
        ports:
        - {{name: http, containerPort: 8080}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{port: 80, targetPort: http}}
"#
    );
    let out = a.apply(&manifest).unwrap();
    assert_eq!(out.status, 0, "apply: {out:?}");

    let pods = "/api/v1/namespaces/default/pods";
    wait_for(&a, pods, Duration::from_secs(60), |l| {
        running_pods(l, "web").len() == 2
    });
    let dep = wait_for(
        &a,
        "/apis/apps/v1/namespaces/default/deployments/web",
        Duration::from_secs(30),
        |d| d["status"]["readyReplicas"] == 2 && d["status"]["updatedReplicas"] == 2,
    );
    assert_eq!(
        dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    // Endpoints list the two ready pods' IPs on the named target port.
    let ep = wait_for(
        &a,
        "/api/v1/namespaces/default/endpoints/web",
        Duration::from_secs(30),
        |e| {
            e["subsets"][0]["addresses"]
                .as_array()
                .is_some_and(|x| x.len() == 2)
        },
    );
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080, "{ep}");
    let svc = wait_for(
        &a,
        "/api/v1/namespaces/default/services/web",
        Duration::from_secs(5),
        |s| s.is_object(),
    );
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96.")),
        "{svc}"
    );

    // Scale to 3 through the scale subresource.
    let (status, body) = a
        .http(
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            Some(&json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"replicas": 3}})),
        )
        .unwrap();
    assert_eq!(status, 200, "scale: {body}");
    wait_for(&a, pods, Duration::from_secs(60), |l| {
        running_pods(l, "web").len() == 3
    });

    // Deleting the Deployment collects its ReplicaSet and pods.
    let out = a.cli(&["delete", "deployment", "web"]).unwrap();
    assert_eq!(out.status, 0, "delete: {out:?}");
    wait_for(
        &a,
        "/apis/apps/v1/namespaces/default/replicasets",
        Duration::from_secs(30),
        |l| l["items"].as_array().is_some_and(|x| x.is_empty()),
    );
    wait_for(&a, pods, Duration::from_secs(60), |l| {
        l["items"].as_array().is_some_and(|x| x.is_empty())
    });
}

#[test]
fn namespace_deletion_empties_then_removes_it() {
    let Some(a) = agent("nsdelete") else {
        return;
    };
    let out = a
        .apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: scratch}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: scratch}\ndata: {k: v}\n",
        )
        .unwrap();
    assert_eq!(out.status, 0, "apply: {out:?}");
    let (status, body) = a
        .http("DELETE", "/api/v1/namespaces/scratch", None)
        .unwrap();
    assert_eq!(status, 200, "delete: {body}");
    wait_for(
        &a,
        "/api/v1/namespaces/scratch",
        Duration::from_secs(30),
        Value::is_null,
    );
    let (status, _) = a
        .http("GET", "/api/v1/namespaces/scratch/configmaps/c", None)
        .unwrap();
    assert_eq!(status, 404);
}
