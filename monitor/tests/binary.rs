//! The `herd-monitor` binary itself: what `--version` prints (the agent
//! reads it before using the binary) and how bad arguments are refused.
//! Being an integration test of this package also makes `cargo test
//! --workspace` build the binary next to `herd`, where the agent's
//! end-to-end tests expect it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn monitor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herd-monitor"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_names_the_protocol() {
    let (code, out, _) = monitor(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out, format!("{}\n", herd_monitor::monitor::version_line()));
    assert!(out.trim_end().ends_with(&format!(
        "protocol {}",
        herd_monitor::monitor::protocol::PROTOCOL_VERSION
    )));
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    for (args, want) in [
        (&[][..], "--pod-dir DIR is required"),
        (&["--pod-dir", "relative/dir"][..], "must be absolute"),
        (&["--pod-dir", "/x", "--ready-fd", "1"][..], "above 2"),
        (&["--bogus"][..], "unexpected argument"),
    ] {
        let (code, out, err) = monitor(args);
        assert_eq!(code, 1, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
