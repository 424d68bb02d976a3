//! The API over HTTPS, as the real `kubectl` and `curl` see it: a
//! kubeconfig from `herd kubeconfig` (client certificate or bearer token)
//! works; no credentials, a wrong token, a deleted token or a certificate
//! from another CA get 401 (or a failed handshake) and no data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use herd_integration::agent::{Agent, AgentOpts, run_with_stdin};

fn agent(test: &str) -> Option<Agent> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
        return None;
    }
    Some(Agent::start(env!("CARGO_BIN_EXE_herd"), test, AgentOpts::default()).unwrap())
}

/// `curl` inside the agent's netns: (HTTP code, body).
fn curl(a: &Agent, args: &[&str]) -> (String, String) {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", a.netns().display()))
        .args(["--", "curl", "-sS", "-k", "-w", "\n%{http_code}"])
        .args(args);
    let out = run_with_stdin(cmd, None).unwrap();
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

#[test]
fn kubeconfig_certificate_and_token() {
    let Some(a) = agent("kauth") else {
        return;
    };
    // Client certificate.
    let out = a
        .kubectl(&["get", "namespaces", "-o", "name"], None)
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("namespace/default"), "{out:?}");
    assert!(out.stdout.contains("namespace/kube-system"), "{out:?}");

    // No credentials: 401 Status, no data.
    let url = "https://127.0.0.1:6443/api/v1/namespaces";
    let (code, body) = curl(&a, &[url]);
    assert_eq!(code, "401", "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
    assert!(!body.contains("kube-system"), "{body}");
    // Health probes stay open, and say nothing else.
    let (code, body) = curl(&a, &["https://127.0.0.1:6443/readyz"]);
    assert_eq!((code.as_str(), body.as_str()), ("200", "ok"));

    // A bearer token kubeconfig.
    let out = a
        .cli(&[
            "kubeconfig",
            "--token",
            "--server-url",
            "https://127.0.0.1:6443",
        ])
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    let out_token = out.stdout.clone();
    let token = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_string();
    let auth = format!("Authorization: Bearer {token}");
    let (code, body) = curl(&a, &["-H", &auth, url]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("kube-system"));
    let out = a
        .kubectl(
            &["--token", &token, "get", "ns", "default", "-o", "name"],
            None,
        )
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");

    // A wrong secret, a garbage token: 401, and kubectl says so.
    let (id, _) = token.split_once('.').unwrap();
    let wrong = format!("{id}.0000000000000000");
    for bad in [wrong.as_str(), "garbage", "abcdef.0123456789abcdef"] {
        let (code, _) = curl(&a, &["-H", &format!("Authorization: Bearer {bad}"), url]);
        assert_eq!(code, "401", "{bad}");
    }
    let dir = tempfile::tempdir().unwrap();
    let wrong_config = dir.path().join("wrong");
    std::fs::write(&wrong_config, out_token.replace(&token, &wrong)).unwrap();
    let out = a
        .kubectl(
            &["--kubeconfig", wrong_config.to_str().unwrap(), "get", "ns"],
            None,
        )
        .unwrap();
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("Unauthorized"), "{out:?}");

    // Revoking: deleting the token's Secret ends it.
    let secret = format!("bootstrap-token-{id}");
    let out = a
        .kubectl(&["-n", "kube-system", "delete", "secret", &secret], None)
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    let (code, _) = curl(&a, &["-H", &auth, url]);
    assert_eq!(code, "401");
}

#[test]
fn foreign_client_certificate_is_refused() {
    let Some(a) = agent("kforeign") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let crt = dir.path().join("c.pem");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=mallory/O=system:masters",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let (code, body) = curl(
        &a,
        &[
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "https://127.0.0.1:6443/api/v1/namespaces",
        ],
    );
    assert_ne!(code, "200", "{body}");
    assert!(!body.contains("kube-system"), "{body}");
}
