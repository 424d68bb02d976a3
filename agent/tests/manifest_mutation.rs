//! The manifest path (parse → decode → defaults → validation → update
//! validation) under thousands of seeded mutations of valid manifests: it
//! never panics, a decode failure is always a 400 `BadRequest`, a
//! validation failure always a 422 `Invalid` with at least one cause.
//! The same properties are fuzzed by `agent/fuzz` (target `manifest`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use herd_agent::api::defaults::{apply_defaults, on_create};
use herd_agent::api::manifest::{decode, parse_documents};
use herd_agent::api::validation::{validate, validate_update};
use k8s_openapi::jiff::Timestamp;
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

fn seeds() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/manifests");
    let mut out: Vec<String> = ["app.yaml", "list.json"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .collect();
    out.push("a: &a [1]\nb: [*a, *a]\n---\nkind: Pod\n".to_string());
    out
}

const TYPES: [fn() -> Value; 10] = [
    || json!(null),
    || json!(true),
    || json!(-1),
    || json!(0),
    || json!(1e308),
    || json!("x"),
    || json!("../.."),
    || json!([1, "a", null]),
    || json!({"k": {"k": []}}),
    || json!(18446744073709551615u64),
];

fn mutate_value(rng: &mut Rng, v: &mut Value, depth: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[rng.below(keys.len())];
            match rng.below(5) {
                0 => {
                    m.remove(k);
                }
                1 => {
                    m.insert(k.clone(), TYPES[rng.below(TYPES.len())]());
                }
                2 | 3 if depth < 12 => {
                    if let Some(inner) = m.get_mut(k) {
                        mutate_value(rng, inner, depth + 1);
                    }
                }
                _ => {
                    m.insert(
                        format!("x{}", rng.next() % 100),
                        TYPES[rng.below(TYPES.len())](),
                    );
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.below(a.len());
            match rng.below(3) {
                0 => {
                    let dup = a[i].clone();
                    a.push(dup);
                }
                1 => {
                    a.remove(i);
                }
                _ => mutate_value(rng, &mut a[i], depth + 1),
            }
        }
        Value::String(s) => match rng.below(4) {
            0 => s.push_str("-_.X/"),
            1 => *s = s.to_uppercase(),
            2 => *s = "9".repeat(rng.below(300)),
            _ => *v = TYPES[rng.below(TYPES.len())](),
        },
        _ => *v = TYPES[rng.below(TYPES.len())](),
    }
}

const SNIPPETS: [&str; 10] = [
    "\n---\n",
    ": ",
    "- ",
    "&a ",
    "*a",
    "{",
    "]",
    "\t",
    "\"",
    "!!binary ",
];

fn mutate_text(rng: &mut Rng, t: &str) -> String {
    let mut b = t.as_bytes().to_vec();
    for _ in 0..=rng.below(3) {
        match rng.below(5) {
            0 => {
                let n = rng.below(b.len());
                b.truncate(n);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            2 => {
                let i = rng.below(b.len() + 1);
                let s = SNIPPETS[rng.below(SNIPPETS.len())];
                b.splice(i..i, s.bytes());
            }
            3 if !b.is_empty() => {
                let i = rng.below(b.len());
                let j = (i + rng.below(64)).min(b.len());
                b.drain(i..j);
            }
            _ => {
                let i = rng.below(b.len() + 1);
                let j = (i + rng.below(64)).min(b.len());
                let chunk = b[i..j].to_vec();
                b.splice(i..i, chunk);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Runs the whole write path on `text`, checking the error contracts.
fn exercise(text: &str) -> usize {
    let Ok(docs) = parse_documents(text, "m") else {
        return 0;
    };
    let mut ok = 0;
    for d in docs {
        let obj = match decode(d) {
            Ok(o) => o,
            Err(e) => {
                assert_eq!(e.code(), 400, "{e}");
                continue;
            }
        };
        let mut created = obj.clone();
        on_create(&mut created, Some("default"), Timestamp::UNIX_EPOCH);
        let mut defaulted = obj.clone();
        apply_defaults(&mut defaulted);
        for o in [&created, &defaulted] {
            match validate(o) {
                Ok(()) => ok += 1,
                Err(e) => {
                    assert_eq!(e.code(), 422, "{e}");
                    assert!(!e.causes.is_empty(), "{e}");
                }
            }
        }
        let _ = validate_update(&created, &defaulted);
        // Round trip: what we store decodes again.
        decode(created.to_value()).unwrap();
    }
    ok
}

#[test]
fn mutated_manifests_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut valid = 0;
    let parsed: Vec<Vec<Value>> = seeds
        .iter()
        .map(|s| parse_documents(s, "seed").unwrap())
        .collect();
    let json_seeds: Vec<String> = parsed
        .iter()
        .map(|docs| {
            docs.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    // YAML parsing is slow in debug builds: one round in ten mutates YAML
    // text, one JSON text, the rest decoded values.
    for round in 0..2400 {
        let i = rng.below(seeds.len());
        match round % 10 {
            0 => valid += exercise(&mutate_text(&mut rng, &seeds[i])),
            1 => valid += exercise(&mutate_text(&mut rng, &json_seeds[i])),
            _ => {
                let mut docs = parsed[i].clone();
                if docs.is_empty() {
                    continue;
                }
                let j = rng.below(docs.len());
                for _ in 0..=rng.below(3) {
                    mutate_value(&mut rng, &mut docs[j], 0);
                }
                let text = docs
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n");
                valid += exercise(&text);
            }
        }
    }
    // Some mutants stay valid: the path was really exercised end to end.
    assert!(valid > 0);
}
