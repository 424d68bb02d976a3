//! `herd get`: kubectl's `get` for pods, configmaps, secrets, namespaces
//! and events: tables (`-o wide`), `-o yaml|json|name`, `-l`, `-A`, `-w`.
//!
//! Named objects that do not exist are reported after the found ones are
//! printed (`Error from server (NotFound): pods "x" not found`) and the
//! command exits 1; an empty list prints `No resources found in NS
//! namespace.` on stderr and exits 0, as kubectl does.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use crate::api::Resource;

use super::client::{ListParams, WatchEventType};
use super::printers::{self, Output};
use super::{Ctx, Exit, client_error_message};

/// `herd get` flags.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The resource type: pods (po), configmaps (cm), secrets,
    /// namespaces (ns), events (ev); or TYPE/NAME.
    pub resource: String,
    /// Object names (all objects when none).
    pub names: Vec<String>,
    /// Output format: wide, yaml, json or name.
    #[arg(short = 'o', long)]
    pub output: Option<Output>,
    /// Label selector (`app=web,tier!=db`, `env in (a,b)`, `!canary`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector (`status.phase=Running`, `spec.nodeName=n1`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// After listing, watch for changes and print them.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// Parses `pods`, `po`, `pod/web` into a resource and optional name.
pub fn parse_type(arg: &str) -> anyhow::Result<(Resource, Option<String>)> {
    let (ty, name) = match arg.split_once('/') {
        Some((t, n)) => (t, Some(n.to_string())),
        None => (arg, None),
    };
    let r = Resource::from_cli_name(ty)
        .with_context(|| format!("the server doesn't have a resource type \"{ty}\""))?;
    Ok((r, name))
}

fn stdout_write(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Runs `herd get`.
pub async fn run(ctx: &Ctx, args: GetArgs) -> anyhow::Result<()> {
    let (resource, first_name) = parse_type(&args.resource)?;
    let mut names: Vec<String> = first_name.into_iter().collect();
    names.extend(args.names.iter().cloned());
    if !names.is_empty() && args.selector.is_some() {
        bail!("name cannot be provided when a selector is specified");
    }
    let output = args.output.unwrap_or(Output::Table);
    let all_ns = args.all_namespaces && names.is_empty();
    let ns = (!all_ns).then_some(ctx.namespace.as_str());
    let params = ListParams {
        label_selector: args.selector.clone(),
        field_selector: args.field_selector.clone(),
    };
    let now = jiff::Timestamp::now();
    let mut items = Vec::new();
    let mut errors = Vec::new();
    let mut list_rv = None;
    if names.is_empty() {
        let list: Value = ctx.client.list(resource, ns, &params).await?;
        list_rv = list["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        items = list["items"].as_array().cloned().unwrap_or_default();
    } else {
        for n in &names {
            match ctx.client.get::<Value>(resource, &ctx.namespace, n).await {
                Ok(v) => items.push(v),
                Err(e) => errors.push(client_error_message(&e)),
            }
        }
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|v| printers::with_type(resource, v))
        .collect();
    let wide = output == Output::Wide;
    let mut widths = Vec::new();
    match output {
        Output::Table | Output::Wide => {
            if items.is_empty() && errors.is_empty() && !args.watch {
                if all_ns || !resource.namespaced() {
                    eprintln!("No resources found");
                } else {
                    eprintln!("No resources found in {} namespace.", ctx.namespace);
                }
            } else if !items.is_empty() {
                let header = printers::header(resource, wide, all_ns);
                let mut rows = Vec::new();
                for v in &items {
                    rows.push(printers::row(resource, v, now, wide, all_ns)?);
                }
                widths = column_widths(&header, &rows);
                stdout_write(&printers::table(&header, &rows))?;
            }
        }
        Output::Yaml | Output::Json => {
            if names.len() == 1 && items.len() == 1 {
                stdout_write(&render(output, &items[0]))?;
            } else if !(names.len() > 1 && items.is_empty()) {
                stdout_write(&render(output, &printers::as_list(items.clone())))?;
            }
        }
        Output::Name => {
            let mut s = String::new();
            for v in &items {
                s.push_str(&printers::name_of(resource, v));
                s.push('\n');
            }
            stdout_write(&s)?;
        }
    }
    for e in &errors {
        eprintln!("{e}");
    }
    if !errors.is_empty() {
        return Err(Exit { code: 1 }.into());
    }
    if args.watch {
        let mut params = params;
        if let [name] = names.as_slice() {
            params.field_selector = Some(format!("metadata.name={name}"));
        }
        let rv = match &list_rv {
            Some(rv) => Some(rv.clone()),
            None => items
                .iter()
                .filter_map(|v| v["metadata"]["resourceVersion"].as_str())
                .max_by_key(|rv| rv.parse::<u64>().unwrap_or(0))
                .map(str::to_string),
        };
        watch(
            ctx,
            resource,
            ns,
            &params,
            rv.as_deref(),
            output,
            all_ns,
            widths,
        )
        .await?;
    }
    Ok(())
}

fn render(output: Output, v: &Value) -> String {
    match output {
        Output::Json => printers::to_json(v),
        _ => printers::to_yaml(v),
    }
}

/// Widths of a table's columns, as the tab writer computes them.
fn column_widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    w.into_iter().map(|x| (x + 3).max(6)).collect()
}

/// One row padded to the widths of the table printed before it.
fn pad_row(row: &[String], widths: &[usize]) -> String {
    let mut s = String::new();
    for (i, c) in row.iter().enumerate() {
        s.push_str(c);
        if i + 1 < row.len() {
            let w = widths.get(i).copied().unwrap_or(6);
            for _ in c.chars().count()..w {
                s.push(' ');
            }
        }
    }
    s.push('\n');
    s
}

#[allow(clippy::too_many_arguments)]
async fn watch(
    ctx: &Ctx,
    resource: Resource,
    ns: Option<&str>,
    params: &ListParams,
    rv: Option<&str>,
    output: Output,
    all_ns: bool,
    mut widths: Vec<usize>,
) -> anyhow::Result<()> {
    let mut stream = ctx.client.watch(resource, ns, params, rv).await?;
    let wide = output == Output::Wide;
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        if ev.kind == WatchEventType::Bookmark {
            continue;
        }
        let obj = printers::with_type(resource, ev.object);
        let text = match output {
            Output::Table | Output::Wide => {
                let r = printers::row(resource, &obj, jiff::Timestamp::now(), wide, all_ns)?;
                if widths.is_empty() {
                    let header = printers::header(resource, wide, all_ns);
                    widths = column_widths(&header, std::slice::from_ref(&r));
                    let h: Vec<String> = header.iter().map(|s| s.to_string()).collect();
                    let mut t = pad_row(&h, &widths);
                    t.push_str(&pad_row(&r, &widths));
                    t
                } else {
                    pad_row(&r, &widths)
                }
            }
            Output::Yaml => format!("---\n{}", printers::to_yaml(&obj)),
            Output::Json => printers::to_json(&obj),
            Output::Name => format!("{}\n", printers::name_of(resource, &obj)),
        };
        stdout_write(&text)?;
    }
    Ok(())
}
