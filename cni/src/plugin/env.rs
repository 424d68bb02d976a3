//! The CNI_* environment, validated per verb as the spec requires.
//!
//! | verb    | required                                              |
//! |---------|-------------------------------------------------------|
//! | ADD     | CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME   |
//! | DEL     | CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME              |
//! | CHECK   | CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME   |
//! | STATUS  | CNI_COMMAND                                           |
//! | GC      | CNI_COMMAND, CNI_PATH                                 |
//! | VERSION | CNI_COMMAND                                           |
//!
//! An empty variable counts as missing. CNI_CONTAINERID must match the
//! spec's charset, CNI_IFNAME the Linux interface name rules, CNI_ARGS must
//! be `K=V` pairs separated by `;`. Every violation is code 4.
//!
//! STATUS, GC and VERSION concern no attachment: CNI_CONTAINERID,
//! CNI_NETNS, CNI_IFNAME and CNI_ARGS are ignored for them, not validated
//! (libcni's config validation runs VERSION with `CNI_NETNS=dummy`).

use std::path::PathBuf;

use crate::error::CniError;
use crate::types::valid_name;

/// A CNI verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// ADD, DEL and CHECK act on one attachment (container, netns, ifname).
    fn has_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Gc => &["CNI_PATH"],
            Command::Status | Command::Version => &[],
        }
    }
}

/// The validated environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginEnv {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// CNI_ARGS pairs, in order.
    pub args: Vec<(String, String)>,
    /// CNI_PATH directories, in order.
    pub path: Vec<PathBuf>,
}

/// Linux interface name rules as the spec states them.
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() < 16
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

impl PluginEnv {
    /// Read and validate the environment through `get` (std::env::var in
    /// the binary; a map in tests).
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<PluginEnv, CniError> {
        let any = |k: &str| get(k).filter(|v| !v.is_empty());
        let Some(cmd) = any("CNI_COMMAND") else {
            return Err(CniError::invalid_env(
                "required env variables [CNI_COMMAND] missing",
            ));
        };
        let Some(command) = Command::parse(&cmd) else {
            return Err(CniError::invalid_env(format!("unknown CNI_COMMAND: {cmd}"))
                .with_details("expected one of ADD, DEL, CHECK, STATUS, GC, VERSION"));
        };
        let attachment_var = ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"];
        let var = |k: &str| {
            if !command.has_attachment() && attachment_var.contains(&k) {
                None
            } else {
                any(k)
            }
        };
        let missing: Vec<&str> = command
            .required()
            .iter()
            .copied()
            .filter(|k| var(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::invalid_env(format!(
                "required env variables [{}] missing",
                missing.join(" ")
            ))
            .with_details(format!("CNI_COMMAND={}", command.as_str())));
        }
        let container_id = var("CNI_CONTAINERID");
        if let Some(id) = &container_id
            && !valid_name(id)
        {
            return Err(CniError::invalid_env(format!("invalid CNI_CONTAINERID {id:?}"))
                .with_details(
                    "must start with an alphanumeric character, followed by alphanumerics, '_', '.' or '-'",
                ));
        }
        let ifname = var("CNI_IFNAME");
        if let Some(n) = &ifname
            && !valid_ifname(n)
        {
            return Err(
                CniError::invalid_env(format!("invalid CNI_IFNAME {n:?}")).with_details(
                    "must be 1-15 bytes, not '.' or '..', without '/', ':' or whitespace",
                ),
            );
        }
        let netns = var("CNI_NETNS").map(PathBuf::from);
        if let Some(p) = &netns
            && !p.is_absolute()
        {
            return Err(CniError::invalid_env(format!(
                "CNI_NETNS {} is not an absolute path",
                p.display()
            )));
        }
        let args = match var("CNI_ARGS") {
            None => Vec::new(),
            Some(raw) => parse_args(&raw)?,
        };
        let path = var("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(PluginEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// Value of a CNI_ARGS key.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Container id; present for ADD/DEL/CHECK after validation.
    pub fn id(&self) -> &str {
        self.container_id.as_deref().unwrap_or("")
    }

    /// Interface name; present for ADD/DEL/CHECK after validation.
    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or("")
    }
}

fn parse_args(raw: &str) -> Result<Vec<(String, String)>, CniError> {
    raw.split(';')
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(
                CniError::invalid_env(format!("invalid CNI_ARGS pair {pair:?}"))
                    .with_details("CNI_ARGS must be KEY=VALUE pairs separated by ';'"),
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<PluginEnv, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PluginEnv::from_vars(&|k| m.get(k).cloned())
    }

    #[test]
    fn per_verb_requirements() {
        let e = env(&[]).unwrap_err();
        assert_eq!(e.code.code(), 4);
        assert!(e.msg.contains("CNI_COMMAND"));
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")]).unwrap_err();
        assert_eq!(
            e.msg,
            "required env variables [CNI_NETNS CNI_IFNAME] missing"
        );
        let ok = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert!(ok.unwrap().netns.is_none());
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "STATUS")]).is_ok());
        assert_eq!(env(&[("CNI_COMMAND", "GC")]).unwrap_err().code.code(), 4);
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code.code(), 4);
    }

    #[test]
    fn verbs_without_an_attachment_ignore_its_variables() {
        // What libcni sends when it validates a config list.
        let dummy = [
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_CONTAINERID", "-bad id"),
            ("CNI_ARGS", "no-equals-sign"),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        for verb in ["VERSION", "STATUS", "GC"] {
            let mut v = dummy.to_vec();
            v.push(("CNI_COMMAND", verb));
            let e = env(&v).unwrap();
            assert!(e.netns.is_none() && e.ifname.is_none() && e.container_id.is_none());
            assert!(e.args.is_empty());
        }
        let mut v = dummy.to_vec();
        v.push(("CNI_COMMAND", "DEL"));
        assert_eq!(env(&v).unwrap_err().code.code(), 4);
    }

    #[test]
    fn charset_and_args() {
        let base = [("CNI_COMMAND", "DEL"), ("CNI_IFNAME", "eth0")];
        for bad in ["-x", "a/b", "a b", "ü"] {
            let mut v = base.to_vec();
            v.push(("CNI_CONTAINERID", bad));
            assert_eq!(env(&v).unwrap_err().code.code(), 4, "{bad}");
        }
        for bad in [".", "..", "a:b", "a/b", "0123456789abcdef", "e th"] {
            let v = [
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", bad),
            ];
            assert_eq!(env(&v).unwrap_err().code.code(), 4, "{bad}");
        }
        let v = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.0.0.5"),
            ("CNI_PATH", "/a:/b"),
        ];
        let e = env(&v).unwrap();
        assert_eq!(e.arg("IP"), Some("10.0.0.5"));
        assert_eq!(e.path.len(), 2);
        let v = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "novalue"),
        ];
        assert_eq!(env(&v).unwrap_err().code.code(), 4);
    }
}
