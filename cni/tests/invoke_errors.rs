//! Every way a plugin call can fail gives a typed error that keeps what the
//! plugin said (exit status, error JSON, stderr). Script plugins, no root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod invoke_util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herd_cni::invoke::{
    Attachment, CniInvoker, Exit, InvokeError, InvokerConfig, NetworkConfigList, STDERR_KEEP,
};
use invoke_util::{script, wait_for};
use serde_json::json;

const VERSION_OK: &str = r#"if [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'; exit 0; fi"#;

fn invoker(dir: &Path, plugin: &str, timeout: Duration) -> CniInvoker {
    let net = NetworkConfigList::from_value(
        Path::new("t.conflist"),
        json!({"cniVersion": "1.0.0", "name": "errs", "plugins": [{"type": plugin}]}),
    )
    .unwrap();
    CniInvoker::with_network(
        InvokerConfig {
            plugin_path: vec![dir.join("bin")],
            cache_dir: dir.join("cache"),
            timeout,
            ..InvokerConfig::default()
        },
        net,
    )
    .unwrap()
}

fn pod() -> Attachment {
    Attachment::new("c1", Some(Path::new("/proc/self/ns/net")), "eth0")
}

fn plugin(dir: &Path, name: &str, add: &str) -> PathBuf {
    script(&dir.join("bin"), name, &format!("{VERSION_OK}\n{add}"))
}

#[tokio::test]
async fn missing_plugin_names_it_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let inv = invoker(dir.path(), "no-such-plugin", Duration::from_secs(5));
    let err = inv.add(&pod()).await.unwrap_err();
    match &err {
        InvokeError::PluginNotFound { plugin, searched } => {
            assert_eq!(plugin, "no-such-plugin");
            assert_eq!(searched, &vec![dir.path().join("bin")]);
        }
        other => panic!("expected PluginNotFound, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-plugin")
            && msg.contains(&dir.path().join("bin").display().to_string()),
        "{msg}"
    );
    // DEL too.
    assert!(matches!(
        inv.del(&pod()).await,
        Err(InvokeError::PluginNotFound { .. })
    ));
    // A non-executable file of that name is not a plugin.
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::write(dir.path().join("bin/no-such-plugin"), "#!/bin/sh\n").unwrap();
    assert!(matches!(
        inv.add(&pod()).await,
        Err(InvokeError::PluginNotFound { .. })
    ));
}

#[tokio::test]
async fn timeout_kills_the_process_group_and_keeps_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    plugin(
        dir.path(),
        "sleepy",
        &format!(
            "echo \"going to sleep\" >&2\nsleep 300 &\necho \"$$ $!\" > {}\nwait",
            pids.display()
        ),
    );
    let inv = invoker(dir.path(), "sleepy", Duration::from_millis(500));
    let start = Instant::now();
    let err = inv.add(&pod()).await.unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    match &err {
        InvokeError::Timeout { timeout, failure } => {
            assert_eq!(*timeout, Duration::from_millis(500));
            assert_eq!(failure.command, "ADD");
            assert!(failure.stderr.contains("going to sleep"), "{failure:?}");
            assert_eq!(failure.exit, Some(Exit::Signal(9)));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    // The shell and its background sleep (same process group) are gone.
    let pids = std::fs::read_to_string(&pids).unwrap();
    for pid in pids.split_whitespace() {
        let gone = wait_for(Duration::from_secs(5), || {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => true,
                // A zombie child of init waiting to be reaped counts as gone.
                Ok(stat) => stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')),
            }
        });
        assert!(gone, "process {pid} survived the timeout");
    }
    assert!(
        inv.cached("c1", "eth0").unwrap().is_none(),
        "no cache entry after a failed ADD"
    );
}

#[tokio::test]
async fn garbage_on_stdout_is_bad_output() {
    let dir = tempfile::tempdir().unwrap();
    plugin(
        dir.path(),
        "garbage",
        "echo 'this is not json'; echo 'warn: x' >&2",
    );
    let inv = invoker(dir.path(), "garbage", Duration::from_secs(5));
    match inv.add(&pod()).await.unwrap_err() {
        InvokeError::BadOutput { reason, failure } => {
            assert!(reason.contains("not JSON"), "{reason}");
            assert_eq!(failure.stdout.trim(), "this is not json");
            assert_eq!(failure.stderr.trim(), "warn: x");
            assert_eq!(failure.exit, Some(Exit::Code(0)));
        }
        other => panic!("expected BadOutput, got {other:?}"),
    }
    plugin(dir.path(), "array", "echo '[1,2]'");
    let inv = invoker(dir.path(), "array", Duration::from_secs(5));
    assert!(matches!(
        inv.add(&pod()).await,
        Err(InvokeError::BadOutput { .. })
    ));
}

#[tokio::test]
async fn error_json_and_exit_status_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    plugin(
        dir.path(),
        "fails",
        r#"echo 'oops on stderr' >&2
echo '{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"subnet: bad"}'
exit 3"#,
    );
    let inv = invoker(dir.path(), "fails", Duration::from_secs(5));
    let err = inv.add(&pod()).await.unwrap_err();
    let InvokeError::PluginFailed(f) = &err else {
        panic!("expected PluginFailed, got {err:?}");
    };
    assert_eq!(f.exit, Some(Exit::Code(3)));
    assert_eq!(f.plugin, "fails");
    assert_eq!(f.binary, dir.path().join("bin/fails"));
    let reply = f.reply.as_ref().unwrap();
    assert_eq!(
        (reply.code, reply.msg.as_str(), reply.details.as_str()),
        (7, "invalid network config", "subnet: bad")
    );
    assert_eq!(f.stderr.trim(), "oops on stderr");
    let msg = err.to_string();
    for part in [
        "fails",
        "ADD",
        "exit code 3",
        "code 7",
        "subnet: bad",
        "oops on stderr",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }

    // Non-zero without JSON: no reply, raw stdout kept; death by signal reported.
    plugin(dir.path(), "crash", "echo 'panic: boom'; kill -9 $$");
    let inv = invoker(dir.path(), "crash", Duration::from_secs(5));
    let err = inv.add(&pod()).await.unwrap_err();
    let f = err.failure().unwrap();
    assert_eq!(f.exit, Some(Exit::Signal(9)));
    assert!(f.reply.is_none());
    assert_eq!(f.stdout.trim(), "panic: boom");
}

#[tokio::test]
async fn stderr_is_bounded_to_its_tail() {
    let dir = tempfile::tempdir().unwrap();
    // ~200 KiB of stderr, then a marker, then failure.
    plugin(
        dir.path(),
        "noisy",
        "i=0; while [ $i -lt 2000 ]; do echo 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' >&2; i=$((i+1)); done\necho LAST-LINE >&2\nexit 1",
    );
    let inv = invoker(dir.path(), "noisy", Duration::from_secs(20));
    let err = inv.add(&pod()).await.unwrap_err();
    let f = err.failure().unwrap();
    assert!(
        f.stderr.len() <= STDERR_KEEP,
        "{} bytes kept",
        f.stderr.len()
    );
    assert!(f.stderr.len() > STDERR_KEEP / 2);
    assert!(f.stderr.trim_end().ends_with("LAST-LINE"));
}

#[tokio::test]
async fn unsupported_version_is_refused_before_add() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("added");
    script(
        &dir.path().join("bin"),
        "oldie",
        &format!(
            r#"if [ "$CNI_COMMAND" = VERSION ]; then echo '{{"cniVersion":"0.3.1","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1"]}}'; exit 0; fi
touch {}"#,
            marker.display()
        ),
    );
    let inv = invoker(dir.path(), "oldie", Duration::from_secs(5));
    let err = inv.add(&pod()).await.unwrap_err();
    match &err {
        InvokeError::UnsupportedVersion {
            plugin,
            version,
            supported,
            ..
        } => {
            assert_eq!(plugin, "oldie");
            assert_eq!(version, "1.0.0");
            assert_eq!(supported.len(), 4);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert!(err.to_string().contains("0.3.1"), "{err}");
    assert!(!marker.exists(), "ADD must not run");
    assert_eq!(
        inv.version("oldie").await.unwrap().supported_versions.len(),
        4
    );
}

#[tokio::test]
async fn bad_attachments_are_refused_before_any_plugin_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    script(
        &dir.path().join("bin"),
        "p",
        &format!("touch {}", marker.display()),
    );
    let inv = invoker(dir.path(), "p", Duration::from_secs(5));
    let cases = [
        (Attachment::new("c1", None, "eth0"), "netns"),
        (
            Attachment::new("", Some(Path::new("/x")), "eth0"),
            "container_id",
        ),
        (
            Attachment::new("../x", Some(Path::new("/x")), "eth0"),
            "container_id",
        ),
        (
            Attachment::new("c1", Some(Path::new("/x")), "eth0/1"),
            "ifname",
        ),
        (
            Attachment::new("c1", Some(Path::new("/x")), "averyveryverylongname"),
            "ifname",
        ),
        (
            Attachment {
                args: vec![("A;B".into(), "1".into())],
                ..Attachment::new("c1", Some(Path::new("/x")), "eth0")
            },
            "args",
        ),
    ];
    for (a, want) in cases {
        match inv.add(&a).await {
            Err(InvokeError::InvalidAttachment { field, .. }) => assert_eq!(field, want, "{a:?}"),
            other => panic!("{a:?}: expected InvalidAttachment, got {other:?}"),
        }
    }
    assert!(!marker.exists());
}
