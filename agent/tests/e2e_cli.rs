//! The `herd` CLI end to end, as root, against a real agent: apply, get
//! (table, wide, json, yaml), describe, logs (-f, --previous), exec exit
//! codes, delete; malformed and invalid manifests change nothing and name
//! the field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use herd_integration::agent::{Agent, AgentOpts, CliOutput, IMAGE, condition, container_status};
use serde_json::Value;

fn agent(test: &str, opts: AgentOpts) -> Option<Agent> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
        return None;
    }
    Some(Agent::start(env!("CARGO_BIN_EXE_herd"), test, opts).unwrap())
}

fn pod_yaml(name: &str, script: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, {script:?}]
"
    )
}

fn ok(out: &CliOutput) {
    assert_eq!(out.status, 0, "{out:?}");
}

#[test]
fn apply_get_describe_delete() {
    let Some(a) = agent("cliget", AgentOpts::default()) else {
        return;
    };
    let yaml = pod_yaml("web", "echo hello; exec httpd -f -p 8080 -h /var/www");
    let out = a.apply(&yaml).unwrap();
    ok(&out);
    assert_eq!(out.stdout.trim(), "pod/web created");
    let out = a.apply(&yaml).unwrap();
    ok(&out);
    assert_eq!(out.stdout.trim(), "pod/web unchanged");
    let p = a
        .wait_pod("web", Duration::from_secs(30), |p| {
            condition(p, "Ready") == Some("True")
        })
        .unwrap();
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();

    let out = a.cli(&["get", "pods"]).unwrap();
    ok(&out);
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{out:?}"
    );
    assert_eq!(lines[1][..4], ["web", "1/1", "Running", "0"], "{out:?}");

    let out = a.cli(&["get", "pods", "-o", "wide"]).unwrap();
    ok(&out);
    assert!(out.stdout.lines().next().unwrap().contains("IP"), "{out:?}");
    let row = out.stdout.lines().nth(1).unwrap();
    assert!(row.contains(&ip) && row.contains(&a.node_name), "{out:?}");

    let out = a.cli(&["get", "pod", "web", "-o", "json"]).unwrap();
    ok(&out);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["kind"], "Pod");
    assert_eq!(v["metadata"]["name"], "web");
    assert_eq!(v["status"]["podIP"], ip.as_str());

    let out = a.cli(&["get", "pods", "-o", "json"]).unwrap();
    ok(&out);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["items"][0]["metadata"]["name"], "web", "{v}");

    let out = a.cli(&["get", "pod", "web", "-o", "yaml"]).unwrap();
    ok(&out);
    assert!(out.stdout.contains("kind: Pod"), "{out:?}");
    assert!(out.stdout.contains("name: web"), "{out:?}");

    let out = a.cli(&["get", "pod", "nope"]).unwrap();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(r#"Error from server (NotFound): pods "nope" not found"#),
        "{out:?}"
    );

    let out = a.cli(&["describe", "pod", "web"]).unwrap();
    ok(&out);
    for want in [
        "Name:",
        "Namespace:",
        "Status:",
        "Running",
        "IP:",
        "Containers:",
        "Conditions:",
        "Events:",
        "QoS Class:",
        "BestEffort",
    ] {
        assert!(
            out.stdout.contains(want),
            "describe lacks {want:?}:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains(&ip),
        "describe lacks the IP:\n{}",
        out.stdout
    );

    let out = a.cli(&["logs", "web"]).unwrap();
    ok(&out);
    assert_eq!(out.stdout, "hello\n");

    let out = a.cli(&["delete", "pod", "web"]).unwrap();
    ok(&out);
    assert_eq!(out.stdout.trim(), r#"pod "web" deleted"#);
    // delete waits by default: the pod is gone when it returns.
    assert!(a.get_pod("web").unwrap().is_none());
    let out = a.cli(&["get", "pods"]).unwrap();
    ok(&out);
    assert!(
        out.stderr
            .contains("No resources found in default namespace."),
        "{out:?}"
    );
}

#[test]
fn exec_exit_codes_and_output() {
    let Some(a) = agent("cliexec", AgentOpts::default()) else {
        return;
    };
    ok(&a.apply(&pod_yaml("box", "sleep 3600")).unwrap());
    a.wait_pod("box", Duration::from_secs(30), |p| {
        p["status"]["phase"] == "Running"
    })
    .unwrap();
    let out = a.exec("box", None, &["echo", "hi"]).unwrap();
    ok(&out);
    assert_eq!(out.stdout, "hi\n");
    let out = a
        .exec("box", Some("c"), &["sh", "-c", "echo err >&2; exit 3"])
        .unwrap();
    assert_eq!(out.status, 3, "{out:?}");
    assert!(out.stderr.contains("err"), "{out:?}");
    assert!(
        out.stderr.contains("command terminated with exit code 3"),
        "{out:?}"
    );
    let out = a
        .cli_stdin(&["exec", "-i", "box", "--", "cat"], Some("piped\n"))
        .unwrap();
    ok(&out);
    assert_eq!(out.stdout, "piped\n");
    let out = a.exec("box", Some("nope"), &["true"]).unwrap();
    assert_ne!(out.status, 0, "{out:?}");
    let out = a.exec("absent", None, &["true"]).unwrap();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("NotFound"), "{out:?}");
}

#[test]
fn logs_follow_and_previous() {
    let opts = AgentOpts::default()
        .arg("--backoff-base", "1s")
        .arg("--backoff-max", "2s");
    let Some(a) = agent("clilogs", opts) else {
        return;
    };
    // Each attempt prints its own number of lines then fails.
    let yaml = pod_yaml(
        "counter",
        "echo start; for i in 1 2 3; do echo line$i; sleep 0.3; done; exit 1",
    );
    ok(&a.apply(&yaml).unwrap());
    a.wait_pod("counter", Duration::from_secs(30), |p| {
        container_status(p, "c").is_some_and(|c| c["state"]["running"].is_object())
    })
    .unwrap();
    // -f streams until the container exits.
    let out = a.cli(&["logs", "-f", "counter"]).unwrap();
    ok(&out);
    assert!(
        out.stdout.ends_with("line3\n") && out.stdout.starts_with("start\n"),
        "{out:?}"
    );
    a.wait_pod("counter", Duration::from_secs(30), |p| {
        container_status(p, "c").is_some_and(|c| c["restartCount"].as_u64() >= Some(1))
    })
    .unwrap();
    let out = a.cli(&["logs", "--previous", "counter"]).unwrap();
    ok(&out);
    assert_eq!(out.stdout, "start\nline1\nline2\nline3\n");
    let out = a.cli(&["logs", "counter", "-c", "nope"]).unwrap();
    assert_eq!(out.status, 1, "{out:?}");
}

#[test]
fn malformed_and_invalid_manifests_change_nothing() {
    let Some(a) = agent("climalformed", AgentOpts::default()) else {
        return;
    };
    ok(&a.apply(&pod_yaml("keep", "sleep 3600")).unwrap());
    let before = a
        .wait_pod("keep", Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Running"
        })
        .unwrap();
    let rv = before["metadata"]["resourceVersion"].clone();

    // YAML syntax error.
    let out = a
        .apply("apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n")
        .unwrap();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(!out.stderr.is_empty());
    // Missing image: the server names the field.
    let no_image = pod_yaml("bad", "true").replace(&format!("    image: {IMAGE}\n"), "");
    let out = a.apply(&no_image).unwrap();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("spec.containers[0].image"), "{out:?}");
    assert!(
        a.get_pod("bad").unwrap().is_none(),
        "invalid pod was created"
    );
    // Unknown field (strict decoding) and a bad port.
    let typo = pod_yaml("bad", "true").replace("imagePullPolicy", "imagePullPolicyy");
    let out = a.apply(&typo).unwrap();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("imagePullPolicyy"), "{out:?}");
    let port = pod_yaml("bad", "true") + "    ports:\n    - containerPort: 70000\n";
    let out = a.apply(&port).unwrap();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("spec.containers[0].ports[0].containerPort"),
        "{out:?}"
    );
    // A multi-document file with one bad document: the good one applies,
    // the exit status is still 1.
    let multi = format!("{}---\n{no_image}", pod_yaml("good", "sleep 3600"));
    let out = a.apply(&multi).unwrap();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stdout.contains("pod/good created"), "{out:?}");
    // An invalid update of the running pod: refused, pod untouched.
    let update = pod_yaml("keep", "sleep 3600").replace(&format!("image: {IMAGE}"), "image: \"\"");
    let out = a.apply(&update).unwrap();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("spec.containers[0].image"), "{out:?}");
    let after = a.get_pod("keep").unwrap().unwrap();
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(container_status(&after, "c").unwrap()["restartCount"], 0);
    assert_eq!(
        after["metadata"]["uid"], before["metadata"]["uid"],
        "rv before {rv}, after {}",
        after["metadata"]["resourceVersion"]
    );
}
