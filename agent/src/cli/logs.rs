//! `herd logs`: a container's log streamed from `…/pods/NAME/log` to
//! stdout as it arrives (`-f` until the container exits).
//!
//! Without `-c`, a pod with several containers uses the
//! `kubectl.kubernetes.io/default-container` annotation or its first
//! container and says so on stderr, as kubectl does.

use std::io::Write;

use anyhow::bail;
use clap::Args;
use k8s_openapi::api::core::v1::Pod;

use crate::api::Resource;

use super::Ctx;
use super::client::LogParams;
use super::duration::parse_go;

/// `herd logs` flags.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod (NAME or pod/NAME).
    pub name: String,
    /// The container (default: the only or default one).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new lines until the container exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The previous (terminated) instance of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Lines from the end to show; -1 for all.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Prefix each line with its RFC3339 timestamp.
    #[arg(long)]
    pub timestamps: bool,
    /// Only lines newer than this (5s, 2m, 3h).
    #[arg(long)]
    pub since: Option<String>,
}

/// Strips an optional `pod/` (or `pods/`, `po/`) prefix.
pub fn pod_name(arg: &str) -> anyhow::Result<&str> {
    match arg.split_once('/') {
        None => Ok(arg),
        Some((t, n)) if Resource::from_cli_name(t) == Some(Resource::Pods) => Ok(n),
        Some((t, _)) => bail!("cannot use resource type {t:?} here, only pods"),
    }
}

/// kubectl's default container choice: the annotation, else the first
/// container. The message is printed when the pod has several.
pub fn default_container(pod: &Pod) -> anyhow::Result<(String, Option<String>)> {
    let spec = pod.spec.clone().unwrap_or_default();
    let names: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
        .filter(|n| names.contains(n))
        .cloned();
    if let Some(a) = annotated {
        return Ok((a, None));
    }
    let Some(first) = names.first().cloned() else {
        bail!(
            "pod {} has no containers",
            pod.metadata.name.as_deref().unwrap_or_default()
        );
    };
    let inits: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| format!("{} (init)", c.name))
        .collect();
    if names.len() + inits.len() <= 1 {
        return Ok((first, None));
    }
    let mut all = names;
    all.extend(inits);
    let msg = format!("Defaulted container \"{first}\" out of: {}", all.join(", "));
    Ok((first, Some(msg)))
}

/// Runs `herd logs`.
pub async fn run(ctx: &Ctx, args: LogsArgs) -> anyhow::Result<()> {
    let name = pod_name(&args.name)?;
    let container = match args.container {
        Some(c) => c,
        None => {
            let pod: Pod = ctx.client.get(Resource::Pods, &ctx.namespace, name).await?;
            let (c, msg) = default_container(&pod)?;
            if let Some(m) = msg {
                eprintln!("{m}");
            }
            c
        }
    };
    let since_seconds = match &args.since {
        Some(s) => {
            let d = parse_go(s)?;
            Some(i64::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(i64::MAX))
        }
        None => None,
    };
    let params = LogParams {
        container: Some(container),
        follow: args.follow,
        previous: args.previous,
        tail_lines: (args.tail >= 0).then_some(args.tail),
        since_seconds,
        timestamps: args.timestamps,
    };
    let mut stream = ctx.client.logs(&ctx.namespace, name, &params).await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next_chunk().await {
        let chunk = chunk?;
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}
