//! YAML streams: split at document markers, each document parsed by
//! serde-saphyr under a budget (depth, nodes, aliases, scalar bytes), with
//! YAML 1.1 octals as kubectl reads them.

use serde_json::Value;

use super::{MAX_MANIFEST_BYTES, ManifestError, manifest_error};

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_documents: 10_000,
            max_nodes: 1_000_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_total_scalar_bytes: MAX_MANIFEST_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 32,
            max_alias_expansions_per_anchor: 1_000,
        },
        // kubectl reads YAML 1.1 octals (`defaultMode: 0644`).
        legacy_octal_numbers: true,
        with_snippet: false,
    }
}

pub(super) fn parse(text: &str, source_name: &str) -> Result<Vec<(usize, Value)>, ManifestError> {
    // Documents are parsed one by one so an error names its document and
    // the good ones before it are not lost to the caller's error message.
    let mut out = Vec::new();
    for chunk in split_yaml(text) {
        if chunk.body.trim().is_empty() {
            continue;
        }
        let values: Vec<Value> =
            serde_saphyr::from_multiple_with_options(chunk.body, yaml_options()).map_err(|e| {
                let mut msg = e.to_string();
                if let Some(loc) = e.location()
                    && loc.line() > 0
                {
                    let line = loc.line() + chunk.first_line - 1;
                    msg = format!(
                        "invalid YAML at line {line} column {}: {}",
                        loc.column(),
                        strip_location(&msg)
                    );
                } else {
                    msg = format!("invalid YAML: {msg}");
                }
                manifest_error(source_name, chunk.index, msg)
            })?;
        for v in values {
            out.push((chunk.index, v));
        }
    }
    Ok(out)
}

/// serde-saphyr appends ` at line L column C`; the message carries our own.
fn strip_location(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

struct Chunk<'a> {
    /// 1-based document number.
    index: usize,
    /// 1-based line of the chunk's first line in the whole text.
    first_line: u64,
    body: &'a str,
}

/// Splits a YAML stream at document markers (`---` at the start of a line).
/// YAML forbids such a line inside any scalar, so the split is exact for
/// valid streams; a `---` line opens document N+1 unless nothing but
/// comments and directives came before it. `...` ends a document.
fn split_yaml(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut index = 1;
    let mut start = 0usize;
    let mut start_line = 1u64;
    let mut seen_content = false;
    let mut offset = 0usize;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let lineno = n as u64 + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---"
            || bare.starts_with("--- ")
            || bare.starts_with("---\t")
            || bare.starts_with("---#");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start {
            if seen_content {
                chunks.push(Chunk {
                    index,
                    first_line: start_line,
                    body: &text[start..offset],
                });
                index += 1;
            }
            // The marker line may carry content (`--- {a: 1}`): keep it.
            start = offset;
            start_line = lineno;
            seen_content = true;
        } else if is_end {
            chunks.push(Chunk {
                index,
                first_line: start_line,
                body: &text[start..offset],
            });
            index += 1;
            start = offset + line.len();
            start_line = lineno + 1;
            seen_content = false;
        } else {
            let t = bare.trim();
            if !(t.is_empty() || t.starts_with('#') || t.starts_with('%')) {
                seen_content = true;
            }
        }
        offset += line.len();
    }
    if start < text.len() {
        chunks.push(Chunk {
            index,
            first_line: start_line,
            body: &text[start..],
        });
    }
    chunks
}
