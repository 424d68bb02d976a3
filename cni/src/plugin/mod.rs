//! The `herd-cni` plugin: a bridge + veth CNI plugin on herd-net.
//!
//! [`main`] is the whole binary: it reads the CNI_* environment and at most
//! [`config::MAX_STDIN`] bytes of stdin, runs the verb and prints the result
//! (in the configuration's `cniVersion`) or an error JSON on stdout, and
//! returns the exit code (0 or 1). [`run`] is the same with injected
//! environment and stdin, for tests. A panic is caught and reported as error
//! 199; it never escapes as an abort.
//!
//! Verbs: ADD (idempotent on retry), DEL (idempotent; unknown containers and
//! missing namespaces succeed), CHECK, STATUS, GC, VERSION. IPAM is herd's
//! own ([`herd_net::ipam::Ipam`], state under `<dataDir>/<name>`) unless
//! `ipam.type` names an IPAM plugin, which is then run from CNI_PATH with the
//! same environment and stdin.
//!
//! Configuration (plugin-specific keys; unknown keys are ignored):
//!
//! ```json
//! {"cniVersion": "1.0.0", "name": "herd", "type": "herd-cni",
//!  "bridge": "herd0", "subnet": "10.88.0.0/24", "gateway": "10.88.0.1",
//!  "mtu": 1500, "hairpinMode": true, "ipMasq": false, "deleteLink": false,
//!  "dataDir": "/run/herd/cni",
//!  "ipam": {"type": "host-local", "...": "..."}}
//! ```
//!
//! `subnet` is required with herd's own IPAM; `gateway` defaults to the
//! first host; with a delegated IPAM the subnet and gateway default to what
//! the IPAM plugin returns. `CNI_ARGS` `IP=<addr>` asks own IPAM for a
//! specific address. The plugin works where it runs: the bridge is created
//! in the caller's network namespace.
//!
//! DEL with a live `CNI_NETNS` downs the pod interface and removes its
//! addresses but leaves the veth for the kernel to reap when the runtime
//! deletes the netns (deleting a veth waits 10-40 ms for RCU);
//! `"deleteLink": true` deletes it at once, for runtimes that reuse a netns.

pub mod config;
mod delegate;
pub mod env;
mod verbs_add;
mod verbs_other;

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::Value;

pub use config::{HerdConf, IpamMode, Parsed};
pub use env::{Command, PluginEnv};

use crate::error::{CniError, ErrorCode};
use crate::types::VersionResult;
use crate::version::CniVersion;

/// What the plugin prints and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

/// One parsed invocation.
#[derive(Clone, Debug)]
pub struct Request {
    pub env: PluginEnv,
    pub parsed: Parsed,
    /// stdin as received, handed unchanged to a delegated IPAM plugin.
    pub raw: Vec<u8>,
}

/// Entry point of the `herd-cni` binary; returns the process exit code.
pub fn main() -> i32 {
    let get = |k: &str| std::env::var(k).ok();
    let outcome = run(&get, &mut std::io::stdin().lock());
    let mut out = std::io::stdout().lock();
    // Nothing useful can be done if stdout is gone.
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    outcome.exit_code
}

/// Run one invocation with the given environment and stdin.
pub fn run(get: &dyn Fn(&str) -> Option<String>, stdin: &mut dyn Read) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| run_inner(get, stdin))) {
        Ok(o) => o,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            error_outcome(
                None,
                &CniError::new(ErrorCode::Internal, "internal error in herd-cni")
                    .with_details(what),
            )
        }
    }
}

/// Validate environment and stdin without acting: the parser the fuzz
/// target and the mutation test drive.
pub fn parse_request(
    get: &dyn Fn(&str) -> Option<String>,
    input: &[u8],
) -> Result<Request, CniError> {
    let env = PluginEnv::from_vars(get)?;
    let parsed = config::parse(env.command, input)?;
    Ok(Request {
        env,
        parsed,
        raw: input.to_vec(),
    })
}

fn run_inner(get: &dyn Fn(&str) -> Option<String>, stdin: &mut dyn Read) -> Outcome {
    // stdin first, so that even an environment error answers in the
    // configuration's cniVersion when it has a supported one.
    let input = match read_bounded(stdin) {
        Ok(i) => i,
        Err(e) => return error_outcome(None, &e),
    };
    let env = match PluginEnv::from_vars(get) {
        Ok(e) => e,
        Err(e) => return error_outcome(config::peek_version(&input), &e),
    };
    if env.command == Command::Version {
        return version_outcome(&input);
    }
    let parsed = match config::parse(env.command, &input) {
        Ok(p) => p,
        Err(e) => return error_outcome(config::peek_version(&input), &e),
    };
    let version = parsed.version;
    let req = Request {
        env,
        parsed,
        raw: input,
    };
    let res = match req.env.command {
        Command::Add => verbs_add::add(&req).map(|r| Some(r.to_value(version))),
        Command::Del => verbs_other::del(&req).map(|()| None),
        Command::Check => verbs_other::check(&req).map(|()| None),
        Command::Status => verbs_other::status(&req).map(|()| None),
        Command::Gc => verbs_other::gc(&req).map(|()| None),
        Command::Version => Ok(None),
    };
    match res {
        Ok(None) => Outcome {
            stdout: String::new(),
            exit_code: 0,
        },
        Ok(Some(v)) => Outcome {
            stdout: json_line(&v),
            exit_code: 0,
        },
        Err(e) => error_outcome(Some(version), &e),
    }
}

fn read_bounded(stdin: &mut dyn Read) -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    let limit = u64::try_from(config::MAX_STDIN).unwrap_or(u64::MAX) + 1;
    stdin.take(limit).read_to_end(&mut buf).map_err(|e| {
        CniError::new(ErrorCode::Io, "reading stdin failed").with_details(e.to_string())
    })?;
    if buf.len() > config::MAX_STDIN {
        return Err(CniError::decode(format!(
            "network configuration larger than {} bytes",
            config::MAX_STDIN
        )));
    }
    Ok(buf)
}

/// VERSION answers in the caller's version when it is one we speak, else
/// in the latest; its input is otherwise ignored.
fn version_outcome(input: &[u8]) -> Outcome {
    let v = config::peek_version(input).unwrap_or(CniVersion::LATEST);
    let r = VersionResult {
        cni_version: v.as_str().to_string(),
        supported_versions: CniVersion::supported_strings(),
    };
    Outcome {
        stdout: json_line(&serde_json::to_value(r).unwrap_or(Value::Null)),
        exit_code: 0,
    }
}

fn error_outcome(version: Option<CniVersion>, e: &CniError) -> Outcome {
    let r = e.to_result(version.unwrap_or(CniVersion::LATEST));
    Outcome {
        stdout: json_line(&serde_json::to_value(r).unwrap_or(Value::Null)),
        exit_code: 1,
    }
}

fn json_line(v: &Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run_with(pairs: &[(&str, &str)], stdin: &str) -> (Outcome, Value) {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let o = run(&|k| m.get(k).cloned(), &mut stdin.as_bytes());
        let v = if o.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&o.stdout).unwrap()
        };
        (o, v)
    }

    #[test]
    fn a_panic_becomes_error_json() {
        let o = run(
            &|k| {
                if k == "CNI_COMMAND" {
                    panic!("boom")
                }
                None
            },
            &mut "{}".as_bytes(),
        );
        assert_eq!(o.exit_code, 1);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["code"], 199);
        assert_eq!(v["details"], "boom");
    }

    #[test]
    fn version_verb() {
        let (o, v) = run_with(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(o.exit_code, 0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        let (_, v) = run_with(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn errors_are_json_with_exit_1() {
        let (o, v) = run_with(&[], "{}");
        assert_eq!((o.exit_code, v["code"].as_u64()), (1, Some(4)));
        let env = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ];
        let (o, v) = run_with(&env, "{not json");
        assert_eq!((o.exit_code, v["code"].as_u64()), (1, Some(6)));
        assert_eq!(v["cniVersion"], "1.1.0");
        let (_, v) = run_with(
            &env,
            r#"{"cniVersion":"0.3.1","name":"n","type":"herd-cni"}"#,
        );
        assert_eq!(
            (v["code"].as_u64(), v["cniVersion"].as_str()),
            (Some(7), Some("0.3.1"))
        );
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(config::MAX_STDIN));
        let (_, v) = run_with(&env, &big);
        assert_eq!(v["code"], 6);
    }
}
