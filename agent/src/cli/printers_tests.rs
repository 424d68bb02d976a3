//! Tests of the `get` printers and the command-line flags.

use clap::Parser;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::printers::{self, Output, pod_row, pod_summary};
use super::{Cli, Command};
use crate::api::Resource;

fn now() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

fn pod(v: Value) -> Pod {
    let mut base = json!({
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2026-01-01T11:57:58Z"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}], "nodeName": "n1"},
    });
    merge(&mut base, v);
    serde_json::from_value(base).unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn status_of(v: Value) -> String {
    pod_summary(&pod(v)).status
}

#[test]
fn running_pod_row() {
    let p = pod(
        json!({"status": {"phase": "Running", "podIP": "10.88.0.5", "podIPs": [{"ip": "10.88.0.5"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "",
            "state": {"running": {"startedAt": "2026-01-01T11:58:00Z"}}}]}}),
    );
    assert_eq!(
        pod_row(&p, now(), false),
        ["web", "1/1", "Running", "0", "2m2s"]
    );
    assert_eq!(
        pod_row(&p, now(), true),
        [
            "web",
            "1/1",
            "Running",
            "0",
            "2m2s",
            "10.88.0.5",
            "n1",
            "<none>",
            "<none>"
        ]
    );
    let table = printers::table(
        &printers::header(Resource::Pods, false, false),
        &[pod_row(&p, now(), false)],
    );
    assert_eq!(
        table,
        "NAME   READY   STATUS    RESTARTS   AGE\nweb    1/1     Running   0          2m2s\n"
    );
}

#[test]
fn waiting_and_terminated_reasons() {
    let cs = |state: Value| {
        json!({"status": {"phase": "Running", "containerStatuses": [{"name": "app", "ready": false,
            "restartCount": 5, "image": "b", "imageID": "", "state": state,
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T11:59:55Z"}}}]}})
    };
    let p = pod(cs(json!({"waiting": {"reason": "CrashLoopBackOff"}})));
    assert_eq!(
        pod_row(&p, now(), false)[1..4],
        ["0/1", "CrashLoopBackOff", "5 (5s ago)"]
    );
    assert_eq!(
        status_of(
            json!({"status": {"phase": "Pending", "containerStatuses": [{"name": "app", "ready": false,
            "restartCount": 0, "image": "b", "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}]}})
        ),
        "ContainerCreating"
    );
    assert_eq!(
        status_of(cs(
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}})
        )),
        "Completed"
    );
    assert_eq!(
        status_of(cs(json!({"terminated": {"exitCode": 3}}))),
        "ExitCode:3"
    );
    assert_eq!(
        status_of(cs(json!({"terminated": {"exitCode": 137, "signal": 9}}))),
        "Signal:9"
    );
}

#[test]
fn init_containers() {
    let spec = json!({"spec": {"initContainers": [{"name": "i1", "image": "b"}, {"name": "i2", "image": "b"}]}});
    let with = |inits: Value| {
        let mut v = spec.clone();
        merge(
            &mut v,
            json!({"status": {"phase": "Pending", "initContainerStatuses": inits}}),
        );
        status_of(v)
    };
    let st = |name: &str, state: Value| json!({"name": name, "ready": false, "restartCount": 0, "image": "b", "imageID": "", "state": state});
    assert_eq!(
        with(json!([
            st("i1", json!({"running": {}})),
            st("i2", json!({"waiting": {"reason": "PodInitializing"}}))
        ])),
        "Init:0/2"
    );
    assert_eq!(
        with(json!([
            st("i1", json!({"terminated": {"exitCode": 0}})),
            st("i2", json!({"waiting": {"reason": "CrashLoopBackOff"}}))
        ])),
        "Init:CrashLoopBackOff"
    );
    assert_eq!(
        with(json!([st("i1", json!({"terminated": {"exitCode": 2}}))])),
        "Init:ExitCode:2"
    );
    let mut v = spec.clone();
    merge(
        &mut v,
        json!({"status": {"phase": "Pending",
        "conditions": [{"type": "Initialized", "status": "True"}],
        "initContainerStatuses": [st("i1", json!({"terminated": {"exitCode": 0}})), st("i2", json!({"terminated": {"exitCode": 0}}))],
        "containerStatuses": [st("app", json!({"waiting": {"reason": "PodInitializing"}}))]}}),
    );
    assert_eq!(status_of(v), "PodInitializing");
}

#[test]
fn sidecars_count_as_containers() {
    let p = pod(
        json!({"spec": {"initContainers": [{"name": "side", "image": "b", "restartPolicy": "Always"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
        "initContainerStatuses": [{"name": "side", "ready": true, "started": true, "restartCount": 1, "image": "b", "imageID": "",
            "state": {"running": {}}}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "b", "imageID": "",
            "state": {"running": {}}}]}}),
    );
    let s = pod_summary(&p);
    assert_eq!((s.ready, s.total, s.restarts), (2, 2, 1));
    assert_eq!(s.status, "Running");
}

#[test]
fn terminating_and_evicted() {
    assert_eq!(
        status_of(
            json!({"metadata": {"deletionTimestamp": "2026-01-01T12:00:30Z"}, "status": {"phase": "Running"}})
        ),
        "Terminating"
    );
    assert_eq!(
        status_of(
            json!({"metadata": {"deletionTimestamp": "2026-01-01T12:00:30Z"}, "status": {"phase": "Succeeded"}})
        ),
        "Succeeded"
    );
    assert_eq!(
        status_of(json!({"status": {"phase": "Failed", "reason": "Evicted"}})),
        "Evicted"
    );
    assert_eq!(
        status_of(json!({"status": {"phase": "Pending"}})),
        "Pending"
    );
}

#[test]
fn other_tables_and_formats() {
    let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": "2026-01-01T11:59:00Z"}, "data": {"a": "1", "b": "2"}});
    assert_eq!(
        printers::row(Resource::ConfigMaps, &cm, now(), false, true).unwrap(),
        ["", "cfg", "2", "60s"]
    );
    let v = printers::with_type(Resource::ConfigMaps, cm);
    assert_eq!(printers::name_of(Resource::ConfigMaps, &v), "configmap/cfg");
    let yaml = printers::to_yaml(&printers::as_list(vec![v.clone()]));
    assert!(
        yaml.starts_with("apiVersion: v1\nitems:\n- apiVersion: v1\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("kind: List\nmetadata:\n  resourceVersion: ''\n")
            || yaml.contains("resourceVersion: \"\""),
        "{yaml}"
    );
    let back: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back["items"][0]["data"]["b"], "2");
    let json = printers::to_json(&v);
    assert!(
        json.contains("\n    \"data\": {\n        \"a\": \"1\""),
        "{json}"
    );
    assert!("bogus".parse::<Output>().is_err());
}

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(args).unwrap()
}

#[test]
fn flags_parse_like_kubectl() {
    let c = parse(&[
        "herd",
        "get",
        "po",
        "-o",
        "wide",
        "-l",
        "app=web,tier!=db",
        "-A",
        "-w",
    ]);
    let Command::Get(g) = c.command else { panic!() };
    assert_eq!(g.output, Some(Output::Wide));
    assert_eq!(g.selector.as_deref(), Some("app=web,tier!=db"));
    assert!(g.all_namespaces && g.watch);
    let c = parse(&[
        "herd",
        "-n",
        "kube-system",
        "delete",
        "pod",
        "a",
        "b",
        "--wait=false",
        "--grace-period",
        "0",
        "--force",
    ]);
    assert_eq!(c.namespace.as_deref(), Some("kube-system"));
    let Command::Delete(d) = c.command else {
        panic!()
    };
    assert!(!d.wait);
    assert_eq!(d.args, ["pod", "a", "b"]);
    assert_eq!(super::delete::grace_period(&d).unwrap(), Some(0));
    let c = parse(&["herd", "delete", "pod", "a", "--now"]);
    let Command::Delete(d) = c.command else {
        panic!()
    };
    assert!(d.wait);
    assert_eq!(super::delete::grace_period(&d).unwrap(), Some(1));
    let c = parse(&[
        "herd", "exec", "web", "-c", "app", "-it", "--", "sh", "-c", "echo hi",
    ]);
    let Command::Exec(e) = c.command else {
        panic!()
    };
    assert!(e.stdin && e.tty);
    assert_eq!(e.command, ["sh", "-c", "echo hi"]);
    let c = parse(&[
        "herd", "logs", "web", "-f", "-p", "--tail", "10", "--since", "5m", "-n", "x",
    ]);
    let Command::Logs(l) = c.command else {
        panic!()
    };
    assert!(l.follow && l.previous);
    assert_eq!((l.tail, l.since.as_deref()), (10, Some("5m")));
    assert_eq!(c.namespace.as_deref(), Some("x"));
    let c = parse(&["herd", "apply", "-f", "a.yaml", "-f", "-", "-R"]);
    let Command::Apply(a) = c.command else {
        panic!()
    };
    assert_eq!(a.files, ["a.yaml", "-"]);
    assert!(Cli::try_parse_from(["herd", "get", "pods", "-o"]).is_err());
    assert!(Cli::try_parse_from(["herd", "exec", "web"]).is_err());
}

fn cluster_row(resource: Resource, v: Value, wide: bool) -> Vec<String> {
    let mut base = json!({"metadata": {"name": "x", "namespace": "default",
        "creationTimestamp": "2026-01-01T11:00:00Z"}});
    merge(&mut base, v);
    printers::row(resource, &base, now(), wide, false).unwrap()
}

#[test]
fn cluster_kind_columns() {
    assert_eq!(
        printers::header(Resource::Jobs, false, false),
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    let job = cluster_row(
        Resource::Jobs,
        json!({"spec": {"parallelism": 3, "template": {"spec": {"containers": []}}},
            "status": {"succeeded": 1, "startTime": "2026-01-01T11:58:00Z",
                "completionTime": "2026-01-01T11:58:30Z",
                "conditions": [{"type": "Complete", "status": "True"}]}}),
        false,
    );
    assert_eq!(job, ["x", "Complete", "1/1 of 3", "30s", "60m"]);
    let node = cluster_row(
        Resource::Nodes,
        json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": "",
                "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "False"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0-herd", "osImage": "Debian",
                    "architecture": "", "bootID": "", "containerRuntimeVersion": "",
                    "kernelVersion": "6.1", "kubeProxyVersion": "", "machineID": "",
                    "operatingSystem": "linux", "systemUUID": ""}}}),
        true,
    );
    assert_eq!(
        node,
        [
            "x",
            "NotReady,SchedulingDisabled",
            "control-plane,worker",
            "60m",
            "v1.33.0-herd",
            "10.0.0.2",
            "<none>",
            "Debian",
            "6.1",
            "<unknown>"
        ]
    );
    let ep = cluster_row(
        Resource::Endpoints,
        json!({"subsets": [{"addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}],
            "ports": [{"port": 80}, {"port": 443}]}]}),
        false,
    );
    assert_eq!(ep[1], "10.1.0.1:80,10.1.0.2:80,10.1.0.1:443 + 1 more...");
    let lb = cluster_row(
        Resource::Services,
        json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9",
            "ports": [{"port": 443, "nodePort": 31000, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}}),
        false,
    );
    assert_eq!(
        lb,
        [
            "x",
            "LoadBalancer",
            "10.96.0.9",
            "<pending>",
            "443:31000/TCP,53/UDP",
            "60m"
        ]
    );
    let rs = cluster_row(
        Resource::ReplicaSets,
        json!({"spec": {"replicas": 3, "selector": {"matchLabels": {"a": "b"}}},
            "status": {"replicas": 2, "readyReplicas": 1}}),
        false,
    );
    assert_eq!(rs, ["x", "3", "2", "1", "60m"]);
}
