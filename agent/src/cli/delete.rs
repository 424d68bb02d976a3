//! `herd delete`: by name (`pod web`, `pod/web`), by manifest (`-f`), by
//! selector (`-l`) or all of a kind (`--all`).
//!
//! Prints `pod "web" deleted` per object and, like kubectl, waits until
//! each deleted object is gone (a GET answers 404, or the name now belongs
//! to an object with another uid) unless `--wait=false`. Grace-period
//! flags follow kubectl: `--now` is 1 s, `--grace-period=0` without
//! `--force` becomes 1 s, `--force` alone means 0 (`force deleted`).

use std::time::Duration;

use anyhow::bail;
use clap::{ArgAction, Args};
use serde_json::Value;

use crate::api::Resource;

use super::apply::{read_sources, target_of};
use super::client::{ClientError, DeleteParams, ListParams};
use super::duration::parse_go;
use super::get::parse_type;
use super::{Ctx, Exit, client_error_message};

/// `herd delete` flags.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// TYPE NAME…, or TYPE/NAME…
    pub args: Vec<String>,
    /// Manifest file, directory or - naming the objects to delete.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Walk directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Delete every object of the type in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Delete the objects matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Seconds the pod gets to stop (-1: the pod's own setting).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Delete immediately with minimal delay (grace period 1 s).
    #[arg(long)]
    pub now: bool,
    /// With --grace-period=0: remove at once, without waiting for the
    /// containers to stop.
    #[arg(long)]
    pub force: bool,
    /// Wait until the objects are gone (--wait=false to return at once).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub wait: bool,
    /// Treat objects that do not exist as deleted.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// How long to wait (e.g. 60s); 0 waits as long as it takes.
    #[arg(long, default_value = "0s")]
    pub timeout: String,
    /// Dependents: background (deleted after the owner), foreground
    /// (before it) or orphan (kept), as kubectl's --cascade.
    #[arg(long, default_value = "background", value_parser = ["background", "foreground", "orphan"])]
    pub cascade: String,
}

/// The `propagationPolicy` for `--cascade`.
pub fn propagation_policy(cascade: &str) -> String {
    match cascade {
        "foreground" => "Foreground",
        "orphan" => "Orphan",
        _ => "Background",
    }
    .to_string()
}

/// The grace period kubectl sends for these flags (`None`: the server's).
pub fn grace_period(args: &DeleteArgs) -> anyhow::Result<Option<i64>> {
    let mut g = args.grace_period;
    if args.now {
        if g != -1 {
            bail!("--now and --grace-period cannot be specified together");
        }
        g = 1;
    }
    if g == 0 && !args.force {
        g = 1;
    }
    if args.force && g < 0 {
        g = 0;
    }
    Ok((g >= 0).then_some(g))
}

#[derive(Debug, Clone)]
struct Victim {
    resource: Resource,
    namespace: String,
    name: String,
}

async fn victims(
    ctx: &Ctx,
    args: &DeleteArgs,
    errors: &mut Vec<String>,
) -> anyhow::Result<Vec<Victim>> {
    let mut out = Vec::new();
    if !args.files.is_empty() {
        if !args.args.is_empty() {
            bail!("cannot specify both a filename and resource names");
        }
        for src in read_sources(&args.files, args.recursive) {
            match src.docs {
                Ok(docs) => {
                    for (i, d) in docs.into_iter().enumerate() {
                        match target_of(ctx, &src.name, i + 1, d) {
                            Ok(t) => out.push(Victim {
                                resource: t.resource,
                                namespace: t.namespace,
                                name: t.name,
                            }),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                Err(e) => errors.push(format!("error: {e}")),
            }
        }
        return Ok(out);
    }
    let Some(first) = args.args.first() else {
        bail!("You must provide one or more resources by argument or filename.");
    };
    if first.contains('/') {
        for a in &args.args {
            let (r, n) = parse_type(a)?;
            let Some(n) = n else {
                bail!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form"
                );
            };
            out.push(Victim {
                resource: r,
                namespace: ctx.namespace.clone(),
                name: n,
            });
        }
        return Ok(out);
    }
    let (resource, _) = parse_type(first)?;
    let names = &args.args[1..];
    if args.all || args.selector.is_some() {
        if !names.is_empty() {
            bail!("name cannot be provided when a selector or --all is specified");
        }
        let params = ListParams {
            label_selector: args.selector.clone(),
            field_selector: None,
        };
        let ns = resource.namespaced().then_some(ctx.namespace.as_str());
        let list: Value = ctx.client.list(resource, ns, &params).await?;
        for item in list["items"].as_array().into_iter().flatten() {
            out.push(Victim {
                resource,
                namespace: item["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(&ctx.namespace)
                    .to_string(),
                name: item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        if out.is_empty() {
            if resource.namespaced() {
                eprintln!("No resources found in {} namespace.", ctx.namespace);
            } else {
                eprintln!("No resources found");
            }
        }
        return Ok(out);
    }
    if names.is_empty() {
        bail!("resource(s) were provided, but no name was specified");
    }
    for n in names {
        out.push(Victim {
            resource,
            namespace: ctx.namespace.clone(),
            name: n.clone(),
        });
    }
    Ok(out)
}

/// Runs `herd delete`.
pub async fn run(ctx: &Ctx, args: DeleteArgs) -> anyhow::Result<()> {
    let grace = grace_period(&args)?;
    let timeout = parse_go(&args.timeout)?;
    let mut errors = Vec::new();
    let targets = victims(ctx, &args, &mut errors).await?;
    if grace == Some(0) {
        eprintln!(
            "Warning: Immediate deletion does not wait for confirmation that the running \
             resource has been terminated. The resource may continue to run on the cluster \
             indefinitely."
        );
    }
    let params = DeleteParams {
        grace_period_seconds: grace,
        propagation_policy: Some(propagation_policy(&args.cascade)),
    };
    let mut deleted = Vec::new();
    for v in targets {
        match ctx
            .client
            .delete(v.resource, &v.namespace, &v.name, &params)
            .await
        {
            Ok(answer) => {
                let kind = super::printers::kind_name(v.resource);
                let how = if grace == Some(0) {
                    "force deleted"
                } else {
                    "deleted"
                };
                println!("{kind} \"{}\" {how}", v.name);
                let uid = answer["metadata"]["uid"].as_str().map(str::to_string);
                deleted.push((v, uid));
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e @ ClientError::Connect { .. }) => return Err(e.into()),
            Err(e) => errors.push(client_error_message(&e)),
        }
    }
    if args.wait {
        let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
        for (v, uid) in &deleted {
            if let Err(e) = wait_gone(ctx, v, uid.as_deref(), deadline).await {
                errors.push(e);
            }
        }
    }
    for e in &errors {
        eprintln!("{e}");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Exit { code: 1 }.into())
    }
}

async fn wait_gone(
    ctx: &Ctx,
    v: &Victim,
    uid: Option<&str>,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), String> {
    loop {
        match ctx
            .client
            .get::<Value>(v.resource, &v.namespace, &v.name)
            .await
        {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(client_error_message(&e)),
            Ok(obj) => {
                if uid.is_some() && obj["metadata"]["uid"].as_str() != uid {
                    return Ok(());
                }
            }
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(format!(
                "error: timed out waiting for the condition on {}/{}",
                v.resource.plural(),
                v.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
