//! The real kubectl as the oracle: `kubectl patch --local` applies a patch
//! with apimachinery's own strategicpatch / merge / JSON patch code and the
//! built-in schema, offline. Every case here runs through both and must
//! agree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::Command;

use serde_json::{Value, json};

use super::tests::strategic_case_table;
use super::*;

/// `kubectl patch --local -f <live> --type <ty> -p <patch> -o json`.
fn kubectl_patch(live: &Value, patch: &str, ty: &str) -> Result<Value, String> {
    let mut f = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .expect("temp file");
    f.write_all(live.to_string().as_bytes()).expect("write");
    let out = Command::new("kubectl")
        .args([
            "patch", "--local", "-o", "json", "--type", ty, "-p", patch, "-f",
        ])
        .arg(f.path())
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("kubectl is installed (the issue's acceptance tests need it)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    strip_directives(&mut v);
    Ok(v)
}

/// Go keeps directives inside items new to a list (they reach the decoder,
/// which drops them as unknown fields); this engine never stores them.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[test]
fn strategic_cases_agree_with_kubectl() {
    for (name, r, live, p, want, at) in strategic_case_table() {
        let oracle = kubectl_patch(&live, &p.to_string(), "strategic")
            .unwrap_or_else(|e| panic!("{name}: kubectl failed: {e}"));
        let ours = patch(&live, p.to_string().as_bytes(), PatchType::Strategic, r)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(oracle.pointer(at), Some(&want), "{name}: kubectl: {oracle}");
        assert_eq!(ours.pointer(at), oracle.pointer(at), "{name}");
    }
}

#[test]
fn client_side_apply_patch_agrees_with_kubectl() {
    let live = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [
                    {"name": "side", "image": "s"},
                    {"name": "c", "image": "busybox:1",
                     "env": [{"name": "X", "value": "1"}, {"name": "S", "value": "server"}, {"name": "Y", "value": "2"}],
                     "ports": [{"containerPort": 80}, {"containerPort": 8080}]}
                ],
                "volumes": [{"name": "v", "hostPath": {"path": "/x"}}]
            }}
        }
    });
    let p = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "side"}],
            "containers": [{
                "name": "c", "image": "busybox:2",
                "$setElementOrder/env": [{"name": "Z"}, {"name": "Y"}],
                "env": [{"name": "X", "$patch": "delete"}, {"name": "Z", "value": "3"}],
                "$setElementOrder/ports": [{"containerPort": 80}],
                "ports": [{"containerPort": 8080, "$patch": "delete"}]
            }],
            "$setElementOrder/volumes": [{"name": "v"}],
            "volumes": [{"name": "v", "$retainKeys": ["emptyDir", "name"], "emptyDir": {}, "hostPath": null}]
        }}}
    });
    let oracle = kubectl_patch(&live, &p.to_string(), "strategic").expect("kubectl");
    let ours = patch(
        &live,
        p.to_string().as_bytes(),
        PatchType::Strategic,
        Resource::Deployments,
    )
    .expect("patch");
    assert_eq!(ours, oracle);
}

#[test]
fn merge_and_json_patches_agree_with_kubectl() {
    let live = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "m", "labels": {"a": "1", "b": "2"}},
        "data": {"k": "v", "list": "x"}
    });
    let merges = [
        json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        json!({"data": {"k": "w", "n": "new"}}),
    ];
    for p in merges {
        let oracle = kubectl_patch(&live, &p.to_string(), "merge").expect("kubectl");
        let ours = patch(
            &live,
            p.to_string().as_bytes(),
            PatchType::Merge,
            Resource::ConfigMaps,
        )
        .expect("patch");
        assert_eq!(ours, oracle, "{p}");
    }
    let jsons = [
        json!([{"op": "add", "path": "/metadata/labels/c~1d", "value": "x"}]),
        json!([{"op": "replace", "path": "/data/k", "value": "w"}, {"op": "remove", "path": "/data/list"}]),
        json!([{"op": "move", "from": "/data/k", "path": "/data/k2"}, {"op": "copy", "from": "/metadata/labels/a", "path": "/data/a"}]),
    ];
    for p in jsons {
        let oracle = kubectl_patch(&live, &p.to_string(), "json").expect("kubectl");
        let ours = patch(
            &live,
            p.to_string().as_bytes(),
            PatchType::Json,
            Resource::ConfigMaps,
        )
        .expect("patch");
        assert_eq!(ours, oracle, "{p}");
    }
    // Both refuse a failed test and a missing path.
    for p in [
        json!([{"op": "test", "path": "/data/k", "value": "nope"}]),
        json!([{"op": "remove", "path": "/data/none"}]),
    ] {
        assert!(kubectl_patch(&live, &p.to_string(), "json").is_err(), "{p}");
        let e = patch(
            &live,
            p.to_string().as_bytes(),
            PatchType::Json,
            Resource::ConfigMaps,
        )
        .unwrap_err();
        assert_eq!(e.code(), 422, "{p}");
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Random three-way-shaped patches of a keyed list (live items, some
/// deleted, some edited, some new, `$setElementOrder` over a shuffled
/// subset, or none): the result, order included, must be kubectl's.
#[test]
fn random_ordered_list_patches_agree_with_kubectl() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..40 {
        let n_live = rng.next(6);
        let live_names: Vec<String> = (0..n_live).map(|i| format!("L{i}")).collect();
        let env: Vec<Value> = live_names
            .iter()
            .map(|n| json!({"name": n, "value": "live"}))
            .collect();
        let live = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "env": env}]}
        });
        let mut order = Vec::new();
        let mut items = Vec::new();
        for n in &live_names {
            match rng.next(4) {
                0 => items.push(json!({"name": n, "$patch": "delete"})),
                1 => {} // server-only: neither ordered nor patched
                2 => {
                    order.push(n.clone());
                    items.push(json!({"name": n, "value": "edited"}));
                }
                _ => order.push(n.clone()),
            }
        }
        for i in 0..rng.next(4) {
            let n = format!("N{i}");
            order.push(n.clone());
            items.push(json!({"name": n, "value": "new"}));
        }
        // Shuffle the order list; the patch list follows it (kubectl's
        // invariant), deletions last.
        for i in (1..order.len()).rev() {
            let j = rng.next(i + 1);
            order.swap(i, j);
        }
        let pos = |v: &Value| {
            let n = v["name"].as_str().unwrap_or_default();
            if v.get("$patch").is_some() {
                usize::MAX
            } else {
                order.iter().position(|o| o == n).unwrap_or(usize::MAX)
            }
        };
        items.sort_by_key(pos);
        let order_json: Vec<Value> = order.iter().map(|n| json!({"name": n})).collect();
        // Half the cases are `kubectl patch` style: no `$setElementOrder`.
        let mut c = if rng.next(2) == 0 {
            json!({"name": "c", "$setElementOrder/env": order_json})
        } else {
            json!({"name": "c"})
        };
        if !items.is_empty() {
            c["env"] = Value::Array(items);
        }
        if c.get("env").is_none() && (n_live == 0 || c.get("$setElementOrder/env").is_none()) {
            // Go refuses to order two empty lists; kubectl never sends it.
            continue;
        }
        let p = json!({"spec": {"containers": [c]}});
        let oracle = kubectl_patch(&live, &p.to_string(), "strategic")
            .unwrap_or_else(|e| panic!("case {case}: kubectl failed: {e}\n{p}"));
        let ours = patch(
            &live,
            p.to_string().as_bytes(),
            PatchType::Strategic,
            Resource::Pods,
        )
        .unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_eq!(
            ours.pointer("/spec/containers/0/env"),
            oracle.pointer("/spec/containers/0/env"),
            "case {case}: live {live}\npatch {p}"
        );
    }
}
