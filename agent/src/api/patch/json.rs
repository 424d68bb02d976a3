//! JSON patch (RFC 6902): `add`, `remove`, `replace`, `move`, `copy`, `test`.
//!
//! Decoding is separate from applying, as in the API server: a body that is
//! not a list of well-formed operations is [`PatchError::Malformed`] (400);
//! an operation that cannot apply to the live object (missing path, failed
//! `test`, index out of range) is [`PatchError::Unprocessable`] (422). The
//! operations apply in order to a copy; on any failure nothing is returned.
//! `copy` operations may duplicate at most [`COPY_LIMIT`] JSON nodes in
//! total, as the API server caps accumulated copy size, so a short patch
//! cannot double the object thirty times.

/// The most JSON nodes all `copy` operations of one patch may duplicate.
pub const COPY_LIMIT: usize = 1_000_000;

use serde_json::Value;

use super::PatchError;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Add(Vec<String>, Value),
    Remove(Vec<String>),
    Replace(Vec<String>, Value),
    Move {
        from: Vec<String>,
        path: Vec<String>,
    },
    Copy {
        from: Vec<String>,
        path: Vec<String>,
    },
    Test(Vec<String>, Value),
}

/// Splits a JSON pointer (RFC 6901) into unescaped reference tokens.
fn parse_pointer(p: &str) -> Result<Vec<String>, PatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(PatchError::Malformed(format!(
            "invalid JSON pointer {p:?}: must start with \"/\""
        )));
    };
    rest.split('/')
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(PatchError::Malformed(format!(
                            "invalid JSON pointer {p:?}: \"~\" must be followed by 0 or 1"
                        )));
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

fn decode(body: &[u8]) -> Result<Vec<Op>, PatchError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| PatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    let Value::Array(items) = v else {
        return Err(PatchError::Malformed(
            "invalid JSON patch: expected a list of operations".into(),
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(mut m) = item else {
                return Err(PatchError::Malformed(format!(
                    "invalid JSON patch: operation {i} is not an object"
                )));
            };
            let field =
                |m: &serde_json::Map<String, Value>, k: &str| -> Result<String, PatchError> {
                    match m.get(k) {
                        Some(Value::String(s)) => Ok(s.clone()),
                        _ => Err(PatchError::Malformed(format!(
                            "invalid JSON patch: operation {i} has no string {k:?}"
                        ))),
                    }
                };
            let op = field(&m, "op")?;
            let path = parse_pointer(&field(&m, "path")?)?;
            let mut value = || {
                m.remove("value").ok_or_else(|| {
                    PatchError::Malformed(format!(
                        "invalid JSON patch: operation {i} ({op}) has no \"value\""
                    ))
                })
            };
            Ok(match op.as_str() {
                "add" => Op::Add(path, value()?),
                "replace" => Op::Replace(path, value()?),
                "test" => Op::Test(path, value()?),
                "remove" => Op::Remove(path),
                "move" | "copy" => {
                    let from = parse_pointer(&field(&m, "from")?)?;
                    if op == "move" {
                        Op::Move { from, path }
                    } else {
                        Op::Copy { from, path }
                    }
                }
                other => {
                    return Err(PatchError::Malformed(format!(
                        "invalid JSON patch: unsupported operation {other:?}"
                    )));
                }
            })
        })
        .collect()
}

fn pointer_string(path: &[String]) -> String {
    path.iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn missing(path: &[String], what: &str) -> PatchError {
    PatchError::Unprocessable {
        path: pointer_string(path),
        detail: what.to_string(),
    }
}

fn index(tok: &str, len: usize, allow_end: bool) -> Option<usize> {
    if allow_end && tok == "-" {
        return Some(len);
    }
    if tok.is_empty() || (tok.len() > 1 && tok.starts_with('0')) {
        return None;
    }
    let i: usize = tok.parse().ok()?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    (i <= max && (allow_end || len > 0)).then_some(i)
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |cur, tok| match cur {
        Value::Object(m) => m.get(tok),
        Value::Array(a) => index(tok, a.len(), false).and_then(|i| a.get(i)),
        _ => None,
    })
}

fn parent_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let (_, parents) = path.split_last()?;
    parents.iter().try_fold(doc, |cur, tok| match cur {
        Value::Object(m) => m.get_mut(tok),
        Value::Array(a) => {
            let i = index(tok, a.len(), false)?;
            a.get_mut(i)
        }
        _ => None,
    })
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), PatchError> {
    let Some(last) = path.last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, path) {
        Some(Value::Object(m)) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = index(last, a.len(), true)
                .ok_or_else(|| missing(path, "add operation: array index out of bounds"))?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing(
            path,
            "add operation does not apply: doc is missing path",
        )),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, PatchError> {
    let Some(last) = path.last() else {
        return Ok(std::mem::take(doc));
    };
    let gone = || missing(path, "remove operation does not apply: doc is missing path");
    match parent_mut(doc, path) {
        Some(Value::Object(m)) => m.remove(last).ok_or_else(gone),
        Some(Value::Array(a)) => {
            let i = index(last, a.len(), false).ok_or_else(gone)?;
            Ok(a.remove(i))
        }
        _ => Err(gone()),
    }
}

/// Number of JSON nodes in `v`, counted iteratively, stopping past `cap`.
fn weight(v: &Value, cap: usize) -> usize {
    let mut n = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        n += 1;
        if n > cap {
            break;
        }
        match v {
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    n
}

fn apply_op(doc: &mut Value, op: Op, copied: &mut usize) -> Result<(), PatchError> {
    match op {
        Op::Add(path, value) => add(doc, &path, value),
        Op::Remove(path) => remove(doc, &path).map(drop),
        Op::Replace(path, value) => {
            if get(doc, &path).is_none() {
                return Err(missing(
                    &path,
                    "replace operation does not apply: doc is missing key",
                ));
            }
            remove(doc, &path)?;
            add(doc, &path, value)
        }
        Op::Move { from, path } => {
            if path.len() > from.len() && path.starts_with(&from) {
                return Err(missing(&path, "move operation: cannot move into a child"));
            }
            let v = remove(doc, &from)?;
            add(doc, &path, v)
        }
        Op::Copy { from, path } => {
            let src = get(doc, &from);
            *copied += src.map_or(0, |v| weight(v, COPY_LIMIT));
            if *copied > COPY_LIMIT {
                return Err(PatchError::Malformed(format!(
                    "copy operations would duplicate more than {COPY_LIMIT} values"
                )));
            }
            let v = src.cloned().ok_or_else(|| {
                missing(
                    &from,
                    "copy operation does not apply: doc is missing from path",
                )
            })?;
            add(doc, &path, v)
        }
        Op::Test(path, want) => match get(doc, &path) {
            Some(have) if *have == want => Ok(()),
            _ => Err(missing(&path, "testing value failed")),
        },
    }
}

/// Applies the JSON patch in `body` to a copy of `live`.
pub fn apply(live: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let ops = decode(body)?;
    let mut doc = live.clone();
    let mut copied = 0;
    for op in ops {
        apply_op(&mut doc, op, &mut copied)?;
    }
    Ok(doc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc6902_operations() {
        let doc = json!({"a": {"b": [1, 2, 3], "c/d": 1, "e~f": 2}, "x": "y"});
        let cases: &[(&str, Value, Value)] = &[
            (
                "add to object",
                json!([{"op": "add", "path": "/a/n", "value": 5}]),
                json!({"a": {"b": [1, 2, 3], "c/d": 1, "e~f": 2, "n": 5}, "x": "y"}),
            ),
            (
                "add appends with -",
                json!([{"op": "add", "path": "/a/b/-", "value": 4}]),
                json!({"a": {"b": [1, 2, 3, 4], "c/d": 1, "e~f": 2}, "x": "y"}),
            ),
            (
                "add inserts at index",
                json!([{"op": "add", "path": "/a/b/0", "value": 0}]),
                json!({"a": {"b": [0, 1, 2, 3], "c/d": 1, "e~f": 2}, "x": "y"}),
            ),
            (
                "escapes ~1 and ~0",
                json!([{"op": "remove", "path": "/a/c~1d"}, {"op": "replace", "path": "/a/e~0f", "value": 3}]),
                json!({"a": {"b": [1, 2, 3], "e~f": 3}, "x": "y"}),
            ),
            (
                "move and copy",
                json!([{"op": "move", "from": "/x", "path": "/z"}, {"op": "copy", "from": "/a/b/1", "path": "/w"}]),
                json!({"a": {"b": [1, 2, 3], "c/d": 1, "e~f": 2}, "z": "y", "w": 2}),
            ),
            (
                "test passes then remove",
                json!([{"op": "test", "path": "/x", "value": "y"}, {"op": "remove", "path": "/a/b/2"}]),
                json!({"a": {"b": [1, 2], "c/d": 1, "e~f": 2}, "x": "y"}),
            ),
        ];
        for (name, patch, want) in cases {
            let got = apply(&doc, patch.to_string().as_bytes()).expect(name);
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn failures_are_unprocessable_and_malformed_is_bad_request() {
        let doc = json!({"a": [1]});
        let unprocessable = [
            json!([{"op": "test", "path": "/a/0", "value": 2}]),
            json!([{"op": "remove", "path": "/nope"}]),
            json!([{"op": "replace", "path": "/nope", "value": 1}]),
            json!([{"op": "add", "path": "/a/5", "value": 1}]),
            json!([{"op": "add", "path": "/x/y", "value": 1}]),
            json!([{"op": "remove", "path": "/a/01"}]),
            json!([{"op": "move", "from": "/a", "path": "/a/0"}]),
        ];
        for p in unprocessable {
            let e = apply(&doc, p.to_string().as_bytes()).unwrap_err();
            assert!(matches!(e, PatchError::Unprocessable { .. }), "{p}: {e:?}");
        }
        let malformed: [&[u8]; 6] = [
            b"{}",
            b"not json",
            br#"[{"op":"frob","path":"/a"}]"#,
            br#"[{"op":"add","path":"a","value":1}]"#,
            br#"[{"op":"add","path":"/a"}]"#,
            br#"[{"op":"remove","path":"/a~2"}]"#,
        ];
        for p in malformed {
            let e = apply(&doc, p).unwrap_err();
            assert!(matches!(e, PatchError::Malformed(_)), "{e:?}");
        }
    }

    #[test]
    fn copy_doubling_is_capped() {
        let doc = json!({"a": [0, 1, 2, 3, 4, 5, 6, 7]});
        let ops: Vec<Value> = (0..40)
            .map(|_| json!({"op": "copy", "from": "/a", "path": "/a/-"}))
            .collect();
        let e = apply(&doc, Value::Array(ops).to_string().as_bytes()).unwrap_err();
        assert!(matches!(e, PatchError::Malformed(_)), "{e:?}");
    }
}
