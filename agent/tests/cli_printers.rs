//! The `herd` binary's API commands (apply, get, describe, delete) against
//! the real API router and a real `LocalStore` on a unix socket in a temp
//! dir: kubectl's messages, output and exit codes. No root, no runtime
//! (pods stay Pending; logs/exec are covered by the end-to-end tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use herd_agent::api::server::{ApiState, router, serve};
use herd_agent::store::local::LocalStore;

struct Agent {
    _rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn start(root: &Path) -> Agent {
    let store = LocalStore::open(&root.join("store.redb"), &root.join("secrets.redb")).unwrap();
    let state = ApiState {
        store: Arc::new(store),
        runtime: None,
        node_name: "n1".into(),
        bind_unscheduled: false,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let sock = root.join("agent.sock");
    let app = router(state);
    rt.spawn(async move {
        let _ = serve(app, &sock, None, async {
            let _ = rx.await;
        })
        .await;
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(root.join("agent.sock")).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "agent socket never came up"
        );
        std::thread::yield_now();
    }
    Agent {
        _rt: rt,
        stop: Some(tx),
    }
}

fn herd(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .env("HERD_ROOT_DIR", root)
        .env_remove("HERD_SERVER")
        .output()
        .unwrap()
}

fn out(o: &Output) -> (String, String, i32) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code().unwrap_or(-1),
    )
}

const MANIFEST: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  a: \"1\"
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: app
    image: busybox
";

#[test]
fn apply_get_describe_delete() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _agent = start(root);
    let f = root.join("m.yaml");
    std::fs::write(&f, MANIFEST).unwrap();
    let f = f.to_str().unwrap();

    let (so, se, code) = out(&herd(root, &["get", "pods"]));
    assert_eq!(
        (so.as_str(), se.as_str(), code),
        ("", "No resources found in default namespace.\n", 0)
    );

    let (so, se, code) = out(&herd(root, &["apply", "-f", f]));
    assert_eq!(
        (so.as_str(), code),
        ("configmap/cfg created\npod/web created\n", 0),
        "{se}"
    );
    let (so, se, code) = out(&herd(root, &["apply", "-f", f]));
    assert_eq!(
        (so.as_str(), code),
        ("configmap/cfg unchanged\npod/web unchanged\n", 0),
        "{se}"
    );
    std::fs::write(
        root.join("m.yaml"),
        MANIFEST.replace("a: \"1\"", "a: \"2\""),
    )
    .unwrap();
    let (so, se, code) = out(&herd(root, &["apply", "-f", f]));
    assert_eq!(
        (so.as_str(), code),
        ("configmap/cfg configured\npod/web unchanged\n", 0),
        "{se}"
    );

    let (so, _, code) = out(&herd(root, &["get", "pods"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = so.lines().collect();
    assert_eq!(lines[0], "NAME   READY   STATUS    RESTARTS   AGE");
    assert!(
        lines[1].starts_with("web    0/1     Pending   0          "),
        "{so}"
    );
    let (so, _, _) = out(&herd(root, &["get", "po", "-l", "app=web", "-o", "name"]));
    assert_eq!(so, "pod/web\n");
    let (so, _, _) = out(&herd(root, &["get", "cm", "cfg", "-o", "yaml"]));
    assert!(
        so.contains("kind: ConfigMap") && (so.contains("a: '2'") || so.contains("a: \"2\"")),
        "{so}"
    );
    let (so, _, _) = out(&herd(root, &["get", "configmaps", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&so).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"][0]["data"]["a"], "2");

    let (so, se, code) = out(&herd(root, &["describe", "pod", "web"]));
    assert_eq!(code, 0, "{se}");
    assert!(
        so.starts_with("Name:         web\nNamespace:    default\n"),
        "{so}"
    );
    assert!(so.contains("Labels:       app=web\n"), "{so}");
    assert!(
        so.contains("Containers:\n  app:\n    Image:        busybox\n"),
        "{so}"
    );
    assert!(so.ends_with("Events:  <none>\n"), "{so}");
    assert!(so.contains("QoS Class:"), "{so}");

    let (so, se, code) = out(&herd(root, &["get", "pod", "web", "nope"]));
    assert_eq!(code, 1);
    assert!(so.contains("web"));
    assert_eq!(
        se,
        "Error from server (NotFound): pods \"nope\" not found\n"
    );

    let (so, se, code) = out(&herd(root, &["delete", "pod", "web"]));
    assert_eq!((so.as_str(), code), ("pod \"web\" deleted\n", 0), "{se}");
    let (_, se, code) = out(&herd(root, &["delete", "pod", "web"]));
    assert_eq!(
        (se.as_str(), code),
        ("Error from server (NotFound): pods \"web\" not found\n", 1)
    );
    let (_, _, code) = out(&herd(root, &["delete", "pod", "web", "--ignore-not-found"]));
    assert_eq!(code, 0);
    let (so, _, code) = out(&herd(root, &["delete", "-f", f]));
    assert_eq!(code, 1);
    assert!(so.starts_with("configmap \"cfg\" deleted\n"), "{so}");
}

#[test]
fn bad_documents_are_reported_and_the_rest_applied() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _agent = start(root);
    let f = root.join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: app\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n",
    )
    .unwrap();
    let (so, se, code) = out(&herd(root, &["apply", "-f", f.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert_eq!(so, "configmap/ok created\n");
    assert!(
        se.contains("The Pod \"bad\" is invalid: spec.containers[0].image: Required value"),
        "{se}"
    );
    let (_, se, code) = out(&herd(root, &["get", "pod", "bad"]));
    assert_eq!(
        (se.as_str(), code),
        ("Error from server (NotFound): pods \"bad\" not found\n", 1)
    );
    let (_, se, code) = out(&herd(
        root,
        &["apply", "-f", root.join("missing.yaml").to_str().unwrap()],
    ));
    assert_eq!(code, 1);
    assert!(se.contains("does not exist"), "{se}");
}

#[test]
fn no_agent_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, se, code) = out(&herd(dir.path(), &["get", "pods"]));
    assert_eq!(code, 1);
    assert!(
        se.starts_with("error: the agent is not running at "),
        "{se}"
    );
}

#[test]
fn get_watch_prints_rows_as_they_change() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _agent = start(root);
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["get", "pods", "-w"])
        .env("HERD_ROOT_DIR", root)
        .env_remove("HERD_SERVER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let f = root.join("p.yaml");
    std::fs::write(&f, MANIFEST).unwrap();
    // The watch may start after the apply: either way the pod shows up
    // (in the initial list or as an event).
    let (_, se, code) = out(&herd(root, &["apply", "-f", f.to_str().unwrap()]));
    assert_eq!(code, 0, "{se}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no pod row within 20s; saw {seen:?}"));
        if line.starts_with("web ") {
            assert!(line.contains("Pending"), "{line}");
            break;
        }
        seen.push(line);
    }
    let (so, _, code) = out(&herd(root, &["delete", "pod", "web"]));
    assert_eq!((so.as_str(), code), ("pod \"web\" deleted\n", 0));
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no row for the deletion within 20s"));
        if line.starts_with("web ") {
            break;
        }
    }
}

#[test]
fn cluster_kinds_apply_get_scale_delete() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _agent = start(root);
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/manifests/cluster.yaml"
    );
    let (o, e, code) = out(&herd(root, &["apply", "-f", manifest]));
    assert_eq!(code, 0, "{e}");
    assert_eq!(
        o,
        "deployment.apps/web created\nservice/web created\njob.batch/once created\n"
    );
    let (o, e, code) = out(&herd(root, &["apply", "-f", manifest]));
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("service/web unchanged"), "{o}");

    let (o, _, _) = out(&herd(root, &["get", "deployments"]));
    let lines: Vec<&str> = o.lines().collect();
    assert!(
        lines[0].starts_with("NAME   READY   UP-TO-DATE   AVAILABLE   AGE"),
        "{o}"
    );
    assert!(
        lines[1].starts_with("web    0/2     0            0           "),
        "{o}"
    );
    let (o, _, _) = out(&herd(root, &["get", "deploy", "-o", "wide"]));
    assert!(
        o.lines()
            .next()
            .unwrap()
            .ends_with("CONTAINERS   IMAGES         SELECTOR"),
        "{o}"
    );
    assert!(o.contains("httpd        busybox:1.36   app=web"), "{o}");

    let (o, _, _) = out(&herd(root, &["get", "svc", "web", "-o", "wide"]));
    let lines: Vec<&str> = o.lines().collect();
    assert!(
        lines[0].starts_with("NAME   TYPE       CLUSTER-IP   EXTERNAL-IP   PORT(S)        AGE"),
        "{o}"
    );
    assert!(lines[0].ends_with("SELECTOR"), "{o}");
    assert!(
        lines[1].starts_with("web    NodePort   10.96.0.50   <none>        80:30080/TCP   "),
        "{o}"
    );
    assert!(lines[1].ends_with("app=web"), "{o}");

    let (o, _, _) = out(&herd(root, &["get", "jobs"]));
    let lines: Vec<&str> = o.lines().collect();
    assert!(
        lines[0].starts_with("NAME   STATUS    COMPLETIONS   DURATION   AGE"),
        "{o}"
    );
    assert!(
        lines[1].starts_with("once   Running   0/1                      "),
        "{o}"
    );

    let (o, e, code) = out(&herd(
        root,
        &["scale", "deployment", "web", "--replicas", "4"],
    ));
    assert_eq!(
        (o.as_str(), code),
        ("deployment.apps/web scaled\n", 0),
        "{e}"
    );
    let (o, _, _) = out(&herd(root, &["get", "deploy", "web", "-o", "name"]));
    assert_eq!(o, "deployment.apps/web\n");
    let (o, _, _) = out(&herd(root, &["get", "deploy", "web", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["spec"]["replicas"], 4);

    let (o, _, _) = out(&herd(root, &["describe", "deployment", "web"]));
    assert!(o.contains("Replicas:"), "{o}");
    assert!(
        o.contains("4 desired | 0 updated | 0 total | 0 available | 0 unavailable"),
        "{o}"
    );
    assert!(o.contains("25% max unavailable, 25% max surge"), "{o}");
    let (o, _, _) = out(&herd(root, &["describe", "svc", "web"]));
    assert!(
        o.lines()
            .any(|l| l.starts_with("IP:") && l.ends_with(" 10.96.0.50")),
        "{o}"
    );
    assert!(
        o.lines()
            .any(|l| l.starts_with("NodePort:") && l.ends_with("30080/TCP")),
        "{o}"
    );

    // The Job is removed (Background, as kubectl), not orphaned.
    let (o, e, code) = out(&herd(root, &["delete", "-f", manifest]));
    assert_eq!(code, 0, "{e}");
    assert_eq!(
        o,
        "deployment.apps \"web\" deleted\nservice \"web\" deleted\njob.batch \"once\" deleted\n"
    );
    for kind in ["jobs", "deploy", "svc"] {
        let (o, _, _) = out(&herd(root, &["get", kind]));
        assert!(!o.contains("once") && !o.contains("web"), "{kind}: {o}");
    }
}
