//! The stdin/config parser under thousands of seeded mutations of valid
//! configurations: it never panics, and every rejection carries one of the
//! codes a bad body may produce (1 incompatible version, 2 unsupported
//! field, 6 decode, 7 invalid config).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use herd_cni::plugin::parse_request;
use serde_json::{Value, json};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn corpus() -> Vec<Value> {
    let mut out = Vec::new();
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        out.push(
            json!({"cniVersion": v, "name": "herdnet", "type": "herd-cni",
            "bridge": "herd0", "subnet": "10.88.0.0/24"}),
        );
        out.push(json!({"cniVersion": v, "name": "n.1-x_y", "type": "herd-cni",
            "bridge": "br-x", "subnet": "10.10.0.0/16", "gateway": "10.10.0.254",
            "mtu": 9000, "hairpinMode": false, "ipMasq": true, "dataDir": "/tmp/herd",
            "dns": {"nameservers": ["10.10.0.10"], "domain": "cluster.local",
                    "search": ["a.b"], "options": ["ndots:5"]},
            "args": {"labels": {"app": "x"}},
            "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8080}]},
            "prevResult": {"cniVersion": v, "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
                           "ips": [{"address": "10.10.0.5/16", "gateway": "10.10.0.254", "interface": 0}]},
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}));
        out.push(
            json!({"cniVersion": v, "name": "delegated", "type": "herd-cni",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/24",
                     "routes": [{"dst": "0.0.0.0/0"}]}}),
        );
    }
    out
}

const TYPES: [fn() -> Value; 8] = [
    || json!(null),
    || json!(true),
    || json!(-1),
    || json!(1e308),
    || json!("x"),
    || json!([1, "a", null]),
    || json!({"k": {"k": []}}),
    || json!(18446744073709551615u64),
];

fn mutate_value(rng: &mut Rng, v: &mut Value) {
    if let Value::Object(m) = v {
        if m.is_empty() {
            return;
        }
        let keys: Vec<String> = m.keys().cloned().collect();
        let k = &keys[rng.below(keys.len())];
        match rng.below(4) {
            0 => {
                m.remove(k);
            }
            1 => {
                m.insert(k.clone(), TYPES[rng.below(TYPES.len())]());
            }
            2 => {
                if let Some(inner) = m.get_mut(k) {
                    mutate_value(rng, inner);
                }
            }
            _ => {
                m.insert(
                    format!("x{}", rng.next() % 100),
                    TYPES[rng.below(TYPES.len())](),
                );
            }
        }
    } else if let Value::Array(a) = v {
        if !a.is_empty() {
            let i = rng.below(a.len());
            mutate_value(rng, &mut a[i]);
        }
    } else {
        *v = TYPES[rng.below(TYPES.len())]();
    }
}

fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) {
    match rng.below(6) {
        0 => {
            let n = rng.below(b.len());
            b.truncate(n);
        }
        1 => {
            for _ in 0..=rng.below(4) {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            let i = rng.below(b.len());
            let huge = ["1e999", "-1e999", "99999999999999999999999999", "1.5", "-0"];
            let s = huge[rng.below(huge.len())];
            b.splice(i..i, s.bytes());
        }
        3 => {
            let i = rng.below(b.len());
            let j = (i + rng.below(16)).min(b.len());
            b.drain(i..j);
        }
        4 => {
            let i = rng.below(b.len());
            let c = [b'{', b'}', b'[', b']', b'"', b'\\', b',', b':', 0, 0xff];
            b.insert(i, c[rng.below(c.len())]);
        }
        _ => {
            let i = rng.below(b.len());
            b.splice(i..i, "\u{1F600}\u{0}".bytes());
        }
    }
}

fn check(envs: &[HashMap<String, String>], input: &[u8], what: &str) -> (usize, usize) {
    let (mut ok, mut err) = (0, 0);
    for env in envs {
        match parse_request(&|k| env.get(k).cloned(), input) {
            Ok(_) => ok += 1,
            Err(e) => {
                let c = e.code.code();
                assert!(
                    matches!(c, 1 | 2 | 6 | 7),
                    "{what}: code {c} ({e}) for input {:?}",
                    String::from_utf8_lossy(input)
                );
                assert!(!e.msg.is_empty());
                err += 1;
            }
        }
    }
    (ok, err)
}

fn envs() -> Vec<HashMap<String, String>> {
    ["ADD", "DEL", "CHECK", "STATUS", "GC"]
        .iter()
        .map(|cmd| {
            [
                ("CNI_COMMAND", *cmd),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        })
        .collect()
}

#[test]
fn valid_corpus_parses() {
    let envs = envs();
    for c in corpus() {
        let add = &envs[0];
        parse_request(&|k| add.get(k).cloned(), c.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{c}: {e}"));
    }
}

#[test]
fn thousands_of_mutations_never_panic_and_map_to_config_codes() {
    let envs = envs();
    let corpus = corpus();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut ok, mut err) = (0, 0);
    for round in 0..6000 {
        let base = &corpus[round % corpus.len()];
        let (o, e) = if round % 2 == 0 {
            let mut v = base.clone();
            for _ in 0..=rng.below(3) {
                mutate_value(&mut rng, &mut v);
            }
            check(&envs, v.to_string().as_bytes(), "value mutation")
        } else {
            let mut b = base.to_string().into_bytes();
            for _ in 0..=rng.below(3) {
                mutate_bytes(&mut rng, &mut b);
            }
            check(&envs, &b, "byte mutation")
        };
        ok += o;
        err += e;
    }
    // Both outcomes must occur, or the mutations test nothing.
    assert!(ok > 1000 && err > 1000, "ok {ok} err {err}");
}

#[test]
fn deep_nesting_and_oversize_are_decode_errors() {
    let envs = envs();
    let deep = format!(
        "{{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"herd-cni\",\"subnet\":\"10.0.0.0/24\",\"args\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    for env in &envs {
        let e = parse_request(&|k| env.get(k).cloned(), deep.as_bytes()).unwrap_err();
        assert_eq!(e.code.code(), 6, "{e}");
    }
    let big = vec![b' '; (1 << 20) + 1];
    let env = &envs[0];
    let e = parse_request(&|k| env.get(k).cloned(), &big).unwrap_err();
    assert_eq!(e.code.code(), 6);
}
