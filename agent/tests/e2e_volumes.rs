//! Volumes and environment end to end, as root, against a real
//! `herd agent` in its own network namespace: configMap, secret, emptyDir
//! (disk and Memory), downwardAPI and projected contents inside the
//! container; env from configMapKeyRef, secretKeyRef and fieldRef; and the
//! secret's bytes never reaching the disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_integration::agent::{Agent, AgentOpts, condition, mounts_under, pod, sh_container};
use serde_json::json;

fn agent(test: &str) -> Option<Agent> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
        return None;
    }
    Some(Agent::start(env!("CARGO_BIN_EXE_herd"), test, AgentOpts::default()).unwrap())
}

/// A value that appears nowhere unless herd writes it.
fn secret_value() -> String {
    format!(
        "s3cr3t-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (u32::from(c) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const SCRIPT: &str = r#"
echo "cm=$(cat /cm/greeting)"
echo "cmitem=$(cat /cmitem/renamed)"
echo "down=$(cat /down/name) ns=$(cat /down/ns) labels=$(cat /down/labels)"
echo "proj=$(cat /proj/greeting) projname=$(cat /proj/podname) projsecretlen=$(wc -c < /proj/password)"
echo "env-cm=$CM_GREETING env-pod=$POD_NAME env-ns=$POD_NS env-node=$NODE env-ip=$POD_IP"
if [ "$SECRET_PW" = "$(cat /sec/password)" ]; then echo secret-env-ok; fi
echo hello > /scratch/x && echo "scratch=$(cat /scratch/x)"
echo "memfs=$(grep ' /mem ' /proc/mounts | cut -d' ' -f3)"
echo "secfs=$(grep ' /sec ' /proc/mounts | cut -d' ' -f3)"
echo done
sleep 3600
"#;

#[test]
fn volumes_and_env_are_visible_and_secrets_stay_off_disk() {
    let Some(a) = agent("volumes") else {
        return;
    };
    let secret = secret_value();
    a.create(&json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
        "data": {"greeting": "hello-cm", "other": "second"},
    }))
    .unwrap();
    a.create(&json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
        "data": {"password": b64(&secret)},
    }))
    .unwrap();
    let mut c = sh_container("c", SCRIPT);
    c["volumeMounts"] = json!([
        {"name": "cm", "mountPath": "/cm"},
        {"name": "cmitem", "mountPath": "/cmitem"},
        {"name": "sec", "mountPath": "/sec"},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "mem", "mountPath": "/mem"},
        {"name": "down", "mountPath": "/down"},
        {"name": "proj", "mountPath": "/proj"},
    ]);
    c["env"] = json!([
        {"name": "CM_GREETING", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "greeting"}}},
        {"name": "SECRET_PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]);
    let mut p = pod(
        "vols",
        json!({
            "terminationGracePeriodSeconds": 0,
            "containers": [c],
            "volumes": [
                {"name": "cm", "configMap": {"name": "cm"}},
                {"name": "cmitem", "configMap": {"name": "cm", "items": [{"key": "other", "path": "renamed"}]}},
                {"name": "sec", "secret": {"secretName": "sec"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                {"name": "down", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                ]}},
                {"name": "proj", "projected": {"sources": [
                    {"configMap": {"name": "cm", "items": [{"key": "greeting", "path": "greeting"}]}},
                    {"secret": {"name": "sec", "items": [{"key": "password", "path": "password"}]}},
                    {"downwardAPI": {"items": [{"path": "podname", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                ]}},
            ],
        }),
    );
    p["metadata"]["labels"] = json!({"app": "vols"});
    a.create(&p).unwrap();
    let p = a
        .wait_pod("vols", Duration::from_secs(30), |p| {
            condition(p, "Ready") == Some("True")
        })
        .unwrap();
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let log = a
        .wait_log("vols", "c", "done", Duration::from_secs(10))
        .unwrap();
    let want = [
        "cm=hello-cm".to_string(),
        "cmitem=second".to_string(),
        "down=vols ns=default labels=app=\"vols\"".to_string(),
        format!("proj=hello-cm projname=vols projsecretlen={}", secret.len()),
        format!(
            "env-cm=hello-cm env-pod=vols env-ns=default env-node={} env-ip={ip}",
            a.node_name
        ),
        "secret-env-ok".to_string(),
        "scratch=hello".to_string(),
        "memfs=tmpfs".to_string(),
        "secfs=tmpfs".to_string(),
    ];
    for line in &want {
        assert!(
            log.lines().any(|l| l == line),
            "missing {line:?} in log:\n{log}"
        );
    }
    // The secret's bytes through exec (never through the log).
    let out = a.exec("vols", None, &["cat", "/sec/password"]).unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout, secret);

    // Never on disk: every regular file under the state root and the log
    // dir, skipping tmpfs mounts (which is where the secret must live).
    let tmpfs = tmpfs_mounts(&[&a.root(), &a.log_dir()]);
    let mut hits = vec![];
    for dir in [a.root(), a.log_dir()] {
        grep_tree(&dir, secret.as_bytes(), &tmpfs, &mut hits);
    }
    assert!(hits.is_empty(), "secret written to disk in {hits:?}");
    // The scan does find what is on disk: the configMap's value (store).
    let mut cm_hits = vec![];
    grep_tree(&a.root(), b"hello-cm", &tmpfs, &mut cm_hits);
    assert!(!cm_hits.is_empty(), "scan found not even the configMap");
}

/// tmpfs mount points under `dirs`.
fn tmpfs_mounts(dirs: &[&Path]) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let all = mounts_under(dirs);
    all.into_iter()
        .filter(|m| {
            text.lines().any(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let sep = f.iter().position(|x| *x == "-").unwrap_or(0);
                f.get(4) == Some(&m.to_str().unwrap()) && f.get(sep + 1) == Some(&"tmpfs")
            })
        })
        .collect()
}

fn grep_tree(dir: &Path, needle: &[u8], skip: &[PathBuf], hits: &mut Vec<PathBuf>) {
    if skip.iter().any(|s| s == dir) {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            grep_tree(&path, needle, skip, hits);
        } else if ft.is_file()
            && let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(path);
        }
    }
}

#[test]
fn missing_config_map_keeps_the_pod_waiting() {
    let Some(a) = agent("missingcm") else {
        return;
    };
    let mut c = sh_container("c", "sleep 3600");
    c["env"] =
        json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]);
    a.create(&pod(
        "nocm",
        json!({"terminationGracePeriodSeconds": 0, "containers": [c]}),
    ))
    .unwrap();
    let p = a
        .wait_pod("nocm", Duration::from_secs(30), |p| {
            herd_integration::agent::container_status(p, "c")
                .is_some_and(|c| c["state"]["waiting"]["reason"] == "CreateContainerConfigError")
        })
        .unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    // Creating the configMap lets it start.
    a.create(&json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "absent"},
        "data": {"k": "v"},
    }))
    .unwrap();
    a.wait_pod("nocm", Duration::from_secs(30), |p| {
        p["status"]["phase"] == "Running"
    })
    .unwrap();
}
