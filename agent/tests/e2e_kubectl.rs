//! Issue 7's acceptance, as root: the real `kubectl` (v1.32 here) drives a
//! herd cluster of two nodes, each in its own network namespace, through
//! a kubeconfig from `herd kubeconfig`. kubectl always talks to node 0;
//! the pods it reads logs from, execs into and forwards ports to run on
//! node 1 too, so those streams cross the node proxy.
//!
//! Bad input (invalid manifests, unknown fields, oversized bodies, stale
//! resourceVersions, garbage bodies) is in `bad_input_*` against one
//! agent; wrong tokens are in `e2e_kubectl_auth.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use herd_integration::agent::cluster::{Cluster, ClusterOpts};
use herd_integration::agent::{Agent, AgentOpts, CliOutput, IMAGE, run_with_stdin};
use serde_json::Value;

fn ok(out: &CliOutput) -> &str {
    assert_eq!(out.status, 0, "{out:?}");
    &out.stdout
}

fn manifest(x: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: shop
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: sec
  namespace: shop
stringData:
  password: s3cret
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
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
      - name: web
        image: {IMAGE}
        imagePullPolicy: Never
        command: ["sh", "-c", "echo $GREETING; mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        env:
        - name: X
          value: "{x}"
        - name: GREETING
          valueFrom:
            configMapKeyRef: {{name: cfg, key: greeting}}
        ports:
        - containerPort: 8080
        volumeMounts:
        - {{name: sec, mountPath: /etc/secret}}
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
      volumes:
      - name: sec
        secret: {{secretName: sec}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

/// Reads `child`'s stdout lines on a thread.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line matching `want`; returns every line read.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = want(&l);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no matching line within {timeout:?}; saw {seen:?}");
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

fn pods(a: &Agent) -> Vec<Value> {
    let out = a
        .kubectl(
            &["-n", "shop", "get", "pods", "-l", "app=web", "-o", "json"],
            None,
        )
        .unwrap();
    let v: Value = serde_json::from_str(ok(&out)).unwrap();
    v["items"].as_array().unwrap().clone()
}

/// `kubectl rollout status deployment/web` succeeds.
fn rolled_out(a: &Agent) {
    let out = a
        .kubectl(
            &[
                "-n",
                "shop",
                "rollout",
                "status",
                "deployment/web",
                "--timeout=120s",
            ],
            None,
        )
        .unwrap();
    assert!(ok(&out).contains("successfully rolled out"), "{out:?}");
}

fn env_x(a: &Agent) -> String {
    let out = a
        .kubectl(
            &[
                "-n",
                "shop",
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].env[0].value}",
            ],
            None,
        )
        .unwrap();
    ok(&out).to_string()
}

#[test]
fn kubectl_drives_a_cluster() {
    if !herd_integration::root_or_skip("kubectl", "runc, cgroups, mounts, network namespaces") {
        return;
    }
    let c = Cluster::start(
        env!("CARGO_BIN_EXE_herd"),
        "kctl",
        2,
        ClusterOpts::default(),
    )
    .unwrap();
    let a = c.node(0);

    // A multi-document manifest.
    let out = a
        .kubectl(&["apply", "-f", "-"], Some(&manifest("1")))
        .unwrap();
    let text = ok(&out);
    for line in [
        "namespace/shop created",
        "configmap/cfg created",
        "secret/sec created",
        "deployment.apps/web created",
        "service/web created",
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    rolled_out(a);

    // get: wide, json, yaml.
    let out = a
        .kubectl(&["-n", "shop", "get", "pods", "-o", "wide"], None)
        .unwrap();
    let text = ok(&out);
    let mut rows = text.lines();
    let header: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &header[..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        "{text}"
    );
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), 2, "{text}");
    for r in &rows {
        assert!(
            r.starts_with("web-") && r.contains(" 1/1 ") && r.contains("Running"),
            "{r}"
        );
    }
    let items = pods(a);
    assert_eq!(items.len(), 2);
    let out = a
        .kubectl(&["-n", "shop", "get", "deploy", "web", "-o", "yaml"], None)
        .unwrap();
    let text = ok(&out);
    assert!(
        text.contains("kind: Deployment") && text.contains("name: web"),
        "{text}"
    );
    let out = a
        .kubectl(&["-n", "shop", "get", "svc", "web"], None)
        .unwrap();
    let text = ok(&out);
    assert!(
        text.starts_with("NAME") && text.contains("ClusterIP") && text.contains("80/TCP"),
        "{text}"
    );

    // describe.
    let out = a
        .kubectl(&["-n", "shop", "describe", "deployment", "web"], None)
        .unwrap();
    let text = ok(&out);
    assert!(
        text.contains("Replicas:") && text.contains("2 desired"),
        "{text}"
    );

    // get -w sees a scale-up; scale.
    let mut watch = spawn(
        &mut a
            .kubectl_command(&["-n", "shop", "get", "deploy", "web", "-w"])
            .unwrap(),
    );
    let rx = lines(&mut watch);
    wait_line(&rx, Duration::from_secs(20), |l| l.starts_with("web"));
    let out = a
        .kubectl(
            &["-n", "shop", "scale", "deployment/web", "--replicas=3"],
            None,
        )
        .unwrap();
    assert!(ok(&out).contains("deployment.apps/web scaled"), "{out:?}");
    wait_line(&rx, Duration::from_secs(90), |l| {
        l.starts_with("web") && l.contains("3/3")
    });
    stop(watch);

    // apply again after an edit: a strategic merge (kubectl's three-way
    // patch also sets replicas back to the manifest's 2, as on any cluster).
    let out = a
        .kubectl(&["apply", "-f", "-"], Some(&manifest("2")))
        .unwrap();
    assert!(
        ok(&out).contains("deployment.apps/web configured"),
        "{out:?}"
    );
    assert!(out.stdout.contains("configmap/cfg unchanged"), "{out:?}");
    assert_eq!(env_x(a), "2");
    rolled_out(a);
    let out = a
        .kubectl(
            &[
                "-n",
                "shop",
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            None,
        )
        .unwrap();
    assert_eq!(ok(&out), "2");

    // rollout undo goes back to X=1.
    let out = a
        .kubectl(&["-n", "shop", "rollout", "undo", "deployment/web"], None)
        .unwrap();
    assert!(ok(&out).contains("rolled back"), "{out:?}");
    assert_eq!(env_x(a), "1");
    rolled_out(a);

    // A pod on node 1, reached through node 0.
    let remote = pods(a)
        .into_iter()
        .find(|p| {
            p["spec"]["nodeName"] == c.node(1).node_name.as_str()
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .expect("a web pod on node 1");
    let pod = remote["metadata"]["name"].as_str().unwrap().to_string();
    let target = format!("pod/{pod}");

    // logs -f.
    let mut logs = spawn(
        &mut a
            .kubectl_command(&["-n", "shop", "logs", "-f", &target])
            .unwrap(),
    );
    let rx = lines(&mut logs);
    wait_line(&rx, Duration::from_secs(20), |l| l == "hello");
    stop(logs);

    // exec -- sh -c.
    let out = a
        .kubectl(
            &[
                "-n",
                "shop",
                "exec",
                &pod,
                "--",
                "sh",
                "-c",
                "echo $GREETING-$X; cat /etc/secret/password; exit 3",
            ],
            None,
        )
        .unwrap();
    assert_eq!(out.status, 3, "{out:?}");
    assert_eq!(out.stdout, "hello-1\ns3cret", "{out:?}");

    // exec -it through a pty (`script` gives kubectl a terminal).
    let kubeconfig = a.kubeconfig().unwrap();
    let line = format!(
        "nsenter --net={} -- kubectl --kubeconfig {} -n shop exec -it {pod} -- sh",
        a.netns().display(),
        kubeconfig.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &line, "/dev/null"]);
    let out = run_with_stdin(cmd, Some("echo tty=$(tty) sum=$((40+2))\nexit 0\n")).unwrap();
    assert!(out.stdout.contains("sum=42"), "{out:?}");
    assert!(out.stdout.contains("tty=/dev/pts/"), "{out:?}");

    // port-forward.
    let mut pf = spawn(
        &mut a
            .kubectl_command(&["-n", "shop", "port-forward", &target, "18080:8080"])
            .unwrap(),
    );
    let rx = lines(&mut pf);
    wait_line(&rx, Duration::from_secs(20), |l| {
        l.contains("Forwarding from 127.0.0.1:18080")
    });
    for _ in 0..2 {
        let mut curl = Command::new("nsenter");
        curl.arg(format!("--net={}", a.netns().display())).args([
            "--",
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://127.0.0.1:18080/",
        ]);
        let out = run_with_stdin(curl, None).unwrap();
        assert_eq!(out.stdout.trim(), pod, "{out:?}");
    }
    stop(pf);

    // delete -f, then the namespace is gone with everything in it. The
    // manifest lists the namespace first, so the namespace controller may
    // remove an object before kubectl reaches it (as on any cluster):
    // --ignore-not-found makes that race harmless.
    let out = a
        .kubectl(
            &["delete", "-f", "-", "--wait=false", "--ignore-not-found"],
            Some(&manifest("1")),
        )
        .unwrap();
    let text = ok(&out);
    assert!(text.contains("namespace \"shop\" deleted"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = a.kubectl(&["get", "namespace", "shop"], None).unwrap();
        if out.status != 0 && out.stderr.contains("NotFound") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "namespace shop still there: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = a
        .kubectl(&["get", "pods", "-A", "-o", "name"], None)
        .unwrap();
    assert!(!ok(&out).contains("web-"), "{out:?}");
}

fn agent(test: &str) -> Option<Agent> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
        return None;
    }
    Some(Agent::start(env!("CARGO_BIN_EXE_herd"), test, AgentOpts::default()).unwrap())
}

fn not_found(a: &Agent, args: &[&str]) {
    let out = a.kubectl(args, None).unwrap();
    assert_ne!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains("NotFound") || out.stderr.contains("not found"),
        "{out:?}"
    );
}

#[test]
fn bad_input_gets_status_and_changes_nothing() {
    let Some(a) = agent("kbad") else {
        return;
    };
    // Invalid: a container without an image.
    let bad =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - name: c\n";
    let out = a.kubectl(&["apply", "-f", "-"], Some(bad)).unwrap();
    assert_ne!(out.status, 0);
    assert!(
        out.stderr.contains("Pod \"bad\" is invalid")
            && out
                .stderr
                .contains("spec.containers[0].image: Required value"),
        "{out:?}"
    );
    not_found(&a, &["get", "pod", "bad"]);

    // Unknown field: strict field validation.
    let unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: u}\ndata: {a: b}\nfoo: bar\n";
    let out = a.kubectl(&["apply", "-f", "-"], Some(unknown)).unwrap();
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("unknown field \"foo\""), "{out:?}");
    not_found(&a, &["get", "configmap", "u"]);
    // ... which Ignore drops.
    let out = a
        .kubectl(&["apply", "--validate=false", "-f", "-"], Some(unknown))
        .unwrap();
    assert!(ok(&out).contains("configmap/u created"), "{out:?}");

    // Oversized body: 413, nothing stored.
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{k: {}}}\n",
        "x".repeat(4 << 20)
    );
    let out = a.kubectl(&["apply", "-f", "-"], Some(&big)).unwrap();
    assert_ne!(out.status, 0);
    assert!(out.stderr.to_lowercase().contains("too large"), "{out:?}");
    not_found(&a, &["get", "configmap", "big"]);

    // Protobuf bodies: understood for the kinds kubectl's typed creates
    // send; another kind gets 415 with the way out.
    let out = a
        .kubectl(&["create", "configmap", "pb", "--from-literal=k=v"], None)
        .unwrap();
    assert!(ok(&out).contains("configmap/pb created"), "{out:?}");
    let out = a
        .kubectl(&["create", "deployment", "pbd", "--image", IMAGE], None)
        .unwrap();
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("kubectl create -f"), "{out:?}");
    not_found(&a, &["get", "deployment", "pbd"]);

    // A stale resourceVersion: 409, the newer value stays.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {k: v1}\n";
    let out = a.kubectl(&["create", "-f", "-"], Some(cm)).unwrap();
    ok(&out);
    let out = a
        .kubectl(&["get", "configmap", "cm", "-o", "json"], None)
        .unwrap();
    let old: Value = serde_json::from_str(ok(&out)).unwrap();
    let out = a
        .kubectl(
            &["patch", "configmap", "cm", "-p", r#"{"data":{"k":"v2"}}"#],
            None,
        )
        .unwrap();
    assert!(ok(&out).contains("configmap/cm patched"), "{out:?}");
    let mut stale = old.clone();
    stale["data"]["k"] = "v3".into();
    let out = a
        .kubectl(&["replace", "-f", "-"], Some(&stale.to_string()))
        .unwrap();
    assert_ne!(out.status, 0);
    assert!(
        out.stderr.contains("the object has been modified"),
        "{out:?}"
    );
    let out = a
        .kubectl(
            &["get", "configmap", "cm", "-o", "jsonpath={.data.k}"],
            None,
        )
        .unwrap();
    assert_eq!(ok(&out), "v2");

    // Garbage bodies and patches: 400/415/422 Status, nothing changes.
    let out = a
        .kubectl(
            &[
                "patch",
                "configmap",
                "cm",
                "--type=json",
                "-p",
                r#"[{"op":"test","path":"/data/k","value":"nope"}]"#,
            ],
            None,
        )
        .unwrap();
    assert_ne!(out.status, 0, "{out:?}");
    let out = a
        .kubectl(
            &[
                "patch",
                "configmap",
                "cm",
                "--type=merge",
                "-p",
                "{not json",
            ],
            None,
        )
        .unwrap();
    assert_ne!(out.status, 0, "{out:?}");
    let out = a
        .kubectl(
            &["get", "configmap", "cm", "-o", "jsonpath={.data.k}"],
            None,
        )
        .unwrap();
    assert_eq!(ok(&out), "v2");
    let out = a
        .kubectl(
            &[
                "create",
                "--raw",
                "/api/v1/namespaces/default/configmaps",
                "-f",
                "-",
            ],
            Some("\u{1}\u{2}garbage"),
        )
        .unwrap();
    assert_ne!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains("BadRequest") || out.stderr.contains("400"),
        "{out:?}"
    );
}

#[test]
fn typed_creates_drain_and_server_side_apply() {
    let Some(a) = agent("kssa") else {
        return;
    };
    // kubectl's typed creates send protobuf.
    let out = a.kubectl(&["create", "namespace", "team"], None).unwrap();
    assert!(ok(&out).contains("namespace/team created"), "{out:?}");
    let out = a
        .kubectl(
            &[
                "-n",
                "team",
                "create",
                "secret",
                "generic",
                "s",
                "--from-literal=p=q",
            ],
            None,
        )
        .unwrap();
    assert!(ok(&out).contains("secret/s created"), "{out:?}");
    let out = a
        .kubectl(
            &[
                "-n",
                "team",
                "get",
                "secret",
                "s",
                "-o",
                "jsonpath={.data.p}",
            ],
            None,
        )
        .unwrap();
    assert_eq!(ok(&out), "cQ==");

    // Server-side apply: create, change, conflict with another manager,
    // force.
    let cm = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ssa, namespace: team}}\ndata: {{a: {v}}}\n"
        )
    };
    let out = a
        .kubectl(&["apply", "--server-side", "-f", "-"], Some(&cm("one")))
        .unwrap();
    assert!(
        ok(&out).contains("configmap/ssa serverside-applied"),
        "{out:?}"
    );
    let out = a
        .kubectl(&["apply", "--server-side", "-f", "-"], Some(&cm("two")))
        .unwrap();
    ok(&out);
    let get = |a: &Agent| {
        let out = a
            .kubectl(
                &["-n", "team", "get", "cm", "ssa", "-o", "jsonpath={.data.a}"],
                None,
            )
            .unwrap();
        ok(&out).to_string()
    };
    assert_eq!(get(&a), "two");
    let out = a
        .kubectl(
            &[
                "-n",
                "team",
                "patch",
                "cm",
                "ssa",
                "--type=merge",
                "-p",
                r#"{"data":{"a":"patched"}}"#,
            ],
            None,
        )
        .unwrap();
    ok(&out);
    let out = a
        .kubectl(&["apply", "--server-side", "-f", "-"], Some(&cm("three")))
        .unwrap();
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("conflict"), "{out:?}");
    assert_eq!(get(&a), "patched");
    let out = a
        .kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(&cm("three")),
        )
        .unwrap();
    ok(&out);
    assert_eq!(get(&a), "three");
    let out = a
        .kubectl(
            &[
                "-n",
                "team",
                "get",
                "cm",
                "ssa",
                "-o",
                "jsonpath={.metadata.managedFields[*].manager}",
            ],
            None,
        )
        .unwrap();
    assert!(ok(&out).contains("kubectl"), "{out:?}");

    // deletecollection, by label.
    for n in ["l1", "l2"] {
        let y = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}, namespace: team, labels: {{del: me}}}}\n"
        );
        ok(&a.kubectl(&["create", "-f", "-"], Some(&y)).unwrap());
    }
    let out = a
        .kubectl(
            &[
                "delete",
                "--raw",
                "/api/v1/namespaces/team/configmaps?labelSelector=del%3Dme",
            ],
            None,
        )
        .unwrap();
    ok(&out);
    let out = a
        .kubectl(
            &["-n", "team", "get", "cm", "-l", "del=me", "-o", "name"],
            None,
        )
        .unwrap();
    assert_eq!(ok(&out).trim(), "");

    // drain: cordon, then an Eviction per pod.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: team}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, '3600']}}\n"
    );
    ok(&a.kubectl(&["apply", "-f", "-"], Some(&pod)).unwrap());
    let out = a
        .kubectl(
            &[
                "-n",
                "team",
                "wait",
                "--for=condition=Ready",
                "pod/p",
                "--timeout=60s",
            ],
            None,
        )
        .unwrap();
    ok(&out);
    // exec over SPDY, as kubectl before 1.30 speaks it: output, exit code,
    // stdin.
    let mut cmd = a
        .kubectl_command(&[
            "-n",
            "team",
            "exec",
            "-i",
            "p",
            "--",
            "sh",
            "-c",
            "read x; echo got=$x; echo err >&2; exit 4",
        ])
        .unwrap();
    cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    let out = run_with_stdin(cmd, Some("hi\n")).unwrap();
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (4, "got=hi\n"),
        "{out:?}"
    );
    assert!(out.stderr.starts_with("err\n"), "{out:?}");
    let mut cmd = a
        .kubectl_command(&["-v=6", "-n", "team", "exec", "p", "--", "true"])
        .unwrap();
    cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    let out = run_with_stdin(cmd, None).unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains("POST") && out.stderr.contains("101 Switching Protocols"),
        "{out:?}"
    );

    let out = a
        .kubectl(&["drain", &a.node_name, "--force", "--timeout=60s"], None)
        .unwrap();
    let text = ok(&out);
    assert!(
        text.contains("evicting pod team/p") || out.stderr.contains("evicting pod team/p"),
        "{out:?}"
    );
    assert!(
        text.contains(&format!("node/{} drained", a.node_name)),
        "{out:?}"
    );
    not_found(&a, &["-n", "team", "get", "pod", "p"]);
    let out = a.kubectl(&["uncordon", &a.node_name], None).unwrap();
    assert!(ok(&out).contains("uncordoned"), "{out:?}");

    // delete namespace: it and everything in it go.
    let out = a.kubectl(&["delete", "namespace", "team"], None).unwrap();
    assert!(ok(&out).contains("namespace \"team\" deleted"), "{out:?}");
    not_found(&a, &["get", "namespace", "team"]);
    not_found(&a, &["-n", "team", "get", "secret", "s"]);
}
