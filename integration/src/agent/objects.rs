//! Small builders and accessors for the JSON objects tests exchange with an
//! agent: a Pod, a busybox container, pod conditions and container statuses.

use serde_json::Value;

use super::IMAGE;

/// A v1 Pod object named `name` with `spec`.
pub fn pod(name: &str, spec: Value) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

/// A container of the test image running `sh -c script`.
pub fn sh_container(name: &str, script: &str) -> Value {
    serde_json::json!({
        "name": name,
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
    })
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The status of container `name` (containers, then init containers).
pub fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|c| c["name"] == name)
}

/// The status of condition `ty` ("True"/"False"), if present.
pub fn condition<'a>(pod: &'a Value, ty: &str) -> Option<&'a str> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)?["status"]
        .as_str()
}

/// A Deployment of `replicas` pods of the test image that sleep (100m CPU
/// and 16Mi requested, no grace), labelled `app: <name>`, as YAML.
pub fn sleeper_deployment(name: &str, replicas: u32) -> String {
    let image = super::IMAGE;
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: c
        image: {image}
        imagePullPolicy: Never
        command: ["sh", "-c", "exec sleep 3600"]
        resources:
          requests: {{cpu: 100m, memory: 16Mi}}
"#
    )
}
