//! Static pods end to end, as root: a manifest file added, changed and
//! removed in `--manifests` is applied within a second; the mirror pod is
//! visible through the API as `NAME-NODE`; an invalid file changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use herd_integration::agent::{Agent, AgentOpts, container_status};

fn agent(test: &str) -> Option<Agent> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
        return None;
    }
    Some(Agent::start(env!("CARGO_BIN_EXE_herd"), test, AgentOpts::default()).unwrap())
}

fn manifest(script: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {}
    imagePullPolicy: Never
    command: [sh, -c, {script:?}]
",
        herd_integration::agent::IMAGE
    )
}

/// Writes a file atomically (temp name without a manifest extension, then
/// rename), as editors and config management do.
fn write(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn static_pod_added_changed_and_removed_by_file() {
    let Some(a) = agent("staticpod") else {
        return;
    };
    let mirror = format!("web-{}", a.node_name);
    let file = a.manifests_dir().join("web.yaml");
    let t0 = Instant::now();
    write(&file, &manifest("echo v1; sleep 3600"));
    a.wait_pod(&mirror, Duration::from_secs(3), |_| true)
        .unwrap();
    let seen = t0.elapsed();
    assert!(
        seen < Duration::from_millis(1500),
        "mirror pod appeared after {seen:?}"
    );
    let p = a
        .wait_pod(&mirror, Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Running"
        })
        .unwrap();
    assert_eq!(p["spec"]["nodeName"], a.node_name.as_str());
    let ann = &p["metadata"]["annotations"];
    assert_eq!(ann["kubernetes.io/config.source"], "file", "{ann}");
    let hash1 = ann["kubernetes.io/config.hash"]
        .as_str()
        .unwrap()
        .to_string();
    a.wait_log(&mirror, "c", "v1", Duration::from_secs(10))
        .unwrap();
    let out = a.cli(&["get", "pods"]).unwrap();
    assert!(out.stdout.contains(&mirror), "get pods: {out:?}");

    // Changed: a new pod (new hash), running the new command.
    write(&file, &manifest("echo v2; sleep 3600"));
    a.wait_pod(&mirror, Duration::from_secs(20), |p| {
        p["metadata"]["annotations"]["kubernetes.io/config.hash"] != hash1.as_str()
            && p["status"]["phase"] == "Running"
    })
    .unwrap();
    a.wait_log(&mirror, "c", "v2", Duration::from_secs(10))
        .unwrap();

    // Invalid content: logged, the running pod stays as it was.
    let before = a.get_pod(&mirror).unwrap().unwrap();
    write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n",
    );
    // A valid sibling proves the directory was rescanned after the bad write.
    write(
        &a.manifests_dir().join("other.yaml"),
        &manifest("sleep 3600").replace("name: web", "name: other"),
    );
    a.wait_pod(
        &format!("other-{}", a.node_name),
        Duration::from_secs(5),
        |_| true,
    )
    .unwrap();
    let after = a.get_pod(&mirror).unwrap().unwrap();
    assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
    assert_eq!(
        container_status(&after, "c").unwrap()["restartCount"],
        0,
        "an invalid file restarted the pod"
    );

    // Removed: the pod goes away (grace 1 s).
    std::fs::remove_file(&file).unwrap();
    let t0 = Instant::now();
    a.wait_gone(&mirror, Duration::from_secs(10)).unwrap();
    let gone = t0.elapsed();
    assert!(gone < Duration::from_secs(4), "removal took {gone:?}");
}
