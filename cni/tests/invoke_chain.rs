//! The invoker's protocol with recording script plugins (no root needed):
//! chaining, runtimeConfig filtering, clean env, cache, DEL/CHECK/GC/STATUS
//! order and stdin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod invoke_util;

use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_cni::invoke::{
    Attachment, CniInvoker, GcReport, InvokeError, InvokerConfig, NetworkConfigList,
    ValidAttachment,
};
use invoke_util::{call_names, calls, recorder, script};
use serde_json::{Value, json};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    fn calls(&self) -> PathBuf {
        self.dir.path().join("calls")
    }
    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    fn invoker(&self, list: Value) -> CniInvoker {
        let net = NetworkConfigList::from_value(Path::new("test.conflist"), list).unwrap();
        CniInvoker::with_network(
            InvokerConfig {
                plugin_path: vec![self.dir.path().join("empty"), self.bin()],
                cache_dir: self.cache(),
                timeout: Duration::from_secs(20),
                ..InvokerConfig::default()
            },
            net,
        )
        .unwrap()
    }
    fn two_plugins(&self, version: &str) -> CniInvoker {
        recorder(
            &self.bin(),
            &self.calls(),
            "pa",
            r#"["0.4.0","1.0.0","1.1.0"]"#,
        );
        recorder(
            &self.bin(),
            &self.calls(),
            "pb",
            r#"["0.4.0","1.0.0","1.1.0"]"#,
        );
        self.invoker(json!({
            "cniVersion": version,
            "name": "chain",
            "plugins": [
                {"type": "pa", "capabilities": {"portMappings": true}},
                {"type": "pb", "capabilities": {"bandwidth": true, "mac": false}, "custom": 1}
            ]
        }))
    }
}

fn attachment(cid: &str) -> Attachment {
    let mut a = Attachment::new(cid, Some(Path::new("/proc/self/ns/net")), "eth0");
    a.args = vec![
        ("K".into(), "V".into()),
        ("IgnoreUnknown".into(), "1".into()),
    ];
    a.runtime_config.insert(
        "portMappings".into(),
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    a.runtime_config
        .insert("bandwidth".into(), json!({"ingressRate": 1000}));
    a.runtime_config
        .insert("mac".into(), json!("02:00:00:00:00:01"));
    a
}

fn out_of(name: &str) -> Value {
    json!({"cniVersion": "1.1.0", "interfaces": [{"name": name}], "ips": []})
}

#[tokio::test]
async fn add_chains_prev_result_filters_runtime_config_and_caches() {
    let env = Env::new();
    let inv = env.two_plugins("1.1.0");
    let result = inv.add(&attachment("c1")).await.unwrap();
    assert_eq!(
        result,
        out_of("pb"),
        "the final result is the last plugin's"
    );

    let seen = calls(&env.calls());
    let names: Vec<&str> = seen.iter().map(|(s, _, _)| &s[4..]).collect();
    assert_eq!(names, ["pa-VERSION", "pb-VERSION", "pa-ADD", "pb-ADD"]);
    let (_, a_in, a_env) = &seen[2];
    let (_, b_in, _) = &seen[3];
    assert_eq!(a_in["name"], "chain");
    assert_eq!(a_in["cniVersion"], "1.1.0");
    assert!(
        a_in.get("prevResult").is_none(),
        "first plugin has no prevResult"
    );
    assert_eq!(
        a_in["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );
    assert_eq!(b_in["prevResult"], out_of("pa"));
    assert_eq!(
        b_in["runtimeConfig"],
        json!({"bandwidth": {"ingressRate": 1000}})
    );
    assert_eq!(b_in["custom"], 1);

    let mut env_keys: Vec<&str> = a_env.iter().map(|l| l.split('=').next().unwrap()).collect();
    env_keys.sort();
    assert_eq!(
        env_keys,
        [
            "CNI_ARGS",
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_IFNAME",
            "CNI_NETNS",
            "CNI_PATH",
            "PATH"
        ],
        "clean environment: {a_env:?}"
    );
    for want in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=c1",
        "CNI_NETNS=/proc/self/ns/net",
        "CNI_IFNAME=eth0",
        "CNI_ARGS=K=V;IgnoreUnknown=1",
    ] {
        assert!(
            a_env.iter().any(|l| l == want),
            "{want} missing from {a_env:?}"
        );
    }
    let cni_path = format!(
        "CNI_PATH={}:{}",
        env.dir.path().join("empty").display(),
        env.bin().display()
    );
    assert!(a_env.contains(&cni_path), "{a_env:?}");

    let cached = inv.cached("c1", "eth0").unwrap().unwrap();
    assert_eq!(cached.result, out_of("pb"));
    assert_eq!(cached.network_name, "chain");
    assert!(env.cache().join("results/chain-c1-eth0").is_file());

    // VERSION is asked once per plugin per invoker.
    inv.add(&attachment("c2")).await.unwrap();
    assert_eq!(call_names(&env.calls()).len(), 6);
}

#[tokio::test]
async fn del_runs_in_reverse_with_cached_result_then_forgets() {
    let env = Env::new();
    let inv = env.two_plugins("1.0.0");
    inv.add(&attachment("c1")).await.unwrap();
    // DEL with no runtime config / args: the ones cached at ADD are used; no netns is fine.
    inv.del(&Attachment::new("c1", None, "eth0")).await.unwrap();
    let seen = calls(&env.calls());
    let names: Vec<&str> = seen.iter().map(|(s, _, _)| &s[4..]).collect();
    assert_eq!(&names[4..], ["pb-DEL", "pa-DEL"]);
    for (_, stdin, env_lines) in &seen[4..] {
        assert_eq!(
            stdin["prevResult"],
            out_of("pb"),
            "DEL gets the cached final result"
        );
        assert!(env_lines.contains(&"CNI_NETNS=".to_owned()));
        assert!(env_lines.contains(&"CNI_ARGS=K=V;IgnoreUnknown=1".to_owned()));
    }
    assert_eq!(
        seen[5].1["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(inv.cached("c1", "eth0").unwrap().is_none());
    assert!(!env.cache().join("results/chain-c1-eth0").exists());

    // Again: no cache entry, still runs DEL, without prevResult.
    inv.del(&Attachment::new("c1", None, "eth0")).await.unwrap();
    let seen = calls(&env.calls());
    assert_eq!(seen.len(), 8);
    assert!(seen[6].1.get("prevResult").is_none());
}

#[tokio::test]
async fn check_uses_cached_result_and_gates() {
    let env = Env::new();
    let inv = env.two_plugins("1.0.0");
    let a = attachment("c1");
    match inv.check(&a).await {
        Err(InvokeError::NoCachedResult { container_id, .. }) => assert_eq!(container_id, "c1"),
        other => panic!("expected NoCachedResult, got {other:?}"),
    }
    inv.add(&a).await.unwrap();
    inv.check(&a).await.unwrap();
    let seen = calls(&env.calls());
    let names: Vec<&str> = seen.iter().map(|(s, _, _)| &s[4..]).collect();
    assert_eq!(&names[4..], ["pa-CHECK", "pb-CHECK"]);
    assert_eq!(seen[4].1["prevResult"], out_of("pb"));

    let old =
        env.invoker(json!({"cniVersion": "0.3.1", "name": "old", "plugins": [{"type": "pa"}]}));
    assert!(matches!(
        old.check(&a).await,
        Err(InvokeError::CommandNotSupported {
            command: "CHECK",
            ..
        })
    ));
    let off = env.invoker(json!({"cniVersion": "1.0.0", "name": "off", "disableCheck": true, "plugins": [{"type": "pa"}]}));
    off.check(&a).await.unwrap();
    assert_eq!(calls(&env.calls()).len(), 6, "disableCheck runs nothing");
}

#[tokio::test]
async fn gc_deletes_stale_attachments_and_passes_valid_ones() {
    let env = Env::new();
    let inv = env.two_plugins("1.1.0");
    inv.add(&attachment("c1")).await.unwrap();
    inv.add(&attachment("c2")).await.unwrap();
    let keep = vec![ValidAttachment {
        container_id: "c1".into(),
        ifname: "eth0".into(),
    }];
    let report = inv.gc(&keep).await.unwrap();
    assert_eq!(
        report,
        GcReport {
            deleted: vec![ValidAttachment {
                container_id: "c2".into(),
                ifname: "eth0".into()
            }],
            plugins_gc: true
        }
    );
    let seen = calls(&env.calls());
    let names: Vec<&str> = seen.iter().map(|(s, _, _)| &s[4..]).collect();
    assert_eq!(&names[6..], ["pb-DEL", "pa-DEL", "pa-GC", "pb-GC"]);
    assert!(seen[6].2.contains(&"CNI_CONTAINERID=c2".to_owned()));
    for (_, stdin, env_lines) in &seen[8..] {
        assert_eq!(
            stdin["cni.dev/valid-attachments"],
            json!([{"containerID": "c1", "ifname": "eth0"}])
        );
        assert!(stdin.get("prevResult").is_none());
        assert!(!env_lines.iter().any(|l| l.starts_with("CNI_CONTAINERID")));
    }
    assert!(inv.cached("c1", "eth0").unwrap().is_some());
    assert!(inv.cached("c2", "eth0").unwrap().is_none());

    // Before 1.1.0 only the stale-cache DELs happen, with the config cached at ADD.
    let old =
        env.invoker(json!({"cniVersion": "1.0.0", "name": "chain", "plugins": [{"type": "pa"}]}));
    let report = old.gc(&[]).await.unwrap();
    assert!(!report.plugins_gc);
    assert_eq!(report.deleted.len(), 1);
    assert_eq!(&call_names(&env.calls())[10..], ["pb-DEL", "pa-DEL"]);
}

#[tokio::test]
async fn gc_reports_every_failure_and_continues() {
    let env = Env::new();
    recorder(&env.bin(), &env.calls(), "pa", r#"["1.1.0"]"#);
    script(
        &env.bin(),
        "failgc",
        r#"case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.1.0","supportedVersions":["1.1.0"]}' ;;
GC) echo '{"cniVersion":"1.1.0","code":11,"msg":"busy"}'; exit 1 ;;
esac"#,
    );
    let inv = env.invoker(json!({"cniVersion": "1.1.0", "name": "g", "plugins": [{"type": "failgc"}, {"type": "pa"}]}));
    match inv.gc(&[]).await {
        Err(InvokeError::Gc { errors, .. }) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(
                errors[0].failure().unwrap().reply.as_ref().unwrap().code,
                11
            );
        }
        other => panic!("expected Gc error, got {other:?}"),
    }
    assert_eq!(
        call_names(&env.calls()),
        ["pa-GC"],
        "the next plugin still ran"
    );
    let off = env.invoker(json!({"cniVersion": "1.1.0", "name": "g", "disableGC": true, "plugins": [{"type": "failgc"}]}));
    off.gc(&[]).await.unwrap();
}

#[tokio::test]
async fn status_runs_from_1_1_0_and_stops_at_first_error() {
    let env = Env::new();
    let inv = env.two_plugins("1.1.0");
    inv.status().await.unwrap();
    assert_eq!(call_names(&env.calls()), ["pa-STATUS", "pb-STATUS"]);
    let old = env.two_plugins("1.0.0");
    old.status().await.unwrap();
    assert_eq!(
        call_names(&env.calls()).len(),
        2,
        "STATUS is not sent below 1.1.0"
    );

    script(
        &env.bin(),
        "down",
        r#"echo '{"cniVersion":"1.1.0","code":50,"msg":"plugin not available","details":"no bridge"}'; exit 1"#,
    );
    let inv = env.invoker(
        json!({"cniVersion": "1.1.0", "name": "s", "plugins": [{"type": "down"}, {"type": "pa"}]}),
    );
    let err = inv.status().await.unwrap_err();
    let f = err.failure().unwrap();
    assert_eq!(f.command, "STATUS");
    assert_eq!(f.reply.as_ref().unwrap().code, 50);
    assert!(err.to_string().contains("no bridge"), "{err}");
    assert_eq!(
        call_names(&env.calls()).len(),
        2,
        "stopped at the failing plugin"
    );
}

#[tokio::test]
async fn loads_the_network_from_a_config_dir() {
    let env = Env::new();
    recorder(&env.bin(), &env.calls(), "pa", r#"["0.4.0"]"#);
    let conf = env.dir.path().join("net.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("10-single.conf"),
        r#"{"cniVersion":"0.4.0","name":"single","type":"pa","x":2}"#,
    )
    .unwrap();
    std::fs::write(
        conf.join("20-other.conflist"),
        r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"pa"}]}"#,
    )
    .unwrap();
    let inv = CniInvoker::new(InvokerConfig {
        conf_dir: conf.clone(),
        network: None,
        plugin_path: vec![env.bin()],
        cache_dir: env.cache(),
        ..InvokerConfig::default()
    })
    .unwrap();
    assert_eq!(inv.network().name, "single");
    inv.add(&attachment("c1")).await.unwrap();
    let seen = calls(&env.calls());
    assert_eq!(seen[1].1["x"], 2);
    assert_eq!(seen[1].1["name"], "single");
    assert_eq!(seen[1].1["cniVersion"], "0.4.0");
    let err = CniInvoker::new(InvokerConfig {
        conf_dir: conf,
        network: Some("nope".into()),
        ..InvokerConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, InvokeError::NoNetwork { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_for_different_containers() {
    let env = Env::new();
    script(
        &env.bin(),
        "echoer",
        r#"case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}' ;;
ADD) echo "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"$CNI_CONTAINERID\"}]}" ;;
esac"#,
    );
    let inv =
        std::sync::Arc::new(env.invoker(
            json!({"cniVersion": "1.0.0", "name": "many", "plugins": [{"type": "echoer"}]}),
        ));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            inv.add(&attachment(&format!("c{i}"))).await.unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let result = t.await.unwrap();
        assert_eq!(result["interfaces"][0]["name"], format!("c{i}"));
        let cached = inv.cached(&format!("c{i}"), "eth0").unwrap().unwrap();
        assert_eq!(cached.result, result);
    }
    let (all, bad) = inv.cache().list("many").unwrap();
    assert_eq!((all.len(), bad.len()), (16, 0));
    let leftovers = std::fs::read_dir(env.cache().join("results"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
}
