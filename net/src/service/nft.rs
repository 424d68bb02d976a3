//! Running `nft` inside a network namespace and reading back our table.
//!
//! `nft` is started from a thread that joined the target netns
//! ([`NetNs::run_scoped`]), so the child is born in it: no `ip netns exec`
//! (which remounts /sys) and no nsenter binary needed. Transactions go in
//! as JSON on stdin (`nft -j -f -`); nft applies a file atomically or not
//! at all. Failures keep nft's exit status and stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::model::Protocol;
use super::ruleset::{Applied, ElemKey, HASH_PREFIX, MapName};
use crate::{NetError, NetNs};

/// Run `nft <args>` in `ns` (None = the caller's netns), feeding `stdin`.
pub(crate) fn run(
    ns: Option<&NetNs>,
    nft: &Path,
    op: &'static str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<String, NetError> {
    let fail = |status: String, stderr: String| NetError::Nft { op, status, stderr };
    let work = || {
        let mut child = Command::new(nft)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail("spawn".into(), format!("{}: {e}", nft.display())))?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // nft reads all of its input before it writes anything, so
            // writing first cannot deadlock on a full stdout pipe.
            pipe.write_all(data)
                .map_err(|e| fail("write stdin".into(), e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail("wait".into(), e.to_string()))?;
        if !out.status.success() {
            return Err(fail(
                out.status.to_string(),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    match ns {
        Some(ns) => ns.run_scoped(work)?,
        None => work(),
    }
}

/// `nft -j list table ip <table>` parsed into what the proxy tracks, or
/// None when the table does not exist.
pub(crate) fn list(
    ns: Option<&NetNs>,
    nft: &Path,
    table: &str,
) -> Result<Option<Applied>, NetError> {
    match run(
        ns,
        nft,
        "list table",
        &["-j", "list", "table", "ip", table],
        None,
    ) {
        Ok(out) => parse_listing(&out).map(Some),
        Err(NetError::Nft { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn bad(reason: impl Into<String>) -> NetError {
    NetError::NftOutput {
        op: "list table",
        reason: reason.into(),
    }
}

/// Parse a `nft -j list table` document. Chains whose first rule has no
/// `herd:` comment get an empty hash (they will be rewritten); elements
/// of our maps that we cannot read are an error.
pub(crate) fn parse_listing(json: &str) -> Result<Applied, NetError> {
    let doc: Value = serde_json::from_str(json).map_err(|e| bad(format!("not json: {e}")))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no nftables array"))?;
    let mut chains: BTreeMap<String, String> = BTreeMap::new();
    let mut first_rule_seen = BTreeSet::new();
    let mut sets = BTreeSet::new();
    let mut elems = BTreeMap::new();
    for item in items {
        if let Some(c) = item.get("chain") {
            let name = str_field(c, "name")?;
            chains.entry(name.to_string()).or_default();
        } else if let Some(r) = item.get("rule") {
            let chain = str_field(r, "chain")?.to_string();
            if first_rule_seen.insert(chain.clone()) {
                let hash = r
                    .get("comment")
                    .and_then(Value::as_str)
                    .and_then(|c| c.strip_prefix(HASH_PREFIX))
                    .unwrap_or("");
                chains.insert(chain, hash.to_string());
            }
        } else if let Some(s) = item.get("set") {
            sets.insert(str_field(s, "name")?.to_string());
        } else if let Some(m) = item.get("map") {
            let Some(map) = MapName::parse(str_field(m, "name")?) else {
                continue;
            };
            for e in m
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (key, target) = parse_elem(map, e)?;
                elems.insert((map, key), target);
            }
        }
    }
    Ok(Applied {
        chains,
        sets,
        elems,
    })
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, NetError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("object without {key}: {v}")))
}

/// `[ {"concat": [...]}, {"goto": {"target": "..."}} ]`
fn parse_elem(map: MapName, e: &Value) -> Result<(ElemKey, String), NetError> {
    let what = || bad(format!("unreadable element of map {}: {e}", map.as_str()));
    let pair = e.as_array().filter(|a| a.len() == 2).ok_or_else(what)?;
    let parts = pair[0]
        .get("concat")
        .and_then(Value::as_array)
        .ok_or_else(what)?;
    let target = pair[1]
        .get("goto")
        .and_then(|g| g.get("target"))
        .and_then(Value::as_str)
        .ok_or_else(what)?
        .to_string();
    let proto = |v: &Value| v.as_str().and_then(Protocol::parse);
    let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
    let key = match (map.by_address(), parts.as_slice()) {
        (true, [ip, pr, po]) => {
            let ip: Ipv4Addr = ip.as_str().and_then(|s| s.parse().ok()).ok_or_else(what)?;
            ElemKey::Vip(ip, proto(pr).ok_or_else(what)?, port(po).ok_or_else(what)?)
        }
        (false, [pr, po]) => ElemKey::Port(proto(pr).ok_or_else(what)?, port(po).ok_or_else(what)?),
        _ => return Err(what()),
    };
    Ok((key, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_listing() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
          {"table":{"family":"ip","name":"herd","handle":1}},
          {"map":{"family":"ip","name":"services","table":"herd","type":["ipv4_addr","inet_proto","inet_service"],"handle":2,"map":"verdict",
            "elem":[[{"concat":["10.96.0.1","tcp",80]},{"goto":{"target":"svc-ns/a/tcp/80"}}]]}},
          {"map":{"family":"ip","name":"nodeports","table":"herd","type":["inet_proto","inet_service"],"handle":3,"map":"verdict",
            "elem":[[{"concat":["udp",30053]},{"goto":{"target":"ext-ns/a/udp/53"}}]]}},
          {"set":{"family":"ip","name":"aff10-x","table":"herd","type":"ipv4_addr","handle":4,"flags":["timeout"],"timeout":10}},
          {"chain":{"family":"ip","table":"herd","name":"svc-ns/a/tcp/80","handle":5}},
          {"chain":{"family":"ip","table":"herd","name":"stray","handle":6}},
          {"rule":{"family":"ip","table":"herd","chain":"svc-ns/a/tcp/80","handle":7,"comment":"herd:abcd","expr":[]}},
          {"rule":{"family":"ip","table":"herd","chain":"svc-ns/a/tcp/80","handle":8,"comment":"herd:zzzz","expr":[]}}]}"#;
        let a = parse_listing(json).unwrap();
        assert_eq!(a.chains["svc-ns/a/tcp/80"], "abcd");
        assert_eq!(a.chains["stray"], "");
        assert!(a.sets.contains("aff10-x"));
        assert_eq!(
            a.elems[&(
                MapName::Services,
                ElemKey::Vip(Ipv4Addr::new(10, 96, 0, 1), Protocol::Tcp, 80)
            )],
            "svc-ns/a/tcp/80"
        );
        assert_eq!(
            a.elems[&(MapName::Nodeports, ElemKey::Port(Protocol::Udp, 30053))],
            "ext-ns/a/udp/53"
        );
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for bad in [
            "",
            "[]",
            r#"{"nftables":[{"chain":{}}]}"#,
            r#"{"nftables":[{"map":{"name":"services","elem":[[{"concat":["x","tcp",80]},{"goto":{"target":"a"}}]]}}]}"#,
            r#"{"nftables":[{"map":{"name":"nodeports","elem":[[{"concat":["tcp",70000]},{"goto":{"target":"a"}}]]}}]}"#,
        ] {
            assert!(
                matches!(parse_listing(bad), Err(NetError::NftOutput { .. })),
                "{bad}"
            );
        }
    }
}
