//! The read path the real `kubectl` (v1.32) relies on, against a real
//! `herd agent` in its own network namespace: aggregated discovery
//! (`api-resources`), Table responses (`get -o wide`, several kinds, `-w`),
//! list paging (`--chunk-size`), OpenAPI v3 (`explain`, and `apply`
//! detecting server-side strict field validation).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use herd_integration::agent::{Agent, AgentOpts, CliOutput, pod, sh_container};
use serde_json::json;

fn kubectl(agent: &Agent, args: &[&str], stdin: Option<&str>) -> CliOutput {
    agent.kubectl(args, stdin).expect("run kubectl")
}

/// Runs kubectl and requires success.
fn ok(agent: &Agent, args: &[&str]) -> String {
    let out = kubectl(agent, args, None);
    assert_eq!(
        out.status, 0,
        "kubectl {args:?} failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// The whitespace-separated cells of the line starting with `first`.
fn row<'a>(out: &'a str, first: &str) -> Vec<&'a str> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{out}"))
}

fn wait_running(agent: &Agent, name: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = agent.get_pod(name).unwrap()
            && p["status"]["phase"] == "Running"
            && p["status"]["podIP"].is_string()
        {
            return p;
        }
        assert!(Instant::now() < deadline, "pod {name} never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubectl_read_path() {
    if !herd_integration::root_or_skip("kubectl_read_path", "runs an agent with pods in a netns") {
        return;
    }
    let agent = Agent::start(
        env!("CARGO_BIN_EXE_herd"),
        "kubectl_read",
        AgentOpts::default(),
    )
    .unwrap();
    for i in 0..5 {
        let mut p = pod(
            &format!("p{i}"),
            json!({"containers": [sh_container("c", "sleep 3600")]}),
        );
        p["metadata"]["labels"] = json!({"set": "read"});
        agent.create(&p).unwrap();
    }
    agent
        .create(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "cfg", "namespace": "default"},
                        "data": {"a": "1", "b": "2"}}))
        .unwrap();
    // Kinds the fixture does not create: through kubectl itself.
    for obj in [
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "herd.test/absent:1", "imagePullPolicy": "Never"}]}}}}),
    ] {
        let out = kubectl(&agent, &["create", "-f", "-"], Some(&obj.to_string()));
        assert_eq!(out.status, 0, "{}", out.stderr);
    }

    // Aggregated discovery: every resource with its short names and group.
    let res = kubectl(&agent, &["api-resources", "-v=8"], None);
    assert_eq!(res.status, 0, "{}", res.stderr);
    assert!(
        res.stderr
            .contains("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
        "kubectl did not get aggregated discovery:\n{}",
        res.stderr
    );
    let out = res.stdout;
    assert_eq!(row(&out, "pods")[1..], ["po", "v1", "true", "Pod"], "{out}");
    assert_eq!(
        row(&out, "deployments")[1..],
        ["deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(
        row(&out, "namespaces")[1..],
        ["ns", "v1", "false", "Namespace"]
    );
    assert_eq!(row(&out, "jobs")[1..], ["batch/v1", "true", "Job"]);

    // `get -o wide`: kubectl's pod columns, values from the objects.
    let p0 = wait_running(&agent, "p0");
    let out = ok(&agent, &["get", "pods", "-o", "wide"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    let r = row(&out, "p0");
    assert_eq!(r[1..4], ["1/1", "Running", "0"], "{out}");
    assert_eq!(r[5], p0["status"]["podIP"].as_str().unwrap());
    assert_eq!(r[6], p0["spec"]["nodeName"].as_str().unwrap());
    assert_eq!(r[7..], ["<none>", "<none>"]);

    // One object, and all namespaces (kubectl adds NAMESPACE itself from
    // each row's metadata).
    let out = ok(&agent, &["get", "pod", "p0"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(row(&out, "p0")[1..3], ["1/1", "Running"], "{out}");
    let out = ok(&agent, &["get", "pods", "-A", "-l", "set=read"]);
    assert!(out.starts_with("NAMESPACE "), "{out}");
    assert_eq!(row(&out, "default")[1], "p0", "{out}");

    // Several kinds at once.
    let out = ok(&agent, &["get", "deploy,svc,cm"]);
    // READY is ready/spec.replicas (a Deployment with replicas 0 is
    // defaulted to 1 by the server today, hence no exact value).
    let d = row(&out, "deployment.apps/web");
    assert!(d[1].starts_with("0/") && d.len() == 5, "{out}");
    assert_eq!(row(&out, "service/web")[1], "ClusterIP", "{out}");
    assert_eq!(row(&out, "configmap/cfg")[1], "2", "{out}");

    // Paging: 5 pods in pages of 2, each page asked with the last token.
    let out = kubectl(
        &agent,
        &["get", "pods", "-l", "set=read", "--chunk-size=2", "-v=6"],
        None,
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let names: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"], "{}", out.stdout);
    let gets = out
        .stderr
        .lines()
        .filter(|l| l.contains("GET") && l.contains("/pods?") && l.contains("limit=2"))
        .count();
    let continued = out
        .stderr
        .lines()
        .filter(|l| l.contains("/pods?") && l.contains("continue="))
        .count();
    assert_eq!((gets, continued), (3, 2), "{}", out.stderr);

    // Explain from the OpenAPI v3 document.
    let out = ok(&agent, &["explain", "pod.spec.containers.image"]);
    assert!(out.contains("FIELD: image <string>"), "{out}");
    assert!(out.contains("Container image name"), "{out}");

    let out = ok(&agent, &["explain", "deployment.spec.strategy"]);
    assert!(out.contains("GROUP:      apps"), "{out}");
    assert!(out.contains("rollingUpdate"), "{out}");

    // `get all`: the `all` category from discovery.
    let out = ok(&agent, &["get", "all"]);
    for name in ["pod/p0", "service/web", "deployment.apps/web"] {
        row(&out, name);
    }
    let out = ok(&agent, &["get", "nodes", "-o", "wide"]);
    assert!(
        out.starts_with("NAME ") && out.contains("INTERNAL-IP"),
        "{out}"
    );

    // Apply with an unknown field: kubectl sees that the server validates
    // (OpenAPI v3), sends fieldValidation=Strict and shows the server's
    // error; nothing is created.
    let bad = "apiVersion: v1\nkind: Service\nmetadata:\n  name: strict\n  namespace: default\n\
               spec:\n  foo: 1\n  ports:\n  - port: 80\n";
    let out = kubectl(&agent, &["apply", "-f", "-", "-v=6"], Some(bad));
    assert_ne!(out.status, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("unknown field \"spec.foo\""),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("fieldValidation=Strict"),
        "{}",
        out.stderr
    );
    let out = kubectl(&agent, &["get", "svc", "strict"], None);
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("NotFound"), "{}", out.stderr);

    // Client-side apply after an edit: kubectl computes a strategic merge
    // patch from the v3 schemas (ports merge by `port`: the removed one is
    // a `$patch: delete`, the order a `$setElementOrder`), no warnings.
    let svc = |ports: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: applied\n  namespace: default\n\
             spec:\n  selector:\n    app: a\n  ports:\n{ports}"
        )
    };
    let two = "  - name: a\n    port: 80\n  - name: b\n    port: 81\n";
    let out = kubectl(&agent, &["apply", "-f", "-"], Some(&svc(two)));
    assert_eq!(out.status, 0, "{}", out.stderr);
    let one = "  - name: a\n    port: 80\n    targetPort: 8080\n";
    let out = kubectl(&agent, &["apply", "-f", "-", "-v=8"], Some(&svc(one)));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("application/strategic-merge-patch+json")
            && out.stderr.contains("$setElementOrder/ports"),
        "{}",
        out.stderr
    );
    let got: serde_json::Value =
        serde_json::from_str(&ok(&agent, &["get", "svc", "applied", "-o", "json"])).unwrap();
    let ports = got["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{got}");
    assert_eq!(ports[0]["targetPort"], 8080, "{got}");

    // `get -w`: the table header and the current pods, then the change
    // a deletion makes; read line by line, then kill kubectl.
    let mut child = agent
        .kubectl_command(&["get", "pods", "-l", "set=read", "-w"])
        .unwrap()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let terminating = |l: &String| l.starts_with("p4 ") && l.contains("Terminating");
    let mut lines: Vec<String> = Vec::new();
    let mut deleted = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines.iter().any(terminating) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
        if !deleted && lines.iter().filter(|l| l.starts_with('p')).count() == 5 {
            agent.delete_pod("p4", Some(30)).unwrap();
            deleted = true;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("NAME") && l.contains("RESTARTS")),
        "{lines:?}"
    );
    for i in 0..5 {
        let first = lines
            .iter()
            .find(|l| l.starts_with(&format!("p{i} ")))
            .unwrap_or_else(|| panic!("no p{i} in {lines:?}"));
        assert_eq!(first.split_whitespace().count(), 5, "{first}");
    }
    assert!(
        lines.iter().any(terminating),
        "no Terminating p4 in {lines:?}"
    );
}
